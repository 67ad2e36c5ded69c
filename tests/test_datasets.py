"""Every dataset layout, built in a temp folder from synthetic photos, reads back its labels and FOV."""
import numpy as np
import pytest

import layouts
from retinaseg.datasets import load_samples, read_fov, read_label
from retinaseg.errors import DatasetError
from retinaseg.io.images import read_photo


def _check(samples, truths, task, key=lambda s: s.id, fov_given=True):
    for sample in samples:
        truth = truths[key(sample)]
        label = read_label(sample.label, task)
        expected = truth.av_labels if task == "av" else truth.vessels  # a binary mask: vessels stand in for a disc
        assert np.array_equal(label, expected), sample.id
        photo = read_photo(sample.image)
        fov = read_fov(sample, photo)
        assert fov.shape == photo.shape[:2]
        if fov_given:
            assert np.array_equal(fov, truth.fov)
        else:
            assert (fov == truth.fov).mean() > 0.95  # estimated


@pytest.mark.parametrize("name,task", [("drive", "vessel"), ("drive-av", "av")])
def test_drive_layouts(tmp_path, name, task):
    truths = layouts.drive(tmp_path / ("DRIVE_AV" if task == "av" else "DRIVE"), av_labels=task == "av")
    spec, train = load_samples(name, tmp_path, "training")  # --data-root is the folder holding DRIVE/
    _, test = load_samples(name, tmp_path, "test")
    assert spec.task == task and [s.id for s in train] == ["21_training", "22_training", "23_training"]
    assert [s.id for s in test] == ["01_test", "02_test"]
    _check(train + test, truths, task)
    if task == "vessel":
        assert all(s.second_label is not None for s in test) and all(s.second_label is None for s in train)


@pytest.mark.parametrize("name,task", [("les-av", "av"), ("les", "vessel")])
def test_les_layouts(tmp_path, name, task):
    truths = layouts.les(tmp_path / "LES-AV")
    _, train = load_samples(name, tmp_path / "LES-AV", "training")  # or the dataset folder itself
    assert sorted(s.id for s in train) == ["15", "37"]
    _check(train + load_samples(name, tmp_path, "test")[1], truths, task)


@pytest.mark.parametrize("name,task", [("hrf-av", "av"), ("hrf", "vessel")])
def test_hrf_layouts(tmp_path, name, task):
    truths = layouts.hrf(tmp_path / "HRF-AV")
    _, train = load_samples(name, tmp_path, "training")
    assert sorted(s.image.name for s in train) == ["01_dr.JPG", "01_g.jpg"]
    _check(train + load_samples(name, tmp_path, "test")[1], truths, task)


def test_chase_layout_uses_subjects_11_to_14_as_test(tmp_path):
    truths = layouts.chase(tmp_path / "CHASE_DB1")
    _, train = load_samples("chase-db1", tmp_path, "training")
    _, test = load_samples("chase-db1", tmp_path, "test")
    assert sorted(s.id for s in train) == ["Image_01L", "Image_01R"] and [s.id for s in test] == ["Image_11L"]
    assert all(s.second_label.name.endswith("_2ndHO.png") for s in train + test)
    _check(train + test, truths, "vessel", fov_given=False)


def test_stare_layout(tmp_path):
    truths = layouts.stare(tmp_path / "STARE")
    _, train = load_samples("stare", tmp_path, "training")
    _, test = load_samples("stare", tmp_path, "test")
    assert [s.id for s in train] == ["im0001", "im0002"] and [s.id for s in test] == ["im0003", "im0004"]
    _check(train + test, truths, "vessel", fov_given=False)


def test_kaggle_layout_thresholds_soft_masks(tmp_path):
    truths = layouts.kaggle(tmp_path)
    _, train = load_samples("kaggle-retina", tmp_path, "training")
    assert [s.id for s in train] == ["0", "1"]
    _check(train, truths, "vessel", key=lambda s: ("train", s.id), fov_given=False)


@pytest.mark.parametrize("name,colours", [("folder", False), ("folder-av", False), ("folder-av", True),
                                          ("folder-disc", False)])
def test_folder_layout_with_options(tmp_path, name, colours):
    task = {"folder-av": "av", "folder-disc": "disc"}.get(name, "vessel")
    truths = layouts.folder(tmp_path, av_labels=task == "av", colours=colours)
    _, samples = load_samples(name, tmp_path, "training", label_suffix="_gt")
    _check(samples, truths, task)


def test_missing_files_are_listed_in_one_error(tmp_path):
    layouts.drive(tmp_path / "DRIVE")
    (tmp_path / "DRIVE" / "training" / "1st_manual" / "22_manual1.gif").unlink()
    (tmp_path / "DRIVE" / "training" / "1st_manual" / "23_manual1.gif").unlink()
    with pytest.raises(DatasetError) as error:
        load_samples("drive", tmp_path, "training")
    assert "2 unpaired" in str(error.value) and "22_training.tif" in str(error.value) \
        and "23_training.tif" in str(error.value)


def test_missing_folder_and_unknown_split(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_samples("drive", tmp_path, "training")
    with pytest.raises(DatasetError, match="no split 'validation'"):
        load_samples("drive", tmp_path, "validation")


def test_mismatched_sizes_are_an_error(tmp_path):
    from retinaseg.datasets import check_same_size

    layouts.folder(tmp_path)
    _, samples = load_samples("folder", tmp_path, "training", label_suffix="_gt")
    with pytest.raises(DatasetError, match="label is 80x72 but the photo"):
        check_same_size(samples[0], np.zeros((10, 10, 3)), read_label(samples[0].label, "vessel"))
