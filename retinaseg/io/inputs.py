"""Turning the command line's INPUT arguments (files, folders, globs) into a list of image paths."""
from __future__ import annotations

import glob
from pathlib import Path

from retinaseg.errors import RetinasegError
from retinaseg.io.images import is_image_name


def find_inputs(inputs, recursive: bool = False) -> list[Path]:
    """Files are taken as given (a bad one fails later with its own message); folders contribute the entries
    whose names look like images (recursively with recursive=True); anything else is tried as a glob.
    Order is sorted and duplicates are dropped."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            entries = path.rglob("*") if recursive else path.iterdir()
            found.extend(sorted(p for p in entries if is_image_name(p.name) and not p.name.startswith(".")))
        elif path.exists():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=recursive))
            if not matches:
                raise RetinasegError(f"{item}: no such file, folder or matching glob")
            found.extend(matches)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise RetinasegError("no input images found in: " + ", ".join(map(str, inputs)))
    return unique
