"""Within-class variety: how much the images of one class differ from each other, against the real ones.

A conditional GAN can draw the right class every time and still draw one face per class, and
a classifier's accuracy (CAS) cannot see that. Two measures, both per class and both compared
with the same figure for the real images of that class (AC-GAN's test, Odena et al. 2017):

- `pixel_spread`: the standard deviation across the class's images at each pixel and channel,
  averaged over pixels (0 when every image is the same);
- `msssim_diversity`: 1 - the mean MS-SSIM between random pairs of the class's images
  (0 when every pair is identical; structure, not colour shifts).

The ratio fake / real is the figure to read: 1 keeps the real variety, near 0 is one image
repeated. `COLLAPSE_RATIO` is where we call a class collapsed in notes and warnings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

COLLAPSE_RATIO = 0.3
# MS-SSIM on 32-64 px images: the standard 5 scales of an 11-pixel window need 161 px, so the
# window shrinks to 7 and the scales to the first 3 (weights renormalised), which fit 32 px.
_BETAS = (0.0448, 0.2856, 0.3001)
_KERNEL = 7


@dataclass(frozen=True)
class ClassVariety:
    label: str
    pixel_spread: float
    pixel_spread_real: float
    msssim_diversity: float
    msssim_diversity_real: float
    images: int

    @property
    def pixel_ratio(self) -> float:
        return _ratio(self.pixel_spread, self.pixel_spread_real)

    @property
    def msssim_ratio(self) -> float:
        return _ratio(self.msssim_diversity, self.msssim_diversity_real)

    @property
    def ratio(self) -> float:
        """The smaller of the two ratios: a class is as varied as its worse measure says."""
        return min(self.pixel_ratio, self.msssim_ratio)

    def to_dict(self) -> dict[str, float | int]:
        return {"pixel_spread": round(self.pixel_spread, 4), "pixel_spread_real": round(self.pixel_spread_real, 4),
                "pixel_ratio": round(self.pixel_ratio, 3), "msssim_diversity": round(self.msssim_diversity, 4),
                "msssim_diversity_real": round(self.msssim_diversity_real, 4),
                "msssim_ratio": round(self.msssim_ratio, 3), "ratio": round(self.ratio, 3), "images": self.images}


def _ratio(fake: float, real: float) -> float:
    return fake / real if real > 0 else float("nan")


def _as_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """N x C x H x W uint8 (or N x H x W x C uint8 numpy, as shards store it) -> float in [0, 1]."""
    t = torch.as_tensor(images)
    if t.ndim == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    return t.float().div_(255.0)


def pixel_spread(images: np.ndarray | torch.Tensor) -> float:
    """Mean over pixels and channels of the std across images (uint8 in, 0-1 scale out)."""
    x = _as_float(images)
    if len(x) < 2:
        return 0.0
    return float(x.std(dim=0, unbiased=False).mean())


def msssim_diversity(images: np.ndarray | torch.Tensor, pairs: int = 200, seed: int = 0) -> float:
    """1 - the mean MS-SSIM over `pairs` random pairs of distinct images (uint8 in)."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    x = _as_float(images)
    n = len(x)
    if n < 2:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(n, (pairs,), generator=gen)
    b = (a + torch.randint(1, n, (pairs,), generator=gen)) % n    # never the image itself
    betas = tuple(v / sum(_BETAS) for v in _BETAS)
    values = ms_ssim(x[a], x[b], data_range=1.0, kernel_size=_KERNEL, betas=betas, reduction="none")
    return float(1.0 - values.mean())


def class_variety(fake: np.ndarray | torch.Tensor, fake_labels: np.ndarray, real: np.ndarray | torch.Tensor,
                  real_labels: np.ndarray, classes: list[str], max_images: int = 500,
                  pairs: int = 200, seed: int = 0,
                  real_figures: dict[str, tuple[float, float]] | None = None) -> list[ClassVariety]:
    """Per class, both measures for the fake and the real images (classes without 2+ of each are skipped).

    `real_figures`, a dict the caller keeps across calls with the same real images, max_images,
    pairs and seed (train's epoch grids), holds each class's real figures once they are measured.
    """
    fake_labels, real_labels = np.asarray(fake_labels), np.asarray(real_labels)
    rng = np.random.default_rng(seed)
    out = []
    for c, name in enumerate(classes):
        f, r = np.flatnonzero(fake_labels == c), np.flatnonzero(real_labels == c)
        if len(f) < 2 or len(r) < 2:
            continue
        f = np.sort(rng.choice(f, min(len(f), max_images), replace=False))
        r = np.sort(rng.choice(r, min(len(r), max_images), replace=False))
        if real_figures is None or name not in real_figures:
            figures = (pixel_spread(real[r]), msssim_diversity(real[r], pairs, seed))
            if real_figures is not None:
                real_figures[name] = figures
        else:
            figures = real_figures[name]
        out.append(ClassVariety(name, pixel_spread(fake[f]), figures[0],
                                msssim_diversity(fake[f], pairs, seed), figures[1], len(f)))
    return out


def collapsed(varieties: list[ClassVariety], threshold: float = COLLAPSE_RATIO) -> list[ClassVariety]:
    """The classes whose variety is below `threshold` x the real images' by either measure."""
    return [v for v in varieties if v.ratio < threshold]


def variety_report(varieties: list[ClassVariety], threshold: float = COLLAPSE_RATIO) -> dict[str, Any]:
    """Metrics and plain-language notes: per class both measures and ratios, the lowest ratio, the collapsed classes."""
    low = collapsed(varieties, threshold)
    notes = [f"class {v.label!r} has {v.ratio:.2f}x the within-class variety of its real images (below {threshold}x): "
             "its images are near copies of each other" for v in low]
    return {"variety": {v.label: v.to_dict() for v in varieties},
            "variety_min_ratio": round(min((v.ratio for v in varieties), default=float("nan")), 3),
            "collapsed_classes": [v.label for v in low], "variety_notes": notes}
