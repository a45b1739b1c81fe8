"""The evaluate stage: does the synthetic data help a classifier on real data, and does ranking help?

Every number comes from the fixed small CNN of `pipeline.classifier`, trained for the same
number of steps on each set and tested on the real test split of the crop output (less
the images `generate` may use to calibrate D, so they never judge what they helped pick):

- CAS (Classification Accuracy Score, Ravuri & Vinyals 2019): trained on the export's
  synthetic images only. `real_accuracy`: trained on as many real training images.
- Augmentation gain: trained on a real subset (each of `fractions`) vs that subset plus the
  export, the subset repeated to make up `real_share` of the mix (so 600 real images are not
  drowned by 10,000 synthetic ones); both arms train `gain_steps` steps, as the mix is
  larger than the sets judged at `steps`.
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
COLUMNS = ("real_reference", "export", "unranked", "filter", "topk", "drs", "mh")
RULES = ("unranked", "filter", "topk", "drs", "mh")
CALIBRATED_RULES = ("drs", "mh")  # the rules that calibrate D on held-out real test images


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
        n = len(m.get("seeds", [])) or 1
        rows: dict[str, Any] = {
            "output": str(self.out),
            "test images": m.get("test_images"),
            "seeds (mean ± std)": n,
            f"CAS (synthetic only, {m.get('train_images')} images)": _pm(m, "cas"),
            "real accuracy (as many real images)": _pm(m, "real_accuracy"),
            f"real accuracy (all {m.get('real_train_images')} real)": m.get("real_accuracy_all"),
            "export FD / precision / recall": _triple(m.get("fidelity", {})),
            "real subset FD / precision / recall": _triple(m.get("fidelity", {}), "_real_reference"),
        }
        for name, g in m.get("gain", {}).items():
            rows[f"gain at {name} real ({g['real_images']} imgs)"] = (
                f"{g['real']:.4f} -> {g['augmented']:.4f} ({_pm(g, 'gain', signed=True)})")
        for rule, r in m.get("ranking", {}).items():
            rows[f"{rule}: CAS / FD / P / R"] = " / ".join(
                _pm(r, key) if key in r else "-" for key in ("cas", "fd", "precision", "recall"))
        vs = m.get("ranked_vs_unranked")
        if vs:
            rows[f"{vs['rule']} - unranked"] = ", ".join(
                f"{k} {v['diff']:+.4f} ± {v['std']:.4f}{' (beyond 2 std)' if v['beyond_2_std'] else ''}"
                for k, v in vs.items() if isinstance(v, dict))
        if m.get("winner"):
            rows["best rule"] = m["winner"]
        if m.get("inception"):
            rows["Inception FID / KID"] = m["inception"]
        for i, note in enumerate(m.get("notes", []), 1):
            rows[f"note {i}"] = note
        rows["seconds"] = round(self.seconds, 1)
        return rows


def _pm(m: dict[str, Any], key: str, signed: bool = False) -> str:
    value, std = m.get(key), m.get(f"{key}_std")
    if value is None:
        return "-"
    text = f"{value:+.4f}" if signed else f"{value:.4f}"
    return f"{text} ± {std:.4f}" if std else text


def _triple(f: dict[str, Any], suffix: str = "") -> str:
    if f"fd{suffix}" not in f:
        return "-"
    return f"{f['fd' + suffix]:.2f} / {f['precision' + suffix]:.3f} / {f['recall' + suffix]:.3f}"


# --- inputs -------------------------------------------------------------------------------


def load_export_set(folder: Path) -> tuple[LabelledSet, list[str], dict[str, Any]]:
    """The export's synthetic images (uint8) and label ids, its classes and its dataset card."""
    from PIL import Image

    from pipeline.manifest import path_inside

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
        with Image.open(path_inside(folder, r["file"])) as img:
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

    def fit(self, data: LabelledSet, steps: int | None = None, seed: int | None = None) -> tuple[Any, float, list[float]]:
        cfg = TrainConfig(**{**self.cfg.__dict__, **({"steps": steps} if steps else {}),
                             **({"seed": seed} if seed is not None else {})})
        model = train_classifier(data.images, torch.from_numpy(data.labels), self.k, cfg, self.device)
        acc, per_class = accuracy(predict(model, self.test.images, device=self.device), self.test.labels, self.k)
        self.progress.advance("classifiers")
        return model, acc, per_class

    def set_feature_model(self, model: Any) -> None:
        self.feature_model = model
        idx = _subset(len(self.test), self.params.feature_samples, self.params.seed + 11)
        self.real_features = features(model, self.test.images[torch.from_numpy(idx)], device=self.device)
        self.real_feature_labels = self.test.labels[idx]

    def judge(self, data: LabelledSet, seed: int | None = None) -> Judged:
        _, acc, per_class = self.fit(data, seed=seed)
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
    rules = [r for r in params.rules if params.compare_rankings]
    # Only drs and mh calibrate D on real test images; those are never judged on. Holding them
    # back for filter/topk/unranked would shrink small test splits (anime crops) for nothing.
    calibrated = gen.rank in CALIBRATED_RULES or any(r in CALIBRATED_RULES for r in rules)
    calib = held_out_positions(len(test_labels), gen.calibration_samples, gen.seed) if calibrated else np.empty(0, np.int64)
    keep = np.setdiff1d(np.arange(len(test_labels)), calib)
    test = LabelledSet(test_images, test_labels).take(keep)
    real = LabelledSet(train_images, train_labels)
    num_classes = len(classes)
    if rules and not Path(params.checkpoint).exists():
        raise EvaluateError(f"evaluate.checkpoint: {params.checkpoint} does not exist (needed for the ranking comparison)")

    seeds = [params.seed + i for i in range(params.seeds)]
    judge = _Judge(params, test, num_classes, device, progress)
    progress.start("classifiers", total=1 + len(seeds) * (2 + 2 * len(params.fractions) + len(rules)),
                   description="train classifiers")
    metrics: dict[str, Any] = {"test_images": len(test), "held_out_for_calibration": len(calib),
                               "real_train_images": len(real), "train_images": len(export), "seeds": seeds}

    # One feature space for every seed: the fixed CNN trained on all real training images.
    feature_model, acc_all, _ = judge.fit(real, params.feature_steps, seed=params.seed)
    judge.set_feature_model(feature_model)
    metrics["real_accuracy_all"] = round(acc_all, 4)

    results: dict[str, list[Judged]] = {name: [] for name in ("export", "real_reference")}
    gains: dict[str, dict[str, list[float]]] = {}
    n_ref = min(len(export), len(real))
    sampler = _sampler(params, gen, num_classes, device) if rules else None
    rule_runs: list[dict[str, Any]] = []
    for seed in seeds:
        results["export"].append(judge.judge(export, seed))
        results["real_reference"].append(judge.judge(real.take(_subset(len(real), n_ref, seed + 17)), seed))
        for fraction in params.fractions:
            subset = real.take(_stratified(real.labels, fraction, seed + 19, num_classes))
            _, acc_small, _ = judge.fit(subset, params.gain_steps, seed=seed)
            _, acc_aug, _ = judge.fit(_augmented(subset, export, params.real_share), params.gain_steps, seed=seed)
            g = gains.setdefault(f"{fraction * 100:g}pct", {"real_images": [], "real": [], "augmented": [], "gain": []})
            for key, value in (("real_images", len(subset)), ("real", acc_small), ("augmented", acc_aug),
                               ("gain", acc_aug - acc_small)):
                g[key].append(value)
        if sampler is not None:
            rule_runs.append(_compare_rules(params, gen, rules, judge, sampler, len(export), seed, progress))
    progress.finish("classifiers")

    metrics.update(_mean_std("cas", [j.accuracy for j in results["export"]]))
    metrics.update(_mean_std("real_accuracy", [j.accuracy for j in results["real_reference"]]))
    metrics["cas_gap"] = round(metrics["real_accuracy"] - metrics["cas"], 4)
    metrics["cas_ratio"] = round(metrics["cas"] / metrics["real_accuracy"], 4) if metrics["real_accuracy"] else None
    metrics.update(reliability_report(test.labels, classes, metrics["cas"], _average(results["export"]).per_class_accuracy))
    metrics["fidelity"] = _fidelity(results["export"], results["real_reference"])
    metrics["gain"] = {name: {"real_images": int(g["real_images"][0]),
                              **{k: v for key in ("real", "augmented", "gain") for k, v in _mean_std(key, g[key]).items()}}
                       for name, g in gains.items()}
    pool: dict[str, Any] = {}
    if rule_runs:
        for rule in rules:
            results[rule] = [run_[rule]["judged"] for run_ in rule_runs]
        metrics.update(_ranking_metrics(rules, rule_runs, gen))
        pool = rule_runs[0]["pool"]

    if params.inception_weights is not None:
        metrics["inception"] = _inception(params, test, export, device)

    out = Path(params.out)
    averaged = {name: _average(js) for name, js in results.items()}
    _write_csvs(out, classes, averaged)
    _plot_accuracy(out / "per_class_accuracy.png", classes, averaged)
    if pool:
        _plot_scores(out / "scores.png", pool)
        _grids(out, pool, num_classes, params.grid_per_class)
    summary = EvaluateSummary(out=out, metrics=metrics)
    summary.seconds = time.perf_counter() - started
    metrics["seconds"] = round(summary.seconds, 1)
    write_json(out / "params.json", {"evaluate": to_jsonable(params), "generate": to_jsonable(gen)})
    write_json(params.metrics, metrics)
    return summary


