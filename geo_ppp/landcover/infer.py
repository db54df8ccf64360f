"""Land-cover inference for a batch of windows: weak labels + colour clusters + the diffusion prior.

The algorithm (Graikos et al. 2022, section 2 of docs/METHOD.md, then refined at 1 m):

1. The weak labels (source codes on the image grid) become a class distribution through the
   co-occurrence matrix, after a Gaussian blur (sigma 31 px at 1 m).
2. Imagery and weak distribution are average-pooled to the prior's resolution (4 m for the
   shipped prior); the image is clustered there by the local Gaussian mixture.
3. Plug-and-play: the latent is optimised under the DDPM prior with the local KL (weak labels) and
   local mutual-information (clusters) constraints. It starts from the weak distribution.
4. The coarse posterior is refined at the image's own resolution: a class-conditional Gaussian
   model of the 1 m pixel features (bands, NDVI, local texture) is fitted per window, weighted by
   the posterior, and combined with the upsampled posterior by a few EM rounds. This puts class
   boundaries where the image has them, instead of on the 4 m cells.

With a region appearance model (``appearance=``, fitted on the whole region before any window by
:mod:`geo_ppp.landcover.appearance`), the weak labels use the region's calibrated trust, each cell gets
the region model's posterior (:func:`local_class_posterior`), the latent starts there and a per-cell
constraint (:class:`~geo_ppp.landcover.constraints.PixelEvidence`) holds it; the per-window colour
model of step 4 is then left out (``appearance_refine_iterations``), because a window-level model
re-absorbs what the region model separated (a clearing inside a forest block).

``prior=None`` (or ``prior_weight=0``) gives the constraints-only ablation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch
from torch.nn import functional as F

from geo_ppp.core.config import config_from_mapping, config_to_dict
from geo_ppp.core.constraints import Sum
from geo_ppp.core.pnp import PnPConfig, plug_and_play
from geo_ppp.core.weights import Prior
from geo_ppp.errors import ConfigError, ShapeError
from geo_ppp.landcover.appearance import AppearanceModel, local_class_posterior
from geo_ppp.landcover.clustering import ClusterConfig, box_mean, image_features, local_gmm
from geo_ppp.landcover.constraints import LocalKL, LocalMutualInformation, PixelEvidence, Relaxation
from geo_ppp.landcover.refine import refine_full_resolution
from geo_ppp.landcover.weak import Cooccurrence, weak_distribution

__all__ = [
    "PRESETS",
    "PRESET_NAMES",
    "InferConfig",
    "WindowResult",
    "coarse_inputs",
    "default_infer_config",
    "infer_windows",
    "local_class_posterior",
    "refine_full_resolution",
]

#: Plug-and-play settings for land cover (tuned on sample_tiles patches 0-3; see the benchmark).
LANDCOVER_PNP = {
    "steps": 60,
    "optimizer": "adam",
    "lr": 0.05,
    "lr_schedule": "linear",
    "t_schedule": "cosine",
    "t_max": 400,
    "t_min": 1,
    "constraint_weight": 1.0,
    "weight_schedule": "constant",
    "grad_clip": None,
    "init": "noise",
}


#: Named inference presets. ``paper``: the settings with which Graikos et al. made the maps their
#: fast segmenter learned from (docs/METHOD.md): 200 Adam steps (beta1 0, lr 5e-3 decaying linearly
#: to 1e-3 of it), t from 430 annealed to 1 with a cosine modulation, both constraint weights 1 -> 0,
#: the interval relaxation with sigma 0.2 -> 0.02, then 100 ancestral steps from t = 100 without
#: re-noising. ``tuned`` (the default) is what the prior records in its metadata.
PRESETS: dict[str, dict[str, object]] = {
    "paper": {
        "pnp": {
            "steps": 200,
            "optimizer": "adam",
            "adam_beta1": 0.0,
            "lr": 5e-3,
            "lr_schedule": "linear",
            "lr_final": 1e-3,
            "t_schedule": "paper",
            "t_max": 430,
            "t_min": 1,
            "t_amplitude": 0.3,
            "t_cycles": 200 / (20 * math.pi),
            "constraint_weight": 1.0,
            "weight_schedule": "linear",
            "grad_clip": None,
            "finish": "ddpm",
            "finish_t": 100,
            "finish_steps": None,
            "finish_renoise": False,
        },
        "kl_weight": 1.0,
        "mi_weight": 1.0,
        "relaxation": "interval",
        "relax_start": 0.2,
        "relax_end": 0.02,
    },
}
PRESET_NAMES = ("tuned", *PRESETS)


@dataclass(frozen=True)
class InferConfig:
    """Settings of :func:`infer_windows`.

    Attributes:
        pnp: plug-and-play settings (``steps``, ``lr``, ``t_max``...); see :class:`PnPConfig`.
        clusters: local-GMM settings at the prior's resolution.
        weak_sigma_m: Gaussian blur of the weak labels, metres.
        kl_weight, mi_weight: weights of the two constraints.
        kl_radius, mi_radius: their box radii, in prior cells.
        relaxation: ``softmax`` or ``interval``; ``relax_start``/``relax_end`` its annealing.
        init_scale: the latent starts at ``init_scale * (2 * weak - 1)``.
        refine: refine at the image resolution (False returns the upsampled coarse posterior).
        refine_iterations: EM rounds of the refinement.
        refine_coarse_power: exponent of the coarse posterior in the refinement.
        refine_weak_power: exponent of the (blurred) weak distribution in the refinement.
        texture_radius: radius (pixels at 1 m) of the local-contrast feature.
        appearance_kl: with a region appearance model, the local KL's target is the region
            model's posterior (box-pooled like the KL itself) instead of the weak distribution.
        appearance_weight: weight of the per-cell :class:`PixelEvidence` constraint towards the
            region model's posterior; 0 leaves it out.
        appearance_trust: use the region's calibrated co-occurrence columns for the weak labels.
        appearance_init: start the latent at the region model's posterior (else at the weak labels).
        appearance_refine_iterations: per-window EM rounds of the 1 m refinement when a region
            model is given (it replaces the per-window colour model: 0 by default).
        refine_appearance_power: exponent of the region model's likelihood ratio in the 1 m
            refinement (0: the refinement does not see it again).
        local_radius, local_anchor, local_iterations, local_sparsity: the region model's posterior
            per cell (:func:`local_class_posterior`): box radius (prior cells) of the local class
            shares, the weight of the weak labels in them, EM rounds, the sparsity threshold.
    """

    pnp: dict[str, object] = field(default_factory=lambda: dict(LANDCOVER_PNP))
    clusters: dict[str, object] = field(default_factory=dict)
    weak_sigma_m: float = 31.0
    kl_weight: float = 1.0
    mi_weight: float = 0.2
    kl_radius: int = 15
    mi_radius: int = 15
    relaxation: str = "softmax"
    relax_start: float = 0.4
    relax_end: float = 0.04
    init_scale: float = 1.0
    refine: bool = True
    refine_iterations: int = 8
    refine_coarse_power: float = 1.0
    refine_weak_power: float = 0.0
    texture_radius: int = 3
    appearance_kl: bool = True
    appearance_weight: float = 1.0
    appearance_trust: bool = True
    appearance_init: bool = True
    appearance_refine_iterations: int = 0
    refine_appearance_power: float = 0.0
    local_radius: int = 15
    local_anchor: float = 0.05
    local_iterations: int = 10
    local_sparsity: float = 0.1

    def __post_init__(self) -> None:
        PnPConfig.from_dict({**LANDCOVER_PNP, **self.pnp})  # validates keys and values now
        ClusterConfig.from_dict(self.clusters)
        if self.relaxation not in Relaxation.kinds:
            raise ConfigError(
                f"relaxation {self.relaxation!r} is unknown; use one of {list(Relaxation.kinds)}"
            )
        if min(self.weak_sigma_m, self.kl_weight, self.mi_weight, self.appearance_weight,
               self.refine_appearance_power, self.local_anchor) < 0:
            raise ConfigError(
                "weak_sigma_m, kl_weight, mi_weight, appearance_weight, refine_appearance_power and "
                "local_anchor must be >= 0"
            )
        if not 0 <= self.local_sparsity < 1 or self.local_radius < 0 or self.local_iterations < 0:
            raise ConfigError("local_sparsity must be in [0, 1), local_radius and local_iterations >= 0")
        if self.appearance_refine_iterations < 0 or self.refine_iterations < 0:
            raise ConfigError("refine_iterations and appearance_refine_iterations must be >= 0")

    def pnp_config(self) -> PnPConfig:
        """The resolved :class:`PnPConfig`."""
        return PnPConfig.from_dict({**LANDCOVER_PNP, **self.pnp})

    def cluster_config(self) -> ClusterConfig:
        """The resolved :class:`ClusterConfig`."""
        return ClusterConfig.from_dict(self.clusters)

    def with_pnp(self, **changes: object) -> InferConfig:
        """A copy with some plug-and-play settings changed."""
        return replace(self, pnp={**self.pnp, **changes})

    def to_dict(self) -> dict[str, object]:
        """JSON-able form, with the plug-and-play and cluster settings fully resolved."""
        data = config_to_dict(self)
        data["pnp"] = self.pnp_config().to_dict()
        data["clusters"] = self.cluster_config().to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> InferConfig:
        """Strict parse (unknown keys are errors)."""
        return config_from_mapping(cls, data, "the inference config")


@dataclass
class WindowResult:
    """What :func:`infer_windows` returns for a batch.

    Attributes:
        probabilities: (B, K, H, W) class probabilities at the image resolution.
        coarse: (B, K, h, w) posterior at the prior's resolution.
        weak: (B, K, H, W) the weak distribution.
    """

    probabilities: torch.Tensor
    coarse: torch.Tensor
    weak: torch.Tensor


def _upsample(p: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling of class probabilities, renormalised."""
    if factor == 1:
        return p
    up = F.interpolate(p, scale_factor=factor, mode="bilinear", align_corners=False)
    return up / up.sum(1, keepdim=True).clamp_min(1e-12)


