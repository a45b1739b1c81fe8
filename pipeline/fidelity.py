"""Fidelity and diversity of a generated set against real data, in a feature space.

- Fréchet distance (Heusel et al. 2017): ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^1/2),
  with Tr((S_r S_g)^1/2) computed exactly as the sum of square roots of the eigenvalues of
  the symmetric PSD matrix S_r^1/2 S_g S_r^1/2 (numpy only, no sqrtm).
- Precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
  balls around its points with radius the distance to the k-th nearest neighbour within
  the set. Precision: the share of generated points inside the real manifold (are samples
  realistic?); recall: the share of real points inside the generated manifold (is the data
  covered?).
- With user-supplied weights, FID and KID (Bińkowski et al. 2018, cubic polynomial kernel,
  unbiased MMD^2 over subsets) on the 2048-d pool features of torchvision's InceptionV3.
  Those weights are not the TF-ported "FID Inception" of the papers, so values are
  comparable between runs of this tool, not with published FIDs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, s1) and N(mu2, s2)."""
    r = _sqrt_psd(s1)
    eig = np.linalg.eigvalsh(r @ s2 @ r)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt, 0.0))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two N x D feature sets."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return frechet_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0)


def knn_radii(x: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Squared distance from each point to its k-th nearest neighbour in x (itself excluded)."""
    if len(x) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set, got {len(x)}")
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        d = _sq_dists(x[i:i + chunk], x)
        out[i:i + chunk] = np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself
    return out


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 2048) -> float:
    """Share of `points` inside at least one ball (centre, radius^2)."""
    inside = 0
    for i in range(0, len(points), chunk):
        d = _sq_dists(points[i:i + chunk], centres)
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / len(points)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of `fake` against `real` (Kynkäänniemi et al. 2019)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    precision = _coverage(fake, real, knn_radii(real, k))
    recall = _coverage(real, fake, knn_radii(fake, k))
    return precision, recall


# --- Inception, for FID/KID with user-supplied weights -------------------------------------


def load_inception(path: Path, device: torch.device = torch.device("cpu")) -> torch.nn.Module:
    """torchvision InceptionV3 with weights from a local state dict (nothing is downloaded); outputs pool features."""
    from torchvision.models import inception_v3

    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.fc = torch.nn.Identity()
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def inception_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 100,
                       device: torch.device = torch.device("cpu")) -> np.ndarray:
    """2048-d features of uint8 N x C x H x W images, resized to 299 and ImageNet-normalised."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out.append(model((x - mean) / std).double().cpu())
    return torch.cat(out).numpy()


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 10, subset_size: int = 1000,
                              seed: int = 0) -> float:
    """KID: unbiased MMD^2 with kernel (x.y / d + 1)^3, averaged over random subsets."""
    rng = np.random.default_rng(seed)
    n = min(subset_size, len(a), len(b))
    d = a.shape[1]
    vals = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals))
