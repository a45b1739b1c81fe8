"""Speed levers for the default pipeline, side by side in one process (issue 19).

Times one training step of evaluate's classifier (pipeline.classifier, batch 128) and of the
default GAN (the shipped TrainParams: 32 channels, batch 64) on Fashion-MNIST at 32 px, and
the classifier on 64 px RGB (the anime crops' shape), in fp32 and bf16 autocast, eager and
under torch.compile. Rounds alternate the variants so a noisy machine hits all alike; the
table gives the median step time over rounds and the ratio to fp32 eager. Compile time is
the first steps' extra cost, reported beside it, so it can be set against a run's length.

    .venv/bin/python bench/bench_levers.py --rounds 3 --steps 20
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.shared.classifier import SmallCNN, _prep  # noqa: E402
from pipeline.shared.config import TrainParams  # noqa: E402
from pipeline.train.train import Trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import fashion_images, training_data  # noqa: E402


def classifier_step(images: torch.Tensor, labels: torch.Tensor, precision: str, compiled: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model = SmallCNN(images.shape[1], 10).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    fwd = torch.compile(model) if compiled else model
    gen = torch.Generator().manual_seed(1)

    def step() -> None:
        idx = torch.randint(len(images), (128,), generator=gen)
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(fwd(_prep(images[idx], torch.device("cpu"))), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def gan_step(images: np.ndarray, labels: np.ndarray, precision: str, compiled: bool) -> Callable[[], None]:
    params = TrainParams(precision=precision, compile=compiled)
    trainer = Trainer(params, training_data(images, labels), torch.device("cpu"), precision)
    batch, n = params.batch_size, len(images)
    order = torch.randperm(n)
    state = {"i": 0}

    def step() -> None:
        j = state["i"] % (n // batch)
        trainer.train_step(order[j * batch:(j + 1) * batch])
        state["i"] += 1
    return step


def timed(step: Callable[[], None], steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = fashion_images(4096, 32)
    x32 = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels).long()
    x64 = torch.randint(0, 256, (2048, 3, 64, 64), dtype=torch.uint8)   # the anime crops' shape; content does not change the cost
    y64 = torch.randint(0, 7, (2048,))
    variants = [(p, c) for c in ([False] if args.no_compile else [False, True]) for p in ("fp32", "bf16")]
    jobs = {}
    for p, c in variants:
        tag = f"{p}{' + compile' if c else ''}"
        jobs[("classifier 32 px", tag)] = classifier_step(x32, y, p, c)
        jobs[("classifier 64 px RGB", tag)] = classifier_step(x64, y64, p, c)
        jobs[("GAN default 32 px", tag)] = gan_step(images, labels, p, c)
    warm = {}
    for key, step in jobs.items():  # first steps: compile (if any) and allocator warm-up
        warm[key] = timed(step, 3) * 3
    times: dict[tuple[str, str], list[float]] = {k: [] for k in jobs}
    for _ in range(args.rounds):
        for key, step in jobs.items():
            times[key].append(timed(step, args.steps))
    print(f"# step time, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, median of {args.rounds} rounds x {args.steps} steps\n")
    print("| model | variant | ms/step | vs fp32 eager | first 3 steps (s) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for model in ("classifier 32 px", "classifier 64 px RGB", "GAN default 32 px"):
        base = statistics.median(times[(model, "fp32")])
        for p, c in variants:
            tag = f"{p}{' + compile' if c else ''}"
            t = statistics.median(times[(model, tag)])
            print(f"| {model} | {tag} | {t * 1000:.1f} | {base / t:.2f}x | {warm[(model, tag)]:.1f} |")


if __name__ == "__main__":
    main()
