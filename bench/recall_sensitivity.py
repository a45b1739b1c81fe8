"""How much grain does evaluate's recall forgive? Real training faces, degraded, scored as if generated.

Reads a `bench_anime.py --workdir DIR` folder (its crop and the all-real classifier in its evaluate
cache, so nothing is trained) and prints precision / recall / FD of the real *training* faces against
the real *test* faces in evaluate's feature space, as they are and after each degradation:
per-pixel noise (independent per channel: coloured grain, what the anime samples show in their
flat areas), the same noise shared by the channels (grey grain), and a box blur. The generated faces score recall ~0.1 against ~0.85 for the real ones; this
shows which of those defects alone would cost that much.

    .venv/bin/python bench/recall_sensitivity.py DIR
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.evaluate.fidelity import frechet_distance, precision_recall
from pipeline.shared.classifier import SmallCNN, features
from pipeline.shared.data import load_split


def noisy(images: torch.Tensor, sigma: float, gen: torch.Generator, grey: bool = False) -> torch.Tensor:
    shape = (images.shape[0], 1, *images.shape[2:]) if grey else images.shape
    noise = torch.randn(shape, generator=gen) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def blurred(images: torch.Tensor, k: int) -> torch.Tensor:
    x = images.float()
    w = torch.ones(x.shape[1], 1, k, k) / (k * k)
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="replicate"), w, groups=x.shape[1]).round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args()
    wd = args.workdir
    test, _, _, classes = load_split(wd / "data/crop", "test")
    train, _, _, _ = load_split(wd / "data/crop", "train")
    model = SmallCNN(test.shape[1], len(classes), 32)
    model.load_state_dict(torch.load(next((wd / "data/.evaluate-cache").glob("*.pt")), weights_only=True))
    model.eval()
    real = features(model, test)
    gen = torch.Generator().manual_seed(0)
    print(f"{len(train)} real training faces scored against {len(test)} test faces, k = {args.k}\n")
    print("| training faces | precision | recall | FD |\n| --- | ---: | ---: | ---: |")
    variants: list[tuple[str, torch.Tensor]] = [("as they are", train)]
    for sigma in (4, 8, 16, 32):
        variants.append((f"coloured grain, sigma {sigma}/255", noisy(train, sigma, gen)))
    for sigma in (8, 16):
        variants.append((f"grey grain, sigma {sigma}/255", noisy(train, sigma, gen, grey=True)))
    for k in (3, 5):
        variants.append((f"box blur {k} x {k}", blurred(train, k)))
    for name, images in variants:
        f = features(model, images)
        p, r = precision_recall(real, f, args.k)
        print(f"| {name} | {p:.3f} | {r:.3f} | {frechet_distance(real, f):.2f} |")


if __name__ == "__main__":
    main()
