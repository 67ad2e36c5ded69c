"""`retinaseg eval`: score a model, or a folder of `retinaseg run` outputs, on a dataset split.

Protocol: inside the FOV mask (the dataset's own, else estimated), threshold 0.5 (A/V maps: av.class_map), against
the 1st manual; mean and standard deviation over images. A second human observer, where the dataset has one,
is scored the same way as a reference row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from retinaseg import av
from retinaseg.datasets import Sample, check_same_size, load_samples, read_fov, read_label
from retinaseg.errors import RetinasegError
from retinaseg.evaluation.metrics import av_metrics, binary_metrics, disc_metrics, summarize
from retinaseg.inference import VESSEL_THRESHOLD
from retinaseg.inference.outputs import OUTPUT_FOLDERS
from retinaseg.inference.segmenter import Segmenter
from retinaseg.io.images import read_binary_mask, read_mask, read_photo, read_probabilities

VESSEL_COLUMNS = ("se", "sp", "acc", "precision", "f1", "iou", "mcc", "mse", "auc_roc", "auc_pr")
DISC_COLUMNS = ("dice", "iou", "se", "precision", "found", "centre_error_dd", "diameter_ratio")
AV_COLUMNS = ("weighted_se", "weighted_sp", "weighted_f1", "weighted_auc_roc", "weighted_auc_pr", "weighted_mse",
              "av_accuracy", "artery_f1", "vein_f1", "uncertain_f1", "vessel_f1")
# The three scores a comparison prints first, per task: {column title: metric key}.
HEADLINE = {"vessel": {"F1": "f1", "AUC-ROC": "auc_roc", "Acc": "acc"},
            "av": {"wF1": "weighted_f1", "wAUC-ROC": "weighted_auc_roc", "A/V acc": "av_accuracy"},
            "disc": {"Dice": "dice", "centre error (DD)": "centre_error_dd", "found": "found"}}


@dataclass
class Evaluation:
    dataset: str
    split: str
    task: str  # "vessel", "av" or "disc"
    source: str  # model name + weights, or prediction folder
    rows: list = field(default_factory=list)  # per image: {"id": ..., metric: value}
    summary: dict = field(default_factory=dict)  # metric -> (mean, std)
    reference: Optional[dict] = None  # second observer summary
    reference_rows: list = field(default_factory=list)

    @property
    def columns(self):
        return {"vessel": VESSEL_COLUMNS, "av": AV_COLUMNS, "disc": DISC_COLUMNS}[self.task]


def _score(task: str, truth: np.ndarray, mask, labels=None, prob=None) -> dict:
    if task == "disc":  # the whole disc, whatever the FOV: a disc the frame cuts is still scored
        return disc_metrics(truth, labels if labels is not None else prob[0] >= VESSEL_THRESHOLD)
    if task == "vessel":
        return binary_metrics(truth, pred=labels, prob=None if prob is None else prob[0], mask=mask)
    if labels is None:
        labels = av.class_map(prob)
    return av_metrics(truth, labels, prob, mask)


def _read_prediction(folder: Path, sample: Sample, task: str):
    """(labels, prob or None) from a `retinaseg run` output folder."""
    png = folder / OUTPUT_FOLDERS["raw"] / f"{sample.id}.png"
    if not png.is_file():
        raise RetinasegError(f"{png}: no prediction for {sample.image.name} (run `retinaseg run` on the "
                             f"dataset's images into {folder} first)")
    tif = folder / OUTPUT_FOLDERS["prob"] / f"{sample.id}.tif"
    prob = read_probabilities(tif) if tif.is_file() else None
    stored = read_mask(png)
    if stored.ndim == 3:  # A/V colour map
        labels = av.decode_colours(stored)
        if task == "vessel":
            labels, prob = labels > 0, (None if prob is None else 1 - prob[:1])
    else:
        if task == "av":
            raise RetinasegError(f"{png}: a binary prediction cannot be scored against A/V labels; "
                                 f"use the dataset's binary view")
        labels = read_binary_mask(png)
    return labels, prob


def _check_prediction_task(folder: Path, dataset: str, task: str) -> None:
    """A run's disc masks are not scored against vessel labels, nor its vessel maps against disc labels."""
    from retinaseg.inference.runner import run_records, task_of

    for path, report in run_records(folder):
        made = task_of(report)
        if made is not None and (made == "disc") != (task == "disc"):
            raise RetinasegError(f"{path}: its maps are of model {report.get('model')!r}, which segments {made}, but "
                                 f"dataset {dataset} labels {task}")


