"""evaluate's classifiers: one process on every core vs one-thread worker processes side by side (issue 19).

The same jobs either way: `--jobs` classifiers of `--steps` steps (evaluate's fixed CNN, batch
128, bf16 where the CPU has it, as `evaluate.precision: auto`) on 20,000 Fashion-MNIST images
(32 px), each tested on 2,000 others, trained in this process on `--threads` threads, then in
`evaluate.workers`' pool (one thread per worker). Prints the wall times, their ratio and every
accuracy (they differ in the last digits only: the thread count changes float sums).

    .venv/bin/python bench/bench_workers.py --jobs 6 --steps 300
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.shared.classifier import TrainConfig, fit_and_test  # noqa: E402
from pipeline.shared.device import resolve_precision  # noqa: E402
from pipeline.shared.workers import process_pool, usable_cores  # noqa: E402


def main() -> None:
    from bench_train import fashion_images

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--workers", type=int, default=usable_cores())
    ap.add_argument("--threads", type=int, default=usable_cores())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    im, lb = fashion_images(22000, 32)
    x, y = torch.from_numpy(im).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(lb).long()
    precision = resolve_precision("auto", torch.device("cpu"), cpu_auto="bf16")
    jobs = [(x[:20000], y[:20000], 10, TrainConfig(steps=args.steps, seed=s, precision=precision),
             x[20000:], np.asarray(lb[20000:])) for s in range(args.jobs)]
    started = time.perf_counter()
    serial = [fit_and_test(*job)[0] for job in jobs]
    t_serial = time.perf_counter() - started
    threads = max(1, usable_cores() // args.workers)
    with process_pool(args.workers) as pool:
        tiny = (x[:256], y[:256], 10, TrainConfig(steps=2), x[:64], np.asarray(lb[:64]))
        for f in [pool.submit(fit_and_test, *tiny, threads=threads) for _ in range(args.workers)]:
            f.result()   # the workers are started (torch imported) before the clock runs
        started = time.perf_counter()
        futures = [pool.submit(fit_and_test, *job, threads=threads) for job in jobs]
        pooled = [f.result()[0] for f in futures]
        t_pool = time.perf_counter() - started
    print(f"# {args.jobs} classifiers x {args.steps} steps ({precision}), {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}\n")
    print("| how | wall s | vs one process |\n| --- | ---: | ---: |")
    print(f"| one process, {args.threads} threads | {t_serial:.1f} | 1.00x |")
    print(f"| {args.workers} worker processes, {threads} thread each | {t_pool:.1f} | {t_serial / t_pool:.2f}x |")
    print(f"\naccuracies, one process: {[round(a, 4) for a in serial]}\naccuracies, workers:     {[round(a, 4) for a in pooled]}")


if __name__ == "__main__":
    main()
