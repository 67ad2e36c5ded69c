"""`retinaseg train` and `retinaseg eval` through the CLI on synthetic datasets; resume; safe loading."""
import csv
import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import layouts
from retinaseg.checkpoint import load_checkpoint, save_checkpoint, weights_dir
from retinaseg.datasets import load_samples
from retinaseg.cli import cli as retinaseg_cli
from retinaseg.errors import CheckpointError
from retinaseg.evaluation.evaluate import evaluate
from retinaseg.inference.segmenter import SegmentConfig, Segmenter
from retinaseg.models import load_model
from retinaseg.synthetic import synthetic_fundus
from retinaseg.training.engine import TrainConfig, _load_images, lr_factor, split_validation

TINY = ["--epochs", "2", "--iterations", "3", "--batch-size", "2", "--patch-size", "32", "--val-fraction", "0.34",
        "--device", "cpu", "--fov-diameter", "60"]


def train(cli, out, data, *extra):
    return cli.invoke(retinaseg_cli, ["train", "-m", "unet", "-d", "folder", "--data-root", str(data), "-o", str(out),
                                      "--dataset-option", "label_suffix=_gt", "--model-option", "width=4", *TINY,
                                      *extra])


def test_train_writes_checkpoints_and_metrics_that_run_and_eval_use(cli, tmp_path, folder_dataset):
    out = tmp_path / "run"
    result = train(cli, out, folder_dataset)
    assert result.exit_code == 0, result.output
    assert {"best.pt", "last.pt", "metrics.csv", "config.json"} <= {p.name for p in out.iterdir()}
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(0 <= float(r["val_f1"]) <= 1 for r in rows)
    checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint["config"]["fov_diameter"] == 60 and checkpoint["config"]["options"]["width"] == 4
    model = load_model("unet", out / "best.pt")
    assert model.fov_diameter == 60
    # run uses it, eval scores it
    pred = tmp_path / "pred"
    result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "unet", "-w", str(out / "best.pt"), "--save-prob",
                                        str(folder_dataset / "images"), str(pred)])
    assert result.exit_code == 0, result.output
    report = json.loads((pred / "run.json").read_text())
    record = report["images"][0]
    assert abs(record["working_size"][0] - record["raw_size"][0] * 60 / record["fov_diameter"]) <= 1
    result = cli.invoke(retinaseg_cli, ["eval", "-d", "folder", "--data-root", str(folder_dataset), "--split",
                                        "training", "--dataset-option", "label_suffix=_gt", "--pred", str(pred),
                                        "--json", str(tmp_path / "e.json"), "--csv", str(tmp_path / "e.csv")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "e.json").read_text())
    assert len(scores["images"]) == 4 and 0 <= scores["mean"]["f1"] <= 1 and "auc_roc" in scores["mean"]
    assert scores["command"].startswith("retinaseg eval -d folder --data-root ") and "--json" in scores["command"]
    assert "mean ± std" in result.output
    discs = tmp_path / "discs"  # a disc model's masks are not scored as vessels
    result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "disc", str(folder_dataset / "images"), str(discs)])
    assert result.exit_code == 0, result.output
    result = cli.invoke(retinaseg_cli, ["eval", "-d", "folder", "--data-root", str(folder_dataset), "--split",
                                        "training", "--dataset-option", "label_suffix=_gt", "--pred", str(discs)])
    assert result.exit_code == 1 and "which segments disc, but dataset folder labels vessel" in result.output


def test_resume_continues_from_last_checkpoint(cli, tmp_path, folder_dataset):
    out = tmp_path / "run"
    assert train(cli, out, folder_dataset).exit_code == 0
    again = train(cli, out, folder_dataset)
    assert again.exit_code == 1 and "--resume" in again.output
    result = train(cli, out, folder_dataset, "--epochs", "3", "--resume")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


def test_fine_tuning_starts_from_a_training_not_an_ensemble(cli, tmp_path, folder_dataset):
    from retinaseg.models import pack_ensemble

    assert train(cli, tmp_path / "run", folder_dataset).exit_code == 0
    best = tmp_path / "run" / "best.pt"
    assert train(cli, tmp_path / "tuned", folder_dataset, "--init-weights", str(best)).exit_code == 0
    pack_ensemble([best, best], tmp_path / "pair.pt")
    result = train(cli, tmp_path / "again", folder_dataset, "--init-weights", str(tmp_path / "pair.pt"))
    assert result.exit_code == 1 and "an ensemble of 2 trainings; fine-tune from one of its members" in result.output


