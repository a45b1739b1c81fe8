"""Does a trained D notice a colour shift that every image of a batch shares? (issue 17)

The anime recipe's samples come out pale and washed out where the real crops have saturated
flat colours. This scores the training split's real faces with a checkpoint's D, as they are and
with one shift applied to the whole batch (blended towards white, or desaturated), with D's batch
norm in train mode (batch statistics: how D saw every batch in training) and in eval mode
(its running statistics). A D that scores the shifted batches as real as the real ones cannot
push G away from that shift. No DiffAugment is applied here.

    .venv/bin/python bench/bench_d_shift.py --checkpoint runs/train/checkpoint.pt --crop data/crop
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.shared.checkpoint import load_checkpoint  # noqa: E402
from pipeline.shared.data import load_split, to_float  # noqa: E402
from pipeline.train.models import ModelConfig, build  # noqa: E402


def paler(a: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: x * (1 - a) + a          # towards white ([-1, 1] images)


def desaturated(a: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: x.mean(1, keepdim=True) + (x - x.mean(1, keepdim=True)) * (1 - a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--crop", type=Path, required=True)
    ap.add_argument("--images", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ck = load_checkpoint(args.checkpoint)
    cfg = ModelConfig(**ck["model_config"])
    _, d = build(cfg)
    d.load_state_dict(ck["d"])
    x, labels, _, _ = load_split(args.crop, "train")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:args.images]
    x, y = to_float(x[perm]), torch.as_tensor(labels[perm.numpy()]).long()
    shifts = [("real, as they are", lambda t: t), ("20% towards white", paler(0.2)), ("40% towards white", paler(0.4)),
              ("half the saturation", desaturated(0.5)), ("grey (no saturation)", desaturated(1.0))]
    print(f"# D of {args.checkpoint} (step {ck['step']}), {len(x)} real training images, batches of 64\n")
    print("| every image of the batch | D's mean logit, train-mode batch norm | eval-mode batch norm |")
    print("| --- | ---: | ---: |")
    with torch.no_grad():
        for name, shift in shifts:
            row = []
            for train_mode in (True, False):
                d.train(train_mode)
                row.append(torch.cat([d(shift(x[i:i + 64]), y[i:i + 64]) for i in range(0, len(x), 64)]).mean().item())
            print(f"| {name} | {row[0]:+.2f} | {row[1]:+.2f} |")


if __name__ == "__main__":
    main()
