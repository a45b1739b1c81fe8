"""DVC with the real `augment export` stage: no-op `dvc repro` and `dvc status` over N exported images, shards vs PNG files.

    .venv/bin/python bench/bench_dvc_export.py [--n 100000] [--repeats 3] [--formats webdataset,imagefolder]
                                               [--shard-size 10000] [--tmp /tmp] [--keep]

bench/bench_dvc.py times DVC on outputs *shaped* like ours; this one runs our own export stage. A generate
folder of N random 32 x 32 grey images (`.npy` shards + manifest.jsonl + meta.json, as `generate.format: npy`
writes; no model needed) is the stage's dependency, in one throw-away git + DVC repo per export format whose
`dvc.yaml` has the single stage `augment export` (out: data/export). Timed: the first `dvc repro` (the export
itself, hashing and caching), then `--repeats` interleaved no-op `dvc repro` and `dvc status` runs (median),
each checked to run nothing and report everything up to date. Helpers (`sh`, the DVC env) are bench_dvc's.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dvc import DVC, VENV_BIN, sh  # noqa: E402
from pipeline.shared.io import write_json, write_shards  # noqa: E402
from pipeline.shared.manifest import Record, write_manifest  # noqa: E402

CLASSES = [f"class{i}" for i in range(10)]


def fake_generated(folder: Path, n: int) -> None:
    """A generate output of n images in npy shards, with the manifest and meta.json export reads."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    images = rng.integers(0, 256, (n, 32, 32, 1), np.uint8)
    records = [Record(file=file, index=index, label=CLASSES[i % 10], label_id=i % 10, source="synthetic",
                      score=float(i % 97) / 97, seed=i, rank=i // 10 + 1)
               for i, (file, index) in enumerate(write_shards(folder, images, 50_000))]
    write_manifest(folder / "manifest.jsonl", records)
    write_json(folder / "meta.json", {"classes": CLASSES, "checkpoint_sha256": "0" * 64, "params": {}})


def build_repo(root: Path, fmt: str, shard_size: int, env: dict[str, str]) -> Path:
    repo = root / fmt
    repo.mkdir()
    shutil.copytree(root / "generated", repo / "generated")
    (repo / "params.yaml").write_text(
        f"export:\n  input: generated\n  real: generated\n  out: data/export\n  include_real: false\n"
        f"  format: {fmt}\n  shard_size: {shard_size}\n  seed: 0\n")
    (repo / "dvc.yaml").write_text(
        f"stages:\n  export:\n    cmd: {VENV_BIN / 'augment'} export\n    deps:\n      - generated\n"
        "    params:\n      - export\n    outs:\n      - data/export\n")
    sh(["git", "init", "-q"], repo, env)
    sh([DVC, "init", "-q"], repo, env)
    for key, value in (("core.analytics", "false"), ("core.check_update", "false"),
                       ("core.site_cache_dir", str(root / f"site-cache-{fmt}"))):
        sh([DVC, "config", key, value], repo, env)
    return repo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default="webdataset,imagefolder")
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    root = Path(tempfile.mkdtemp(prefix="bench_dvc_export.", dir=a.tmp))
    rows = []
    try:
        fake_generated(root / "generated", a.n)
        repos = {fmt: build_repo(root, fmt, a.shard_size, env) for fmt in a.formats.split(",")}
        first = {}
        for fmt, repo in repos.items():
            log(f"[{fmt}] first dvc repro (n={a.n}) ...")
            first[fmt], _ = sh([DVC, "repro"], repo, env)
        noop: dict[str, list[float]] = {fmt: [] for fmt in repos}
        status: dict[str, list[float]] = {fmt: [] for fmt in repos}
        for i in range(a.repeats):
            for fmt, repo in repos.items():
                seconds, out = sh([DVC, "repro"], repo, env)
                if "Running stage" in out:
                    raise RuntimeError(f"[{fmt}] the no-op dvc repro re-ran the stage:\n{out}")
                noop[fmt].append(seconds)
                seconds, out = sh([DVC, "status"], repo, env)
                if "up to date" not in out:
                    raise RuntimeError(f"[{fmt}] dvc status does not report up to date:\n{out}")
                status[fmt].append(seconds)
                log(f"[{fmt}] run {i + 1}: no-op repro {noop[fmt][-1]:.2f} s, status {status[fmt][-1]:.2f} s")
        for fmt, repo in repos.items():
            files = sum(len(f) for _, _, f in os.walk(repo / "data" / "export"))
            rows.append(f"| {fmt} | {files:,} | {first[fmt]:.1f} | {statistics.median(noop[fmt]):.2f} "
                        f"({min(noop[fmt]):.2f}-{max(noop[fmt]):.2f}) | {statistics.median(status[fmt]):.2f} |")
        print(f"N = {a.n:,} exported images, shard_size {a.shard_size}; median of {a.repeats}\n")
        print("| export.format | files in out | first repro s | no-op `dvc repro` s (range) | `dvc status` s |")
        print("|---|---:|---:|---:|---:|")
        print("\n".join(rows), flush=True)
    finally:
        if a.keep:
            log(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
