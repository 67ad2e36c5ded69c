"""The optic disc: found or not, kept as one blob, scored; the runner's disc task and its "no disc" flag."""
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from retinaseg import hookimpl
from retinaseg.cli import cli as retinaseg_cli
from retinaseg.disc import find_disc, keep_disc
from retinaseg.evaluation.metrics import disc_metrics
from retinaseg.registry import ModelSpec, get_model

from conftest import registered


def disc_map(shape=(200, 300), centre=(90, 200), diameter=40):
    rows, cols = np.indices(shape)
    return (np.hypot(rows - centre[0], cols - centre[1]) <= diameter / 2).astype(np.float32)


def test_a_disc_is_found_with_its_centre_and_diameter():
    disc = find_disc(disc_map())
    assert disc.found and disc.row == pytest.approx(90, abs=0.5) and disc.col == pytest.approx(200, abs=0.5)
    assert disc.diameter == pytest.approx(40, rel=0.03)


@pytest.mark.parametrize("case, reason", [("empty", "no disc pixels"), ("speck", "too small"),
                                          ("streak", "too elongated"), ("faint", "marked faintly")])
def test_no_disc_is_a_status_with_a_reason_not_a_guess(case, reason):
    prob = np.zeros((200, 300), np.float32)
    if case == "speck":
        prob[50:53, 50:53] = 1
    elif case == "streak":
        prob[100:106, 20:200] = 1
    elif case == "faint":  # a disc-sized blob the model is unsure of: an exudate, a pale disc's fragment
        prob = disc_map() * 0.75
    disc = find_disc(prob)
    assert not disc.found and reason in disc.reason and math.isnan(disc.diameter)


def test_a_weights_file_that_sets_its_own_threshold_for_a_firm_disc_is_held_to_it(tmp_path):
    """A disc file fine-tuned to mark discs more firmly is packed with the mean probability its discs need; the
    functions take it, and the segmenter of that file applies it."""
    from retinaseg.checkpoint import weights_dir
    from retinaseg.inference.segmenter import SegmentConfig, Segmenter
    from retinaseg.models import load_model
    from retinaseg.synthetic import synthetic_fundus

    prob = disc_map() * 0.88
    assert find_disc(prob).found and keep_disc(prob[None])[1].found  # the default: 0.85
    for unfound in (find_disc(prob, min_probability=0.9), keep_disc(prob[None], min_probability=0.9)[1]):
        assert not unfound.found and "a disc 0.9 or more" in unfound.reason
    packed = tmp_path / "firm.pt"
    result = CliRunner().invoke(retinaseg_cli, ["weights", "pack", str(weights_dir() / "disc.pt"), str(packed),
                                                "--disc-min-probability", "0.999"])
    assert result.exit_code == 0, result.output
    assert load_model("disc", packed).disc_min_probability == 0.999
    assert load_model("disc").disc_min_probability == 0.9  # the shipped file's, chosen for its maps
    photo = synthetic_fundus(256, seed=0).image
    shipped = Segmenter(load_model("disc"), SegmentConfig(device="cpu")).predict(photo)[0]
    firm = Segmenter(load_model("disc", packed), SegmentConfig(device="cpu")).predict(photo)[0]
    assert find_disc(shipped).found and not find_disc(firm).found  # nothing the file marks is that firm
    bad = CliRunner().invoke(retinaseg_cli, ["weights", "pack", str(weights_dir() / "disc.pt"), str(packed),
                                             "--disc-min-probability", "1.5"])
    assert bad.exit_code == 2 and "--disc-min-probability" in bad.output


def test_keep_disc_keeps_the_largest_blob_with_its_holes_filled():
    prob = disc_map() * 0.9
    prob[88:92, 198:202] = 0.1  # a hole: the vessel trunk in the disc
    prob[20:30, 20:30] = 0.9  # a bright lesion elsewhere
    kept = keep_disc(prob[None])[0][0]
    assert (kept[20:30, 20:30] < 0.5).all() and (kept[88:92, 198:202] >= 0.5).all()
    assert ((kept >= 0.5) == (disc_map() > 0)).all()


