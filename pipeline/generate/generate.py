"""The generate stage: stream candidates, keep the rule's survivors, write their images, manifest and plots.

Candidates come from `pipeline.generate.sampling` (seed `generate.seed + i`, label `i mod K`, so any
kept sample is regenerated exactly from its manifest line) and `pipeline.generate.ranking` decides which
to keep, holding only a bounded set of (score, seed, label) while candidates stream past; the
survivors are rendered at the end, so memory does not grow with the oversampling factor.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from pipeline.generate.ranking import TopKSelector, select_with_rule
from pipeline.generate.sampling import Entry, Sampler, TopK, candidate_batches, class_shares
from pipeline.shared.checkpoint import file_sha256
from pipeline.shared.config import GenerateParams, to_jsonable
from pipeline.shared.data import to_uint8
from pipeline.shared.device import HeapTrimmer, resolve_device, resolve_precision, set_threads
from pipeline.shared.distributed import Dist, from_env, shutdown
from pipeline.shared.errors import PipelineError
from pipeline.shared.io import atomic_path, image_grid, save_npy, save_png, save_pngs, write_json
from pipeline.shared.labels import class_dirs
from pipeline.shared.manifest import MANIFEST_NAME, Record, write_manifest
from pipeline.shared.ownership import claim_out
from pipeline.shared.progress import SILENT, Progress
from pipeline.shared.workers import process_pool

log = logging.getLogger(__name__)
HISTOGRAM_SAMPLE = 200_000  # candidate scores kept for the histogram, whatever the count
SCORES_NAME = "scores.jsonl"  # what --scores-only writes instead of a manifest


class GenerateError(PipelineError):
    """Generation cannot run with these settings."""


@dataclass
class GenerateSummary:
    out: Path
    candidates: int = 0
    kept: int = 0
    written: int = 0
    seconds_scoring: float = 0.0
    seconds_total: float = 0.0
    score_stats: dict[str, float] = field(default_factory=dict)

    def rows(self) -> dict[str, Any]:
        rate = self.candidates / self.seconds_scoring if self.seconds_scoring else 0.0
        return {"output": str(self.out), "candidates scored": self.candidates, "kept": self.kept,
                "images written": self.written, "candidates/s": round(rate, 1),
                "total seconds": round(self.seconds_total, 1), "kept scores": self.score_stats}


def select(sampler: Sampler, params: GenerateParams, progress: Progress = SILENT,
           ctx: Dist = Dist()) -> tuple[Any, np.ndarray, int]:
    """Score all candidates; return the selection (its `entries()` are the survivors), a bounded
    sample of all scores, and the number of candidates scored.

    rank topk and unranked sets keep a `ranking.TopKSelector`; filter, drs and mh a
    `ranking.RuleSelection` (whose count is the candidates scored, which they can stop short of).
    """
    if params.ranked and params.rank != "topk":
        return select_with_rule(sampler, params, progress, HISTOGRAM_SAMPLE, ctx)
    k = sampler.num_labels
    per_class = params.per_class and k > 1
    shares = class_shares(sampler, params) if per_class else None
    oversample = params.oversample if params.ranked else 1
    top = TopKSelector(params.count, k, params.per_class, params.seed, shares)
    caps = np.asarray(top.quota)
    # Candidates' labels cycle through the classes (label i mod K), so every class sees
    # oversample x the largest quota. Balanced and unranked: exactly count candidates, all kept.
    total = params.count * oversample if shares is None else k * int(caps.max()) * oversample
    sample: list[np.ndarray] = []
    sampled = 0
    progress.start("score", total=total, description="generate + score" if params.ranked else "generate")
    trim = HeapTrimmer()
    for batch_no, (seeds, labels) in enumerate(candidate_batches(params.seed, total, k, params.batch_size)):
        if batch_no % ctx.world != ctx.rank:  # under torchrun each rank scores every world-th batch
            continue
        _, scores = sampler.images_and_scores(seeds, labels)
        trim()
        if per_class and not params.ranked:  # the first caps[c] candidates of each class, not the best-scored
            first = (seeds - params.seed) // k < caps[labels]
            top.add(scores[first], seeds[first], labels[first])
        else:
            top.add(scores, seeds, labels)
        if sampled < HISTOGRAM_SAMPLE:
            sample.append(scores[: HISTOGRAM_SAMPLE - sampled])
            sampled += len(sample[-1])
        progress.advance("score", len(seeds))
    progress.finish("score")
    return top, np.concatenate(sample) if sample else np.empty(0), total


class PngWriter:
    """Encodes PNGs in worker processes while the main process keeps the model busy."""

    def __init__(self, workers: int) -> None:
        self.pool = process_pool(workers) if workers > 0 else None
        self.pending: list[Future] = []
        self.written = 0
        self.limit = 2 * max(workers, 1)

    def submit(self, paths: list[str], images: np.ndarray) -> None:
        if self.pool is None:
            self.written += save_pngs(paths, images)
            return
        self.pending.append(self.pool.submit(save_pngs, paths, images))
        while len(self.pending) > self.limit:  # bound memory held by queued batches
            self.written += self.pending.pop(0).result()

    def close(self) -> int:
        for fut in self.pending:
            self.written += fut.result()
        self.pending = []
        if self.pool is not None:
            self.pool.shutdown()
        return self.written


def render(sampler: Sampler, entries: list[Entry], out: Path, dirs: list[str],
           params: GenerateParams, progress: Progress = SILENT, ctx: Dist = Dist()) -> tuple[list[Record], np.ndarray, int]:
    """Regenerate survivors from their seeds, write PNGs; return records, a preview grid and the count written."""
    locations = _locations(entries, dirs, params, ctx.world)
    records = [
        Record(file=file, index=index,
               label=sampler.classes[label] if sampler.classes else None,
               label_id=label if sampler.classes else None, split="train", source="synthetic",
               score=round(score, 6), seed=seed, rank=rank if params.ranked else None)
        for (label, seed, score, rank), (file, index) in zip(entries, locations)
    ]
    preview = _preview(sampler, entries) if ctx.is_main else np.zeros((1, 1, 1), np.uint8)
    if params.scores_only:
        return records, preview, 0
    writer: PngWriter | ShardWriter = PngWriter(params.writers) if params.format == "png" else ShardWriter(out)
    progress.start("write", total=len(entries), description=f"write {params.format}")
    for d in set(dirs):
        (out / "images" / d).mkdir(parents=True, exist_ok=True)
    for chunk_no, start in enumerate(range(0, len(entries), params.batch_size)):
        chunk = entries[start:start + params.batch_size]
        if chunk_no % ctx.world != ctx.rank:
            continue
        seeds = np.array([e[1] for e in chunk], np.int64)
        labels = np.array([e[0] for e in chunk], np.int64)
        images, _ = sampler.images_and_scores(seeds, labels)
        writer.submit([r.file if params.format == "npy" else str(out / r.file) for r in records[start:start + len(chunk)]],
                      to_uint8(images))
        progress.advance("write", len(chunk))
    written = writer.close()
    progress.finish("write")
    return records, preview, written


def _locations(entries: list, dirs: list[str], params: GenerateParams, world: int) -> list[tuple[str, int | None]]:
    """Where each survivor is stored: its PNG, or (shard, row) when format is npy.

    Rank r renders chunks r, r + world, ...; its j-th image goes to row j % shard_size of its
    shard j // shard_size, so every rank knows every location without asking the others.
    """
    if params.format == "png":
        return [(f"images/{dirs[e[0]]}/seed{e[1]}.png", None) for e in entries]
    seen = [0] * world
    out: list[tuple[str, int | None]] = []
    for chunk_no, start in enumerate(range(0, len(entries), params.batch_size)):
        owner = chunk_no % world
        for _ in entries[start:start + params.batch_size]:
            j = seen[owner]
            out.append((f"shard-{owner:02d}-{j // params.shard_size:05d}.npy", j % params.shard_size))
            seen[owner] += 1
    return out


class ShardWriter:
    """Collects rendered images per shard file and writes each shard once, atomically."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.buffers: dict[str, list[np.ndarray]] = {}
        self.written = 0

    def submit(self, files: list[str], images: np.ndarray) -> None:
        for file, image in zip(files, images):
            self.buffers.setdefault(file, []).append(image)

    def close(self) -> int:
        for file, rows in self.buffers.items():
            save_npy(self.out / file, np.stack(rows))
            self.written += len(rows)
        self.buffers = {}
        return self.written


