"""Is it the coloured grain that costs an anime run's recall? Its samples with the chroma denoised after the fact.

Reads a `bench_anime.py --workdir DIR` folder (checkpoint, crop, evaluate cache: the all-real
classifier is not trained again), draws 2,000 samples from EMA G as generate does (standing
statistics, eval mode), filters them (the Cb and Cr planes of YCbCr only, or all of RGB) and
prints k-NN precision / recall / FD against the real test faces in evaluate's feature space,
beside the real training faces through the same filter (what the filter itself costs).
docs/faces.md ("Ninth session") has the table.

    .venv/bin/python bench/anime_chroma.py DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from anime_recall import draw, load_run  # noqa: E402
from pipeline.evaluate.fidelity import frechet_distance, precision_recall  # noqa: E402
from pipeline.shared.classifier import features  # noqa: E402
from pipeline.train.models import Generator, standing_stats  # noqa: E402

Filter = Callable[[Image.Image], Image.Image]


def each(images: torch.Tensor, fn: Filter) -> torch.Tensor:
    """`fn` over N x 3 x H x W uint8 images, through PIL."""
    return torch.stack([torch.from_numpy(np.array(fn(Image.fromarray(im.permute(1, 2, 0).numpy())))).permute(2, 0, 1)
                        for im in images])


def chroma(filt: ImageFilter.Filter) -> Filter:
    def fn(img: Image.Image) -> Image.Image:
        y, cb, cr = img.convert("YCbCr").split()
        return Image.merge("YCbCr", (y, cb.filter(filt), cr.filter(filt))).convert("RGB")
    return fn


FILTERS: dict[str, Filter] = {
    "none": lambda im: im,
    "YCbCr round trip only": lambda im: im.convert("YCbCr").convert("RGB"),
    "chroma median 3 x 3": chroma(ImageFilter.MedianFilter(3)),
    "chroma median 5 x 5": chroma(ImageFilter.MedianFilter(5)),
    "chroma Gaussian, radius 1": chroma(ImageFilter.GaussianBlur(1)),
    "RGB median 3 x 3": lambda im: im.filter(ImageFilter.MedianFilter(3)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    torch.manual_seed(0)
    run = load_run(args.workdir)
    model, real, cfg, train = run.model, run.real, run.cfg, run.train
    g = Generator(cfg)
    g.load_state_dict(run.state["g_ema"])
    standing_stats(g, cfg, torch.device("cpu"))
    samples = draw(g.eval(), cfg, args.samples, 1.0, 500)
    reference = train[torch.randperm(len(train))[:args.samples]]

    def figures(images: torch.Tensor) -> str:
        f = features(model, images)
        p, r = precision_recall(real, f, 3)
        return f"{p:.3f} / {r:.3f} / {frechet_distance(real, f):.2f}"

    print("| filter | samples P / R / FD | real training faces P / R / FD |\n| --- | ---: | ---: |")
    for name, fn in FILTERS.items():
        print(f"| {name} | {figures(each(samples, fn))} | {figures(each(reference, fn))} |", flush=True)


if __name__ == "__main__":
    main()