def _mean_std(name: str, values: list[float]) -> dict[str, float]:
    """`name`: the mean over seeds, `name_std`: their sample standard deviation (0 for one seed)."""
    a = np.asarray(values, np.float64)
    std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {name: round(float(a.mean()), 4), f"{name}_std": round(std, 4)}


def _average(judged: list[Judged]) -> Judged:
    """Per-class numbers averaged over seeds (for the CSVs and bar charts)."""
    def mean(attr: str) -> list[float]:
        rows = [getattr(j, attr) for j in judged if getattr(j, attr)]
        return np.nanmean(np.array(rows, np.float64), axis=0).tolist() if rows else []

    return Judged(float(np.mean([j.accuracy for j in judged])), mean("per_class_accuracy"),
                  per_class_precision=mean("per_class_precision"), per_class_recall=mean("per_class_recall"))


def _fidelity(export: list[Judged], ref: list[Judged]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("fd", "precision", "recall"):
        for suffix, js in (("", export), ("_real_reference", ref)):
            values = [getattr(j, name) for j in js if getattr(j, name) is not None]
            if values:
                stats = _mean_std(name + suffix, values)
                out[name + suffix] = stats[name + suffix]
                if len({round(v, 6) for v in values}) > 1:
                    out[f"{name}{suffix}_std"] = stats[f"{name}{suffix}_std"]
    return out


def _sampler(params: EvaluateParams, gen: GenerateParams, num_classes: int, device: torch.device) -> Any:
    from pipeline.device import resolve_precision
    from pipeline.generate import Sampler

    sampler = Sampler.from_params(gen, device, resolve_precision(gen.precision, device))
    if sampler.num_labels != num_classes:
        raise EvaluateError(f"evaluate.checkpoint: the model has {sampler.num_labels} classes, the data {num_classes}")
    return sampler


def _compare_rules(params: EvaluateParams, gen: GenerateParams, rules: list[str], judge: _Judge, sampler: Any,
                   export_size: int, seed: int, progress: Progress) -> dict[str, Any]:
    """One candidate pool per evaluation seed; each rule selects from it, each kept set is rendered and judged.

    Seed i's pool is candidates `generate.seed + i * pool .. + pool - 1`, so the seeds differ in
    the candidates drawn as well as in the classifier's weights and data order.
    """
    from pipeline.generate import candidate_batches
    from pipeline.ranking import prepare_rule, selector_stats
    from pipeline.train import to_uint8

    n = params.compare_count or export_size
    total = n * gen.oversample
    gen = gen.model_copy(update={"seed": gen.seed + (seed - params.seed) * total})
    need_conf = "filter" in rules
    seeds_all, labels_all, scores_all, conf_all = [], [], [], []
    progress.start("pool", total=total, description=f"score candidate pool (seed {seed})")
    for seeds, labels in candidate_batches(gen.seed, total, sampler.num_labels, gen.batch_size):
        images, scores = sampler.images_and_scores(seeds, labels)
        seeds_all.append(seeds), labels_all.append(labels), scores_all.append(scores)
        conf_all.append(sampler.confidence(images, labels) if need_conf else np.zeros(len(seeds)))
        progress.advance("pool", len(seeds))
    progress.finish("pool")
    seeds, labels, scores, conf = (np.concatenate(x) for x in (seeds_all, labels_all, scores_all, conf_all))

    out: dict[str, Any] = {}
    kept_masks: dict[str, np.ndarray] = {}
    cal_data = None
    for rule in rules:
        if rule == "unranked":
            entries = [(int(labels[i]), int(seeds[i]), float(scores[i]), 0) for i in range(n)]
            stats: dict[str, Any] = {}
        else:
            if rule in ("drs", "mh") and cal_data is None:
                from pipeline.ranking import calibration_data

                cal_data = calibration_data(sampler, gen)
            selector, _, stats = prepare_rule(sampler, gen, rule, count=n, data=cal_data)
            for start in range(0, total, gen.batch_size):
                sl = slice(start, start + gen.batch_size)
                selector.add(scores[sl], seeds[sl], labels[sl], conf[sl] if selector.needs_confidence else None)
                if selector.done:
                    break
            entries = selector.entries()
            stats.update(selector_stats(selector))
        kept_seeds = np.array([e[1] for e in entries], np.int64)
        kept = LabelledSet(_render(sampler, entries, gen.batch_size, to_uint8), np.array([e[0] for e in entries], np.int64))
        mask = np.isin(seeds, kept_seeds)
        kept_masks[rule] = mask
        out[rule] = {"judged": judge.judge(kept, seed), "stats": stats,
                     "kept_score_mean": float(scores[mask].mean()),
                     "discarded_score_mean": float(scores[~mask].mean()) if (~mask).any() else None}
    out["pool"] = {"seeds": seeds, "labels": labels, "scores": scores, "kept": kept_masks, "sampler": sampler,
                   "to_uint8": to_uint8, "batch": gen.batch_size, "total": total, "count": n}
    return out


def _ranking_metrics(rules: list[str], runs: list[dict[str, Any]], gen: GenerateParams) -> dict[str, Any]:
    """ranking.<rule>.{cas, fd, precision, recall}(_std) over seeds, the winners, and ranked vs unranked."""
    ranking: dict[str, Any] = {}
    for rule in rules:
        js = [r[rule]["judged"] for r in runs]
        row: dict[str, Any] = {}
        row.update(_mean_std("cas", [j.accuracy for j in js]))
        for name in ("fd", "precision", "recall"):
            values = [getattr(j, name) for j in js]
            if all(v is not None for v in values):   # a metric that could not be measured stays absent, never 0
                row.update(_mean_std(name, values))
        row["kept_score_mean"] = round(float(np.mean([r[rule]["kept_score_mean"] for r in runs])), 4)
        discarded = [r[rule]["discarded_score_mean"] for r in runs if r[rule]["discarded_score_mean"] is not None]
        row["discarded_score_mean"] = round(float(np.mean(discarded)), 4) if discarded else None
        for key, value in runs[0][rule]["stats"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = value
        ranking[rule] = row
    out: dict[str, Any] = {"ranking": ranking, "compare_count": runs[0]["pool"]["count"], "pool": runs[0]["pool"]["total"]}
    if len(rules) > 1:
        def best(metric: str, sign: int) -> str | None:
            have = [r for r in rules if metric in ranking[r]]
            return max(have, key=lambda r: sign * ranking[r][metric]) if have else None

        out["winner"] = {"cas": best("cas", 1), "precision": best("precision", 1), "recall": best("recall", 1),
                         "fd": best("fd", -1)}
    if "unranked" in rules and gen.rank in rules and gen.rank != "unranked":
        a, b = ranking[gen.rank], ranking["unranked"]
        vs: dict[str, Any] = {"rule": gen.rank}
        for metric in ("cas", "precision", "recall"):
            if metric in a and metric in b:
                diff = a[metric] - b[metric]
                spread = float(np.hypot(a[f"{metric}_std"], b[f"{metric}_std"]))
                vs[metric] = {"diff": round(diff, 4), "std": round(spread, 4),
                              "beyond_2_std": bool(len(runs) > 1 and diff > 2 * spread)}
        if "recall" in a and b.get("recall"):
            vs["recall_ratio"] = round(a["recall"] / b["recall"], 4)
        out["ranked_vs_unranked"] = vs
    return out


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
