"""ONNX export of a loaded model, and the ONNX Runtime predictor (`--backend onnxruntime`, `pip install
retinaseg[onnx]`).

The exported graph is the runner's network with BatchNorm folded in: a standardised image batch (N, 3, H, W) in,
logits out, with N, H and W dynamic (H and W multiples of the model's size divisor). Its metadata carries the
model's config (name, classes, working scale, normalisation, size divisor, its own --max-downscale) and the
weights' sha256, so a file is self-describing. The TorchScript-based exporter is used on purpose: it traces the
decoders' size-dependent upsampling into dynamic shapes, which the newer exporter needs hints for.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from retinaseg.errors import RetinasegError
from retinaseg.models import LoadedModel

OPSET = 17
METADATA_KEY = "retinaseg"
EXACT = 1e-4  # the largest difference from torch's logits an export may show on its check


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise RetinasegError("the onnxruntime backend needs ONNX Runtime: pip install 'retinaseg[onnx]'") from None
    return onnxruntime


def export_bytes(model: LoadedModel) -> bytes:
    """The model as an ONNX file's bytes, checked against torch on a non-square input. A model whose forward
    cannot be traced into ONNX is refused with the exporter's reason."""
    from retinaseg.inference.predictor import _fold_batch_norm

    module = _fold_batch_norm(model.module.eval()).cpu()
    divisor = model.config["size_divisor"]
    example = torch.randn(1, 3, divisor * 5, divisor * 4)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():  # the exporter's deprecation and tracer notes are not the user's business
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), buffer, input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "logits": {0: "batch", 2: "height", 3: "width"}},
                              opset_version=OPSET, dynamo=False)
    except Exception as exc:  # whatever the exporter raises for an untraceable plugin
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RetinasegError(f"model {model.spec.name!r} cannot be exported to ONNX ({first}); use --backend "
                             f"torch") from None
    data = _with_metadata(buffer.getvalue(), model)
    _check(data, module, divisor)
    return data


def _with_metadata(data: bytes, model: LoadedModel) -> bytes:
    import onnx

    proto = onnx.load_from_string(data)
    description = {"model": model.spec.name, "task": model.spec.task, "config": model.config,
                   "max_downscale": model.max_downscale, "weights_sha256": model.weights_sha256}
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(description)
    return proto.SerializeToString()


def _check(data: bytes, module: torch.nn.Module, divisor: int) -> None:
    """The exported graph must give torch's logits at a size other than the one it was traced at."""
    ort = _onnxruntime()
    probe = torch.randn(2, 3, divisor * 7, divisor * 9, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = module(probe).numpy()
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": probe.numpy()})[0]
    except Exception:  # a graph that lost its input (traced to a constant) or that ONNX Runtime cannot run
        got = None
    if got is None or got.shape != expected.shape or float(np.abs(got - expected).max()) > EXACT:
        raise RetinasegError("the ONNX export does not reproduce the model's output at another input size (its "
                             "forward depends on the size in a way the tracer fixed); use --backend torch")


def export_file(model: LoadedModel, path) -> None:
    from retinaseg.io.atomic import write_bytes_via

    data = export_bytes(model)
    write_bytes_via(path, lambda tmp: Path(tmp).write_bytes(data))


def read_metadata(path) -> dict:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise RetinasegError(f"{path}: not an ONNX file exported by retinaseg (no {METADATA_KEY!r} metadata)")


def make_onnx_predictor(model: LoadedModel, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batch -> probabilities on CPU, through ONNX Runtime (the model exported in memory once)."""
    ort = _onnxruntime()
    if device.type != "cpu":
        raise RetinasegError("the onnxruntime backend runs on the CPU here; use --backend torch with --device "
                             f"{device}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(export_bytes(model), options, providers=["CPUExecutionProvider"])
    binary = model.classes == 1

    def predict(batch: torch.Tensor) -> torch.Tensor:
        logits = torch.from_numpy(session.run(None, {"image": batch.contiguous().numpy()})[0])
        return torch.sigmoid(logits) if binary else torch.softmax(logits, dim=1)

    return predict
