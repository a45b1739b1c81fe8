"""Which stage owns an output folder: its `augment-stage.json` marker, and the refusal of a folder holding anything else.

A stage only replaces or cleans what a previous run of that same stage wrote. Before any work it
calls `check_out(out, owner)`: a folder that does not exist, or is empty, is fine; a
folder whose marker names this owner is fine when everything in it matches the owner's
patterns in `OWN` (the names it writes, matched one path component at a time, so `images/*/seed*.png`
covers `images/0_a/seed7.png` but not `images/notes.txt`). Anything else (no marker, another
stage's marker, a user's `notes.txt` or subfolder) is refused with one line naming the folder
and what is in the way. `mark_out` writes the marker before the stage's first file, so even a
killed run leaves a folder the next run recognises as its own.

The crawl's `meta.json` `source` check (pipeline/crawl/sources/moebooru.py) was the first instance of
this rule; the owner string carries the source (`crawl:konachan`) so it still holds here.
"""
from __future__ import annotations

import contextlib
import json
import os
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterable, Iterator, Optional

from pipeline.shared.errors import PipelineError
from pipeline.shared.io import TEMP_NAME, write_json

# Not a hidden name: hidden names are temp files (io.sweep_temp, the kill tests), and a user should see whose it is.
MARKER = "augment-stage.json"
# The names each stage writes in its folder (one place, so a stage and its tests agree).
CLASS_DIR = "[0-9]*_*"  # pipeline.shared.labels.class_dirs: `<id>_<label>`
OWN: dict[str, tuple[str, ...]] = {
    "crawl:fashion-mnist": ("manifest.jsonl", "meta.json", "train-*.npy", "test-*.npy"),
    "crawl:folder": ("manifest.jsonl", "meta.json", "failures.jsonl", "images/*"),
    "crawl:konachan": ("manifest.jsonl", "meta.json", "failures.jsonl", "images/*"),
    "crop": ("manifest.jsonl", "meta.json", "preview.png", "shard-*.npy", ".staged-shard-*.npy"),
    "train": ("checkpoint.pt", "losses.csv", "losses.png", "samples/*.png"),
    "generate": ("manifest.jsonl", "scores.jsonl", "meta.json", "grid.png", "scores.png", "shard-*.npy",
                 f"images/{CLASS_DIR}/seed*.png", "images/unlabelled/seed*.png"),
    "export": ("manifest.csv", "manifest.jsonl", "metadata.parquet", "dataset.json", "README.md", "shard-*.tar",
               f"{CLASS_DIR}/seed*.png", f"{CLASS_DIR}/real-*.png", "unlabelled/seed*.png", "unlabelled/real-*.png"),
    "evaluate": ("*.csv", "*.png", "*.json"),
    "report": ("index.html",),
}
SHOWN = 3  # names quoted in the refusal


class FolderNotOwnedError(PipelineError):
    """An output folder holds something its stage did not write; the stage refuses to touch it."""

    exit_code = 2