def test_disc_scores():
    truth = disc_map() > 0
    shifted = disc_map(centre=(90, 204)) > 0
    row = disc_metrics(truth, shifted)
    assert row["centre_error_dd"] == pytest.approx(0.1, abs=0.01) and 0.8 < row["dice"] < 0.95
    assert row["found"] == 1.0 and row["diameter_ratio"] == pytest.approx(1.0, abs=0.03)
    missed = disc_metrics(truth, np.zeros_like(truth))
    assert missed["found"] == 0.0 and math.isnan(missed["centre_error_dd"]) and missed["dice"] == 0.0


class BrightBlob(torch.nn.Module):
    """A fake disc model: pixels much brighter than the photo's mean are disc."""

    def __init__(self, in_channels=3, classes=1, **options):
        super().__init__()

    def forward(self, x):
        return 6.0 * (x.mean(dim=1, keepdim=True) - 1.5)


class DarkLines(torch.nn.Module):
    """A fake vessel model: pixels far darker than the photo's mean in green are vessel."""

    def __init__(self, in_channels=3, classes=1, **options):
        super().__init__()

    def forward(self, x):
        return 8.0 * (-1.5 - x[:, 1:2])


class FakeDiscPlugin:
    @hookimpl
    def register_models(self, register):
        register(ModelSpec(name="bright-disc", build=BrightBlob, description="test", task="disc", fov_diameter=150,
                           size_divisor=8, max_downscale=0))
        register(ModelSpec(name="dark-lines", build=DarkLines, description="test", fov_diameter=150, size_divisor=8,
                           max_downscale=0))


def test_the_disc_model_is_registered_as_its_own_task():
    assert get_model("disc").task == "disc" and get_model("disc").classes == 1
    with pytest.raises(ValueError, match="task 'disc' with 4 classes"):
        ModelSpec(name="x", build=BrightBlob, description="", classes=4, task="disc")


def test_run_with_a_disc_model_writes_one_disc_and_flags_photos_without_one_or_with_rivals(cli, tmp_path, fundus):
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "eye.png", fundus.image_uint8())  # the synthetic photo's bright optic disc
    flat = np.minimum(fundus.image, np.percentile(fundus.image[fundus.fov], 60, axis=0))  # the bright disc cut off
    iio.imwrite(folder / "flat.png", (flat * 255).astype(np.uint8))
    twin = np.maximum(fundus.image, fundus.image[:, ::-1])  # its disc and the disc's mirror image, as large
    iio.imwrite(folder / "twin.png", (twin * 255).astype(np.uint8))
    with registered(FakeDiscPlugin(), "fake-disc"):
        result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "bright-disc", "--overlay", str(folder),
                                            str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    mask = iio.imread(tmp_path / "out" / "raw_pre" / "eye.png") > 0
    disc = find_disc(mask.astype(np.float32))
    assert disc.found
    report = {r["stem"]: r for r in json.loads((tmp_path / "out" / "run.json").read_text())["images"]}
    assert report["eye"]["flag"] is None and report["flat"]["flag"] == "no optic disc found"
    assert report["twin"]["flag"] == "another region that would pass as a disc"
    assert find_disc((iio.imread(tmp_path / "out" / "raw_pre" / "twin.png") > 0).astype(np.float32)).rivals == 0
    assert "1 with no optic disc found, 1 with another region that would pass as a disc" in result.output


@pytest.mark.parametrize("grow_to, diameter", [(None, 40), (0.25, 56)])
def test_a_disc_grown_to_its_faint_rim_and_kept_so(monkeypatch, grow_to, diameter):
    import retinaseg.disc

    monkeypatch.setattr(retinaseg.disc, "GROW_TO", grow_to)
    prob = disc_map() * 0.95 + (disc_map(diameter=56) - disc_map()) * 0.35  # a firm centre, a faint rim
    prob[20:30, 20:30] = 0.35  # faint, but not connected to the disc: never part of it
    disc = find_disc(prob)
    assert disc.found and disc.diameter == pytest.approx(diameter, rel=0.03)
    kept = keep_disc(prob[None])[0][0]
    assert (kept[20:30, 20:30] < 0.5).all()
    again = find_disc(kept)  # measure and eval read the kept map: the same disc, still marked firmly
    assert again.found and again.diameter == pytest.approx(disc.diameter)


