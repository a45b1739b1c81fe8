"""The default GAN's training step, side by side: the old step (D's weight gradients computed in G's
step and thrown away), D frozen in G's step, bf16 autocast, and G's step reusing the D step's fakes
(`train.reuse_fake`), at batch 64 and 128 (issue 19).

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

REUSED = "reuses D's fakes"


def gan_step(images, labels, batch: int, precision: str, frozen: bool, reuse: bool) -> Callable[[], None]:
    trainer = Trainer(TrainParams(batch_size=batch, precision=precision, reuse_fake=reuse), training_data(images, labels),
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
    ap.add_argument("--crop", type=Path, help="instead: the anime GAN as RESULTS measured it (G and D at 32 channels, "
                                              "DiffAugment color,translation,cutout, R1 as --r1-gamma; the recipe before "
                                              "its fifth-session changes) on this crop's training split, fp32 against bf16 (batch 64)")
    ap.add_argument("--r1-gamma", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.crop:
        anime_precisions(args)
        return
    images, labels = fashion_images(8192, 32)
    variants = [(64, "fp32", False, False), (64, "fp32", True, False), (64, "bf16", True, False),
                (64, "fp32", True, True), (64, "bf16", True, True), (128, "fp32", True, False), (128, "bf16", True, False)]
    jobs = {v: gan_step(images, labels, *v) for v in variants}
    for step in jobs.values():
        for _ in range(3):
            step()
    seconds = {v: 0.0 for v in variants}
    for _ in range(args.rounds):
        for variant, step in jobs.items():
            started = time.perf_counter()
            for _ in range(args.images // variant[0]):
                step()
            seconds[variant] += time.perf_counter() - started
    print(f"# GAN step, {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.images} images\n")
    print("| batch | precision | D in G's step | G's step | images/s | vs the old step |")
    print("| ---: | --- | --- | --- | ---: | ---: |")
    base = args.rounds * args.images / seconds[variants[0]]
    for batch, p, f, r in variants:
        rate = args.rounds * args.images / seconds[(batch, p, f, r)]
        print(f"| {batch} | {p} | {'frozen' if f else 'trainable (before)'} | {REUSED if r else 'fresh fakes'} "
              f"| {rate:.0f} | {rate / base:.2f}x |")


def anime_precisions(args: argparse.Namespace) -> None:
    """The anime GAN step as RESULTS measured it (64 px RGB, 32 channels, DiffAugment color,translation,cutout per
    group, R1) in fp32 and bf16, alternating."""
    from pipeline.train.dataset import load_training_data

    data = load_training_data(args.crop, torch.device("cpu"))
    params = TrainParams(batch_size=64, diffaugment="color,translation,cutout", r1_gamma=args.r1_gamma)
    variants = ["fp32", "bf16"]
    trainers = {p: Trainer(params.model_copy(update={"precision": p}), data, torch.device("cpu"), p) for p in variants}
    order = torch.randperm(len(data.images))
    steps = max(1, args.images // 64)
    seconds = {p: 0.0 for p in variants}
    for p, t in trainers.items():
        for i in range(3):
            t.train_step(order[i * 64:(i + 1) * 64])
    for _ in range(args.rounds):
        for p, t in trainers.items():
            started = time.perf_counter()
            for i in range(steps):
                t.step = i          # R1 on every r1_every-th step, as in a run
                j = i % (len(order) // 64)
                t.train_step(order[j * 64:(j + 1) * 64])
            seconds[p] += time.perf_counter() - started
    print(f"# the anime recipe's GAN step on {args.crop} ({tuple(data.images.shape[1:])}, {len(data.images)} images), "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"{args.rounds} rounds x {steps} steps, R1 gamma {args.r1_gamma}\n")
    print("| precision | images/s | vs fp32 |\n| --- | ---: | ---: |")
    base = args.rounds * steps * 64 / seconds["fp32"]
    for p in variants:
        rate = args.rounds * steps * 64 / seconds[p]
        print(f"| {p} | {rate:.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
