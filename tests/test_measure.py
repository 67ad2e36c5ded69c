"""Vascular measurements: known answers on synthetic maps, and `retinaseg measure` on folders (issue 32)."""
import csv
import io
import json
import math
from dataclasses import replace

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage

from retinaseg import av
from retinaseg import measure as measuring
from retinaseg.cli import cli as retinaseg_cli
from retinaseg.disc import Disc, find_disc
from retinaseg.measure import (BINARY_MAP, FRACTAL_SOURCES, box_counting_dimension, fractal_dimension, knudtson,
                               measure, tortuosity)
from retinaseg.synthetic import DrawnVessel, draw_vessels, synthetic_fundus

CENTRE, DD = (200.0, 200.0), 40.0


def test_knudtson_known_answers():
    assert knudtson([1.0] * 6, 0.88) == pytest.approx(1.7484, abs=1e-4)
    assert knudtson([1.0] * 6, 0.95) == pytest.approx(2.1376, abs=1e-4)
    assert knudtson([9, 10, 11, 12, 13, 14], 0.88) == pytest.approx(20.323, abs=1e-3)


def test_distance_factor_of_a_straight_and_a_sine_shaped_vessel():
    straight = np.stack([np.full(300, 50), np.arange(300)], axis=1)
    assert tortuosity(straight)["distance_factor"] == pytest.approx(1.0, abs=1e-9)
    x = np.arange(400)
    sine = np.stack([np.round(100 + 20 * np.sin(2 * np.pi * x / 100)).astype(int), x], axis=1)
    fine = np.linspace(0, 399, 200_001)
    y = 20 * np.sin(2 * np.pi * fine / 100)
    analytic = np.hypot(np.diff(fine), np.diff(y)).sum() / math.hypot(399, y[-1] - y[0])
    assert tortuosity(sine)["distance_factor"] == pytest.approx(analytic, rel=0.01)
    assert tortuosity(sine)["tortuosity_density"] > 0 and tortuosity(sine)["squared_curvature"] > 0


def test_a_segment_closed_on_itself_has_no_shape_measures_and_raises_nothing():
    # out and back along the same pixels (a loop of the skeleton, symmetric): both ends meet, chord exactly 0
    there_and_back = np.array([[0, i] for i in [*range(20), *range(18, -1, -1)]])
    shape = tortuosity(there_and_back)
    assert shape["chord"] == 0 and shape["arc"] > 30
    assert all(math.isnan(shape[key]) for key in ("distance_factor", "tortuosity_density", "squared_curvature"))


def test_box_counting_dimension_of_a_line_and_a_filled_square():
    line = np.zeros((512, 512), bool)
    line[256] = True
    assert box_counting_dimension(line) == pytest.approx(1.0, abs=0.02)
    assert box_counting_dimension(np.ones((512, 512), bool)) == pytest.approx(2.0, abs=0.02)