def evaluate(dataset: str, data_root, split: str = "test", segmenter: Optional[Segmenter] = None,
             pred_dir=None, use_fov: bool = True, source: str = "", dataset_options: Optional[dict] = None,
             progress: bool = False,
             ids: Optional[set] = None) -> Evaluation:
    """ids: score only the samples with these ids (e.g. a training run's validation images)."""
    from tqdm import tqdm

    if (segmenter is None) == (pred_dir is None):
        raise RetinasegError("evaluate needs exactly one of a model or a prediction folder")
    spec, samples = load_samples(dataset, data_root, split, **(dataset_options or {}))
    if ids is not None:
        samples = [s for s in samples if s.id in ids]
    task = spec.task
    if segmenter is not None and segmenter.model.spec.task == "vessel" and task == "av":
        task = "vessel"  # a binary model on an A/V dataset is scored on the vessel tree (label > 0)
    if segmenter is not None and (segmenter.model.spec.task == "disc") != (task == "disc"):
        raise RetinasegError(f"model {segmenter.model.spec.name} segments {segmenter.model.spec.task}, but dataset "
                             f"{dataset} labels {task}")
    if pred_dir is not None:
        _check_prediction_task(Path(pred_dir), dataset, task)
    result = Evaluation(dataset, split, task, source)
    for sample in tqdm(samples, desc=f"evaluating {dataset} {split}", unit="img", disable=not progress):
        photo = read_photo(sample.image)
        truth = read_label(sample.label, task)
        check_same_size(sample, photo, truth)
        fov = read_fov(sample, photo)
        mask = fov if use_fov else None
        if segmenter is not None:  # the photo read as `retinaseg run` reads it, the FOV estimated there unless given
            prob = segmenter.predict_file(sample.image, fov if sample.fov else None, whole=photo)
            if task == "vessel" and prob.shape[0] > 1:
                prob = 1 - prob[av.BACKGROUND:av.BACKGROUND + 1]
            row = _score(task, truth, mask, prob=prob)
        else:
            labels, prob = _read_prediction(Path(pred_dir), sample, task)
            if labels.shape != truth.shape:
                raise RetinasegError(f"prediction for {sample.id} is {labels.shape[1]}x{labels.shape[0]} but its "
                                     f"label is {truth.shape[1]}x{truth.shape[0]}")
            row = _score(task, truth, mask, labels=labels, prob=prob)
        row = {"id": sample.id, **row}
        result.rows.append(row)
        if sample.second_label is not None and task == "vessel":
            second = read_label(sample.second_label, "vessel")
            result.reference_rows.append({"id": sample.id, **binary_metrics(truth, pred=second, mask=mask)})
    result.summary = summarize(result.rows)
    if result.reference_rows:
        result.reference = summarize(result.reference_rows)
    return result


def format_table(evaluation: Evaluation, per_image: bool = True) -> str:
    columns = [c for c in evaluation.columns if c in evaluation.summary or any(c in r for r in evaluation.rows)]
    width = max(12, max((len(str(r["id"])) for r in evaluation.rows), default=0) + 2)
    header = f"{'image':<{width}}" + "".join(f"{c:>17}" for c in columns)
    lines = [f"{evaluation.dataset} ({evaluation.split}, {len(evaluation.rows)} images) - {evaluation.source}",
             header]
    if per_image:
        for row in evaluation.rows:
            lines.append(f"{row['id']:<{width}}" + "".join(f"{row.get(c, float('nan')):>17.4f}" for c in columns))
    def summary_line(label, summary):
        return f"{label:<{width}}" + "".join(
            f"{summary[c][0]:>9.4f} ±{summary[c][1]:.4f}" if c in summary else f"{'-':>17}" for c in columns)
    lines.append(summary_line("mean ± std", evaluation.summary))
    if evaluation.reference:
        lines.append(summary_line("2nd observer", evaluation.reference))
    return "\n".join(lines)


def to_json(evaluation: Evaluation) -> dict:
    return {
        "dataset": evaluation.dataset, "split": evaluation.split, "task": evaluation.task,
        "source": evaluation.source,
        "mean": {k: v[0] for k, v in evaluation.summary.items()},
        "std": {k: v[1] for k, v in evaluation.summary.items()},
        "second_observer": ({k: v[0] for k, v in evaluation.reference.items()} if evaluation.reference else None),
        "images": evaluation.rows,
    }
