"""Atomic file writing and image/array shard I/O shared by every stage.

Nothing a later stage reads is ever visible half-written: each file is written to a
temporary name in the same folder and moved into place with `os.replace`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should read like normal files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_dir(path: Path) -> None:
    """Make the names in a folder durable (after a rename into it), where the OS allows it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; nothing more we can do there
        pass
    finally:
        os.close(fd)


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_png(path: Path, array: np.ndarray) -> None:
    """Save an H x W x C (C in 1, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def save_pngs(paths: list[str], images: np.ndarray) -> int:
    """Write each image to its path (a PNG writer process's task); returns how many."""
    for path, img in zip(paths, images):
        save_png(Path(path), img)
    return len(paths)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def write_shards(folder: Path, images: np.ndarray, shard_size: int, prefix: str = "shard") -> list[tuple[str, int]]:
    """Write N x H x W x C uint8 images as `prefix-00000.npy`...; returns (file, index) per image."""
    locations: list[tuple[str, int]] = []
    for shard_no, start in enumerate(range(0, len(images), shard_size)):
        name = f"{prefix}-{shard_no:05d}.npy"
        chunk = images[start:start + shard_size]
        save_npy(Path(folder) / name, np.ascontiguousarray(chunk))
        locations.extend((name, i) for i in range(len(chunk)))
    return locations


class ShardReader:
    """Reads images addressed by (shard file, index), memory-mapping each shard once."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._open: dict[str, np.ndarray] = {}

    def get(self, file: str, index: int) -> np.ndarray:
        if file not in self._open:
            self._open[file] = np.load(self.folder / file, mmap_mode="r", allow_pickle=False)
        return np.asarray(self._open[file][index])

    def load_all(self, file: str) -> np.ndarray:
        return np.load(self.folder / file, allow_pickle=False)


def image_grid(images: np.ndarray, rows: int, cols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile N x H x W x C uint8 images into one rows x cols grid (missing cells stay blank).

    Not torchvision.utils.make_grid, which lays out the same grid: importing torchvision takes
    about 5 s on these machines, as long as the whole resize crop stage, which needs no torch,
    and make_grid turns one-channel images into three (grey previews would become RGB files).
    """
    n, h, w, c = images.shape
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(min(n, rows * cols)):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid
