"""The generate stage: draw candidates, score them with D, keep the best, write PNGs.

Every candidate has its own seed (`generate.seed + i`): its latent is drawn from a
generator seeded with it and its label is `i mod K`, so any kept sample is regenerated
exactly from its manifest line. Ranking keeps only a bounded top-N of (score, seed, label)
while candidates stream past; the survivors are rendered at the end, so memory does not
grow with the oversampling factor.
"""
from __future__ import annotations

import logging
import re
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from pipeline.checkpoint import file_sha256, load_checkpoint
from pipeline.config import GenerateParams, to_jsonable
from pipeline.device import autocast, resolve_device, resolve_precision, set_threads, HeapTrimmer
from pipeline.distributed import Dist, from_env, shutdown
from pipeline.errors import PipelineError
from pipeline.io import atomic_path, image_grid, save_png, write_json
from pipeline.manifest import MANIFEST_NAME, Record, write_manifest
from pipeline.models import Discriminator, Generator, ModelConfig
from pipeline.progress import SILENT, Progress
from pipeline.train import standing_stats, to_uint8

log = logging.getLogger(__name__)
HISTOGRAM_SAMPLE = 200_000  # candidate scores kept for the histogram, whatever the count
SCORES_NAME = "scores.jsonl"  # what --scores-only writes instead of a manifest


