"""Crop outputs as the models see them: one split read into arrays or tensors, and uint8 <-> float pixels.

The crop stage writes uint8 shards plus a manifest; train, generate (calibration), evaluate and
the benchmarks all read a split through `load_split`, so they agree on order, labels and layout.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from pipeline.shared.errors import PipelineError
from pipeline.shared.io import ShardReader, read_json
from pipeline.shared.manifest import MANIFEST_NAME, Record, read_manifest


class DataError(PipelineError):
    """A crop output cannot be read (missing, incomplete)."""


def read_split(folder: Path, split: str) -> tuple[np.ndarray, list[Record], list[str]]:
    """One split of a crop output: N x H x W x C uint8 images, their records, and the classes."""
    folder = Path(folder)
    classes = list(read_json(folder / "meta.json").get("classes", []))
    records = [r for r in read_manifest(folder / MANIFEST_NAME) if r.split == split]
    shards = ShardReader(folder)
    loaded: dict[str, np.ndarray] = {}
    rows = []
    for r in records:
        if r.file not in loaded:
            loaded[r.file] = shards.load_all(r.file)
        rows.append(shards.row(r.file, loaded[r.file], r.index))
    images = np.stack(rows) if rows else np.zeros((0, 1, 1, 1), np.uint8)
    return images, records, classes


def load_split(folder: Path, split: str) -> tuple[torch.Tensor, np.ndarray, list[Record], list[str]]:
    """(uint8 N x C x H x W images, label ids (0 when unlabelled), records, classes) of one split of a crop output."""
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).exists():
        raise DataError(f"{folder} has no {MANIFEST_NAME}; run `augment crop` first")
    array, records, classes = read_split(folder, split)
    if not records:
        return torch.empty(0, dtype=torch.uint8), np.empty(0, np.int64), [], classes
    images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    labels = np.array([r.label_id if r.label_id is not None else 0 for r in records], np.int64)
    return images, labels, records, classes


def split_digest(images: torch.Tensor, label_ids: np.ndarray, classes: list[str]) -> str:
    """sha256 of a split's images (N x C x H x W uint8), label ids and classes: which data a checkpoint was trained on."""
    # Over the N x H x W x C bytes as stored, so checkpoints of earlier versions still resume.
    digest = hashlib.sha256(np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()).data)
    digest.update(np.asarray(label_ids, np.int64).tobytes())
    digest.update(json.dumps(classes).encode())
    return digest.hexdigest()


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], channels_last for faster convolutions."""
    return batch.float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [-1, 1] N x C x H x W -> uint8 N x H x W x C."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
