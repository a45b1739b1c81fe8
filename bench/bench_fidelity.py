"""FD and KID: torchmetrics (pipeline/evaluate/fidelity.py) against the numpy code it replaced, on the same features.

The reference is the pre-sweep implementation (commit 19e31f5^), kept here verbatim in
substance: FD from the symmetric square root S_r^1/2 S_g S_r^1/2 (eigh, no sqrtm), KID as the
unbiased MMD^2 with the cubic kernel over numpy-drawn subsets. Cases:

- the evaluation's own space: 128-d penultimate features of a SmallCNN trained briefly on
  Fashion-MNIST (data/crop, if present), real vs another real subset (the ~0 "real reference"
  FD, where relative error is hardest) and real vs degraded images (a GAN-like FD);
- Gaussians: 128-d, and 2048-d with fewer points than dimensions (Inception features with a
  small `feature_samples`: singular covariances);
- KID with subsets that hold every point (subset_size >= set size, as when feature_samples <=
  1000): the subset draws cannot matter, so old and new must agree to rounding; with larger sets
  the two draw different subsets and agree only within the subset noise.

    flock /tmp/augment-cpu.lock .venv/bin/python bench/bench_fidelity.py
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipeline.evaluate.fidelity import frechet_distance, kernel_inception_distance

# --- the replaced implementation ----------------------------------------------------------------


def old_frechet(a: np.ndarray, b: np.ndarray) -> float:
    def sqrt_psd(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh((m + m.T) / 2)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    r = sqrt_psd(s1)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt, 0.0))


def old_kid(a: np.ndarray, b: np.ndarray, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    n, d = min(subset_size, len(a), len(b)), a.shape[1]
    vals = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals))


# --- feature sets --------------------------------------------------------------------------------


def classifier_features(n: int = 2000, steps: int = 300) -> dict[str, np.ndarray] | None:
    """128-d SmallCNN features of real, other real and degraded Fashion-MNIST images (None without data/crop)."""
    shard = Path("data/crop/shard-00000.npy")
    if not shard.exists():
        return None
    import json

    from pipeline.shared.classifier import TrainConfig, features, train_classifier

    with open("data/crop/manifest.jsonl") as fh:
        labels = torch.tensor([json.loads(line)["label_id"] for _, line in zip(range(20_000), fh)])
    images = torch.from_numpy(np.load(shard, mmap_mode="r")[:20_000].copy()).permute(0, 3, 1, 2).contiguous()
    model = train_classifier(images[:10_000], labels[:10_000], 10, TrainConfig(steps=steps))
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(10_000, generator=gen) + 10_000
    real, other = images[order[:n]], images[order[n:2 * n]]
    noisy = (other.float() + 40 * torch.randn(other.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    return {"real": features(model, real), "real reference": features(model, other), "degraded": features(model, noisy)}


def main() -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    rows: list[tuple[str, float, float, float, float]] = []

    def fd_row(name: str, a: np.ndarray, b: np.ndarray) -> None:
        t0 = time.perf_counter()
        old = old_frechet(a, b)
        t1 = time.perf_counter()
        new = frechet_distance(a, b)
        t2 = time.perf_counter()
        rows.append((f"FD  {name}", old, new, t1 - t0, t2 - t1))

    def kid_row(name: str, a: np.ndarray, b: np.ndarray) -> None:
        t0 = time.perf_counter()
        old = old_kid(a, b)
        t1 = time.perf_counter()
        new = kernel_inception_distance(a, b)
        t2 = time.perf_counter()
        rows.append((f"KID {name}", old, new, t1 - t0, t2 - t1))

    feats = classifier_features()
    if feats is not None:
        fd_row("classifier 128-d, real vs real reference (n=2000)", feats["real"], feats["real reference"])
        fd_row("classifier 128-d, real vs degraded (n=2000)", feats["real"], feats["degraded"])
        kid_row("classifier 128-d, real vs degraded (n=1000, subsets = all)",
                feats["real"][:1000], feats["degraded"][:1000])
        kid_row("classifier 128-d, real vs degraded (n=2000, drawn subsets)", feats["real"], feats["degraded"])
    mu = np.full(128, 0.25)   # |mu|^2 = 8
    fd_row("N(0,I) vs N(mu,I) 128-d, |mu|^2=8 + sample bias (n=2000)",
           rng.normal(size=(2000, 128)), rng.normal(size=(2000, 128)) + mu)
    fd_row("N(0,I) vs N(0,I) 128-d: the sample bias alone (n=2000)",
           rng.normal(size=(2000, 128)), rng.normal(size=(2000, 128)))
    a, b = np.maximum(rng.normal(size=(500, 2048)), 0), np.maximum(rng.normal(0.1, 1, size=(500, 2048)), 0)
    fd_row("ReLU'd Gaussian 2048-d, n=500 < d (singular covariances)", a, b)
    kid_row("ReLU'd Gaussian 2048-d, n=500 (subsets = all)", a, b)
    kid_row("N(0,I) vs N(0,I) 64-d (n=1000, subsets = all)", rng.normal(size=(1000, 64)), rng.normal(size=(1000, 64)))

    print(f"{'case':72s} {'old':>14s} {'new':>14s} {'rel diff':>10s} {'old s':>7s} {'new s':>7s}")
    for name, old, new, t_old, t_new in rows:
        rel = abs(new - old) / max(abs(old), 1e-300)
        print(f"{name:72s} {old:14.8g} {new:14.8g} {rel:10.1e} {t_old:7.3f} {t_new:7.3f}")


if __name__ == "__main__":
    main()