def test_fine_tuning_a_file_packed_to_run_at_another_scale_says_how_to_keep_that_scale(cli, tmp_path,
                                                                                        folder_dataset):
    from retinaseg.checkpoint import pack_checkpoint

    assert train(cli, tmp_path / "run", folder_dataset).exit_code == 0
    best = tmp_path / "run" / "best.pt"
    result = train(cli, tmp_path / "same", folder_dataset, "--init-weights", str(best))
    assert result.exit_code == 0 and "note:" not in result.output  # trained and runs at 60 px, as this run does
    pack_checkpoint(best, tmp_path / "at80.pt", fov_diameter=80)  # as the default: trained at one scale, run at another
    result = train(cli, tmp_path / "tuned", folder_dataset, "--init-weights", str(tmp_path / "at80.pt"))
    assert result.exit_code == 0, result.output
    assert "runs with the FOV 80 px across; this run trains, and its files run, at 60 px" in result.output
    assert f"pack {tmp_path / 'tuned'}/best.pt OUT.pt --fov-diameter 80" in result.output


@pytest.mark.parametrize("extra", [[], ["--ema", "0.9"]], ids=["plain", "moving-average"])
def test_a_killed_run_resumes_to_the_same_weights(cli, tmp_path, folder_dataset, monkeypatch, extra):
    import retinaseg.training.engine as engine

    straight = tmp_path / "straight"
    assert train(cli, straight, folder_dataset, *extra).exit_code == 0

    killed = tmp_path / "killed"
    real_save = engine.save_checkpoint

    def die_at_second_last_save(path, *args, **kwargs):
        if path.name == "last.pt" and (killed / "last.pt").exists():
            raise KeyboardInterrupt  # killed after epoch 2's metrics row, before its checkpoint
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(engine, "save_checkpoint", die_at_second_last_save)
    assert train(cli, killed, folder_dataset, *extra).exit_code != 0
    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    assert len(list(csv.DictReader(open(killed / "metrics.csv")))) == 2
    assert train(cli, killed, folder_dataset, *extra, "--resume").exit_code == 0
    assert [r["epoch"] for r in csv.DictReader(open(killed / "metrics.csv"))] == ["1", "2"]
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(straight / name)["state_dict"]
        b = load_checkpoint(killed / name)["state_dict"]
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_a_moving_average_of_the_weights_is_what_best_pt_keeps(cli, tmp_path, folder_dataset):
    out = tmp_path / "run"
    # no validation split: best.pt is written every epoch, so it must hold the final average
    result = train(cli, out, folder_dataset, "--ema", "0.9", "--val-fraction", "0")
    assert result.exit_code == 0 and "no validation images, so best.pt holds the last epoch" in result.output
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    average = last["training"]["averaged"]
    assert all(torch.equal(best["state_dict"][k], average[f"module.{k}"]) for k in best["state_dict"])
    assert any(not torch.equal(best["state_dict"][k], last["state_dict"][k]) for k in best["state_dict"])
    load_model("unet", out / "best.pt")  # loads like any other weights file
    # resuming must keep the run's own setting
    result = train(cli, out, folder_dataset, "--val-fraction", "0", "--epochs", "3", "--resume")
    assert result.exit_code == 1 and "settings, and these differ: ema was 0.9, now 0.0" in result.output
    result = train(cli, out, folder_dataset, "--ema", "1.5", "--val-fraction", "0", "--epochs", "3", "--resume")
    assert result.exit_code == 2 and "1.5 is not in the range 0<=x<1" in result.output


