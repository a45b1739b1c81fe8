"""Does G vary with z? Train on a crop folder and measure within-class variety every few steps.

The diagnosis tool of docs/faces.md ("Why the faces collapsed"): the train stage's own Trainer,
stepped by hand so that every `--every` steps both G (raw weights) and its EMA are sampled in
eval mode with standing statistics (48 samples per class, fixed noise) and compared with the
real training crops of each class by `pipeline.shared.variety` (pixel spread and MS-SSIM diversity,
fake / real). Prints one line per measurement, and writes the measurements (JSON) and the
EMA's latest grid (PNG, one row per class) next to `--out`.

    flock /tmp/augment-cpu.lock .venv/bin/python bench/bench_collapse.py --crop data/crop --steps 700 \\
        --every 100 --out bench/collapse/base.json --set diffaugment=color,translation,cutout

`--set` takes any train param (`--set mode_seeking=0.2 --set conditional=no`).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pipeline.shared.config import TrainParams  # noqa: E402
from pipeline.shared.data import to_uint8  # noqa: E402
from pipeline.shared.device import set_threads  # noqa: E402
from pipeline.shared.io import image_grid, save_png  # noqa: E402
from pipeline.shared.variety import class_variety  # noqa: E402
from pipeline.train.dataset import load_training_data  # noqa: E402
from pipeline.train.models import standing_stats  # noqa: E402
from pipeline.train.train import Trainer  # noqa: E402

PER_CLASS = 48


def sample(trainer: Trainer, g: torch.nn.Module, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """PER_CLASS eval-mode samples of each class from a copy of `g` with its own standing statistics."""
    g = copy.deepcopy(g)
    standing_stats(g, trainer.cfg, trainer.device)
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(max(trainer.cfg.num_classes, 1)).repeat_interleave(PER_CLASS)
    z = torch.randn(len(y), trainer.cfg.z_dim, generator=gen)
    with torch.no_grad():
        return to_uint8(g(z.to(trainer.device), y.to(trainer.device))), y.numpy()


def measure(trainer: Trainer, g: torch.nn.Module) -> tuple[dict[str, list[float]], np.ndarray]:
    """{class: [pixel ratio, MS-SSIM ratio]} against the real training crops, and the samples."""
    images, labels = sample(trainer, g)
    data = trainer.data
    real = data.images.permute(0, 2, 3, 1).cpu().numpy()
    if trainer.cfg.num_classes:
        real_labels, names = data.labels.cpu().numpy(), data.classes
    else:   # unconditional: one "class", against every real crop
        real_labels, names = np.zeros(len(real), np.int64), ["all"]
    varieties = class_variety(images, labels, real, real_labels, names, pairs=100)
    return {v.label: [round(v.pixel_ratio, 3), round(v.msssim_ratio, 3)] for v in varieties}, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crop", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--out", type=Path, required=True, help="measurements (.json); the grid goes to the same name .png")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML", help="a train param (repeatable)")
    args = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    params = TrainParams(**{"input": args.crop, "out": args.out.with_suffix(""), "batch_size": 64, "g_channels": 32,
                            "d_channels": 32, "checkpoint_every": 10 ** 6, "judge_steps": 0, "epochs": 10 ** 4,
                            **overrides})
    set_threads(params.threads)
    device = torch.device("cpu")
    trainer = Trainer(params, load_training_data(args.crop, device), device, "fp32")
    record: dict = {"params": overrides, "log": []}
    init, _ = measure(trainer, trainer.g)
    record["init"] = init
    print("init", init, flush=True)
    spe, started = trainer.steps_per_epoch, time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    while trainer.step < args.steps:
        epoch, b = divmod(trainer.step, spe)
        row = trainer.train_step(trainer.order(epoch)[b * params.batch_size:(b + 1) * params.batch_size])
        trainer.step += 1
        if trainer.step % args.every and trainer.step != args.steps:
            continue
        raw, _ = measure(trainer, trainer.g)
        ema, images = measure(trainer, trainer.g_ema)
        record["log"].append({"step": trainer.step, "raw": raw, "ema": ema, "loss_d_g_real_fake": row})
        mean = lambda m, i: float(np.mean([v[i] for v in m.values()]))  # noqa: E731
        print(f"step {trainer.step} {time.perf_counter() - started:.0f}s raw pixel {mean(raw, 0):.3f} "
              f"MS-SSIM {mean(raw, 1):.3f} | EMA pixel {mean(ema, 0):.3f} MS-SSIM {mean(ema, 1):.3f} "
              f"min {min(min(v) for v in ema.values()):.3f} | D(real) {row[2]:+.2f} D(fake) {row[3]:+.2f}", flush=True)
        rows = max(trainer.cfg.num_classes, 1)
        pick = np.concatenate([np.arange(c * PER_CLASS, c * PER_CLASS + 10) for c in range(rows)])
        save_png(args.out.with_suffix(".png"), image_grid(images[pick], rows=rows, cols=10))
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
