"""Face-crop throughput: `crop.mode: faces` on all cores vs a plain single-process loop.

    .venv/bin/python bench/bench_crop.py [--images 48] [--side 512] [--repeats 2]

Input: `--images` drawn anime heads (tests/face_art.py, seeded) of `--side` px, written as
PNGs into a crawl-style folder. Rows, over the same images:
- plain loop: for each image in one process, decode, `animeface.detect`, square crop with the
  margin, LANCZOS resize; no cache, labels, dedup or output files (what a first script does);
- the stage with 1 worker and with all cores (`workers: 0`), from an empty cache: decode,
  detect, hair colour, crop, hash, labels, dedup and the full output (shards, manifest,
  meta, preview, metrics);
- the stage re-run with the cache left by the run before (what `dvc repro` after a params
  change to labels or filters costs).
Prints a markdown table of wall and CPU seconds (this process plus its workers), crops/s
and the ratio to the plain loop. On a machine shared with other work, compare CPU seconds.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from face_art import HAIR_COLOURS, anime_face  # noqa: E402
from pipeline.crop.faces import crop_faces, square_around  # noqa: E402
from pipeline.shared.config import CropParams  # noqa: E402
from pipeline.shared.manifest import Record, write_manifest  # noqa: E402
from pipeline.shared.workers import usable_cores  # noqa: E402

MARGIN, SIZE = 0.3, 64


def make_crawl(folder: Path, count: int, side: int) -> None:
    records = []
    (folder / "images").mkdir(parents=True)
    for seed in range(count):
        img, _ = anime_face(seed, side, list(HAIR_COLOURS)[seed % len(HAIR_COLOURS)])
        buf = io.BytesIO()
        img.save(buf, "PNG")
        md5 = hashlib.md5(buf.getvalue()).hexdigest()
        (folder / "images" / f"{md5}.png").write_bytes(buf.getvalue())
        records.append(Record(file=f"images/{md5}.png", md5=md5, id=seed))
    write_manifest(folder / "manifest.jsonl", records)


def plain_loop(folder: Path) -> int:
    """Detect, crop and resize every image in one process; returns the number of crops."""
    import animeface

    crops = []
    for path in sorted((folder / "images").glob("*.png")):
        img = Image.open(path).convert("RGB")
        for face in animeface.detect(img)[:1]:
            if face.likelihood < 0.5:
                continue
            p = face.face.pos
            x0, y0, side = square_around((p.x, p.y, p.width, p.height), MARGIN)
            square = img.crop((x0, y0, x0 + side, y0 + side))   # PIL fills outside with black
            crops.append(np.asarray(square.resize((SIZE, SIZE), Image.Resampling.LANCZOS)))
    return len(crops)


def stage(folder: Path, work: Path, workers: int, fresh: bool) -> int:
    if fresh:
        shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(work / "crop", ignore_errors=True)
    params = CropParams(mode="faces", input=folder, out=work / "crop", metrics=work / "crop.json",
                        cache=work / "cache", size=SIZE, margin=MARGIN, workers=workers, label_from="hair_color",
                        dedup_hamming=-1)
    return crop_faces(params).kept


def cpu_seconds() -> float:
    """User + system time of this process and its reaped children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def best_of(repeats: int, fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, crops) of the fastest of `repeats` runs."""
    best, cpu, n = float("inf"), 0.0, 0
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), cpu_seconds()
        n = fn()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, cpu_seconds() - start_cpu
    return best, cpu, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_crawl(work / "raw", args.images, args.side)
        rows = [("plain loop (1 process, detect + crop + resize)", *best_of(args.repeats, lambda: plain_loop(work / "raw")))]
        rows.append(("augment crop --mode faces, 1 worker, empty cache",
                     *best_of(args.repeats, lambda: stage(work / "raw", work, 1, fresh=True))))
        rows.append((f"augment crop --mode faces, all cores ({usable_cores()}), empty cache",
                     *best_of(args.repeats, lambda: stage(work / "raw", work, 0, fresh=True))))
        rows.append(("augment crop --mode faces, re-run (cache filled)",
                     *best_of(args.repeats, lambda: stage(work / "raw", work, 0, fresh=False))))
    base = rows[0][1]
    print(f"{args.images} images of {args.side}x{args.side} px, crops of {SIZE} px, margin {MARGIN}; "
          f"Python {platform.python_version()}, {usable_cores()} cores\n")
    print("| run | seconds | CPU seconds | crops | crops/s | vs plain loop |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, cpu, n in rows:
        print(f"| {name} | {seconds:.2f} | {cpu:.2f} | {n} | {n / seconds:.1f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
