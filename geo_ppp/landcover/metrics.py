"""Accuracy, per-class IoU, mIoU over the classes present, and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geo_ppp.errors import ShapeError
from geo_ppp.geo.legend import Legend

__all__ = ["Scores", "confusion", "score"]


def confusion(pred_index: np.ndarray, true_index: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts, rows = truth, columns = prediction; pixels where either is < 0 are ignored."""
    p = np.asarray(pred_index).ravel()
    t = np.asarray(true_index).ravel()
    if p.shape != t.shape:
        raise ShapeError(
            f"prediction {np.shape(pred_index)} and truth {np.shape(true_index)} differ in shape"
        )
    keep = (p >= 0) & (t >= 0)
    return np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k).astype(np.int64)


@dataclass(frozen=True)
class Scores:
    """Scores of one map against the truth.

    Attributes:
        accuracy: fraction of scored pixels predicted right.
        iou: per-class IoU (NaN for classes absent from both truth and prediction).
        miou: mean IoU over the classes present in the truth.
        confusion: (K, K) counts, rows truth, columns prediction.
        pixels: pixels scored.
    """

    accuracy: float
    iou: tuple[float, ...]
    miou: float
    confusion: np.ndarray
    pixels: int

    @classmethod
    def from_confusion(cls, cm: np.ndarray) -> Scores:
        """Scores from a (summed) confusion matrix."""
        cm = np.asarray(cm, dtype=np.int64)
        total = int(cm.sum())
        tp = np.diag(cm).astype(np.float64)
        union = cm.sum(0) + cm.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        present = cm.sum(1) > 0
        miou = float(np.mean(iou[present])) if present.any() else float("nan")
        acc = float(tp.sum() / total) if total else float("nan")
        return cls(acc, tuple(float(v) for v in iou), miou, cm, total)

    def to_dict(self, legend: Legend | None = None) -> dict[str, object]:
        """JSON-ready form, with class names when a legend is given."""
        names = list(legend.names) if legend else [str(i) for i in range(len(self.iou))]
        return {
            "accuracy": self.accuracy,
            "miou": self.miou,
            "iou": {n: (None if np.isnan(v) else v) for n, v in zip(names, self.iou, strict=True)},
            "classes_present": [n for n, row in zip(names, self.confusion, strict=True) if row.sum() > 0],
            "confusion": {
                "rows": "truth",
                "columns": "prediction",
                "classes": names,
                "counts": self.confusion.tolist(),
            },
            "pixels": self.pixels,
        }


def score(pred_index: np.ndarray, true_index: np.ndarray, k: int) -> Scores:
    """Score channel-index maps (-1 = nodata) of K classes."""
    return Scores.from_confusion(confusion(pred_index, true_index, k))
