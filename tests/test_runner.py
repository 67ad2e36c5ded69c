"""`retinaseg run`: outputs at raw and working size, A/V colours, run.json, resume, atomic writes."""
import json
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import retinaseg.inference.segmenter as segmenter_module
import retinaseg.io.atomic as atomic
from retinaseg import av, hookimpl
from retinaseg.cli import cli as retinaseg_cli
from retinaseg.inference import FEW_VESSELS
from retinaseg.inference.rescale import merge_views
from retinaseg.inference.runner import run_batch
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.inference.views import View
from retinaseg.errors import ImageReadError
from retinaseg.io.images import read_photo, read_probabilities
from retinaseg.models import load_model
from retinaseg.preprocess import resize
from retinaseg.registry import ModelSpec
from retinaseg.synthetic import synthetic_fundus

from conftest import HalvesAV, f1, registered
from av_checks import decodes_to

SIZES = {"a": (192, 192), "b": (151, 173), "c": (97, 133)}  # (height, width) in photo_folder


def run(cli, *args):
    return cli.invoke(retinaseg_cli, ["run", "-q", *map(str, args)])


def test_outputs_have_the_raw_size_for_odd_sizes(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    result = run(cli, "-m", "dark-vessels", "--save-prob", "--overlay", photo_folder, out)
    assert result.exit_code == 0, result.output
    assert "3 ok, 0 skipped, 0 failed" in result.output
    report = json.loads((out / "run.json").read_text())
    for stem, (h, w) in SIZES.items():
        mask = iio.imread(out / "raw_pre" / f"{stem}.png")
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        prob = read_probabilities(out / "prob" / f"{stem}.tif")[0]
        assert prob.shape == (h, w) and prob.dtype == np.float32
        assert np.array_equal(prob >= 0.5, mask == 255)
        assert iio.imread(out / "overlay" / f"{stem}.png").shape == (h, w, 3)
        record = next(r for r in report["images"] if r["stem"] == stem)
        small = iio.imread(out / "small_pre" / f"{stem}.png")
        assert list(small.shape[::-1]) == record["working_size"]
        assert record["raw_size"] == [w, h]


def test_fov_scale_brings_photos_to_the_model_working_diameter(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    run(cli, "-m", "dark-vessels", photo_folder, out)
    report = json.loads((out / "run.json").read_text())
    for record in report["images"]:
        scale = record["working_size"][0] / record["raw_size"][0]
        assert abs(record["fov_diameter"] * scale - 150) < 4  # the fake model declares fov_diameter=150


def test_crops_inside_the_retina_are_scaled_by_the_diameter_given(cli, tmp_path, fake_models):
    whole = synthetic_fundus(300, seed=6, fov_fraction=0.9)  # FOV 270 px across
    (tmp_path / "in").mkdir()
    for name, (top, left) in {"crop1": (60, 60), "crop2": (90, 80)}.items():  # 120 px squares inside the FOV
        iio.imwrite(tmp_path / "in" / f"{name}.png", whole.image_uint8()[top:top + 120, left:left + 120])
    iio.imwrite(tmp_path / "in" / "whole.png", whole.image_uint8())
    out = tmp_path / "out"
    result = run(cli, "-m", "dark-vessels", tmp_path / "in", out)
    assert result.exit_code == 0, result.output
    assert result.output.count("no dark surround") == 1  # said once, not once per crop
    report = {r["stem"]: r for r in json.loads((out / "run.json").read_text())["images"]}
    assert report["crop1"]["fov_diameter"] == 120  # the frame taken as the FOV: shown 150/120 too large
    result = run(cli, "-m", "dark-vessels", "--overwrite", "--raw-fov-diameter", 270, tmp_path / "in", out)
    assert result.exit_code == 0 and "no dark surround" not in result.output
    report = {r["stem"]: r for r in json.loads((out / "run.json").read_text())["images"]}
    for stem in ("crop1", "crop2"):
        assert report[stem]["fov_diameter"] == 270
        assert report[stem]["working_size"] == [round(120 * 150 / 270)] * 2
    assert abs(report["whole"]["fov_diameter"] - 270) <= 6  # a photo with a FOV edge is still measured
    assert iio.imread(out / "raw_pre" / "crop1.png").shape == (120, 120)


def working_scales(out) -> list[tuple[float, int]]:
    """(working/raw scale, FOV diameter in raw pixels) of each photo in a run's report."""
    report = json.loads((out / "run.json").read_text())
    return [(r["working_size"][0] / r["raw_size"][0], r["fov_diameter"]) for r in report["images"]]


def test_max_downscale_limits_how_much_large_photos_shrink(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    assert run(cli, "-m", "dark-vessels", "--max-downscale", "1", photo_folder, out).exit_code == 0
    assert {fov > 160 for _, fov in working_scales(out)} == {True, False}  # one shrinks, one grows
    for scale, fov in working_scales(out):
        assert scale == pytest.approx(max(150 / fov, 1.0), abs=0.02)
    result = run(cli, "-m", "dark-vessels", "--max-downscale", "0.5", photo_folder, tmp_path / "bad")
    assert result.exit_code == 2 and "at least 1" in result.output


def test_a_model_declares_its_own_max_downscale(cli, tmp_path, photo_folder, fake_models):
    assert run(cli, "-m", "halves-av", photo_folder, tmp_path / "default").exit_code == 0
    for scale, fov in working_scales(tmp_path / "default"):  # halves-av declares max_downscale=1: nothing shrinks
        assert scale == pytest.approx(max(150 / fov, 1.0), abs=0.02)
    assert run(cli, "-m", "halves-av", "--max-downscale", "0", photo_folder, tmp_path / "no-limit").exit_code == 0
    for scale, fov in working_scales(tmp_path / "no-limit"):  # the option overrides the model
        assert scale == pytest.approx(150 / fov, abs=0.02)


def test_a_weights_file_records_its_own_max_downscale(cli, tmp_path, photo_folder, fake_models):
    from retinaseg.checkpoint import pack_checkpoint, save_checkpoint
    from retinaseg.errors import CheckpointError
    from retinaseg.models import model_config
    from retinaseg.registry import get_model

    save_checkpoint(tmp_path / "best.pt", {}, model_config(get_model("halves-av")))
    pack_checkpoint(tmp_path / "best.pt", tmp_path / "own.pt", max_downscale=0)  # the model says 1
    assert load_model("halves-av", tmp_path / "own.pt").max_downscale == 0
    assert run(cli, "-m", "halves-av", "-w", tmp_path / "own.pt", photo_folder, tmp_path / "file").exit_code == 0
    for scale, fov in working_scales(tmp_path / "file"):  # the file's 0 (no limit) beats the model's 1
        assert scale == pytest.approx(150 / fov, abs=0.02)
    assert run(cli, "-m", "halves-av", "-w", tmp_path / "own.pt", "--max-downscale", "1", photo_folder,
               tmp_path / "option").exit_code == 0
    for scale, fov in working_scales(tmp_path / "option"):  # and the option beats the file
        assert scale == pytest.approx(max(150 / fov, 1.0), abs=0.02)
    with pytest.raises(CheckpointError, match="at least 1"):
        pack_checkpoint(tmp_path / "best.pt", tmp_path / "bad.pt", max_downscale=0.5)


def test_a_weights_file_records_its_own_working_scale(cli, tmp_path, photo_folder, fake_models):
    from retinaseg.checkpoint import pack_checkpoint, save_checkpoint
    from retinaseg.errors import CheckpointError
    from retinaseg.models import model_config
    from retinaseg.registry import get_model

    save_checkpoint(tmp_path / "best.pt", {}, model_config(get_model("dark-vessels")))  # the model says 150 px
    pack_checkpoint(tmp_path / "best.pt", tmp_path / "own.pt", fov_diameter=90, max_downscale=0)
    assert load_model("dark-vessels", tmp_path / "own.pt").fov_diameter == 90
    assert run(cli, "-m", "dark-vessels", "-w", tmp_path / "own.pt", photo_folder, tmp_path / "out").exit_code == 0
    for scale, fov in working_scales(tmp_path / "out"):
        assert scale == pytest.approx(90 / fov, abs=0.02)
    with pytest.raises(CheckpointError, match="at least 32"):
        pack_checkpoint(tmp_path / "best.pt", tmp_path / "bad.pt", fov_diameter=8)


class FlipSensitivePlugin:
    @hookimpl
    def register_models(self, register):  # halves-av's artery/vein sides swap under a horizontal flip
        register(ModelSpec(name="halves-av-tta", build=HalvesAV, description="test", classes=4, fov_diameter=150,
                           size_divisor=8, tta=True))


def test_a_model_declares_its_own_tta_default(cli, tmp_path, photo_folder):
    def artery_vein_gap(out):
        """Share of the FOV where artery and vein probabilities differ by more than 0.1."""
        prob = read_probabilities(out / "prob" / "a.tif")
        fov = prob[av.BACKGROUND] < 1
        return float((np.abs(prob[av.ARTERY] - prob[av.VEIN]) > 0.1)[fov].mean())

    with registered(FlipSensitivePlugin(), "flip-sensitive-plugin"):
        assert run(cli, "-m", "halves-av-tta", "--save-prob", photo_folder, tmp_path / "default").exit_code == 0
        assert run(cli, "-m", "halves-av-tta", "--save-prob", "--no-tta", photo_folder,
                   tmp_path / "plain").exit_code == 0
    default, plain = (json.loads((tmp_path / name / "run.json").read_text())["settings"]
                      for name in ("default", "plain"))
    assert default["tta"] is True and default["views"] == ["x1", "x1 flipped h", "x1 flipped v", "x1 flipped hv"]
    assert plain["tta"] is False and plain["views"] == ["x1"]
    # flips average the left-is-artery and right-is-artery views into equal artery and vein probabilities (but
    # along the middle, where padding the crop to the model's size divisor moves the halves' border)
    assert artery_vein_gap(tmp_path / "default") < 0.05 < 0.5 < artery_vein_gap(tmp_path / "plain")


class GreenLevel(torch.nn.Module):
    """Pixelwise: vessel probability rises with the standardised green level, so every view should agree."""

    def __init__(self, in_channels=3, classes=1):
        super().__init__()

    def forward(self, x):
        return 2.0 * x[:, 1:2]


class ViewsPlugin:
    def __init__(self, views):
        self.views = views

    @hookimpl
    def register_models(self, register):
        register(ModelSpec(name="green-level", build=GreenLevel, description="test", fov_diameter=150,
                           size_divisor=8, tta_views=self.views))


@pytest.mark.parametrize("views", [
    (View(flip="h"),), (View(flip="v"),), (View(flip="hv"),), (View(scale=1.125, flip="h"),),
    (View(scale=0.75, flip="v"),), (View(scale=2.0),), (View(), View(scale=1.5, flip="hv")),
])
def test_each_test_time_view_is_undone_before_views_are_averaged(views):
    # a photo with no symmetry: green rises to the right and, less, downwards
    rows, cols = np.mgrid[0:120, 0:160]
    green = 0.1 + 0.8 * (0.7 * cols / 159 + 0.3 * rows / 119)
    photo = np.stack([np.full_like(green, 0.5), green, np.full_like(green, 0.3)], axis=-1).astype(np.float32)
    fov = np.ones(green.shape, dtype=bool)
    with registered(ViewsPlugin(views), "views-plugin"):
        model = load_model("green-level")
        plain = Segmenter(model, SegmentConfig(device="cpu", tta=False)).predict(photo, fov)[0]
        viewed = Segmenter(model, SegmentConfig(device="cpu", tta=True)).predict(photo, fov)[0]
    assert plain[:, -1].mean() - plain[:, 0].mean() > 0.6  # what a view left flipped would get wrong
    assert np.abs(viewed - plain).mean() < 0.01


def test_views_of_one_size_are_summed_before_their_one_resize_to_the_same_mean():
    generator = torch.Generator().manual_seed(0)
    flips = [torch.rand(4, 60, 64, generator=generator) for _ in range(4)]
    larger = torch.rand(4, 68, 72, generator=generator)  # a view at another scale
    for probs in (flips, flips + [larger], [flips[0], larger]):
        copies = [prob.clone() for prob in probs]
        for size in ((150, 161), (40, 43), (60, 64)):  # grown, shrunk (antialiased), as it is
            each = torch.stack([resize(prob, size) for prob in probs]).mean(dim=0)
            torch.testing.assert_close(merge_views(probs, size), each, atol=1e-6, rtol=0)
        assert all(torch.equal(prob, copy) for prob, copy in zip(probs, copies))  # merged in place, but not these


def test_views_of_several_photos_sharing_batches_stay_with_their_photo(cli, tmp_path, photo_folder):
    views = (View(), View(scale=1.125, flip="h"), View(scale=0.75, flip="v"))
    with registered(ViewsPlugin(views), "views-plugin"):
        for batch in (1, 4):
            result = run(cli, "-m", "green-level", "--tta", "-b", batch, "--save-prob", photo_folder,
                         tmp_path / f"b{batch}")
            assert result.exit_code == 0, result.output
    for stem in SIZES:
        one, four = (read_probabilities(tmp_path / f"b{batch}" / "prob" / f"{stem}.tif") for batch in (1, 4))
        np.testing.assert_allclose(four, one, atol=1e-5)


def test_a_view_must_have_a_known_flip_and_a_sane_scale():
    with pytest.raises(ValueError, match="flip must be one of"):
        View(flip="x")
    with pytest.raises(ValueError, match="scale"):
        View(scale=0)


def test_prediction_is_sensible_on_a_synthetic_photo(fake_models):
    sample = synthetic_fundus(256, seed=11)
    runner = Segmenter(load_model("dark-vessels"), SegmentConfig(device="cpu"))
    prob = runner.predict(sample.image)
    assert prob.shape == (1, 256, 256)
    assert f1(prob[0] >= 0.5, sample.vessels, sample.fov) > 0.5
    assert not (prob[0][~sample.fov] > 0).any()  # outside the FOV is background


def test_resize_forces_a_fixed_working_size(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    assert run(cli, "-m", "dark-vessels", "--resize", "64x48", photo_folder, out).exit_code == 0
    for stem, (h, w) in SIZES.items():
        assert iio.imread(out / "small_pre" / f"{stem}.png").shape == (48, 64)
        assert iio.imread(out / "raw_pre" / f"{stem}.png").shape == (h, w)


def test_av_models_write_colour_maps_and_class_probabilities(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    assert run(cli, "-m", "halves-av", "--save-prob", photo_folder, out).exit_code == 0
    colours = {tuple(c) for c in av.COLOURS}
    for stem, (h, w) in SIZES.items():
        rgb = iio.imread(out / "raw_pre" / f"{stem}.png")
        assert rgb.shape == (h, w, 3)
        assert {tuple(c) for c in rgb.reshape(-1, 3)} <= colours
        labels = av.decode_colours(rgb)
        assert (labels[:, : w // 3] != av.VEIN).all() and (labels[:, -w // 3:] != av.ARTERY).all()
        assert (labels == av.ARTERY).any() and (labels == av.VEIN).any()
        prob = read_probabilities(out / "prob" / f"{stem}.tif")
        assert prob.shape == (4, h, w) and np.allclose(prob.sum(0), 1, atol=1e-4)
        assert decodes_to(prob, labels)  # the map is its probabilities, decoded
    # how the map was decoded from them is recorded, so outputs decoded otherwise are not skipped as done
    assert json.loads((out / "run.json").read_text())["made_with"]["settings"]["av_decoding"] == "vessel first"


class ConstantVessels(torch.nn.Module):
    """A fake binary model: every pixel is (logit > 0) or is not a vessel."""

    def __init__(self, in_channels=3, classes=1, logit=10.0):
        super().__init__()
        self.logit = logit

    def forward(self, x):
        return torch.full_like(x[:, :1], self.logit)


class ConstantVesselsPlugin:
    @hookimpl
    def register_models(self, register):
        for name, logit in (("all-vessels", 10.0), ("no-vessels", -10.0)):
            register(ModelSpec(name=name, build=ConstantVessels, description="test", options={"logit": logit},
                               fov_diameter=150, size_divisor=8))


def test_a_binary_vessel_model_gates_an_av_models_vessels(cli, tmp_path, photo_folder, fake_models):
    assert run(cli, "-m", "halves-av", photo_folder, tmp_path / "plain").exit_code == 0
    with registered(ConstantVesselsPlugin(), "constant-vessels"):
        for gate in ("all-vessels", "no-vessels"):
            assert run(cli, "-m", "halves-av", "--vessel-model", gate, "--save-prob", photo_folder,
                       tmp_path / gate).exit_code == 0
        for stem, (h, w) in SIZES.items():
            plain, everything, nothing = (av.decode_colours(iio.imread(tmp_path / out / "raw_pre" / f"{stem}.png"))
                                          for out in ("plain", "all-vessels", "no-vessels"))
            assert not nothing.any()  # the gate says no vessels: none, whatever the A/V model thinks
            named = everything > 0
            assert named.mean() > (plain > 0).mean() + 0.05  # the gate says every FOV pixel is a vessel
            assert np.array_equal(everything[named & (plain > 0)], plain[named & (plain > 0)])  # named as before
            assert (everything[:, : w // 3] != av.VEIN).all() and (everything[:, -w // 3:] != av.ARTERY).all()
            prob = read_probabilities(tmp_path / "all-vessels" / "prob" / f"{stem}.tif")
            assert np.allclose(prob.sum(0), 1, atol=1e-4) and decodes_to(prob, everything)
        report = json.loads((tmp_path / "all-vessels" / "run.json").read_text())
        assert report["model"] == "halves-av" and report["vessel_model"]["model"] == "all-vessels"
        result = run(cli, "-m", "dark-vessels", "--vessel-model", "all-vessels", photo_folder, tmp_path / "bad")
        assert result.exit_code == 1 and "itself a binary vessel model" in result.output
        result = run(cli, "-m", "halves-av", "--vessel-model", "halves-av", photo_folder, tmp_path / "bad")
        assert result.exit_code == 1 and "must be a binary vessel model" in result.output


def test_run_json_records_model_settings_versions_and_each_input(cli, tmp_path, photo_folder, fake_models):
    (photo_folder / "broken.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    result = run(cli, "-m", "dark-vessels", "--tile-size", "64", "--overlap", "0.5", "--device", "cpu",
                 photo_folder, out)
    assert result.exit_code == 1
    report = json.loads((out / "run.json").read_text())
    assert report["model"] == "dark-vessels" and report["weights"] is None and report["weights_sha256"] is None
    assert report["settings"]["tile_size"] == 64 and report["settings"]["overlap"] == 0.5
    assert report["device"] == "cpu"
    assert {"retinaseg", "torch", "torchvision", "numpy", "python"} <= set(report["versions"])
    assert {k: report["summary"][k] for k in ("ok", "skipped", "failed")} == {"ok": 3, "skipped": 0, "failed": 1}
    by_stem = {r["stem"]: r for r in report["images"]}
    assert by_stem["broken"]["status"] == "failed" and "not a readable image" in by_stem["broken"]["message"]
    for stem in SIZES:
        assert by_stem[stem]["status"] == "ok" and by_stem[stem]["seconds"] > 0 and by_stem[stem]["read_seconds"] > 0
    # reads overlap the model: the photos' times add up to no more than the run's
    assert sum(r["seconds"] for r in report["images"]) <= report["seconds"]


def test_help_states_the_flag_threshold_and_loads_no_torch():
    # --help must be instant: a fresh interpreter shows every command's help without importing torch
    code = ("import sys; from click.testing import CliRunner; from retinaseg.cli import cli\n"
            "for command in ([], ['run'], ['train'], ['eval'], ['plugins']):\n"
            "    result = CliRunner().invoke(cli, [*command, '--help'])\n"
            "    assert result.exit_code == 0, result.output\n"
            "    print(result.output)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"under {FEW_VESSELS:.0%} of their FOV" in done.stdout


def test_photos_with_few_vessels_found_are_flagged_not_failed(cli, tmp_path):
    import torchvision.transforms.functional as TF

    sample = synthetic_fundus((400, 440), seed=3)
    photo = sample.image_uint8()
    blurred = TF.gaussian_blur(torch.from_numpy(photo).permute(2, 0, 1), 41, 10.0).permute(1, 2, 0).numpy()
    disc = np.where(sample.fov[..., None], np.array([180, 80, 40], dtype=np.uint8), 0).astype(np.uint8)
    (tmp_path / "in").mkdir()
    for name, image in {"eye": photo, "out_of_focus": blurred, "blank_disc": disc}.items():
        iio.imwrite(tmp_path / "in" / f"{name}.png", image)
    command = ["run", "-q", "--device", "cpu", str(tmp_path / "in"), str(tmp_path / "out")]
    result = cli.invoke(retinaseg_cli, command)
    assert result.exit_code == 0, result.output  # flagged photos were still processed
    assert "3 ok, 0 skipped, 0 failed" in result.output and "2 with few vessels found" in result.output
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    by_stem = {r["stem"]: r for r in report["images"]}
    # the synthetic photo has 12% vessels in its FOV; the shipped default finds most of them
    assert 0.06 < by_stem["eye"]["vessel_fraction"] < 0.2 and by_stem["eye"]["message"] == ""
    for stem in ("out_of_focus", "blank_disc"):
        assert by_stem[stem]["status"] == "ok" and by_stem[stem]["vessel_fraction"] < 0.03
        assert "few vessels found" in by_stem[stem]["message"] and f"{stem}.png" in result.output
    assert report["summary"]["few_vessels"] == 2

    # resumed runs skip them all and keep what the first run measured of each
    for _ in range(2):
        result = cli.invoke(retinaseg_cli, command)
        assert "0 ok, 3 skipped" in result.output and "2 with few vessels found" in result.output
        resumed = json.loads((tmp_path / "out" / "run.json").read_text())
        assert [r["vessel_fraction"] for r in resumed["images"]] == [r["vessel_fraction"] for r in report["images"]]
        assert resumed["summary"]["few_vessels"] == 2


def test_shipped_weights_are_recorded_with_their_sha256(tmp_path, photo_folder):
    from retinaseg.checkpoint import sha256

    model = load_model("vesselnet")
    summary = run_batch(Segmenter(model, SegmentConfig(device="cpu")), sorted(photo_folder.iterdir())[:1], tmp_path,
                        progress=False)
    report = json.loads((tmp_path / "run.json").read_text())
    assert summary.ok == 1 and report["weights_sha256"] == sha256(model.weights)


def test_existing_outputs_are_skipped_unless_overwrite(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    run(cli, "-m", "dark-vessels", photo_folder, out)
    (out / "raw_pre" / "b.png").unlink()
    result = run(cli, "-m", "dark-vessels", photo_folder, out)
    assert result.exit_code == 0 and "1 ok, 2 skipped, 0 failed" in result.output
    result = run(cli, "-m", "dark-vessels", "--overwrite", photo_folder, out)
    assert "3 ok, 0 skipped, 0 failed" in result.output


def test_same_stem_twice_is_reported_not_overwritten(cli, tmp_path, photo_folder, fake_models):
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.jpg").write_bytes((photo_folder / "b.jpg").read_bytes())
    result = run(cli, "-m", "dark-vessels", photo_folder, other, tmp_path / "out")
    assert result.exit_code == 1 and "already used by" in result.output


def test_atomic_write_leaves_nothing_behind_when_writing_fails(tmp_path, monkeypatch):
    def exploding_encode(path, image):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(atomic, "encode_png", exploding_encode)
    with pytest.raises(OSError):
        atomic.write_png(tmp_path / "x.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_failed_writes_are_reported_per_image(cli, tmp_path, photo_folder, fake_models, monkeypatch):
    real = atomic.encode_png

    def fail_for_b(path, image):
        if ".b.png" in str(path):
            raise OSError("disk full")
        return real(path, image)

    monkeypatch.setattr(atomic, "encode_png", fail_for_b)
    out = tmp_path / "out"
    result = run(cli, "-m", "dark-vessels", photo_folder, out)
    assert result.exit_code == 1 and "could not write outputs" in result.output and "disk full" in result.output
    assert not (out / "raw_pre" / "b.png").exists() and (out / "raw_pre" / "a.png").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]


def test_resume_after_a_kill(tmp_path):
    """Kill a real run with SIGKILL part-way; every output present is complete, and re-running finishes the
    rest without redoing what was done."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        iio.imwrite(photos / f"p{i}.png", synthetic_fundus(320, seed=i).image_uint8())
    out = tmp_path / "out"
    command = [sys.executable, "-m", "retinaseg", "run", "-q", "-m", "vesselnet", "--batch-size", "1",
               "--workers", "1", "--tta", str(photos), str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "raw_pre").glob("*.png"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = sorted(p.name for p in (out / "raw_pre").glob("*.png"))
    assert 2 <= len(done) < 10, "the run was not killed part-way"
    for name in done:  # complete, decodable files only
        assert iio.imread(out / "raw_pre" / name).shape == (320, 320)
        assert (out / "small_pre" / name).is_file()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{10 - len(done)} ok, {len(done)} skipped, 0 failed" in result.stdout
    assert len(list((out / "raw_pre").glob("*.png"))) == 10


def test_recursive_runs_mirror_sub_folders_so_equal_names_do_not_collide(cli, tmp_path, photo_folder,
                                                                           fake_models):
    study = tmp_path / "study"
    for patient in ("p1", "p2"):
        (study / patient).mkdir(parents=True)
        (study / patient / "img001.png").write_bytes((photo_folder / "a.png").read_bytes())
    out = tmp_path / "out"
    result = run(cli, "-m", "dark-vessels", "-r", study, out)
    assert result.exit_code == 0, result.output
    assert (out / "raw_pre" / "p1" / "img001.png").is_file() and (out / "raw_pre" / "p2" / "img001.png").is_file()
    assert (out / "small_pre" / "p2" / "img001.png").is_file()
    names = {r["stem"] for r in json.loads((out / "run.json").read_text())["images"]}
    assert names == {"p1/img001", "p2/img001"}


def test_a_glob_names_outputs_by_their_paths_below_its_fixed_folder(cli, tmp_path, photo_folder, fake_models):
    study = tmp_path / "study"
    for patient in ("p1", "p2"):
        (study / patient / "visit1").mkdir(parents=True)
        (study / patient / "visit1" / "left.png").write_bytes((photo_folder / "a.png").read_bytes())
    out = tmp_path / "out"
    result = run(cli, "-m", "dark-vessels", "-r", f"{study}/**/*.png", out)
    assert result.exit_code == 0, result.output
    assert (out / "raw_pre" / "p1" / "visit1" / "left.png").is_file()
    assert (out / "raw_pre" / "p2" / "visit1" / "left.png").is_file()
    result = run(cli, "-m", "dark-vessels", f"{study}/*/visit1/*.png", tmp_path / "out2")
    names = {r["stem"] for r in json.loads((tmp_path / "out2" / "run.json").read_text())["images"]}
    assert result.exit_code == 0 and names == {"p1/visit1/left", "p2/visit1/left"}
    result = run(cli, "-m", "dark-vessels", f"{photo_folder}/*.png", tmp_path / "out3")
    names = {r["stem"] for r in json.loads((tmp_path / "out3" / "run.json").read_text())["images"]}
    assert result.exit_code == 0 and "/" not in "".join(names)


def test_fov_masks_of_a_study_in_sub_folders_are_looked_for_in_the_same_sub_folders(cli, tmp_path, fake_models):
    sample = synthetic_fundus((120, 140), seed=4)
    squares = {"p1": (slice(20, 100), slice(30, 110)), "p2": (slice(10, 60), slice(10, 60))}
    for patient, square in squares.items():
        (tmp_path / "study" / patient).mkdir(parents=True)
        (tmp_path / "fov" / patient).mkdir(parents=True)
        iio.imwrite(tmp_path / "study" / patient / "left.png", sample.image_uint8())
        mask = np.zeros((120, 140), np.uint8)
        mask[square] = 255
        iio.imwrite(tmp_path / "fov" / patient / "left_mask.png", mask)
    out = tmp_path / "out"
    result = run(cli, "-m", "dark-vessels", "-r", "--fov-dir", tmp_path / "fov", tmp_path / "study", out)
    assert result.exit_code == 0, result.output
    for patient, square in squares.items():  # each photo gated by its own mask, not by the other's of that name
        inside = np.zeros((120, 140), bool)
        inside[square] = True
        mask = iio.imread(out / "raw_pre" / patient / "left.png")
        assert not mask[~inside].any() and mask[inside].any()
    iio.imwrite(tmp_path / "flat_mask.png", np.full((120, 140), 255, np.uint8))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat_mask.png").rename(tmp_path / "flat" / "left_mask.png")  # one mask for two photos named left
    result = run(cli, "-m", "dark-vessels", "-r", "--fov-dir", tmp_path / "flat", tmp_path / "study", tmp_path / "o2")
    assert result.exit_code == 1 and "p1/left.png: no FOV mask in" in result.output
    assert "(looked for p1/left or p1/left_<anything>" in result.output


def test_without_recursive_sub_folders_with_photos_are_named_not_silently_skipped(cli, tmp_path, photo_folder,
                                                                                 fake_models):
    (photo_folder / "patient7").mkdir()
    (photo_folder / "patient7" / "img.png").write_bytes((photo_folder / "a.png").read_bytes())
    (photo_folder / "notes").mkdir()
    (photo_folder / "notes" / "readme.txt").write_text("no photos here")
    out = tmp_path / "out"
    result = run(cli, "-m", "dark-vessels", photo_folder, out)
    assert result.exit_code == 0, result.output
    assert "1 sub-folder(s) with photos that were not searched (patient7); add --recursive" in result.output
    assert "3 ok" in result.output and not (out / "raw_pre" / "patient7").exists()
    result = run(cli, "-m", "dark-vessels", "-r", photo_folder, tmp_path / "out2")
    assert "not searched" not in result.output and "4 ok" in result.output


def test_files_in_a_folder_that_are_not_read_as_photos_are_named(cli, tmp_path, photo_folder, fake_models):
    (photo_folder / "IMG_0001.CR2").write_bytes(b"II*\0")  # a camera's RAW file
    (photo_folder / "grades.csv").write_text("stem,grade\n")
    (photo_folder / ".DS_Store").write_bytes(b"")  # hidden files are nobody's photos: not counted
    result = run(cli, "-m", "dark-vessels", photo_folder, tmp_path / "out")
    assert result.exit_code == 0 and "3 ok" in result.output, result.output
    assert "holds 2 file(s) not read as photos (.cr2, .csv)" in result.output


def test_an_output_folder_inside_the_input_folder_is_never_read_as_input(cli, tmp_path, photo_folder, fake_models):
    out = photo_folder / "seg"
    first = run(cli, "-m", "dark-vessels", photo_folder, out)
    assert first.exit_code == 0 and "3 ok" in first.output, first.output
    again = {"folder": ([photo_folder], 3), "recursive": (["-r", photo_folder], 3),
             "recursive glob": (["-r", f"{photo_folder}/**/*.png"], 1)}  # a.png only; seg/ holds 6 more PNGs
    for how, (inputs, photos) in again.items():
        result = run(cli, "-m", "dark-vessels", *inputs, out)
        assert result.exit_code == 0, (how, result.output)
        assert f"0 ok, {photos} skipped" in result.output and "not searched" not in result.output, how
    assert not (out / "raw_pre" / "seg").exists()


def test_fov_masks_can_be_supplied(cli, tmp_path, fake_models):
    sample = synthetic_fundus((120, 140), seed=4)
    (tmp_path / "in").mkdir()
    (tmp_path / "fov").mkdir()
    iio.imwrite(tmp_path / "in" / "eye.png", sample.image_uint8())
    square = np.zeros((120, 140), np.uint8)
    square[20:100, 30:110] = 255
    iio.imwrite(tmp_path / "fov" / "eye_mask.gif", square)
    out = tmp_path / "out"
    assert run(cli, "-m", "dark-vessels", "--fov-dir", tmp_path / "fov", tmp_path / "in", out).exit_code == 0
    mask = iio.imread(out / "raw_pre" / "eye.png")
    assert not mask[square == 0].any() and mask[square > 0].any()
    # outputs made without the masks are not skipped as done by a run with them
    assert run(cli, "-m", "dark-vessels", tmp_path / "in", tmp_path / "plain").exit_code == 0
    result = run(cli, "-m", "dark-vessels", "--fov-dir", tmp_path / "fov", tmp_path / "in", tmp_path / "plain")
    assert result.exit_code == 1 and "made otherwise (other fov masks" in result.output
    (tmp_path / "fov" / "eye_mask.gif").unlink()
    result = run(cli, "-m", "dark-vessels", "--overwrite", "--fov-dir", tmp_path / "fov", tmp_path / "in", out)
    assert result.exit_code == 1 and "eye.png: no FOV mask in" in result.output
    iio.imwrite(tmp_path / "fov" / "eye_mask.png", square[:100])
    result = run(cli, "-m", "dark-vessels", "--overwrite", "--fov-dir", tmp_path / "fov", tmp_path / "in", out)
    assert result.exit_code == 1 and "eye_mask.png: FOV mask is 140x100 but eye.png is 140x120" in result.output


def _large_jpeg(path, fov_fraction=0.92, size=1200):
    sample = synthetic_fundus(size, seed=5, fov_fraction=fov_fraction)
    iio.imwrite(path, sample.image_uint8(), quality=95)
    return sample


def test_a_large_jpeg_is_decoded_reduced_and_segmented_in_place(tmp_path, fake_models):
    sample = _large_jpeg(tmp_path / "eye.jpg")
    segmenter = Segmenter(load_model("dark-vessels"), SegmentConfig(device="cpu"))
    photo, fov, raw_size = segmenter.read(tmp_path / "eye.jpg")
    assert raw_size == (1200, 1200) and fov.shape == raw_size
    assert photo.shape == (600, 600, 3)  # its FOV shrinks 3.5x (the cap) to 150 px: still 1.75x after halving
    reduced = segmenter.predict_file(tmp_path / "eye.jpg")[0] >= 0.5
    segmenter_module.DECODE_REDUCED = False
    try:
        whole = segmenter.predict_file(tmp_path / "eye.jpg")[0] >= 0.5
    finally:
        segmenter_module.DECODE_REDUCED = True
    assert reduced.shape == whole.shape == raw_size
    assert f1(reduced, whole) > 0.9 and f1(reduced, sample.vessels, sample.fov) > 0.5

    def agreement(dy, dx):  # of the two maps with the reduced one shifted by (dy, dx) pixels
        return f1(np.roll(reduced, (dy, dx), axis=(0, 1)), whole)

    assert agreement(0, 0) > max(agreement(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def test_a_fov_smaller_than_the_frame_is_decoded_at_the_size_it_allows(tmp_path, fake_models):
    _large_jpeg(tmp_path / "eye.jpg", fov_fraction=0.4)
    segmenter = Segmenter(load_model("dark-vessels"), SegmentConfig(device="cpu", max_downscale=0))
    assert segmenter.decode_reduction((1200, 1200)) == 4  # planned: a FOV as wide as the frame shrinks 8x
    photo, fov, raw_size = segmenter.read(tmp_path / "eye.jpg")
    assert segmenter.decode_reduction(raw_size, fov) == 2  # found: ~480 px across, shrunk 3.2x
    assert photo.shape == (600, 600, 3)


def test_a_fov_mask_given_decides_the_reduction_and_must_fit_the_photo(tmp_path, fake_models):
    sample = _large_jpeg(tmp_path / "eye.jpg", fov_fraction=0.4)
    segmenter = Segmenter(load_model("dark-vessels"), SegmentConfig(device="cpu", max_downscale=0))
    photo, fov, raw_size = segmenter.read(tmp_path / "eye.jpg", sample.fov)
    assert fov is sample.fov and photo.shape == (600, 600, 3)  # the mask's ~480 px FOV shrinks 3.2x: halved
    with pytest.raises(ImageReadError, match=r"^mask.png: FOV mask is 1199x1200 but eye.jpg is 1200x1200$"):
        segmenter.read(tmp_path / "eye.jpg", sample.fov[:, 1:], "mask.png")


def test_every_network_that_sees_a_photo_bounds_its_reduction(fake_models):
    alone = Segmenter(load_model("halves-av"), SegmentConfig(device="cpu", max_downscale=0))
    gated = Segmenter(load_model("halves-av"), SegmentConfig(device="cpu", max_downscale=0),
                      vessel_model=load_model("dark-vessels"))
    larger_view = Segmenter(load_model("dark-vessels"), SegmentConfig(device="cpu", max_downscale=0))
    larger_view.views = (View(), View(scale=1.5))
    assert alone.decode_reduction((1200, 1200)) == 4  # 1200 / 150 = 8x
    assert gated.decode_reduction((1200, 1200)) == 4  # the cap given holds for the vessel model too: 8x
    own_caps = Segmenter(load_model("halves-av"), SegmentConfig(device="cpu"),
                         vessel_model=load_model("dark-vessels"))  # no cap given: each model's own
    assert (own_caps.config.max_downscale, own_caps.vessel_segmenter.config.max_downscale) == (1, 3.5)
    assert larger_view.decode_reduction((1200, 1200)) == 2  # its second view shrinks 5.3x
    assert alone.decode_reduction((1200, 1200), np.ones((1200, 1200), bool)) == 4
    segmenter_module.DECODE_REDUCED = False
    try:
        assert alone.decode_reduction((1200, 1200)) == 1
    finally:
        segmenter_module.DECODE_REDUCED = True


def test_an_overlay_is_drawn_on_the_photo_decoded_whole(cli, tmp_path, fake_models):
    (tmp_path / "in").mkdir()
    _large_jpeg(tmp_path / "in" / "eye.jpg")
    out = tmp_path / "out"
    assert run(cli, "-m", "dark-vessels", "--overlay", tmp_path / "in", out).exit_code == 0
    drawn, labels = iio.imread(out / "overlay" / "eye.png"), iio.imread(out / "raw_pre" / "eye.png")
    photo = np.round(read_photo(tmp_path / "in" / "eye.jpg") * 255)
    assert drawn.shape == photo.shape and np.abs(drawn[labels == 0] - photo[labels == 0]).max() <= 1


def test_out_of_memory_splits_the_batch_and_says_so(fake_models):
    import torch

    from retinaseg.inference.predictor import make_predictor

    model = load_model("dark-vessels")
    inner = model.module

    class Greedy(torch.nn.Module):
        def forward(self, x):
            if len(x) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return inner(x)

    model.module = Greedy()
    messages = []
    predict = make_predictor(model, torch.device("cpu"), notify=messages.append)
    batch = torch.randn(8, 3, 16, 16)
    out = predict(batch)
    assert out.shape == (8, 1, 16, 16) and torch.allclose(out, torch.sigmoid(inner(batch)))
    assert messages == ["warning: GPU out of memory; retrying with batches of 4",
                        "warning: GPU out of memory; retrying with batches of 2"]
    predict(batch)
    assert len(messages) == 2  # the smaller batch is kept


@pytest.mark.parametrize("own", [None, "ACTIVE"])
def test_run_lets_waiting_threads_sleep_unless_the_user_says_otherwise(cli, tmp_path, photo_folder, fake_models,
                                                                      monkeypatch, own):
    import os

    from retinaseg.inference import RUNNER_ENVIRONMENT

    if own:
        monkeypatch.setenv("OMP_WAIT_POLICY", own)
    else:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert run(cli, "-m", "dark-vessels", photo_folder, tmp_path / "out").exit_code == 0
    assert os.environ["OMP_WAIT_POLICY"] == (own or RUNNER_ENVIRONMENT["OMP_WAIT_POLICY"]) == (own or "PASSIVE")