def test_a_region_that_would_pass_as_a_disc_beside_the_kept_one_is_counted_as_a_rival():
    prob = disc_map(centre=(90, 200), diameter=40) * 0.95
    assert find_disc(prob).rivals == 0
    prob = np.maximum(prob, disc_map(centre=(90, 80), diameter=30) * 0.9)  # 56% of the area: a rival
    prob[170:174, 20:80] = 0.95  # a streak: too elongated to pass as a disc
    prob = np.maximum(prob, disc_map(centre=(30, 150), diameter=12) * 0.95)  # a speck under half the area
    disc = find_disc(prob)
    assert disc.found and disc.col == pytest.approx(200, abs=1) and disc.rivals == 1
    assert find_disc(keep_disc(prob[None])[0][0]).rivals == 0  # the kept map holds the one disc


def test_among_rivals_the_disc_is_the_one_the_vessels_converge_on():
    prob = np.maximum(disc_map(centre=(90, 200), diameter=40) * 0.95, disc_map(centre=(90, 80), diameter=32) * 0.9)
    vessels = np.zeros(prob.shape, bool)
    rows, cols = np.indices(prob.shape)
    for angle in np.linspace(0, 2 * np.pi, 8, endpoint=False):  # trunks leaving the smaller blob every way
        along = (cols - 80) * np.cos(angle) + (rows - 90) * np.sin(angle)
        across = -(cols - 80) * np.sin(angle) + (rows - 90) * np.cos(angle)
        vessels |= (along > 0) & (np.abs(across) <= 2)
    largest, converged = find_disc(prob), find_disc(prob, vessels)
    assert largest.col == pytest.approx(200, abs=1) and largest.rivals == 1
    assert converged.col == pytest.approx(80, abs=1) and converged.rivals == 1
    assert converged.diameter == pytest.approx(32, rel=0.05)
    fov = cols < 140  # the FOV ends between them: the larger's ring holds no FOV pixel, so its density is 0
    assert find_disc(prob, vessels, fov).col == pytest.approx(80, abs=1)
    no_rival = disc_map(centre=(90, 200), diameter=40) * 0.95
    assert find_disc(no_rival, vessels).col == pytest.approx(200, abs=1)  # without rivals the vessels are not read
    assert find_disc(prob, np.zeros(prob.shape, bool)).col == pytest.approx(200, abs=1)  # a tie: the largest


@pytest.mark.parametrize("centre", [(90, 200), (3, 5), (196, 297)])  # inside; at the corners, the frame cuts it
def test_the_window_around_a_disc_holds_every_pixel_within_reach_at_its_exact_distance(centre):
    from retinaseg.disc import Disc, around

    disc = Disc("ok", "", centre[0] + 0.4, centre[1] + 0.7, 21.3)
    rows, cols = np.indices((200, 300))
    everywhere = np.hypot(rows - disc.row, cols - disc.col) / disc.diameter
    window, radius = around(disc, 2.5, everywhere.shape)
    assert np.array_equal(radius, everywhere[window])
    outside = np.ones(everywhere.shape, bool)
    outside[window] = False
    assert (everywhere[outside] > 2.5).all()


def test_a_disc_touching_the_frame_has_its_holes_filled_as_over_the_whole_frame():
    from scipy import ndimage

    from retinaseg.disc import disc_blob

    prob = disc_map(centre=(10, 20), diameter=40) * 0.95  # cut by the top edge
    prob[8:12, 18:22] = 0  # a hole
    prob[0:3, 15:25] = 0  # a notch open to the frame's edge: not a hole
    blob = disc_blob(prob)
    assert np.array_equal(blob, ndimage.binary_fill_holes(prob >= 0.5))
    assert blob[10, 20] and not blob[0, 20]