def test_eval_with_a_model_reports_the_second_observer(cli, tmp_path):
    layouts.drive(tmp_path / "DRIVE")
    result = cli.invoke(retinaseg_cli, ["eval", "-d", "drive", "--data-root", str(tmp_path), "-m", "vesselnet",
                                        "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["second_observer"]["f1"] == 1.0  # the synthetic 2nd manual is a copy of the 1st
    assert "2nd observer" in result.output


def test_eval_can_score_only_the_images_a_training_run_held_out(tmp_path, fake_models):
    layouts.drive(tmp_path / "DRIVE")
    _, samples = load_samples("drive", tmp_path, "training")
    fit, held = split_validation(samples, 0.34, seed=1)
    assert len(held) == 1 and held[0] not in fit  # the same draw `retinaseg train --seed 1 --val-fraction 0.34` makes
    runner = Segmenter(load_model("dark-vessels"), SegmentConfig(device="cpu"))
    result = evaluate("drive", tmp_path, "training", segmenter=runner, ids={held[0].id})
    assert [row["id"] for row in result.rows] == [held[0].id]


def test_lr_schedule_warms_up_then_decays():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10) < 0.05


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/retinaseg-pwned",))


def test_loading_refuses_a_malicious_checkpoint(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "retinaseg-checkpoint/1", "config": {}, "state_dict": {}, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_model("unet", path)
    assert not os.path.exists("/tmp/retinaseg-pwned")
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")


def test_weights_for_another_model_are_refused(tmp_path):
    save_checkpoint(tmp_path / "w.pt", {}, {"model": "linkseg"})
    with pytest.raises(CheckpointError, match="for model 'linkseg'"):
        load_model("unet", tmp_path / "w.pt")


@pytest.mark.parametrize("max_downscale", [None, 0, 1.5])
def test_training_images_have_the_working_size_the_runner_gives_them(folder_dataset, max_downscale):
    from retinaseg.datasets import read_fov
    from retinaseg.inference.rescale import to_working_scale as prepare_for_running
    from retinaseg.io.images import read_photo
    from retinaseg.training.data import load_training_image as prepare_for_training

    _, samples = load_samples("folder", folder_dataset, "training", label_suffix="_gt")
    sample = samples[0]
    trained = prepare_for_training(sample, "vessel", 30, 1, max_downscale)
    photo = read_photo(sample.image)
    ran = prepare_for_running(photo, read_fov(sample, photo), 30, max_downscale=max_downscale)
    assert tuple(trained.image.shape[-2:]) == tuple(ran.work_size)
    capped = max_downscale and ran.diameter / 30 > max_downscale
    assert (trained.image.shape[-1] > round(photo.shape[1] * 30 / ran.diameter)) == bool(capped)


def test_a_run_trained_with_a_shrink_cap_records_it_for_the_runner(cli, tmp_path, folder_dataset):
    out = tmp_path / "run"
    result = train(cli, out, folder_dataset, "--max-downscale", "1.5")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "best.pt")["config"]["max_downscale"] == 1.5
    assert load_model("unet", out / "best.pt").max_downscale == 1.5
    assert train(cli, tmp_path / "bad", folder_dataset, "--max-downscale", "0.5").exit_code == 2


def _sampler(folder_dataset, device):
    from retinaseg.training.data import Augmentation, PatchSampler, load_training_image
    _, samples = load_samples("folder", folder_dataset, "training", label_suffix="_gt")
    images = [load_training_image(s, "vessel", 60, 1) for s in samples]
    return images, PatchSampler(images, 32, Augmentation(), device=device)


def test_patches_are_cut_where_the_sampler_draws_and_repeat_with_the_seed(folder_dataset):
    from retinaseg.training.data import Augmentation
    images, sampler = _sampler(folder_dataset, "cpu")
    first = sampler.sample(4, torch.Generator().manual_seed(3))
    again = sampler.sample(4, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    # unaugmented with an odd side, a patch is the image's own pixels: its target is a crop of the label
    # (zero beyond the border) centred on a vessel pixel
    sampler.augmentation, sampler.vessel_fraction, sampler.patch_size = Augmentation.none(), 1.0, 17
    _, targets, _ = sampler.sample(6, torch.Generator().manual_seed(5))
    assert targets.shape == (6, 1, 17, 17)
    padded = [torch.nn.functional.pad(item.target[0], (8, 8, 8, 8)) for item in images]
    for target in targets[:, 0]:
        assert target[8, 8] > 0.5
        assert any(torch.allclose(target, label[y:y + 17, x:x + 17], atol=1e-5) for label in padded
                   for y in range(label.shape[0] - 16) for x in range(label.shape[1] - 16))


def test_elastic_deformation_bends_the_sampling_grid_smoothly_by_the_drawn_displacements(folder_dataset):
    from retinaseg.training.data import Augmentation

    images, sampler = _sampler(folder_dataset, "cpu")
    sampler.augmentation = Augmentation.none()
    params = sampler._params(torch.Generator().manual_seed(0))
    assert params["warp"] is None  # off unless asked for
    warp = torch.zeros(2, 5, 5)  # (y, x) displacement in pixels at 5x5 control points spanning the patch
    warp[1, 0, 0], warp[0, 4, 4] = 2.0, -1.5
    straight = sampler._grids([(0, params, (20.0, 20.0))], 33)
    bent = sampler._grids([(0, {**params, "warp": warp}, (20.0, 20.0))], 33)
    height, width = images[0].fov.shape
    shift = (bent - straight)[0] * torch.tensor([width / 2, height / 2])  # grid units back to pixels (x, y)
    assert shift[0, 0].tolist() == pytest.approx([2.0, 0.0], abs=1e-4)
    assert shift[-1, -1].tolist() == pytest.approx([0.0, -1.5], abs=1e-4)
    assert shift[16, 16].abs().max() < 1e-4 and shift.abs().max() < 2.5  # smooth: no overshoot far past 2
    sampler.augmentation = Augmentation(elastic=3.0)
    g = torch.Generator().manual_seed(1)
    assert torch.stack([sampler._params(g)["warp"] for _ in range(200)]).std() == pytest.approx(3.0, rel=0.1)


def test_train_with_elastic_deformation_and_a_bad_amount(cli, tmp_path, folder_dataset):
    assert train(cli, tmp_path / "bent", folder_dataset, "--elastic", "2").exit_code == 0
    result = train(cli, tmp_path / "bad", folder_dataset, "--elastic", "-1")
    assert result.exit_code == 2 and "-1.0 is not in the range x>=0" in result.output, result.output


def test_jpeg_round_trip_adds_compression_error_that_falls_with_quality():
    from retinaseg.training.data import jpeg_round_trip

    photo = synthetic_fundus((96, 128), seed=2).image
    patches = torch.from_numpy(photo).permute(2, 0, 1)[None].repeat(3, 1, 1, 1)
    compressed = jpeg_round_trip(patches, [20, 60, 95])
    assert compressed.shape == patches.shape and compressed.dtype == patches.dtype
    error = (compressed - patches).abs().mean(dim=(1, 2, 3))
    assert error[0] > error[1] > error[2] > 0 and error[2] < 0.01, error


def test_jpeg_is_drawn_for_half_the_patches_and_only_when_asked_for(folder_dataset):
    from retinaseg.training.data import JPEG_BEST_QUALITY, Augmentation

    _, sampler = _sampler(folder_dataset, "cpu")
    g = torch.Generator().manual_seed(0)
    assert all(sampler._params(g)["jpeg"] is None for _ in range(50))  # off: nothing drawn, earlier runs repeat
    sampler.augmentation = Augmentation(jpeg=40)
    qualities = [sampler._params(g)["jpeg"] for _ in range(400)]
    drawn = [q for q in qualities if q is not None]
    assert 0.4 < len(drawn) / len(qualities) < 0.6
    assert min(drawn) >= 40 and max(drawn) <= JPEG_BEST_QUALITY and len(set(drawn)) > 30


def test_the_sampler_compresses_the_patches_drawn_for_jpeg(folder_dataset, monkeypatch):
    from retinaseg.training.data import Augmentation

    _, sampler = _sampler(folder_dataset, "cpu")
    sampler.augmentation = Augmentation.none()
    draw = sampler._params

    def batch(quality):
        monkeypatch.setattr(sampler, "_params", lambda g: {**draw(g), "jpeg": quality})
        return sampler.sample(4, torch.Generator().manual_seed(0))

    (plain, target, fov), (compressed, same_target, same_fov) = batch(None), batch(10)
    assert torch.equal(target, same_target) and torch.equal(fov, same_fov)  # the same patches, cut alike
    assert (compressed - plain)[fov.expand_as(plain) > 0].abs().mean() > 0.05  # but their pixels re-encoded


def test_grey_patches_are_the_drawn_channel_mix_in_all_three_channels(folder_dataset, monkeypatch):
    from retinaseg.training.data import GREY_WEIGHTS, Augmentation

    _, sampler = _sampler(folder_dataset, "cpu")
    g = torch.Generator().manual_seed(0)
    assert all(sampler._params(g)["grey"] is None for _ in range(50))  # off: nothing drawn, earlier runs repeat
    sampler.augmentation = Augmentation(grey=0.3)
    drawn = [sampler._params(g)["grey"] for _ in range(1000)]
    assert 0.25 < sum(d is not None for d in drawn) / len(drawn) < 0.35
    assert {d for d in drawn if d is not None} == set(GREY_WEIGHTS)

    sampler.augmentation = Augmentation.none()
    draw = sampler._params

    def batch(weights):
        monkeypatch.setattr(sampler, "_params", lambda g: {**draw(g), "grey": weights})
        return sampler.sample(3, torch.Generator().manual_seed(0))

    colour, target, fov = batch(None)
    green, same_target, _ = batch(GREY_WEIGHTS[0])
    assert torch.equal(target, same_target)
    assert torch.equal(green[:, 0], green[:, 1]) and torch.equal(green[:, 1], green[:, 2])
    # normalised with the grey photo's statistics, as the runner would: every channel is then the colour
    # patch's green channel standardised on its own
    inside = fov[:, 0] > 0
    for channel in range(3):
        torch.testing.assert_close(green[:, channel][inside], colour[:, 1][inside], atol=1e-4, rtol=1e-4)


def test_train_with_jpeg_and_a_bad_quality(cli, tmp_path, folder_dataset):
    assert train(cli, tmp_path / "jpeg", folder_dataset, "--jpeg", "40").exit_code == 0
    result = train(cli, tmp_path / "bad", folder_dataset, "--jpeg", "120")
    assert result.exit_code == 2 and "120 is not in the range 0<=x<=95" in result.output, result.output
    result = train(cli, tmp_path / "grey", folder_dataset, "--grey", "1.5")
    assert result.exit_code == 2 and "1.5 is not in the range 0<=x<=1" in result.output, result.output


def test_camera_options_are_drawn_in_their_ranges_and_only_when_asked_for(folder_dataset):
    from retinaseg.training.data import BLUR_LEAST_SIGMA, NOISE_SHARE, Augmentation

    _, sampler = _sampler(folder_dataset, "cpu")
    g = torch.Generator().manual_seed(0)
    plain = [sampler._params(g) for _ in range(200)]
    assert all(p["noise"] is None and p["blur"] in (True, False) for p in plain)  # off: earlier runs repeat
    assert 0.8 <= min(p["scale"] for p in plain) and max(p["scale"] for p in plain) <= 1.25
    sampler.augmentation = Augmentation(scale=(0.6, 1.6), blur=1.2, noise=0.03)
    drawn = [sampler._params(g) for _ in range(1000)]
    scales = [p["scale"] for p in drawn]
    assert 0.6 <= min(scales) < 0.65 and 1.55 < max(scales) <= 1.6
    stds = [p["noise"] for p in drawn if p["noise"] is not None]
    assert NOISE_SHARE - 0.05 < len(stds) / len(drawn) < NOISE_SHARE + 0.05 and 0 <= min(stds) and max(stds) <= 0.03
    sigmas = [p["blur"] for p in drawn if p["blur"]]
    assert 0.15 < len(sigmas) / len(drawn) < 0.25
    assert all(BLUR_LEAST_SIGMA <= s <= 1.2 for s in sigmas) and len(set(sigmas)) == len(sigmas)


def test_gaussian_blur_softens_more_with_a_larger_sigma_and_the_default_blur_is_unchanged():
    from retinaseg.training.data import _blur

    photo = synthetic_fundus((96, 128), seed=2).image
    patches = torch.from_numpy(photo).permute(2, 0, 1)[None].repeat(3, 1, 1, 1)

    def roughness(images):  # mean absolute difference between horizontal neighbours
        return (images[..., 1:] - images[..., :-1]).abs().mean(dim=(1, 2, 3))

    soft = roughness(_blur(patches, [0.5, 1.0, 2.0]))
    assert roughness(patches)[0] > soft[0] > soft[1] > soft[2], soft
    binomial = torch.tensor([0.25, 0.5, 0.25])
    expected = torch.nn.functional.conv2d(patches, (binomial[:, None] * binomial).expand(3, 1, 3, 3), padding=1,
                                          groups=3)
    torch.testing.assert_close(_blur(patches, [True] * 3), expected)


def test_the_sampler_adds_noise_only_to_the_patches_drawn_for_it(folder_dataset, monkeypatch):
    from retinaseg.training.data import Augmentation

    _, sampler = _sampler(folder_dataset, "cpu")
    sampler.augmentation = Augmentation.none()
    draw = sampler._params

    def batch(stds):
        stream = iter(stds)
        monkeypatch.setattr(sampler, "_params", lambda g: {**draw(g), "noise": next(stream)})
        return sampler.sample(len(stds), torch.Generator().manual_seed(0))

    plain, target, fov = batch([None, None, None])
    noisy, same_target, _ = batch([None, 0.01, 0.1])
    assert torch.equal(target, same_target)
    inside = fov.expand_as(plain) > 0
    change = [(noisy[i] - plain[i])[inside[i]].abs().mean().item() for i in range(3)]
    assert change[0] < 1e-5 < change[1] < change[2], change  # standardised: the rest differ only in rounding


def test_train_with_camera_options_and_bad_values(cli, tmp_path, folder_dataset):
    result = train(cli, tmp_path / "camera", folder_dataset, "--scale-range", "0.6,1.6", "--blur", "1.2",
                   "--noise", "0.03")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "camera" / "config.json").read_text())
    assert (config["scale_range"], config["blur"], config["noise"]) == ([0.6, 1.6], 1.2, 0.03)
    for option, value, message in [("--scale-range", "1.6,0.6", "expected LOW,HIGH with 0 < LOW <= HIGH"),
                                   ("--scale-range", "wide", "expected LOW,HIGH with 0 < LOW <= HIGH"),
                                   ("--blur", "0.2", "the largest Gaussian sigma in pixels is at least 0.5"),
                                   ("--noise", "0.9", "0.9 is not in the range 0<=x<=0.5")]:
        result = train(cli, tmp_path / option.strip("-"), folder_dataset, option, value)
        assert result.exit_code == 2 and message in result.output, result.output