def read_owner(out: Path) -> Optional[str]:
    """The owner named by `out`'s marker, or None (no marker, or one that cannot be read)."""
    try:
        data = json.loads((Path(out) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data.get("owner") if isinstance(data, dict) and isinstance(data.get("owner"), str) else None


def _walk(out: Path) -> Iterator[tuple[str, bool]]:
    """(path relative to out with '/' separators, is a folder) for everything under out, marker excluded."""
    for root, dirs, files in os.walk(out, followlinks=False):
        rel = Path(root).relative_to(out)
        for name in sorted(dirs):
            path = Path(root) / name
            # A link to a folder is not descended into (os.walk does not follow it): it is judged as a file.
            yield (rel / name).as_posix(), not path.is_symlink()
        for name in sorted(files):
            if rel == Path(".") and name == MARKER:
                continue
            yield (rel / name).as_posix(), False


def _matches(rel: str, is_dir: bool, patterns: Iterable[str]) -> bool:
    parts = rel.split("/")
    if not is_dir and TEMP_NAME.match(parts[-1]):
        return True  # what atomic_path leaves when a run is killed mid-write (its folder is judged on its own)
    for pattern in patterns:
        pat = pattern.rstrip("/").split("/")
        if len(pat) == len(parts) and all(fnmatchcase(p, q) for p, q in zip(parts, pat)):
            return True
        # A folder on the way to an owned file (`images/0_a` for `images/*/seed*.png`) is ours too.
        if is_dir and len(pat) > len(parts) and all(fnmatchcase(p, q) for p, q in zip(parts, pat)):
            return True
    return False


def foreign_entries(out: Path, patterns: Iterable[str]) -> list[str]:
    """Everything under `out` that does not match `patterns` (a folder is listed once, not its contents)."""
    patterns = tuple(patterns)
    found: list[str] = []
    skip: list[str] = []
    for rel, is_dir in _walk(out):
        if any(rel.startswith(s + "/") for s in skip):
            continue
        if not _matches(rel, is_dir, patterns):
            found.append(rel + "/" if is_dir else rel)
            if is_dir:
                skip.append(rel)
    return found


def check_out(out: Path, owner: str) -> bool:
    """Refuse `out` unless it is absent, empty, or this owner's; True when it holds an earlier run of it."""
    out, patterns = Path(out), OWN[owner]
    if not out.exists() and not out.is_symlink():
        return False
    if not out.is_dir():
        raise FolderNotOwnedError(f"{out} is not a folder; use another --out")
    marked = read_owner(out)
    entries = list(_walk(out))
    if marked is None and not entries:
        return False
    stage = owner.split(":")[0]
    if marked is None:
        names = [rel + "/" if d else rel for rel, d in entries if "/" not in rel]
        raise FolderNotOwnedError(f"{out} holds {_quote(names)}, not written by augment {stage}; "
                                  "use another --out (nothing was changed)")
    if marked != owner:
        raise FolderNotOwnedError(f"{out} holds the output of augment {marked}, not {owner}; "
                                  "use another --out (nothing was changed)")
    foreign = foreign_entries(out, patterns)
    if foreign:
        raise FolderNotOwnedError(f"{out} holds {_quote(foreign)}, not written by augment {stage}; "
                                  "use another --out or move them away (nothing was changed)")
    return True


def mark_out(out: Path, owner: str) -> None:
    """Create `out` if needed and name this owner in its marker (before the stage's first file)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    if read_owner(out) != owner:
        write_json(Path(out) / MARKER, {"owner": owner, "note": "written by augment; the stage replaces only its own files here"})


def adopt_unmarked(out: Path, owner: str) -> bool:
    """Mark an unmarked `out` as this owner's when everything in it is a name the owner writes.

    Only for a run the user points at that folder's contents on purpose (`train --resume` continuing a
    checkpoint copied from elsewhere); every other run refuses an unmarked folder that is not empty.
    """
    out = Path(out)
    if not out.is_dir() or read_owner(out) is not None or foreign_entries(out, OWN[owner]):
        return False
    mark_out(out, owner)
    return True


def claim_out(out: Path, owner: str) -> dict[str, tuple[int, int]]:
    """`check_out`, then `mark_out`: the folder is this stage's from now on. Returns the earlier run's files
    (`own_files`; empty when there was none), for `drop_unrewritten` once this run has succeeded."""
    check_out(out, owner)
    earlier = own_files(out, owner)
    mark_out(out, owner)
    return earlier


def own_files(out: Path, owner: str) -> dict[str, tuple[int, int]]:
    """This owner's files under `out` now, each with its inode and mtime, to tell later which a run rewrote."""
    out = Path(out)
    found = {}
    for rel, is_dir in (_walk(out) if out.is_dir() else ()):
        if not is_dir and _matches(rel, False, OWN[owner]):
            st = (out / rel).stat(follow_symlinks=False)
            found[rel] = (st.st_ino, st.st_mtime_ns)
    return found


def drop_unrewritten(out: Path, earlier: dict[str, tuple[int, int]]) -> list[str]:
    """After a run succeeded: remove the earlier run's files it did not write again (same inode and mtime), and
    the folders that leaves empty, so the folder holds this run's output only. Returns what was removed."""
    out = Path(out)
    gone = []
    for rel, stamp in earlier.items():
        with contextlib.suppress(FileNotFoundError):
            st = (out / rel).stat(follow_symlinks=False)
            if (st.st_ino, st.st_mtime_ns) == stamp:
                (out / rel).unlink()
                gone.append(rel)
    for folder in sorted({Path(rel).parent for rel in gone}, key=lambda p: -len(p.parts)):
        while folder != Path(".") and not any((out / folder).iterdir()):
            (out / folder).rmdir()
            folder = folder.parent
    return gone


def _quote(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
