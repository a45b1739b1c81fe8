"""evaluate's classifiers trained as one grouped model: K SmallCNNs side by side against K separate ones (issue 19).

Each of the K models sees its own labels (its own data, as evaluate's seeds and arms do); the
grouped model stacks them as grouped convolutions (groups=K), per-model batch norm (K x the
channels) and a batched linear head, so one step updates all K. One thread (as in evaluate's
worker processes), bf16 autocast, batch 128, 32 px grey (the default route); rounds alternate the
variants; the figure is milliseconds per model-step and the ratio to separate models.

    .venv/bin/python bench/bench_grouped.py --models 8 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.shared.classifier import SmallCNN  # noqa: E402


class GroupedCNN(nn.Module):
    """K copies of SmallCNN's architecture in one module: grouped convolutions and a batched head."""

    def __init__(self, k: int, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width]

        def block(cin: int, cout: int, ks: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(k * cin, k * cout, ks, 2, ks // 2, bias=False, groups=k),
                                 nn.BatchNorm2d(k * cout), nn.ReLU(inplace=True))

        self.k = k
        self.body = nn.Sequential(block(channels, widths[0], 5), block(widths[0], widths[1], 3),
                                  block(widths[1], widths[2], 3))
        self.head_w = nn.Parameter(torch.randn(k, widths[2], num_classes) * 0.05)
        self.head_b = nn.Parameter(torch.zeros(k, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # B x (k*C) x H x W -> k x B x classes
        f = self.body(x).mean(dim=(2, 3))
        f = f.view(f.shape[0], self.k, -1).transpose(0, 1)
        return torch.baddbmm(self.head_b[:, None, :], f, self.head_w)


def variants(k: int, batch: int) -> dict[str, Callable[[], None]]:
    x = torch.randint(0, 255, (batch, 1, 32, 32), dtype=torch.uint8).float().div(127.5).sub(1)
    y = torch.randint(0, 10, (k, batch))
    separate = [SmallCNN(1, 10).to(memory_format=torch.channels_last) for _ in range(k)]
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in separate]
    xs = x.contiguous(memory_format=torch.channels_last)

    def step_separate() -> None:
        for m, opt, labels in zip(separate, opts, y):
            with torch.autocast("cpu", torch.bfloat16):
                logits = m(xs)
            loss = F.cross_entropy(logits.float(), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

    out = {"separate models": step_separate}
    for name, fmt in (("grouped, channels_last", torch.channels_last), ("grouped, NCHW", torch.contiguous_format)):
        g = GroupedCNN(k, 1, 10).to(memory_format=fmt)
        opt = torch.optim.AdamW(g.parameters(), lr=1e-3, foreach=True)
        xg = x.repeat(1, k, 1, 1).contiguous(memory_format=fmt)

        def step(g: GroupedCNN = g, opt: torch.optim.Optimizer = opt, xg: torch.Tensor = xg) -> None:
            with torch.autocast("cpu", torch.bfloat16):
                logits = g(xg)
            loss = F.cross_entropy(logits.float().reshape(k * batch, 10), y.reshape(-1)) * k
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[name] = step
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, nargs="+", default=[8, 3])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| models | how | ms per model-step | vs separate |\n| ---: | --- | ---: | ---: |")
    for k in args.models:
        jobs = variants(k, 128)
        for step in jobs.values():
            for _ in range(3):
                step()
        seconds = {name: 0.0 for name in jobs}
        for _ in range(args.rounds):
            for name, step in jobs.items():
                started = time.perf_counter()
                for _ in range(args.steps):
                    step()
                seconds[name] += time.perf_counter() - started
        for name, s in seconds.items():
            per = s / (args.rounds * args.steps * k) * 1000
            print(f"| {k} | {name} | {per:.2f} | {seconds['separate models'] / s:.2f}x |")


if __name__ == "__main__":
    main()