def test_balanced_sampling_gives_each_dataset_the_same_share_of_patches(folder_dataset):
    from retinaseg.training.data import Augmentation, PatchSampler

    images, plain = _sampler(folder_dataset, "cpu")
    assert len(images) == 4
    for item, dataset in zip(images, ("big", "big", "big", "small")):
        item.dataset = dataset
    balanced = PatchSampler(images, 32, Augmentation(), balance_datasets=True)

    def shares(sampler):
        g = torch.Generator().manual_seed(0)
        drawn = torch.tensor([sampler._draw_image(g) for _ in range(3000)])
        return [(drawn == i).float().mean().item() for i in range(4)]

    assert shares(plain) == pytest.approx([0.25] * 4, abs=0.03)  # by image: the bigger dataset gives more
    assert shares(balanced) == pytest.approx([1 / 6] * 3 + [0.5], abs=0.03)


def test_datasets_given_as_repeated_options_are_all_trained_on_as_if_joined_by_commas(cli, tmp_path, folder_dataset):
    """`-d a -d b` once kept b alone, silently; it means a and b, as `-d a,b` does."""
    for name, given in (("repeated", ["-d", "folder", "-d", "folder-av"]), ("commas", ["-d", "folder,folder-av"])):
        result = cli.invoke(retinaseg_cli, ["train", "-m", "unet", *given, "--data-root", str(folder_dataset), "-o",
                                            str(tmp_path / name), "--dataset-option", "label_suffix=_gt",
                                            "--model-option", "width=4", *TINY])
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / name / "config.json").read_text())["datasets"] == ["folder", "folder-av"]


