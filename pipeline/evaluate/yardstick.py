"""The fixed measurement of a training set: a classifier trained on it, tested on real images, and FD/P/R.

FD and k-NN precision/recall are measured in the features of the classifier trained on all real images.

Every number `evaluate` reports comes from here, so CAS, the augmentation gain and the rule
comparison measure their sets the same way: the small CNN of `pipeline.shared.classifier`, the same
steps for every set of one kind, and the features of the CNN trained on all real training images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.evaluate.fidelity import frechet_distance, precision_recall
from pipeline.shared.classifier import TrainConfig, accuracy, features, predict, train_classifier
from pipeline.shared.config import EvaluateParams
from pipeline.shared.progress import Progress


@dataclass
class LabelledSet:
    images: torch.Tensor   # N x C x H x W uint8
    labels: np.ndarray     # N int64

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "LabelledSet":
        return LabelledSet(self.images[torch.from_numpy(np.asarray(idx, np.int64))], self.labels[idx])

    def __add__(self, other: "LabelledSet") -> "LabelledSet":
        return LabelledSet(torch.cat([self.images, other.images]), np.concatenate([self.labels, other.labels]))


@dataclass
class Judged:
    """What one training set scores."""

    accuracy: float
    per_class_accuracy: list[float]
    fd: float | None = None
    precision: float | None = None
    recall: float | None = None
    per_class_precision: list[float] = field(default_factory=list)
    per_class_recall: list[float] = field(default_factory=list)

    def headline(self) -> dict[str, float]:
        out = {"accuracy": round(self.accuracy, 4)}
        for name in ("fd", "precision", "recall"):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(value, 4)
        return out


def mean_std(name: str, values: list[float]) -> dict[str, float]:
    """`name`: the mean over seeds, `name_std`: their sample standard deviation (0 for one seed)."""
    a = np.asarray(values, np.float64)
    std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {name: round(float(a.mean()), 4), f"{name}_std": round(std, 4)}


def random_subset(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def augmented_mix(real: LabelledSet, synthetic: LabelledSet, real_share: float | None) -> LabelledSet:
    """real + synthetic, the real images repeated so that they make up about `real_share` of the set."""
    if real_share is None:
        return real + synthetic
    reps = max(1, round(real_share / (1 - real_share) * len(synthetic) / len(real)))
    return real.take(np.tile(np.arange(len(real)), reps)) + synthetic


def stratified_subset(labels: np.ndarray, fraction: float, seed: int, num_classes: int) -> np.ndarray:
    """`fraction` of the images, the same share of every class (at least one each), by seed."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            picked.append(rng.permutation(idx)[:max(1, int(round(fraction * len(idx))))])
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


class Judge:
    """Trains the fixed classifier on a set and measures it against the real test set."""

    def __init__(self, params: EvaluateParams, test: LabelledSet, num_classes: int, device: torch.device,
                 progress: Progress) -> None:
        self.params, self.test, self.k, self.device, self.progress = params, test, num_classes, device, progress
        self.cfg = TrainConfig(steps=params.steps, batch_size=params.batch_size, lr=params.lr, seed=params.seed)
        self.feature_model: Any = None
        self.real_features = np.empty(0)
        self.real_feature_labels = np.empty(0, np.int64)

    def fit(self, data: LabelledSet, steps: int | None = None, seed: int | None = None) -> tuple[Any, float, list[float]]:
        cfg = TrainConfig(**{**self.cfg.__dict__, **({"steps": steps} if steps else {}),
                             **({"seed": seed} if seed is not None else {})})
        model = train_classifier(data.images, torch.from_numpy(data.labels), self.k, cfg, self.device)
        acc, per_class = accuracy(predict(model, self.test.images, device=self.device), self.test.labels, self.k)
        self.progress.advance("classifiers")
        return model, acc, per_class

    def set_feature_model(self, model: Any) -> None:
        self.feature_model = model
        idx = random_subset(len(self.test), self.params.feature_samples, self.params.seed + 11)
        self.real_features = features(model, self.test.images[torch.from_numpy(idx)], device=self.device)
        self.real_feature_labels = self.test.labels[idx]

    def judge(self, data: LabelledSet, seed: int | None = None) -> Judged:
        _, acc, per_class = self.fit(data, seed=seed)
        out = Judged(acc, per_class)
        idx = random_subset(len(data), self.params.feature_samples, self.params.seed + 13)
        feats = features(self.feature_model, data.images[torch.from_numpy(idx)], device=self.device)
        labels = data.labels[idx]
        kk = self.params.k
        if len(feats) > kk and len(self.real_features) > kk:
            out.fd = frechet_distance(self.real_features, feats) if len(feats) > 1 else None
            out.precision, out.recall = precision_recall(self.real_features, feats, kk)
        for c in range(self.k):
            r, f = self.real_features[self.real_feature_labels == c], feats[labels == c]
            if len(r) > kk and len(f) > kk:
                p, rc = precision_recall(r, f, kk)
            else:
                p = rc = float("nan")
            out.per_class_precision.append(p)
            out.per_class_recall.append(rc)
        return out