def test_the_fractal_dimension_of_centre_lines_leaves_the_width_out():
    fov = np.ones((512, 512), bool)
    dimensions = {}
    for width in (3, 15):
        band = np.zeros((512, 512), bool)
        band[256 - width // 2:256 + width // 2 + 1] = True
        dimensions[width] = {of: fractal_dimension(band, fov, 512, of) for of in FRACTAL_SOURCES}
    # the filled band's finest boxes count its width; its centre line is a line, whatever the width
    assert dimensions[15]["map"] > dimensions[3]["map"] + 0.05
    assert dimensions[3]["centre lines"] == pytest.approx(1.0, abs=0.05)
    assert dimensions[15]["centre lines"] == pytest.approx(dimensions[3]["centre lines"], abs=0.01)
    # boxes of D/64 (8 px here) and more: a band narrower than them is a line, where the finest boxes count its width
    assert dimensions[3]["map, coarse boxes"] == pytest.approx(1.0, abs=0.01) and dimensions[3]["map"] > 1.04


def radial_map(artery_widths, vein_widths, scale: float = 1.0):
    """Arteries and veins leaving a disc of diameter DD at CENTRE, as spokes (all of it drawn `scale` times as
    large); labels, 4xHxW probabilities."""
    vessels = []
    typed = [(w, av.ARTERY) for w in artery_widths] + [(w, av.VEIN) for w in vein_widths]
    for index, (width, code) in enumerate(typed):
        angle = 2 * math.pi * index / len(typed)
        ends = [(scale * (CENTRE[0] + r * DD * math.sin(angle)), scale * (CENTRE[1] + r * DD * math.cos(angle)))
                for r in (0.6, 4.5)]
        vessels.append(DrawnVessel(ends, scale * width, code))
    size = round(400 * scale)
    labels, coverage = draw_vessels((size, size), vessels)
    prob = np.zeros((4, size, size), np.float32)
    prob[av.BACKGROUND] = 1 - coverage
    for code in (av.ARTERY, av.VEIN):
        prob[code] = coverage * (labels == code)
    return labels, prob


def known_disc(scale: float = 1.0):
    return Disc("ok", "", scale * CENTRE[0], scale * CENTRE[1], scale * DD)


def map_folder(tmp_path, stems=("eye1",)):
    """A folder of A/V label maps, one per stem: six arteries 4 px and six veins 6 px wide crossing zone B."""
    maps = tmp_path / "maps"
    maps.mkdir()
    labels, _ = radial_map([4.0] * 6, [6.0] * 6)
    for stem in stems:
        iio.imwrite(maps / f"{stem}.png", av.encode_colours(labels))
    return maps


def test_crae_crve_and_avr_of_six_arteries_and_six_veins_of_known_widths():
    labels, prob = radial_map([4.0] * 6, [6.0] * 6)
    result = measure(labels, known_disc(), np.ones(labels.shape, bool), prob, pixel_size_um=10.0)
    values = result.values
    assert result.status == "ok", result.reasons
    assert values["arteries_zone_b"] == 6 and values["veins_zone_b"] == 6
    assert values["crae_px"] == pytest.approx(1.7484 * 4, abs=1.7484 * 0.5)  # calibres within 0.5 px
    assert values["crve_px"] == pytest.approx(2.1376 * 6, abs=2.1376 * 0.5)
    assert values["avr"] == pytest.approx(values["crae_px"] / values["crve_px"])
    assert values["crae_dd"] == pytest.approx(values["crae_px"] / DD) and values["crae_um"] == pytest.approx(
        values["crae_px"] * 10)
    assert values["mean_calibre_zone_b_px_artery"] == pytest.approx(4.0, abs=0.5)
    assert values["mean_calibre_zone_b_px_vein"] == pytest.approx(6.0, abs=0.5)


def photo_of(coverage, reflex=None, seed=0):
    """A photo whose vessels (coverage) are darker in green, slightly blurred, with noise; reflex: a lighter stripe
    (coverage of it) along the middle of vessels, as a central light reflex."""
    green = 0.5 * (1 - 0.4 * coverage)
    if reflex is not None:
        green += 0.5 * 0.4 * 0.6 * reflex
    green = ndimage.gaussian_filter(green, 0.8) + np.random.default_rng(seed).normal(0, 0.004, coverage.shape)
    return np.clip(np.stack([1.4 * green, green, 0.4 * green], axis=-1), 0, 1).astype(np.float32)


def test_calibres_measured_on_the_photo_are_the_drawn_widths_whatever_the_map_says():
    labels, prob = radial_map([4.0] * 6, [6.0] * 6)
    photo = photo_of(prob[av.ARTERY] + prob[av.VEIN])
    too_wide = np.zeros_like(labels)  # a map whose vessels are 2 px wider than those in the photo
    for code in (av.ARTERY, av.VEIN):
        too_wide[ndimage.binary_dilation(labels == code)] = code
    fov = np.ones(labels.shape, bool)
    on_map = measure(too_wide, known_disc(), fov, photo=photo, calibres_from="map").values
    on_photo = measure(too_wide, known_disc(), fov, photo=photo, calibres_from="photo")
    assert on_map["mean_calibre_zone_b_px_artery"] > 5.5  # the map's widths are wrong, so the test can fail
    assert on_photo.values["mean_calibre_zone_b_px_artery"] == pytest.approx(4.0, abs=0.5)
    assert on_photo.values["mean_calibre_zone_b_px_vein"] == pytest.approx(6.0, abs=0.5)
    assert on_photo.values["crae_px"] == pytest.approx(1.7484 * 4, abs=1.7484 * 0.5)
    assert on_photo.values["zone_b_calibres_on_photo"] == 12
    assert {vessel["calibre_from"] for vessel in on_photo.zone_b} == {"photo"}


def test_a_central_light_reflex_does_not_split_a_vessel_measured_on_the_photo():
    vessels = [DrawnVessel([(CENTRE[0] + 0.6 * DD * math.sin(a), CENTRE[1] + 0.6 * DD * math.cos(a)),
                            (CENTRE[0] + 4.5 * DD * math.sin(a), CENTRE[1] + 4.5 * DD * math.cos(a))], 12.0, av.VEIN)
               for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)]
    labels, coverage = draw_vessels((400, 400), vessels)
    _, reflex = draw_vessels((400, 400), [replace(v, width=3.0) for v in vessels])
    result = measure(labels, known_disc(), np.ones(labels.shape, bool), photo=photo_of(coverage, reflex),
                     calibres_from="photo")
    assert result.values["mean_calibre_zone_b_px_vein"] == pytest.approx(12.0, abs=0.5)


def test_a_photo_without_a_clear_vessel_profile_leaves_the_calibre_to_the_map():
    labels, prob = radial_map([4.0] * 6, [6.0] * 6)
    flat = np.full(labels.shape + (3,), 0.5, np.float32)
    result = measure(labels, known_disc(), np.ones(labels.shape, bool), prob, photo=flat, calibres_from="photo")
    assert result.values["zone_b_calibres_on_photo"] == 0 and {v["calibre_from"] for v in result.zone_b} == {"map"}
    assert result.values["mean_calibre_zone_b_px_artery"] == pytest.approx(4.0, abs=0.5)


def test_measure_command_calibres_from_the_photo_and_measures_again_when_the_source_changes(cli, tmp_path):
    maps, photos, discs = tmp_path / "maps", tmp_path / "photos", tmp_path / "discs"
    for folder in (maps, photos, discs):
        folder.mkdir()
    labels, prob = radial_map([4.0] * 6, [6.0] * 6)
    too_wide = np.zeros_like(labels)
    for code in (av.ARTERY, av.VEIN):
        too_wide[ndimage.binary_dilation(labels == code)] = code
    iio.imwrite(maps / "eye1.png", av.encode_colours(too_wide))
    iio.imwrite(photos / "eye1.png", np.round(photo_of(prob[av.ARTERY] + prob[av.VEIN]) * 255).astype(np.uint8))
    rows, cols = np.indices(labels.shape)
    iio.imwrite(discs / "eye1.png", (np.hypot(rows - CENTRE[0], cols - CENTRE[1]) <= DD / 2).astype(np.uint8) * 255)
    out = tmp_path / "out"
    arguments = ["measure", str(out), "--maps", str(maps), "--photos", str(photos), "--disc-dir", str(discs), "-q"]
    on_map = cli.invoke(retinaseg_cli, arguments)
    on_photo = cli.invoke(retinaseg_cli, arguments + ["--calibres-from", "photo"])
    assert on_map.exit_code == 0 and on_photo.exit_code == 0, on_map.output + on_photo.output
    assert "measured before" not in on_photo.output  # another source is another measurement
    row = next(csv.DictReader(open(out / "measurements.csv")))
    assert int(row["zone_b_calibres_on_photo"]) == 12
    assert float(row["mean_calibre_zone_b_px_artery"]) == pytest.approx(4.0, abs=0.5)
    detail = json.loads((out / "measurements.json").read_text())["photos"][0]
    assert {vessel["calibre_from"] for vessel in detail["zone_b"]} == {"photo"}


