"""What both crop modes share: the summary and errors, flattening transparency, and the one output layout.

`resize` (pipeline.crop.crop) and `faces` (pipeline.crop.faces) both end in `write_crop_outputs`, so train
sees one layout: `shard-*.npy` (N x H x W x C uint8), `manifest.jsonl`, `meta.json`, `preview.png`.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from pipeline.shared.config import CropParams, to_jsonable
from pipeline.shared.errors import PipelineError
from pipeline.shared.io import image_grid, save_png, write_json, write_shards
from pipeline.shared.labels import settle_classes
from pipeline.shared.manifest import MANIFEST_NAME, Record, write_manifest

if TYPE_CHECKING:
    from PIL import Image


STAGED = ".staged-"  # new shards' names until the previous output is swapped out


class CropError(PipelineError):
    """The crop input cannot be used at all."""


class FaceError(CropError):
    """Face cropping cannot run at all (detector missing or broken by the installed Pillow)."""


@dataclass
class CropSummary:
    mode: str
    out: Path
    seen: int = 0
    kept: int = 0
    failed: int = 0
    reasons: Counter = field(default_factory=Counter)   # why images or faces were not kept
    labels: dict[str, int] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> dict[str, Any]:
        return {"mode": self.mode, "output": str(self.out), "images seen": self.seen, "kept": self.kept,
                "failed": self.failed, **self.counters, "not kept (why)": dict(self.reasons), "per label": self.labels}

    def metrics(self) -> dict[str, Any]:
        return {"seen": self.seen, "kept": self.kept, "failed": self.failed, "reasons": dict(self.reasons),
                "labels": self.labels, **self.counters}


def flatten(img: "Image.Image", background: tuple[int, int, int]) -> "Image.Image":
    """The image with any transparency composited onto `background` (then RGB); others unchanged.

    RGBA, LA, PA and palette or RGB/L images with a transparent colour (PNG tRNS) all count. A
    plain convert("RGB") would drop alpha and show whatever colour the file stores under
    alpha 0 (black, often, or the colours of a hidden layer).
    """
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img


def _unify_channels(arrays: list[np.ndarray], channels: Any) -> np.ndarray:
    want = channels if channels != "auto" else (1 if all(a.shape[-1] == 1 for a in arrays) else 3)
    fixed = [a if a.shape[-1] == want else (np.repeat(a, 3, axis=-1) if want == 3 else _grey(a)) for a in arrays]
    return np.stack(fixed).astype(np.uint8)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).round().astype(np.uint8)[..., None]


def write_crop_outputs(out: Path, arrays: list[np.ndarray], records: list[Record], params: CropParams,
                       summary: CropSummary, class_order: list[str] | None = None) -> None:
    """Settle labels, then write shards, manifest, meta.json, preview.png and metrics atomically.

    `records[i]` describes `arrays[i]`; its file/index/label_id are filled in here.
    """
    settled, classes = settle_classes([r.label for r in records], params, order=class_order)
    keep = [i for i, (r, label) in enumerate(zip(records, settled)) if label is not None or r.label is None]
    if len(records) > len(keep):
        summary.reasons["small class"] += len(records) - len(keep)
    if not keep:
        raise CropError(f"no images left to write to {out} ({dict(summary.reasons)})")
    ids = {name: i for i, name in enumerate(classes)}
    if params.test_fraction > 0:
        kept_records = [records[i] for i in keep]
        for r, split in zip(kept_records, hash_split([_source_key(r) for r in kept_records],
                                                    [settled[i] for i in keep], params.test_fraction)):
            r.split = split
    images = _unify_channels([arrays[i] for i in keep], params.channels)
    out.mkdir(parents=True, exist_ok=True)
    locations = replace_shards(out, images, params.shard_size)
    final: list[Record] = []
    for (file, index), i in zip(locations, keep):
        r = records[i]
        r.file, r.index, r.label = file, index, settled[i]
        r.label_id = ids.get(r.label) if r.label is not None else None
        final.append(r)
    summary.kept = len(final)
    summary.labels = dict(Counter(r.label or "(none)" for r in final))
    meta = {"classes": classes, "size": params.size, "channels": int(images.shape[-1]), "count": len(final),
            "seed": params.seed, "params": to_jsonable(params)}
    write_json(out / "meta.json", meta)
    save_png(out / "preview.png", preview_grid(images, final, classes))
    write_json(Path(params.metrics), summary.metrics())
    write_manifest(out / MANIFEST_NAME, final)  # last: its presence means the folder is complete


def replace_shards(out: Path, images: np.ndarray, shard_size: int) -> list[tuple[str, int]]:
    """Write the new `shard-*.npy` beside the previous run's, then swap them in; (file, index) per image.

    Until every new shard is complete the previous output stays whole, so a full disk or a kill
    while writing them leaves it readable. Then the previous manifest goes first: from the swap
    until write_crop_outputs writes the new manifest the folder reads as not cropped yet, never
    as a manifest naming shards of another run.
    """
    for leftover in out.glob(f"{STAGED}shard-*.npy"):  # a killed run's
        leftover.unlink()
    try:
        staged = write_shards(out, images, shard_size, prefix=f"{STAGED}shard")
    except BaseException:
        for partial in out.glob(f"{STAGED}shard-*.npy"):
            partial.unlink(missing_ok=True)
        raise
    names = {file: file[len(STAGED):] for file, _ in staged}
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for stale in out.glob("shard-*.npy"):
        if stale.name not in names.values():
            stale.unlink()
    for staged_name, name in names.items():
        os.replace(out / staged_name, out / name)
    return [(names[file], index) for file, index in staged]


def _source_key(r: Record) -> str:
    """What identifies a record's source image: its md5, else its place in the input."""
    return r.md5 or f"{r.extra.get('input_file')}#{r.extra.get('input_index', '')}"


