"""Fitting the region appearance model by EM (see :mod:`geo_ppp.landcover.appearance`)."""

from __future__ import annotations

import torch

from geo_ppp.errors import ConfigError
from geo_ppp.landcover.appearance import (
    EVIDENCE_WEIGHTS,
    AppearanceConfig,
    AppearanceModel,
    CalibrationSkipped,
    _gauss_logpdf,
)
from geo_ppp.landcover.weak import Cooccurrence

__all__ = ["fit_appearance"]


def fit_appearance(
    features: torch.Tensor,
    codes: torch.Tensor,
    cooccurrence: Cooccurrence,
    config: AppearanceConfig | None = None,
) -> AppearanceModel:
    """Fit the region calibration on sampled pixels (see ``AppearanceConfig.fit``).

    Args:
        features: (N, D) appearance features of the sampled pixels (:func:`sample_pixels`).
        codes: (N,) their weak-label codes (all known to ``cooccurrence``).
        cooccurrence: the shipped matrix: the prior of the trust columns and the start of EM.
        config: settings.

    Raises:
        CalibrationSkipped: too few pixels, or no class with anchor pixels beyond one (a region
            with a single modelled class has nothing to separate).
        ConfigError: codes the matrix does not know.
    """
    config = config or AppearanceConfig()
    n, d = features.shape
    if n < config.min_pixels:
        raise CalibrationSkipped(
            f"the region has {n} usable pixels, fewer than the {config.min_pixels} a calibration needs"
        )
    f = features.double()
    source = list(cooccurrence.source_codes)
    lookup = {code: i for i, code in enumerate(source)}
    present_codes, inverse = torch.unique(codes, return_inverse=True)
    unknown = [int(c) for c in present_codes.tolist() if int(c) not in lookup]
    if unknown:
        raise ConfigError(
            f"weak-label codes {unknown} are not in the co-occurrence matrix (it knows {source}); pass "
            "--cooccurrence with a matrix that covers them"
        )
    col = torch.as_tensor([lookup[int(c)] for c in present_codes.tolist()], dtype=torch.long)[inverse]
    # a seeded split: the held-out pixels calibrate the evidence weight, the rest fit the model
    hold_f = hold_col = None
    if config.evidence_weight is None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
        n_hold = int(n * config.holdout)
        hold_f, hold_col = f[order[:n_hold]], col[order[:n_hold]]
        f, col = f[order[n_hold:]], col[order[n_hold:]]
        n = f.shape[0]
    shipped = torch.as_tensor(cooccurrence.matrix, dtype=torch.float64)  # (K, S)
    k, s = shipped.shape
    # anchors: pixels whose weak code's most likely class is c
    favourite = shipped.argmax(0)  # (S,)
    anchors = torch.bincount(favourite[col], minlength=k)
    modelled = anchors >= config.min_anchor_pixels
    if int(modelled.sum()) < 2:
        raise CalibrationSkipped(
            "the region is too uniform to calibrate: fewer than two classes have "
            f"{config.min_anchor_pixels} sampled pixels of a weak class that favours them "
            f"(anchor pixels per class: {anchors.tolist()})"
        )
    g = config.components
    # EM runs over the modelled classes only (the others have no pixels to learn from)
    idx = torch.nonzero(modelled).flatten()
    km = int(idx.numel())
    ship_m = shipped[idx]  # (Km, S)
    trust_m = ship_m.clone()
    anchored = config.fit == "anchors"
    if anchored:
        # each class learns its look from its anchor pixels only; pixels of a weak code that favours
        # no modelled class teach nothing (their class is unknown)
        slot = torch.full((k,), -1, dtype=torch.long)
        slot[idx] = torch.arange(km)
        anchor_of = slot[favourite[col]]
        keep = anchor_of >= 0
        f, col, anchor_of = f[keep], col[keep], anchor_of[keep]
        n = f.shape[0]
        prior_n = torch.nn.functional.one_hot(anchor_of, km).double()
    else:
        prior_n = trust_m[:, col].T  # (N, Km)
        prior_n = prior_n / prior_n.sum(1, keepdim=True).clamp_min(1e-12)
    # ---- initial responsibilities: the class prior, split into components by brightness bins
    bright = f[:, :3].mean(1)
    qs = torch.quantile(bright, torch.linspace(0, 1, g + 2, dtype=torch.float64)[1:-1])
    spread = bright.std().clamp_min(1e-3)
    bins = torch.softmax(-2.0 * ((bright[:, None] - qs[None]) / spread).pow(2) * g * g, 1)  # (N, G)
    resp = prior_n[:, :, None] * bins[:, None, :]  # (N, Km, G)
    eye = torch.eye(d, dtype=torch.float64)
    floor = 1e-4 * eye
    global_cov = torch.cov(f.T) + floor
    loglik_trace: list[float] = []
    code_mass = torch.zeros(s, dtype=torch.float64).index_add_(0, col, torch.ones(n, dtype=torch.float64))
    present = code_mass > 0
    for it in range(config.iterations + 1):
        # ---- M step: mixtures per class
        mass = resp.sum(0)  # (Km, G)
        weights_m = (mass + 1e-3) / (mass.sum(1, keepdim=True) + 1e-3 * g)
        flat = resp.reshape(n, km * g).T  # (Km*G, N)
        means_m = (flat @ f / mass.reshape(-1, 1).clamp_min(1e-9)).view(km, g, d)
        second = torch.bmm((flat[:, :, None] * f[None]).transpose(1, 2), f.expand(km * g, n, d))
        covs_m = second.view(km, g, d, d) / mass[..., None, None].clamp_min(1e-9)
        covs_m = covs_m - means_m[..., :, None] * means_m[..., None, :]
        # shrink towards the global covariance where a component has few pixels
        shrink = (50.0 / (mass + 50.0))[..., None, None]
        covs_m = (1 - shrink) * covs_m + shrink * global_cov + floor
        if it == config.iterations:
            break  # the last M step: the parameters match the last responsibilities
        # ---- M step: the trust columns (MAP under a Dirichlet centred on the shipped column)
        if it > 0 and not anchored:
            col_mass = torch.zeros(s, km, dtype=torch.float64).index_add_(0, col, resp.sum(2))  # (S, Km)
            pseudo = config.trust_pseudocount * shipped.T  # (S, K): the pseudo-pixels of every class
            total = code_mass[:, None] + config.trust_pseudocount
            est = (col_mass + pseudo[:, idx]) / total.clamp_min(1e-12)
            trust_m = torch.where(present[None], est.T, ship_m)
        # ---- E step (float32: the pixels are many, the parameters few)
        logpdf = _gauss_logpdf(f.float(), means_m.float(), covs_m.float()).double()
        # anchors: a pixel's class is its anchor class, EM only splits it into components
        known = prior_n if anchored else trust_m[:, col].T
        log_prior = known.clamp_min(1e-12).log()[:, :, None]  # (N, Km, 1)
        joint = logpdf + weights_m.clamp_min(1e-12).log()[None] + log_prior
        norm = torch.logsumexp(joint.flatten(1), 1)
        resp = torch.exp(joint - norm[:, None, None])
        loglik_trace.append(float(norm.mean()))
    # back to all K classes: those not modelled get a neutral placeholder (never used: ratio 0)
    weights = torch.full((k, g), 1.0 / g, dtype=torch.float64)
    means = torch.zeros(k, g, d, dtype=torch.float64)
    covs = eye.expand(k, g, d, d).clone()
    weights[idx], means[idx], covs[idx] = weights_m, means_m, covs_m
    class_prior = torch.zeros(k, dtype=torch.float64)
    class_prior[idx] = resp.sum((0, 2)) / n  # the region's class shares under the model
    # classes not modelled keep the shipped columns' share of them (renormalised with the rest)
    trust = shipped.clone()
    trust[idx] = trust_m
    trust_np = trust.numpy().copy()
    trust_np = trust_np / trust_np.sum(0, keepdims=True)
    code_pixels = {str(source[j]): int(code_mass[j]) for j in range(s) if code_mass[j] > 0}
    stats = {
        "pixels": int(n),
        "iterations": config.iterations,
        "code_pixels": code_pixels,
        "anchor_pixels": [int(a) for a in anchors],
        "mean_loglik": round(loglik_trace[-1], 4),
    }
    model = AppearanceModel(
        source_codes=tuple(source),
        trust=trust_np,
        shipped=shipped.numpy(),
        modelled=modelled.numpy(),
        weights=weights.numpy(),
        means=means.numpy(),
        covariances=covs.numpy(),
        texture_radius=config.texture_radius,
        smooth_radius=config.smooth_radius,
        evidence_weight=1.0 if config.evidence_weight is None else config.evidence_weight,
        class_prior=class_prior.numpy(),
        stats=stats,
    )
    if hold_f is not None and hold_col is not None:
        model.evidence_weight, scores = _calibrate_weight(model, hold_f, hold_col)
        stats["evidence_weight_scores"] = scores
    stats["evidence_weight"] = model.evidence_weight
    return model


