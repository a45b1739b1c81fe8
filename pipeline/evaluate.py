"""The evaluate stage: does the synthetic data help a classifier on real data, and does ranking help?

Every number comes from the fixed small CNN of `pipeline.classifier`, trained for the same
number of steps on each set and tested on the real test split of the crop output (less
the images `generate` may use to calibrate D, so they never judge what they helped pick):

- CAS (Classification Accuracy Score, Ravuri & Vinyals 2019): trained on the export's
  synthetic images only. `real_accuracy`: trained on as many real training images.
- Augmentation gain: trained on a real subset (each of `fractions`) vs that subset plus the
  export, the subset repeated to make up `real_share` of the mix (so 600 real images are not
  drowned by 10,000 synthetic ones).
- Fidelity/diversity: Fréchet distance and k-NN precision/recall of each set against the
  real test images, in the 128-d penultimate features of the CNN trained on all real
  training images. The real subset of the same size gives the floor these numbers reach
  when the "generated" set is real.
- Ranking: unranked, topk, drs and mh sets of `compare_count` images, all drawn from the
  same candidate pool of the same checkpoint (candidate i: seed `generate.seed + i`), with
  the export's generate settings; their kept vs discarded D scores.

Outputs: `metrics` (JSON, DVC metrics), and in `out`: per_class_{accuracy,precision,recall}.csv
(DVC plots), scores.png (kept vs discarded histograms), per_class_accuracy.png, and
top.png / bottom.png (the highest and lowest D-scored candidates of each class, one row each).
"""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.classifier import TrainConfig, accuracy, features, predict, train_classifier
from pipeline.config import EvaluateParams, GenerateParams, to_jsonable
from pipeline.errors import PipelineError
from pipeline.fidelity import frechet_distance, precision_recall
from pipeline.io import atomic_path, image_grid, save_png, write_json
from pipeline.progress import SILENT, Progress
from pipeline.reliability import reliability_report

log = logging.getLogger(__name__)
COLUMNS = ("real_reference", "export", "unranked", "topk", "drs", "mh")
RULES = ("unranked", "topk", "drs", "mh")


class EvaluateError(PipelineError):
    """Evaluation cannot run (no test split, unlabelled data, classes that differ, ...)."""


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


@dataclass
class EvaluateSummary:
    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def rows(self) -> dict[str, Any]:
        m = self.metrics
        rows: dict[str, Any] = {
            "output": str(self.out),
            "test images": m.get("test_images"),
            f"CAS (synthetic only, {m.get('train_images')} images)": m.get("cas"),
            "real accuracy (as many real images)": m.get("real_accuracy"),
            f"real accuracy (all {m.get('real_train_images')} real)": m.get("real_accuracy_all"),
            "export FD / precision / recall": _triple(m.get("fidelity", {})),
            "real subset FD / precision / recall": _triple(m.get("fidelity", {}), "_real_reference"),
        }
        for name, g in m.get("gain", {}).items():
            rows[f"gain at {name} real ({g['real_images']} imgs)"] = (
                f"{g['real']:.4f} -> {g['augmented']:.4f} ({g['gain']:+.4f})")
        for rule, r in m.get("ranking", {}).items():
            rows[f"{rule}: CAS / FD / P / R"] = (
                f"{r['cas']:.4f} / {r['fd']:.2f} / {r['precision']:.3f} / {r['recall']:.3f}")
        if m.get("winner"):
            rows["best rule"] = m["winner"]
        if m.get("inception"):
            rows["Inception FID / KID"] = m["inception"]
        for i, note in enumerate(m.get("notes", []), 1):
            rows[f"note {i}"] = note
        rows["seconds"] = round(self.seconds, 1)
        return rows


def _triple(f: dict[str, Any], suffix: str = "") -> str:
    if f"fd{suffix}" not in f:
        return "-"
    return f"{f['fd' + suffix]:.2f} / {f['precision' + suffix]:.3f} / {f['recall' + suffix]:.3f}"


# --- inputs -------------------------------------------------------------------------------


