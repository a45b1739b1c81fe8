"""The hair colour of a detected face: measured from the pixels above its box, and named from a palette."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.crop.cropping import FaceError

RGB = tuple[int, int, int]


def measure_hair(rgb: np.ndarray, box: Sequence[int]) -> RGB:
    """The dominant non-skin colour of the band just above the face box: the bangs, in anime art.

    AnimeFace's box starts around the eyebrows, so the band above it is fringe hair with skin
    showing between the strands. Skin is the dominant colour of the cheeks (lower box) and is
    left out; the mode of coarsely quantised colours then ignores thin outlines and strand lines,
    and the mean of the pixels in the winning bin gives the colour back at full precision.
    """
    x, y, w, h = box
    height, width = rgb.shape[:2]
    x0, x1 = max(0, x + w // 5), min(width, x + w - w // 5)
    band = rgb[max(0, y - h // 2):max(0, min(height, y + h // 20)), x0:x1].reshape(-1, 3)
    if len(band) < 16:           # face at the top edge: use the top of the box instead
        band = rgb[max(0, y):min(height, y + h // 5), x0:x1].reshape(-1, 3)
    if len(band) == 0:
        return (0, 0, 0)
    cheeks = np.concatenate([rgb[y + h * 11 // 20:y + h * 7 // 10, x + w // 10:x + w * 3 // 10].reshape(-1, 3),
                             rgb[y + h * 11 // 20:y + h * 7 // 10, x + w * 7 // 10:x + w * 9 // 10].reshape(-1, 3)])
    if len(cheeks):
        skin = np.asarray(_dominant(cheeks), dtype=np.int16)
        not_skin = np.abs(band.astype(np.int16) - skin).max(axis=1) > 24
        if not_skin.mean() > 0.1:    # bald or hat: nothing but skin above the face, keep it all
            band = band[not_skin]
    return _dominant(band)


def _dominant(pixels: np.ndarray) -> RGB:
    """Mean of the most populated 32-level RGB bin."""
    bins = (pixels // 32).astype(np.int32)
    codes = bins[:, 0] * 64 + bins[:, 1] * 8 + bins[:, 2]
    mode = np.bincount(codes).argmax()
    mean = pixels[codes == mode].mean(axis=0)
    return tuple(int(round(c)) for c in mean)  # type: ignore[return-value]


def nearest_colour(rgb: Sequence[int], palette: dict[str, list[int]]) -> str:
    """Name of the palette colour closest to `rgb` by the 'redmean' weighted RGB distance.

    Redmean approximates perceived difference far better than plain RGB distance (it separates
    brown from red and blonde from white) at no cost; see Riemersma, "Colour metric".
    """
    if not palette:
        raise FaceError("crop.hair_palette: is empty; name at least one colour")
    r1, g1, b1 = (float(c) for c in rgb)

    def dist(colour: list[int]) -> float:
        r2, g2, b2 = (float(c) for c in colour)
        rmean = (r1 + r2) / 2
        return (2 + rmean / 256) * (r1 - r2) ** 2 + 4 * (g1 - g2) ** 2 + (2 + (255 - rmean) / 256) * (b1 - b2) ** 2

    return min(palette, key=lambda name: dist(palette[name]))
