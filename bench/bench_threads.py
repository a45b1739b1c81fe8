"""The default GAN step on 1 and on 2 threads: its speed, and whether its numbers depend on the thread count (issue 19).

Two questions behind "train the label judge in a worker beside the GAN": how much a second
thread gives the GAN (the share the judge's process would take), and whether the GAN's weights
are the same whatever its thread count (if not, switching threads when the judge finishes, a
time-dependent step, would make a seeded run irreproducible).

    .venv/bin/python bench/bench_threads.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gan_step import gan_step  # noqa: E402
from bench_train import fashion_images, training_data  # noqa: E402
from pipeline.shared.config import TrainParams  # noqa: E402
from pipeline.train.train import Trainer  # noqa: E402


def weights_after(images, labels, threads: int, precision: str, steps: int = 6) -> torch.Tensor:
    torch.set_num_threads(threads)
    trainer = Trainer(TrainParams(batch_size=64, precision=precision), training_data(images, labels),
                      torch.device("cpu"), precision)
    for i in range(steps):
        trainer.train_step(torch.arange(i * 64, (i + 1) * 64))
    return torch.cat([p.detach().flatten() for p in trainer.g.parameters()])


def main() -> None:
    images, labels = fashion_images(4096, 32)
    step = gan_step(images, labels, 64, "bf16", True, False)
    print("| threads | images/s (2 rounds) |\n| ---: | --- |")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for threads in (2, 1, 2, 1):
        torch.set_num_threads(threads)
        for _ in range(5):
            step()
        started = time.perf_counter()
        for _ in range(40):
            step()
        rates[threads].append(40 * 64 / (time.perf_counter() - started))
    for threads, r in rates.items():
        print(f"| {threads} | {', '.join(f'{x:,.0f}' for x in r)} |")
    for precision in ("bf16", "fp32"):
        diff = (weights_after(images, labels, 1, precision) - weights_after(images, labels, 2, precision)).abs().max()
        print(f"{precision}: G's weights after 6 steps, 1 thread against 2: max |difference| {diff.item():.2e}")


if __name__ == "__main__":
    main()
