"""The candidate stream: each candidate's seed, label, latent and hash draws, quotas, the one top-k, the Sampler.

Every candidate has its own seed (`generate.seed + i`) and label `i mod K`; its latent and
every random draw about it (DRS acceptance, MH moves) come from counter-based SplitMix64 hashes
of that seed, so a kept sample is regenerated exactly from its manifest line whatever the batch
it was drawn in. The Sampler (G and D rebuilt from a checkpoint) draws and scores candidates by
seed; `generate` (the export) and `evaluate` (the rule comparison) both stream candidates
through this module, and `ranking` decides which of them to keep.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from pipeline.shared.checkpoint import load_checkpoint
from pipeline.shared.config import GenerateParams
from pipeline.shared.device import autocast
from pipeline.shared.errors import PipelineError
from pipeline.train.models import Discriminator, Generator, ModelConfig, generated_statistics, standing_stats

Entry = tuple[int, int, float, int]  # (label, seed, raw D score, rank within its group)


class SamplingError(PipelineError):
    """The checkpoint cannot serve the requested sampling (no label judge, no class counts, ...)."""


# --- counter-based randomness ---------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (Steele et al. 2014): a bijective mix of uint64 values."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 of uint64 counters: the golden-ratio increment, then the finaliser."""
    with np.errstate(over="ignore"):
        return _mix64(x + _GOLDEN)


def seeded_normal(seeds: np.ndarray, dim: int) -> np.ndarray:
    """Standard-normal float32 vectors, one per seed, from a counter-based hash.

    Row i depends only on seeds[i] (never on the batch it is drawn in), and a whole batch is
    a few vectorised numpy operations instead of one torch.Generator per candidate.
    """
    pairs = (dim + 1) // 2
    keys = _splitmix64(np.asarray(seeds, dtype=np.uint64))[:, None]
    counters = np.arange(2 * pairs, dtype=np.uint64)[None, :] * _GOLDEN
    bits = _splitmix64(keys ^ counters)
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 2**53)   # in (0, 1)
    u1, u2 = u[:, :pairs], u[:, pairs:]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=1)[:, :dim]
    return z.astype(np.float32)


def uniforms(seeds: np.ndarray, salt: int) -> np.ndarray:
    """One U[0, 1) per seed from a SplitMix64 hash of (seed, salt): batch-independent and cheap."""
    with np.errstate(over="ignore"):
        x = np.asarray(seeds, dtype=np.uint64) + np.uint64(salt) * _GOLDEN
    return (_mix64(x) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def candidate_batches(first_seed: int, total: int, num_labels: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(seeds, labels) batches; candidate i has seed first_seed + i and label i mod K."""
    for start in range(0, total, batch_size):
        idx = np.arange(start, min(start + batch_size, total), dtype=np.int64)
        yield first_seed + idx, idx % num_labels


# --- quotas -------------------------------------------------------------------------------


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
        raise SamplingError("generate.class_distribution: 'source' needs the class counts that train records in "
                            "the checkpoint (this one predates them); retrain, or use 'balanced'")
    return [float(c) for c in sampler.class_counts]


# --- the bounded top-k -------------------------------------------------------------------


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


def order_entries(entries: list[Entry], per_class: bool) -> list[Entry]:
    """Kept entries in output order: by class then rank (per-class quotas), else by rank then class."""
    return sorted(entries, key=lambda e: (e[0], e[3]) if per_class else (e[3], e[0]))


# --- drawing and scoring by seed ------------------------------------------------------------


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
    judge: Any = None            # the label judge (pipeline.shared.classifier.SmallCNN) when the checkpoint has one
    class_counts: list[int] = field(default_factory=list)   # the training split's images per class

    @classmethod
    def from_checkpoint(cls, path: Path, device: torch.device, precision: str, latent_scale: float = 1.0,
                        d_stats: str = "running") -> "Sampler":
        """G and D as trained; `from_params` applies the generate params (latent scale, D's scoring statistics)."""
        from pipeline.shared.classifier import load_judge

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
        from pipeline.shared.classifier import confidence

        if self.judge is None:
            raise SamplingError("generate.rank: 'filter' needs the label judge, and this checkpoint has none "
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
