"""Turning the command line's INPUT arguments (files, folders, globs) into the photos to process, each with
the name its outputs get."""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from retinaseg.errors import RetinasegError
from retinaseg.io.images import is_image_name


@dataclass(frozen=True)
class InputPhoto:
    path: Path
    name: str  # output name without extension; keeps sub-folders found by --recursive ("patient1/img001")


def find_inputs(inputs, recursive: bool = False) -> list[InputPhoto]:
    """Files are taken as given (a bad one fails later with its own message); folders contribute the entries
    whose names look like images (with recursive=True, their sub-folders too, whose relative paths then
    prefix the output names so that equal file names in different folders do not collide); anything else is
    tried as a glob. Order is sorted and duplicates are dropped."""
    found: list[InputPhoto] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            entries = path.rglob("*") if recursive else path.iterdir()
            photos = sorted(p for p in entries if is_image_name(p.name) and not p.name.startswith("."))
            found.extend(InputPhoto(p, p.relative_to(path).with_suffix("").as_posix()) for p in photos)
        elif path.exists():
            found.append(InputPhoto(path, path.stem))
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=recursive))
            if not matches:
                raise RetinasegError(f"{item}: no such file, folder or matching glob")
            found.extend(InputPhoto(p, p.stem) for p in matches)
    unique = list({photo.path: photo for photo in found}.values())
    if not unique:
        raise RetinasegError("no input images found in: " + ", ".join(map(str, inputs)))
    return unique