def safe_name(label: str | None) -> str:
    """A folder name from a label: no separators, no dots at the start, never empty."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", label or "unlabelled").strip("._") or "class"
    return name[:64]


def class_dirs(classes: list[str]) -> list[str]:
    """One folder per class whose sorted order is the label order: `<id>_<safe label>`.

    torchvision's ImageFolder numbers classes by sorted folder name, so `0_T-shirt_top`,
    `1_Trouser`, ... (ids zero-padded to one width when there are 10+ classes) give a job that
    has never heard of this package the same label ids as the manifest and the source data.
    """
    if not classes:
        return [safe_name(None)]
    width = len(str(len(classes) - 1))
    return [f"{i:0{width}d}_{safe_name(label)}" for i, label in enumerate(classes)]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014): a bijective hash of uint64 counters."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def seeded_normal(seeds: np.ndarray, dim: int) -> np.ndarray:
    """Standard-normal float32 vectors, one per seed, from a counter-based hash.

    Row i depends only on seeds[i] (never on the batch it is drawn in), and a whole batch is
    a few vectorised numpy operations instead of one torch.Generator per candidate.
    """
    pairs = (dim + 1) // 2
    keys = _splitmix64(np.asarray(seeds, dtype=np.uint64))[:, None]
    counters = np.arange(2 * pairs, dtype=np.uint64)[None, :] * _GOLDEN
    with np.errstate(over="ignore"):
        bits = _splitmix64(keys ^ counters)
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 2**53)   # in (0, 1)
    u1, u2 = u[:, :pairs], u[:, pairs:]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=1)[:, :dim]
    return z.astype(np.float32)


class GenerateError(PipelineError):
    """Generation cannot run with these settings."""


class TopK:
    """The `capacity` highest scores seen, as parallel arrays; memory stays O(capacity + batch).

    Entries may carry one float of payload each (e.g. the D score of an entry ranked by another
    key); without payload none is stored.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.scores = np.empty(0, np.float32)
        self.seeds = np.empty(0, np.int64)
        self.payload = np.empty(0, np.float32)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._pending_n = 0

    def add(self, scores: np.ndarray, seeds: np.ndarray, payload: np.ndarray | None = None) -> None:
        self._pending.append((scores.astype(np.float32), seeds.astype(np.int64),
                              None if payload is None else payload.astype(np.float32)))
        self._pending_n += len(scores)
        if self._pending_n >= max(self.capacity, 4096):
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        scores = np.concatenate([self.scores, *(p[0] for p in self._pending)])
        seeds = np.concatenate([self.seeds, *(p[1] for p in self._pending)])
        with_payload = any(p[2] is not None for p in self._pending) or len(self.payload)
        if with_payload:
            payload = np.concatenate([self.payload, *(np.zeros(len(p[0]), np.float32) if p[2] is None else p[2]
                                                      for p in self._pending)])
        self._pending, self._pending_n = [], 0
        order = np.lexsort((seeds, -scores))[: self.capacity]  # best first, ties by seed
        self.scores, self.seeds = scores[order], seeds[order]
        if with_payload:
            self.payload = payload[order]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, seeds), best first."""
        self._compact()
        return self.scores, self.seeds


@dataclass
class Sampler:
    """G (EMA) and D rebuilt from a checkpoint alone, ready to draw and score by seed."""

    g: Generator
    d: Discriminator
    cfg: ModelConfig
    classes: list[str]
    device: torch.device
    precision: str
    latent_scale: float = 1.0
    judge: Any = None            # the label judge (pipeline.classifier.SmallCNN) when the checkpoint has one
    class_counts: list[int] = field(default_factory=list)   # the training split's images per class

    @classmethod
    def from_checkpoint(cls, path: Path, device: torch.device, precision: str, latent_scale: float = 1.0,
                        d_stats: str = "running") -> "Sampler":
        """G and D as trained; `from_params` applies the generate params (latent scale, D's scoring statistics)."""
        from pipeline.classifier import load_judge
        from pipeline.models import generated_statistics

        state = load_checkpoint(path, map_location="cpu")
        cfg = ModelConfig(**{"mbstd_group": 0, **state["model_config"]})  # checkpoints before minibatch-std
        g, d = Generator(cfg), Discriminator(cfg)
        g.load_state_dict(state["g_ema"])
        d.load_state_dict(state["d"])
        g.to(device, memory_format=torch.channels_last)
        d.to(device, memory_format=torch.channels_last)
        standing_stats(g, cfg, device)
        g.eval().requires_grad_(False)
        d.eval().requires_grad_(False)
        if d_stats == "generated":
            generated_statistics(d, g, device, latent_scale)
        classes = list(state.get("classes") or []) if cfg.num_classes else []
        judge = load_judge(state["judge"], device) if "judge" in state else None
        counts = list((state.get("data_meta") or {}).get("class_counts") or []) if cfg.num_classes else []
        return cls(g, d, cfg, classes, device, precision, latent_scale=latent_scale, judge=judge, class_counts=counts)

    @classmethod
    def from_params(cls, params: GenerateParams, device: torch.device, precision: str) -> "Sampler":
        return cls.from_checkpoint(params.checkpoint, device, precision, params.latent_scale, params.d_stats)

    @property
    def num_labels(self) -> int:
        return max(self.cfg.num_classes, 1)

    def latents(self, seeds: np.ndarray) -> torch.Tensor:
        """z for each seed, independent of batching: seed s always gives the same z."""
        z = torch.from_numpy(seeded_normal(seeds, self.cfg.z_dim))
        return z if self.latent_scale == 1.0 else z * self.latent_scale

    def confidence(self, images: torch.Tensor, labels: np.ndarray) -> np.ndarray:
        """The label judge's P(label | image) of generated images."""
        from pipeline.classifier import confidence

        if self.judge is None:
            raise GenerateError("generate.rank: 'filter' needs the label judge, and this checkpoint has none "
                                "(it was trained with train.judge_steps: 0 or by an older version); "
                                "re-run `augment train` or choose rank topk, drs or mh")
        return confidence(self.judge, images, torch.from_numpy(labels).to(self.device))

    @torch.no_grad()
    def images_and_scores(self, seeds: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        z = self.latents(seeds).to(self.device)
        y = torch.from_numpy(labels).to(self.device)
        with autocast(self.device, self.precision):
            images = self.g(z, y)
            scores = self.d(images, y)
        return images, scores.float().cpu().numpy()


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


def quotas(count: int, groups: int) -> list[int]:
    """Split `count` as evenly as possible over `groups` (the first groups get the remainder)."""
    base, extra = divmod(count, groups)
    return [base + (1 if i < extra else 0) for i in range(groups)]


def class_quotas(count: int, shares: list[float] | None, groups: int) -> list[int]:
    """Split `count` over `groups` in proportion to `shares` (largest remainders get the rest), or
    evenly as `quotas` does when shares is None. Every class with a share gets at least one."""
    if shares is None:
        return quotas(count, groups)
    total = float(sum(shares))
    exact = [count * s / total for s in shares]
    caps = [int(e) for e in exact]
    for i in sorted(range(groups), key=lambda i: (-(exact[i] - caps[i]), i))[:count - sum(caps)]:
        caps[i] += 1
    for i in range(groups):          # a rare class still gets a sample, taken from the largest
        if caps[i] == 0 and shares[i] > 0 and count >= groups:
            caps[i] += 1
            caps[caps.index(max(caps))] -= 1
    return caps


def class_shares(sampler: "Sampler", params: GenerateParams) -> list[float] | None:
    """The per-class shares of `generate.class_distribution`: None (balanced) or the training frequencies."""
    if params.class_distribution == "balanced" or sampler.num_labels < 2:
        return None
    if len(sampler.class_counts) != sampler.num_labels:
        raise GenerateError("generate.class_distribution: 'source' needs the class counts that train records in "
                            "the checkpoint (this one predates them); retrain, or use 'balanced'")
    return [float(c) for c in sampler.class_counts]


def candidate_batches(first_seed: int, total: int, num_labels: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(seeds, labels) batches; candidate i has seed first_seed + i and label i mod K."""
    for start in range(0, total, batch_size):
        idx = np.arange(start, min(start + batch_size, total), dtype=np.int64)
        yield first_seed + idx, idx % num_labels


def select(sampler: Sampler, params: GenerateParams, progress: Progress = SILENT,
           ctx: Dist = Dist()) -> tuple[Any, np.ndarray, int]:
    """Score all candidates; return per-group top-N, a bounded sample of all scores, and the count.

    With `rank: drs` or `mh` the first item is a `ranking.RuleSelection` instead of the
    top-N heaps (and the count is the candidates scored, which DRS can stop short of).
    """
    k = sampler.num_labels
    per_class = params.per_class and k > 1
    shares = class_shares(sampler, params) if per_class else None
    if params.ranked and params.rank != "topk":
        from pipeline.ranking import select_with_rule

        return select_with_rule(sampler, params, progress, HISTOGRAM_SAMPLE, ctx)
    oversample = params.oversample if params.ranked else 1
    caps = class_quotas(params.count, shares, k) if per_class else [params.count]
    # Candidates' labels cycle through the classes (label i mod K), so every class sees
    # oversample x the largest quota. Balanced and unranked: exactly count candidates, all kept.
    total = params.count * oversample if shares is None else k * max(caps) * oversample
    heaps = [TopK(c) for c in caps]
    sample: list[np.ndarray] = []
    sampled = 0
    progress.start("score", total=total, description="generate + score" if params.ranked else "generate")
    trim = HeapTrimmer()
    for batch_no, (seeds, labels) in enumerate(candidate_batches(params.seed, total, k, params.batch_size)):
        if batch_no % ctx.world != ctx.rank:  # under torchrun each rank scores every world-th batch
            continue
        _, scores = sampler.images_and_scores(seeds, labels)
        trim()
        if per_class:
            for c in np.unique(labels):
                mask = labels == c
                if not params.ranked:  # the first caps[c] candidates of the class, not the best-scored
                    mask &= (seeds - params.seed) // k < caps[c]
                heaps[c].add(scores[mask], seeds[mask])
        else:
            heaps[0].add(scores, seeds)
        if sampled < HISTOGRAM_SAMPLE:
            sample.append(scores[: HISTOGRAM_SAMPLE - sampled])
            sampled += len(sample[-1])
        progress.advance("score", len(seeds))
    progress.finish("score")
    return heaps, np.concatenate(sample) if sample else np.empty(0), total


def kept_entries(heaps: Any, params: GenerateParams, num_labels: int) -> list[tuple[int, int, float, int]]:
    """(label, seed, score, rank) for every survivor, ordered by label then rank."""
    if not isinstance(heaps, list):  # a ranking.RuleSelection (rank drs/mh)
        return heaps.entries()
    entries = []
    for scores, seeds in (h.result() for h in heaps):
        for rank, (score, seed) in enumerate(zip(scores.tolist(), seeds.tolist()), 1):
            label = int((seed - params.seed) % num_labels)
            entries.append((label, int(seed), float(score), rank))
    entries.sort(key=lambda e: (e[0], e[3]) if params.per_class else (e[3], e[0]))
    return entries


def _write_pngs(paths: list[str], images: np.ndarray) -> int:
    for path, img in zip(paths, images):
        save_png(Path(path), img)
    return len(paths)


class PngWriter:
    """Encodes PNGs in worker processes while the main process keeps the model busy."""

    def __init__(self, workers: int) -> None:
        self.pool = ProcessPoolExecutor(workers) if workers > 0 else None
        self.pending: list[Future] = []
        self.written = 0
        self.limit = 2 * max(workers, 1)

    def submit(self, paths: list[str], images: np.ndarray) -> None:
        if self.pool is None:
            self.written += _write_pngs(paths, images)
            return
        self.pending.append(self.pool.submit(_write_pngs, paths, images))
        while len(self.pending) > self.limit:  # bound memory held by queued batches
            self.written += self.pending.pop(0).result()

    def close(self) -> int:
        for fut in self.pending:
            self.written += fut.result()
        self.pending = []
        if self.pool is not None:
            self.pool.shutdown()
        return self.written


def render(sampler: Sampler, entries: list[tuple[int, int, float, int]], out: Path, dirs: list[str],
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
        from pipeline.io import save_npy

        for file, rows in self.buffers.items():
            save_npy(self.out / file, np.stack(rows))
            self.written += len(rows)
        self.buffers = {}
        return self.written


def _preview(sampler: Sampler, entries: list[tuple[int, int, float, int]], per_row: int = 10) -> np.ndarray:
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


def merge_across_ranks(ctx: Dist, heaps: list[TopK], sample: np.ndarray) -> tuple[list[TopK], np.ndarray]:
    """Each rank's top-N per group -> the global top-N (the best N of the union), on every rank."""
    if not ctx.enabled or not isinstance(heaps, list):   # the seed-order rules merged in select_with_rule
        return heaps, sample
    gathered = ctx.gather(([h.result() for h in heaps], sample))
    merged = [TopK(h.capacity) for h in heaps]
    for rank_heaps, _ in gathered:
        for top, (scores, seeds) in zip(merged, rank_heaps):
            top.add(scores, seeds)
    return merged, np.concatenate([s for _, s in gathered])[:HISTOGRAM_SAMPLE]


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
    precision = resolve_precision(params.precision, device)
    set_threads(params.threads)
    sampler = Sampler.from_params(params, device, precision)
    out = Path(params.out)
    summary = GenerateSummary(out=out)
    t0 = time.perf_counter()
    heaps, score_sample, summary.candidates = select(sampler, params, progress, ctx)
    heaps, score_sample = merge_across_ranks(ctx, heaps, score_sample)
    summary.seconds_scoring = time.perf_counter() - t0
    entries = kept_entries(heaps, params, sampler.num_labels)
    dirs = class_dirs(sampler.classes)
    if ctx.is_main:
        _clear_previous(out)
    ctx.barrier()
    records, preview, written = render(sampler, entries, out, dirs, params, progress, ctx)
    summary.written = sum(ctx.gather(written))
    ctx.barrier()  # every rank's PNGs are in place before rank 0 writes the manifest
    if not ctx.is_main:
        return summary
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


def _clear_previous(out: Path) -> None:
    """Drop an earlier run's manifest first (so the folder never looks complete), then its images and shards."""
    import shutil

    (out / MANIFEST_NAME).unlink(missing_ok=True)
    (out / SCORES_NAME).unlink(missing_ok=True)
    shutil.rmtree(out / "images", ignore_errors=True)
    for shard in out.glob("shard-*.npy"):  # format npy; a smaller run would leave the old tail behind
        shard.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _stats(x: Iterable[float] | np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return {}
    return {"mean": round(float(x.mean()), 4), "std": round(float(x.std()), 4), "min": round(float(x.min()), 4),
            "p50": round(float(np.median(x)), 4), "max": round(float(x.max()), 4)}
