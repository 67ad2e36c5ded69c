"""The third-party example package in examples/retinaseg-frangi: installed, discovered, listed and run.

It is installed into a temporary folder put on PYTHONPATH, not into the environment running the tests, so `make
test` leaves the user's .venv as it was."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from retinaseg.synthetic import synthetic_fundus

from conftest import f1

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "retinaseg-frangi"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The environment of a process that has the example installed: its folder on PYTHONPATH."""
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("source") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))  # builds leave files
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


def retinaseg(environment, *args):
    return subprocess.run([sys.executable, "-m", "retinaseg", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=environment)


def test_the_example_is_not_installed_into_the_test_environment(installed):
    from importlib.metadata import PackageNotFoundError, version

    with pytest.raises(PackageNotFoundError):
        version("retinaseg-frangi")


def test_example_plugin_is_discovered_and_listed(installed):
    result = retinaseg(installed, "plugins")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("frangi "))
    assert "retinaseg-frangi 0.1.0" in line
    code = ("import sys; from click.testing import CliRunner; from retinaseg.cli import cli; "
            "assert 'frangi' in CliRunner().invoke(cli, ['plugins']).output; print('torch' in sys.modules)")
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=installed)
    assert listed.stdout.strip() == "False", listed.stdout + listed.stderr  # it names its network with Lazy


def test_run_with_the_example_model_segments_a_photo(installed, tmp_path):
    sample = synthetic_fundus(300, seed=31)
    (tmp_path / "in").mkdir()
    iio.imwrite(tmp_path / "in" / "eye.png", sample.image_uint8())
    result = retinaseg(installed, "run", "-q", "--model", "frangi", tmp_path / "in", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    mask = iio.imread(tmp_path / "out" / "raw_pre" / "eye.png") > 0
    assert f1(mask, sample.vessels, sample.fov) > 0.5
    assert json.loads((tmp_path / "out" / "run.json").read_text())["model"] == "frangi"