def load_export_set(folder: Path) -> tuple[LabelledSet, list[str], dict[str, Any]]:
    """The export's synthetic images (uint8) and label ids, its classes and its dataset card."""
    from PIL import Image

    folder = Path(folder)
    card_path = folder / "dataset.json"
    if not card_path.exists():
        raise EvaluateError(f"evaluate.export: {folder} is not an augment export (no dataset.json); run `augment export` first")
    card = json.loads(card_path.read_text())
    with open(folder / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == "synthetic"]
    if not rows:
        raise EvaluateError(f"evaluate.export: {folder} holds no synthetic images")
    if any(r["label_id"] == "" for r in rows):
        raise EvaluateError("evaluate needs labelled data: the export has unlabelled images")
    arrays = []
    for r in rows:
        with Image.open(folder / r["file"]) as img:
            a = np.asarray(img, dtype=np.uint8)
        arrays.append(a[..., None] if a.ndim == 2 else a)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return LabelledSet(images, np.array([int(r["label_id"]) for r in rows], np.int64)), list(card["classes"]), card


def generate_settings(card: dict[str, Any], params: EvaluateParams) -> GenerateParams:
    """The export's generate params, pointed at this evaluation's checkpoint and real data."""
    known = set(GenerateParams.model_fields)
    raw = {k: v for k, v in (card.get("generate_params") or {}).items() if k in known}
    raw.update(checkpoint=params.checkpoint, real=params.real, device=params.device, threads=params.threads,
               writers=0, scores_only=False)
    return GenerateParams.model_validate(raw)


