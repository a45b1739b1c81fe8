"""What the training loop reads: the train split as tensors on the device, G's label mix, each epoch's data order."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.shared.data import load_split, split_digest
from pipeline.shared.errors import PipelineError
from pipeline.shared.io import read_json
from pipeline.shared.manifest import MANIFEST_NAME


class TrainError(PipelineError):
    """Training cannot start (no data, bad checkpoint for --resume, ...)."""


@dataclass
class TrainingData:
    images: torch.Tensor          # N x C x H x W uint8, on the device
    labels: torch.Tensor          # N int64, on the device (zeros when unlabelled)
    classes: list[str]
    meta: dict[str, Any]
    digest: str = ""              # sha256 of the images, labels and classes: what --resume compares


def load_training_data(folder: Path, device: torch.device) -> TrainingData:
    """The crop output's train split as uint8 tensors on `device`."""
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).exists():
        raise TrainError(f"train.input: {folder} has no {MANIFEST_NAME}; run `augment crop` first")
    meta = read_json(folder / "meta.json")
    images, label_ids, records, classes = load_split(folder, "train")
    if not records:
        raise TrainError(f"train.input: {folder} has no images in the train split")
    labels = torch.from_numpy(label_ids)
    meta = {**meta, "class_counts": torch.bincount(labels, minlength=len(classes)).tolist() if classes else []}
    return TrainingData(images.to(device), labels.to(device), classes, meta, split_digest(images, label_ids, classes))


def label_weights(class_counts: list[int], sampling: str) -> torch.Tensor | None:
    """Probabilities to draw G's training labels with, or None for uniform draws.

    `source` follows the training split's class frequencies, so D sees real and generated images
    with the same label mix (with a uniform mix, a rare class is overrepresented among fakes and
    D can tell fakes by their label alone). Uniform draws (None) are kept when the classes are
    equal anyway, so balanced data gives exactly the numbers it gave before this option.
    """
    if sampling == "balanced" or len(set(class_counts)) <= 1:
        return None
    counts = torch.tensor(class_counts, dtype=torch.float64)
    return counts / counts.sum()


def epoch_order(n: int, seed: int, epoch: int, labels: torch.Tensor | None = None, group: int = 1) -> torch.Tensor:
    """The data order of one epoch depends only on (seed, epoch), so a resumed run sees the same batches.

    With `labels` and `group` > 1 the order is made of runs of `group` images of one class
    (each class shuffled and cut into runs, the runs shuffled; a class's last partial run waits
    for another epoch), so that D's minibatch-std groups compare images of one class.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if labels is None or group <= 1:
        return torch.randperm(n, generator=gen)
    runs = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        runs.append(idx[: len(idx) // group * group].view(-1, group))
    runs_ = torch.cat(runs)
    return runs_[torch.randperm(len(runs_), generator=gen)].flatten()
