"""`crop.mode: faces`: detect anime faces with AnimeFace, crop squares around them, label and dedup.

Per source image (in a process pool, since detection takes ~0.1-0.3 s for 512 px):
decode -> composite transparency onto `background` -> detect (animeface) -> measure the hair
colour -> perceptual hash of the image -> square crop of every face with `margin`, padded where
it leaves the image -> LANCZOS resize to `size`. Then, in the main process, the cheap per-face
filters (likelihood, size, one face detected twice, best/all + max_faces_per_image,
monochrome), labels (tags, hair colour or none), near-duplicate removal across images, and
`pipeline.crop.cropping.write_crop_outputs` for the usual shards/manifest/meta/preview/metrics/split.

Re-runs are cheap: detections are cached per file digest (SHA-256 of the bytes, not the post's
md5, which is the same for every crawl variant) and detector settings, crops also per crop
params, under `crop.cache`, outside `crop.out` because DVC deletes a stage's outs before it
runs. Cache files are JSON and `.npz` loaded with allow_pickle=False, written atomically.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import numpy as np

from pipeline.crop.cropping import CropError, CropSummary, flatten, write_crop_outputs
from pipeline.shared.config import CropParams
from pipeline.shared.io import atomic_path, file_digest
from pipeline.shared.labels import label_from_tags
from pipeline.shared.manifest import MANIFEST_NAME, Record, read_manifest
from pipeline.shared.progress import SILENT, Progress
from pipeline.shared.workers import process_pool, usable_cores

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# Bump when detection or hair measurement changes, so old cache entries are not reused.
DETECTOR_VERSION = "animeface-2.0.3/hair-v1"
# Bump when cropping, resizing or the cache layout changes.
CROP_VERSION = 2
# Mean chroma (max-min of RGB, 0..1) below which a crop counts as monochrome: greyscale art is
# ~0, pencil sketches on tinted paper stay under ~0.03, flat-coloured anime skin alone is ~0.1.
MONO_CHROMA = 0.04
# Side of the aligned face regions compared across images (see `region_difference`).
REGION_SIDE = 24
# Across images, two faces are at the same place of the picture when the smaller crop square
# (in fractions of the image) lies at least this much inside the larger one. Not IoU: in a
# resized copy AnimeFace may box the same face at another scale (67 vs 127 px measured).
REPOST_OVERLAP = 0.5
# Starting a spawn worker costs ~0.5-1 s (numpy, Pillow, scipy for imagehash), about what
# detecting 4 images costs; below this many uncached images per worker one process is faster.
MIN_IMAGES_PER_WORKER = 4
RGB = tuple[int, int, int]


class FaceError(CropError):
    """Face cropping cannot run at all (detector missing or broken by the installed Pillow)."""


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


def square_around(box: Sequence[int], margin: float) -> tuple[int, int, int]:
    """(x0, y0, side) of the square centred on the face box, `margin` times its size on each side."""
    x, y, w, h = box
    side = max(1, round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    return round(cx - side / 2), round(cy - side / 2), side


def crop_square(rgb: np.ndarray, x0: int, y0: int, side: int, pad_mode: str) -> np.ndarray:
    """The side x side square at (x0, y0); outside the image it mirrors (reflect) or repeats (edge) the image."""
    height, width = rgb.shape[:2]
    if x0 >= width or y0 >= height or x0 + side <= 0 or y0 + side <= 0:
        raise ValueError(f"square {(x0, y0, side)} lies outside the {width}x{height} image")
    rows = _source_indices(y0, side, height, pad_mode)
    cols = _source_indices(x0, side, width, pad_mode)
    return rgb[rows[:, None], cols[None, :]]


def _source_indices(start: int, length: int, n: int, pad_mode: str) -> np.ndarray:
    """Image indices for positions start..start+length-1 along an axis of n pixels.

    Mapping indices (rather than np.pad on the cut-out) mirrors the whole image at its border,
    not just the part of it inside the square.
    """
    idx = np.arange(start, start + length)
    if pad_mode == "edge" or n == 1:
        return np.clip(idx, 0, n - 1)
    period = 2 * (n - 1)                  # numpy's 'reflect': the border pixel is not repeated
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def crop_face(rgb: np.ndarray, box: Sequence[int], margin: float, pad_mode: str, size: int) -> tuple[np.ndarray, list[int]]:
    """The face's square crop resized to size x size (LANCZOS), and the square in source pixels."""
    from PIL import Image

    x0, y0, side = square_around(box, margin)
    square = crop_square(rgb, x0, y0, side, pad_mode)
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8), [x0, y0, side, side]


