"""Ranked generation: how close the whole stage runs to the speed of the model itself.

In one process, with the same checkpoint, batch size and precision:
1. the pure G+D forward throughput (latents drawn up front, nothing kept or written);
2. `generate.run` with `--ranked --oversample K` (seeding, scoring, top-N, rendering and
   PNG encoding in a writer process): candidates/s, images written/s and the fraction of (1);
3. peak RSS of `augment generate --scores-only` in a subprocess for growing oversampling
   factors, to show memory does not grow with K.

    .venv/bin/python bench/bench_generate.py --checkpoint runs/train/checkpoint.pt --count 2000
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.generate import generate  # noqa: E402
from pipeline.generate.sampling import Sampler  # noqa: E402
from pipeline.shared.config import GenerateParams  # noqa: E402
from pipeline.shared.device import autocast  # noqa: E402


def pure_forward(sampler: Sampler, n: int, batch: int) -> float:
    """Candidates per second of G then D alone, on latents drawn beforehand."""
    z = torch.randn(n, sampler.cfg.z_dim)
    y = torch.arange(n) % sampler.num_labels
    with torch.no_grad(), autocast(sampler.device, sampler.precision):
        sampler.d(sampler.g(z[:batch], y[:batch]), y[:batch])  # warm-up
        started = time.perf_counter()
        for i in range(0, n, batch):
            sampler.d(sampler.g(z[i:i + batch], y[i:i + batch]), y[i:i + batch])
    return n / (time.perf_counter() - started)


def stage(checkpoint: Path, count: int, oversample: int, batch: int, precision: str, writers: int, rank: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        params = GenerateParams(checkpoint=checkpoint, out=Path(tmp) / "gen", count=count, oversample=oversample,
                                batch_size=batch, precision=precision, writers=writers, rank=rank)
        started = time.perf_counter()
        summary = generate.run(params)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "candidates": summary.candidates, "written": summary.written,
            "scoring_seconds": summary.seconds_scoring}


def peak_rss_mb(checkpoint: Path, count: int, oversample: int, batch: int, rank: str) -> float:
    """Peak RSS of a scores-only generate run in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        code = ("import sys, resource; from pipeline.generate import generate; from pipeline.shared.config import GenerateParams as P; "
                f"generate.run(P(checkpoint={str(checkpoint)!r}, out={tmp!r} + '/g', count={count}, "
                f"oversample={oversample}, batch_size={batch}, rank={rank!r}, scores_only=True)); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/train/checkpoint.pt"))
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--oversample", type=int, default=10)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--rss-count", type=int, default=100_000)
    ap.add_argument("--rss-oversample", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rank", default="filter", help="generate.rank: filter (the default; runs the label judge too) or topk (D alone)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"# ranked generation, {os.cpu_count()} cores, torch {torch.__version__}, batch {args.batch}, "
          f"count {args.count} x oversample {args.oversample}, rank {args.rank}\n")
    print("| precision | pure G+D cand/s | stage cand/s | images written/s | stage / pure |")
    print("| --- | --- | --- | --- | --- |")
    for precision in args.precisions:
        sampler = Sampler.from_checkpoint(args.checkpoint, torch.device("cpu"), precision)
        pure = pure_forward(sampler, args.count * args.oversample, args.batch)
        run = stage(args.checkpoint, args.count, args.oversample, args.batch, precision, args.writers, args.rank)
        cps = run["candidates"] / run["seconds"]
        print(f"| {precision} | {pure:.0f} | {cps:.0f} | {run['written'] / run['seconds']:.0f} | {cps / pure:.2f} |",
              flush=True)
    print("\n| scores-only count | oversample | candidates | peak RSS MiB |")
    print("| --- | --- | --- | --- |")
    for k in args.rss_oversample:
        rss = peak_rss_mb(args.checkpoint, args.rss_count, k, args.batch, args.rank)
        print(f"| {args.rss_count} | {k} | {args.rss_count * k} | {rss:.0f} |", flush=True)


if __name__ == "__main__":
    main()
