"""The one module of geo_ppp.tsp that opens files: instance files in, tour files out.

Two input formats:

- the standard text format: one instance per line, ``x1 y1 x2 y2 ...``, optionally followed by
  `` output t1 ... tn t1`` (a 1-based closed reference tour);
- TSPLIB ``.tsp`` files with ``EDGE_WEIGHT_TYPE`` ``EUC_2D``, ``CEIL_2D`` or ``ATT``: scaled into the
  unit square with their aspect kept; lengths are reported in TSPLIB's own integer metric.

Bad input raises :class:`~geo_ppp.errors.InputError` naming the file, the line and the fix, before
anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geo_ppp.core.atomic import atomic_path
from geo_ppp.errors import InputError
from geo_ppp.tsp.instances import check_coords, check_tour

__all__ = ["TSPLIB_METRICS", "Problem", "read_problems", "read_tours", "write_tours"]

TSPLIB_METRICS = ("EUC_2D", "CEIL_2D", "ATT")


@dataclass(frozen=True)
class Problem:
    """One instance as read from a file.

    Attributes:
        coords: node coordinates scaled into the unit square (n, 2), what the solver sees.
        raw: the coordinates as given (n, 2), what lengths are measured on.
        metric: ``euclid`` (plain Euclidean lengths) or a TSPLIB edge-weight type.
        reference: a 0-based reference tour (n,), or ``None``.
        where: ``file:line`` of the instance, for messages.
    """

    coords: np.ndarray
    raw: np.ndarray
    metric: str
    reference: np.ndarray | None
    where: str

    @property
    def n(self) -> int:
        """Number of nodes."""
        return int(self.coords.shape[0])

    def length(self, tour: np.ndarray) -> float:
        """Length of a closed 0-based tour in this instance's metric."""
        p = self.raw[np.asarray(tour)]
        delta = p - np.roll(p, -1, axis=0)
        d = np.sqrt((delta**2).sum(1))
        if self.metric == "EUC_2D":
            return float(np.floor(d + 0.5).sum())
        if self.metric == "CEIL_2D":
            return float(np.ceil(d).sum())
        if self.metric == "ATT":
            r = np.sqrt((delta**2).sum(1) / 10.0)
            t = np.floor(r + 0.5)
            return float(np.where(t < r, t + 1, t).sum())
        return float(d.sum())


def _unit_square(raw: np.ndarray) -> np.ndarray:
    low = raw.min(0)
    span = float((raw.max(0) - low).max())
    return (raw - low) / (span if span > 0 else 1.0)


def _read_text(path: Path) -> list[Problem]:
    problems = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        head, sep, tail = line.partition("output")
        try:
            values = [float(v) for v in head.split()]
        except ValueError as err:
            raise InputError(
                f"{where}: {err}; a line holds numbers 'x1 y1 x2 y2 ...' [output t1 ... tn t1]"
            ) from err
        if len(values) % 2:
            raise InputError(f"{where}: an odd count of coordinates ({len(values)}); give x y pairs")
        coords = check_coords(np.array(values).reshape(-1, 2), where)
        reference = None
        if sep:
            reference = _closed_tour(tail.split(), len(coords), where)
        problems.append(Problem(coords, coords, "euclid", reference, where))
    if not problems:
        raise InputError(f"{path}: no instance found; one instance per line, 'x1 y1 x2 y2 ...'")
    return problems


def _closed_tour(tokens: list[str], n: int, where: str) -> np.ndarray:
    try:
        tour = [int(v) for v in tokens]
    except ValueError as err:
        raise InputError(f"{where}: the reference tour after 'output' must be integers ({err})") from err
    if len(tour) == n + 1 and tour[0] == tour[-1]:
        tour = tour[:-1]
    elif len(tour) != n:
        raise InputError(
            f"{where}: the reference tour has {len(tour)} entries; give the {n} nodes 1..{n} "
            "once each, then the first node again"
        )
    return check_tour(np.array(tour) - 1, n, f"{where}: the reference tour")


def _read_tsplib(path: Path) -> list[Problem]:
    lines = path.read_text().splitlines()
    header: dict[str, tuple[str, int]] = {}
    start = None
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if text.upper().startswith("NODE_COORD_SECTION"):
            start = lineno
            break
        if ":" in text:
            key, _, value = text.partition(":")
            header[key.strip().upper()] = (value.strip(), lineno)
        elif text.upper().endswith("_SECTION"):
            raise InputError(
                f"{path}:{lineno}: {text} is not supported; give coordinates in a NODE_COORD_SECTION"
            )
    metric, mline = header.get("EDGE_WEIGHT_TYPE", ("", 0))
    if metric.upper() not in TSPLIB_METRICS:
        raise InputError(
            f"{path}:{mline}: EDGE_WEIGHT_TYPE {metric or '(missing)'} is not supported; "
            f"use one of {', '.join(TSPLIB_METRICS)} (planar coordinates)"
        )
    kind, kline = header.get("TYPE", ("TSP", 0))
    if kind.upper() != "TSP":
        raise InputError(f"{path}:{kline}: TYPE {kind} is not supported; only symmetric TSP")
    if start is None:
        raise InputError(f"{path}: no NODE_COORD_SECTION; give the nodes' coordinates")
    raw = []
    for lineno, line in enumerate(lines[start:], start=start + 1):
        text = line.strip()
        if not text:
            continue
        if text.upper() == "EOF" or not (text[0].isdigit() or text[0] in "+-."):
            break
        parts = text.split()
        try:
            if len(parts) != 3:
                raise ValueError(f"expected 'index x y', got {len(parts)} fields")
            raw.append((float(parts[1]), float(parts[2])))
        except ValueError as err:
            raise InputError(f"{path}:{lineno}: {err}; a node line is 'index x y'") from err
    dim, dline = header.get("DIMENSION", ("", 0))
    if dim and dim.isdigit() and int(dim) != len(raw):
        raise InputError(
            f"{path}:{dline}: DIMENSION {dim} but {len(raw)} node lines follow NODE_COORD_SECTION; "
            "make them agree"
        )
    coords = check_coords(np.array(raw, dtype=np.float64).reshape(-1, 2), f"{path}:{start}")
    return [Problem(_unit_square(coords), coords, metric.upper(), None, f"{path}:{start}")]


def read_problems(paths: list[str | os.PathLike[str]]) -> list[Problem]:
    """Read every instance of the given files, in order (``.tsp``: TSPLIB; else the text format)."""
    problems: list[Problem] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InputError(f"{path}: no such file; give instance files (text format or TSPLIB .tsp)")
        problems += _read_tsplib(path) if path.suffix.lower() == ".tsp" else _read_text(path)
    return problems


def write_tours(path: str | os.PathLike[str], tours: list[np.ndarray]) -> Path:
    """Write one 1-based closed tour per line, atomically."""
    path = Path(path)
    text = "".join(" ".join(str(int(v) + 1) for v in [*t, t[0]]) + "\n" for t in tours)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def read_tours(path: str | os.PathLike[str], sizes: list[int]) -> list[np.ndarray]:
    """Read a tour file (one 1-based closed tour per line) for instances of ``sizes``."""
    path = Path(path)
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) != len(sizes):
        raise InputError(f"{path}: {len(lines)} tours for {len(sizes)} instances; give one tour per instance")
    return [
        _closed_tour(ln.split(), n, f"{path}:{i + 1}")
        for i, (ln, n) in enumerate(zip(lines, sizes, strict=True))
    ]