def photo_with_a_lesion() -> np.ndarray:
    """A flat retina with a disc at column 210 that eight dark vessels leave, and a larger bright lesion at 90."""
    rows, cols = np.indices((300, 300))
    photo = np.zeros((300, 300, 3), np.float32)
    photo[np.hypot(rows - 150, cols - 150) < 140] = (0.6, 0.3, 0.15)
    for angle in np.linspace(0, 2 * np.pi, 8, endpoint=False):
        along = (cols - 210) * np.cos(angle) + (rows - 150) * np.sin(angle)
        across = -(cols - 210) * np.sin(angle) + (rows - 150) * np.cos(angle)
        photo[(along > 0) & (np.abs(across) <= 1.5) & (np.hypot(rows - 150, cols - 150) < 138)] = (0.3, 0.05, 0.05)
    photo[np.hypot(rows - 150, cols - 210) <= 18] = 0.95
    photo[np.hypot(rows - 150, cols - 90) <= 21] = 0.95
    return photo


# the vessel model beside the disc model; or none, and the default vessel model judges the rivals (here the fake
# dark-lines; "no-such-model": it cannot be loaded, and the largest blob, the lesion, is kept)
@pytest.mark.parametrize("vessel_model, default_model, column",
                         [("dark-lines", "vesselnet", 210), (None, "dark-lines", 210), (None, "no-such-model", 90)])
def test_run_and_eval_keep_the_disc_the_vessels_converge_on(cli, tmp_path, monkeypatch, vessel_model, default_model,
                                                            column):
    import retinaseg.models
    from retinaseg.inference.segmenter import segmenter_of

    monkeypatch.setattr(retinaseg.models, "DEFAULT_MODEL", default_model)
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "eye.png", (photo_with_a_lesion() * 255).astype(np.uint8))
    option = ["--vessel-model", vessel_model] if vessel_model else []
    with registered(FakeDiscPlugin(), "fake-disc"):
        result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "bright-disc", *option, str(folder),
                                            str(tmp_path / "out")])
        said = []
        eval_segmenter = segmenter_of("bright-disc", vessel_model=vessel_model, notify=said.append)
        predicted = eval_segmenter.predict_file(folder / "eye.png")  # as eval segments
        judged = json.loads((tmp_path / "out" / "run.json").read_text())["settings"]["disc_among_rivals"]
    assert result.exit_code == 0, result.output
    assert judged.endswith("the vessel model" if vessel_model else f"{default_model} (weights sha256 None)")
    assert any("cannot be loaded" in line for line in said) == (default_model == "no-such-model")
    report = json.loads((tmp_path / "out" / "run.json").read_text())["images"][0]
    assert report["flag"] == "another region that would pass as a disc"  # the choice is worth a look either way
    for kept in (iio.imread(tmp_path / "out" / "raw_pre" / "eye.png") > 0, predicted[0] >= 0.5):
        disc = find_disc(kept.astype(np.float32))
        assert disc.found and disc.col == pytest.approx(column, abs=3) and disc.rivals == 0
    small_map = iio.imread(tmp_path / "out" / "small_pre" / "eye.png") > 0
    small = find_disc(small_map.astype(np.float32))
    assert small.col * 300 / small_map.shape[1] == pytest.approx(column, abs=4)  # the working-scale map: the same


@pytest.mark.parametrize("open_share, centre_col", [(None, 211), (0.25, 200)])
def test_a_disc_opened_to_its_round_body_drops_a_streak_joined_to_it(monkeypatch, open_share, centre_col):
    import retinaseg.disc

    monkeypatch.setattr(retinaseg.disc, "OPEN_SHARE", open_share)
    prob = disc_map(centre=(90, 200), diameter=40) * 0.95
    prob[84:96, 200:260] = 0.95  # a pale streak 12 px wide (0.3 of the disc) joined to its edge
    disc = find_disc(prob)
    assert disc.found and disc.row == pytest.approx(90, abs=1) and disc.col == pytest.approx(centre_col, abs=2)
    if open_share:
        assert disc.diameter == pytest.approx(40, rel=0.05)
        plain = disc_map(centre=(90, 200), diameter=40) * 0.95  # a round disc keeps its area
        assert find_disc(plain).diameter == pytest.approx(2 * math.sqrt((plain >= 0.5).sum() / math.pi), rel=0.02)
