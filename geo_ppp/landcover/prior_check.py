"""Is a land-cover prior a model of land cover? Its unconditional samples against real label windows.

``check_prior`` draws N unconditional samples from a prior, reads N real label windows (by default
the prior's own held-out windows, see :mod:`geo_ppp.landcover.prior_data`), and compares:

- one-hotness: the mean over cells of the largest channel, mapped from [-1, 1] to [0, 1] (real
  one-hot maps score 1);
- class mix: the share of each class over all cells, as a total variation distance;
- speckle: the share of cells none of whose 4-neighbours has their class;
- rare majorities: the share of samples whose majority class is the majority of < 1 % of real windows;
- landscape metrics per class (pylandstats, 8-connected patches): patch density (patches per 100 ha),
  mean patch area (ha), edge density (m per ha), pooled over all maps of a set.

The limits (:class:`CheckLimits`) are those a prior must meet before it is trusted as a prior: it must
paint what real maps hold, in the shapes they hold it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo_ppp.core.atomic import write_json
from geo_ppp.core.memory import check_memory
from geo_ppp.core.sampling import sample
from geo_ppp.core.weights import Prior
from geo_ppp.errors import ConfigError, GeoPPPError
from geo_ppp.geo.legend import Legend, load_legend
from geo_ppp.io.pictures import write_png
from geo_ppp.outputs import check_outputs

__all__ = [
    "CheckLimits",
    "PriorReport",
    "check_prior",
    "compare_statistics",
    "map_statistics",
    "one_hotness",
    "samples_to_index",
    "sheet_image",
    "write_report",
]

log = logging.getLogger(__name__)

LANDSCAPE_METRICS = ("patch_density", "mean_patch_area", "edge_density")


@dataclass(frozen=True)
class CheckLimits:
    """What a prior must meet against real windows.

    Attributes:
        one_hot_min: lowest mean largest-channel value in [0, 1].
        mix_tv_max: largest total variation between the class mixes.
        speckle_ratio_max: largest speckle of the samples, as a multiple of the real speckle (with a
            floor of 0.1 % for the real one, so a speckle-free real set does not demand zero).
        rare_majority_max: largest share of samples whose majority class is rare as a majority.
        rare_threshold: a class is a rare majority if fewer real windows than this share have it as
            their majority.
        landscape_ratio_max: patch density and mean patch area within this factor of real.
        landscape_min_share: the landscape metrics are checked for classes holding at least this
            share of the real cells (tree canopy and low vegetation for the Chesapeake prior;
            water and built hold under 1 % of its held-out cells).
    """

    one_hot_min: float = 0.9
    mix_tv_max: float = 0.05
    speckle_ratio_max: float = 2.0
    rare_majority_max: float = 0.05
    rare_threshold: float = 0.01
    landscape_ratio_max: float = 1.5
    landscape_min_share: float = 0.02


@dataclass
class PriorReport:
    """What :func:`check_prior` found.

    Attributes:
        prior: name of the prior.
        legend: legend name.
        samples: statistics of the samples (see :func:`map_statistics`), plus ``one_hotness``.
        real: statistics of the real windows.
        checks: name -> {value, limit, passed}.
        settings: how the samples and windows were drawn.
        sample_index: the samples' class maps (N, H, W), for the sheet.
        real_index: the real windows (M, H, W).
        training: statistics of as many of the prior's *training* windows (held-out runs only).
        training_checks: the same checks applied to those training windows instead of the samples:
            how far the training data itself is from the held-out windows. A prior that models its
            training data cannot be expected to come closer than that; where the training data fails
            a check, so will a faithful prior, and the held-out area differs from the rest.
    """

    prior: str
    legend: str
    samples: dict[str, Any]
    real: dict[str, Any]
    checks: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    sample_index: np.ndarray = field(repr=False)
    real_index: np.ndarray = field(repr=False)
    training: dict[str, Any] | None = None
    training_checks: dict[str, dict[str, Any]] | None = None

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(c["passed"] for c in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (without the maps)."""
        return {
            "prior": self.prior,
            "legend": self.legend,
            "passed": self.passed,
            "checks": self.checks,
            "samples": self.samples,
            "real": self.real,
            "settings": self.settings,
            "training_windows": self.training,
            "training_windows_checks": self.training_checks,
        }