def test_zone_b_is_the_ring_from_one_to_one_and_a_half_disc_diameters():
    # vessels that stop short of zone B, and ones that start beyond it, are not measured there
    short = [DrawnVessel([(CENTRE[0], CENTRE[1] + 0.6 * DD), (CENTRE[0], CENTRE[1] + 0.95 * DD)], 5, av.ARTERY)]
    far = [DrawnVessel([(CENTRE[0] + 1.6 * DD, CENTRE[1]), (CENTRE[0] + 3 * DD, CENTRE[1])], 5, av.VEIN)]
    through = [DrawnVessel([(CENTRE[0], CENTRE[1] - 0.6 * DD), (CENTRE[0], CENTRE[1] - 3 * DD)], 5, av.ARTERY)]
    labels, coverage = draw_vessels((400, 400), short + far + through)
    result = measure(labels, known_disc(), np.ones(labels.shape, bool))
    assert result.values["arteries_zone_b"] == 1 and result.values["veins_zone_b"] == 0
    assert result.status == "partial" and any("6 are needed" in reason for reason in result.reasons)


def test_a_binary_map_and_a_map_without_a_disc_leave_their_measures_empty_with_reasons():
    labels, prob = radial_map([4.0] * 6, [6.0] * 6)
    binary = measure(labels > 0, known_disc(), np.ones(labels.shape, bool))
    assert binary.status == "partial" and math.isnan(binary.values["crae_px"])
    assert not math.isnan(binary.values["mean_calibre_zone_b_px_all"])
    assert any("binary vessel map" in reason for reason in binary.reasons)
    no_disc = measure(labels, find_disc(np.zeros(labels.shape, np.float32)), np.ones(labels.shape, bool), prob)
    assert no_disc.status == "partial" and math.isnan(no_disc.values["crve_px"])
    assert not math.isnan(no_disc.values["fractal_dimension_all"]) and not math.isnan(no_disc.values["length_px_all"])
    assert measure(np.zeros((50, 50), np.uint8), known_disc(), np.ones((50, 50), bool)).status == "failed"
    # an empty map reads back as a binary one, but is not called one: its row fails for having no vessels
    empty = measure(np.zeros((50, 50), bool), known_disc(), np.ones((50, 50), bool))
    assert empty.status == "failed" and empty.reasons[0] == "no vessels in the map" and BINARY_MAP not in empty.reasons


def test_measure_command_on_label_maps_with_disc_masks(cli, tmp_path):
    maps, discs = tmp_path / "maps", tmp_path / "discs"
    maps.mkdir()
    discs.mkdir()
    labels, _ = radial_map([4.0] * 6, [6.0] * 6)
    iio.imwrite(maps / "eye1.png", av.encode_colours(labels))
    iio.imwrite(maps / "eye2.png", av.encode_colours(labels))
    (maps / "broken.png").write_bytes(b"not a PNG")
    disc = np.zeros(labels.shape, np.uint8)
    rows, cols = np.indices(labels.shape)
    disc[np.hypot(rows - CENTRE[0], cols - CENTRE[1]) <= DD / 2] = 255
    for stem in ("eye1", "eye2", "broken"):
        iio.imwrite(discs / f"{stem}_disc.png", disc)
    out = tmp_path / "out"
    result = cli.invoke(retinaseg_cli, ["measure", str(out), "--maps", str(maps), "--disc-dir", str(discs),
                                        "--disc-diameter-um", "1800", "--overlay", "-q"])
    assert result.exit_code == 1 and "2 ok, 0 partial, 1 failed" in result.output, result.output
    rows = {row["stem"]: row for row in csv.DictReader(open(out / "measurements.csv"))}
    assert rows["broken"]["status"] == "failed" and "broken.png" in rows["broken"]["reason"]
    assert float(rows["eye1"]["crae_px"]) == pytest.approx(1.7484 * 4, abs=1)
    assert float(rows["eye1"]["disc_diameter_px"]) == pytest.approx(DD, rel=0.03)
    assert float(rows["eye1"]["crae_um"]) == pytest.approx(float(rows["eye1"]["crae_dd"]) * 1800, rel=1e-4)
    detail = json.loads((out / "measurements.json").read_text())
    assert len(detail["photos"][1]["zone_b"]) == 12 and (out / "measure_overlay" / "eye1.png").is_file()
    corner = iio.imread(out / "measure_overlay" / "eye1.png")[:30, :300]  # the measures written, white on black
    assert (corner > 150).all(axis=-1).sum() > 50 and (corner == 0).all(axis=-1).sum() > 1000
    made = detail["made_with"]  # what a methods section names: the maps, the discs, the scale, the versions
    assert made["maps"] == {"folder": str(maps)} and made["disc_masks"] == str(discs)
    assert made["disc_weights"] is None and made["disc_diameter_um"] == 1800 and made["versions"]["scipy"]


