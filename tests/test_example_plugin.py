"""The third-party example package in examples/retinaseg-frangi: installed, discovered, listed and run."""
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from retinaseg.synthetic import synthetic_fundus

from conftest import f1

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "retinaseg-frangi"


@pytest.fixture(scope="module")
def installed():
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e",
                    str(EXAMPLE)], check=True, capture_output=True)
    return True


def retinaseg(*args):
    return subprocess.run([sys.executable, "-m", "retinaseg", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_example_plugin_is_discovered_and_listed(installed):
    result = retinaseg("plugins")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("frangi "))
    assert "retinaseg-frangi 0.1.0" in line


def test_run_with_the_example_model_segments_a_photo(installed, tmp_path):
    sample = synthetic_fundus(300, seed=31)
    (tmp_path / "in").mkdir()
    iio.imwrite(tmp_path / "in" / "eye.png", sample.image_uint8())
    result = retinaseg("run", "-q", "--model", "frangi", tmp_path / "in", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    mask = iio.imread(tmp_path / "out" / "raw_pre" / "eye.png") > 0
    assert f1(mask, sample.vessels, sample.fov) > 0.5
    assert json.loads((tmp_path / "out" / "run.json").read_text())["model"] == "frangi"
