"""Atomic writes: every output goes to a temporary file in the same folder and is renamed into place, so a
killed run never leaves a half-written file under a final name. A temporary file's name says which host and
process wrote it, so a later run removes those its killed predecessors left, and never a live one's."""
from __future__ import annotations

import json
import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from retinaseg.io.images import PROBABILITY_SCALE

TEMP_SUFFIX = ".partial"
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)" + re.escape(TEMP_SUFFIX) + "$")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}{TEMP_SUFFIX}")


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success rename it to `path`, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_png(path, image: np.ndarray) -> None:
    """8-bit PNG (HxW grey or HxWx3 colour). Fast zlib level 1: masks compress well anyway, and the
    default (optimised) encoding costs three times as long, a third of the runner's time per DRIVE photo."""
    if image.dtype != np.uint8:
        raise TypeError(f"PNG outputs are 8-bit; got {image.dtype}")
    with atomic_path(path) as tmp:
        encode_png(tmp, image)


def encode_png(path, image: np.ndarray) -> None:
    # Pillow directly: imageio's wrapper printed `Exception ignored in: PluginV3.__del__` tracebacks when a
    # write failed (disk full)
    Image.fromarray(image).save(path, format="PNG", compress_level=1)


def write_probabilities(path, array: np.ndarray) -> None:
    """Probabilities (HxW, or CxHxW per class) as a 16-bit TIFF of each times PROBABILITY_SCALE, deflate-compressed
    after horizontal differencing (images.read_probabilities reads it back)."""
    stored = np.round(np.clip(array, 0, 1) * PROBABILITY_SCALE).astype(np.uint16)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, stored, compression="zlib", predictor=2, photometric="minisblack",
                         metadata={"values": f"probability x {PROBABILITY_SCALE}"})


def write_json(path, data, indent: int | None = 2) -> None:
    """indent=None writes it compact (large arrays, such as a vessel graph's paths)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent, default=str, separators=None if indent else (",", ":")) + "\n")


def write_bytes_via(path, writer) -> None:
    """Atomically write a file produced by writer(tmp_path) (e.g. torch.save)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def remove_stale_temp_files(candidates) -> int:
    """Remove those of these temporary files that killed processes of this host left; a file of a process
    still running, or of another host (a shared disk), is left alone. Returns how many went."""
    removed = 0
    for candidate in candidates:
        match = _TEMP_NAME.match(Path(candidate).name)
        if match and match["host"] == _HOST and not _process_alive(int(match["pid"])):
            try:
                Path(candidate).unlink()
                removed += 1
            except OSError:
                pass  # another run removed it first, or the folder is read-only: nothing to do
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
