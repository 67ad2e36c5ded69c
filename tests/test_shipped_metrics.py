"""Each shipped weight file reproduces the test metrics recorded in its manifest entry (DRIVE, DRIVE-AV, IDRiD-OD).

Needs the public data sets: $RETINASEG_DATA, or ../shared/data beside the checkout. Skipped without them.
"""
import os
from pathlib import Path

import pytest

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.manifest import read_manifest
from retinaseg.models import load_model
from retinaseg.checkpoint import weights_dir

DATA = Path(os.environ.get("RETINASEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATASET_OF = {"drive": "drive", "drive-av": "drive-av", "idrid-od": "idrid-od"}

entries = [(name, key) for name, entry in sorted(read_manifest().items())
           for key in entry.get("metrics", {}) if key in DATASET_OF]


@pytest.mark.skipif(not DATA.is_dir(), reason=f"public data sets not found at {DATA}")
@pytest.mark.parametrize("file_name,key", entries)
def test_weights_reproduce_their_manifest_metrics(file_name, key):
    entry = read_manifest()[file_name]
    runner = Segmenter(load_model(entry["model"], weights_dir() / file_name), SegmentConfig(device="cpu"))
    result = evaluate(DATASET_OF[key], DATA, "test", segmenter=runner)
    recorded = entry["metrics"][key]["mean"]
    for metric in ("f1", "acc", "auc_roc", "weighted_f1", "av_accuracy", "dice", "centre_error_dd"):
        if metric in recorded:
            assert result.summary[metric][0] == pytest.approx(recorded[metric], abs=2e-3), metric
