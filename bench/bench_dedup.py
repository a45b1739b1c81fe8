"""Across-image dedup on drawn faces: false merges among distinct characters, catch rate on reposts.

Draws `--distinct` different characters in the hardest layout for a whole-image hash (one plain
background colour for all, head centred, only hair colour, eye colour, skin and strand tips
differ), plus reposts of the first `--reposts` of them (resized 1.3x or 0.8x, JPEG q85 / q70),
runs the real crop stage (AnimeFace, `crop.mode: faces`) and counts which faces it drops.

    flock /tmp/augment-cpu.lock .venv/bin/python bench/bench_dedup.py --distinct 300 --reposts 60
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from face_art import plain_portrait  # noqa: E402

from pipeline.crop import faces  # noqa: E402
from pipeline.shared.config import CropParams  # noqa: E402
from pipeline.shared.manifest import Record, read_manifest, write_manifest  # noqa: E402


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--distinct", type=int, default=300)
    ap.add_argument("--reposts", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records, kind = [], {}
        originals = [plain_portrait(seed) for seed in range(args.distinct)]
        items = [(encode(img, "PNG"), f"distinct-{i}") for i, img in enumerate(originals)]
        for i in range(args.reposts):
            scale, quality = ((1.3, 85), (0.8, 70))[i % 2]
            side = round(256 * scale)
            items.append((encode(originals[i].resize((side, side), Image.Resampling.BICUBIC), "JPEG", quality=quality),
                          f"repost-{i}"))
        (root / "raw" / "images").mkdir(parents=True)
        for data, name in items:
            md5 = hashlib.md5(data).hexdigest()
            ext = "jpg" if data[:2] == b"\xff\xd8" else "png"
            (root / "raw" / "images" / f"{md5}.{ext}").write_bytes(data)
            records.append(Record(file=f"images/{md5}.{ext}", md5=md5))
            kind[md5] = name
        write_manifest(root / "raw" / "manifest.jsonl", records)
        diffs: list[float] = []
        real_diff = faces.region_difference

        def spy(a, ra, b, rb):  # type: ignore[no-untyped-def]
            d = real_diff(a, ra, b, rb)
            diffs.append(d)
            return d

        faces.region_difference = spy
        rows = []
        for label, max_diff, hamming in (("pHash + same place (about the old rule)", 255.0, 6),
                                         ("pHash + same place + face region (now)", CropParams().dedup_max_diff, 6)):
            params = CropParams(mode="faces", input=root / "raw", out=root / "crop", size=64, workers=0,
                                metrics=root / "m.json", cache=root / "cache", dedup_hamming=hamming,
                                dedup_max_diff=max_diff, min_face=32)
            started = time.perf_counter()
            base = faces.crop_faces(CropParams(**{**params.model_dump(), "dedup_hamming": -1}))
            detected = {r.md5 for r in read_manifest(root / "crop" / "manifest.jsonl")}
            diffs.clear()
            faces.crop_faces(params)
            kept = {r.md5 for r in read_manifest(root / "crop" / "manifest.jsonl")}
            seconds = time.perf_counter() - started
            # A group is one character and its reposts: right when exactly one copy is kept.
            groups: dict[str, set[str]] = {}
            for m in detected:
                groups.setdefault(kind[m].split("-")[1], set()).add(m)
            lost = sum(1 for g in groups.values() if not g & kept)          # merged into another character
            with_copies = [g for g in groups.values() if len(g) > 1]
            caught = sum(1 for g in with_copies if len(g & kept) == 1)
            n, false, reposts = len(groups), lost, len(with_copies)
            rows.append((label, n, false, reposts, caught, len(diffs), seconds, base.kept))
            print(label, "smallest region differences:", np.round(sorted(diffs)[:reposts + 10], 1).tolist())
        faces.region_difference = real_diff
        print(f"{args.distinct} distinct drawn faces (plain background, centred), {args.reposts} reposts "
              "(1.3x JPEG q85 / 0.8x JPEG q70); faces counted where AnimeFace found them")
        print("| rule | characters found | characters lost (merged into another) | with a repost found | reposts merged | region comparisons |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, n, false, r, caught, compared, _, _ in rows:
            print(f"| {label} | {n} | {false} ({false / max(n, 1):.1%}) | {r} | {caught} ({caught / max(r, 1):.1%}) | {compared} |")


if __name__ == "__main__":
    main()