def chroma(crop: np.ndarray) -> float:
    """Mean colourfulness: 0 for greyscale, ~0.1+ for coloured anime art."""
    c = crop.astype(np.int16)
    return float((c.max(axis=-1) - c.min(axis=-1)).mean() / 255)


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


# ---- per-image work (runs in worker processes) -------------------------------------------

@dataclass(frozen=True)
class _Task:
    path: str
    digest: str                      # SHA-256 of the file's bytes: the cache key, whatever the post says
    cache: str
    detect_key: str
    crop_key: str
    background: tuple[int, int, int]
    margin: float
    pad_mode: str
    size: int
    min_source_side: int


@dataclass
class _Result:
    status: str                                    # "ok", "small source" or "unreadable (Error)"
    digest: str = ""
    width: int = 0
    height: int = 0
    found: int = 0                                 # faces the detector returned
    image_hash: str = ""                           # perceptual hash of the whole source, hex
    faces: list[dict[str, Any]] = field(default_factory=list)   # detection + crop_box + chroma, most likely first
    crops: Optional[np.ndarray] = None             # len(faces) x size x size x 3
    cached: str = ""                               # "crops", "detections" or "" (computed now)


def _key(values: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def detect_key(params: CropParams) -> str:
    """Hash of everything that changes the detections of a given file: the detector and the
    background transparent pixels are composited onto."""
    return _key({"detector": DETECTOR_VERSION, "background": list(params.background_rgb)})


def crop_key(params: CropParams) -> str:
    """Hash of everything that changes a crop of a given file (every face is cropped; the filters,
    `keep` and `max_faces_per_image` act later, in the main process, and cost nothing to change)."""
    return _key({"v": CROP_VERSION, "detect": detect_key(params), "margin": params.margin,
                 "pad_mode": params.pad_mode, "size": params.size})


def _detections_path(cache: str, key: str, digest: str) -> Path:
    return Path(cache) / "detections" / key / digest[:2] / f"{digest}.json"


def _crops_path(cache: str, key: str, digest: str) -> Path:
    return Path(cache) / "crops" / key / digest[:2] / f"{digest}.npz"


def _read_crops(path: Path) -> Optional[_Result]:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            crops = data["crops"]
        return _Result("ok", meta["digest"], meta["width"], meta["height"], meta["found"], meta["image_hash"],
                       meta["faces"], crops, "crops")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):   # missing or damaged: recompute
        return None


def _write_crops(path: Path, result: _Result) -> None:
    meta = {"digest": result.digest, "width": result.width, "height": result.height, "found": result.found,
            "image_hash": result.image_hash, "faces": result.faces}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, crops=result.crops, meta=np.array(json.dumps(meta)))


