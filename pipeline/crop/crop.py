"""The crop stage: dispatch by `crop.mode`, and the resize mode that fits whole images to size x size.

`faces` (pipeline.crop.faces) detects and crops anime faces. Both modes end in
`cropping.write_crop_outputs`, so train sees one layout: `shard-*.npy` (N x H x W x C uint8),
`manifest.jsonl`, `meta.json` and `preview.png`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np

from pipeline.crop.cropping import CropError, CropSummary, flatten, write_crop_outputs
from pipeline.shared.config import CropParams
from pipeline.shared.io import ShardReader, read_json
from pipeline.shared.labels import label_from_tags
from pipeline.shared.manifest import MANIFEST_NAME, Record, read_manifest
from pipeline.shared.ownership import claim_out
from pipeline.shared.progress import SILENT, Progress

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def run(params: CropParams, progress: Progress = SILENT) -> CropSummary:
    manifest = Path(params.input) / MANIFEST_NAME
    if not manifest.exists():
        raise CropError(f"crop.input: {params.input} has no {MANIFEST_NAME}; run `augment crawl` first")
    claim_out(params.out, "crop")  # refuses a folder holding anything crop did not write, before any work
    if params.mode == "faces":
        from pipeline.crop.faces import crop_faces

        return crop_faces(params, progress)
    return crop_resize(params, progress)


def fit_image(img: "Image.Image", size: int, fit: str) -> "Image.Image":
    """Fit a PIL image into size x size: pad (downscale if larger, centre on black), stretch or centre-crop."""
    from PIL import Image, ImageOps

    if fit == "stretch":
        return img.resize((size, size), Image.Resampling.LANCZOS)
    if fit == "center-crop":
        return ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
    if max(img.size) > size:
        img = ImageOps.contain(img, (size, size), Image.Resampling.LANCZOS)
    canvas = Image.new(img.mode, (size, size), 0)
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def _to_array(img: "Image.Image") -> np.ndarray:
    grey = img.mode in GREY_MODES
    arr = np.asarray(img.convert("L" if grey else "RGB"), dtype=np.uint8)
    return arr[..., None] if grey else arr


def _pad_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Centre N x h x w x C images (h, w <= size) on black size x size squares, vectorised."""
    _, h, w, _ = images.shape
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))


def _load_inputs(records: list[Record], folder: Path, params: CropParams, summary: CropSummary,
                 progress: Progress) -> Iterator[tuple[Record, np.ndarray]]:
    """Yield (record, fitted H x W x C array) for every readable input, counting the rest."""
    from PIL import Image

    shards = ShardReader(folder)
    by_shard: dict[str, list[Record]] = {}
    for r in records:
        if r.index is not None:
            by_shard.setdefault(r.file, []).append(r)
    for file, group in by_shard.items():
        data = shards.load_all(file)
        if data.ndim == 3:
            data = data[..., None]
        if params.fit == "pad" and max(data.shape[1:3]) <= params.size:
            fitted = _pad_batch(data[[r.index for r in group]], params.size)
            yield from zip(group, fitted)
        else:
            for r in group:
                img = Image.fromarray(data[r.index][..., 0] if data.shape[-1] == 1 else data[r.index])
                yield r, _to_array(fit_image(img, params.size, params.fit))
        progress.advance("crop", len(group))
    for r in (r for r in records if r.index is None):
        try:
            with Image.open(folder / r.file) as img:
                img.load()
                flat = flatten(img, params.background_rgb)
                if flat is not img and img.mode in GREY_MODES:
                    flat = flat.convert("L")
                arr = _to_array(fit_image(flat, params.size, params.fit))
        except Exception as err:  # any decoder error means an unusable file, not a failed batch
            summary.failed += 1
            summary.reasons[f"unreadable ({type(err).__name__})"] += 1
            log.debug("skip %s: %s", r.file, err)
        else:
            yield r, arr
        progress.advance("crop", 1)


def _label_for(r: Record, params: CropParams) -> Optional[str]:
    if params.label_from == "source":
        return r.label
    if params.label_from == "tags":
        return label_from_tags(r.tags, params)
    return None


def crop_resize(params: CropParams, progress: Progress = SILENT) -> CropSummary:
    folder = Path(params.input)
    records = read_manifest(folder / MANIFEST_NAME)
    summary = CropSummary(mode="resize", out=Path(params.out), seen=len(records))
    progress.start("crop", total=len(records), description="resize")
    kept: list[Record] = []
    arrays: list[np.ndarray] = []
    for r, arr in _load_inputs(records, folder, params, summary, progress):
        kept.append(Record(file="", label=_label_for(r, params), split=r.split, md5=r.md5, id=r.id, tags=r.tags,
                           source_url=r.source_url, extra={"input_file": r.file, **({"input_index": r.index} if r.index is not None else {})}))
        arrays.append(arr)
    progress.finish("crop")
    if params.label_from in ("tags",):
        before = len(kept)
        pairs = [(r, a) for r, a in zip(kept, arrays) if r.label is not None]
        if before > len(pairs):
            summary.reasons["no label"] += before - len(pairs)
        kept, arrays = [p[0] for p in pairs], [p[1] for p in pairs]
    source_order = _source_classes(folder)
    write_crop_outputs(Path(params.out), arrays, kept, params, summary, source_order)
    return summary


def _source_classes(folder: Path) -> list[str] | None:
    meta = folder / "meta.json"
    if meta.exists():
        return read_json(meta).get("classes")
    return None