def _preview(sampler: Sampler, entries: list[Entry], per_row: int = 10) -> np.ndarray:
    """The best `per_row` kept samples of each class, one row per class."""
    picked = []
    for label in range(sampler.num_labels):
        picked += [e for e in entries if e[0] == label][:per_row]
    picked = picked[: sampler.num_labels * per_row]
    seeds = np.array([e[1] for e in picked], np.int64)
    labels = np.array([e[0] for e in picked], np.int64)
    images = to_uint8(sampler.images_and_scores(seeds, labels)[0]) if len(picked) else np.zeros((0, 1, 1, 1), np.uint8)
    cols = per_row
    return image_grid(images, rows=max(1, (len(images) + cols - 1) // cols), cols=cols)


def plot_scores(all_scores: np.ndarray, kept: np.ndarray, path: Path) -> None:
    """Histogram of candidate scores with the kept ones overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    bins = np.histogram_bin_edges(np.concatenate([all_scores, kept]) if len(all_scores) else kept, bins=60)
    ax.hist(all_scores, bins=bins, alpha=0.5, label=f"all candidates (sample of {len(all_scores)})", density=True)
    ax.hist(kept, bins=bins, alpha=0.6, label=f"kept ({len(kept)})", density=True)
    ax.set_xlabel("discriminator score (logit for its own label)")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def merge_across_ranks(ctx: Dist, selection: Any, sample: np.ndarray) -> tuple[Any, np.ndarray]:
    """Each rank's top-N per group -> the global top-N (the best N of the union), on every rank."""
    if not ctx.enabled or not isinstance(selection, TopKSelector):   # the seed-order rules merged in select_with_rule
        return selection, sample
    gathered = ctx.gather(([h.result() for h in selection.heaps], sample))
    merged = [TopK(h.capacity) for h in selection.heaps]
    for rank_heaps, _ in gathered:
        for top, (scores, seeds) in zip(merged, rank_heaps):
            top.add(scores, seeds)
    selection.heaps = merged
    return selection, np.concatenate([s for _, s in gathered])[:HISTOGRAM_SAMPLE]


def run(params: GenerateParams, progress: Progress = SILENT) -> GenerateSummary:
    """Generate; under torchrun candidates and rendering are split over ranks, rank 0 writes the tables."""
    ctx, device = from_env(resolve_device(params.device))
    try:
        return _run(params, progress if ctx.is_main else SILENT, ctx, device)
    finally:
        shutdown(ctx)


def _run(params: GenerateParams, progress: Progress, ctx: Dist, device: torch.device) -> GenerateSummary:
    started = time.perf_counter()
    if ctx.enabled and params.ranked and params.rank == "mh":
        raise GenerateError("generate.rank: 'mh' runs in one process only (its chains are sequential); "
                            "under torchrun use rank filter, drs or topk")
    out = Path(params.out)
    if ctx.is_main:
        claim_out(out, "generate")  # refuses a folder holding anything generate did not write, before any work
    precision = resolve_precision(params.precision, device)
    set_threads(params.threads)
    sampler = Sampler.from_params(params, device, precision)
    summary = GenerateSummary(out=out)
    t0 = time.perf_counter()
    selection, score_sample, summary.candidates = select(sampler, params, progress, ctx)
    selection, score_sample = merge_across_ranks(ctx, selection, score_sample)
    summary.seconds_scoring = time.perf_counter() - t0
    entries = selection.entries()
    dirs = class_dirs(sampler.classes)
    staging = staging_folder(out)
    if ctx.is_main:
        shutil.rmtree(staging, ignore_errors=True)   # a killed run's
        staging.mkdir(parents=True)
    ctx.barrier()
    try:
        records, preview, written = render(sampler, entries, staging, dirs, params, progress, ctx)
        summary.written = sum(ctx.gather(written))
        ctx.barrier()  # every rank's PNGs are staged before rank 0 swaps them in
    except BaseException:
        if ctx.is_main:   # a full disk or Ctrl-C while rendering: the previous output stays as it was
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if not ctx.is_main:
        return summary
    _swap_in(staging, out)
    kept_scores = np.array([e[2] for e in entries], np.float32)
    summary.kept = len(records)
    summary.score_stats = _stats(kept_scores)
    save_png(out / "grid.png", preview)
    plot_scores(score_sample, kept_scores, out / "scores.png")
    summary.seconds_total = time.perf_counter() - started
    write_json(out / "meta.json", {
        "checkpoint": str(params.checkpoint), "checkpoint_sha256": file_sha256(params.checkpoint),
        "classes": sampler.classes, "class_dirs": dirs if sampler.classes else [], "count": summary.kept,
        "candidates": summary.candidates, "seed": params.seed, "ranked": params.ranked,
        "score_stats": summary.score_stats, "all_score_stats": _stats(score_sample),
        "model_config": sampler.cfg.to_dict(), "params": to_jsonable(params),
        "timing": {"seconds_scoring": round(summary.seconds_scoring, 2), "seconds_total": round(summary.seconds_total, 2)},
    })
    if params.scores_only:
        # No images, so no manifest (whose every line names a file that exists): the kept
        # seeds go to scores.jsonl, from which any of them can be rendered later.
        write_scores(out / SCORES_NAME, records)
    else:
        write_manifest(out / MANIFEST_NAME, records)  # last: its presence means the folder is complete
    return summary


def write_scores(path: Path, records: list[Record]) -> None:
    """The kept seeds of a --scores-only run, one JSON object per line (no files)."""
    import json

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({"seed": r.seed, "label": r.label, "label_id": r.label_id, "score": r.score,
                                 "rank": r.rank}) + "\n")


def staging_folder(out: Path) -> Path:
    """Where a run renders before it replaces the previous output: beside `out`, so a kill or a full
    disk while rendering leaves the previous run's images and manifest as they were.

    The same name on every torchrun rank; `.<out>.XXXXXXXX` (8 characters) is the staging
    pattern `io.sweep_temp` removes after a later successful run.
    """
    return out.parent / f".{out.name}.generate"


def _swap_in(staging: Path, out: Path) -> None:
    """Replace the previous run's images and shards with the staged ones; the manifest is written after.

    The earlier manifest goes first, so between here and the new manifest the folder never looks
    complete. Only ever called on a folder `claim_out` accepted: everything in it was written by generate.
    """
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    (out / SCORES_NAME).unlink(missing_ok=True)
    shutil.rmtree(out / "images", ignore_errors=True)
    for shard in out.glob("shard-*.npy"):  # format npy; a smaller run would leave the old tail behind
        shard.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if (staging / "images").exists():
        os.replace(staging / "images", out / "images")
    for shard in staging.glob("shard-*.npy"):
        os.replace(shard, out / shard.name)
    shutil.rmtree(staging)


def _stats(x: Iterable[float] | np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return {}
    return {"mean": round(float(x.mean()), 4), "std": round(float(x.std()), 4), "min": round(float(x.min()), 4),
            "p50": round(float(np.median(x)), 4), "max": round(float(x.max()), 4)}
