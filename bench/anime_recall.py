"""Where recall is lost: one anime run's samples, drawn several ways, in evaluate's feature space.

Reads a `bench_anime.py --workdir DIR` folder (its checkpoint, crop and evaluate cache, so the
all-real classifier is not trained again) and prints, against the real test faces:
- k-NN precision / recall / FD of 2,000 samples drawn from EMA G and raw G, in eval mode
  (standing statistics, as generate draws) and train mode, with z scaled by 1.0 and 1.5;
- recall per class, and how far the real faces lie from the generated manifold;
and writes `--montage`: the 12 best-covered real test faces over their nearest samples, then the
12 least covered over theirs.

    .venv/bin/python bench/anime_recall.py DIR --montage bench/anime-run/NAME/coverage.png
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.evaluate.fidelity import _sq_dists, frechet_distance, knn_radii, precision_recall
from pipeline.shared.checkpoint import load_checkpoint
from pipeline.shared.classifier import SmallCNN, features
from pipeline.shared.data import load_split
from pipeline.train.models import Generator, ModelConfig, standing_stats


def to_u8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@dataclass
class Run:
    """What a `bench_anime.py --workdir` folder holds for these benches."""

    test: torch.Tensor          # the real test faces, uint8
    test_labels: np.ndarray
    train: torch.Tensor         # the real training faces, uint8
    classes: list[str]
    model: SmallCNN             # evaluate's all-real classifier, read from its cache
    real: np.ndarray            # the test faces' features in it
    state: dict[str, Any]       # the checkpoint
    cfg: ModelConfig


def load_run(wd: Path) -> Run:
    test, test_labels, _, classes = load_split(wd / "data/crop", "test")
    train, _, _, _ = load_split(wd / "data/crop", "train")
    model = SmallCNN(3, len(classes), 32)
    model.load_state_dict(torch.load(next((wd / "data/.evaluate-cache").glob("*.pt")), weights_only=True))
    model.eval()
    state = load_checkpoint(wd / "runs/train/checkpoint.pt")
    return Run(test, test_labels, train, classes, model, features(model, test), state, ModelConfig(**state["model_config"]))


@torch.no_grad()
def draw(g: Generator, cfg: ModelConfig, n: int, scale: float, batch: int) -> torch.Tensor:
    y = torch.arange(n) % cfg.num_classes
    return to_u8(torch.cat([g(torch.randn(len(y[i:i + batch]), cfg.z_dim) * scale, y[i:i + batch])
                            for i in range(0, n, batch)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--montage", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    run = load_run(args.workdir)
    test, test_labels, train, classes = run.test, run.test_labels, run.train, run.classes
    model, real, state, cfg = run.model, run.real, run.state, run.cfg

    def row(name: str, images: torch.Tensor) -> np.ndarray:
        f = features(model, images)
        p, r = precision_recall(real, f, 3)
        print(f"| {name} | {p:.3f} | {r:.3f} | {frechet_distance(real, f):.2f} | {f.var(0).sum():.1f} | "
              f"{np.linalg.norm(f, axis=1).mean():.2f} |")
        return f

    print("| samples | precision | recall | FD | feature variance | feature norm |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    row("real training faces (reference)", train[torch.randperm(len(train))[:args.samples]])
    print(f"(real test faces: feature variance {real.var(0).sum():.1f}, norm {np.linalg.norm(real, axis=1).mean():.2f})")
    ema = None
    for key in ("g_ema", "g"):
        g = Generator(cfg)
        g.load_state_dict(state[key])
        standing_stats(g, cfg, torch.device("cpu"))
        g.eval()
        for scale in (1.0, 1.5):
            images = draw(g, cfg, args.samples, scale, 500)
            f = row(f"{key}, eval mode, z x {scale}", images)
            if key == "g_ema" and scale == 1.0:
                ema = images, f
        g.train()
        row(f"{key}, train mode (batch 64)", draw(g, cfg, args.samples, 1.0, 64))

    images, fake = ema
    radii = knn_radii(fake, 3)
    dist = np.sqrt(np.maximum(_sq_dists(real, fake), 0))
    ratio = (dist / radii[None, :]).min(1)      # <= 1: inside some sample's k-NN ball (covered)
    print("\n| class | test faces | recall (EMA G, z x 1.0) | median distance / radius |\n| --- | ---: | ---: | ---: |")
    for c, name in enumerate(classes):
        sel = test_labels == c
        print(f"| {name} | {sel.sum()} | {(ratio[sel] <= 1).mean():.3f} | {np.median(ratio[sel]):.2f} |")
    real_nn = np.sqrt(np.maximum(_sq_dists(real, real), 0))
    np.fill_diagonal(real_nn, np.inf)
    print(f"\nmedian distance real -> nearest sample {np.median(dist.min(1)):.2f}, real -> nearest other real "
          f"{np.median(real_nn.min(1)):.2f}, samples' k-NN radius {np.median(radii):.2f}")
    if args.montage:
        order, nearest = np.argsort(ratio), dist.argmin(1)

        def strip(idx: np.ndarray, imgs: torch.Tensor) -> np.ndarray:
            return np.concatenate([imgs[i].permute(1, 2, 0).numpy() for i in idx], axis=1)
        best, worst = order[:12], order[-12:]
        Image.fromarray(np.concatenate([strip(best, test), strip(nearest[best], images),
                                        strip(worst, test), strip(nearest[worst], images)])).save(args.montage)


if __name__ == "__main__":
    main()
