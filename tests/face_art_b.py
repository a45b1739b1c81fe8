"""A second drawing style of seeded anime heads, to check that results do not depend on one style.

Style A (tests/face_art.py) is one hairstyle on a soft gradient with black outlines. Style B
changes what a generator has to learn while keeping what AnimeFace needs to find a face (dark
outlines, a pointed chin, tall eyes with a thick lash line at about 55% of the face height,
bangs with strand lines): navy outlines, cel shading (a shadow under the bangs and a
highlight band across the crown), three hairstyles (twin tails, long straight hair, a bob),
side-swept bangs, two-tone irises with two glints, blush, three mouths, a hair bow, and flat
backgrounds with stripes or dots instead of gradients.
"""
from __future__ import annotations

import random

from PIL import Image, ImageDraw

from face_art import HAIR_COLOURS, RGB, SUPERSAMPLE, DrawnFace, _shade

OUTLINE_B: RGB = (32, 36, 74)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(p + (q - p) * t) for p, q in zip(a, b))  # type: ignore[return-value]


def background_b(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A flat pastel with diagonal stripes or polka dots in a slightly darker tint."""
    w, h = size
    base: RGB = (rng.randint(200, 250), rng.randint(200, 250), rng.randint(200, 250))
    tint = _shade(base, rng.uniform(0.86, 0.94))
    img = Image.new("RGB", size, base)
    d = ImageDraw.Draw(img)
    step = rng.randint(max(8, w // 14), max(10, w // 7))
    if rng.random() < 0.5:
        for x in range(-h, w + h, step):
            d.line([(x, 0), (x + h, h)], fill=tint, width=max(2, step // 3))
    else:
        r = max(2, step // 4)
        for y in range(0, h + step, step):
            for x in range((y // step % 2) * step // 2, w + step, step):
                d.ellipse([x - r, y - r, x + r, y + r], fill=tint)
    return img


def draw_head_b(canvas: Image.Image, cx: float, top: float, width: float, hair: RGB,
                rng: random.Random) -> DrawnFace:
    """Draw one style-B head onto `canvas` (supersampled like style A)."""
    s = SUPERSAMPLE
    layer = canvas.resize((canvas.width * s, canvas.height * s))
    d = ImageDraw.Draw(layer)
    W = width * s
    H = 1.16 * W
    cx, y0 = cx * s, top * s
    line = max(2, round(W / 64))
    skin: RGB = (rng.randint(250, 255), rng.randint(228, 240), rng.randint(212, 226))
    eye_colour: RGB = (rng.randint(30, 220), rng.randint(30, 200), rng.randint(40, 230))
    shadow, light = _shade(hair, 0.7), _mix(hair, (255, 255, 255), 0.45)
    style = rng.choice(("twintails", "long", "bob"))
    sweep = rng.uniform(-0.08, 0.08)          # side-swept bangs

    def pt(fx: float, fy: float) -> tuple[float, float]:
        return (cx + fx * W, y0 + fy * H)

    # Back hair, by hairstyle.
    if style == "twintails":
        for side in (-1, 1):
            d.ellipse([pt(side * 0.62 - 0.22, 0.1), pt(side * 0.62 + 0.22, 1.25)], fill=hair, outline=OUTLINE_B, width=line)
        d.ellipse([pt(-0.6, -0.05), pt(0.6, 0.9)], fill=hair, outline=OUTLINE_B, width=line)
    elif style == "long":
        d.rounded_rectangle([pt(-0.62, 0.0), pt(0.62, 1.4)], radius=0.3 * W, fill=hair, outline=OUTLINE_B, width=line)
    else:
        d.ellipse([pt(-0.64, -0.06), pt(0.64, 0.98)], fill=hair, outline=OUTLINE_B, width=line)
    # Neck, collar.
    d.rectangle([pt(-0.1, 0.85), pt(0.1, 1.16)], fill=skin, outline=OUTLINE_B, width=line)
    cloth: RGB = (rng.randint(40, 230), rng.randint(40, 230), rng.randint(40, 230))
    d.polygon([pt(-0.85, 1.45), pt(-0.5, 1.1), pt(0.5, 1.1), pt(0.85, 1.45)], fill=cloth, outline=OUTLINE_B, width=line)
    d.polygon([pt(-0.18, 1.1), pt(0, 1.3), pt(0.18, 1.1)], fill=(250, 250, 250), outline=OUTLINE_B, width=line)
    # Face: a little wider than style A, still ending in a pointed chin.
    face = [pt(-0.52, 0.3), pt(-0.52, 0.58), pt(-0.47, 0.75), pt(-0.28, 0.9), pt(-0.08, 0.99), pt(0, 1.0),
            pt(0.08, 0.99), pt(0.28, 0.9), pt(0.47, 0.75), pt(0.52, 0.58), pt(0.52, 0.3), pt(0, 0.05)]
    d.polygon(face, fill=skin, outline=OUTLINE_B, width=line)
    # Blush.
    blush = _mix(skin, (240, 120, 140), 0.45)
    for side in (-1, 1):
        d.ellipse([pt(side * 0.3 - 0.09, 0.7), pt(side * 0.3 + 0.09, 0.76)], fill=blush)
    # Eyes: tall, two-tone irises, two glints, a thick lash line with an outer flick.
    eye_y = 0.57 + rng.uniform(-0.02, 0.02)
    ew, eh, gap = 0.2, 0.18, 0.13
    lower = _mix(eye_colour, (255, 255, 255), 0.5)
    for side in (-1, 1):
        ex = side * (gap / 2 + ew / 2)
        d.ellipse([pt(ex - ew / 2, eye_y - eh / 2), pt(ex + ew / 2, eye_y + eh / 2)], fill=(255, 255, 255),
                  outline=OUTLINE_B, width=line)
        iris = [pt(ex - ew * 0.38, eye_y - eh * 0.45), pt(ex + ew * 0.38, eye_y + eh * 0.5)]
        d.ellipse(iris, fill=eye_colour, outline=OUTLINE_B, width=line)
        d.chord([pt(ex - ew * 0.3, eye_y - eh * 0.1), pt(ex + ew * 0.3, eye_y + eh * 0.45)], 0, 180, fill=lower)
        d.ellipse([pt(ex - ew * 0.14, eye_y - eh * 0.15), pt(ex + ew * 0.14, eye_y + eh * 0.25)],
                  fill=_shade(eye_colour, 0.3))
        d.ellipse([pt(ex + ew * 0.04, eye_y - eh * 0.32), pt(ex + ew * 0.2, eye_y - eh * 0.1)], fill=(255, 255, 255))
        d.ellipse([pt(ex - ew * 0.22, eye_y + eh * 0.15), pt(ex - ew * 0.12, eye_y + eh * 0.27)], fill=(255, 255, 255))
        lash = [pt(ex - side * ew * 0.6, eye_y - eh * 0.3), pt(ex - ew * 0.42, eye_y - eh * 0.6),
                pt(ex + ew * 0.42, eye_y - eh * 0.6), pt(ex + side * ew * 0.78, eye_y - eh * 0.5),
                pt(ex + side * ew * 0.6, eye_y - eh * 0.3), pt(ex - ew * 0.42, eye_y - eh * 0.44)]
        d.polygon(lash, fill=OUTLINE_B)
        d.line([pt(ex - ew * 0.45, eye_y - eh * 0.95), pt(ex + ew * 0.45, eye_y - eh * 1.0)], fill=OUTLINE_B, width=line)
    # Nose and one of three mouths.
    d.line([pt(0.01, 0.73), pt(-0.01, 0.75)], fill=OUTLINE_B, width=line)
    mouth = rng.choice(("smile", "open", "cat"))
    if mouth == "smile":
        d.arc([pt(-0.08, 0.8), pt(0.08, 0.87)], start=20, end=160, fill=OUTLINE_B, width=line)
    elif mouth == "open":
        d.chord([pt(-0.06, 0.8), pt(0.06, 0.88)], 0, 180, fill=(180, 60, 70), outline=OUTLINE_B, width=line)
    else:
        for side in (-1, 1):
            d.arc([pt(side * 0.035 - 0.035, 0.8), pt(side * 0.035 + 0.035, 0.85)], start=0, end=180,
                  fill=OUTLINE_B, width=line)
    # Bangs, swept to one side, with a shadow under them and strand lines.
    tips = 6
    edge = [pt(-0.58, 0.52)]
    for i in range(tips + 1):
        fx = -0.54 + 1.08 * i / tips
        edge.append(pt(fx, 0.22 + rng.uniform(-0.02, 0.02)))
        if i < tips:
            edge.append(pt(fx + 0.54 / tips + sweep, 0.44 + rng.uniform(-0.03, 0.02)))
    edge.append(pt(0.58, 0.52))
    shade_edge = [(x, y + 0.03 * H) for x, y in edge[1:-1]]
    d.line(shade_edge, fill=_shade(skin, 0.85), width=2 * line)
    crown = [pt(0.62, 0.25), pt(0.46, 0.05), pt(0.2, -0.04), pt(-0.2, -0.04), pt(-0.46, 0.05), pt(-0.62, 0.25)]
    d.polygon(edge + crown, fill=hair, outline=OUTLINE_B, width=line)
    d.arc([pt(-0.42, 0.02), pt(0.42, 0.34)], start=200, end=340, fill=light, width=3 * line)
    for i in range(tips):
        fx = -0.54 + 1.08 * (i + 0.5) / tips
        d.line([pt(fx * 0.55, 0.04), pt(fx + sweep, 0.38)], fill=shadow, width=line)
    # A bow on one side.
    bx = rng.choice((-1, 1)) * 0.42
    bow: RGB = (rng.randint(150, 255), rng.randint(40, 200), rng.randint(40, 200))
    d.polygon([pt(bx, 0.1), pt(bx - 0.12, 0.02), pt(bx - 0.12, 0.18)], fill=bow, outline=OUTLINE_B, width=line)
    d.polygon([pt(bx, 0.1), pt(bx + 0.12, 0.02), pt(bx + 0.12, 0.18)], fill=bow, outline=OUTLINE_B, width=line)
    small = layer.resize(canvas.size, Image.Resampling.LANCZOS)
    canvas.paste(small)
    w = width
    return DrawnFace(box=(round(cx / s - 0.5 * w), round(top), round(w), round(1.16 * w)),
                     eyes_y=round(top + eye_y * 1.16 * w), hair=hair)


def anime_face_b(seed: int, size: int = 320, hair: RGB | str = "blue") -> tuple[Image.Image, DrawnFace]:
    """One style-B head; deterministic for a given seed and arguments."""
    rng = random.Random(seed * 7919 + 17)
    hair_rgb = HAIR_COLOURS[hair] if isinstance(hair, str) else hair
    width = rng.uniform(0.44, 0.52) * size
    fx, fy = 0.5 + rng.uniform(-0.04, 0.04), 0.45 + rng.uniform(-0.03, 0.03)
    canvas = background_b((size, size), rng)
    face = draw_head_b(canvas, fx * size, fy * size - 0.58 * width, width, hair_rgb, rng)
    return canvas, face
