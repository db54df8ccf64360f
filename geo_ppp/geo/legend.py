"""Legends as data: class codes, names, colours, nodata, and the remapping from source label codes.

A legend is a JSON file (see ``geo_ppp/data/legends``)::

    {"name": "chesapeake", "nodata": 0,
     "classes": [{"code": 1, "name": "water", "color": "#00c5ff"}, ...],
     "remap": {"5": 4, "6": 4, "15": 0}}

``remap`` maps codes of a source product (for example the Chesapeake 7-class land cover) onto the
legend's codes; legend codes and the nodata code map onto themselves. Any other code is an error
that names the code, so a truth raster in an unexpected coding is never scored silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from geo_ppp.errors import ConfigError

__all__ = ["BUILTIN_LEGENDS", "Legend", "load_legend"]

_DATA = resources.files("geo_ppp") / "data" / "legends"
BUILTIN_LEGENDS = ("chesapeake", "enviroatlas", "nlcd")


def _rgb(color: str | list[int]) -> tuple[int, int, int]:
    if isinstance(color, str):
        text = color.lstrip("#")
        if len(text) != 6:
            raise ConfigError(f"colour {color!r} is not #rrggbb")
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    if len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
        raise ConfigError(f"colour {color!r} is not [r, g, b] with values 0-255")
    return int(color[0]), int(color[1]), int(color[2])


@dataclass(frozen=True)
class Legend:
    """A land-cover legend.

    Attributes:
        name: short name (recorded in priors and outputs).
        codes: class codes, in channel order (channel k of a probability map is class ``codes[k]``).
        names: class names.
        colors: RGB colours.
        nodata: the code written where there is no data (never a class code).
        remap: source code -> legend code, for label products in another coding.
        description: free text.
    """

    name: str
    codes: tuple[int, ...]
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    nodata: int = 0
    remap: dict[int, int] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.codes:
            raise ConfigError(f"legend {self.name!r} has no classes")
        if len(set(self.codes)) != len(self.codes):
            raise ConfigError(f"legend {self.name!r} repeats a class code: {list(self.codes)}")
        if not (len(self.codes) == len(self.names) == len(self.colors)):
            raise ConfigError(f"legend {self.name!r}: codes, names and colours differ in length")
        if self.nodata in self.codes:
            raise ConfigError(f"legend {self.name!r}: nodata {self.nodata} is also a class code")
        for code in (*self.codes, self.nodata, *self.remap, *self.remap.values()):
            if not 0 <= code <= 255:
                raise ConfigError(f"legend {self.name!r}: code {code} does not fit in uint8 (0-255)")
        bad = sorted(v for v in self.remap.values() if v not in self.codes and v != self.nodata)
        if bad:
            raise ConfigError(f"legend {self.name!r}: remap targets {bad} are not class codes of the legend")

    @property
    def num_classes(self) -> int:
        """Number of classes (channels of a probability map)."""
        return len(self.codes)

    def lookup(self) -> np.ndarray:
        """A 256-entry table: source code -> channel index, -1 for nodata, -2 for unknown codes."""
        table = np.full(256, -2, dtype=np.int64)
        for k, code in enumerate(self.codes):
            table[code] = k
        table[self.nodata] = -1
        for src, dst in self.remap.items():
            table[src] = -1 if dst == self.nodata else self.codes.index(dst)
        return table

    def to_index(self, labels: np.ndarray, extra_nodata: int | None = None) -> np.ndarray:
        """Map a label array (source or legend codes) to channel indices; nodata becomes -1.

        Args:
            labels: integer codes.
            extra_nodata: another code to treat as nodata (for example a raster's own nodata).

        Raises:
            ConfigError: a code that is neither a class, nodata nor in ``remap``.
        """
        arr = np.asarray(labels)
        if arr.dtype.kind not in "iu":
            raise ConfigError(f"labels must be integer codes, got dtype {arr.dtype}")
        table = self.lookup()
        if extra_nodata is not None and 0 <= int(extra_nodata) <= 255:
            table[int(extra_nodata)] = -1
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ConfigError(f"label codes must be 0-255, found {int(arr.min())}..{int(arr.max())}")
        out = table[arr.astype(np.int64)]
        if (out == -2).any():
            unknown = sorted(int(c) for c in np.unique(arr[out == -2]))
            raise ConfigError(
                f"label codes {unknown} are not in legend {self.name!r} (codes {list(self.codes)}, nodata "
                f"{self.nodata}, remapped {sorted(self.remap)}); pick the right --legend or pass a legend "
                "JSON whose 'remap' covers them"
            )
        return out

    def to_codes(self, index: np.ndarray) -> np.ndarray:
        """Channel indices (-1 = nodata) -> uint8 legend codes."""
        table = np.array([*self.codes, self.nodata], dtype=np.uint8)
        return table[np.asarray(index, dtype=np.int64)]

    def to_dict(self) -> dict[str, Any]:
        """The legend as JSON-ready data (the format :func:`load_legend` reads)."""
        return {
            "name": self.name,
            "description": self.description,
            "nodata": self.nodata,
            "classes": [
                {"code": c, "name": n, "color": "#{:02x}{:02x}{:02x}".format(*rgb)}
                for c, n, rgb in zip(self.codes, self.names, self.colors, strict=True)
            ],
            "remap": {str(k): v for k, v in self.remap.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "legend") -> Legend:
        """Build a legend from :meth:`to_dict`-style data, with errors that name the bad key."""
        known = {"name", "description", "nodata", "classes", "remap", "remap_source"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
        try:
            classes = data["classes"]
            codes = tuple(int(c["code"]) for c in classes)
            names = tuple(str(c["name"]) for c in classes)
            colors = tuple(_rgb(c.get("color", "#808080")) for c in classes)
            remap = {int(k): int(v) for k, v in data.get("remap", {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{where}: each class needs 'code' and 'name' (and optionally 'color': '#rrggbb'); {exc}"
            ) from exc
        return cls(
            name=str(data.get("name", Path(where).stem)),
            codes=codes,
            names=names,
            colors=colors,
            nodata=int(data.get("nodata", 0)),
            remap=remap,
            description=str(data.get("description", "")),
        )


def load_legend(name_or_path: str | os.PathLike[str] | Legend) -> Legend:
    """A shipped legend by name (``chesapeake``, ``enviroatlas``, ``nlcd``) or a user's JSON file."""
    if isinstance(name_or_path, Legend):
        return name_or_path
    text = str(name_or_path)
    if text in BUILTIN_LEGENDS:
        return Legend.from_dict(json.loads((_DATA / f"{text}.json").read_text()), where=text)
    path = Path(text)
    if not path.is_file():
        raise ConfigError(
            f"unknown legend {text!r}: use one of {list(BUILTIN_LEGENDS)} or the path of a legend JSON file"
        )
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"legend file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"legend file {path} must hold a JSON object")
    return Legend.from_dict(data, where=str(path))