def test_discs_set_by_hand_are_measured_with_and_a_changed_one_measured_again(cli, tmp_path):
    maps, out, discs = map_folder(tmp_path, ("eye1", "eye2", "eye3")), tmp_path / "out", tmp_path / "discs.csv"

    def give(eye1_diameter):  # x, y: the centre's column and row; eye2 left empty, as measurements.csv leaves it
        discs.write_text(f"stem,status,disc_x,disc_y,disc_diameter_px\neye1,partial,{CENTRE[1]},{CENTRE[0]},"
                         f"{eye1_diameter}\neye2,partial,,,\neye3,ok,5000,10,40\nelsewhere,ok,1,1,1\n")
        return cli.invoke(retinaseg_cli, ["measure", str(out), "--maps", str(maps), "--discs", str(discs), "-q",
                                          "--workers", "0"])

    result = give(DD)
    assert result.exit_code == 1 and "1 ok, 0 partial, 2 failed" in result.output, result.output
    assert "gives discs for 1 photo(s) not measured here: elsewhere" in result.output
    rows = {row["stem"]: row for row in csv.DictReader(open(out / "measurements.csv"))}
    assert rows["eye1"]["disc_from"] == "given" and float(rows["eye1"]["disc_diameter_px"]) == DD
    assert float(rows["eye1"]["crae_px"]) == pytest.approx(1.7484 * 4, abs=1)
    assert "no photo to find the optic disc in" in rows["eye2"]["reason"]
    assert "discs.csv: the disc given for eye3" in rows["eye3"]["reason"] and "400x400" in rows["eye3"]["reason"]
    assert json.loads((out / "measurements.json").read_text())["made_with"]["discs_given"]["photos"] == 3
    assert "1 of 3 photo(s) measured before" in give(DD).output  # eye1 (failed rows are tried again)
    assert "measured before" not in give(DD * 1.25).output  # eye1's disc changed, so it is measured again
    row = next(r for r in csv.DictReader(open(out / "measurements.csv")) if r["stem"] == "eye1")
    assert float(row["disc_diameter_px"]) == DD * 1.25


def test_no_disc_model_is_loaded_when_every_disc_is_given(cli, tmp_path, photo_folder, fake_models, monkeypatch):
    from retinaseg.measure_batch import DiscFinder

    out = tmp_path / "out"
    assert cli.invoke(retinaseg_cli, ["run", "-q", "-m", "dark-vessels", str(photo_folder), str(out)]).exit_code == 0
    stems = [record["stem"] for record in json.loads((out / "run.json").read_text())["images"]]
    (tmp_path / "discs.csv").write_text("stem,disc_x,disc_y,disc_diameter_px\n"
                                        + "".join(f"{stem},20,20,10\n" for stem in stems))
    monkeypatch.setattr(DiscFinder, "segmenter", property(lambda self: pytest.fail("the disc model was loaded")))
    result = cli.invoke(retinaseg_cli, ["measure", "-q", "--workers", "0", "--discs", str(tmp_path / "discs.csv"),
                                        str(out)])
    rows = list(csv.DictReader(open(out / "measurements.csv")))
    assert len(rows) == len(stems) and {row["disc_from"] for row in rows} == {"given"}, result.output


def test_photos_without_a_disc_found_are_counted_and_pointed_to_discs_set_by_hand(cli, tmp_path):
    maps, photos = map_folder(tmp_path), tmp_path / "photos"
    photos.mkdir()
    rows, cols = np.indices((400, 400))
    inside = np.hypot(rows - 200, cols - 200) < 190
    iio.imwrite(photos / "eye1.png", (inside[..., None] * np.array([150, 60, 30])).astype(np.uint8))  # no disc
    result = cli.invoke(retinaseg_cli, ["measure", str(tmp_path / "out"), "--maps", str(maps), "--photos",
                                        str(photos), "--workers", "0", "-q"])
    assert "0 ok, 1 partial" in result.output, result.output
    assert "found no disc in 1 photo(s)" in result.output and "--discs" in result.output


@pytest.mark.parametrize("text", ["stem,disc_x,disc_y,disc_diameter_px\neye1,200,210.5,40\n",
                                  "\ufeffstem;disc_x;disc_y;disc_diameter_px\r\neye1;200;210,5;40\r\n",
                                  "stem\tdisc_x\tdisc_y\tdisc_diameter_px\neye1\t200\t210.5\t40\n"],
                         ids=["commas", "a spreadsheet's semicolons and decimal commas", "tabs"])
def test_a_csv_of_discs_is_read_as_spreadsheets_save_it(tmp_path, text):
    from retinaseg.measure_batch import read_given_discs

    (tmp_path / "discs.csv").write_text(text, encoding="utf-8")
    assert read_given_discs(tmp_path / "discs.csv") == {"eye1": (200.0, 210.5, 40.0)}


def test_rows_are_reused_however_the_folder_is_named(cli, tmp_path, monkeypatch):
    maps = map_folder(tmp_path)
    (tmp_path / "discs.csv").write_text(f"stem,disc_x,disc_y,disc_diameter_px\neye1,{CENTRE[1]},{CENTRE[0]},{DD}\n")
    monkeypatch.chdir(tmp_path)
    relative = ["measure", "out", "--maps", "maps", "--discs", "discs.csv", "-q"]
    assert cli.invoke(retinaseg_cli, relative).exit_code == 0
    absolute = ["measure", str(tmp_path / "out"), "--maps", str(maps), "--discs", str(tmp_path / "discs.csv"), "-q"]
    assert "1 of 1 photo(s) measured before" in cli.invoke(retinaseg_cli, absolute).output