def test_train_with_balanced_datasets_records_each_images_dataset(cli, tmp_path, folder_dataset):
    config = TrainConfig(model="unet", loss="bce-dice", datasets=["folder", "folder"], data_root=str(folder_dataset),
                         out="unused", dataset_options={"label_suffix": "_gt"}, val_fraction=0)
    train_images, _ = _load_images(config, "vessel", {"fov_diameter": 60}, classes=1, progress=False)
    assert [item.dataset for item in train_images] == ["folder"] * 8
    result = train(cli, tmp_path / "balanced", folder_dataset, "--balance-datasets")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "balanced" / "config.json").read_text())["balance_datasets"] is True


def test_each_training_photo_is_held_once_in_memory(folder_dataset):
    images, sampler = _sampler(folder_dataset, "cpu")
    for item, stack in zip(images, sampler._stacks):
        storage = item.pixels.untyped_storage().data_ptr()
        assert item.image.untyped_storage().data_ptr() == item.target.untyped_storage().data_ptr() == storage
        assert stack.untyped_storage().data_ptr() == storage  # the CPU sampler cuts from the same tensor
        assert torch.equal(item.pixels[-1] > 0.5, item.fov)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("extra", [{}, {"elastic": 3.0}, {"jpeg": 40}, {"grey": 0.5},
                                   {"scale": (0.6, 1.6), "blur": 1.2, "noise": 0.03}])
