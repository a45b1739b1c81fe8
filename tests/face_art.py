"""Seeded, deterministic anime-style heads (and non-faces) drawn with PIL, for the face tests.

The real AnimeFace detector has to find these, so they follow what it was measured to need
with animeface 2.0.3: thin dark outlines (flat colour fills without outlines are never found,
the detector skips windows with too few edges), a pointed chin, large tall eyes at about 52-60%
of the face height with a thick upper lash line, eyes close together, bangs with strand lines,
and a face about 0.40-0.56 of the canvas width (heads under ~96 px are mostly missed).

Everything is drawn by this file, so the images are license-clean and made offline. Shapes
are drawn at 2x and downsampled, which gives anti-aliased edges like real digital art.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]
OUTLINE: RGB = (45, 30, 40)
HAIR_COLOURS: dict[str, RGB] = {
    "blonde": (238, 214, 120), "blue": (70, 110, 215), "pink": (238, 145, 185),
    "black": (40, 38, 48), "red": (195, 45, 45), "green": (70, 165, 90),
    "purple": (140, 90, 190), "brown": (125, 82, 52),
}
SUPERSAMPLE = 2


@dataclass(frozen=True)
class DrawnFace:
    """Where the head was drawn: the face box is from the hairline-top to the chin, in output pixels."""

    box: tuple[int, int, int, int]     # x, y, w, h of the head (skull top to chin)
    eyes_y: int
    hair: RGB


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(max(0, min(255, round(c * factor))) for c in colour)  # type: ignore[return-value]


def _background(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A soft two-colour gradient in a random direction with a few pale discs behind the figure.

    The variety keeps distinct fixture images far apart in a whole-image perceptual hash, as
    distinct artworks are, so that only real near-duplicates are removed.
    """
    w, h = size
    a = [rng.randint(150, 245) for _ in range(3)]
    b = [rng.randint(150, 245) for _ in range(3)]
    n = max(w, h)
    ramp = Image.new("RGB", (n, 1))
    for x in range(n):
        t = x / max(1, n - 1)
        ramp.putpixel((x, 0), tuple(round(p + (q - p) * t) for p, q in zip(a, b)))
    angle = rng.choice((0, 45, 90, 135, 180, 225, 270, 315))
    img = ramp.resize((2 * n, 2 * n)).rotate(angle, resample=Image.Resampling.BILINEAR)
    img = img.crop((n - w // 2, n - h // 2, n - w // 2 + w, n - h // 2 + h))
    d = ImageDraw.Draw(img)
    for _ in range(3):
        r = rng.randint(n // 8, n // 3)
        x, y = rng.randint(0, w), rng.randint(0, h)
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(min(255, c + rng.randint(10, 40)) for c in a))
    return img


def draw_head(canvas: Image.Image, cx: float, top: float, width: float, hair: RGB,
              rng: random.Random) -> DrawnFace:
    """Draw one head onto `canvas` (2x supersampled coordinates are handled inside)."""
    s = SUPERSAMPLE
    layer = canvas.resize((canvas.width * s, canvas.height * s))
    d = ImageDraw.Draw(layer)
    W = width * s
    H = 1.18 * W
    cx, y0 = cx * s, top * s
    line = max(2, round(W / 70))
    skin: RGB = (rng.randint(248, 255), rng.randint(222, 236), rng.randint(205, 220))
    eye_colour: RGB = (rng.randint(40, 200), rng.randint(40, 160), rng.randint(60, 220))
    dark_hair = _shade(hair, 0.62)

    def pt(fx: float, fy: float) -> tuple[float, float]:
        return (cx + fx * W, y0 + fy * H)

    # Hair behind the head: a big rounded mass plus side locks down past the chin.
    d.ellipse([pt(-0.62, -0.04), pt(0.62, 0.95)], fill=hair, outline=OUTLINE, width=line)
    for side in (-1, 1):
        lock = [pt(side * 0.48, 0.35), pt(side * 0.64, 0.5), pt(side * 0.66, 1.12),
                pt(side * 0.5, 1.02), pt(side * 0.44, 0.7)]
        d.polygon(lock, fill=hair, outline=OUTLINE, width=line)
    # Neck and shoulders.
    d.rectangle([pt(-0.11, 0.85), pt(0.11, 1.18)], fill=skin, outline=OUTLINE, width=line)
    cloth: RGB = (rng.randint(60, 220), rng.randint(60, 220), rng.randint(60, 220))
    d.polygon([pt(-0.9, 1.45), pt(-0.6, 1.12), pt(0.6, 1.12), pt(0.9, 1.45)], fill=cloth, outline=OUTLINE, width=line)
    # Face: round skull sides tapering to a pointed chin.
    face = [pt(-0.5, 0.3), pt(-0.5, 0.55), pt(-0.46, 0.72), pt(-0.3, 0.88), pt(-0.1, 0.98), pt(0, 1.0),
            pt(0.1, 0.98), pt(0.3, 0.88), pt(0.46, 0.72), pt(0.5, 0.55), pt(0.5, 0.3), pt(0, 0.05)]
    d.polygon(face, fill=skin, outline=OUTLINE, width=line)
    # Eyes: tall, at ~56% of the face height, close together, with a thick upper lash line.
    eye_y = 0.56 + rng.uniform(-0.02, 0.02)
    ew, eh = 0.2, 0.17
    gap = 0.12
    for side in (-1, 1):
        ex = side * (gap / 2 + ew / 2)
        box = [pt(ex - ew / 2, eye_y - eh / 2), pt(ex + ew / 2, eye_y + eh / 2)]
        d.ellipse(box, fill=(255, 255, 255), outline=OUTLINE, width=line)
        iris = [pt(ex - ew * 0.36, eye_y - eh * 0.42), pt(ex + ew * 0.36, eye_y + eh * 0.5)]
        d.ellipse(iris, fill=eye_colour, outline=OUTLINE, width=line)
        pupil = [pt(ex - ew * 0.16, eye_y - eh * 0.1), pt(ex + ew * 0.16, eye_y + eh * 0.32)]
        d.ellipse(pupil, fill=_shade(eye_colour, 0.35))
        glint = [pt(ex - ew * 0.2, eye_y - eh * 0.3), pt(ex - ew * 0.02, eye_y - eh * 0.08)]
        d.ellipse(glint, fill=(255, 255, 255))
        lash = [pt(ex - side * ew * 0.62, eye_y - eh * 0.35), pt(ex - ew * 0.45, eye_y - eh * 0.62),
                pt(ex + ew * 0.45, eye_y - eh * 0.62), pt(ex + side * ew * 0.66, eye_y - eh * 0.28),
                pt(ex + ew * 0.45, eye_y - eh * 0.46), pt(ex - ew * 0.45, eye_y - eh * 0.46)]
        d.polygon(lash, fill=OUTLINE)
        d.line([pt(ex - ew * 0.4, eye_y + eh * 0.5), pt(ex + ew * 0.4, eye_y + eh * 0.5)], fill=OUTLINE, width=line)
        d.line([pt(ex - ew * 0.45, eye_y - eh * 1.0), pt(ex + ew * 0.45, eye_y - eh * 1.05)], fill=OUTLINE, width=line)
    # Nose and mouth: small strokes.
    d.line([pt(0.0, 0.72), pt(-0.015, 0.75)], fill=OUTLINE, width=line)
    d.arc([pt(-0.07, 0.8), pt(0.07, 0.86)], start=20, end=160, fill=OUTLINE, width=line)
    # Bangs: hair over the forehead ending in strand tips above the eyes, with strand lines.
    tips = 7
    edge = [pt(-0.56, 0.5)]
    for i in range(tips + 1):
        fx = -0.52 + 1.04 * i / tips
        edge.append(pt(fx, 0.24 + rng.uniform(-0.02, 0.02)))
        if i < tips:
            edge.append(pt(fx + 0.52 / tips, 0.42 + rng.uniform(-0.03, 0.02)))
    edge.append(pt(0.56, 0.5))
    crown = [pt(0.6, 0.25), pt(0.45, 0.06), pt(0.2, -0.03), pt(-0.2, -0.03), pt(-0.45, 0.06), pt(-0.6, 0.25)]
    d.polygon(edge + crown, fill=hair, outline=OUTLINE, width=line)
    for i in range(tips):
        fx = -0.52 + 1.04 * (i + 0.5) / tips
        d.line([pt(fx * 0.6, 0.05), pt(fx, 0.38)], fill=dark_hair, width=line)
    small = layer.resize(canvas.size, Image.Resampling.LANCZOS)
    canvas.paste(small)
    w = width
    return DrawnFace(box=(round(cx / s - 0.5 * w), round(top), round(w), round(1.18 * w)),
                     eyes_y=round(top + eye_y * 1.18 * w), hair=hair)


def anime_face(seed: int, size: int | tuple[int, int] = 320, hair: RGB | str = "blue", face_frac: float | None = None,
               centre: tuple[float, float] | None = None) -> tuple[Image.Image, DrawnFace]:
    """One head on a gradient background; deterministic for a given seed and arguments.

    `face_frac` is the face width over the canvas width (drawn at 0.40-0.56 by default);
    `centre` places the face centre (fractions of the canvas), e.g. near a border.
    """
    rng = random.Random(seed)
    w, h = (size, size) if isinstance(size, int) else size
    hair_rgb = HAIR_COLOURS[hair] if isinstance(hair, str) else hair
    frac = face_frac if face_frac is not None else rng.uniform(0.44, 0.52)
    width = frac * w
    fx, fy = centre if centre is not None else (0.5 + rng.uniform(-0.04, 0.04), 0.45 + rng.uniform(-0.03, 0.03))
    canvas = _background((w, h), rng)
    top = fy * h - 0.59 * width       # face centre sits at ~half the head height
    face = draw_head(canvas, fx * w, top, width, hair_rgb, rng)
    return canvas, face


def blank(size: int = 320, colour: RGB = (235, 230, 240)) -> Image.Image:
    """Negative: an empty canvas."""
    return Image.new("RGB", (size, size), colour)


def blurred_face(seed: int, size: int = 320, radius: float = 12) -> Image.Image:
    """Negative: a detectable face blurred until no edges are left."""
    img, _ = anime_face(seed, size)
    return img.filter(ImageFilter.GaussianBlur(radius))


def random_shapes(seed: int, size: int = 320, count: int = 25) -> Image.Image:
    """Negative: random outlined rectangles, ellipses and lines."""
    rng = random.Random(seed)
    img = _background((size, size), rng)
    d = ImageDraw.Draw(img)
    for _ in range(count):
        x0, y0 = rng.randint(0, size - 20), rng.randint(0, size - 20)
        x1, y1 = x0 + rng.randint(10, size // 3), y0 + rng.randint(10, size // 3)
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        kind = rng.choice(("rect", "ellipse", "line"))
        if kind == "rect":
            d.rectangle([x0, y0, x1, y1], fill=fill, outline=OUTLINE, width=2)
        elif kind == "ellipse":
            d.ellipse([x0, y0, x1, y1], fill=fill, outline=OUTLINE, width=2)
        else:
            d.line([x0, y0, x1, y1], fill=OUTLINE, width=3)
    return img


def negatives(seed: int = 0, size: int = 320) -> Sequence[Image.Image]:
    return [blank(size), blurred_face(seed, size), random_shapes(seed, size)]


def plain_portrait(seed: int, size: int = 256, background: RGB = (236, 232, 240)) -> Image.Image:
    """A head centred on one plain colour, the same for every seed: the layout of a board's
    many look-alike portraits. Only hair colour (by seed), eye colour, skin and strand tips vary."""
    rng = random.Random(seed)
    canvas = Image.new("RGB", (size, size), background)
    hair = list(HAIR_COLOURS.values())[seed % len(HAIR_COLOURS)]
    width = 0.48 * size
    draw_head(canvas, size / 2, 0.45 * size - 0.59 * width, width, hair, rng)
    return canvas


def sprite(seed: int, size: int = 256, hidden: RGB = (255, 0, 255), hair: str = "blue") -> Image.Image:
    """An RGBA character sprite: the head on a transparent background that stores `hidden` under alpha 0.

    Drawn on black and on white, the two renders give the exact alpha of every pixel (difference
    matting), so anti-aliased outlines are partly transparent, as in real sprites.
    """
    import numpy as np

    renders = []
    for bg in ((0, 0, 0), (255, 255, 255)):
        canvas = Image.new("RGB", (size, size), bg)
        width = 0.48 * size
        draw_head(canvas, size / 2, 0.42 * size - 0.59 * width, width, HAIR_COLOURS[hair], random.Random(seed))
        renders.append(np.asarray(canvas, dtype=np.float64))
    on_black, on_white = renders
    alpha = np.clip(1 - (on_white - on_black).max(axis=2) / 255, 0, 1)
    colour = np.where(alpha[..., None] > 0, on_black / np.maximum(alpha[..., None], 1e-6), 0)
    rgba = np.dstack([np.clip(colour, 0, 255), alpha * 255]).round().astype(np.uint8)
    rgba[alpha == 0, :3] = hidden
    return Image.fromarray(rgba)


def two_faces(size: tuple[int, int], centres: Sequence[tuple[float, float]], widths: Sequence[float],
              seed: int = 0) -> Image.Image:
    """Several heads on one plain canvas, centred at `centres` (pixels) with face widths `widths`."""
    rng = random.Random(seed)
    canvas = Image.new("RGB", size, (238, 234, 228))
    for i, ((cx, cy), w) in enumerate(zip(centres, widths)):
        hair = list(HAIR_COLOURS.values())[(seed + i) % len(HAIR_COLOURS)]
        draw_head(canvas, cx, cy - 0.59 * w, w, hair, rng)
    return canvas
