"""The fixed measurement of a training set: a classifier trained on it, tested on real images, and FD/P/R.

FD and k-NN precision/recall are measured in the features of the classifier trained on all real images.

Every number `evaluate` reports comes from here, so CAS, the augmentation gain and the rule
comparison measure their sets the same way: the small CNN of `pipeline.shared.classifier`, the same
steps for every set of one kind, and the features of the CNN trained on all real training images.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

import numpy as np
import torch

from pipeline.evaluate.fidelity import frechet_distance, precision_recall
from pipeline.shared import classifier as classifier_module
from pipeline.shared.classifier import SmallCNN, TrainConfig, accuracy, features, fit_and_test, load_judge, predict
from pipeline.shared.config import EvaluateParams
from pipeline.shared.device import resolve_precision
from pipeline.shared.io import atomic_path, read_json, write_json
from pipeline.shared.progress import Progress
from pipeline.shared.workers import process_pool, usable_cores

T = TypeVar("T")


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


def fit_mix_and_test(real: LabelledSet, synthetic: LabelledSet, real_share: float | None, num_classes: int,
                     cfg: TrainConfig, test_images: torch.Tensor, test_labels: np.ndarray, threads: int = 0,
                     device: torch.device = torch.device("cpu")) -> tuple[float, list[float], dict | None]:
    """`fit_and_test` of `augmented_mix(real, synthetic, real_share)`, the mix built here.

    A gain arm's mix is the export plus the real subset repeated: built where the classifier
    trains (a worker process), evaluate holds one export however many arms wait for a worker.
    """
    mixed = augmented_mix(real, synthetic, real_share)
    return fit_and_test(mixed.images, torch.from_numpy(mixed.labels), num_classes, cfg, test_images, test_labels,
                        threads=threads, device=device)


def stratified_subset(labels: np.ndarray, fraction: float, seed: int, num_classes: int) -> np.ndarray:
    """`fraction` of the images, the same share of every class (at least one each), by seed."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            picked.append(rng.permutation(idx)[:max(1, int(round(fraction * len(idx))))])
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


class RealCache:
    """Results of the classifiers trained on real images alone, kept in `folder` between runs.

    They do not depend on the export, so an experiment that changes only generate or export
    re-trains only the classifiers that see synthetic images. The key hashes everything a
    result depends on (the images and labels trained on, the test set, the training settings,
    the feature space, this module's and the classifier's code, torch's version), so a hit is
    the stored result of the same computation. Weights are read back with weights_only=True.
    """

    def __init__(self, folder: Path, test: LabelledSet) -> None:
        self.folder, self.hits, self.misses = Path(folder), 0, 0
        code = inspect.getsource(classifier_module) + inspect.getsource(Judge) + torch.__version__
        self.base = _digest(test.images.numpy().tobytes(), test.labels.tobytes(), code.encode())

    def key(self, kind: str, data: LabelledSet, cfg: TrainConfig, extra: str = "") -> str:
        settings = json.dumps({"kind": kind, **dataclasses.asdict(cfg), "extra": extra}, sort_keys=True)
        return _digest(self.base.encode(), data.images.numpy().tobytes(), data.labels.tobytes(), settings.encode())

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.folder / f"{key}.json"
        if not path.exists():
            self.misses += 1
            return None
        self.hits += 1
        return read_json(path)

    def put(self, key: str, value: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        if state is not None:
            with atomic_path(self.folder / f"{key}.pt") as tmp:
                torch.save(state, tmp)
        write_json(self.folder / f"{key}.json", value)   # last: a .json is only ever beside a complete .pt

    def state(self, key: str) -> dict[str, Any]:
        return torch.load(self.folder / f"{key}.pt", map_location="cpu", weights_only=True)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:32]


