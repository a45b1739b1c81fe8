"""What an epoch's end costs the train stage beside its steps, and a short run at two checkouts side by side.

At each epoch's end train draws the sample grid with EMA G (after re-estimating its batch-norm
statistics: standing stats) and measures the grid's within-class variety against the real
images. On the anime recipe (64 px RGB, ~23 steps an epoch) that work can cost as much as the
epoch's steps. Two parts:

- `components`: one epoch of steps, standing stats as generate runs them (16 x 256 samples, fp32)
  and as the epoch grid runs them now (4 x 256, the training precision), and the variety measure
  with and without the real side kept between epochs;
- `--checkouts A B`: `train.run` for `--epochs` epochs in a fresh process per checkout, alternating,
  `--rounds` times: images/s over the whole run and whether the losses match byte for byte.

    flock /tmp/augment-cpu.lock .venv/bin/python bench/bench_epoch_end.py --crop CROP --checkouts OLD NEW
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = """
import sys
from pathlib import Path
from pipeline.shared.config import TrainParams
from pipeline.train import train
out = Path(sys.argv[1])
p = TrainParams(input=Path(sys.argv[2]), out=out, metrics=out / "train.json", epochs=int(sys.argv[3]), batch_size=64,
                diffaugment="translation,cutout", r1_gamma=1.0, g_channels=64, judge_steps=0, seed=0)
train.run(p)
print(train.__file__)
"""


def components(crop: Path, threads: int) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.shared.config import TrainParams
    from pipeline.shared.device import autocast
    from pipeline.shared.variety import class_variety
    from pipeline.train.dataset import load_training_data
    from pipeline.train.models import standing_stats
    from pipeline.train.train import Trainer

    torch.set_num_threads(threads)
    data = load_training_data(crop, torch.device("cpu"))
    t = Trainer(TrainParams(batch_size=64, diffaugment="translation,cutout", r1_gamma=1.0, g_channels=64,
                            out=Path(tempfile.mkdtemp())), data, torch.device("cpu"), "bf16")
    real, real_labels = data.images.permute(0, 2, 3, 1).numpy(), data.labels.numpy()
    fake, fake_labels = real[:70], np.repeat(np.arange(len(data.classes)), 10)[:70]
    kept: dict = {}
    class_variety(fake, fake_labels, real, real_labels, data.classes, 200, 45, real_figures=kept)

    def epoch() -> None:
        for i in range(t.steps_per_epoch):
            t.step = i
            t.train_step(torch.arange(i * 64, (i + 1) * 64))

    def stats(batches: int, precision: str) -> None:
        with autocast(t.device, precision):
            standing_stats(t.g_ema, t.cfg, t.device, batches=batches)

    rows = [("one epoch of steps", epoch),
            ("standing stats, 16 x 256, fp32 (as generate; the grid before)", lambda: stats(16, "fp32")),
            ("standing stats, 4 x 256, bf16 (the grid now)", lambda: stats(4, "bf16")),
            ("variety, real side measured every epoch (before)",
             lambda: class_variety(fake, fake_labels, real, real_labels, data.classes, 200, 45)),
            ("variety, real side kept (now)",
             lambda: class_variety(fake, fake_labels, real, real_labels, data.classes, 200, 45, real_figures=kept))]
    print(f"# one epoch's end, anime recipe G (64 channels), {len(data.images)} images, {threads} threads\n")
    print("| part | s |\n| --- | ---: |")
    for name, fn in rows:
        fn()
        started = time.perf_counter()
        fn()
        print(f"| {name} | {time.perf_counter() - started:.2f} |")


def checkouts(crop: Path, paths: list[Path], epochs: int, rounds: int) -> None:
    rates: dict[Path, list[float]] = {p: [] for p in paths}
    outs: dict[Path, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for i, path in enumerate(paths):
                out = Path(tmp) / f"{i}-{r}"
                # run in the checkout, so that `-c`'s first import path (the working folder) is that checkout
                env = {**os.environ, "PYTHONPATH": str(path.resolve())}
                done = subprocess.run([sys.executable, "-c", RUN, str(out), str(crop.resolve()), str(epochs)], env=env,
                                      cwd=path, check=True, capture_output=True, text=True)
                imported = Path(done.stdout.strip().splitlines()[-1])
                if not imported.is_relative_to(path.resolve()):
                    raise SystemExit(f"{path}: train.run came from {imported}, not from the checkout")
                rates[path].append(json.loads((out / "train.json").read_text())["images_per_second"])
                outs[path] = out
        same = filecmp.cmp(outs[paths[0]] / "losses.csv", outs[paths[-1]] / "losses.csv", shallow=False)
    print(f"\n# train.run, {epochs} epochs, {rounds} rounds alternating\n")
    print("| checkout | images/s per round | vs the first |\n| --- | --- | ---: |")
    base = sum(rates[paths[0]]) / rounds
    for path in paths:
        print(f"| {path} | {', '.join(f'{v:.1f}' for v in rates[path])} | {sum(rates[path]) / rounds / base:.2f}x |")
    print(f"\nlosses.csv identical between the first and last checkout: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crop", type=Path, required=True, help="a crop folder of the anime route (crop.size 64)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkouts", type=Path, nargs="*", default=[], help="repository roots to time train.run in")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    components(args.crop, args.threads)
    if args.checkouts:
        checkouts(args.crop, args.checkouts, args.epochs, args.rounds)


if __name__ == "__main__":
    main()