def _calibrate_weight(
    model: AppearanceModel, features: torch.Tensor, col: torch.Tensor
) -> tuple[float, dict[str, float]]:
    """The evidence weight under which the image best predicts held-out pixels' weak labels.

    For a weight ``b`` the image-only posterior is ``q(c | f) ~ P(c) exp(b * ratio_c(f))``; the weak
    label is a noisy view of the class through the region's trust, ``P(j | c) ~ trust[c, j] P(j)``;
    the score is the mean ``log sum_c q(c | f) P(j | c)`` over held-out pixels. Too small a weight
    ignores the image; too large an over-confident model pays for every pixel it gets wrong.
    """
    cls = torch.logsumexp(model._component_logpdf(features.double()), 2)  # (N, K), in float64 here
    modelled = torch.as_tensor(model.modelled)
    prior = torch.as_tensor(model.class_prior, dtype=torch.float64).clamp_min(1e-12)
    marg = torch.logsumexp(cls[:, modelled] + prior[modelled].log(), 1, keepdim=True)
    ratio = torch.where(modelled[None], cls - marg, torch.zeros_like(cls))
    trust = torch.as_tensor(model.trust, dtype=torch.float64)  # (K, S)
    p_code = torch.bincount(col, minlength=trust.shape[1]).double()
    joint = trust * (p_code / p_code.sum())[None]
    p_class = joint.sum(1)
    code_given_class = joint / p_class[:, None].clamp_min(1e-12)  # (K, S)
    scores = {}
    for weight in EVIDENCE_WEIGHTS:
        q = torch.softmax(p_class.clamp_min(1e-12).log()[None] + weight * ratio, 1)
        likelihood = (q @ code_given_class)[torch.arange(len(col)), col]
        scores[str(weight)] = round(float(likelihood.clamp_min(1e-12).log().mean()), 5)
    best = max(EVIDENCE_WEIGHTS, key=lambda w: scores[str(w)])
    return float(best), scores
