"""A region-calibrated appearance model: how each class looks on the region, how far to trust its weak labels.

Fitted on the region itself, before any window is inferred:

- every sampled 1 m pixel ``n`` has appearance features ``f_n`` (R, G, B, NIR, NDVI, their
  neighbourhood means and a local texture) and a weak-label code ``j_n`` (an NLCD class);
- ``p(f | c)`` is a small Gaussian mixture per class (full covariances).

By default (``AppearanceConfig.fit = "anchors"``) a class learns its look from its *anchor* pixels
only: the pixels whose weak code favours it (field pixels in a pasture block, canopy pixels in a
forest block); EM splits them into components, and the trust in the weak labels stays the shipped
co-occurrence matrix's. The image then moves a cell wherever it looks like the other class's
anchors: a regrowing clearing that NLCD still calls forest looks like the region's pastures.

``fit = "em"`` is label super-resolution (Malkin et al., "Label super-resolution networks", ICLR
2019): the hidden class of every pixel has the prior ``pi_{j_n}(c)``, the region's own column of the
matrix, and EM alternates the pixels' classes, the mixtures and MAP columns under a Dirichlet prior
centred on the shipped one (``trust_pseudocount`` pixels). It recovers the real trust of a weak
class (NLCD 41's low-vegetation share) but lets a class absorb another's look where a class looks
unlike across the region's patches (bright autumn crowns taken for field: measured in
``AppearanceConfig.fit``'s note), so it is not the default.

Why this and not a per-window model: inside one 256 m window the clearing can hold most of the
pixels NLCD calls forest, and a per-window "what tree looks like" absorbs it. Pooled over a region,
canopy, field, road and water each have many pixels whose weak labels agree with them, and those
define the classes' appearance; the disagreeing pixels are then explained by the class they look
like.

Identifiability guard: a class is modelled only if it has at least ``min_anchor_pixels`` anchor
pixels in the sample. Otherwise it would be carved out of the tail of another (the brightest canopy
as "field" in an all-forest region). A class that is not modelled gets a neutral likelihood ratio
(0): the weak labels and the per-window model decide it, as without calibration.

Outputs used by inference:

- :meth:`AppearanceModel.log_ratio`: per-pixel ``log p(f | c) - log p(f)`` (B, K, H, W), the evidence
  of the image for each class, 0 for classes not modelled;
- :meth:`AppearanceModel.calibrated`: the region's co-occurrence matrix (the weak labels with the
  region's trust in them).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from geo_ppp.core.config import config_from_mapping, config_to_dict
from geo_ppp.core.weights import read_safetensors
from geo_ppp.errors import ConfigError, ShapeError
from geo_ppp.landcover.clustering import box_mean, image_features
from geo_ppp.landcover.weak import Cooccurrence

#: the version of the calibration (a work dir fitted by another version fits again)
APPEARANCE_VERSION = 2
#: evidence weights the region calibration chooses from (``AppearanceConfig.evidence_weight=None``)
EVIDENCE_WEIGHTS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0)

__all__ = [
    "APPEARANCE_VERSION",
    "EVIDENCE_WEIGHTS",
    "AppearanceConfig",
    "AppearanceModel",
    "CalibrationSkipped",
    "appearance_features",
    "load_appearance",
    "local_class_posterior",
    "sample_pixels",
]


@dataclass(frozen=True)
class AppearanceConfig:
    """Settings of the region calibration (:func:`fit_appearance`).

    Attributes:
        samples: pixels drawn from the region (seeded, uniform over its valid pixels).
        components: Gaussians per class.
        iterations: EM iterations.
        trust_pseudocount: weight, in pixels, of the shipped co-occurrence column in each weak
            class's estimated column (a Dirichlet prior): more trusts the shipped matrix more.
        min_anchor_pixels: sampled pixels whose weak code favours a class, needed to model it.
        min_pixels: sampled valid pixels needed at all; fewer falls back to the per-window model.
        texture_radius: radius (pixels) of the local-contrast feature.
        smooth_radius: radius (pixels) of the neighbourhood means of the bands (0: none).
        evidence_weight: multiplies the log-likelihood ratio (pixels are not independent, and a
            Gaussian mixture is over-confident: below 1 tempers it). ``None`` (the default)
            calibrates it on the region: the weight, among :data:`EVIDENCE_WEIGHTS`, under which the
            image alone best predicts the weak labels of held-out sampled pixels through the
            region's trust (a temperature fitted against noisy labels, "forward correction").
        holdout: fraction of the sample kept out of the fit to calibrate ``evidence_weight``.
        seed: draws the pixel sample.
        fit: ``"anchors"`` (the default): each modelled class learns its look from its anchor
            pixels only (the pixels whose weak code favours it), EM splitting them into
            components, and the trust in the weak labels stays the shipped matrix's. ``"em"``:
            label super-resolution, EM over every pixel's class that also re-estimates the trust
            columns (``trust_pseudocount``). ``"em"`` lets a class absorb another's look wherever
            the region's classes look unlike across patches: measured, a pure-forest patch of
            bright autumn crowns went 100 % -> 53 % beside one pasture patch; anchors kept it.
    """

    samples: int = 40_000
    components: int = 3
    iterations: int = 20
    trust_pseudocount: float = 2000.0
    min_anchor_pixels: int = 250
    min_pixels: int = 8000
    texture_radius: int = 8
    smooth_radius: int = 8
    evidence_weight: float | None = None
    holdout: float = 0.2
    seed: int = 0
    fit: str = "anchors"

    def __post_init__(self) -> None:
        if self.samples < 1000:
            raise ConfigError(f"appearance samples must be >= 1000, got {self.samples}")
        if not 1 <= self.components <= 16:
            raise ConfigError(f"appearance components must be in 1-16, got {self.components}")
        if not 1 <= self.iterations <= 1000:
            raise ConfigError(f"appearance iterations must be in 1-1000, got {self.iterations}")
        if self.trust_pseudocount < 0 or (self.evidence_weight is not None and self.evidence_weight < 0):
            raise ConfigError("appearance trust_pseudocount and evidence_weight must be >= 0")
        if not 0 < self.holdout < 0.9:
            raise ConfigError(f"appearance holdout must be in (0, 0.9), got {self.holdout}")
        if self.min_anchor_pixels < 1 or self.min_pixels < 1:
            raise ConfigError("appearance min_anchor_pixels and min_pixels must be >= 1")
        if not 0 <= self.texture_radius <= 32:
            raise ConfigError(f"appearance texture_radius must be in 0-32, got {self.texture_radius}")
        if not 0 <= self.smooth_radius <= 32:
            raise ConfigError(f"appearance smooth_radius must be in 0-32, got {self.smooth_radius}")
        if self.fit not in ("anchors", "em"):
            raise ConfigError(f"appearance fit must be 'anchors' or 'em', got {self.fit!r}")

    def to_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AppearanceConfig:
        """Strict parse (unknown keys are errors)."""
        return config_from_mapping(cls, data, "the appearance config")


class CalibrationSkipped(Exception):  # noqa: N818 - a signal, not an error: the caller falls back
    """The region cannot be calibrated (too small or too uniform); ``str(exc)`` says why."""


def appearance_features(image: torch.Tensor, texture_radius: int = 3, smooth_radius: int = 0) -> torch.Tensor:
    """(B, C, H, W) imagery in 0-255 -> (B, D, H, W): bands in [0, 1], NDVI, local texture.

    The texture is the local standard deviation of the brightness (canopy has crown shadows, a field
    or a road is smooth), scaled by 4 so its spread is comparable to the bands'. With
    ``smooth_radius > 0`` the box means of the bands and NDVI over that radius come first (a sunlit
    crown looks like grass on its own, not with its neighbourhood).
    """
    feats = image_features(image)
    if smooth_radius > 0:
        feats = torch.cat([box_mean(feats, smooth_radius), feats], 1)
    if texture_radius > 0:
        bright = image.float().mean(1, keepdim=True) / 255.0
        mean = box_mean(bright, texture_radius)
        tex = (box_mean(bright.pow(2), texture_radius) - mean.pow(2)).clamp_min(0).sqrt()
        feats = torch.cat([feats, 4.0 * tex], 1)
    return feats


def sample_pixels(
    image: torch.Tensor,
    codes: torch.Tensor,
    valid: torch.Tensor,
    count: int,
    generator: torch.Generator,
    texture_radius: int = 3,
    smooth_radius: int = 0,
    nodata: int | None = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw up to ``count`` valid pixels of a batch of windows: (features (N, D), codes (N,)).

    Args:
        image: (B, C, H, W) imagery, 0-255.
        codes: (B, H, W) weak-label codes on the image grid.
        valid: (B, 1, H, W) validity mask.
        count: pixels to draw (without replacement; all when there are fewer).
        generator: seeded torch generator.
        texture_radius: of :func:`appearance_features`.
        smooth_radius: of :func:`appearance_features`.
        nodata: weak-label nodata code (such pixels are not drawn).
    """
    feats = appearance_features(image, texture_radius, smooth_radius)
    ok = valid[:, 0] > 0
    if nodata is not None:
        ok = ok & (codes != nodata)
    flat_ok = ok.flatten()
    idx = torch.nonzero(flat_ok).flatten()
    if idx.numel() > count:
        pick = torch.randperm(idx.numel(), generator=generator)[:count]
        idx = idx[pick.sort().values]
    d = feats.shape[1]
    f = feats.permute(0, 2, 3, 1).reshape(-1, d)[idx]
    return f, codes.flatten()[idx].long()


