"""DVC overhead on many small files vs a few shards: first `dvc repro`, no-op `dvc repro`, `dvc status`.

    .venv/bin/python bench/bench_dvc.py [--n 100000] [--repeats 3] [--variants files,shards,mixed]
                                        [--keep] [--tmp /tmp] [--json out.json]

For each variant a throw-away git + DVC repo is built under a temp folder (removed at the end
unless `--keep`) with three chained stages, crawl -> crop -> generate, each a tiny python
script (`stage.py`, written into the repo) that writes `--n` images in one of three formats:

- `files`: one small PNG per image (32x32 RGB, about 0.4 KB; a handful of PNGs is encoded
  once and every file gets a unique tEXt chunk, so all md5s differ) in the layout our stage
  writes: crawl `images/<md5>.png`, crop `images/<i>.png`, generate
  `images/<label>/seed<N>.png`; plus `manifest.jsonl`.
- `tar`: the same PNG bytes packed into tar shards of at most 50,000 members (WebDataset
  style), for outputs that must stay encoded images (a konachan crawl); manifest + preview.png.
- `npy`: uint8 N x 32 x 32 x 1 `.npy` shards of at most 50,000 images, as `write_shards`
  writes for crop and embedded-dataset crawls; manifest + preview.png.

Variants (formats of crawl / crop / generate, plus DVC settings):
  files           files / files / files                 cache.type default (reflink,copy)
  shards          tar / npy / npy                       default
  mixed           tar / npy / files  ("generate as files, others sharded")
  konachan        files / npy / files  (today's pipeline with a konachan crawl)
  files-hardlink  files / files / files                 cache.type hardlink
  files-symlink   files / files / files                 cache.type symlink
  files-nocache   files / files / files                 every out `cache: false`

What is timed is DVC's overhead: the stage scripts' own seconds are reported beside the first
repro. No-op repro and status are repeated `--repeats` times (interleaved), median reported;
each no-op run is checked to have run no stage and status to report everything up to date.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
DVC = str(VENV_BIN / "dvc") if (VENV_BIN / "dvc").exists() else shutil.which("dvc") or "dvc"

VARIANTS: dict[str, tuple[tuple[str, str, str], str | None, bool]] = {
    # name: ((crawl, crop, generate) formats, cache.type or None for DVC's default, cache outs)
    "files": (("files", "files", "files"), None, True),
    "shards": (("tar", "npy", "npy"), None, True),
    "mixed": (("tar", "npy", "files"), None, True),
    "konachan": (("files", "npy", "files"), None, True),
    "files-hardlink": (("files", "files", "files"), "hardlink", True),
    "files-symlink": (("files", "files", "files"), "symlink", True),
    "files-nocache": (("files", "files", "files"), None, False),
}
STAGES = (("crawl", "data/raw", None), ("crop", "data/crop", "data/raw"), ("generate", "data/generated", "data/crop"))

STAGE_SCRIPT = r'''
"""Synthetic stage for bench/bench_dvc.py: writes augment-shaped outputs quickly."""
import argparse, hashlib, io, json, os, struct, tarfile, time, zlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

SIDE, SHARD, LABELS = 32, 50_000, [f"class{i}" for i in range(10)]


def base_pngs(seed, k=16):
    """k distinct small PNGs, encoded once."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        small = rng.integers(0, 256, (8, 8, 3), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize((SIDE, SIDE), Image.NEAREST).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def tagged(png, text):
    """The PNG with a tEXt chunk inserted before IEND (the last 12 bytes): a unique file."""
    data = b"id\x00" + text.encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:-12] + chunk + png[-12:]


def replace_write(path, data):
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_preview(path, rng, count):
    tiles = rng.integers(0, 256, (min(count, 120), SIDE, SIDE, 3), np.uint8)
    rows = (len(tiles) + 11) // 12
    grid = np.full((rows * (SIDE + 2) + 2, 12 * (SIDE + 2) + 2, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, 12)
        grid[2 + r * (SIDE + 2):2 + r * (SIDE + 2) + SIDE, 2 + c * (SIDE + 2):2 + c * (SIDE + 2) + SIDE] = t
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, "PNG")
    replace_write(path, buf.getvalue())


