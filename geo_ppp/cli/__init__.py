"""The ``geo-ppp`` command line: thin click commands over the Python API.

``main`` (the group) lives in :mod:`geo_ppp.cli.main`; shared options, error handling and verbosity
in :mod:`geo_ppp.cli.options`; one module per command family (``train``, ``generate``, ``segment``,
``evaluate``). Each command parses its options, imports what it needs lazily, and calls the library.
Errors from geo_ppp become a one-line message and exit status 1.
"""

from geo_ppp.cli.main import main

__all__ = ["main"]
