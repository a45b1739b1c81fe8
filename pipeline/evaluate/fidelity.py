"""Fidelity and diversity of a generated set against real data: FD and KID (torchmetrics), k-NN precision/recall.

- Fréchet distance (Heusel et al. 2017) and KID (Bińkowski et al. 2018, cubic polynomial kernel,
  unbiased MMD^2 over subsets) are torchmetrics' `FrechetInceptionDistance` and
  `KernelInceptionDistance`, fed with features this package extracts once (the evaluation
  classifier's 128-d penultimate features, or torchvision InceptionV3's 2048-d pool features
  from user-supplied weights), through a pass-through feature module: the same features also
  give precision/recall, so no image is featurised twice.
- Precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
  balls around its points with radius the distance to the k-th nearest neighbour within
  the set. Precision: the share of generated points inside the real manifold (are samples
  realistic?); recall: the share of real points inside the generated manifold (is the data
  covered?). torchmetrics has no equivalent, so it stays here.
- The Inception weights are not the TF-ported "FID Inception" of the papers, so FID values are
  comparable between runs of this tool, not with published FIDs.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


class PassThrough(nn.Module):
    """The feature "extractor" torchmetrics runs over features already extracted: they pass unchanged."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features   # torchmetrics reads this instead of probing with a dummy image

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two N x D feature sets (torchmetrics, float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=PassThrough(np.shape(a)[1]))
    metric.update(_as_tensor(a), real=True)
    metric.update(_as_tensor(b), real=False)
    return float(max(metric.compute().item(), 0.0))


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
    """torchvision InceptionV3 with weights from a local state dict (nothing is downloaded); outputs pool features.

    `transform_input=True`, as torchvision's builder sets for its IMAGENET1K_V1 weights: those are
    Google's, trained on inputs scaled to [-1, 1], and the flag maps our ImageNet-normalised input
    to that range. Without it (the state-dict route's default) every channel was off in scale and shift.
    """
    from torchvision.models import inception_v3

    model = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
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
    """KID of two N x D feature sets (torchmetrics: unbiased MMD^2, kernel (x.y / d + 1)^3, mean over subsets).

    torchmetrics draws its subsets from torch's global generator; it is forked and seeded here,
    so the value depends on `seed` alone and the caller's random state is left as it was.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(subset_size, len(a), len(b))
    with warnings.catch_warnings():   # "will save all extracted features": they are ours, already in memory
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        metric = KernelInceptionDistance(feature=PassThrough(np.shape(a)[1]), subsets=subsets, subset_size=n)
    metric.update(_as_tensor(a), real=True)
    metric.update(_as_tensor(b), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, _ = metric.compute()
    return float(mean.item())