def _read_detections(path: Path) -> Optional[tuple[int, str, list[Detection]]]:
    try:
        data = json.loads(path.read_text())
        if data.get("detector") != DETECTOR_VERSION:
            return None
        return data["found"], data["image_hash"], [Detection.from_json(d) for d in data["faces"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_detections(path: Path, found: int, hash_hex: str, faces: list[Detection]) -> None:
    data = {"detector": DETECTOR_VERSION, "found": found, "image_hash": hash_hex, "faces": [f.to_json() for f in faces]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data))


def _load_rgb(path: str, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Decode fully (so truncated files fail here), honour EXIF rotation, flatten transparency,
    return H x W x 3 uint8."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        return np.asarray(flatten(img, background).convert("RGB"), dtype=np.uint8)


def cached_result(task: _Task) -> Optional[_Result]:
    """The finished result of these very bytes cropped before with the same settings, if any."""
    cached = _read_crops(_crops_path(task.cache, task.crop_key, task.digest))
    if cached is not None and min(cached.width, cached.height) < task.min_source_side:
        return _Result("small source", cached.digest, cached.width, cached.height)
    return cached


def process_image(task: _Task) -> _Result:
    """Detect and crop the faces of one source image, using and filling the cache."""
    from PIL import Image

    cached = cached_result(task)
    if cached is not None:
        return cached
    digest = task.digest
    try:
        rgb = _load_rgb(task.path, task.background)
    except Exception as err:  # any decoder error (truncated, not an image, bomb) means skip this file
        log.debug("skip %s: %s", task.path, err)
        return _Result(f"unreadable ({type(err).__name__})", digest)
    height, width = rgb.shape[:2]
    if min(width, height) < task.min_source_side:
        return _Result("small source", digest, width, height)
    detections_path = _detections_path(task.cache, task.detect_key, digest)
    detections = _read_detections(detections_path)
    source = "detections"
    if detections is None:
        img = Image.fromarray(rgb)
        faces = detect(img)
        detections = (len(faces), f"{image_hash(img):016x}", faces)
        _write_detections(detections_path, *detections)
        source = ""
    found, hash_hex, faces = detections
    result = _Result("ok", digest, width, height, found, hash_hex, cached=source)
    crops = []
    for det in faces:
        crop, square = crop_face(rgb, det.box, task.margin, task.pad_mode, task.size)
        crops.append(crop)
        result.faces.append({**det.to_json(), "crop_box": square, "chroma": round(chroma(crop), 5)})
    result.crops = np.stack(crops) if crops else np.zeros((0, task.size, task.size, 3), np.uint8)
    _write_crops(_crops_path(task.cache, task.crop_key, digest), result)
    return result


def _map(tasks: list[_Task], workers: int) -> Iterator[_Result]:
    """Results in task order: in this process for one worker, else in the package's process pool (spawn)."""
    if workers <= 1:
        yield from map(process_image, tasks)
        return
    chunk = max(1, min(16, len(tasks) // (workers * 4)))
    with process_pool(workers) as pool:
        yield from pool.map(process_image, tasks, chunksize=chunk)


# ---- the stage -----------------------------------------------------------------------------

@dataclass
class _Candidate:
    record: Record
    face: dict[str, Any]
    crop: np.ndarray
    label: Optional[str]
    face_index: int
    image_hash: int
    rect: tuple[float, float, float, float]    # the crop square in fractions of the source image


def _label(record: Record, face: dict[str, Any], params: CropParams) -> Optional[str]:
    if params.label_from == "tags":
        return label_from_tags(record.tags, params)
    if params.label_from == "hair_color":
        return nearest_colour(face["hair"], params.hair_palette)
    if params.label_from == "source":
        return record.label
    return None


def _area(face: dict[str, Any]) -> int:
    return int(face["box"][2]) * int(face["box"][3])


def _select(record: Record, result: _Result, params: CropParams, summary: CropSummary) -> list[_Candidate]:
    """The faces of one image that pass the per-face filters, counting why the others did not.

    Order of the rules: likelihood and size filters; then, most likely first and on equal
    likelihood the larger face first, a face whose box overlaps an already chosen one by more
    than `dup_iou` is the same face detected twice; then `keep: best` takes the first face and
    `keep: all` the first `max_faces_per_image`.
    """
    passed = []
    for i, face in enumerate(result.faces):
        if face["likelihood"] < params.min_likelihood:
            summary.reasons["low likelihood"] += 1
        elif min(face["box"][2:]) < params.min_face:
            summary.reasons["face too small"] += 1
        else:
            passed.append(i)
    passed.sort(key=lambda i: (-result.faces[i]["likelihood"], -_area(result.faces[i]), i))
    distinct: list[int] = []
    for i in passed:
        if any(iou(result.faces[i]["box"], result.faces[j]["box"]) > params.dup_iou for j in distinct):
            summary.reasons["detected twice"] += 1
        else:
            distinct.append(i)
    limit = 1 if params.keep == "best" else params.max_faces_per_image
    if len(distinct) > limit:
        summary.reasons["not the best face" if params.keep == "best" else "over max_faces_per_image"] += len(distinct) - limit
        distinct = distinct[:limit]
    selected = []
    for i in distinct:
        face = result.faces[i]
        if params.reject_monochrome and face["chroma"] < MONO_CHROMA:
            summary.reasons["monochrome"] += 1
            continue
        label = _label(record, face, params)
        if label is None and params.label_from in ("tags", "hair_color"):
            summary.reasons["no label"] += 1
            continue
        selected.append(_Candidate(record, face, result.crops[i], label, i, int(result.image_hash, 16),
                                   relative_square(face, result.width, result.height)))
    return selected


def _tasks(records: list[Record], folder: Path, params: CropParams) -> list[_Task | _Result]:
    """One task per record, or the result already known (an unreadable file)."""
    shard_inputs = [r.file for r in records if r.index is not None]
    if shard_inputs:
        raise CropError(f"crop.mode: faces needs image files, but {folder} holds array shards "
                        f"({shard_inputs[0]}); use mode 'resize' for it")
    dkey, ckey = detect_key(params), crop_key(params)
    tasks: list[_Task | _Result] = []
    for r in records:
        path = folder / r.file
        try:
            digest = file_digest(path, "sha256")
        except OSError as err:
            tasks.append(_Result(f"unreadable ({type(err).__name__})"))
            continue
        tasks.append(_Task(str(path), digest, str(params.cache), dkey, ckey, params.background_rgb, params.margin,
                           params.pad_mode, params.size, params.min_source_side))
    return tasks


def _record_for(c: _Candidate, params: CropParams) -> Record:
    r, face = c.record, c.face
    extra: dict[str, Any] = {"input_file": r.file, "face_index": c.face_index, "crop_box": face["crop_box"]}
    if params.label_from == "hair_color":
        extra["hair_rgb"] = face["hair"]
    return Record(file="", label=c.label, split=r.split, md5=r.md5, id=r.id, tags=r.tags, rating=r.rating,
                  source_url=r.source_url, box=list(face["box"]), likelihood=round(face["likelihood"], 4), extra=extra)


def remove_reposts(candidates: list[_Candidate], params: CropParams) -> set[int]:
    """Indices of faces that repeat a kept face of another image: a repost, resized or recompressed.

    Both tests must hold: the whole images' perceptual hashes are within `dedup_hamming` bits
    (cheap, vectorised; every repost passes, but so do different drawings of a similar layout),
    and the faces sit at the same place of the picture (the smaller crop square, in fractions of
    the image, lies at least REPOST_OVERLAP inside the other) and look the same there, in colour (`region_difference` at
    most `dedup_max_diff`). The largest face of a group (the best-resolution copy) is kept.
    """
    order = sorted(range(len(candidates)), key=lambda i: (-min(candidates[i].face["box"][2:]),
                                                          -candidates[i].face["likelihood"], i))

    def same(j: int, i: int) -> bool:
        a, b = candidates[j], candidates[i]
        if a.record is b.record:          # faces of one image: `_select` already separated them
            return False
        return (overlap(a.rect, b.rect) >= REPOST_OVERLAP
                and region_difference(a.crop, a.rect, b.crop, b.rect) <= params.dedup_max_diff)

    return near_duplicates([c.image_hash for c in candidates], order, params.dedup_hamming, same)


def require_face_extras() -> None:
    """Stop before any work when the `faces` extra is missing or broken, saying what to install."""
    try:
        import animeface  # noqa: F401
        import imagehash  # noqa: F401
    except ImportError as err:
        raise FaceError(f"crop.mode: 'faces' needs {err.name}, which is not installed; "
                        "install the faces extra: pip install 'augment[faces]'") from None
    check_pillow()


def crop_faces(params: CropParams, progress: Progress = SILENT) -> CropSummary:
    """Run the faces mode of the crop stage; see the module docstring."""
    require_face_extras()
    folder = Path(params.input)
    records = read_manifest(folder / MANIFEST_NAME)
    tasks = _tasks(records, folder, params)
    summary = CropSummary(mode="faces", out=Path(params.out), seen=len(records))
    results, workers = _run_tasks(tasks, params.workers, progress)
    found = 0
    candidates: list[_Candidate] = []
    for record, result in zip(records, results):
        if result.status.startswith("unreadable"):
            summary.failed += 1
            summary.reasons[result.status] += 1
        elif result.status == "small source":
            summary.reasons["small source"] += 1
        else:
            if not record.md5:
                record.md5 = file_digest(folder / record.file, "md5")
            found += result.found
            if not result.faces:
                summary.reasons["no face in image"] += 1
            candidates.extend(_select(record, result, params, summary))
    dupes = remove_reposts(candidates, params)
    if dupes:
        summary.reasons["duplicate"] += len(dupes)
    kept = [c for i, c in enumerate(candidates) if i not in dupes]
    summary.counters.update({"faces found": found, "duplicates removed": len(dupes),
                             "images from cache": sum(r.cached == "crops" for r in results), "workers": workers})
    if not kept:
        raise CropError(f"no faces kept from {len(records)} images in {folder} ({_why(summary)})")
    write_crop_outputs(Path(params.out), [c.crop for c in kept], [_record_for(c, params) for c in kept],
                       params, summary, class_order=None)
    return summary


def _run_tasks(tasks: list[_Task | _Result], workers: int, progress: Progress) -> tuple[list[_Result], int]:
    """Results in task order, and the processes used; cached ones are read here, the rest go to the pool."""
    known = [t if isinstance(t, _Result) else cached_result(t) for t in tasks]
    pending = [i for i, r in enumerate(known) if r is None]
    n_workers = max(1, min(workers or usable_cores(), len(pending) // MIN_IMAGES_PER_WORKER))
    progress.start("crop", total=len(tasks), description=f"faces ({len(pending)} to detect, {n_workers} workers)")
    found = sum(r.found for r in known if r is not None)
    progress.advance("crop", len(tasks) - len(pending), faces=found)
    results = list(known)
    for i, result in zip(pending, _map([tasks[i] for i in pending], n_workers)):  # type: ignore[misc]
        results[i] = result
        found += result.found
        progress.advance("crop", 1, faces=found)
    progress.finish("crop")
    return results, n_workers  # type: ignore[return-value]


def _why(summary: CropSummary) -> str:
    reasons = {k: v for k, v in summary.reasons.items() if v}
    return ", ".join(f"{k}: {v}" for k, v in reasons.items()) or "no faces detected"
