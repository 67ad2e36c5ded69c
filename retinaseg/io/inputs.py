"""Turning the command line's INPUT arguments (files, folders, globs) into the photos to process, each with
the name its outputs get."""
from __future__ import annotations

import bisect
import glob
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

from retinaseg.errors import RetinasegError, shown
from retinaseg.io.images import IMAGE_EXTENSIONS, has_dicom_signature, is_image_name


@dataclass(frozen=True)
class InputPhoto:
    path: Path
    name: str  # output name without extension; keeps sub-folders found by --recursive ("patient1/img001")


def find_inputs(inputs, recursive: bool = False, notify: Optional[Callable[[str], None]] = None,
                output_dir=None) -> list[InputPhoto]:
    """Files are taken as given (a bad one fails later with its own message); folders contribute the entries
    whose names look like images (with recursive=True, their sub-folders too, whose relative paths then
    prefix the output names so that equal file names in different folders do not collide); anything else is
    tried as a glob, whose matches are named by their paths below its fixed folder (`study/**/*.jpg` names
    `study/p1/img.jpg` "p1/img"), for the same reason. Order is sorted and duplicates are dropped. Without
    recursive, notify is told about sub-folders that hold photos, so a study laid out by patient is not
    half-processed in silence.
    Nothing under output_dir is an input: `run photos/ photos/seg/` must not segment its own masks on the
    next --recursive run."""
    outside = _outside(output_dir)
    found: list[InputPhoto] = []
    inside_output = 0  # photos left out because they sit in the output folder
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            listed = list(path.rglob("*") if recursive else path.iterdir())
            entries = [p for p in listed if outside(p)]
            inside_output += sum(_is_photo_name(p) for p in listed if not outside(p))
            photos = sorted(p for p in entries if _is_photo_name(p))
            found.extend(InputPhoto(p, p.relative_to(path).with_suffix("").as_posix()) for p in photos)
            if notify:
                _note_other_files(path, set(entries) - set(photos), notify)
            if not recursive and notify:
                skipped = sorted(d.name for d in entries if d.is_dir() and _holds_photos(d, outside))
                if skipped:
                    names = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
                    notify(f"note: {shown(path)} has {len(skipped)} sub-folder(s) with photos that were not searched "
                           f"({names}); add --recursive to include them")
        elif path.exists():
            found.append(InputPhoto(path, path.stem))
        else:
            globbed = sorted(map(Path, glob.glob(str(item), recursive=recursive)))
            matches = [p for p in globbed if outside(p)]
            inside_output += len(globbed) - len(matches)
            if not globbed:
                raise RetinasegError(f"{shown(item)}: no such file, folder or matching glob")
            root = _fixed_folder(str(item))
            found.extend(InputPhoto(p, p.relative_to(root).with_suffix("").as_posix()) for p in matches)
    unique = list({photo.path: photo for photo in found}.values())
    if not unique:
        where = ", ".join(map(shown, inputs))
        if inside_output:
            raise RetinasegError(f"no input images found in {where}: its {inside_output} photo(s) sit inside the "
                                 f"output folder {shown(output_dir)}, which is never read as input; choose an "
                                 f"output folder outside the inputs")
        raise RetinasegError(f"no input images found in {where}")
    return unique


def _fixed_folder(pattern: str) -> Path:
    """The folder a glob's wildcards start below: `study/**/*.jpg` -> `study`, `*.png` -> `.`."""
    fixed = []
    for part in Path(pattern).parent.parts:
        if _WILDCARD.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


_WILDCARD = re.compile(r"[*?[]")


def _outside(output_dir) -> Callable[[Path], bool]:
    """A test for 'not in output_dir or below'; resolved, so `out`, `./out` and symlinks compare equal. An entry
    that cannot be resolved (a symbolic link loop) is kept as an input: reading it then fails with its own line."""
    if output_dir is None:
        return lambda path: True
    output = Path(output_dir).resolve()

    def outside(path: Path) -> bool:
        try:
            return not path.resolve().is_relative_to(output)
        except (OSError, RuntimeError):  # 3.11 raises RuntimeError for a loop
            return True
    return outside


def _note_other_files(folder: Path, not_photos: set, notify: Callable[[str], None]) -> None:
    """One line naming the kinds of file among a folder's entries that are not photos (a camera's RAW files, say),
    so that none is left out in silence."""
    others = [p for p in not_photos if not p.name.startswith(".") and p.is_file()]
    if others:
        kinds = sorted({p.suffix.lower() or "no extension" for p in others})
        listed = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "")
        notify(f"note: {shown(folder)} holds {len(others)} file(s) not read as photos ({listed}); photos are read "
               f"from {', '.join(IMAGE_EXTENSIONS)} files")


def _is_photo_name(path: Path) -> bool:
    """A photo's name; or no extension and a DICOM file's signature (a PACS export's IM000001; not its DICOMDIR
    index, which holds no image)."""
    if path.name.startswith("."):
        return False
    return is_image_name(path.name) or (not path.suffix and path.name != "DICOMDIR" and has_dicom_signature(path))


def _holds_photos(folder: Path, outside: Callable[[Path], bool]) -> bool:
    return not folder.name.startswith(".") and any(_is_photo_name(p) and outside(p) for p in folder.rglob("*"))


def mask_of(folder, name: str) -> Optional[Path]:
    """A photo's mask in a folder of masks (FOV or disc), by the photo's output name; a name in a sub-folder (p1/left,
    from a recursive run) in the same sub-folder of the masks, as the outputs mirror it (p1/left and p2/left may
    share a file name). None if none is found."""
    parent, stem = os.path.split(name)
    folder = os.path.join(folder, parent)
    return _mask_in(folder, stem) if os.path.isdir(folder) else None


def _mask_in(folder: str, stem: str) -> Optional[Path]:
    """The image file in folder named the stem, or the stem, a character other than a letter or digit, and more
    (eye1.png, eye1_mask.gif, eye1-od.tif; never eye10's); of several, the one whose name adds least to the stem
    (eye1_mask, not eye1_b_mask), then the first by name."""
    names = _image_names(folder, os.stat(folder).st_mtime_ns)
    at, best = bisect.bisect_left(names, stem), None
    while at < len(names) and names[at].startswith(stem):
        rest = Path(names[at]).stem[len(stem):]
        if (not rest or not rest[0].isalnum()) and (best is None or len(rest) < best[0]):
            best = (len(rest), names[at])
        at += 1
    return Path(folder) / best[1] if best else None


@lru_cache(maxsize=4)
def _image_names(folder: str, modified_ns: int) -> tuple:
    """The sorted image file names in a folder, listed once while it is unchanged (not once per photo: a study's
    folder of masks holds thousands)."""
    return tuple(sorted(entry.name for entry in os.scandir(folder) if entry.is_file() and is_image_name(entry.name)))
