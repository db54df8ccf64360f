"""Baselines the method is measured against (benchmarks/landcover_accuracy.py).

- :func:`weak_argmax`: the weak labels through the co-occurrence matrix, argmax (baseline a).
- :func:`kmeans_baseline`: per-window k-means on R, G, B, NIR and NDVI, each cluster labelled with
  the class holding the most weak-label mass over the whole window (baseline b: the cheap
  image-aware alternative a user could write in an afternoon).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans

from geo_ppp.landcover.clustering import image_features

__all__ = ["kmeans_baseline", "weak_argmax"]


def weak_argmax(weak: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) weak distribution -> (B, H, W) class indices."""
    return weak.argmax(1)


def kmeans_baseline(
    image: torch.Tensor, weak: torch.Tensor, valid: torch.Tensor, clusters: int = 7, seed: int = 0
) -> torch.Tensor:
    """Per-window k-means on bands + NDVI; clusters take the class of largest weak-label mass.

    Args:
        image: (B, C, H, W) imagery, 0-255.
        weak: (B, K, H, W) weak class distribution (unblurred is the fair choice).
        valid: (B, 1, H, W) mask.
        clusters: k.
        seed: k-means seed.

    Returns:
        (B, H, W) class indices.
    """
    feats = image_features(image).cpu().numpy()
    out = weak.argmax(1).cpu().numpy().copy()
    for i in range(feats.shape[0]):
        mask = valid[i, 0].cpu().numpy() > 0
        x = feats[i][:, mask].T
        if x.shape[0] < clusters:
            continue
        labels = KMeans(clusters, n_init=3, random_state=seed).fit_predict(x)
        w = weak[i][:, torch.from_numpy(mask)].cpu().numpy()  # (K, N)
        mass = np.stack([w[:, labels == c].sum(1) for c in range(clusters)])  # (clusters, K)
        out[i][mask] = mass.argmax(1)[labels]
    return torch.from_numpy(out)
