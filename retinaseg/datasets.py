"""Datasets: pairing photos with labels and FOV masks, and reading them.

Dataset plugins only describe a layout (which file goes with which); reading and checking happen here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from retinaseg import av
from retinaseg.errors import DatasetError
from retinaseg.io.images import is_image_name, read_binary_mask, read_mask
from retinaseg.registry import BINARY_TASKS, DatasetSpec, check_options, get_dataset


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    label: Path
    fov: Optional[Path] = None  # None: estimated from the photo
    second_label: Optional[Path] = None  # a second human observer, where the dataset has one


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_name(p.name))


def first_existing(folder: Path, names: Iterable[str]) -> Optional[Path]:
    """The first of several candidate file names that exists (extensions vary in case between releases)."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def pair_samples(dataset: str, photos: list[Path], label_for: Callable[[Path], Optional[Path]],
                 fov_for: Callable[[Path], Optional[Path]] = lambda p: None,
                 second_for: Callable[[Path], Optional[Path]] = lambda p: None,
                 fov_required: bool = False) -> list[Sample]:
    """Build samples, collecting every photo whose label (or required FOV mask) is missing into one error."""
    samples, missing = [], []
    for photo in photos:
        label, fov = label_for(photo), fov_for(photo)
        if label is None:
            missing.append(f"{photo.name}: no label")
            continue
        if fov_required and fov is None:
            missing.append(f"{photo.name}: no FOV mask")
            continue
        samples.append(Sample(photo.stem, photo, label, fov, second_for(photo)))
    if missing:
        raise DatasetError(f"dataset {dataset}: {len(missing)} unpaired file(s): " + "; ".join(missing))
    if not samples:
        raise DatasetError(f"dataset {dataset}: no images found")
    return samples


def dataset_root(spec: DatasetSpec, data_root) -> Path:
    """--data-root may be the dataset's own folder or the folder that holds it (e.g. shared/data)."""
    data_root = Path(data_root)
    if spec.folder and (data_root / spec.folder).is_dir():
        return data_root / spec.folder
    return data_root


def load_samples(name: str, data_root, split: str, **options) -> tuple[DatasetSpec, list[Sample]]:
    spec = get_dataset(name)
    options = check_options("dataset", spec.name, spec.samples, options, leading=2)  # after (root, split)
    if split not in spec.splits:
        raise DatasetError(f"dataset {name} has no split {split!r}; choose one of: {', '.join(spec.splits)}")
    root = dataset_root(spec, data_root)
    if not root.is_dir():
        raise DatasetError(f"dataset {name}: data root {root} not found")
    return spec, spec.samples(root, split, **options)


def read_label(path: Path, task: str) -> np.ndarray:
    """bool HxW map for a binary task (vessel, disc; an AV label counts as vessel where > 0); codes 0..3 for av."""
    if task in BINARY_TASKS:
        return read_binary_mask(path)
    try:
        return av.decode_label(read_mask(path))
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def read_fov(sample: Sample, photo: np.ndarray) -> np.ndarray:
    from retinaseg.fov import estimate_fov  # torch: imported on use, so dataset plugins list without it

    mask = read_binary_mask(sample.fov) if sample.fov else estimate_fov(photo)
    if mask.shape != photo.shape[:2]:
        raise DatasetError(f"{sample.fov}: FOV mask is {mask.shape[1]}x{mask.shape[0]} but the photo "
                           f"{sample.image.name} is {photo.shape[1]}x{photo.shape[0]}")
    return mask


def check_same_size(sample: Sample, photo: np.ndarray, label: np.ndarray) -> None:
    if label.shape[:2] != photo.shape[:2]:
        raise DatasetError(f"{sample.label}: label is {label.shape[1]}x{label.shape[0]} but the photo "
                           f"{sample.image.name} is {photo.shape[1]}x{photo.shape[0]}")
