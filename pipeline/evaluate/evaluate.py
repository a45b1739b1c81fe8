"""The evaluate stage: an export's CAS, augmentation gains and fidelity, and the rule comparison, as metrics and plots.

Does the synthetic data help a classifier on real data, and does ranking help?

Every number comes from the fixed small CNN of `pipeline.shared.classifier`, trained for the same
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
- Variety: per class, the export's within-class pixel spread and MS-SSIM diversity against
  the real training images of that class (`pipeline.shared.variety`), with a note for a class below
  0.3x: CAS cannot see a class drawn as one image repeated.
- Ranking: unranked, topk, drs and mh sets of `compare_count` images, all drawn from the
  same candidate pool of the same checkpoint (candidate i: seed `generate.seed + i`), with
  the export's generate settings; their kept vs discarded D scores.

Outputs: `metrics` (JSON, DVC metrics), and in `out`: per_class_{accuracy,precision,recall}.csv
(DVC plots), scores.png (kept vs discarded histograms), per_class_accuracy.png, and
top.png / bottom.png (the highest and lowest D-scored candidates of each class, one row each).
"""
from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.evaluate.comparison import CandidatePool, compare_rules, make_sampler, ranking_metrics, render
from pipeline.evaluate.reliability import reliability_report
from pipeline.evaluate.yardstick import Judge, Judged, LabelledSet, Pending, mean_std, random_subset, stratified_subset
from pipeline.generate.calibration import held_out_positions
from pipeline.shared.checkpoint import load_checkpoint
from pipeline.shared.config import EvaluateParams, GenerateParams, to_jsonable
from pipeline.shared.data import load_split, split_digest
from pipeline.shared.device import resolve_device, set_threads
from pipeline.shared.errors import PipelineError
from pipeline.shared.io import atomic_path, image_grid, read_image, read_json, save_png, write_json
from pipeline.shared.manifest import path_inside
from pipeline.shared.ownership import claim_out, drop_unrewritten
from pipeline.shared.progress import SILENT, Progress
from pipeline.shared.variety import class_variety, variety_report
from pipeline.shared.workers import usable_cores

log = logging.getLogger(__name__)
COLUMNS = ("real_reference", "export", "unranked", "filter", "topk", "drs", "mh")
RULES = ("unranked", "filter", "topk", "drs", "mh")
CALIBRATED_RULES = ("drs", "mh")  # the rules that calibrate D on held-out real test images


class EvaluateError(PipelineError):
    """Evaluation cannot run (no test split, unlabelled data, classes that differ, ...)."""