@pytest.mark.parametrize("text, problem", [
    ("stem,disc_x,disc_y\neye1,1,2\n", "no disc_diameter_px column"),
    ("stem,disc_x,disc_y,disc_diameter_px\neye1,1,2,\n", "line 2: disc_x, disc_y, disc_diameter_px must all be"),
    ("stem,disc_x,disc_y,disc_diameter_px\neye1,1,2,-4\n", "line 2: a disc needs a finite centre and a diameter"),
    ("stem,disc_x,disc_y,disc_diameter_px\neye1,1,2,4\neye1,3,4,5\n", "line 3: eye1 is listed twice"),
], ids=["column missing", "one value empty", "negative diameter", "stem twice"])
def test_a_bad_csv_of_discs_is_refused_in_one_line(cli, tmp_path, text, problem):
    maps = map_folder(tmp_path)
    (tmp_path / "discs.csv").write_text(text)
    result = cli.invoke(retinaseg_cli, ["measure", str(tmp_path / "out"), "--maps", str(maps), "--discs",
                                        str(tmp_path / "discs.csv")])
    assert result.exit_code == 2 and problem in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "out" / "measurements.csv").exists()


def test_measurements_name_the_run_that_made_the_maps(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    assert cli.invoke(retinaseg_cli, ["run", "-q", "-m", "dark-vessels", str(photo_folder), str(out)]).exit_code == 0
    cli.invoke(retinaseg_cli, ["measure", "-q", "--workers", "0", str(out)])
    made = json.loads((out / "measurements.json").read_text())["made_with"]
    run = json.loads((out / "run.json").read_text())
    assert made["maps"]["runs"] == [{"record": "run.json", **run["made_with"]}]
    assert made["maps"]["runs"][0]["model"] == "dark-vessels" and made["calibres_from"] == "map"
    assert made["disc_masks"] is None and len(made["disc_weights"]) == 64  # the disc model's weights, by content


def test_run_measure_with_overlay_draws_the_measurements_too(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "dark-vessels", "--measure", "--overlay",
                                        str(photo_folder), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (out / "measure_overlay").iterdir()) == ["a.png", "b.png", "c.png"]
    assert sorted(path.name for path in (out / "overlay").iterdir()) == ["a.png", "b.png", "c.png"]


def test_a_binary_models_folder_says_once_that_its_artery_and_vein_measures_are_empty(cli, tmp_path, photo_folder,
                                                                                         fake_models):
    out = tmp_path / "out"
    result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "dark-vessels", "--measure", str(photo_folder), str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("artery and vein measures are empty") == 1
    assert "note: 3 of 3 map(s) are binary vessel maps" in result.output
    with open(out / "measurements.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert all(row["status"] == "partial" and BINARY_MAP in row["reason"] for row in rows)  # each row says it


def test_a_measuring_fov_measures_every_resolution_on_one_grid_in_the_photos_pixels():
    rows = {}
    for scale in (1.0, 2.0):
        labels, prob = radial_map([4.0] * 6, [6.0] * 6, scale)
        rows[scale] = measure(labels, known_disc(scale), np.ones(labels.shape, bool), prob, measuring_fov=1024)
    small, large = rows[1.0].values, rows[2.0].values
    # lengths and calibres in the photo's own pixels; the disc and the FOV as given
    assert small["crae_px"] == pytest.approx(1.7484 * 4, abs=1.7484 * 0.5)
    assert large["crae_px"] == pytest.approx(1.7484 * 8, abs=1.7484 * 0.5)
    assert (small["disc_diameter_px"], small["fov_diameter_px"], small["photo_size"]) == (DD, 400, "400x400")
    for key in ("crae_dd", "crve_dd", "avr", "mean_calibre_zone_b_dd_all"):
        assert large[key] == pytest.approx(small[key], rel=0.02), key
    assert large["length_dd_all"] == pytest.approx(small["length_dd_all"], rel=0.03)
    assert large["fractal_dimension_all"] == pytest.approx(small["fractal_dimension_all"], abs=0.005)
    # CRAE's and CRVE's centre lines come back on the photo's grid, unbroken, on its vessels
    labels, _ = radial_map([4.0] * 6, [6.0] * 6, 2.0)
    for path, code, calibre in rows[2.0].used:
        assert np.abs(np.diff(path, axis=0)).max() <= 1 and (labels[path[:, 0], path[:, 1]] == code).mean() > 0.95
    # pieces of one vessel stay apart: no straight line drawn across the gap between them
    apart = measuring._path_in_photo(np.array([[10, 10], [10, 11], [40, 60], [40, 61]]), (0.5, 0.5))
    steps = np.abs(np.diff(apart, axis=0)).max(axis=1)
    assert len(apart) == 6 and sorted(steps)[-2:] == [1, 98]


def test_measure_at_a_measuring_fov_says_so_and_measures_again_without_it(cli, tmp_path):
    maps = map_folder(tmp_path)
    (tmp_path / "discs.csv").write_text(f"stem,disc_x,disc_y,disc_diameter_px\neye1,{CENTRE[1]},{CENTRE[0]},{DD}\n")
    command = ["measure", str(tmp_path / "out"), "--maps", str(maps), "--discs", str(tmp_path / "discs.csv"), "-q"]
    assert cli.invoke(retinaseg_cli, command + ["--measuring-fov", "1024"]).exit_code == 0
    made = json.loads((tmp_path / "out" / "measurements.json").read_text())["made_with"]
    assert made["measuring_fov"] == 1024
    again = cli.invoke(retinaseg_cli, command)
    assert again.exit_code == 0 and "measured before" not in again.output
    assert json.loads((tmp_path / "out" / "measurements.json").read_text())["made_with"]["measuring_fov"] is None
    refused = cli.invoke(retinaseg_cli, command + ["--measuring-fov", "10"])
    assert refused.exit_code == 2 and "--measuring-fov" in refused.output


def test_mean_calibre_in_zone_b_weighs_each_vessel_by_its_length_there():
    # two wide vessels run through zone B (1-1.5 DD from the centre); a short thin stub lies inside it
    wide = [DrawnVessel([(CENTRE[0] + 0.6 * DD * dr, CENTRE[1] + 0.6 * DD * dc),
                         (CENTRE[0] + 4.5 * DD * dr, CENTRE[1] + 4.5 * DD * dc)], 6.0) for dr, dc in ((0, 1), (1, 0))]
    stub = DrawnVessel([(CENTRE[0] - 1.25 * DD, CENTRE[1] - 4), (CENTRE[0] - 1.25 * DD, CENTRE[1] + 4)], 2.0)
    labels, _ = draw_vessels((400, 400), wide + [stub])
    result = measure(labels > 0, known_disc(), np.ones(labels.shape, bool))
    vessels = result.zone_b
    assert len(vessels) == 3 and min(v["pixels"] for v in vessels) < 0.5 * max(v["pixels"] for v in vessels)
    weighted = sum(v["calibre_px"] * v["pixels"] for v in vessels) / sum(v["pixels"] for v in vessels)
    assert result.values["mean_calibre_zone_b_px_all"] == pytest.approx(weighted)
    assert weighted > np.mean([v["calibre_px"] for v in vessels]) + 0.3  # the stub counts for its few pixels


def test_a_vessel_split_by_a_crossing_in_zone_b_counts_once():
    # an artery leaves the disc to the right; a vein crosses it at right angles in the middle of zone B
    artery = DrawnVessel([(CENTRE[0], CENTRE[1] + 0.6 * DD), (CENTRE[0], CENTRE[1] + 4.5 * DD)], 5.0, av.ARTERY)
    ring = CENTRE[1] + 1.25 * DD
    vein = DrawnVessel([(CENTRE[0] - 30, ring), (CENTRE[0] + 30, ring)], 7.0, av.VEIN)
    labels, coverage = draw_vessels((400, 400), [artery, vein])
    result = measure(labels, known_disc(), np.ones(labels.shape, bool))
    assert result.values["crossings"] == 1
    assert result.values["arteries_zone_b"] == 1 and result.values["veins_zone_b"] == 1
    assert sorted(len(v["segments"]) for v in result.zone_b) == [2, 2]  # each measured on both sides of it
    calibres = {v["label"]: v["calibre_px"] for v in result.zone_b}
    assert calibres["artery"] == pytest.approx(5.0, abs=0.5) and calibres["vein"] == pytest.approx(7.0, abs=0.5)


def _label_maps_with_discs(tmp_path, stems):
    maps, discs = tmp_path / "maps", tmp_path / "discs"
    maps.mkdir()
    discs.mkdir()
    labels, _ = radial_map([4.0, 5.0, 6.0, 4.5, 5.5, 3.5], [6.0, 7.0, 8.0, 6.5, 7.5, 5.0])
    rows, cols = np.indices(labels.shape)
    disc = ((np.hypot(rows - CENTRE[0], cols - CENTRE[1]) <= DD / 2) * 255).astype(np.uint8)
    for index, stem in enumerate(stems):
        iio.imwrite(maps / f"{stem}.png", av.encode_colours(np.roll(labels, 3 * index, axis=1)))
        iio.imwrite(discs / f"{stem}_disc.png", np.roll(disc, 3 * index, axis=1))
    return maps, discs


def test_measuring_in_worker_processes_gives_the_same_tables_in_the_same_order(cli, tmp_path):
    stems = ["e1", "e2", "e3", "e4", "e5"]
    maps, discs = _label_maps_with_discs(tmp_path, stems)
    (maps / "broken.png").write_bytes(b"not a PNG")
    iio.imwrite(discs / "broken_disc.png", np.zeros((400, 400), np.uint8))
    tables = []
    for workers in ("0", "3"):
        out = tmp_path / f"out{workers}"
        result = cli.invoke(retinaseg_cli, ["measure", str(out), "--maps", str(maps), "--disc-dir", str(discs),
                                            "--workers", workers, "-q"])
        assert result.exit_code == 1 and "5 ok, 0 partial, 1 failed" in result.output, result.output
        assert "broken.png" in result.output  # the failure said, from a worker too
        tables.append((out / "measurements.csv").read_text().replace(str(out), "OUT"))
    assert tables[0] == tables[1]
    assert [row["stem"] for row in csv.DictReader(io.StringIO(tables[1]))] == ["broken", *stems]


def test_a_photo_that_kills_its_measuring_process_fails_alone(cli, tmp_path, monkeypatch):
    import os

    import retinaseg.measure_batch as measuring

    stems = ["a1", "a2", "crash", "a4", "a5", "a6"]
    maps, discs = _label_maps_with_discs(tmp_path, stems)
    measure_one = measuring._measure_one

    def dies_on_crash(job, item, *args):
        if item.stem == "crash":
            os._exit(9)  # as the out-of-memory killer would end it
        return measure_one(job, item, *args)

    monkeypatch.setattr(measuring, "_measure_one", dies_on_crash)  # forked workers inherit it
    out = tmp_path / "out"
    result = cli.invoke(retinaseg_cli, ["measure", str(out), "--maps", str(maps), "--disc-dir", str(discs),
                                        "--workers", "2", "-q"])
    assert result.exit_code == 1, result.output
    rows = {row["stem"]: row for row in csv.DictReader(open(out / "measurements.csv"))}
    assert sorted(rows) == sorted(stems)
    assert rows["crash"]["status"] == "failed" and "measuring process died" in rows["crash"]["reason"]
    assert all(rows[stem]["status"] == "ok" for stem in stems if stem != "crash")  # those measured beside it too


def test_measuring_again_reuses_the_rows_of_unchanged_maps_and_measures_changed_ones(cli, tmp_path, monkeypatch):
    import os

    import retinaseg.measure_batch as measuring

    maps, discs = _label_maps_with_discs(tmp_path, ["e1", "e2", "e3"])
    out = tmp_path / "out"
    command = ["measure", str(out), "--maps", str(maps), "--disc-dir", str(discs), "--workers", "0", "-q"]
    first = cli.invoke(retinaseg_cli, command)
    assert first.exit_code == 0 and "3 ok" in first.output, first.output
    rows_before = {row["stem"]: row for row in csv.DictReader(open(out / "measurements.csv"))}
    measure_one = measuring._measure_one

    def only_e2(job, item, *args):  # any other photo measured again would fail here
        if item.stem != "e2":
            raise RuntimeError("measured again")
        return measure_one(job, item, *args)

    monkeypatch.setattr(measuring, "_measure_one", only_e2)
    labels, _ = radial_map([3.0] * 6, [5.0] * 6)  # e2's map redrawn, with other widths
    iio.imwrite(maps / "e2.png", av.encode_colours(labels))
    os.utime(maps / "e2.png", ns=(1, 10**18))
    second = cli.invoke(retinaseg_cli, command)
    assert second.exit_code == 0 and "3 ok" in second.output, second.output
    assert "2 of 3 photo(s) measured before" in second.output
    rows = {row["stem"]: row for row in csv.DictReader(open(out / "measurements.csv"))}
    assert rows["e1"] == rows_before["e1"] and rows["e3"] == rows_before["e3"]
    assert float(rows["e2"]["crae_px"]) < float(rows_before["e2"]["crae_px"]) - 1
    again = cli.invoke(retinaseg_cli, command + ["--overwrite"])
    assert again.exit_code == 1 and "2 failed" in again.output and "measured again" in again.output


def test_a_mask_is_the_photos_own_not_one_whose_stem_begins_with_it(tmp_path):
    from retinaseg.io.inputs import mask_of

    for name in ("eye10_disc.png", "eye1_b_disc.png", "eye1_disc.png", "eye2.png", "eye3-od.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert mask_of(tmp_path, "eye1").name == "eye1_disc.png"  # sorted before it: eye10_disc.png, eye1_b_disc.png
    assert mask_of(tmp_path, "eye1_b").name == "eye1_b_disc.png"
    assert mask_of(tmp_path, "eye2").name == "eye2.png" and mask_of(tmp_path, "eye3").name == "eye3-od.tif"
    assert mask_of(tmp_path, "eye4") is None and mask_of(tmp_path, "eye") is None
    (tmp_path / "eye4_mask.gif").write_bytes(b"")  # a file added later is found
    assert mask_of(tmp_path, "eye4").name == "eye4_mask.gif"


def test_a_disc_far_from_the_size_of_its_cameras_others_is_flagged_for_a_look():
    from retinaseg.measure_batch import check_discs

    def row(stem, disc, size="3504x2336", fov=3300.0, rivals=0):
        return {"stem": stem, "photo_size": size, "disc_diameter_px": disc, "fov_diameter_px": fov,
                "disc_rivals": rivals}

    camera = [row(f"eye{i}", d) for i, d in enumerate([330, 350, 340, 360, 345, 200])]  # eye5: a fragment
    camera[1]["disc_rivals"] = 1  # a lesion the size of a disc beside it
    few = [row(f"small{i}", d, "565x584", 540.0) for i, d in enumerate([70, 30])]  # too few to compare
    no_disc = [row("nodisc", float("nan"), rivals=float("nan")), {"stem": "failed", "status": "failed"}]
    notes = []
    check_discs(camera + few + no_disc, notes.append)
    flagged = [r["stem"] for r in camera + few + no_disc if r["disc_check"]]
    assert flagged == ["eye1", "eye5"]
    assert camera[-1]["disc_check"] == ("disc 0.58 times the median of the 6 3504x2336 photos with a disc: check its "
                                        "overlay")
    assert camera[1]["disc_check"] == "1 other region(s) would pass as a disc: check its overlay"
    assert notes == [f"check: eye1: {camera[1]['disc_check']}", f"check: eye5: {camera[-1]['disc_check']}"]
    converging = [row("eye6", 340), row("eye7", 340)]
    converging[0]["disc_vessel_ratio"], converging[1]["disc_vessel_ratio"] = 0.8, 1.2
    check_discs(converging, notes.append)
    assert converging[0]["disc_check"] == ("the vessels do not converge on it (ring / FOV vessel density 0.80): check "
                                           "its overlay") and converging[1]["disc_check"] == ""
    from retinaseg.measure_batch import measured_line

    rows = [{**r, "status": "ok"} for r in camera] + [{"stem": "failed", "status": "failed"}]
    assert measured_line(rows) == "6 ok, 0 partial, 1 failed, 2 disc(s) to check (disc_check)"


def test_the_vessel_density_around_the_disc_over_the_fovs_is_above_1_where_the_vessels_converge():
    from dataclasses import replace

    labels, prob = radial_map([4.0] * 6, [6.0] * 6)
    rows, cols = np.indices(labels.shape)
    fov = np.hypot(rows - CENTRE[0], cols - CENTRE[1]) < 4.5 * DD
    at_the_disc = measure(labels, known_disc(), fov, prob).values["disc_vessel_ratio"]
    between = math.radians(15)  # halfway between two of the twelve spokes, 3 DD out: a lesion taken for the disc
    away = replace(known_disc(), row=CENTRE[0] + 3 * DD * math.sin(between), col=CENTRE[1] + 3 * DD * math.cos(between))
    assert at_the_disc > 1.5 and measure(labels, away, fov, prob).values["disc_vessel_ratio"] < 1
    assert math.isnan(measure(labels, Disc("not found", "none"), fov, prob).values["disc_vessel_ratio"])


def test_label_maps_pair_with_the_photo_whose_stem_they_begin_before_a_separator(tmp_path):
    from retinaseg.measure_batch import items_of_folders

    maps, photos = tmp_path / "maps", tmp_path / "photos"
    maps.mkdir(), photos.mkdir()
    for name in ("01_test.tif", "eye1.png", "eye1_b.png"):
        (photos / name).write_bytes(b"")
    for name in ("01_test_AVmanual.png", "eye1.png", "eye1_b_av.png", "eye12.png", "notes.txt"):
        (maps / name).write_bytes(b"")
    paired = {map_path.name: (stem, photo and photo.name) for stem, photo, map_path, _ in
              items_of_folders(maps, photos)}
    assert paired == {"01_test_AVmanual.png": ("01_test", "01_test.tif"), "eye1.png": ("eye1", "eye1.png"),
                      "eye1_b_av.png": ("eye1_b", "eye1_b.png"), "eye12.png": ("eye12", None)}


def test_measure_takes_the_fov_as_the_run_took_it(cli, tmp_path, fake_models):
    """FOV masks given to `run` (--fov-dir) and the diameter of crops (--raw-fov-diameter) are measured with too, in
    `run --measure` and in a later `measure` of the folder: the densities and the fractal dimension's boxes follow
    the FOV the maps were made in, not one estimated again."""
    photos, masks, crops = tmp_path / "photos", tmp_path / "masks", tmp_path / "crops"
    for folder in (photos, masks, crops):
        folder.mkdir()
    iio.imwrite(photos / "eye.png", synthetic_fundus(256, seed=3).image_uint8())
    square = np.zeros((256, 256), np.uint8)
    square[40:200, 50:210] = 255
    iio.imwrite(masks / "eye_mask.png", square)
    out = tmp_path / "out"
    command = ["run", "-q", "-m", "dark-vessels", "--fov-dir", str(masks), "--measure", str(photos), str(out)]
    result = cli.invoke(retinaseg_cli, command)
    assert result.exit_code == 0 and "1 of 1 map(s) have no probabilities (`retinaseg run --save-prob`)" \
        in result.output
    row = next(csv.DictReader(open(out / "measurements.csv")))
    assert float(row["fov_diameter_px"]) == 160
    vessels = iio.imread(out / "raw_pre" / "eye.png") > 0
    assert float(row["density_fov_all"]) == pytest.approx(vessels[square > 0].mean(), abs=1e-4)
    again = cli.invoke(retinaseg_cli, ["measure", str(out), "-q"])
    assert again.exit_code == 0 and "measured before" in again.output  # the same FOV: the rows reused
    masks.rename(tmp_path / "moved")
    gone = cli.invoke(retinaseg_cli, ["measure", str(out), "-q"])
    assert gone.exit_code != 0 and "are gone; give `retinaseg measure` --fov-dir" in gone.output
    moved = cli.invoke(retinaseg_cli, ["measure", str(out), "-q", "--fov-dir", str(tmp_path / "moved")])
    assert moved.exit_code == 0, moved.output
    assert float(next(csv.DictReader(open(out / "measurements.csv")))["fov_diameter_px"]) == 160
    iio.imwrite(crops / "crop.png", synthetic_fundus(512, seed=3).image_uint8()[128:384, 128:384])
    out = tmp_path / "out-crops"
    command = ["run", "-q", "-m", "dark-vessels", "--raw-fov-diameter", "470", "--measure", str(crops), str(out)]
    assert cli.invoke(retinaseg_cli, command).exit_code == 0
    assert float(next(csv.DictReader(open(out / "measurements.csv")))["fov_diameter_px"]) == 470
    result = cli.invoke(retinaseg_cli, ["measure", str(out), "-q", "--overwrite"])
    assert float(next(csv.DictReader(open(out / "measurements.csv")))["fov_diameter_px"]) == 470, result.output


def test_a_disc_models_maps_are_not_measured_as_vessels(cli, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    iio.imwrite(photos / "eye.png", synthetic_fundus(256, seed=3).image_uint8())
    out = tmp_path / "out"
    assert cli.invoke(retinaseg_cli, ["run", "-q", "-m", "disc", str(photos), str(out)]).exit_code == 0
    result = cli.invoke(retinaseg_cli, ["measure", str(out), "-q"])
    assert result.exit_code == 1 and "its maps are optic disc masks ('disc'), not vessel maps" in result.output
    assert not (out / "measurements.csv").exists()
    result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "disc", "--measure", str(photos), str(tmp_path / "o2")])
    assert result.exit_code == 2 and "a disc model's maps are discs" in result.output