@dataclass
class AppearanceModel:
    """A fitted region calibration (see the module docstring).

    Attributes:
        source_codes: weak-label codes, in the co-occurrence matrix's order.
        trust: (K, S) the region's column P(class | weak code) per source code.
        shipped: (K, S) the shipped co-occurrence matrix it started from.
        modelled: (K,) which classes have an appearance model.
        weights: (K, G) mixture weights per class.
        means: (K, G, D).
        covariances: (K, G, D, D).
        texture_radius, smooth_radius: of the features.
        evidence_weight: multiplies :meth:`log_ratio`.
        class_prior: (K,) the region's class shares under the model (for the marginal p(f)).
        stats: a JSON-able summary (pixels, per-code counts, iterations, log-likelihood).
    """

    source_codes: tuple[int, ...]
    trust: np.ndarray
    shipped: np.ndarray
    modelled: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    texture_radius: int
    smooth_radius: int
    evidence_weight: float
    class_prior: np.ndarray
    stats: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ evidence
    def _component_logpdf(self, f: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, K, G) log densities (plus log mixture weights)."""
        dtype = f.dtype
        means = torch.as_tensor(self.means, device=f.device).to(dtype)
        cov = torch.as_tensor(self.covariances, device=f.device).to(dtype)
        logw = torch.as_tensor(self.weights, device=f.device).to(dtype).clamp_min(1e-12).log()
        return _gauss_logpdf(f, means, cov) + logw

    def log_ratio(self, image: torch.Tensor, chunk: int = 1 << 15) -> torch.Tensor:
        """Per-pixel evidence ``evidence_weight * (log p(f | c) - log p(f))``: (B, K, H, W), float32.

        ``p(f)`` is the mixture over modelled classes with the region's class shares; classes
        that are not modelled get 0 (no evidence either way). Pixels are evaluated ``chunk`` at a
        time in float32, so the temporaries stay at a few tens of MB whatever the batch.
        """
        if image.shape[0] > 1:  # one window at a time: the features' float64 box sums stay one window's
            return torch.cat([self.log_ratio(image[i : i + 1], chunk) for i in range(image.shape[0])])
        feats = appearance_features(image, self.texture_radius, self.smooth_radius)
        b, d, h, w = feats.shape
        if d != self.means.shape[-1]:
            raise ShapeError(
                f"the appearance model was fitted on {self.means.shape[-1]} features, the image gives {d} "
                "(same bands as the calibration region are needed)"
            )
        f = feats.permute(0, 2, 3, 1).reshape(-1, d)
        k = self.trust.shape[0]
        modelled = torch.as_tensor(self.modelled, device=f.device)
        prior = torch.as_tensor(self.class_prior, dtype=torch.float32, device=f.device)
        out = torch.zeros(f.shape[0], k, dtype=torch.float32, device=f.device)
        for start in range(0, f.shape[0], chunk):
            part = f[start : start + chunk]
            cls = torch.logsumexp(self._component_logpdf(part), 2)  # (n, K)
            marg = torch.logsumexp(cls[:, modelled] + prior[modelled].clamp_min(1e-12).log(), 1, keepdim=True)
            ratio = torch.where(modelled[None], cls - marg, torch.zeros_like(cls))
            out[start : start + chunk] = (self.evidence_weight * ratio).float()
        return out.view(b, h, w, k).permute(0, 3, 1, 2).contiguous()

    def calibrated(self, base: Cooccurrence) -> Cooccurrence:
        """``base`` with the columns of the region's weak codes replaced by their estimated trust."""
        if tuple(base.source_codes) != tuple(self.source_codes):
            raise ConfigError("the appearance model was calibrated against another co-occurrence matrix")
        return Cooccurrence(
            legend=base.legend,
            source_codes=base.source_codes,
            target_codes=base.target_codes,
            matrix=self.trust.copy(),
            description=f"{base.description} (calibrated on the region)".strip(),
        )

    # ------------------------------------------------------------------ storage
    def tensors(self) -> dict[str, torch.Tensor]:
        """The arrays, for a safetensors file."""
        return {
            name: torch.as_tensor(np.ascontiguousarray(getattr(self, name)))
            for name in ("trust", "shipped", "weights", "means", "covariances", "class_prior")
        } | {"modelled": torch.as_tensor(self.modelled.astype(np.uint8))}

    def metadata(self) -> dict[str, object]:
        """The scalars and the summary, JSON-able."""
        return {
            "source_codes": list(self.source_codes),
            "texture_radius": self.texture_radius,
            "smooth_radius": self.smooth_radius,
            "evidence_weight": self.evidence_weight,
            "stats": self.stats,
        }

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], meta: dict[str, object]) -> AppearanceModel:
        """Inverse of :meth:`tensors` + :meth:`metadata`."""
        try:
            arrays = {name: tensors[name].double().numpy() for name in
                      ("trust", "shipped", "weights", "means", "covariances", "class_prior")}
            return cls(
                source_codes=tuple(int(c) for c in meta["source_codes"]),  # type: ignore[union-attr]
                modelled=tensors["modelled"].numpy().astype(bool),
                texture_radius=int(meta["texture_radius"]),  # type: ignore[arg-type]
                smooth_radius=int(meta["smooth_radius"]),  # type: ignore[arg-type]
                evidence_weight=float(meta["evidence_weight"]),  # type: ignore[arg-type]
                stats=dict(meta.get("stats") or {}),  # type: ignore[arg-type]
                **arrays,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"the appearance model file is incomplete or damaged ({exc}); delete it to refit"
            ) from exc

    def summary(self, class_names: list[str] | None = None) -> dict[str, object]:
        """What the calibration found, for the run record: classes modelled, trust of each weak code."""
        k = self.trust.shape[0]
        names = class_names or [str(i) for i in range(k)]
        present = self.stats.get("code_pixels", {})
        trust = {
            str(code): {names[c]: round(float(self.trust[c, j]), 3) for c in range(k)}
            for j, code in enumerate(self.source_codes)
            if str(code) in present
        }
        return {
            "modelled": [names[c] for c in range(k) if self.modelled[c]],
            "evidence_weight": self.evidence_weight,
            "trust": trust,
            **{key: self.stats[key] for key in ("pixels", "iterations", "code_pixels") if key in self.stats},
        }


