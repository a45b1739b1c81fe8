"""Atomic file writing, and reading shards, images and JSON with one-line errors, for every stage.

Nothing a later stage reads is ever visible half-written: each file is written to a
temporary name in the same folder and moved into place with `os.replace`. A file that a
stage reads and finds cut short or undecodable is an `InputError` naming it, not a traceback.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.shared.errors import PipelineError

# atomic_path's temp names: "." + the target's name + mkstemp's 8 random characters + ".tmp".
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


class InputError(PipelineError):
    """A file a stage reads that is missing, cut short or not what its name says."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            # A failed write() names no file; say which one, so a full disk names its folder.
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def sweep_temp(path: Path) -> int:
    """Remove the temp files a killed writer left behind; returns how many.

    For a folder, every atomic_path temp name in it and below (hidden folders and links are
    not entered), and beside it the staging folders `.<name>.XXXXXXXX` that a stage building
    a whole new folder (export) makes with mkdtemp, and the `.<name>.old.XXXXXXXX` it moves the
    previous folder to while swapping (a kill before its removal left it there); for a file,
    only that file's own temp names beside it. Nothing named otherwise is touched.
    """
    path = Path(path)
    if path.is_dir():
        found = []
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [os.path.join(root, name) for name in files if TEMP_NAME.match(name)]
        staging = re.compile(rf"^\.{re.escape(path.name)}\.(old\.)?[a-z0-9_]{{8}}$")  # mkdtemp's names: new / set-aside folder
        for folder in (p for p in path.parent.iterdir() if staging.match(p.name) and p.is_dir() and not p.is_symlink()):
            shutil.rmtree(folder, ignore_errors=True)
    elif path.parent.is_dir():
        prefix = f".{path.name}."
        found = [str(p) for p in path.parent.iterdir() if p.name.startswith(prefix) and TEMP_NAME.match(p.name)
                 and len(p.name) == len(prefix) + 12]
    else:
        return 0
    for name in found:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    return len(found)


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


def read_json(path: Path) -> Any:
    """A JSON file's content; missing or unparsable is an InputError naming the file (and line)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: not JSON: {err.msg}") from None
    except (UnicodeDecodeError, OSError) as err:
        raise InputError(f"{path}: cannot be read ({_first_line(err)})") from None


def read_image(path: Path) -> np.ndarray:
    """An image file as H x W x C uint8 (C in 1, 3, 4); one that does not decode is an InputError naming it."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for truncated or foreign bytes
        raise InputError(f"{path}: not a readable image ({_first_line(err)})") from None
    return array[..., None] if array.ndim == 2 else array


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
    """np.save's bytes, atomically, written with write(): numpy's own tofile reports a full disk
    as an OSError without errno, a plain write as ENOSPC (which the CLI names as out of space)."""
    array = np.ascontiguousarray(array)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(array))
            fh.write(memoryview(array.reshape(-1)).cast("B"))


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
            self._open[file] = self._load(file, mmap_mode="r")
        return self.row(file, self._open[file], index)

    def load_all(self, file: str) -> np.ndarray:
        return self._load(file)

    def row(self, file: str, shard: np.ndarray, index: int) -> np.ndarray:
        """Row `index` of a loaded shard; one the shard does not have is an InputError naming both."""
        if not 0 <= index < len(shard):
            raise InputError(f"{self.folder / file}: the manifest names row {index}, but the shard has {len(shard)} rows")
        return np.asarray(shard[index])

    def _load(self, file: str, mmap_mode: Any = None) -> np.ndarray:
        path = self.folder / file
        try:
            return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"{path}: named by the manifest but does not exist") from None
        except (ValueError, OSError, EOFError) as err:  # a file cut short, or not a .npy at all
            raise InputError(f"{path}: not a complete array shard ({_first_line(err)}); "
                             "re-run the stage that wrote it or copy it again") from None


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
