"""Recall of one anime checkpoint over several draws of z: how much of recall's spread is the draw, not the GAN.

One export is one draw of z, and recall over 372 test faces moves a lot from one draw to the next
(docs/faces.md: one class covered 84% in one draw, 3% in another). This draws `--draws` sets of
`--samples` images from EMA G (eval mode, standing statistics, as generate draws its candidates,
unranked), each with its own z seed, and prints per draw and as mean ± std: k-NN precision and
recall against the real test faces in evaluate's feature space (its all-real classifier, read from
the `bench_anime.py --workdir` folder's cache), FD, and the median distance from a real test face to
its nearest sample (real faces to their nearest other real face: the level recall needs).

    .venv/bin/python bench/anime_draws.py WORKDIR [--checkpoint CKPT ...] [--draws 5] [--latent-scale 1.0 1.3 ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from anime_recall import draw, load_run  # noqa: E402
from pipeline.evaluate.fidelity import _sq_dists, frechet_distance, precision_recall  # noqa: E402
from pipeline.shared.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from pipeline.shared.data import DataError  # noqa: E402
from pipeline.shared.classifier import features  # noqa: E402
from pipeline.train.models import Generator, ModelConfig, standing_stats  # noqa: E402


def nearest(real: np.ndarray, fake: np.ndarray) -> float:
    """Median distance from a real point to its nearest generated point."""
    return float(np.median(np.sqrt(_sq_dists(real, fake).min(1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path, help="a bench_anime.py --workdir folder (crop, evaluate cache)")
    ap.add_argument("--checkpoint", type=Path, nargs="*",
                    help="checkpoints to measure (default: the folder's runs/train/checkpoint.pt)")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--latent-scale", type=float, nargs="*", default=[1.0],
                    help="std of z (generate.latent_scale); several values give one row each")
    args = ap.parse_args()
    if any(scale <= 0 for scale in args.latent_scale):
        ap.error(f"--latent-scale {args.latent_scale}: every value must be above 0 (the std of z)")
    try:
        run = load_run(args.workdir)
    except (DataError, CheckpointError, StopIteration) as err:
        sys.exit(f"error: {args.workdir}: not a bench_anime.py --workdir folder with a crop, checkpoint and evaluate cache ({err or 'no cached classifier'})")
    real_nn = np.sqrt(_sq_dists(run.real, run.real))
    np.fill_diagonal(real_nn, np.inf)
    print(f"real test faces: {len(run.real)}; real -> nearest other real, median {np.median(real_nn.min(1)):.2f}\n")
    print("| checkpoint | step | z std | precision | recall | FD | real -> nearest sample | recall per draw |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for path in args.checkpoint or [args.workdir / "runs/train/checkpoint.pt"]:
        state = load_checkpoint(path)
        cfg = ModelConfig(**state["model_config"])
        g = Generator(cfg)
        g.load_state_dict(state["g_ema"])
        torch.manual_seed(0)
        standing_stats(g, cfg, torch.device("cpu"))
        g.eval()
        for scale in args.latent_scale:
            rows = []
            for d in range(args.draws):
                torch.manual_seed(1000 + d)
                f = features(run.model, draw(g, cfg, args.samples, scale, 500))
                p, r = precision_recall(run.real, f, 3)
                rows.append((p, r, frechet_distance(run.real, f), nearest(run.real, f)))
            a = np.asarray(rows)
            m, s = a.mean(0), a.std(0, ddof=1) if len(a) > 1 else np.zeros(4)
            print(f"| {path} | {state['step']} | {scale:g} | {m[0]:.3f} ± {s[0]:.3f} | {m[1]:.3f} ± {s[1]:.3f} | {m[2]:.2f} ± {s[2]:.2f} "
                  f"| {m[3]:.3f} ± {s[3]:.3f} | {', '.join(f'{r:.3f}' for r in a[:, 1])} |", flush=True)


if __name__ == "__main__":
    main()
