"""Would int8 quantisation make the ONNX Runtime backend fast enough, and keep the masks?

    python benchmarks/int8_onnx.py [--data-root ../shared/data] [--model vesselnet] [--threads 1]

The model is exported as `retinaseg export` does, then quantised by ONNX Runtime's static quantisation (QDQ,
per-channel int8 weights, uint8 activations, MinMax ranges) calibrated on the network inputs the runner makes of
the first 8 DRIVE training photos. Prints the time of one forward pass of a DRIVE-size input in float32 and int8
(median of 5, the same run), and how far the int8 masks (probability >= 0.5, inside the FOV) are from the float32 ones on the next 6
training photos: their Dice and the share of pixels that differ. Test photos are not used.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from retinaseg.datasets import load_samples
from retinaseg.inference.onnx import export_bytes
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.io.images import read_photo
from retinaseg.models import load_model

CALIBRATION_PHOTOS, COMPARED_PHOTOS = 8, 6


def network_inputs(segmenter: Segmenter, paths: list) -> list[np.ndarray]:
    """The batches the runner feeds the network for these photos."""
    batches, predictor = [], segmenter.predictor

    def capture(batch):
        batches.append(batch.numpy().copy())
        return predictor(batch)

    segmenter.predictor = capture
    for path in paths:
        segmenter.predict(read_photo(path))
    segmenter.predictor = predictor
    return batches


def main():
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("RETINASEG_DATA", "../shared/data"))
    parser.add_argument("--model", default="vesselnet")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    segmenter = Segmenter(model, SegmentConfig(device="cpu"), notify=lambda m: None)
    paths = [sample.image for sample in load_samples("drive", args.data_root, "training")[1]]
    calibration = network_inputs(segmenter, paths[:CALIBRATION_PHOTOS])
    compared = network_inputs(segmenter, paths[CALIBRATION_PHOTOS:CALIBRATION_PHOTOS + COMPARED_PHOTOS])

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    with tempfile.TemporaryDirectory() as scratch:
        plain, prepared, int8 = (Path(scratch) / name for name in ("plain.onnx", "prepared.onnx", "int8.onnx"))
        plain.write_bytes(export_bytes(model))
        quant_pre_process(str(plain), str(prepared))
        quantize_static(str(prepared), str(int8), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, path in (("float32", plain), ("int8", int8))}
        print(f"{args.model}, input {tuple(compared[0].shape)}, {args.threads} thread(s)")
        for name, session in sessions.items():
            session.run(None, {"image": compared[0]})
            times = []
            for _ in range(5):
                started = time.perf_counter()
                session.run(None, {"image": compared[0]})
                times.append(time.perf_counter() - started)
            print(f"  {name:<8} {statistics.median(times) * 1000:7.1f} ms per forward pass")
        dice, differ = [], []
        for batch in compared:
            fov = (batch != 0).any(axis=1, keepdims=True)  # standardisation zeroes the pixels outside the FOV
            exact, quantised = (fov & (sessions[name].run(None, {"image": batch})[0] >= 0)
                                for name in ("float32", "int8"))
            dice.append(2 * (exact & quantised).sum() / max(1, exact.sum() + quantised.sum()))
            differ.append((exact != quantised).mean())
        print(f"  int8 masks against float32 on {len(compared)} training photos: Dice {np.mean(dice):.4f} "
              f"(lowest {np.min(dice):.4f}), pixels that differ {np.mean(differ):.2%}")


if __name__ == "__main__":
    main()
