"""Generic conditional generation: a prior plus constraints, no geospatial code.

:mod:`geo_ppp.generation.conditional` is the API behind ``geo-ppp generate`` (``generate``, the
plug-and-play settings a prior recommends, progress callbacks); :mod:`geo_ppp.generation.digits` holds
the digits demonstration's data, prior training and classifier. Writing samples to files is
:func:`geo_ppp.io.pictures.save_samples`.
"""

from geo_ppp.generation.conditional import (
    Snapshots,
    check_sample_memory,
    constraint_context,
    default_pnp_config,
    generate,
    pnp_config,
    progress_callback,
)

__all__ = [
    "Snapshots",
    "check_sample_memory",
    "constraint_context",
    "default_pnp_config",
    "generate",
    "pnp_config",
    "progress_callback",
]
