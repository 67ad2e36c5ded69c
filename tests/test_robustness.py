"""No traceback and no silent wrong answer, whatever the input, the options or the disk (issue 36)."""
import io
import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import retinaseg.inference.runner as runner_module
from retinaseg.checkpoint import save_checkpoint
from retinaseg.cli import cli as retinaseg_cli
from retinaseg.errors import ImageReadError
from retinaseg.io import atomic
from retinaseg.io.images import image_size, read_photo
from retinaseg.synthetic import synthetic_fundus

from test_images import _png_header_only


def run(cli, *args):
    return cli.invoke(retinaseg_cli, ["run", "-q", *map(str, args)])


def no_traceback(result):
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output


# -- inputs ---------------------------------------------------------------------------------------------------------

def test_a_symlink_loop_fails_alone_in_a_folder_and_as_a_file(cli, tmp_path, photo_folder, fake_models):
    os.symlink(photo_folder / "loop_b.png", photo_folder / "loop_a.png")
    os.symlink(photo_folder / "loop_a.png", photo_folder / "loop_b.png")
    result = run(cli, "-m", "dark-vessels", photo_folder, tmp_path / "out")
    no_traceback(result)
    assert result.exit_code == 1 and "3 ok, 0 skipped, 2 failed" in result.output, result.output
    assert sum("loop_a.png: symbolic link loop" in line for line in result.output.splitlines()) == 1
    result = run(cli, "-m", "dark-vessels", photo_folder / "loop_a.png", photo_folder / "a.png", tmp_path / "out2")
    no_traceback(result)
    assert result.exit_code == 1 and "1 ok, 0 skipped, 1 failed" in result.output, result.output


def test_a_broken_symlink_is_named_as_such(tmp_path):
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    with pytest.raises(ImageReadError, match="link.png: broken symbolic link"):
        read_photo(tmp_path / "link.png")


def _cmyk_jpeg_with_profile(path, rgb: np.ndarray, profile: bytes) -> None:
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95, icc_profile=profile)


@pytest.mark.parametrize("kind", ["cmyk-jpeg", "cmyk-jpeg-bad-profile", "cmyk-tiff", "ycbcr-tiff", "jpeg-tiff",
                                  "palette-png", "la-png", "palette-tiff"])