class Pending(Generic[T]):
    """A result that may still be computing in a worker process: `get()` waits for it once, then keeps it."""

    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute: Callable[[], T] | None = compute
        self._value: T | None = None

    @classmethod
    def ready(cls, value: T) -> "Pending[T]":
        out: Pending[T] = cls(lambda: value)
        out.get()
        return out

    def get(self) -> T:
        if self._compute is not None:
            self._value, self._compute = self._compute(), None
        return self._value  # type: ignore[return-value]


class Judge:
    """Trains the fixed classifier on a set and measures it against the real test set.

    With `workers` > 1 (a CPU run) each classifier trains in one of that many worker processes
    (cores / workers threads each, one on this 2-core VM): these small CNNs use two cores at ~76% in one process, and two
    one-thread processes side by side nearly fully (bench/RESULTS.md). Every method returns a
    `Pending` at once, so the caller submits all the work first and reads the results after;
    the features (FD, precision/recall) are computed in this process when a result is read.
    """

    def __init__(self, params: EvaluateParams, test: LabelledSet, num_classes: int, device: torch.device,
                 progress: Progress, workers: int = 1) -> None:
        self.params, self.test, self.k, self.device, self.progress = params, test, num_classes, device, progress
        self.cfg = TrainConfig(steps=params.steps, batch_size=params.batch_size, lr=params.lr, seed=params.seed,
                               precision=resolve_precision(params.precision, device, cpu_auto="bf16"))
        self.workers = workers if device.type == "cpu" else 1
        self.pool = process_pool(self.workers) if self.workers > 1 else None
        self.worker_threads = max(1, usable_cores() // self.workers)
        self.feature_model: Any = None
        self.feature_key = ""
        self._features_ready: Pending[float] | None = None
        self.real_features = np.empty(0)
        self.real_feature_labels = np.empty(0, np.int64)
        self.cache = RealCache(params.cache, test) if params.cache else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def __enter__(self) -> "Judge":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def fit(self, data: LabelledSet, steps: int | None = None, seed: int | None = None,
            keep_state: bool = False) -> Pending[tuple[float, list[float], dict | None]]:
        """(accuracy, per-class accuracy, weights if `keep_state`) of the classifier trained on `data`."""
        args = (data.images, torch.from_numpy(data.labels), self.k, self._cfg(steps, seed),
                self.test.images, self.test.labels, keep_state)
        return self._run(fit_and_test, args)

    def fit_mix(self, real: LabelledSet, synthetic: LabelledSet, real_share: float | None, steps: int | None = None,
                seed: int | None = None) -> Pending[tuple[float, list[float], dict | None]]:
        """`fit` of `augmented_mix(real, synthetic, real_share)`, the mix built by the process that trains on it."""
        args = (real, synthetic, real_share, self.k, self._cfg(steps, seed), self.test.images, self.test.labels)
        return self._run(fit_mix_and_test, args)

    def _run(self, fn: Callable[..., tuple[float, list[float], dict | None]],
             args: tuple) -> Pending[tuple[float, list[float], dict | None]]:
        """`fn(*args)` here (one worker) or in the worker pool; counted on the progress bar when done."""
        if self.pool is None:
            out = fn(*args, device=self.device)
            self.progress.advance("classifiers")
            return Pending.ready(out)
        future = self.pool.submit(fn, *args, threads=self.worker_threads)

        def wait() -> tuple[float, list[float], dict | None]:
            out = future.result()
            self.progress.advance("classifiers")
            return out
        return Pending(wait)

    def _cfg(self, steps: int | None, seed: int | None) -> TrainConfig:
        return TrainConfig(**{**self.cfg.__dict__, **({"steps": steps} if steps else {}),
                              **({"seed": seed} if seed is not None else {})})

    def _lookup(self, kind: str, data: LabelledSet, cfg: TrainConfig,
                extra: str = "") -> tuple[str, dict[str, Any] | None]:
        """(cache key, stored result or None); a hit counts as a classifier done for the progress bar."""
        if not self.cache:
            return "", None
        # The thread count changes a classifier's float sums, so results differ in the last digits.
        threads = self.worker_threads if self.pool is not None else torch.get_num_threads()
        key = self.cache.key(kind, data, cfg, f"{extra}:threads={threads}")
        hit = self.cache.get(key)
        if hit is not None:
            self.progress.advance("classifiers")
        return key, hit

    def fit_real_features(self, real: LabelledSet, steps: int, seed: int) -> Pending[float]:
        """Train (or read back) the all-real classifier, make its features the feature space; its accuracy."""
        cfg = self._cfg(steps, seed)
        key, hit = self._lookup("features", real, cfg)
        self.feature_key = key
        if hit is not None:
            self._set_state(self.cache.state(key), real.images.shape[1], cfg.width)
            self._features_ready = Pending.ready(float(hit["accuracy"]))
            return self._features_ready
        fitted = self.fit(real, steps, seed, keep_state=True)

        def finish() -> float:
            acc, _, state = fitted.get()
            if self.cache:
                self.cache.put(key, {"accuracy": acc}, state)
            self._set_state(state, real.images.shape[1], cfg.width)
            return acc
        self._features_ready = Pending(finish)
        return self._features_ready

    def use_saved_features(self, saved: dict[str, Any]) -> Pending[float]:
        """Make a saved classifier of all real training images (the checkpoint's label judge) the feature space; its accuracy."""
        model = load_judge(saved, self.device)
        self.feature_key = _digest(*(t.cpu().numpy().tobytes() for t in saved["state"].values()))
        self.set_feature_model(model)
        acc, _ = accuracy(predict(model, self.test.images, device=self.device), self.test.labels, self.k)
        self._features_ready = Pending.ready(acc)
        self.progress.advance("classifiers")
        return self._features_ready

    def _set_state(self, state: dict[str, Any], channels: int, width: int) -> None:
        model = SmallCNN(channels, self.k, width)
        model.load_state_dict(state)
        self.set_feature_model(model.to(self.device, memory_format=torch.channels_last).eval())

    def fit_real_accuracy(self, data: LabelledSet, steps: int, seed: int) -> Pending[float]:
        """Accuracy of a classifier of real images alone (a gain's baseline arm), from the cache when there."""
        key, hit = self._lookup("accuracy", data, self._cfg(steps, seed))
        if hit is not None:
            return Pending.ready(float(hit["accuracy"]))
        fitted = self.fit(data, steps, seed=seed)

        def finish() -> float:
            acc = fitted.get()[0]
            if self.cache:
                self.cache.put(key, {"accuracy": acc})
            return acc
        return Pending(finish)

    def judge_real(self, data: LabelledSet, seed: int) -> Pending[Judged]:
        """`judge` of a set of real images (the real reference), from the cache when there."""
        extra = f"{self.feature_key}:{self.params.feature_samples}:{self.params.k}:{self.params.seed}"
        key, hit = self._lookup("judged", data, self._cfg(None, seed), extra)
        if hit is not None:
            return Pending.ready(Judged(**hit))
        judged = self.judge(data, seed)

        def finish() -> Judged:
            out = judged.get()
            if self.cache:
                self.cache.put(key, dataclasses.asdict(out))
            return out
        return Pending(finish)

    def set_feature_model(self, model: Any) -> None:
        self.feature_model = model
        idx = random_subset(len(self.test), self.params.feature_samples, self.params.seed + 11)
        self.real_features = features(model, self.test.images[torch.from_numpy(idx)], device=self.device)
        self.real_feature_labels = self.test.labels[idx]

    def judge(self, data: LabelledSet, seed: int | None = None) -> Pending[Judged]:
        """Accuracy of the classifier trained on `data`, and `data`'s FD and precision/recall in the feature space."""
        fitted = self.fit(data, seed=seed)
        return Pending(lambda: self._measure(data, *fitted.get()[:2]))

    def _measure(self, data: LabelledSet, acc: float, per_class: list[float]) -> Judged:
        if self._features_ready is not None:
            self._features_ready.get()
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
