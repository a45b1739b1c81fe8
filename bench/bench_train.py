"""Training throughput: augment's train step against a DCGAN loop written the common way.

Both sides train the same conditional DCGAN (pipeline.train.models) with the same loss, batch
size and thread count on the same images, in one process, one after the other:

- plain: torchvision ImageFolder of PNGs + DataLoader (2 workers, PIL decode and
  ToTensor/Normalize every epoch), fp32, default memory format, Adam with default options;
- augment: the stage's Trainer (the split as one uint8 tensor in memory, normalised per
  batch, channels_last, foreach Adam), in fp32 and in bf16 autocast.

    .venv/bin/python bench/bench_train.py --sizes 32 64 --steps 30

Prints a markdown table of images/s and the ratio to the plain loop.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.shared.config import TrainParams  # noqa: E402
from pipeline.train.dataset import TrainingData  # noqa: E402
from pipeline.train.losses import d_loss, g_loss  # noqa: E402
from pipeline.train.models import ModelConfig, build  # noqa: E402
from pipeline.train.train import Trainer, model_config  # noqa: E402


def fashion_images(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """n Fashion-MNIST training images fitted to size x size (uint8 N x H x W x 1) and labels."""
    from PIL import Image

    from pipeline.crawl.sources.fashion_mnist import load_fashion_mnist

    arrays, _ = load_fashion_mnist(Path("/usr/share/datasets/fashion-mnist"))
    images, labels = arrays["train"]
    out = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in images[:n]])
    return out[..., None], labels[:n]


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for i, (img, y) in enumerate(zip(images, labels)):
        (root / str(int(y))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(root / str(int(y)) / f"{i:05d}.png")


def plain_loop(root: Path, cfg: ModelConfig, loss_kind: str, batch: int, steps: int, warmup: int) -> float:
    """The usual DCGAN tutorial loop over an ImageFolder; returns images per second."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Grayscale(), transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root), tf), batch_size=batch, shuffle=True,
                                         num_workers=2, drop_last=True, persistent_workers=True)
    torch.manual_seed(0)
    g, d = build(cfg)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    done, started = 0, None
    while done < warmup + steps:
        for real, y in loader:
            if done == warmup:
                started = time.perf_counter()
            z = torch.randn(batch, cfg.z_dim)
            yf = torch.randint(cfg.num_classes, (batch,))
            fake = g(z, yf)
            loss = d_loss(loss_kind, d(real, y), d(fake.detach(), yf))
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()
            loss = g_loss(loss_kind, d(g(torch.randn(batch, cfg.z_dim), yf), yf))
            opt_g.zero_grad()
            loss.backward()
            opt_g.step()
            done += 1
            if done == warmup + steps:
                break
    return steps * batch / (time.perf_counter() - started)


def training_data(images: np.ndarray, labels: np.ndarray) -> TrainingData:
    return TrainingData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long(),
                        [str(i) for i in range(10)], {})


def augment_loop(images: np.ndarray, labels: np.ndarray, params: TrainParams, steps: int, warmup: int,
                 precision: str, compile: bool = False) -> float:
    data = training_data(images, labels)
    batch = params.batch_size
    params = params.model_copy(update={"precision": precision, "compile": compile})
    trainer = Trainer(params, data, torch.device("cpu"), precision)
    order = torch.randperm(len(images))
    for i in range(warmup):
        trainer.train_step(order[i * batch:(i + 1) * batch])
    started = time.perf_counter()
    for i in range(steps):
        j = (warmup + i) % (len(images) // batch)
        trainer.train_step(order[j * batch:(j + 1) * batch])
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels", type=int, default=64, help="g_channels = d_channels (64 = the classic DCGAN)")
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time bf16 with torch.compile (warm-up includes compiling)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# train throughput, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, batch {args.batch}, channels {args.channels}, {args.steps} timed steps\n")
    cols = ["augment fp32", "augment bf16"] + (["augment bf16 + compile"] if args.compile else [])
    print("| size | plain loop img/s | " + " | ".join(f"{c} img/s | ratio" for c in cols) + " |")
    print("| --- | --- |" + " --- | --- |" * len(cols))
    for size in args.sizes:
        images, labels = fashion_images(args.images, size)
        # The shipped defaults (loss, D normalisation, minibatch-std) at the classic DCGAN width.
        params = TrainParams(batch_size=args.batch, g_channels=args.channels, d_channels=args.channels)
        cfg = model_config(params, training_data(images, labels))
        with tempfile.TemporaryDirectory() as tmp:
            write_image_folder(Path(tmp), images, labels)
            plain = plain_loop(Path(tmp), cfg, params.loss, args.batch, args.steps, args.warmup)
        rates = [augment_loop(images, labels, params, args.steps, args.warmup, "fp32"),
                 augment_loop(images, labels, params, args.steps, args.warmup, "bf16")]
        if args.compile:
            rates.append(augment_loop(images, labels, params, args.steps, args.warmup, "bf16", compile=True))
        cells = " | ".join(f"{r:.0f} | {r / plain:.2f}x" for r in rates)
        print(f"| {size} | {plain:.0f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