def one_hotness(x: torch.Tensor | np.ndarray) -> float:
    """Mean over cells of the largest channel of samples (N, K, H, W) in [-1, 1], mapped to [0, 1]."""
    arr = torch.as_tensor(x, dtype=torch.float32)
    return float(((arr.max(dim=1).values + 1) / 2).clamp(0, 1).mean())


def samples_to_index(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Samples (N, K, H, W) -> class maps (N, H, W) by argmax."""
    return torch.as_tensor(x).argmax(dim=1).numpy().astype(np.int64)


def _speckle(index: np.ndarray) -> float:
    """Share of cells with no 4-neighbour of their own class (cells at the border have fewer)."""
    same = np.zeros(index.shape, dtype=bool)
    same[:, 1:, :] |= index[:, 1:, :] == index[:, :-1, :]
    same[:, :-1, :] |= index[:, :-1, :] == index[:, 1:, :]
    same[:, :, 1:] |= index[:, :, 1:] == index[:, :, :-1]
    same[:, :, :-1] |= index[:, :, :-1] == index[:, :, 1:]
    return float((~same).mean())


def _landscape(index: np.ndarray, k: int, res_m: float) -> dict[str, dict[str, float | None]]:
    """Per-class patch density, mean patch area and edge density, pooled over maps (pylandstats)."""
    import pylandstats as pls

    n_patches = np.zeros(k)
    area_ha = np.zeros(k)
    edge_m = np.zeros(k)
    metrics = ["number_of_patches", "total_area", "total_edge"]
    for m in index:
        # pylandstats treats its nodata value (0) as outside the landscape: classes are 1..k
        df = pls.Landscape((m + 1).astype(np.uint8), res=(res_m, res_m), nodata=0).compute_class_metrics_df(
            metrics=metrics
        )
        for code, row in df.iterrows():
            c = int(code) - 1
            n_patches[c] += row["number_of_patches"]
            area_ha[c] += row["total_area"]
            edge_m[c] += row["total_edge"]
    total_ha = index.size * res_m * res_m / 1e4
    out: dict[str, dict[str, float | None]] = {}
    for c in range(k):
        out[str(c)] = {
            "patch_density": float(n_patches[c] / total_ha * 100),
            "mean_patch_area": float(area_ha[c] / n_patches[c]) if n_patches[c] else None,
            "edge_density": float(edge_m[c] / total_ha),
        }
    return out


def map_statistics(index: np.ndarray, k: int, res_m: float) -> dict[str, Any]:
    """Statistics of a set of class maps (N, H, W) of channel indices 0..k-1 at ``res_m`` metres.

    Returns:
        ``class_mix`` (k shares), ``speckle``, ``majority_share`` (per class, the share of maps whose
        majority it is), ``landscape`` (per class index: patch density per 100 ha, mean patch area
        in ha, edge density in m/ha) and ``count``.
    """
    index = np.asarray(index, dtype=np.int64)
    if index.ndim != 3 or index.shape[0] == 0:
        raise ConfigError(f"expected a non-empty stack of class maps (N, H, W), got {index.shape}")
    mix = np.bincount(index.ravel(), minlength=k)[:k] / index.size
    counts = np.stack([(index == c).sum(axis=(1, 2)) for c in range(k)], axis=1)
    majority = np.bincount(counts.argmax(axis=1), minlength=k) / index.shape[0]
    return {
        "count": int(index.shape[0]),
        "class_mix": [float(v) for v in mix],
        "speckle": _speckle(index),
        "majority_share": [float(v) for v in majority],
        "landscape": _landscape(index, k, res_m),
    }


def compare_statistics(
    samples: dict[str, Any], real: dict[str, Any], limits: CheckLimits, names: list[str]
) -> dict[str, dict[str, Any]]:
    """The checks of :class:`CheckLimits`, each as {value, limit, passed}."""
    checks: dict[str, dict[str, Any]] = {}
    oh = samples["one_hotness"]
    checks["one_hotness"] = {
        "value": oh,
        "limit": f">= {limits.one_hot_min}",
        "passed": oh >= limits.one_hot_min,
    }
    tv = 0.5 * float(np.abs(np.array(samples["class_mix"]) - np.array(real["class_mix"])).sum())
    checks["class_mix_tv"] = {
        "value": tv,
        "limit": f"<= {limits.mix_tv_max}",
        "passed": tv <= limits.mix_tv_max,
    }
    ratio = samples["speckle"] / max(real["speckle"], 1e-3)
    checks["speckle_ratio"] = {
        "value": ratio,
        "limit": f"<= {limits.speckle_ratio_max} (real {real['speckle']:.4f}, floor 0.001)",
        "passed": ratio <= limits.speckle_ratio_max,
    }
    rare = [c for c, share in enumerate(real["majority_share"]) if share < limits.rare_threshold]
    share = float(sum(samples["majority_share"][c] for c in rare))
    checks["rare_majority_share"] = {
        "value": share,
        "limit": f"<= {limits.rare_majority_max} (rare majorities: {[names[c] for c in rare]})",
        "passed": share <= limits.rare_majority_max,
    }
    for c, mix in enumerate(real["class_mix"]):
        if mix < limits.landscape_min_share:
            continue
        for metric in ("patch_density", "mean_patch_area"):
            s_val = samples["landscape"][str(c)][metric]
            r_val = real["landscape"][str(c)][metric]
            if s_val is None or r_val is None or r_val == 0 or s_val == 0:
                ratio_v, ok = None, False
            else:
                ratio_v = float(s_val / r_val)
                ok = 1 / limits.landscape_ratio_max <= ratio_v <= limits.landscape_ratio_max
            checks[f"{metric}_ratio[{names[c]}]"] = {
                "value": ratio_v,
                "limit": f"within {limits.landscape_ratio_max}x of real ({r_val})",
                "passed": ok,
            }
    return checks


def _real_windows(
    prior: Prior, legend: Legend, labels: list[str] | None, num: int, seed: int, split: str = "holdout"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Real label windows: the prior's held-out ones (or its training ones), or windows of ``labels``."""
    from geo_ppp.io.label_windows import check_label_rasters, label_dataset, label_files, sample_label_windows

    size = int(prior.meta.get("image_size") or 64)
    window_m = float(prior.meta.get("resolution_m") or 4.0) * size
    if labels:
        check_label_rasters(labels, legend, window_m)
        ds = label_dataset(labels)
        windows = sample_label_windows(ds, legend, num, window_m=window_m, size=size, seed=seed, split="all")
        return windows, {"source": "labels", "paths": list(labels), "split": "all"}
    if not prior.meta.get("holdout"):
        raise ConfigError(
            f"prior {prior.meta.get('name', '?')!r} records no held-out blocks (it was trained on all "
            "its windows, or before geo_ppp kept blocks out); pass real label rasters with --labels"
        )
    sources = prior.meta.get("data") or []
    weights = np.array([float(s.get("weight", 1.0)) for s in sources])
    parts, used = [], []
    for i, src in enumerate(sources):
        want = max(1, int(round(num * weights[i] / weights.sum())))
        try:
            label_files(src["paths"])
        except GeoPPPError as err:
            raise ConfigError(
                f"the prior's training rasters are not here ({err}); run from the folder it was trained "
                "in, or pass real label rasters with --labels"
            ) from None
        check_label_rasters(src["paths"], legend, window_m)
        ds = label_dataset(src["paths"])
        parts.append(
            sample_label_windows(
                ds, legend, want, window_m=window_m, size=size, seed=seed + i, split=split
            )
        )
        used.append({"paths": list(src["paths"]), "windows": int(parts[-1].shape[0])})
    source = "held-out blocks" if split == "holdout" else "training blocks"
    return np.concatenate(parts), {"source": source, "sources": used, "split": split}


def check_prior(
    prior: Prior,
    *,
    labels: list[str] | None = None,
    num: int = 256,
    sampler: str = "ddim",
    steps: int | None = 50,
    seed: int = 0,
    limits: CheckLimits | None = None,
    batch_size: int = 64,
) -> PriorReport:
    """Sample ``num`` maps from ``prior`` and compare them with real label windows.

    Args:
        prior: a land-cover prior.
        labels: label rasters to compare with (default: the prior's held-out windows).
        num: samples (and real windows) to draw.
        sampler: ``ddim`` or ``ddpm``.
        steps: reverse steps (``None``: every timestep).
        seed: seeds the samples and the window draw.
        limits: the pass limits.
        batch_size: samples per denoiser batch.

    Raises:
        ConfigError: not a land-cover prior, ``num`` < 1, labels of another legend, no windows.
    """
    if num < 1:
        raise ConfigError(f"--num must be at least 1, got {num}; ask for e.g. --num 256 samples")
    meta = prior.meta
    if meta.get("kind") != "landcover" or not meta.get("legend"):
        raise ConfigError(
            f"prior {meta.get('name', '?')!r} is not a land-cover prior (its config.json names no legend); "
            "prior-check compares land-cover priors with label maps: pass one trained by "
            "`geo-ppp train-prior --dataset landcover`, e.g. landcover-chesapeake"
        )
    legend = load_legend(str(meta["legend"]))
    limits = limits or CheckLimits()
    size = int(meta.get("image_size") or 64)
    if steps is not None and not 0 < steps <= prior.schedule.num_steps:
        raise ConfigError(
            f"--steps {steps} must lie in 1..{prior.schedule.num_steps}"
            " (the prior's timesteps; 0 takes them all)"
        )
    # samples (float32, one-hot channels) and real windows, each with its class map, held at once
    check_memory(num, size * size * (4.0 * legend.num_classes + 32), "--num", "sample and real window")
    res_m = float(meta.get("resolution_m") or 4.0)
    real, source = _real_windows(prior, legend, labels, num, seed)
    k = legend.num_classes
    device = next(prior.denoiser.parameters()).device
    chunks = []
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        seeds = list(range(seed * 1_000_003 + start, seed * 1_000_003 + start + n))
        chunks.append(
            sample(prior.denoiser, prior.schedule, (k, size, size), n, sampler, steps, seeds, device).cpu()
        )
    x = torch.cat(chunks)
    index = samples_to_index(x)
    sample_stats = {"one_hotness": one_hotness(x), **map_statistics(index, k, res_m)}
    real_stats = map_statistics(real, k, res_m)
    names = list(legend.names)
    checks = compare_statistics(sample_stats, real_stats, limits, names)
    training = training_checks = None
    if source.get("split") == "holdout":
        train_windows, _ = _real_windows(prior, legend, None, num, seed + 7919, split="train")
        training = map_statistics(train_windows, k, res_m)
        training_checks = compare_statistics({"one_hotness": 1.0, **training}, real_stats, limits, names)
    settings = {
        "num": num,
        "sampler": sampler,
        "steps": steps,
        "seed": seed,
        "resolution_m": res_m,
        "size": size,
        "real": source,
        "limits": asdict(limits),
        "classes": names,
        "trained_steps": meta.get("trained_steps"),
    }
    return PriorReport(
        prior=str(meta.get("name", "?")),
        legend=legend.name,
        samples=sample_stats,
        real=real_stats,
        checks=checks,
        settings=settings,
        sample_index=index,
        real_index=real,
        training=training,
        training_checks=training_checks,
    )


def sheet_image(
    samples: np.ndarray, real: np.ndarray, legend: Legend, count: int = 32, scale: int = 2, pad: int = 2
) -> np.ndarray:
    """An RGB uint8 sheet: samples on the left, real windows on the right, in the legend's colours."""
    colors = np.array([*legend.colors, (255, 255, 255)], dtype=np.uint8)
    count = min(count, len(samples), len(real))
    cols = max(1, int(np.ceil(np.sqrt(count))))
    rows = int(np.ceil(count / cols))
    h, w = samples.shape[1:]

    def panel(maps: np.ndarray) -> np.ndarray:
        img = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), len(legend.colors), dtype=np.int64)
        for i in range(count):
            r, q = divmod(i, cols)
            img[
                pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w
            ] = maps[i]
        return colors[img]

    gap = np.full((rows * (h + pad) + pad, 4 * pad, 3), 40, dtype=np.uint8)
    sheet = np.concatenate([panel(samples), gap, panel(real)], axis=1)
    return sheet.repeat(scale, 0).repeat(scale, 1)


def write_report(report: PriorReport, out: str | os.PathLike[str], overwrite: bool = False) -> list[Path]:
    """Write ``prior_check.json`` and ``prior_check.png`` (samples | real windows) into folder ``out``."""
    folder = Path(out)
    json_path, png_path = folder / "prior_check.json", folder / "prior_check.png"
    folder.mkdir(parents=True, exist_ok=True)
    check_outputs([json_path, png_path], overwrite)
    sheet = sheet_image(report.sample_index, report.real_index, load_legend(report.legend))
    write_png(png_path, sheet)
    write_json(json_path, report.to_dict())
    return [json_path, png_path]