def test_colour_spaces_are_converted_to_rgb(tmp_path, fundus, kind):
    rgb = fundus.image_uint8()
    path = tmp_path / ("x.tif" if "tiff" in kind else "x.png" if "png" in kind else "x.jpg")
    tolerance = 0.02
    if kind == "cmyk-jpeg":
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    elif kind == "cmyk-jpeg-bad-profile":  # a damaged ICC profile: the plain CMYK formula, not a failure
        _cmyk_jpeg_with_profile(path, rgb, b"not an ICC profile")
    elif kind == "cmyk-tiff":
        Image.fromarray(rgb).convert("CMYK").save(path)
    elif kind == "ycbcr-tiff":
        Image.fromarray(rgb).convert("YCbCr").save(path)
    elif kind == "jpeg-tiff":
        Image.fromarray(rgb).save(path, compression="jpeg", quality=95)
    elif kind == "palette-png":
        Image.fromarray(rgb).quantize(256).save(path)
        tolerance = 0.03
    elif kind == "la-png":
        Image.fromarray(rgb[..., 1]).convert("LA").save(path)
        rgb = np.repeat(rgb[..., 1:2], 3, axis=-1)
    elif kind == "palette-tiff":
        indices = (rgb[..., 1] // 16).astype(np.uint8)
        colormap = np.zeros((3, 256), np.uint16)
        colormap[:, :16] = (np.arange(16) * 16 * 257)[None]
        tifffile.imwrite(path, indices, photometric="palette", colormap=colormap)
        rgb = np.repeat((indices * 16)[..., None], 3, axis=-1)
        tolerance = 1e-3
    photo = read_photo(path)
    assert photo.shape == rgb.shape
    assert np.abs(photo - rgb / 255.0).mean() < tolerance, (kind, np.abs(photo - rgb / 255.0).mean())


def test_inverted_grey_tiff_is_turned_back(tmp_path, fundus):
    grey = fundus.image_uint8()[..., 1]
    tifffile.imwrite(tmp_path / "w.tif", 255 - grey, photometric="miniswhite")
    assert np.allclose(read_photo(tmp_path / "w.tif")[..., 0], grey / 255.0)


@pytest.mark.parametrize("values, problem", [
    (np.full((32, 32), np.nan, np.float32), "NaN"),
    (np.linspace(-1, 1, 32 * 32, dtype=np.float32).reshape(32, 32), "below 0"),
    (np.linspace(-5, 5, 32 * 32).astype(np.int16).reshape(32, 32), "negative"),
])
def test_pixels_of_unknown_scale_are_refused_not_guessed(tmp_path, values, problem):
    tifffile.imwrite(tmp_path / "x.tif", values)
    with pytest.raises(ImageReadError, match=problem):
        read_photo(tmp_path / "x.tif")


def test_float_tiffs_in_unit_range_are_read_as_they_are(tmp_path, fundus):
    rgb = fundus.image_uint8() / np.float32(255)
    tifffile.imwrite(tmp_path / "f.tif", rgb.astype(np.float32), photometric="rgb")
    assert np.allclose(read_photo(tmp_path / "f.tif"), rgb, atol=1e-6)


def test_a_cmyk_photo_segments_like_its_rgb_copy(cli, tmp_path, fake_models):
    rgb = synthetic_fundus(192, seed=3).image_uint8()
    (tmp_path / "in").mkdir()
    Image.fromarray(rgb).save(tmp_path / "in" / "rgb.jpg", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "in" / "cmyk.jpg", quality=95)
    result = run(cli, "-m", "dark-vessels", tmp_path / "in", tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    shares = {r["stem"]: r["vessel_fraction"] for r in report["images"]}
    assert abs(shares["cmyk"] - shares["rgb"]) < 0.01, shares


def test_the_pixel_limit_its_message_and_its_override_agree(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(15_000, 15_000))  # 225 megapixels, under the default limit of 250
    with pytest.raises(ImageReadError) as error:
        read_photo(path)
    assert "too large" not in str(error.value) and "truncated or corrupt" in str(error.value)
    monkeypatch.setenv("RETINASEG_MAX_PIXELS", "200000000")
    with pytest.raises(ImageReadError, match=r"225 megapixels; the limit is 200; set RETINASEG_MAX_PIXELS"):
        read_photo(path)
    monkeypatch.setenv("RETINASEG_MAX_PIXELS", "lots")
    with pytest.raises(Exception, match="RETINASEG_MAX_PIXELS='lots': expected a whole number"):
        read_photo(path)


def test_a_100_megapixel_header_raises_no_decompression_bomb_warning(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(_png_header_only(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size(path) == (10_000, 10_000)


def test_a_malformed_pixel_limit_is_one_error_for_the_run(cli, tmp_path, photo_folder, fake_models, monkeypatch):
    monkeypatch.setenv("RETINASEG_MAX_PIXELS", "-1")
    result = run(cli, "-m", "dark-vessels", photo_folder, tmp_path / "out")
    assert result.exit_code == 1 and result.output.count("RETINASEG_MAX_PIXELS") == 1, result.output


def test_a_file_name_with_a_newline_stays_on_one_line(cli, tmp_path, photo_folder, fake_models):
    (photo_folder / "bad\nname.png").write_text("not a PNG")
    result = run(cli, "-m", "dark-vessels", photo_folder, tmp_path / "out")
    failed = [line for line in result.output.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "bad\\nname.png" in failed[0] and "not a readable image" in failed[0], result.output


def _tiff_with_a_bad_tag(path, image) -> None:
    """A TIFF whose ImageDescription points past the end of the file: tifffile logs a line and reads on."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, description="a description")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        start = ifd + 2 + 12 * entry
        if struct.unpack("<H", data[start:start + 2])[0] == 270:
            data[start + 8:start + 12] = struct.pack("<I", 10 ** 9)
    path.write_bytes(bytes(data))


def test_tifffile_lines_that_name_no_file_are_not_printed(cli, tmp_path, photo_folder, fake_models, capfd):
    _tiff_with_a_bad_tag(photo_folder / "tagged.tif", synthetic_fundus(96, seed=5).image_uint8())
    result = run(cli, "-m", "dark-vessels", photo_folder, tmp_path / "out")
    assert result.exit_code == 0 and "4 ok" in result.output, result.output
    captured = capfd.readouterr()
    assert "TiffTag" not in result.output + captured.out + captured.err


# -- outputs --------------------------------------------------------------------------------------------------------

def test_an_output_folder_that_cannot_be_made_ends_with_an_error_and_the_summary(cli, tmp_path, photo_folder,
                                                                                  fake_models):
    (tmp_path / "a-file").write_text("")
    result = run(cli, "-m", "dark-vessels", photo_folder, tmp_path / "a-file" / "out")
    no_traceback(result)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 2, result.output
    assert lines[0].startswith("error: ") and "cannot write the output folder" in lines[0]
    assert lines[1].startswith("0 ok, 0 skipped, 3 failed")


@pytest.mark.parametrize("when", ["start", "end"])
def test_a_run_record_that_cannot_be_written_ends_with_an_error_and_the_summary(cli, tmp_path, photo_folder,
                                                                                 fake_models, monkeypatch, when):
    real, calls = runner_module.write_json, []

    def full_disk(path, data):
        calls.append(path)
        if when == "start" or data["finished"]:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(runner_module, "write_json", full_disk)
    result = run(cli, "-m", "dark-vessels", photo_folder, tmp_path / "out")
    no_traceback(result)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and "No space left on device" in lines[-2] and lines[-2].startswith("error: ")
    assert lines[-1].startswith("0 ok, 0 skipped, 3 failed" if when == "start" else "3 ok, 0 skipped, 0 failed")


def test_temp_files_of_killed_runs_are_removed_and_live_ones_kept(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    (out / "overlay").mkdir(parents=True)
    host = atomic._HOST
    dead = out / "overlay" / f".06_test.png.{host}-999999999.partial"
    live = out / "overlay" / f".07_test.png.{host}-{os.getpid()}.partial"
    elsewhere = out / "overlay" / ".08_test.png.otherhost-12.partial"
    record = out / f".run.json.{host}-999999998.partial"
    for path in (dead, live, elsewhere, record):
        path.write_bytes(b"half")
    result = run(cli, "-m", "dark-vessels", photo_folder, out)
    assert result.exit_code == 0 and "removed 2 temporary file(s)" in result.output, result.output
    assert not dead.exists() and not record.exists() and live.exists() and elsewhere.exists()


def test_outputs_of_another_model_are_not_skipped_as_done(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    assert run(cli, "-m", "dark-vessels", photo_folder, out).exit_code == 0
    result = run(cli, "-m", "halves-av", photo_folder, out)
    assert result.exit_code == 1 and " ok, " not in result.output, result.output
    assert "were made otherwise (other model" in result.output and "--overwrite" in result.output
    assert json.loads((out / "run.json").read_text())["model"] == "dark-vessels"
    result = run(cli, "-m", "dark-vessels", "--resize", "160x160", photo_folder, out)
    assert result.exit_code == 1 and "settings" in result.output, result.output
    result = run(cli, "-m", "halves-av", "--overwrite", photo_folder, out)
    assert result.exit_code == 0 and "3 ok" in result.output
    assert run(cli, "-m", "halves-av", "--save-prob", photo_folder, out).exit_code == 0  # prob/ is added, not redone


def test_outputs_of_a_killed_run_are_checked_too(cli, tmp_path, photo_folder, fake_models, monkeypatch):
    """run.json is written before the first photo, so a run killed before its end still says what made them."""
    out = tmp_path / "out"
    assert run(cli, "-m", "dark-vessels", photo_folder, out).exit_code == 0
    report = json.loads((out / "run.json").read_text())
    for record in report["images"]:
        record["status"] = "pending"  # as a run killed before its end leaves them
    (out / "run.json").write_text(json.dumps(report))
    assert run(cli, "-m", "halves-av", photo_folder, out).exit_code == 1


def test_inputs_inside_the_output_folder_are_named_as_the_reason(cli, tmp_path, photo_folder, fake_models):
    result = run(cli, "-m", "dark-vessels", photo_folder, photo_folder)
    assert result.exit_code == 1
    assert "its 3 photo(s) sit inside the output folder" in result.output, result.output


# -- options --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    ["--batch-size", "0"], ["--batch-size", "-3"], ["--overlap", "1"], ["--device", "tpu"],
    ["--tile-size", "100000"], ["--tile-size", "7"], ["--tile-size", "0"], ["--workers", "-1"],
])
def test_bad_run_options_are_usage_errors(cli, tmp_path, photo_folder, fake_models, options):
    result = run(cli, "-m", "dark-vessels", *options, photo_folder, tmp_path / "out")
    assert result.exit_code == 2 and "Error: Invalid value" in result.output, result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, fragment", [
    (["--batch-size", "0"], "--batch-size"), (["--iterations", "0"], "--iterations"), (["--epochs", "0"], "--epochs"),
    (["--patch-size", "7"], "--patch-size"), (["--patch-size", "100"], "multiple of 16"), (["--lr", "-1"], "--lr"),
    (["--model-option", "nosuch=3"], "has no option 'nosuch'; it accepts: width=16"),
    (["--model-option", "width=abc"], "width='abc': expected a whole number"),
    (["--loss-option", "alpha=1"], "loss 'bce-dice' has no option 'alpha'; it accepts: bce_weight=1.0"),
    (["--dataset-option", "images=x"], "dataset 'drive' has no option 'images'; it accepts: none"),
    (["--device", "tpu"], "--device"),
])
def test_bad_train_options_are_usage_errors(cli, tmp_path, options, fragment):
    result = cli.invoke(retinaseg_cli, ["train", "-m", "vesselnet", "-d", "drive", "--data-root", str(tmp_path),
                                        "-o", str(tmp_path / "run"), "-q", *options])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run" / "best.pt").exists()


def test_eval_checks_dataset_options(cli, tmp_path, fake_models):
    result = cli.invoke(retinaseg_cli, ["eval", "-d", "folder", "--data-root", str(tmp_path), "-m", "dark-vessels",
                                        "--dataset-option", "labelz=x"])
    assert result.exit_code == 2 and "it accepts: images='images', labels='labels'" in result.output, result.output


# -- messages -------------------------------------------------------------------------------------------------------

class Unsafe:
    pass


def test_unsafe_and_corrupt_weights_are_refused_with_whole_sentences(cli, tmp_path, photo_folder):
    torch.save({"format": "retinaseg-checkpoint/1", "config": {}, "state_dict": {}, "x": Unsafe()}, tmp_path / "u.pt")
    save_checkpoint(tmp_path / "good.pt", {}, {"model": "vesselnet"})
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    expected = {"u.pt": "holds pickled Python objects, which could run code",
                "cut.pt": "not a readable weights file (truncated or corrupt)"}
    for name, fragment in expected.items():
        result = run(cli, "-w", tmp_path / name, photo_folder, tmp_path / "out")
        assert result.exit_code == 1 and fragment in result.output, result.output
        line = result.output.strip()
        assert line.count("\n") == 0 and line.endswith(("`retinaseg train`", "packed from them")), line


# -- fuzz -----------------------------------------------------------------------------------------------------------

def _mutations(seed: int, count: int):
    """(name, bytes): small PNG, JPEG and TIFF photos, each cut, overwritten, or with bytes flipped, inserted or
    dropped, at seeded places."""
    rng = np.random.default_rng(seed)
    photo = synthetic_fundus(48, seed=seed).image_uint8()
    originals = {}
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif")):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format=fmt)
        originals[suffix] = buffer.getvalue()
    for index in range(count):
        suffix = list(originals)[index % 3]
        data = bytearray(originals[suffix])
        kind = rng.integers(5)
        at = int(rng.integers(len(data)))
        if kind == 0:
            data = data[:at]
        elif kind == 1:
            for place in rng.integers(len(data), size=int(rng.integers(1, 8))):
                data[place] = int(rng.integers(256))
        elif kind == 2:
            data[at:at] = rng.integers(256, size=int(rng.integers(1, 64))).astype(np.uint8).tobytes()
        elif kind == 3:
            del data[at:at + int(rng.integers(1, 64))]
        else:
            end = min(len(data), at + int(rng.integers(4, 256)))
            data[at:end] = bytes(end - at)
        yield f"m{index:03d}{suffix}", bytes(data)


# The fuzz run is a real process, so what it prints is what a user sees (pytest would otherwise catch warnings)
_RUN_WITH_FAKE_MODELS = ("import sys; sys.path.insert(0, sys.argv[1]); from conftest import FakeModelPlugin\n"
                         "from retinaseg.plugins import load_plugins, pm; load_plugins()\n"
                         "pm.register(FakeModelPlugin(), name='fake-model-plugin')\n"
                         "from retinaseg.cli import cli; cli(sys.argv[2:], prog_name='retinaseg')\n")


def test_fuzzed_files_each_end_ok_or_with_exactly_one_failed_line(tmp_path):
    folder = tmp_path / "fuzz"
    folder.mkdir()
    names = []
    for name, data in _mutations(seed=36, count=300):
        (folder / name).write_bytes(data)
        names.append(name)
    command = [sys.executable, "-c", _RUN_WITH_FAKE_MODELS, str(Path(__file__).parent), "run", "-q", "-m",
               "dark-vessels", str(folder), str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()
    assert len(summary) == 1 and " ok, 0 skipped, " in summary[0], done.stdout
    lines = done.stderr.strip().splitlines()
    records = {r["stem"]: r for r in json.loads((tmp_path / "out" / "run.json").read_text())["images"]}
    for name in names:
        failed = [line for line in lines if line.startswith("failed: ") and f"{name}:" in line]
        status = records[name[:-4]]["status"]
        assert (status == "ok" and not failed) or (status == "failed" and len(failed) == 1), (name, status, failed)
    stray = [line for line in lines if not line.startswith(("failed: ", "warning: "))]
    assert not stray, stray
    assert sum(r["status"] == "ok" for r in records.values()) > 30  # the mutations leave some photos readable