@dataclass
class EvaluateSummary:
    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    cached: str = ""   # "hits of real-only classifiers / their number", when the cache is on

    def rows(self) -> dict[str, Any]:
        m = self.metrics
        n = len(m.get("seeds", [])) or 1
        rows: dict[str, Any] = {
            "output": str(self.out),
            "test images": m.get("test_images"),
            "seeds (mean ± std)": n,
            f"CAS (synthetic only, {m.get('train_images')} images)": _pm(m, "cas"),
            "real accuracy (as many real images)": _pm(m, "real_accuracy"),
            f"real accuracy (all {m.get('real_train_images')} real{', the label judge' if m.get('feature_model') == 'judge' else ''})":
                m.get("real_accuracy_all"),
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
        if m.get("variety"):
            rows["variety vs real (min of pixel std, MS-SSIM)"] = ", ".join(
                f"{name} {v['ratio']:.2f}" for name, v in m["variety"].items())
        if m.get("winner"):
            rows["best rule"] = m["winner"]
        if m.get("inception"):
            rows["Inception FID / KID"] = m["inception"]
        for i, note in enumerate(m.get("notes", []), 1):
            rows[f"note {i}"] = note
        if self.cached:
            rows["real-only classifiers read from the cache"] = self.cached
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
    folder = Path(folder)
    card_path = folder / "dataset.json"
    if not card_path.exists():
        raise EvaluateError(f"evaluate.export: {folder} is not an augment export (no dataset.json); run `augment export` first")
    card = read_json(card_path)
    if card.get("format", "imagefolder") != "imagefolder":
        raise EvaluateError(f"evaluate.export: {folder} is a {card['format']} export; evaluate reads export.format imagefolder")
    if not (folder / "manifest.csv").exists():
        raise EvaluateError(f"evaluate.export: {folder} has no manifest.csv; run `augment export` again")
    rows = _synthetic_rows(folder / "manifest.csv")
    if not rows:
        raise EvaluateError(f"evaluate.export: {folder} holds no synthetic images")
    if any(r["label_id"] == "" for r in rows):
        raise EvaluateError("evaluate needs labelled data: the export has unlabelled images")
    arrays = [read_image(path_inside(folder, r["file"])) for r in rows]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return LabelledSet(images, np.array([int(r["label_id"]) for r in rows], np.int64)), list(card["classes"]), card


def _synthetic_rows(path: Path) -> list[dict[str, str]]:
    """manifest.csv's synthetic rows; a row that is not an export row is an error naming its line."""
    rows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        for r in reader:
            if not r.get("file") or r.get("source") not in ("real", "synthetic"):
                raise EvaluateError(f"{path}:{reader.line_num}: not an export row (needs file, and source real or synthetic)")
            if r.get("label_id") and not r["label_id"].isdigit():
                raise EvaluateError(f"{path}:{reader.line_num}: label_id {r['label_id']!r} is not a whole number")
            if r["source"] == "synthetic":
                rows.append(r)
    return rows


def generate_settings(card: dict[str, Any], params: EvaluateParams) -> GenerateParams:
    """The export's generate params, pointed at this evaluation's checkpoint and real data."""
    known = set(GenerateParams.model_fields)
    raw = {k: v for k, v in (card.get("generate_params") or {}).items() if k in known}
    raw.update(checkpoint=params.checkpoint, real=params.real, device=params.device, threads=params.threads,
               writers=0, scores_only=False)
    return GenerateParams.model_validate(raw)


# --- the stage ------------------------------------------------------------------------------


def run(params: EvaluateParams, progress: Progress = SILENT) -> EvaluateSummary:
    """Measure the export (CAS, gains, fidelity) and compare the selection rules; write metrics, CSVs and plots."""
    started = time.perf_counter()
    earlier = claim_out(params.out, "evaluate")  # refuses a folder holding anything evaluate did not write, before any work
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
    # Read once, now: a torn checkpoint fails before the classifiers have trained.
    wanted = bool(rules) or params.feature_model == "judge"
    state = load_checkpoint(params.checkpoint) if wanted and Path(params.checkpoint).exists() else None
    saved_judge, feature_note = feature_judge(params, state, real, real_classes)
    if feature_note:
        log.warning("%s", feature_note)

    seeds = [params.seed + i for i in range(params.seeds)]
    classifiers = 1 + len(seeds) * (2 + 2 * len(params.fractions) + len(rules))
    workers = classifier_workers(params.workers, device, classifiers)
    metrics: dict[str, Any] = {"test_images": len(test), "held_out_for_calibration": len(calib),
                               "real_train_images": len(real), "train_images": len(export), "seeds": seeds,
                               "classifier_workers": workers, "feature_model": "judge" if saved_judge else "train"}
    progress.start("classifiers", total=classifiers, description="train classifiers")
    with Judge(params, test, num_classes, device, progress, workers) as judge:
        # Every classifier is submitted first (to the worker processes, when there are several),
        # every result read after. One feature space for every seed: the fixed CNN trained on
        # all real training images (the label judge train fitted, or one trained here).
        acc_all = (judge.use_saved_features(saved_judge) if saved_judge else
                   judge.fit_real_features(real, params.feature_steps, params.seed))
        pending: dict[str, list[Pending[Judged]]] = {name: [] for name in ("export", "real_reference")}
        pending_gains: dict[str, list[tuple[int, Pending[float], Pending[Any]]]] = {}
        n_ref = min(len(export), len(real))
        sampler = make_sampler(gen, num_classes, device) if rules else None
        rule_runs = []
        for seed in seeds:
            pending["export"].append(judge.judge(export, seed))
            pending["real_reference"].append(judge.judge_real(real.take(random_subset(len(real), n_ref, seed + 17)), seed))
            for fraction in params.fractions:
                subset = real.take(stratified_subset(real.labels, fraction, seed + 19, num_classes))
                pending_gains.setdefault(f"{fraction * 100:g}pct", []).append((
                    len(subset), judge.fit_real_accuracy(subset, gain_real_steps(params, len(subset)), seed),
                    judge.fit_mix(subset, export, params.real_share, gain_mixed_steps(params, len(subset), len(export)),
                                  seed=seed)))
            if sampler is not None:
                rule_runs.append(compare_rules(params, gen, rules, judge, sampler, len(export), seed, progress))
        metrics["real_accuracy_all"] = round(acc_all.get(), 4)
        metrics["classifier_precision"] = judge.cfg.precision
        results: dict[str, list[Judged]] = {name: [p.get() for p in ps] for name, ps in pending.items()}
        gains: dict[str, dict[str, list[float]]] = {}
        for name, arms in pending_gains.items():
            g = gains[name] = {"real_images": [], "real": [], "augmented": [], "gain": []}
            for n_real, real_arm, mixed_arm in arms:
                acc_small, acc_aug = real_arm.get(), mixed_arm.get()[0]
                for key, value in (("real_images", n_real), ("real", acc_small), ("augmented", acc_aug),
                                   ("gain", acc_aug - acc_small)):
                    g[key].append(value)
        for rule in rules:
            results[rule] = [run_.judged(rule) for run_ in rule_runs]
    progress.finish("classifiers")

    metrics.update(mean_std("cas", [j.accuracy for j in results["export"]]))
    metrics.update(mean_std("real_accuracy", [j.accuracy for j in results["real_reference"]]))
    metrics["cas_gap"] = round(metrics["real_accuracy"] - metrics["cas"], 4)
    metrics["cas_ratio"] = round(metrics["cas"] / metrics["real_accuracy"], 4) if metrics["real_accuracy"] else None
    metrics.update(reliability_report(test.labels, classes, metrics["cas"], _average(results["export"]).per_class_accuracy))
    metrics["fidelity"] = _fidelity(results["export"], results["real_reference"])
    # Within-class variety against the real training crops: CAS cannot see one image per class.
    metrics.update(variety_report(class_variety(export.images, export.labels, real.images, real.labels, classes,
                                                seed=params.seed)))
    metrics["notes"] = metrics["notes"] + metrics.pop("variety_notes") + ([feature_note] if feature_note else [])
    metrics["gain"] = {name: {"real_images": int(g["real_images"][0]),
                              "real_steps": gain_real_steps(params, int(g["real_images"][0])),
                              "mixed_steps": gain_mixed_steps(params, int(g["real_images"][0]), len(export)),
                              **{k: v for key in ("real", "augmented", "gain") for k, v in mean_std(key, g[key]).items()}}
                       for name, g in gains.items()}
    pool: CandidatePool | None = None
    if rule_runs:
        metrics.update(ranking_metrics(rules, rule_runs, gen))
        pool = rule_runs[0].pool

    if params.inception_weights is not None:
        metrics["inception"] = _inception(params, test, export, device)

    out = Path(params.out)
    averaged = {name: _average(js) for name, js in results.items()}
    _write_csvs(out, classes, averaged)
    _plot_accuracy(out / "per_class_accuracy.png", classes, averaged)
    if pool is not None:
        _plot_scores(out / "scores.png", pool)
        _grids(out, pool, num_classes, params.grid_per_class)
    summary = EvaluateSummary(out=out, metrics=metrics)
    if judge.cache:
        summary.cached = f"{judge.cache.hits} of {judge.cache.hits + judge.cache.misses}"
    summary.seconds = time.perf_counter() - started
    metrics["seconds"] = round(summary.seconds, 1)
    write_json(out / "params.json", {"evaluate": to_jsonable(params), "generate": to_jsonable(gen)})
    write_json(params.metrics, metrics)
    drop_unrewritten(out, earlier)  # no plot of an earlier run's rules stays behind
    return summary


def feature_judge(params: EvaluateParams, state: dict[str, Any] | None, real: LabelledSet,
                  classes: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint's (`state`) label judge as the feature space, when feature_model is judge, it learnt evaluate's
    real training split and saw at least the feature model's images (feature_steps x batch_size); else None
    and why not (empty when feature_model is train)."""
    if params.feature_model != "judge":
        return None, ""
    fallback = f"so the feature space was trained here ({params.feature_steps} steps)"
    if state is None:
        return None, f"evaluate.feature_model judge: {params.checkpoint} does not exist, {fallback}"
    saved = state.get("judge")
    if saved is None:
        return None, f"evaluate.feature_model judge: {params.checkpoint} holds no label judge (train.judge_steps 0), {fallback}"
    if state.get("data_sha256") != split_digest(real.images, real.labels, classes):
        return None, (f"evaluate.feature_model judge: the checkpoint's label judge was trained on other images than "
                      f"the train split of {params.real}, {fallback}")
    seen, budget = int(saved["steps"]) * int(saved.get("batch_size", 0)), params.feature_steps * params.batch_size
    if seen < budget:   # e.g. the anime recipe's 400-step judge: a shorter training than the feature model's
        return None, (f"evaluate.feature_model judge: the label judge saw {seen:,} images in training, fewer than "
                      f"feature_steps x batch_size = {budget:,}, {fallback}")
    return saved, ""


def gain_real_steps(params: EvaluateParams, n_real: int) -> int:
    """Steps of a gain's real-only arm: gain_steps, or fewer where gain_real_epochs passes over its
    n_real images come first, but never fewer than `steps`."""
    return _arm_steps(params, params.gain_real_epochs, n_real, min(params.batch_size, max(1, n_real)))


def gain_mixed_steps(params: EvaluateParams, n_real: int, n_synthetic: int) -> int:
    """Steps of a gain's mixed arm: gain_steps, or fewer where gain_mixed_epochs passes over its distinct
    images (the n_real subset, however often it is repeated, and the n_synthetic export) come first, but
    never fewer than `steps`."""
    return _arm_steps(params, params.gain_mixed_epochs, n_real + n_synthetic, params.batch_size)


def _arm_steps(params: EvaluateParams, epochs: float | None, images: int, batch: int) -> int:
    """gain_steps, or the steps of `epochs` passes over `images` at `batch` a step if fewer, never fewer than `steps`."""
    if epochs is None:
        return params.gain_steps
    return min(params.gain_steps, max(params.steps, math.ceil(epochs * images / batch)))


MAX_AUTO_WORKERS = 8   # each worker holds its own torch and copies of the data: a 64-core box must not start 64


def classifier_workers(workers: int, device: torch.device, jobs: int) -> int:
    """evaluate.workers resolved: 0 is one process per usable core on a CPU (at most 8, and no more than
    there are classifiers to train); always 1 on CUDA."""
    if device.type != "cpu":
        return 1
    return workers or max(1, min(usable_cores(), jobs, MAX_AUTO_WORKERS))


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
                stats = mean_std(name + suffix, values)
                out[name + suffix] = stats[name + suffix]
                if len({round(v, 6) for v in values}) > 1:
                    out[f"{name}{suffix}_std"] = stats[f"{name}{suffix}_std"]
    return out


def _inception(params: EvaluateParams, test: LabelledSet, export: LabelledSet, device: torch.device) -> dict[str, float]:
    """FID and KID of the export against the real test images in Inception features (local weights)."""
    from pipeline.evaluate.fidelity import frechet_distance, inception_features, kernel_inception_distance, load_inception

    model = load_inception(params.inception_weights, device)  # type: ignore[arg-type]
    n = params.feature_samples
    real = inception_features(model, test.images[torch.from_numpy(random_subset(len(test), n, params.seed + 23))], device=device)
    fake = inception_features(model, export.images[torch.from_numpy(random_subset(len(export), n, params.seed + 29))], device=device)
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


def _plot_scores(path: Path, pool: CandidatePool) -> None:
    plt = _pyplot()
    scores, kept = pool.scores, pool.kept
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


def _grids(out: Path, pool: CandidatePool, num_classes: int, per_class: int) -> None:
    """top.png / bottom.png: the best / worst D-scored candidates of each class, one row per class."""
    seeds, labels, scores = pool.seeds, pool.labels, pool.scores
    for name, sign in (("top", -1), ("bottom", 1)):
        entries = []
        for c in range(num_classes):
            idx = np.flatnonzero(labels == c)
            idx = idx[np.argsort(sign * scores[idx], kind="stable")][:per_class]
            entries += [(c, int(seeds[i]), float(scores[i]), 0) for i in idx]
            entries += [None] * (per_class - len(idx))  # type: ignore[list-item]
        real = [e for e in entries if e is not None]
        images = render(pool.sampler, real, pool.batch_size).permute(0, 2, 3, 1).numpy()
        tiles = np.full((len(entries), *images.shape[1:]), 255, np.uint8)
        tiles[[i for i, e in enumerate(entries) if e is not None]] = images
        save_png(out / f"{name}.png", image_grid(tiles, rows=num_classes, cols=per_class))
