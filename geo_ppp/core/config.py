"""Strict parsing of small frozen config dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from geo_ppp.errors import ConfigError

__all__ = ["config_from_mapping", "config_to_dict"]

C = TypeVar("C")


def config_from_mapping(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
    """Build the dataclass ``cls`` from ``data``; unknown keys are an error naming the valid ones.

    Lists become tuples for tuple-typed fields, so JSON and TOML round-trip.

    Raises:
        ConfigError: for unknown keys or values the dataclass rejects.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        place = f" in {where}" if where else ""
        raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}{place}; valid keys are {sorted(fields)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"bad {cls.__name__}{' in ' + where if where else ''}: {err}") from err


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-able dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(config)