def _gauss_logpdf(f: torch.Tensor, means: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """(N, D), (K, G, D), (K, G, D, D) -> (N, K, G) Gaussian log densities."""
    d = f.shape[1]
    chol = torch.linalg.cholesky(cov)  # (K, G, D, D)
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device).expand_as(chol)
    inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # L^-1, (K, G, D, D)
    # |L^-1 (f - mu)|^2 = |f L^-T - mu L^-T|^2: one (N, D) x (D, K*G*D) product
    proj = inv.transpose(-1, -2)  # (K, G, D, D)
    k, g = means.shape[:2]
    z = (f @ proj.permute(2, 0, 1, 3).reshape(d, k * g * d)).view(-1, k, g, d)
    z = z - torch.einsum("kgd,kgde->kge", means, proj)[None]
    maha = z.pow(2).sum(-1)  # (N, K, G)
    logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K, G)
    return -0.5 * (maha + logdet[None] + d * math.log(2 * math.pi))


def load_appearance(path: str | os.PathLike[str]) -> AppearanceModel:
    """A model written by the calibration stage (safetensors; its settings in the metadata)."""
    tensors, meta = read_safetensors(path)
    try:
        parts = json.loads(meta["appearance"])
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{path} is not a region appearance model ({exc}); delete it to refit") from exc
    return AppearanceModel.from_parts(tensors, parts)


