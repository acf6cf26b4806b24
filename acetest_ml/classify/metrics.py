"""Classifier quality on labelled inputs (valid = positive class)."""
from __future__ import annotations

from typing import Optional

import numpy as np


def _ratio(num: int, den: int) -> Optional[float]:
    return float(num) / den if den else None


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> Optional[float]:
    """Area under the ROC curve (Mann-Whitney statistic, ties count half);
    None when only one class is present."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ss = s[order]
    # average ranks over ties
    n = len(ss)
    pos = np.arange(1, n + 1, dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(ss)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [n]))
    avg = np.repeat((pos[starts] + pos[ends - 1]) / 2.0, ends - starts)
    ranks[order] = avg
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(y_true, p_valid, threshold: float = 0.5) -> dict:
    """accuracy, balanced_accuracy, precision / recall / f1 of the valid class,
    roc_auc (None with one class), n and n_pos. Precision is None when nothing
    is predicted valid, recall None when there is no valid example."""
    y = np.asarray(y_true).astype(bool).ravel()
    p = np.asarray(p_valid, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    pred = p >= threshold
    n = int(len(y))
    n_pos = int(y.sum())
    n_neg = n - n_pos
    tp = int((pred & y).sum())
    tn = int((~pred & ~y).sum())
    fp = int((pred & ~y).sum())
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, n_pos)
    tnr = _ratio(tn, n_neg)
    per_class = [r for r in (recall, tnr) if r is not None]
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "accuracy": _ratio(tp + tn, n),
        "balanced_accuracy": float(np.mean(per_class)) if per_class else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(y, p),
        "n": n,
        "n_pos": n_pos,
        "threshold": float(threshold),
    }