def test_the_gpu_sampler_cuts_the_same_patches_as_the_cpu_one(folder_dataset, extra):
    from retinaseg.training.data import Augmentation

    _, on_cpu = _sampler(folder_dataset, "cpu")
    _, on_gpu = _sampler(folder_dataset, "cuda")
    on_cpu.augmentation = on_gpu.augmentation = Augmentation(**extra)
    for a, b in zip(on_cpu.sample(8, torch.Generator().manual_seed(1)),
                    on_gpu.sample(8, torch.Generator().manual_seed(1))):
        assert b.device.type == "cuda"
        torch.testing.assert_close(a, b.cpu(), atol=1e-4, rtol=1e-4)


def test_split_seed_holds_out_the_same_images_whatever_the_training_seed(folder_dataset):
    def held_out(**seeds):
        config = TrainConfig(model="unet", loss="bce-dice", datasets=["folder"], data_root=str(folder_dataset),
                             out="unused", dataset_options={"label_suffix": "_gt"}, val_fraction=0.34, **seeds)
        _, validation = _load_images(config, "vessel", {"fov_diameter": 60}, classes=1, progress=False)
        return [item.id for item in validation]

    assert held_out(seed=0) != held_out(seed=2)  # the seed alone draws other images
    assert held_out(seed=2, split_seed=0) == held_out(seed=0)