def hash_split(sources: list[str], labels: list[Optional[str]], fraction: float) -> list[str]:
    """'train'/'test' per item: `fraction` of each class's source images go to test, chosen by hash.

    Items are grouped by source image (every face of one picture lands on the same side; a
    picture's reposts were merged by the dedup before this). Within each class (a picture
    counts for its most common label) the pictures are ordered by the SHA-256 of their key and
    the first round(fraction x count) become test, at least one of a class with 2+ pictures. So
    the split is stratified, deterministic and independent of the input order and seed.
    """
    import hashlib

    by_source: dict[str, list[int]] = {}
    for i, key in enumerate(sources):
        by_source.setdefault(key, []).append(i)
    by_class: dict[Optional[str], list[str]] = {}
    for key, items in by_source.items():
        votes = Counter(labels[i] for i in items)
        label = max(votes, key=lambda name: (votes[name], name is not None, str(name)))
        by_class.setdefault(label, []).append(key)
    test: set[str] = set()
    for keys in by_class.values():
        keys.sort(key=lambda k: hashlib.sha256(k.encode()).hexdigest())
        n = round(fraction * len(keys))
        if len(keys) >= 2:
            n = min(max(n, 1), len(keys) - 1)
        test.update(keys[:n])
    return ["test" if key in test else "train" for key in sources]


def preview_grid(images: np.ndarray, records: list[Record], classes: list[str], per_row: int = 12) -> np.ndarray:
    """One row per class (up to 16 rows), or a plain grid for unlabelled data."""
    if not classes:
        n = min(len(images), 12 * per_row)
        return image_grid(images[:n], rows=(n + per_row - 1) // per_row, cols=per_row)
    rows: list[int] = []
    for cid in range(min(len(classes), 16)):
        idx = [i for i, r in enumerate(records) if r.label_id == cid][:per_row]
        rows.extend(idx + [-1] * (per_row - len(idx)))
    blank = np.full((1, *images.shape[1:]), 255, np.uint8)
    picked = np.concatenate([images, blank])[rows]
    return image_grid(picked, rows=len(rows) // per_row, cols=per_row)
