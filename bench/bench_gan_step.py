"""The default GAN's training step, side by side: the old step (D's weight gradients computed in G's
step and thrown away), D frozen in G's step, and bf16 autocast, at batch 64 and 128 (issue 19).

Every variant is the train stage's own `Trainer` on the same 8,192 Fashion-MNIST images (32 px,
the shipped TrainParams: 32 channels); rounds alternate the variants so a noisy machine hits all
alike; images per second summed over rounds.

    .venv/bin/python bench/bench_gan_step.py --rounds 3
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import fashion_images, training_data  # noqa: E402
from pipeline.shared.config import TrainParams  # noqa: E402
from pipeline.train.train import Trainer  # noqa: E402


def gan_step(images, labels, batch: int, precision: str, frozen: bool) -> Callable[[], None]:
    trainer = Trainer(TrainParams(batch_size=batch, precision=precision), training_data(images, labels),
                      torch.device("cpu"), precision)
    if not frozen:   # the step before: D's weights keep requires_grad in G's step
        trainer.d.requires_grad_ = lambda requires_grad=True: trainer.d   # type: ignore[method-assign]
    order, state = torch.randperm(len(images)), {"i": 0}

    def step() -> None:
        i = state["i"] % (len(images) // batch)
        trainer.train_step(order[i * batch:(i + 1) * batch])
        state["i"] += 1
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=2048, help="images per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = fashion_images(8192, 32)
    variants = [(64, "fp32", False), (64, "fp32", True), (64, "bf16", True), (128, "fp32", True), (128, "bf16", True)]
    jobs = {v: gan_step(images, labels, *v) for v in variants}
    for step in jobs.values():
        for _ in range(3):
            step()
    seconds = {v: 0.0 for v in variants}
    for _ in range(args.rounds):
        for (batch, p, f), step in jobs.items():
            started = time.perf_counter()
            for _ in range(args.images // batch):
                step()
            seconds[(batch, p, f)] += time.perf_counter() - started
    print(f"# GAN step, {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.images} images\n")
    print("| batch | precision | D in G's step | images/s | vs the old step |")
    print("| ---: | --- | --- | ---: | ---: |")
    base = args.rounds * args.images / seconds[variants[0]]
    for batch, p, f in variants:
        rate = args.rounds * args.images / seconds[(batch, p, f)]
        print(f"| {batch} | {p} | {'frozen' if f else 'trainable (before)'} | {rate:.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