def write_files(stage, out, n, bases):
    records = []
    if stage == "generate":
        for label in LABELS:
            (out / "images" / label).mkdir(parents=True, exist_ok=True)
    else:
        (out / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data = tagged(bases[i % len(bases)], f"{stage}-{i}")
        md5 = hashlib.md5(data).hexdigest()
        if stage == "crawl":
            name = f"images/{md5}.png"
        elif stage == "crop":
            name = f"images/{i:07d}.png"
        else:
            name = f"images/{LABELS[i % len(LABELS)]}/seed{i}.png"
        with open(out / name, "wb") as fh:  # one open + write per file, as a PNG writer does
            fh.write(data)
        records.append({"file": name, "label": LABELS[i % len(LABELS)], "md5": md5, "id": i})
    return records


def write_tar(stage, out, n, bases):
    records = []
    for shard_no, start in enumerate(range(0, n, SHARD)):
        name = f"{stage}-{shard_no:05d}.tar"
        tmp = out / f".{name}.tmp"
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(start, min(start + SHARD, n)):
                data = tagged(bases[i % len(bases)], f"{stage}-{i}")
                md5 = hashlib.md5(data).hexdigest()
                info = tarfile.TarInfo(f"{md5}.png")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
                records.append({"file": name, "member": f"{md5}.png", "label": LABELS[i % len(LABELS)],
                                "md5": md5, "id": i})
        os.replace(tmp, out / name)
    return records


def write_npy(stage, out, n, rng):
    records = []
    for shard_no, start in enumerate(range(0, n, SHARD)):
        name = f"shard-{shard_no:05d}.npy"
        count = min(SHARD, n - start)
        tmp = out / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, rng.integers(0, 256, (count, SIDE, SIDE, 1), np.uint8))
        os.replace(tmp, out / name)
        records.extend({"file": name, "index": j, "label": LABELS[(start + j) % len(LABELS)],
                        "label_id": (start + j) % len(LABELS), "id": start + j} for j in range(count))
    return records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stage")
    ap.add_argument("--out", required=True)
    ap.add_argument("--input")
    ap.add_argument("--fmt", required=True, choices=["files", "tar", "npy"])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--timings", required=True)
    a = ap.parse_args()
    started = time.perf_counter()
    seed = yaml.safe_load(open("params.yaml"))[a.stage]["seed"]
    if a.input:  # read the upstream manifest, as the real stages do
        with open(Path(a.input) / "manifest.jsonl") as fh:
            upstream = sum(1 for _ in fh)
        assert upstream == a.n, (upstream, a.n)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bases = base_pngs(seed)
    if a.fmt == "files":
        records = write_files(a.stage, out, a.n, bases)
    elif a.fmt == "tar":
        records = write_tar(a.stage, out, a.n, bases)
    else:
        records = write_npy(a.stage, out, a.n, rng)
    save_preview(out / ("grid.png" if a.stage == "generate" else "preview.png"), rng, a.n)
    replace_write(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    Path(a.timings).write_text(str(time.perf_counter() - started))


main()
'''


@dataclass
class Result:
    variant: str
    formats: tuple[str, str, str]
    cache_type: str
    files_tracked: int = 0
    megabytes: float = 0.0
    first_repro: float = 0.0
    stage_scripts: float = 0.0
    noop_repro: list[float] = field(default_factory=list)
    status: list[float] = field(default_factory=list)


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} ({proc.returncode}):\n{proc.stdout[-4000:]}")
    return seconds, proc.stdout


def dvc_yaml(formats: tuple[str, str, str], n: int, timings: Path, cache: bool) -> str:
    lines = ["stages:"]
    for (stage, out, inp), fmt in zip(STAGES, formats):
        cmd = f"{sys.executable} stage.py {stage} --out {out} --fmt {fmt} --n {n} --timings {timings / stage}"
        if inp:
            cmd += f" --input {inp}"
        lines += [f"  {stage}:", f"    cmd: {cmd}", "    deps:", "      - stage.py"]
        if inp:
            lines.append(f"      - {inp}")
        lines += ["    params:", f"      - {stage}", "    outs:"]
        lines.append(f"      - {out}" if cache else f"      - {out}:\n          cache: false")
    return "\n".join(lines) + "\n"


def build_repo(root: Path, name: str, n: int, env: dict[str, str]) -> tuple[Path, Path, Result]:
    formats, cache_type, cache = VARIANTS[name]
    repo, timings = root / name, root / f"timings-{name}"
    repo.mkdir()
    timings.mkdir()
    (repo / "stage.py").write_text(STAGE_SCRIPT.lstrip())
    (repo / "params.yaml").write_text("".join(f"{s}:\n  seed: {i}\n" for i, (s, _, _) in enumerate(STAGES)))
    (repo / "dvc.yaml").write_text(dvc_yaml(formats, n, timings, cache))
    sh(["git", "init", "-q"], repo, env)
    sh([DVC, "init", "-q"], repo, env)
    for key, value in (("core.analytics", "false"), ("core.check_update", "false"),
                       ("core.site_cache_dir", str(root / f"site-cache-{name}"))):
        sh([DVC, "config", key, value], repo, env)
    if cache_type:
        sh([DVC, "config", "cache.type", cache_type], repo, env)
    label = cache_type or "reflink,copy (default; copy on ext4)"
    if not cache:
        label += ", outs cache: false"
    return repo, timings, Result(name, formats, label)


def measure(root: Path, name: str, n: int, repeats: int, env: dict[str, str], log) -> Result:
    repo, timings, res = build_repo(root, name, n, env)
    log(f"[{name}] first dvc repro (n={n}) ...")
    res.first_repro, out = sh([DVC, "repro"], repo, env)
    res.stage_scripts = sum(float((timings / s).read_text()) for s, _, _ in STAGES)
    for _, out_dir, _ in STAGES:
        for dirpath, _, files in os.walk(repo / out_dir):
            res.files_tracked += len(files)
            res.megabytes += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files) / 1e6
    log(f"[{name}] first repro {res.first_repro:.1f} s (stage scripts {res.stage_scripts:.1f} s), "
        f"{res.files_tracked} files, {res.megabytes:.0f} MB")
    stamps = {s: (timings / s).stat().st_mtime_ns for s, _, _ in STAGES}
    for i in range(repeats):
        seconds, out = sh([DVC, "repro"], repo, env)
        if "Running stage" in out or {s: (timings / s).stat().st_mtime_ns for s, _, _ in STAGES} != stamps:
            raise RuntimeError(f"[{name}] the no-op dvc repro re-ran a stage:\n{out}")
        res.noop_repro.append(seconds)
        seconds, out = sh([DVC, "status"], repo, env)
        if "up to date" not in out:
            raise RuntimeError(f"[{name}] dvc status does not report up to date:\n{out}")
        res.status.append(seconds)
        log(f"[{name}] run {i + 1}: no-op repro {res.noop_repro[-1]:.2f} s, status {res.status[-1]:.2f} s")
    return res


def table(results: list[Result], n: int) -> str:
    base = next((r for r in results if r.variant == "shards"), None)
    med = statistics.median
    rows = [f"N = {n:,} images per stage; no-op and status: median of {len(results[0].noop_repro)}",
            "",
            "| variant | crawl / crop / generate | cache.type | files in outs | MB | first repro s (stage scripts s) "
            "| no-op repro s | dvc status s | no-op vs shards | status vs shards |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = (f"{med(r.noop_repro) / med(base.noop_repro):.1f}x", f"{med(r.status) / med(base.status):.1f}x") \
            if base else ("", "")
        rows.append(f"| {r.variant} | {' / '.join(r.formats)} | {r.cache_type} | {r.files_tracked:,} | "
                    f"{r.megabytes:.0f} | {r.first_repro:.1f} ({r.stage_scripts:.1f}) | {med(r.noop_repro):.2f} | "
                    f"{med(r.status):.2f} | {ratio[0]} | {ratio[1]} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="images per stage (default 100,000)")
    ap.add_argument("--repeats", type=int, default=3, help="no-op repro / status runs per variant (median)")
    ap.add_argument("--variants", default="files,shards,mixed",
                    help=f"comma-separated, from: {', '.join(VARIANTS)} (default files,shards,mixed)")
    ap.add_argument("--tmp", default=None, help="parent of the temp folder (default: the system temp dir, /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp repos and print where they are")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw timings here")
    a = ap.parse_args()
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if a.n < 1 or a.repeats < 1:
        ap.error("--n and --repeats must be >= 1")

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    version = subprocess.run([DVC, "--version"], stdout=subprocess.PIPE, text=True, env=env).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="bench_dvc.", dir=a.tmp))
    results: list[Result] = []
    try:
        for name in names:
            results.append(measure(root, name, a.n, a.repeats, env, log))
            log("table so far:\n" + table(results, a.n))
        # Results first: removing 600,000 small files can take longer than the benchmark itself.
        print(f"DVC {version}, Python {platform.python_version()}, {os.cpu_count()} CPUs (nproc), "
              f"{platform.system()} {platform.release()}, {datetime.date.today().isoformat()}\n", flush=True)
        print(table(results, a.n), flush=True)
        if a.json:
            a.json.write_text(json.dumps({"n": a.n, "dvc": version, "results": [r.__dict__ for r in results]},
                                         indent=2))
    finally:
        if a.keep:
            log(f"kept: {root}")
        else:
            log(f"removing {root} ...")
            shutil.rmtree(root, ignore_errors=True)
            log("removed")


if __name__ == "__main__":
    main()
