"""ONNX export and the ONNX Runtime backend: the same numbers and masks as torch, on synthetic photos."""
import numpy as np
import pytest
import torch

from retinaseg import hookimpl
from retinaseg.cli import cli as retinaseg_cli
from retinaseg.errors import RetinasegError
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.models import load_model
from retinaseg.registry import ModelSpec
from retinaseg.synthetic import synthetic_fundus

from conftest import registered

onnxruntime = pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed (make test installs it)")


@pytest.mark.parametrize("name", ["vesselnet", "av-fusion"])
def test_the_export_matches_torch_at_two_sizes_one_not_square(cli, tmp_path, name):
    from retinaseg.inference.onnx import read_metadata
    from retinaseg.inference.predictor import _fold_batch_norm

    path = tmp_path / f"{name}.onnx"
    result = cli.invoke(retinaseg_cli, ["export", "-m", name, str(path)])
    assert result.exit_code == 0, result.output
    model = load_model(name)
    metadata = read_metadata(path)
    assert metadata["model"] == name and metadata["config"]["fov_diameter"] == model.fov_diameter
    assert metadata["config"]["classes"] == model.classes and metadata["weights_sha256"] == model.weights_sha256
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = _fold_batch_norm(model.module.eval())
    for shape in ((1, 3, 96, 96), (2, 3, 64, 112)):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            expected = module(x).numpy()
        assert np.abs(session.run(None, {"image": x.numpy()})[0] - expected).max() < 1e-4


@pytest.mark.parametrize("options", [{}, {"tta": True}], ids=["plain", "tta"])
def test_onnxruntime_and_torch_give_the_same_masks(options):
    photo = synthetic_fundus((300, 340), seed=8).image
    masks = []
    for backend in ("torch", "onnxruntime"):
        segmenter = Segmenter(load_model("vesselnet"), SegmentConfig(device="cpu", backend=backend, **options))
        masks.append(segmenter.predict(photo)[0] >= 0.5)
    assert np.mean(masks[0] != masks[1]) < 1e-4


def test_the_av_model_with_its_vessel_gate_runs_on_onnxruntime_alike():
    photo = synthetic_fundus((260, 280), seed=9).image
    maps = []
    for backend in ("torch", "onnxruntime"):
        segmenter = Segmenter(load_model("av-fusion"), SegmentConfig(device="cpu", backend=backend),
                              vessel_model=load_model("vesselnet"))
        maps.append(segmenter.predict(photo).argmax(axis=0))
    assert np.mean(maps[0] != maps[1]) < 1e-4


class ThroughNumpy(torch.nn.Module):
    """A plugin whose forward leaves torch for numpy: the tracer records its output as a constant."""

    def __init__(self, in_channels=3, classes=1):
        super().__init__()

    def forward(self, x):
        return torch.from_numpy(np.ascontiguousarray(x[:, 1:2].detach().numpy()))


class UntraceablePlugin:
    @hookimpl
    def register_models(self, register):
        register(ModelSpec(name="through-numpy", build=ThroughNumpy, description="test", size_divisor=8))


def test_a_model_that_cannot_be_exported_is_refused_with_a_clear_message(cli, tmp_path, photo_folder):
    with registered(UntraceablePlugin(), "untraceable"):
        with pytest.raises(RetinasegError, match="use --backend torch"):
            Segmenter(load_model("through-numpy"), SegmentConfig(device="cpu", backend="onnxruntime"))
        result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "through-numpy", "--backend", "onnxruntime",
                                            str(photo_folder), str(tmp_path / "out")])
    assert result.exit_code == 1 and "use --backend torch" in result.output and "Traceback" not in result.output
