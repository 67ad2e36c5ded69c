"""`retinaseg run --executor ray` on a local Ray instance: the local runner's files, byte for byte (issue 34)."""
import json
import subprocess
import sys

import imageio.v3 as iio
import pytest

from retinaseg.synthetic import synthetic_fundus

pytest.importorskip("ray", reason="the [ray] extra is not installed (make test installs it)")


def retinaseg(*args):
    return subprocess.run([sys.executable, "-m", "retinaseg", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_ray_writes_what_the_local_runner_writes_and_reports_a_corrupt_file(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        iio.imwrite(photos / f"p{i}.png", synthetic_fundus(200, seed=i).image_uint8())
    (photos / "broken.png").write_text("not a PNG")
    masks = tmp_path / "masks"  # FOV masks given: the actors find each photo's as the local runner does
    masks.mkdir()
    for i in range(4):
        iio.imwrite(masks / f"p{i}_mask.png", (synthetic_fundus(200, seed=i).fov * 255).astype("uint8"))
    iio.imwrite(masks / "broken_mask.png", (synthetic_fundus(200).fov * 255).astype("uint8"))
    local = retinaseg("run", "-q", "--save-prob", "--measure", "--fov-dir", masks, photos, tmp_path / "local")
    remote = retinaseg("run", "-q", "--save-prob", "--measure", "--fov-dir", masks, "--executor", "ray", "--workers",
                       "2", photos, tmp_path / "ray")
    for result in (local, remote):
        assert result.returncode == 1 and "4 ok, 0 skipped, 1 failed" in result.stdout, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and "have no probabilities" not in result.stderr
        failed = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
        assert len(failed) == 1 and "broken.png" in failed[0]
    for folder, suffix in (("raw_pre", "png"), ("small_pre", "png"), ("prob", "tif")):
        for i in range(4):
            name = f"{folder}/p{i}.{suffix}"
            assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    # the actors measured the maps: the same table, one row per photo segmented
    tables = [(tmp_path / run / "measurements.csv").read_text().replace(str(tmp_path / run), "OUT")
              for run in ("local", "ray")]
    assert tables[0] == tables[1] and len(tables[0].splitlines()) == 5 and "measured 4 photo(s)" in remote.stdout
    report = {r["stem"]: r for r in json.loads((tmp_path / "ray" / "run.json").read_text())["images"]}
    assert report["p0"]["status"] == "ok" and report["p0"]["raw_size"] == [200, 200]
    again = retinaseg("run", "-q", "--save-prob", "--fov-dir", masks, "--executor", "ray", photos, tmp_path / "ray")
    assert "0 ok, 4 skipped, 1 failed" in again.stdout, again.stdout + again.stderr  # resumes; Ray not even started
