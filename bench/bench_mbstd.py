"""Minibatch-std statistic, forward + backward: Tensor.var over the group dim vs the written-out form.

D's MinibatchStd layer computes the std over groups of 4 samples of a channels_last
64 x 128 x 4 x 4 feature map (32 px) three times per training step; this times both forms
in one process, alternating, and checks they agree.

    .venv/bin/python bench/bench_mbstd.py
"""
from __future__ import annotations

import time

import torch


def with_var(x: torch.Tensor, g: int = 4) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.float().view(n // g, g, c, h, w).var(dim=1, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))


def written_out(x: torch.Tensor, g: int = 4) -> torch.Tensor:
    n, c, h, w = x.shape
    y = x.float().view(n // g, g, c, h, w)
    return (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1).add(1e-8).sqrt().mean(dim=(1, 2, 3))


def main() -> None:
    torch.set_num_threads(2)
    x0 = torch.randn(64, 128, 4, 4).contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {"Tensor.var": [], "written out": []}
    for _ in range(3):
        for name, f in (("Tensor.var", with_var), ("written out", written_out)):
            x = x0.clone().requires_grad_(True)
            for _ in range(20):
                f(x).sum().backward()
            started = time.perf_counter()
            for _ in range(300):
                f(x).sum().backward()
            times[name].append((time.perf_counter() - started) / 300 * 1000)
    for name, ts in times.items():
        print(f"{name}: {min(ts):.3f} ms per forward + backward (best of 3 x 300)")
    print(f"speed-up: {min(times['Tensor.var']) / min(times['written out']):.1f}x; "
          f"max difference {(with_var(x0) - written_out(x0)).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
