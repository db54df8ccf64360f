"""Exceptions raised by geo_ppp.

Every error derives from :class:`GeoPPPError` and from the builtin it refines, so callers can catch
either. Messages say what was wrong, with which value, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConstraintError",
    "GeoPPPError",
    "InputError",
    "OutputExistsError",
    "ShapeError",
    "WeightsError",
]


class GeoPPPError(Exception):
    """Base class of every geo_ppp error."""


class ConfigError(GeoPPPError, ValueError):
    """A configuration value or key is invalid."""


class ConstraintError(GeoPPPError, ValueError):
    """A constraint is unknown or was given bad arguments."""


class ShapeError(GeoPPPError, ValueError):
    """A tensor has the wrong shape for the model or constraint it is given to."""


class WeightsError(GeoPPPError, OSError):
    """A weights file or folder is missing, corrupt, or in a refused format (pickle)."""


class OutputExistsError(GeoPPPError, FileExistsError):
    """An output already exists and ``overwrite`` was not requested."""


class InputError(GeoPPPError, ValueError):
    """An input file (imagery, weak labels, truth) is unreadable or unfit for inference."""