def local_class_posterior(
    weak: torch.Tensor,
    evidence: torch.Tensor,
    valid: torch.Tensor | None = None,
    radius: int = 8,
    anchor: float = 0.1,
    iterations: int = 10,
    sparsity: float = 0.0,
) -> torch.Tensor:
    """Per-cell class posterior from image evidence, with class shares estimated locally by EM.

    The region's appearance model says how each cell looks (``evidence``: log-likelihood ratios);
    how common each class is near the cell is not the 30 m weak label's fixed column but estimated
    from the evidence around it: ``pi <- (box_mean(r, radius) + anchor * weak) / (1 + anchor)`` and
    ``r = softmax(log pi + evidence)``, ``iterations`` times. A forest whose few bright crowns look
    like grass keeps a small share of grass, so they stay forest; a clearing that NLCD calls forest
    raises the share of grass around it, and its cells become grass. ``anchor`` keeps the weak labels
    in the estimate (a class they exclude stays rare).

    Args:
        weak: (B, K, H, W) weak class distribution.
        evidence: (B, K, H, W) log-likelihood ratios (0 = no evidence).
        valid: optional (B, 1, H, W) mask: invalid cells keep the weak distribution.
        radius: box radius of the local shares, in cells.
        anchor: weight of the weak distribution in the shares.
        iterations: EM rounds (0: the plain posterior ``weak * exp(evidence)``).
        sparsity: a local share below it is set to 0 before renormalising (the MAP of a sparse
            Dirichlet: a neighbourhood holds few classes). The evidence's false positives, a few
            bright crowns in a forest, hold a small share and vanish; a clearing keeps its share.

    Returns:
        (B, K, H, W) summing to 1 over K.
    """
    w = weak.float().clamp_min(1e-6)
    pi = w
    m = torch.ones_like(w[:, :1]) if valid is None else valid.float()
    for _ in range(iterations):
        r = torch.softmax(pi.clamp_min(1e-6).log() + evidence, 1) * m + w * (1 - m)
        share = box_mean(r, radius)
        if sparsity:
            share = (share - sparsity).clamp_min(0)
            share = share / share.sum(1, keepdim=True).clamp_min(1e-6)
        pi = (share + anchor * w) / (1 + anchor)
    post = torch.softmax(pi.clamp_min(1e-6).log() + evidence, 1)
    return post * m + w * (1 - m)