def _subset(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def _augmented(real: LabelledSet, synthetic: LabelledSet, real_share: float | None) -> LabelledSet:
    """real + synthetic, the real images repeated so that they make up about `real_share` of the set."""
    if real_share is None:
        return real + synthetic
    reps = max(1, round(real_share / (1 - real_share) * len(synthetic) / len(real)))
    return real.take(np.tile(np.arange(len(real)), reps)) + synthetic


def _stratified(labels: np.ndarray, fraction: float, seed: int, num_classes: int) -> np.ndarray:
    """`fraction` of the images, the same share of every class (at least one each), by seed."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            picked.append(rng.permutation(idx)[:max(1, int(round(fraction * len(idx))))])
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


# --- the stage ------------------------------------------------------------------------------


class _Judge:
    """Trains the fixed classifier on a set and measures it against the real test set."""

    def __init__(self, params: EvaluateParams, test: LabelledSet, num_classes: int, device: torch.device,
                 progress: Progress) -> None:
        self.params, self.test, self.k, self.device, self.progress = params, test, num_classes, device, progress
        self.cfg = TrainConfig(steps=params.steps, batch_size=params.batch_size, lr=params.lr, seed=params.seed)
        self.feature_model: Any = None
        self.real_features = np.empty(0)
        self.real_feature_labels = np.empty(0, np.int64)

    def fit(self, data: LabelledSet, steps: int | None = None) -> tuple[Any, float, list[float]]:
        cfg = self.cfg if steps is None else TrainConfig(**{**self.cfg.__dict__, "steps": steps})
        model = train_classifier(data.images, torch.from_numpy(data.labels), self.k, cfg, self.device)
        acc, per_class = accuracy(predict(model, self.test.images, device=self.device), self.test.labels, self.k)
        self.progress.advance("classifiers")
        return model, acc, per_class

    def set_feature_model(self, model: Any) -> None:
        self.feature_model = model
        idx = _subset(len(self.test), self.params.feature_samples, self.params.seed + 11)
        self.real_features = features(model, self.test.images[torch.from_numpy(idx)], device=self.device)
        self.real_feature_labels = self.test.labels[idx]

    def judge(self, data: LabelledSet) -> Judged:
        _, acc, per_class = self.fit(data)
        out = Judged(acc, per_class)
        idx = _subset(len(data), self.params.feature_samples, self.params.seed + 13)
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


def run(params: EvaluateParams, progress: Progress = SILENT) -> EvaluateSummary:
    from pipeline.device import resolve_device, set_threads
    from pipeline.ranking import held_out_positions, load_split

    started = time.perf_counter()
    device = resolve_device(params.device)
    set_threads(params.threads)
    export, classes, card = load_export_set(params.export)
    train_images, train_labels, _, real_classes = load_split(params.real, "train")
    test_images, test_labels, _, _ = load_split(params.real, "test")
    if len(classes) < 2 or classes == ["unlabelled"]:
        raise EvaluateError("evaluate needs labelled data with 2+ classes (classification accuracy is its yardstick)")
    if len(test_labels) < 4:
        raise EvaluateError(f"evaluate.real: {params.real} has no test split to evaluate on "
                            "(a folder source needs <root>/train and <root>/test)")
    if real_classes != classes:
        raise EvaluateError(f"evaluate.real: classes of {params.real} {real_classes} differ from the export's {classes}")
    gen = generate_settings(card, params)
    calib = held_out_positions(len(test_labels), gen.calibration_samples, gen.seed)
    keep = np.setdiff1d(np.arange(len(test_labels)), calib)
    test = LabelledSet(test_images, test_labels).take(keep)
    real = LabelledSet(train_images, train_labels)
    num_classes = len(classes)
    rules = [r for r in params.rules if params.compare_rankings]
    if rules and not Path(params.checkpoint).exists():
        raise EvaluateError(f"evaluate.checkpoint: {params.checkpoint} does not exist (needed for the ranking comparison)")

    judge = _Judge(params, test, num_classes, device, progress)
    progress.start("classifiers", total=3 + 2 * len(params.fractions) + len(rules), description="train classifiers")
    metrics: dict[str, Any] = {"test_images": len(test), "held_out_for_calibration": len(calib),
                               "real_train_images": len(real), "train_images": len(export)}

    feature_model, acc_all, _ = judge.fit(real, params.feature_steps or 2 * params.steps)
    judge.set_feature_model(feature_model)
    metrics["real_accuracy_all"] = round(acc_all, 4)

    results: dict[str, Judged] = {}
    results["export"] = judge.judge(export)
    n_ref = min(len(export), len(real))
    results["real_reference"] = judge.judge(real.take(_subset(len(real), n_ref, params.seed + 17)))
    metrics["cas"] = round(results["export"].accuracy, 4)
    metrics["real_accuracy"] = round(results["real_reference"].accuracy, 4)
    metrics["cas_gap"] = round(metrics["real_accuracy"] - metrics["cas"], 4)
    metrics.update(reliability_report(test.labels, classes, results["export"].accuracy,
                                   results["export"].per_class_accuracy))
    metrics["fidelity"] = _fidelity(results["export"], results["real_reference"])

    metrics["gain"] = {}
    for fraction in params.fractions:
        subset = real.take(_stratified(real.labels, fraction, params.seed + 19, num_classes))
        _, acc_small, _ = judge.fit(subset)
        _, acc_aug, _ = judge.fit(_augmented(subset, export, params.real_share))
        metrics["gain"][f"{fraction * 100:g}pct"] = {"real_images": len(subset), "real": round(acc_small, 4),
                                                    "augmented": round(acc_aug, 4), "gain": round(acc_aug - acc_small, 4)}

    pool: dict[str, Any] = {}
    if rules:
        pool = _compare_rules(params, gen, rules, judge, results, len(export), device, progress, metrics)
    progress.finish("classifiers")

    if params.inception_weights is not None:
        metrics["inception"] = _inception(params, test, export, device)

    out = Path(params.out)
    _write_csvs(out, classes, results)
    _plot_accuracy(out / "per_class_accuracy.png", classes, results)
    if pool:
        _plot_scores(out / "scores.png", pool)
        _grids(out, pool, num_classes, params.grid_per_class)
    summary = EvaluateSummary(out=out, metrics=metrics)
    summary.seconds = time.perf_counter() - started
    metrics["seconds"] = round(summary.seconds, 1)
    write_json(out / "params.json", {"evaluate": to_jsonable(params), "generate": to_jsonable(gen)})
    write_json(params.metrics, metrics)
    return summary


def _fidelity(export: Judged, ref: Judged) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("fd", "precision", "recall"):
        for suffix, j in (("", export), ("_real_reference", ref)):
            value = getattr(j, name)
            if value is not None:
                out[name + suffix] = round(value, 4)
    return out


def _compare_rules(params: EvaluateParams, gen: GenerateParams, rules: list[str], judge: _Judge,
                   results: dict[str, Judged], export_size: int, device: torch.device, progress: Progress,
                   metrics: dict[str, Any]) -> dict[str, Any]:
    """Score one candidate pool, select with each rule, render and judge each kept set."""
    from pipeline.device import resolve_precision
    from pipeline.generate import Sampler, candidate_batches
    from pipeline.ranking import calibrate, calibration_data, make_selector, selector_stats
    from pipeline.train import to_uint8

    sampler = Sampler.from_checkpoint(gen.checkpoint, device, resolve_precision(gen.precision, device))
    if sampler.num_labels != judge.k:
        raise EvaluateError(f"evaluate.checkpoint: the model has {sampler.num_labels} classes, the data {judge.k}")
    n = params.compare_count or export_size
    total = n * gen.oversample
    seeds_all, labels_all, scores_all = [], [], []
    progress.start("pool", total=total, description="score candidate pool")
    for seeds, labels in candidate_batches(gen.seed, total, sampler.num_labels, gen.batch_size):
        seeds_all.append(seeds), labels_all.append(labels)
        scores_all.append(sampler.images_and_scores(seeds, labels)[1])
        progress.advance("pool", len(seeds))
    progress.finish("pool")
    seeds, labels, scores = (np.concatenate(x) for x in (seeds_all, labels_all, scores_all))

    cal_data = cal = None
    if "drs" in rules or "mh" in rules:
        cal_data = calibration_data(sampler, gen)
        cal = calibrate(cal_data, gen)
    metrics["ranking"] = {}
    kept_masks: dict[str, np.ndarray] = {}
    for rule in rules:
        if rule == "unranked":
            entries = [(int(labels[i]), int(seeds[i]), float(scores[i]), 0) for i in range(n)]
            stats: dict[str, Any] = {}
        else:
            selector = make_selector(rule, gen, sampler.num_labels, cal, cal_data, count=n)
            for start in range(0, total, gen.batch_size):
                sl = slice(start, start + gen.batch_size)
                selector.add(scores[sl], seeds[sl], labels[sl])
                if selector.done:
                    break
            entries = selector.entries()
            stats = selector_stats(selector)
        kept_seeds = np.array([e[1] for e in entries], np.int64)
        kept = LabelledSet(_render(sampler, entries, gen.batch_size, to_uint8), np.array([e[0] for e in entries], np.int64))
        results[rule] = judge.judge(kept)
        mask = np.isin(seeds, kept_seeds)
        kept_masks[rule] = mask
        metrics["ranking"][rule] = {
            "cas": round(results[rule].accuracy, 4), "fd": round(results[rule].fd or 0.0, 4),
            "precision": round(results[rule].precision or 0.0, 4), "recall": round(results[rule].recall or 0.0, 4),
            "kept_score_mean": round(float(scores[mask].mean()), 4),
            "discarded_score_mean": round(float(scores[~mask].mean()), 4) if (~mask).any() else None,
            **{k: v for k, v in stats.items() if not isinstance(v, dict)},
        }
    if cal is not None:
        metrics["calibration"] = cal.to_dict()
    metrics["compare_count"] = n
    metrics["pool"] = total
    ranked = [r for r in rules if r != "unranked"]
    if ranked:
        r = metrics["ranking"]
        metrics["winner"] = {"cas": max(rules, key=lambda x: r[x]["cas"]),
                             "precision": max(rules, key=lambda x: r[x]["precision"]),
                             "recall": max(rules, key=lambda x: r[x]["recall"]),
                             "fd": min(rules, key=lambda x: r[x]["fd"])}
    return {"seeds": seeds, "labels": labels, "scores": scores, "kept": kept_masks, "sampler": sampler,
            "to_uint8": to_uint8, "batch": gen.batch_size}


def _render(sampler: Any, entries: list[tuple[int, int, float, int]], batch_size: int, to_uint8: Any) -> torch.Tensor:
    out = []
    for start in range(0, len(entries), batch_size):
        chunk = entries[start:start + batch_size]
        images, _ = sampler.images_and_scores(np.array([e[1] for e in chunk], np.int64),
                                              np.array([e[0] for e in chunk], np.int64))
        out.append(torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2))
    return torch.cat(out).contiguous()


def _inception(params: EvaluateParams, test: LabelledSet, export: LabelledSet, device: torch.device) -> dict[str, float]:
    from pipeline.fidelity import frechet_distance, inception_features, kernel_inception_distance, load_inception

    model = load_inception(params.inception_weights, device)  # type: ignore[arg-type]
    n = params.feature_samples
    real = inception_features(model, test.images[torch.from_numpy(_subset(len(test), n, params.seed + 23))], device=device)
    fake = inception_features(model, export.images[torch.from_numpy(_subset(len(export), n, params.seed + 29))], device=device)
    return {"fid": round(frechet_distance(real, fake), 4), "kid": round(kernel_inception_distance(real, fake, seed=params.seed), 6)}


# --- outputs ---------------------------------------------------------------------------------


def _write_csvs(out: Path, classes: list[str], results: dict[str, Judged]) -> None:
    for name, attr in (("accuracy", "per_class_accuracy"), ("precision", "per_class_precision"),
                       ("recall", "per_class_recall")):
        with atomic_path(out / f"per_class_{name}.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(("class", *COLUMNS))
            for c, label in enumerate(classes):
                row = [label]
                for col in COLUMNS:
                    values = getattr(results[col], attr) if col in results else []
                    row.append("" if c >= len(values) or np.isnan(values[c]) else f"{values[c]:.4f}")
                writer.writerow(row)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    _pyplot().close(fig)


def _plot_accuracy(path: Path, classes: list[str], results: dict[str, Judged]) -> None:
    plt = _pyplot()
    cols = [c for c in COLUMNS if c in results]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(classes) + 2), 4), dpi=100)
    width = 0.8 / len(cols)
    x = np.arange(len(classes))
    for i, col in enumerate(cols):
        ax.bar(x + i * width - 0.4 + width / 2, results[col].per_class_accuracy, width,
               label=f"{col} ({results[col].accuracy:.3f})")
    ax.set_xticks(x, classes, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy on real test images")
    ax.set_title("per-class accuracy of the classifier trained on each set")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    _save(fig, path)


def _plot_scores(path: Path, pool: dict[str, Any]) -> None:
    plt = _pyplot()
    scores, kept = pool["scores"], pool["kept"]
    fig, axes = plt.subplots(1, len(kept), figsize=(3.5 * len(kept), 3.2), dpi=100, squeeze=False)
    bins = np.histogram_bin_edges(scores, bins=50)
    for ax, (rule, mask) in zip(axes[0], kept.items()):
        ax.hist(scores[~mask], bins=bins, alpha=0.5, density=True, label=f"discarded ({int((~mask).sum())})")
        ax.hist(scores[mask], bins=bins, alpha=0.6, density=True, label=f"kept ({int(mask.sum())})")
        ax.set_title(rule)
        ax.set_xlabel("D logit")
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _grids(out: Path, pool: dict[str, Any], num_classes: int, per_class: int) -> None:
    """top.png / bottom.png: the best / worst D-scored candidates of each class, one row per class."""
    seeds, labels, scores = pool["seeds"], pool["labels"], pool["scores"]
    for name, sign in (("top", -1), ("bottom", 1)):
        entries = []
        for c in range(num_classes):
            idx = np.flatnonzero(labels == c)
            idx = idx[np.argsort(sign * scores[idx], kind="stable")][:per_class]
            entries += [(c, int(seeds[i]), float(scores[i]), 0) for i in idx]
            entries += [None] * (per_class - len(idx))  # type: ignore[list-item]
        real = [e for e in entries if e is not None]
        images = _render(pool["sampler"], real, pool["batch"], pool["to_uint8"]).permute(0, 2, 3, 1).numpy()
        tiles = np.full((len(entries), *images.shape[1:]), 255, np.uint8)
        tiles[[i for i, e in enumerate(entries) if e is not None]] = images
        save_png(out / f"{name}.png", image_grid(tiles, rows=num_classes, cols=per_class))
