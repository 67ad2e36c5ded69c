"""The one metric implementation. Every score is computed over the pixels of a mask (the FOV by default).

Binary: Se (recall), Sp, Acc, Precision, F1 (= Dice), IoU, MCC from the confusion counts at threshold 0.5;
MSE between probability and label; AUC-ROC and AUC-PR exactly, by ranks, when probabilities are given.
A/V (Learning_AVSegmentation's definitions): each of artery, vein, uncertain scored one-vs-rest on the A/V map, then
averaged with weights equal to the classes' ground-truth pixel counts; plus A/V classification accuracy on
ground-truth artery/vein pixels that are predicted as vessel.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from retinaseg import av
from retinaseg.inference import VESSEL_THRESHOLD



def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) of two bool arrays already restricted to the scored pixels."""
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def scores_from_confusion(tp: int, fp: int, fn: int, tn: int) -> dict:
    denominator = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "se": _ratio(tp, tp + fn),
        "sp": _ratio(tn, tn + fp),
        "acc": _ratio(tp + tn, tp + fp + fn + tn),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "mcc": _ratio(tp * tn - fp * fn, denominator),
    }


def auc_scores(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Exact AUC-ROC (ties count one half, as in the Mann-Whitney U statistic) and AUC-PR (average precision,
    precision at each distinct threshold weighted by the recall gained). Memory is linear in the pixel count:
    one sort, no n-by-n or per-threshold arrays beyond the distinct values."""
    truth = truth.astype(bool, copy=False)
    positives = int(np.count_nonzero(truth))
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        return float("nan"), float("nan")
    order = np.argsort(scores)[::-1]  # descending threshold
    ranked, hits = scores[order], truth[order]
    del order
    # the counts at each distinct score's last pixel: tied pixels cross the threshold together
    last = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)
    tps = np.cumsum(hits, dtype=np.float64)[last]
    fps = (last + 1) - tps
    tpr = np.concatenate([[0.0], tps / positives])
    fpr = np.concatenate([[0.0], fps / negatives])
    auc_roc = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))
    precision = tps / (tps + fps)
    auc_pr = float(np.sum((tpr[1:] - tpr[:-1]) * precision))
    return auc_roc, auc_pr


def binary_metrics(truth: np.ndarray, pred: Optional[np.ndarray] = None, prob: Optional[np.ndarray] = None,
                   mask: Optional[np.ndarray] = None) -> dict:
    """Scores of a vessel prediction. Give `prob` (float, thresholded at 0.5) or `pred` (bool) or both;
    AUCs and MSE need `prob`. `mask` (bool) selects the scored pixels; None scores them all."""
    select = (lambda a: a[mask]) if mask is not None else (lambda a: a.ravel())
    truth = select(truth.astype(bool, copy=False))
    if prob is not None:
        prob = select(prob).astype(np.float32, copy=False)
        if pred is None:
            pred = prob >= VESSEL_THRESHOLD
        else:
            pred = select(pred)
    elif pred is not None:
        pred = select(pred.astype(bool, copy=False))
    else:
        raise ValueError("binary_metrics needs pred or prob")
    result = scores_from_confusion(*confusion(pred, truth))
    reference = prob if prob is not None else pred.astype(np.float32)
    result["mse"] = float(np.mean((reference - truth) ** 2))
    if prob is not None:
        result["auc_roc"], result["auc_pr"] = auc_scores(prob, truth)
    return result


def av_metrics(truth: np.ndarray, labels: np.ndarray, probs: Optional[np.ndarray] = None,
               mask: Optional[np.ndarray] = None) -> dict:
    """Seed 002's A/V scores. truth, labels: HxW codes 0..3; probs: 4xHxW class probabilities (optional)."""
    if mask is None:
        mask = np.ones(truth.shape, dtype=bool)
    result: dict = {}
    weighted: dict = {}
    total_weight = 0
    for code in (av.ARTERY, av.VEIN, av.UNCERTAIN):
        name = av.CLASS_NAMES[code]
        scores = binary_metrics(truth == code, pred=labels == code,
                                prob=None if probs is None else probs[code], mask=mask)
        weight = int(np.count_nonzero((truth == code) & mask))
        for key, value in scores.items():
            result[f"{name}_{key}"] = value
            if weight and not math.isnan(value):
                weighted[key] = weighted.get(key, 0.0) + weight * value
        total_weight += weight
    for key, value in weighted.items():
        result[f"weighted_{key}"] = value / total_weight if total_weight else float("nan")
    # A/V accuracy: on true artery/vein pixels detected as vessel, is the artery/vein call right?
    scored = mask & np.isin(truth, (av.ARTERY, av.VEIN)) & (labels != av.BACKGROUND)
    if probs is not None:
        called_artery = probs[av.ARTERY][scored] >= probs[av.VEIN][scored]
    else:
        called_artery = labels[scored] == av.ARTERY
    is_artery = truth[scored] == av.ARTERY
    result["av_accuracy"] = float(np.mean(called_artery == is_artery)) if scored.any() else float("nan")
    # the vessel tree as a whole (any class vs background)
    vessel = binary_metrics(truth > 0, pred=labels > 0,
                            prob=None if probs is None else 1 - probs[av.BACKGROUND], mask=mask)
    result.update({f"vessel_{k}": v for k, v in vessel.items()})
    return result


def disc_metrics(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Scores of an optic disc prediction (HxW bool, the kept disc) against the disc mask: Dice, IoU, and the
    centre's distance and the diameter's ratio to the true disc's, in true disc diameters (DD); found is 1 when the
    prediction has a disc. The centre and diameter are disc.find_disc's."""
    from retinaseg.disc import find_disc

    scores = binary_metrics(truth, pred=pred)
    row = {"dice": scores["f1"], "iou": scores["iou"], "se": scores["se"], "precision": scores["precision"]}
    true_disc, found = find_disc(truth.astype(np.float32)), find_disc(pred.astype(np.float32))
    row["found"] = float(found.found)
    if found.found and true_disc.found:
        row["centre_error_dd"] = math.hypot(found.row - true_disc.row, found.col - true_disc.col) / true_disc.diameter
        row["diameter_ratio"] = found.diameter / true_disc.diameter
    else:
        row["centre_error_dd"] = row["diameter_ratio"] = float("nan")
    return row


def summarize(rows: list[dict]) -> dict:
    """Mean and (population) standard deviation over images of every numeric metric, ignoring NaNs."""
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))] if rows else []
    summary = {}
    for key in keys:
        values = np.array([r[key] for r in rows if key in r], dtype=np.float64)
        values = values[~np.isnan(values)]
        summary[key] = (float(values.mean()), float(values.std())) if values.size else (float("nan"), float("nan"))
    return summary
