"""`retinaseg train` under torchrun: real processes joined by gloo, as on a CPU cluster."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from retinaseg.checkpoint import load_checkpoint
from retinaseg.cli import cli as retinaseg_cli

SETTINGS = ["-m", "unet", "-d", "folder", "--dataset-option", "label_suffix=_gt", "--model-option", "width=4",
            "--iterations", "4", "--batch-size", "4", "--patch-size", "32", "--val-fraction", "0.34",
            "--device", "cpu", "--fov-diameter", "60", "--seed", "3"]

# Runs the CLI as torchrun's script, and keeps each process's weights after every checkpoint: only the first
# process writes the run folder, so this is how the test sees the others'.
EACH_PROCESS_WEIGHTS = """
import os, sys
from pathlib import Path
import torch
from retinaseg.training import engine
from retinaseg.cli import cli

real = engine._checkpoint

def keep_weights(run, *args, **kwargs):
    real(run, *args, **kwargs)
    folder = Path(os.environ["EACH_PROCESS_WEIGHTS"])
    torch.save(run.model.state_dict(), folder / f"rank-{os.environ['RANK']}.pt")

engine._checkpoint = keep_weights
cli(sys.argv[1:], prog_name="retinaseg")
"""


def torchrun(tmp_path, processes, *args, wait=True):
    script = tmp_path / "each_process_weights.py"
    script.write_text(EACH_PROCESS_WEIGHTS)
    weights = tmp_path / "each-process"
    weights.mkdir(exist_ok=True)
    env = {**os.environ, "EACH_PROCESS_WEIGHTS": str(weights), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(script), "train", *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def kill_all_running(script):
    """SIGKILL to every process whose command line names the script: torchrun starts its workers in sessions
    of their own, so killing its process group would leave them running."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(script).encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # gone already


def rows(run):
    return list(csv.DictReader(open(run / "metrics.csv")))


def test_two_processes_train_one_model_like_one_process_with_the_same_global_batch(cli, tmp_path, folder_dataset):
    single, double = tmp_path / "single", tmp_path / "double"
    result = cli.invoke(retinaseg_cli, ["train", *SETTINGS, "--data-root", str(folder_dataset), "-o", str(single),
                                        "--epochs", "2", "-q"])
    assert result.exit_code == 0, result.output
    done = torchrun(tmp_path, 2, *SETTINGS, "--data-root", str(folder_dataset), "-o", str(double), "--epochs", "2")
    if done.returncode != 0 and "terminate called without an active exception" in done.stderr:
        # seen once in about 30 runs on a 2-core machine (2026-12-02): one process aborted mid-epoch inside torch's
        # C++ (gloo), not in retinaseg's code; what this test compares needs a finished run, so it runs once more
        shutil.rmtree(double)
        done = torchrun(tmp_path, 2, *SETTINGS, "--data-root", str(folder_dataset), "-o", str(double), "--epochs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    # one writer: one set of files, one row per epoch, one summary line
    assert sorted(p.name for p in double.iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.csv"]
    assert [r["epoch"] for r in rows(double)] == ["1", "2"]
    assert done.stdout.count("done: 2 epochs") == 1
    # both processes end with the same weights (BatchNorm statistics included), which the checkpoint holds
    each = [torch.load(tmp_path / "each-process" / f"rank-{rank}.pt") for rank in (0, 1)]
    saved = load_checkpoint(double / "last.pt")
    for key, value in each[0].items():
        assert torch.equal(value, each[1][key]), key
        assert torch.allclose(value.float(), saved["state_dict"][key].float()), key
    assert saved["info"]["global_batch_size"] == 4 and saved["info"]["processes"] == 2
    assert len(saved["training"]["generators"]) == 2
    # same start, same global batch of different patches: the first epoch's loss agrees within sampling noise
    first = [float(rows(run)[0]["loss"]) for run in (single, double)]
    assert abs(first[0] - first[1]) < 0.05 * first[0], first
    assert 0 <= float(rows(double)[-1]["val_f1"]) <= 1


def test_a_killed_two_process_run_resumes(tmp_path, folder_dataset):
    run = tmp_path / "run"
    common = [*SETTINGS, "--data-root", str(folder_dataset), "-o", str(run)]
    started = torchrun(tmp_path, 2, *common, "--epochs", "200", wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "last.pt").exists() and len(rows(run)) >= 2):
        time.sleep(0.2)
    kill_all_running(tmp_path / "each_process_weights.py")  # torchrun and both training processes, mid-epoch
    started.wait()
    reached = load_checkpoint(run / "last.pt")["training"]["epoch"]
    assert reached >= 1
    done = torchrun(tmp_path, 2, *common, "--epochs", str(reached + 2), "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [int(r["epoch"]) for r in rows(run)] == list(range(1, reached + 3))
    each = [torch.load(tmp_path / "each-process" / f"rank-{rank}.pt") for rank in (0, 1)]
    assert all(torch.equal(value, each[1][key]) for key, value in each[0].items())
    # the processes' number is part of the run
    alone = subprocess.run([sys.executable, "-m", "retinaseg", "train", *common, "--epochs", str(reached + 3),
                            "--resume"], capture_output=True, text=True, timeout=300)
    assert alone.returncode == 1 and "trained in 2 process(es)" in alone.stderr and "Traceback" not in alone.stderr


def test_a_global_batch_that_does_not_split_is_refused(tmp_path, folder_dataset):
    done = torchrun(tmp_path, 2, *SETTINGS, "--batch-size", "3", "--data-root", str(folder_dataset),
                    "-o", str(tmp_path / "run"), "--epochs", "1")
    assert done.returncode != 0 and "--batch-size 3 is the global batch" in done.stdout + done.stderr


def test_a_model_with_its_own_training_step_is_refused_under_torchrun(tmp_path, folder_dataset):
    from retinaseg.errors import RetinasegError
    from retinaseg.training.config import TrainConfig
    from retinaseg.training.distributed import World
    from retinaseg.training.engine import _check

    config = TrainConfig(model="av-fusion", datasets=["folder"], data_root=str(folder_dataset), out=str(tmp_path))
    _check(config, resume=False, world=World())
    with pytest.raises(RetinasegError, match="own training step.*one process"):
        _check(config, resume=False, world=World(rank=1, size=2))
