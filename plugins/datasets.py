"""Dataset plugins: the public layouts as they are distributed.

Where a data set has no official split (CHASE_DB1, STARE), the split most papers use is applied.
"""
from pathlib import Path

from retinaseg import hookimpl
from retinaseg.datasets import first_existing, images_in, pair_samples
from retinaseg.errors import DatasetError
from retinaseg.registry import DatasetSpec


def _drive(root: Path, split: str, av_labels: bool):
    base = root / split
    suffix = split  # 21_training.tif / 01_test.tif

    def number(photo):
        return photo.stem.split("_")[0]

    def label(photo):
        name = f"{number(photo)}_{suffix}.png" if av_labels else f"{number(photo)}_manual1.gif"
        return first_existing(base / "1st_manual", [name])

    def second(photo):
        return None if av_labels else first_existing(base / "2nd_manual", [f"{number(photo)}_manual2.gif"])

    return pair_samples("drive-av" if av_labels else "drive", images_in(base / "images"), label,
                        lambda p: first_existing(base / "mask", [f"{number(p)}_{suffix}_mask.gif"]), second)


def _les(root: Path, split: str):
    base = root / split
    return pair_samples("les-av", images_in(base / "images"),
                        lambda p: first_existing(base / "1st_manual", [p.stem + ".png"]),
                        lambda p: first_existing(base / "mask", [p.stem + "_mask.gif", p.stem + "_mask.png"]))


def _hrf(root: Path, split: str):
    base = root / split
    return pair_samples("hrf-av", images_in(base / "images"),
                        lambda p: first_existing(base / "1st_manual", [p.stem + "_AVmanual.png"]),
                        lambda p: first_existing(base / "mask", [p.stem + "_mask.tif", p.stem + "_mask.png"]))


CHASE_TEST_SUBJECTS = {"11", "12", "13", "14"}  # the common 20/8 split: children 1-10 train, 11-14 test


def _chase(root: Path, split: str):
    photos = [p for p in images_in(root) if p.name.lower().startswith("image_") and "HO" not in p.stem]
    photos = [p for p in photos if (p.stem[6:8] in CHASE_TEST_SUBJECTS) == (split == "test")]
    return pair_samples("chase-db1", photos,
                        lambda p: first_existing(root, [p.stem + "_1stHO.png"]),
                        second_for=lambda p: first_existing(root, [p.stem + "_2ndHO.png"]))


def _stare(root: Path, split: str):
    # im0001.ppm beside (or in a sub-folder next to) im0001.ah.ppm / .ah.pgm; first ten train, last ten test
    files = [p for p in root.rglob("im*.p?m") if p.is_file()]
    labels = {p.name.split(".")[0]: p for p in files if ".ah." in p.name}
    photos = sorted((p for p in files if p.name.count(".") == 1 and p.stem in labels), key=lambda p: p.stem)
    if not photos:
        raise DatasetError(f"dataset stare: no im*.ppm photos with im*.ah labels under {root}")
    half = len(photos) // 2
    photos = photos[:half] if split == "training" else photos[half:]
    return pair_samples("stare", photos, lambda p: labels.get(p.stem))


def _kaggle(root: Path, split: str):
    base = root / "Data" if (root / "Data").is_dir() else root
    sub = base / ("train" if split == "training" else "test")
    return pair_samples("kaggle-retina", images_in(sub / "image"),
                        lambda p: first_existing(sub / "mask", [p.name, p.stem + ".png"]))


def _idrid_od(root: Path, split: str):
    base = root / split
    return pair_samples("idrid-od", images_in(base / "images"),
                        lambda p: first_existing(base / "disc", [p.stem + "_OD.png", p.stem + "_OD.tif"]))


def _folder(root: Path, split: str, images="images", labels="labels", fov="fov", label_suffix="", fov_suffix=""):
    """<root>[/<split>]/images + labels (+ fov): a label is <stem><label_suffix>.<any image extension>."""
    base = root / split if (root / split / images).is_dir() else root
    extensions = (".png", ".gif", ".tif", ".tiff", ".bmp", ".jpg", ".ppm", ".pgm")

    def find(folder, stem):
        return first_existing(base / folder, [stem + ext for ext in extensions] +
                              [stem + ext.upper() for ext in extensions]) if (base / folder).is_dir() else None

    return pair_samples("folder", images_in(base / images), lambda p: find(labels, p.stem + label_suffix),
                        lambda p: find(fov, p.stem + fov_suffix))


@hookimpl
def register_datasets(register):
    splits = ("training", "test")
    register(DatasetSpec("drive", lambda root, split: _drive(root, split, False),
                         "DRIVE: 565x584, binary 1st/2nd manual", folder="DRIVE", splits=splits))
    register(DatasetSpec("drive-av", lambda root, split: _drive(root, split, True),
                         "DRIVE_AV: DRIVE with A/V labels", task="av", folder="DRIVE_AV", splits=splits))
    register(DatasetSpec("les-av", _les, "LES-AV: 1620x1444 with A/V labels", task="av", folder="LES-AV",
                         splits=splits))
    register(DatasetSpec("les", _les, "LES-AV viewed as binary vessels (label > 0)", folder="LES-AV",
                         splits=splits))
    register(DatasetSpec("hrf-av", _hrf, "HRF-AV: 3504x2336 with A/V labels", task="av", folder="HRF-AV",
                         splits=splits))
    register(DatasetSpec("hrf", _hrf, "HRF-AV viewed as binary vessels (label > 0)", folder="HRF-AV",
                         splits=splits))
    register(DatasetSpec("chase-db1", _chase, "CHASE_DB1: flat folder, Image_NNx.jpg + _1stHO/_2ndHO.png; "
                         "FOV estimated; subjects 11-14 are the test split", folder="CHASE_DB1", splits=splits))
    register(DatasetSpec("stare", _stare, "STARE: im0001.ppm + im0001.ah.ppm/.pgm (Hoover); first ten images "
                         "train, last ten test; FOV estimated", folder="STARE", splits=splits))
    register(DatasetSpec("kaggle-retina", _kaggle, "Kaggle 'Retina Blood Vessel': Data/{train,test}/{image,mask}",
                         folder="Data", splits=splits))
    register(DatasetSpec("idrid-od", _idrid_od, "IDRiD segmentation part: 1429x949 photos (reduced 3x) with optic "
                         "disc masks; FOV estimated", task="disc", folder="IDRiD-OD", splits=splits))
    folder_help = ("any folder: [<split>/]images + labels [+ fov], paired by file stem; options images, labels, "
                   "fov, label_suffix, fov_suffix")
    register(DatasetSpec("folder", _folder, folder_help + "; binary labels", splits=splits))
    register(DatasetSpec("folder-av", _folder, folder_help + "; A/V labels as 0..3 codes or red/blue/green colour "
                         "maps", task="av", splits=splits))
    register(DatasetSpec("folder-disc", _folder, folder_help + "; optic disc masks (a disc model for a camera of "
                         "your own)", task="disc", splits=splits))
