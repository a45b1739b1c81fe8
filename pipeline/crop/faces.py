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
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from pipeline.crop.cropping import CropError, CropSummary, flatten, write_crop_outputs
from pipeline.crop.dedup import image_hash, iou, near_duplicates, overlap, region_difference, relative_square
from pipeline.crop.detector import DETECTOR_VERSION, Detection, detect, require_face_extras
from pipeline.crop.hair import nearest_colour
from pipeline.shared.config import CropParams
from pipeline.shared.io import atomic_path, file_digest
from pipeline.shared.labels import label_from_tags
from pipeline.shared.manifest import MANIFEST_NAME, Record, read_manifest
from pipeline.shared.progress import SILENT, Progress
from pipeline.shared.workers import process_pool, usable_cores

log = logging.getLogger(__name__)

# Bump when cropping, resizing or the cache layout changes.
CROP_VERSION = 2
# Mean chroma (max-min of RGB, 0..1) below which a crop counts as monochrome: greyscale art is
# ~0, pencil sketches on tinted paper stay under ~0.03, flat-coloured anime skin alone is ~0.1.
MONO_CHROMA = 0.04
# Across images, two faces are at the same place of the picture when the smaller crop square
# (in fractions of the image) lies at least this much inside the larger one. Not IoU: in a
# resized copy AnimeFace may box the same face at another scale (67 vs 127 px measured).
REPOST_OVERLAP = 0.5
# Starting a spawn worker costs ~0.5-1 s (numpy, Pillow, scipy for imagehash), about what
# detecting 4 images costs; below this many uncached images per worker one process is faster.
MIN_IMAGES_PER_WORKER = 4


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