def coarse_inputs(
    image: torch.Tensor, valid: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool image and mask by ``factor``: (masked-mean image, mask of cells > half valid)."""
    v = valid.float()
    if factor == 1:
        return image, v
    pv = F.avg_pool2d(v, factor)
    img = F.avg_pool2d(image * v, factor) / pv.clamp_min(1e-6)
    return img, (pv > 0.5).float()


def infer_windows(
    image: torch.Tensor,
    weak_codes: torch.Tensor,
    valid: torch.Tensor,
    cooccurrence: Cooccurrence,
    prior: Prior | None,
    config: InferConfig | None = None,
    *,
    seeds: list[int] | None = None,
    resolution_m: float = 1.0,
    weak_nodata: int | None = 0,
    factor: int | None = None,
    device: torch.device | str = "cpu",
    timings: dict[str, float] | None = None,
    appearance: AppearanceModel | None = None,
) -> WindowResult:
    """Infer class probabilities for a batch of windows.

    Args:
        image: (B, C, H, W) imagery in 0-255 (C >= 3; NIR as band 4 when present).
        weak_codes: (B, H, W) weak-label source codes on the image grid.
        valid: (B, 1, H, W) image validity mask.
        cooccurrence: source codes -> target classes.
        prior: the land-cover prior; ``None`` runs the constraints-only ablation.
        config: settings.
        seeds: one seed per window (default ``range(B)``).
        resolution_m: ground size of an image pixel, metres (for the weak blur).
        weak_nodata: weak-label nodata code.
        factor: image pixels per prior cell (default: the prior's ``resolution_m / resolution_m``).
        device: where to run.
        timings: if given, seconds spent in ``clustering`` (weak labels, pooling, local GMM),
            ``pnp`` (the plug-and-play optimisation) and ``refine`` are added to it.
        appearance: the region's calibrated appearance model (:mod:`geo_ppp.landcover.appearance`):
            its evidence, pooled to the prior's cells and combined with the region's trust in the
            weak labels by :func:`local_class_posterior`, starts the latent and enters the objective
            (:class:`PixelEvidence`, and the KL's target); ``None`` runs the per-window model alone.
    """
    clock = _Clock(timings, device)
    config = config or InferConfig()
    device = torch.device(device)
    if image.dim() != 4 or weak_codes.dim() != 3 or valid.dim() != 4:
        raise ShapeError("image must be (B, C, H, W), weak_codes (B, H, W) and valid (B, 1, H, W)")
    b, _, h, w = image.shape
    seeds = list(range(b)) if seeds is None else list(seeds)
    if factor is None:
        prior_res = float(prior.meta.get("resolution_m", 4.0)) if prior is not None else 4.0
        factor = max(1, round(prior_res / resolution_m))
    if h % factor or w % factor:
        raise ShapeError(f"window {h}x{w} is not a multiple of the prior's cell ({factor} pixels)")
    image = image.to(device).float()
    valid = valid.to(device)
    matrix = cooccurrence
    evidence = evidence_c = None
    if appearance is not None:
        if config.appearance_trust:
            matrix = appearance.calibrated(cooccurrence)
        evidence = appearance.log_ratio(image).to(device) * valid.float()
        evidence_c = F.avg_pool2d(evidence, factor) if factor > 1 else evidence
    # the weak distribution is computed at the prior's resolution (its blur is far wider than a cell)
    # and upsampled for the 1 m refinement
    weak_c = weak_distribution(
        weak_codes, matrix, config.weak_sigma_m / resolution_m, weak_nodata, device, downsample=factor
    )
    img_c, valid_c = coarse_inputs(image, valid, factor)
    weak = _upsample(weak_c, factor)
    clusters = local_gmm(image_features(img_c), config.cluster_config(), valid_c)
    posterior_c = None
    if evidence_c is not None:
        posterior_c = local_class_posterior(
            weak_c, evidence_c, valid_c, config.local_radius, config.local_anchor, config.local_iterations,
            config.local_sparsity,
        )
    clock.lap("clustering")

    relax = Relaxation(config.relaxation, config.relax_start, config.relax_end)
    terms = []
    if config.kl_weight:
        target = weak_c
        if posterior_c is not None and config.appearance_kl:
            target = box_mean(posterior_c, config.kl_radius)
        terms.append(LocalKL(target, relax, config.kl_radius, valid_c) * config.kl_weight)
    if posterior_c is not None and config.appearance_weight:
        terms.append(PixelEvidence(posterior_c, relax, valid_c) * config.appearance_weight)
    if config.mi_weight:
        terms.append(LocalMutualInformation(clusters, relax, config.mi_radius, valid_c) * config.mi_weight)
    constraint = Sum(terms) if terms else None
    pnp = config.pnp_config()
    # the latent starts from the best estimate at hand: the region model's posterior when there is one
    start = posterior_c if posterior_c is not None and config.appearance_init else weak_c
    x0 = config.init_scale * (2 * start - 1)
    if prior is None or pnp.prior_weight == 0:
        pnp = replace(pnp, prior_weight=0.0)
        denoiser, schedule = _NullDenoiser(weak_c.shape[1]), _null_schedule()
    else:
        denoiser, schedule = prior.denoiser, prior.schedule
    x = plug_and_play(
        denoiser, schedule, constraint=constraint, config=pnp, seed=seeds, x_init=x0, device=device
    )
    clock.lap("pnp")
    relax.on_step(1.0)
    coarse = relax(x) * valid_c + (1 - valid_c) * weak_c
    up = _upsample(coarse, factor)
    iterations = config.appearance_refine_iterations if appearance is not None else None
    probs = up
    if config.refine:
        probs = refine_full_resolution(image, up, weak, valid, config, evidence, iterations)
    clock.lap("refine")
    return WindowResult(probabilities=probs, coarse=coarse, weak=weak)


class _Clock:
    """Adds wall seconds per stage to a dict (synchronising CUDA so the split is true)."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device | str) -> None:
        self.timings = timings
        self.cuda = torch.device(device).type == "cuda"
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.timings is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


class _NullDenoiser(torch.nn.Module):
    """Stands in for the prior in the constraints-only ablation (never called: prior_weight is 0)."""

    size_multiple = 1

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.in_channels = channels

    def check_input(self, x_t: torch.Tensor, t: object) -> None:  # noqa: D102
        return None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise RuntimeError("the constraints-only path must not call the denoiser")


def _null_schedule():  # noqa: ANN202
    from geo_ppp.core.schedules import NoiseSchedule

    return NoiseSchedule.create("linear", 1000)


def default_infer_config(prior: Prior | None, preset: str = "tuned") -> InferConfig:
    """Inference settings: the prior's tuned ones, or a named preset.

    ``tuned`` is the prior's ``meta["infer"]`` (else the generic defaults); ``paper`` is the
    paper's schedule (:data:`~geo_ppp.landcover.infer.PRESETS`) on top of it.

    Raises:
        ConfigError: an unknown preset.
    """
    tuned = InferConfig()
    if prior is not None and isinstance(prior.meta.get("infer"), dict):
        tuned = InferConfig.from_dict(prior.meta["infer"])
    if preset == "tuned":
        return tuned
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; use one of {list(PRESET_NAMES)}")
    return InferConfig.from_dict({**tuned.to_dict(), **PRESETS[preset]})
