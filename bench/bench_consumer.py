"""Someone else's training job: the export read with plain torchvision, judged on the real test set.

This script imports nothing from `pipeline`: it loads `data/export` as a torchvision
`ImageFolder`, trains a CNN of another design than the evaluate stage's yardstick (3x3 convs
with max-pooling and dropout, SGD with momentum, random horizontal flips) and tests it on
Fashion-MNIST's real test split read by torchvision's own `FashionMNIST` reader. It reports
the accuracy of the same job trained on as many real training images, and on 1% real data
with and without the export added, each over several seeds (mean and standard deviation).

    .venv/bin/python bench/bench_consumer.py --export data/export --seeds 3
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Real train and test images (N x 1 x 32 x 32 uint8, padded 28 -> 32 like the export) and labels."""
    from torchvision.datasets import FashionMNIST

    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in FMNIST.glob("*-ubyte.gz"):
        with gzip.open(gz, "rb") as src, open(raw / gz.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    out = []
    for train in (True, False):
        ds = FashionMNIST(str(root), train=train, download=False)
        out += [F.pad(ds.data, (2, 2, 2, 2))[:, None], ds.targets]
    return (*out, list(ds.classes))  # type: ignore[return-value]


def image_folder(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(path))
    images = [np.asarray(ds.loader(p).convert("L"), np.uint8) for p, _ in ds.samples]
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(ds.targets), ds.classes


class OtherCNN(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_and_test(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor, k: int, seed: int,
                   steps: int) -> float:
    torch.manual_seed(seed)
    model = OtherCNN(k)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (128,), generator=gen)
        xb = x[idx].float() / 127.5 - 1
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb[flip] = xb[flip].flip(-1)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i:i + 1000].float() / 127.5 - 1).argmax(1) for i in range(0, len(xt), 1000)])
    return float((pred == yt).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=Path("data/export"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        x_real, y_real, x_test, y_test, real_classes = fashion_mnist(Path(tmp))
    x_syn, y_syn, folders = image_folder(args.export)
    k = len(real_classes)
    print(f"ImageFolder classes: {folders}")
    print(f"real classes:        {real_classes}")
    rows: dict[str, list[float]] = {}
    started = time.perf_counter()
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        same_n = torch.from_numpy(rng.permutation(len(y_real))[: len(y_syn)])
        one_pct = torch.from_numpy(np.concatenate([rng.permutation(np.flatnonzero(y_real.numpy() == c))[:60] for c in range(k)]))
        reps = max(1, len(y_syn) // len(one_pct))   # the real 1% repeated to half of the mix
        mixes = {
            "synthetic only (ImageFolder)": (x_syn, y_syn),
            "as many real images": (x_real[same_n], y_real[same_n]),
            "1% real": (x_real[one_pct], y_real[one_pct]),
            "1% real + synthetic": (torch.cat([x_real[one_pct].repeat(reps, 1, 1, 1), x_syn]),
                                    torch.cat([y_real[one_pct].repeat(reps), y_syn])),
        }
        for name, (x, y) in mixes.items():
            rows.setdefault(name, []).append(train_and_test(x, y, x_test, y_test, k, seed, args.steps))
            print(f"seed {seed} {name}: {rows[name][-1]:.4f}", flush=True)
    print(f"\n{args.seeds} seeds, {args.steps} steps x 128, {time.perf_counter() - started:.0f} s")
    print("| training set | accuracy on real test (mean ± std) |\n|---|---:|")
    for name, values in rows.items():
        print(f"| {name} | {np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.4f} |")


if __name__ == "__main__":
    main()
