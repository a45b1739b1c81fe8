"""Face detection with AnimeFace: the Pillow it needs, each face's box and likelihood, and its hair colour."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from pipeline.crop.cropping import FaceError
from pipeline.crop.hair import RGB, measure_hair

if TYPE_CHECKING:
    from PIL import Image

# Bump when detection or hair measurement changes, so old cache entries are not reused.
DETECTOR_VERSION = "animeface-2.0.3/hair-v1"


def check_pillow(version: Optional[str] = None) -> None:
    """Fail loudly on Pillow >= 12, with which animeface 2.0.3 silently finds no faces at all.

    The wheel's C extension reads Pillow's internal image struct in the pre-12 layout, so with
    a newer Pillow every image just yields []. pyproject pins pillow<12; this catches an upgrade.
    """
    if version is None:
        import PIL

        version = PIL.__version__
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise FaceError(f"cannot read the Pillow version {version!r}; animeface 2.0.3 needs Pillow < 12") from None
    if major >= 12:
        raise FaceError(f"Pillow {version} is installed, but animeface 2.0.3 silently finds no faces with "
                        f"Pillow >= 12; install 'pillow>=10,<12'")


@dataclass(frozen=True)
class Detection:
    """One detected face in source-image pixels, with the hair colour measured above it."""

    box: tuple[int, int, int, int]   # x, y, w, h (AnimeFace's box: brows/eyes down to the chin)
    likelihood: float
    hair: RGB

    def to_json(self) -> dict[str, Any]:
        return {"box": list(self.box), "likelihood": self.likelihood, "hair": list(self.hair)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Detection":
        return cls(tuple(data["box"]), float(data["likelihood"]), tuple(data["hair"]))  # type: ignore[arg-type]


def detect(img: "Image.Image") -> list[Detection]:
    """All faces AnimeFace finds in an RGB (or L) image, most likely first."""
    check_pillow()
    try:
        import animeface
    except ImportError:
        raise FaceError("animeface is not installed; install 'animeface==2.0.3'") from None
    rgb = np.asarray(img.convert("RGB"))
    found = []
    for face in animeface.detect(img):
        p = face.face.pos
        box = (int(p.x), int(p.y), int(p.width), int(p.height))
        # AnimeFace's own hair colour is one random pixel in the face region (often the outline),
        # so measure it from the pixels instead.
        found.append(Detection(box, round(float(face.likelihood), 6), measure_hair(rgb, box)))
    return sorted(found, key=lambda d: -d.likelihood)


def require_face_extras() -> None:
    """Stop before any work when the `faces` extra is missing or broken, saying what to install."""
    try:
        import animeface  # noqa: F401
        import imagehash  # noqa: F401
    except ImportError as err:
        raise FaceError(f"crop.mode: 'faces' needs {err.name}, which is not installed; "
                        "install the faces extra: pip install 'augment[faces]'") from None
    check_pillow()