def test_resume_refuses_other_settings_and_names_them(cli, tmp_path, folder_dataset):
    out = tmp_path / "run"
    assert train(cli, out, folder_dataset).exit_code == 0
    saved = load_checkpoint(out / "last.pt")["training"]["config"]
    assert saved["lr"] == 2e-3 and saved["model"] == "unet"
    result = train(cli, out, folder_dataset, "--lr", "0.001", "--batch-size", "3", "--resume")
    assert result.exit_code == 1, result.output
    assert "batch_size was 2, now 3; lr was 0.002, now 0.001" in result.output
    assert train(cli, out, folder_dataset, "--epochs", "3", "--resume").exit_code == 0  # --epochs may grow


def test_the_disc_model_fine_tuned_on_disc_masks_of_a_camera_of_ones_own_runs_and_scores(cli, tmp_path):
    """folder-disc: photos and disc masks in a folder; the shipped disc model fine-tuned on them runs as the disc
    model does, and eval scores it by disc Dice and centre error."""
    data = tmp_path / "camera"
    for seed in range(3):
        sample = synthetic_fundus(160, seed=seed)
        rows, cols = np.ogrid[:160, :160]
        disc = np.hypot(rows - sample.disc_centre[0], cols - sample.disc_centre[1]) <= 2 * sample.disc_radius
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image_uint8()).save(data / "images" / f"eye_{seed}.png")
        Image.fromarray(disc.astype(np.uint8) * 255).save(data / "labels" / f"eye_{seed}.png")
    out = tmp_path / "run"
    result = cli.invoke(retinaseg_cli, ["train", "-m", "disc", "-d", "folder-disc", "--data-root", str(data), "-o",
                                        str(out), "--init-weights", str(weights_dir() / "disc.pt"), *TINY])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "best.pt")["config"]["model"] == "disc"
    result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "disc", "-w", str(out / "best.pt"), str(data / "images"),
                                        str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out" / "raw_pre").glob("eye_*.png"))) == 3
    scored = evaluate("folder-disc", data, "training", segmenter=Segmenter(load_model("disc", out / "best.pt"),
                                                                            SegmentConfig(device="cpu")))
    assert {"dice", "found", "centre_error_dd"} <= set(scored.summary)
