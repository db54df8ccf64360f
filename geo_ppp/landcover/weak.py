"""Weak labels -> a per-pixel distribution over the target legend's classes.

The source is a coarse label raster (NLCD codes) already on the inference grid. Each source class
is one-hot encoded, blurred with a Gaussian (Rolf et al. 2022: sigma 31 px at 1 m, which spreads
the 30 m blocks over their neighbours), and mapped through a co-occurrence matrix
``M[target, source] = P(target class | source class)``. Pixels whose source is nodata take the
blurred evidence of their neighbours (normalised convolution), or the matrix's mean column where
there is none nearby.

Co-occurrence matrices are JSON files (``geo_ppp/data/cooccurrence``)::

    {"legend": "chesapeake", "source_codes": [21, 22, ...], "target_codes": [1, 2, 3, 4],
     "matrix": [[...], ...]}   # rows = target classes, columns = source codes, columns sum to 1
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from geo_ppp.errors import ConfigError
from geo_ppp.geo.legend import Legend

__all__ = [
    "BUILTIN_COOCCURRENCE",
    "Cooccurrence",
    "estimate_cooccurrence",
    "gaussian_blur",
    "load_cooccurrence",
    "weak_distribution",
]

_DATA = resources.files("geo_ppp") / "data" / "cooccurrence"
#: legend -> the shipped matrix used by default; other shipped matrices by name.
BUILTIN_COOCCURRENCE = {
    "chesapeake": "chesapeake",
    "chesapeake-wv": "chesapeake-wv",
    "chesapeake-md": "chesapeake-md",
    "enviroatlas": "enviroatlas",
    "enviroatlas-pa": "enviroatlas-pa",
    "enviroatlas-nc": "enviroatlas-nc",
    "enviroatlas-austin_tx": "enviroatlas-austin_tx",
    "enviroatlas-az": "enviroatlas-az",
}


@dataclass(frozen=True)
class Cooccurrence:
    """``matrix[i, j] = P(target class target_codes[i] | source code source_codes[j])``."""

    legend: str
    source_codes: tuple[int, ...]
    target_codes: tuple[int, ...]
    matrix: np.ndarray
    description: str = ""

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (len(self.target_codes), len(self.source_codes)):
            raise ConfigError(
                f"co-occurrence matrix is {m.shape}, expected (targets {len(self.target_codes)}, "
                f"sources {len(self.source_codes)})"
            )
        if (m < 0).any() or not np.isfinite(m).all():
            raise ConfigError("co-occurrence matrix must be finite and non-negative")
        sums = m.sum(0)
        if (sums <= 0).any():
            zero = [self.source_codes[j] for j in np.flatnonzero(sums <= 0)]
            raise ConfigError(f"co-occurrence matrix has empty columns for source codes {zero}")
        object.__setattr__(self, "matrix", m / sums)

    def check_legend(self, legend: Legend) -> None:
        """Refuse a matrix made for other target classes."""
        if list(self.target_codes) != list(legend.codes):
            raise ConfigError(
                f"the co-occurrence matrix maps to classes {list(self.target_codes)} ({self.legend!r}), but "
                f"legend {legend.name!r} has {list(legend.codes)}; pass a matching --cooccurrence"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the format :func:`load_cooccurrence` reads)."""
        return {
            "legend": self.legend,
            "description": self.description,
            "source_codes": list(self.source_codes),
            "target_codes": list(self.target_codes),
            "matrix": [[round(float(v), 6) for v in row] for row in self.matrix],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON form atomically."""
        from geo_ppp.core.atomic import write_json

        write_json(Path(path), self.to_dict())


def load_cooccurrence(name_or_path: str | os.PathLike[str] | Cooccurrence) -> Cooccurrence:
    """A shipped matrix by name (see :data:`BUILTIN_COOCCURRENCE`) or a JSON file."""
    if isinstance(name_or_path, Cooccurrence):
        return name_or_path
    text = str(name_or_path)
    if text in BUILTIN_COOCCURRENCE:
        data = json.loads((_DATA / f"{BUILTIN_COOCCURRENCE[text]}.json").read_text())
        where = text
    else:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(
                f"unknown co-occurrence {text!r}: use one of {sorted(BUILTIN_COOCCURRENCE)} or a JSON file "
                "made "
                "by `geo-ppp cooccurrence`"
            )
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"co-occurrence file {path} is not valid JSON: {exc}") from exc
        where = str(path)
    try:
        return Cooccurrence(
            legend=str(data.get("legend", "")),
            source_codes=tuple(int(c) for c in data["source_codes"]),
            target_codes=tuple(int(c) for c in data["target_codes"]),
            matrix=np.asarray(data["matrix"], dtype=np.float64),
            description=str(data.get("description", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: needs 'source_codes', 'target_codes' and 'matrix' ({exc})") from exc


def estimate_cooccurrence(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    legend: Legend,
    source_nodata: int | None = 0,
    smoothing: float = 1.0,
    description: str = "",
    prior: Cooccurrence | None = None,
    prior_weight: float = 0.0,
    sites: Sequence[Hashable] | None = None,
) -> Cooccurrence:
    """Count ``P(target | source)`` over aligned (target labels, source codes) arrays.

    Args:
        pairs: (target label codes, source codes) arrays of equal shape, pixel-aligned.
        legend: remaps the target codes; its nodata pixels are skipped.
        source_nodata: source code to skip.
        smoothing: pseudo-count added to every cell (keeps rare columns from being all-or-nothing).
        description: recorded in the file.
        prior: a matrix for the same legend whose columns are added as ``prior_weight`` pseudo-pixels:
            codes rarely or never seen in ``pairs`` fall back on it, well-sampled ones follow the counts.
        prior_weight: pixels' worth of ``prior`` per column.
        sites: one label per pair; pairs with the same label are one site (e.g. one NAIP tile). Each
            site's counts are scaled so that every site weighs as much as the mean site: a tile
            labelled at 1 m then does not outweigh a whole tile sampled at 25 m a hundred to one.
            ``None``: every pixel counts once.
    """
    if sites is not None:
        sites = list(sites)
        if len(sites) != len(pairs):
            raise ConfigError(f"{len(sites)} site label(s) for {len(pairs)} pair(s); give one per pair")
    per_site: dict[Hashable, dict[int, np.ndarray]] = {}
    for n, (target, source) in enumerate(pairs):
        tally = per_site.setdefault(sites[n] if sites is not None else 0, {})
        if target.shape != source.shape:
            raise ConfigError(f"target {target.shape} and source {source.shape} are not aligned")
        idx = legend.to_index(target)
        src = np.asarray(source).astype(np.int64)
        keep = idx >= 0
        if source_nodata is not None:
            keep &= src != source_nodata
        for code in np.unique(src[keep]):
            sel = keep & (src == code)
            tally.setdefault(int(code), np.zeros(legend.num_classes))
            tally[int(code)] += np.bincount(idx[sel], minlength=legend.num_classes)
    totals = {site: sum(float(v.sum()) for v in c.values()) for site, c in per_site.items()}
    if not any(totals.values()):
        raise ConfigError("no pixel has both a target label and a source code; are the rasters aligned?")
    empty = [site for site, total in totals.items() if total == 0]
    if empty:
        raise ConfigError(f"site(s) {empty} have no pixel with both a target label and a source code")
    mean_total = float(np.mean(list(totals.values())))
    counts: dict[int, np.ndarray] = {}
    for site, site_counts in per_site.items():
        for code, v in site_counts.items():
            counts[code] = counts.get(code, np.zeros(legend.num_classes)) + mean_total / totals[site] * v
    if prior is not None and prior_weight > 0:
        prior.check_legend(legend)
        for j, code in enumerate(prior.source_codes):
            counts.setdefault(int(code), np.zeros(legend.num_classes))
            counts[int(code)] = counts[int(code)] + prior_weight * prior.matrix[:, j]
    codes = sorted(counts)
    matrix = np.stack([counts[c] + smoothing for c in codes], axis=1)
    return Cooccurrence(legend.name, tuple(codes), tuple(legend.codes), matrix, description)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding (sigma in pixels; 0 = none)."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(truncate * sigma)))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    h, w = x.shape[-2:]
    # reflect padding needs pad < size: fall back to replicate for tiny inputs
    mode = "reflect" if radius < min(h, w) else "replicate"
    y = F.pad(x, (radius, radius, 0, 0), mode=mode)
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode=mode)
    return F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def weak_distribution(
    source: np.ndarray | torch.Tensor,
    cooccurrence: Cooccurrence,
    sigma: float = 31.0,
    nodata: int | None = 0,
    device: torch.device | str = "cpu",
    downsample: int = 1,
) -> torch.Tensor:
    """Source codes (H, W) or (B, H, W) -> target class distribution (B, K, H, W), summing to 1.

    With ``downsample > 1`` (dividing H and W) the result is at 1/``downsample`` resolution: the
    one-hot codes are average-pooled first and blurred with ``sigma / downsample``, which for a
    blur much wider than the pooling is the same distribution for ``downsample^2`` less work.

    Raises:
        ConfigError: source codes that the matrix does not know (names them and the fix).
    """
    if torch.is_tensor(source):
        src = source.to(device).long()
    else:
        src = torch.as_tensor(np.asarray(source).astype(np.int64), device=device)
    if src.dim() == 2:
        src = src[None]
    known = torch.tensor(cooccurrence.source_codes, device=device)
    valid = torch.ones_like(src, dtype=torch.bool) if nodata is None else src != nodata
    present = torch.unique(src[valid])
    unknown = present[~torch.isin(present, known)]
    if unknown.numel():
        raise ConfigError(
            f"weak-label codes {unknown.tolist()} are not in the co-occurrence matrix (it knows "
            f"{list(cooccurrence.source_codes)}); pass --cooccurrence with a matrix that covers them, for "
            "example one estimated with `geo-ppp cooccurrence`"
        )
    # only the codes present get a channel: blurring costs one pass per channel, and a matrix may know
    # twenty codes of which a tile holds three
    onehot = (src[:, None] == present.view(1, -1, 1, 1)).float() * valid[:, None].float()
    stack = torch.cat([onehot, valid[:, None].float()], 1)
    if downsample > 1:
        stack = F.avg_pool2d(stack, downsample)
        sigma = sigma / downsample
    mass = gaussian_blur(stack, sigma)
    blurred, weight = mass[:, :-1], mass[:, -1:]
    matrix = torch.as_tensor(cooccurrence.matrix, dtype=torch.float32, device=device)
    mean_col = matrix.mean(1).view(1, -1, 1, 1)
    columns = (present[:, None] == known[None]).long().argmax(1)  # every present code is known (checked)
    dist = torch.einsum("ks,bshw->bkhw", matrix[:, columns], blurred / weight.clamp_min(1e-6))
    dist = torch.where(weight > 1e-3, dist, mean_col.expand_as(dist))
    return dist / dist.sum(1, keepdim=True).clamp_min(1e-12)
