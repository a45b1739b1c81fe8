"""Repost dedup across images: perceptual hashes, a multi-index Hamming table, and comparing two faces' regions."""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

# Side of the aligned face regions compared across images (see `region_difference`).
REGION_SIDE = 24


def image_hash(img: "Image.Image") -> int:
    """64-bit DCT perceptual hash (imagehash.phash) of a whole source image.

    Reposts of the same art (resized, recompressed) hash within ~2 bits of each other, but so do
    different drawings of a similar layout (the hash sees only the coarse grey-level structure),
    so a close hash is only the first test of `near_duplicates`.
    """
    import imagehash

    return int(str(imagehash.phash(img)), 16)


def _intersection(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    inter = _intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """The share of the smaller of two (x, y, w, h) boxes that lies inside the other."""
    smaller = min(a[2] * a[3], b[2] * b[3])
    return _intersection(a, b) / smaller if smaller > 0 else 0.0


def relative_square(face: dict[str, Any], width: int, height: int) -> tuple[float, float, float, float]:
    """A face's crop square as fractions of its source image: the same for a resized repost."""
    x0, y0, side, _ = face["crop_box"]
    return (x0 / width, y0 / height, side / width, side / height)


def region_difference(crop_a: np.ndarray, rect_a: Sequence[float], crop_b: np.ndarray, rect_b: Sequence[float]) -> float:
    """How different two face crops are over the part of the picture both show: the 95th
    percentile over pixels of the largest RGB channel difference (0-255).

    `rect_*` are the crops' squares in fractions of their source images. A repost is the same
    picture resized, so the same fractions hold the same pixels: both crops are resampled at the
    intersection of their squares and compared pixel by pixel, in colour. This aligns the two
    exactly although AnimeFace's box in a resized copy is up to ~20% larger or smaller and
    shifted (so the crops themselves differ). A high percentile rather than the mean, because
    two characters drawn alike differ in a small area (the eyes, strand tips) that a mean over
    the shared hair, skin and background dilutes: on drawn faces, reposts (1.3x JPEG q85, 0.8x
    q70) measured 4-11 and distinct characters of the same hair colour 34-101 (mean: 1-2.5 vs 6-19).
    """
    from PIL import Image

    x0, y0 = max(rect_a[0], rect_b[0]), max(rect_a[1], rect_b[1])
    x1 = min(rect_a[0] + rect_a[2], rect_b[0] + rect_b[2])
    y1 = min(rect_a[1] + rect_a[3], rect_b[1] + rect_b[3])
    if x1 <= x0 or y1 <= y0:
        return 255.0
    regions = []
    for crop, rect in ((crop_a, rect_a), (crop_b, rect_b)):
        n = crop.shape[0]
        box = ((x0 - rect[0]) / rect[2] * n, (y0 - rect[1]) / rect[3] * n,
               (x1 - rect[0]) / rect[2] * n, (y1 - rect[1]) / rect[3] * n)
        img = Image.fromarray(crop).resize((REGION_SIDE, REGION_SIDE), Image.Resampling.BILINEAR, box=box)
        regions.append(np.asarray(img, dtype=np.float32))
    return float(np.percentile(np.abs(regions[0] - regions[1]).max(axis=2), 95))


class HammingIndex:
    """Kept 64-bit hashes, found again from any hash within `max_distance` bits without a scan of them all.

    Multi-index hashing (Norouzi et al. 2012): the 64 bits are cut into m = max_distance // 2 + 1
    bands. Two hashes at most max_distance bits apart differ in at most max_distance // m bits on
    some band (pigeonhole), so a lookup visits, in each band, the buckets of the query's band value
    with up to that many bits flipped, then keeps the hashes truly within max_distance. For the
    default 6 bits: 4 bands of 16 bits, 17 buckets each, holding about N / 65,536 hashes apiece.
    """

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        m = min(max(max_distance, 0) // 2 + 1, 64)
        edges = np.linspace(0, 64, m + 1).astype(int)
        self.bands = [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:])]
        radius = max(max_distance, 0) // m
        self.flips = [[sum(1 << b for b in bits) for r in range(radius + 1)
                       for bits in itertools.combinations(range(int(hi - lo)), r)]
                      for lo, hi in zip(edges[:-1], edges[1:])]
        self.buckets: list[dict[int, list[int]]] = [{} for _ in self.bands]
        self.hashes: list[int] = []          # kept hashes, in the order they were added
        self.ids: list[int] = []             # the caller's id of each

    def _keys(self, value: int) -> list[int]:
        return [(value >> shift) & mask for shift, mask in self.bands]

    def add(self, value: int, ident: int) -> None:
        position = len(self.ids)
        self.hashes.append(value)
        self.ids.append(ident)
        for bucket, key in zip(self.buckets, self._keys(value)):
            bucket.setdefault(key, []).append(position)

    def near(self, value: int) -> list[int]:
        """Ids of the kept hashes within max_distance bits of `value`, in the order they were added."""
        if self.max_distance >= 64:          # every hash is within 64 bits
            return list(self.ids)
        found: set[int] = set()
        for bucket, key, flips in zip(self.buckets, self._keys(value), self.flips):
            for flip in flips:
                found.update(bucket.get(key ^ flip, ()))
        close = sorted(p for p in found if (self.hashes[p] ^ value).bit_count() <= self.max_distance)
        return [self.ids[p] for p in close]


def near_duplicates(hashes: Sequence[int], order: Sequence[int], max_distance: int,
                    same: Callable[[int, int], bool] = lambda i, j: True) -> set[int]:
    """Faces that repeat an earlier kept one, visiting in `order`.

    A repeat has a source-image hash within `max_distance` bits of a kept face's and passes
    `same(kept, candidate)` (crop_faces: same place in the picture, same-looking face region).
    A HammingIndex finds the kept faces with a close hash without comparing against all of them
    (bench/bench_dedup_scale.py has the times at 100,000 faces); `same` runs only on those, in the order they were kept. `max_distance` < 0
    turns this off.
    """
    if max_distance < 0 or not hashes:
        return set()
    index = HammingIndex(max_distance)
    dropped: set[int] = set()
    for i in order:
        if any(same(j, i) for j in index.near(int(hashes[i]))):
            dropped.add(i)
            continue
        index.add(int(hashes[i]), i)
    return dropped
