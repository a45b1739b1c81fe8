"""Which candidates to keep: the selection rules topk, filter, drs and mh (D's calibration: generate/calibration.py).

The rules stream over the same candidates (candidate i: seed `generate.seed + i`,
label `i mod K`) and fill the same per-class quotas, holding O(count) state whatever the
oversampling factor:

- `filter` (the default) keeps, in seed order, the candidates the label judge reads as their
  class and D scores at or above its class's floor (`FilterSelector`).
- `topk` keeps the highest raw discriminator logits (`sampling.TopK`, the classic rule).
- `drs` (Azadi et al. 2019, "Discriminator Rejection Sampling") accepts candidate x with
  probability sigmoid(F(x)), F(x) = D~(x) - D*_M - log(1 - exp(D~(x) - D*_M - eps)) - gamma,
  where D~ is the calibrated logit and D*_M the largest calibrated logit of the held-out
  generated samples. gamma is `generate.drs_gamma`, or, when `generate.drs_percentile` is
  set, that percentile of F over the held-out generated samples. Candidates are taken in
  seed order until the quota of their class is full (which can stop generation early);
  a quota the pool cannot fill is topped up with the best rejected candidates.
- `mh` (Turner et al. 2019, "Metropolis-Hastings GANs") runs one independence-sampler chain
  per kept image over `oversample` consecutive candidates of its class, started at a
  held-out real image of that class; a proposal x' replaces the state x with probability
  min(1, exp(D~(x') - D~(x))) (the ratio (1/D(x) - 1) / (1/D(x') - 1) written in logits).
  The chain's last state is kept; a chain that never left the real image keeps its best proposal.

D~ comes from a 1-D calibration of the raw logit fitted on held-out real images (the crop
output's test split, at most half of it, chosen by seed) and as many generated ones (seeds
`generate.seed + 2**40 + j`, disjoint from any candidate): `logistic` (Platt scaling,
a*logit + b) or `isotonic` (pool-adjacent-violators). The acceptance draws come from a
hash of each candidate's seed, so the kept set does not depend on batching.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import numpy as np

from pipeline.generate.calibration import (Calibration, CalibrationData, RankingError, calibrate, calibration_data,
                                           class_floors)
from pipeline.generate.sampling import (Entry, TopK, candidate_batches, class_quotas, class_shares, order_entries,
                                        uniforms)
from pipeline.shared.config import GenerateParams
from pipeline.shared.progress import SILENT, Progress

log = logging.getLogger(__name__)


# --- selectors ------------------------------------------------------------------------


class Selector(Protocol):
    done: bool
    needs_confidence: bool

    def add(self, scores: np.ndarray, seeds: np.ndarray, labels: np.ndarray,
            confidence: np.ndarray | None = None) -> None: ...

    def entries(self) -> list[Entry]: ...


def _groups(labels: np.ndarray, per_class: bool) -> np.ndarray:
    return labels if per_class else np.zeros_like(labels)


def _quotas(count: int, num_labels: int, per_class: bool, shares: list[float] | None = None) -> list[int]:
    """Per-group quotas: even, or in proportion to `shares` (generate.class_distribution: source)."""
    return class_quotas(count, shares, num_labels) if per_class else [count]


class TopKSelector:
    """The classic rule: the highest raw logits of each group (sampling.TopK). The one top-k:
    `generate` keeps its topk (and unranked) sets with it, `evaluate` compares it with the others."""

    def __init__(self, count: int, num_labels: int, per_class: bool, first_seed: int,
                 shares: list[float] | None = None) -> None:
        self.per_class, self.num_labels, self.first_seed = per_class and num_labels > 1, num_labels, first_seed
        self.quota = _quotas(count, num_labels, self.per_class, shares)
        self.heaps = [TopK(c) for c in self.quota]
        self.done = False
        self.needs_confidence = False

    def add(self, scores: np.ndarray, seeds: np.ndarray, labels: np.ndarray,
            confidence: np.ndarray | None = None) -> None:
        groups = _groups(labels, self.per_class)
        for g in np.unique(groups):
            mask = groups == g
            self.heaps[g].add(scores[mask], seeds[mask])

    def entries(self) -> list[Entry]:
        out = []
        for scores, seeds in (h.result() for h in self.heaps):
            for rank, (score, seed) in enumerate(zip(scores.tolist(), seeds.tolist()), 1):
                out.append((int((seed - self.first_seed) % self.num_labels), int(seed), float(score), rank))
        return order_entries(out, self.per_class)


class SeedOrderSelector:
    """Accept candidates in seed order into per-group quotas; top up short quotas with the best rejects.

    The shared mechanics of `drs` and `filter`: a subclass decides which candidates pass
    (`_verdict`) and how rejects rank for the top-up; the D score rides along as payload, so
    a topped-up entry keeps its score. State is O(count) whatever the pool.
    """

    needs_confidence = False

    def __init__(self, count: int, num_labels: int, per_class: bool, first_seed: int,
                 shares: list[float] | None = None) -> None:
        self.per_class = per_class and num_labels > 1
        self.num_labels, self.first_seed = num_labels, first_seed
        self.quota = _quotas(count, num_labels, self.per_class, shares)
        self.accepted: list[list[tuple[int, int, float]]] = [[] for _ in self.quota]  # (label, seed, score)
        self.rejected = [TopK(q) for q in self.quota]  # best rejects, to top up unfilled quotas
        self.seen = 0
        self.done = False

    def _verdict(self, scores: np.ndarray, seeds: np.ndarray, labels: np.ndarray,
                 confidence: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(accepted mask, key ranking the rejects for the top-up)."""
        raise NotImplementedError

    def add(self, scores: np.ndarray, seeds: np.ndarray, labels: np.ndarray,
            confidence: np.ndarray | None = None) -> None:
        self.seen += len(seeds)
        accept, reject_key = self._verdict(scores, seeds, labels, confidence)
        groups = _groups(labels, self.per_class)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            room = self.quota[g] - len(self.accepted[g])
            take = idx[accept[idx]][:max(room, 0)]
            self.accepted[g] += [(int(labels[i]), int(seeds[i]), float(scores[i])) for i in take]
            if len(self.accepted[g]) < self.quota[g]:  # only a short group can need its rejects
                rest = np.setdiff1d(idx, take, assume_unique=True)
                self.rejected[g].add(reject_key[rest], seeds[rest], scores[rest])
        self.done = all(len(a) >= q for a, q in zip(self.accepted, self.quota))

    @property
    def fallback(self) -> int:
        return sum(max(q - len(a), 0) for a, q in zip(self.accepted, self.quota))

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        for g, kept in enumerate(self.accepted):
            rows = list(kept)
            missing = self.quota[g] - len(rows)
            if missing > 0:
                top = self.rejected[g]
                _, seeds = top.result()
                rows += [(int((s - self.first_seed) % self.num_labels), int(s), float(d))  # the label follows from the seed
                         for s, d in zip(seeds[:missing], top.payload[:missing])]
            out += [(label, seed, score, rank) for rank, (label, seed, score) in enumerate(rows, 1)]
        return order_entries(out, self.per_class)


class DRSSelector(SeedOrderSelector):
    """Discriminator Rejection Sampling into per-group quotas, in seed order."""

    SALT = 0xD25

    def __init__(self, count: int, num_labels: int, per_class: bool, cal: Calibration, first_seed: int,
                 shares: list[float] | None = None) -> None:
        super().__init__(count, num_labels, per_class, first_seed, shares)
        self.cal = cal

    def _verdict(self, scores: np.ndarray, seeds: np.ndarray, labels: np.ndarray,
                 confidence: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return uniforms(seeds, self.SALT) < self.cal.drs_accept_prob(scores), scores


def merge_seed_order(parts: list[Any]) -> Any:
    """Merge the selectors of torchrun ranks that each streamed every world-th batch (drs, filter).

    Each rank kept the first accepted candidates of its own batches in seed order, up to the
    quota, so the first `quota` accepted seeds of the whole pool are among their union: sort
    it by seed and cut. Short quotas are topped up from the union of the ranks' best rejects.
    """
    merged = parts[0]
    for g, quota in enumerate(merged.quota):
        accepted = sorted((row for part in parts for row in part.accepted[g]), key=lambda row: row[1])
        merged.accepted[g] = accepted[:quota]
        for part in parts[1:]:
            scores, seeds = part.rejected[g].result()
            merged.rejected[g].add(scores, seeds, part.rejected[g].payload)
    for name in ("seen", "failed_judge", "failed_floor"):
        if hasattr(merged, name):
            setattr(merged, name, sum(getattr(part, name) for part in parts))
    merged.done = all(len(a) >= q for a, q in zip(merged.accepted, merged.quota))
    return merged


@dataclass
class _Chain:
    logit: float
    seed: int = -1          # -1: still at the real starting image
    label: int = 0
    score: float = 0.0
    steps: int = 0
    best: tuple[float, int, int] = (-np.inf, -1, 0)   # best proposal (score, seed, label), for a chain that never moved


class MHSelector:
    """Independence Metropolis-Hastings: one chain of `chain_length` proposals per kept image."""

    SALT = 0x3A7

    def __init__(self, count: int, num_labels: int, per_class: bool, chain_length: int, cal: Calibration,
                 start_logits: Iterable[np.ndarray], shares: list[float] | None = None) -> None:
        self.per_class = per_class and num_labels > 1
        self.quota = _quotas(count, num_labels, self.per_class, shares)
        self.chain_length = chain_length
        self.cal = cal
        self.starts = [np.asarray(s, np.float64) for s in start_logits]  # calibrated logits of real images, per group
        self.kept: list[list[tuple[int, int, float]]] = [[] for _ in self.quota]
        self.chains: list[_Chain | None] = [None for _ in self.quota]
        self.accepts = 0
        self.proposals = 0
        self.stuck = 0
        self.done = False
        self.needs_confidence = False

    def _new_chain(self, g: int) -> _Chain:
        starts = self.starts[g] if len(self.starts[g]) else np.concatenate(self.starts)
        return _Chain(logit=float(starts[len(self.kept[g]) % len(starts)]))

    def _close(self, g: int) -> None:
        chain = self.chains[g]
        if chain is None or chain.steps == 0:
            return
        if chain.seed < 0:
            self.stuck += 1
            _, seed, label = chain.best
            self.kept[g].append((label, seed, chain.best[0]))
        else:
            self.kept[g].append((chain.label, chain.seed, chain.score))
        self.chains[g] = None

    def add(self, scores: np.ndarray, seeds: np.ndarray, labels: np.ndarray,
            confidence: np.ndarray | None = None) -> None:
        logits = self.cal.logit(scores)
        u = uniforms(seeds, self.SALT)
        groups = _groups(labels, self.per_class)
        for i in range(len(seeds)):
            g = int(groups[i])
            if len(self.kept[g]) >= self.quota[g]:
                continue
            chain = self.chains[g]
            if chain is None:
                chain = self.chains[g] = self._new_chain(g)
            s, lg = float(scores[i]), float(logits[i])
            self.proposals += 1
            if lg >= chain.logit or u[i] < np.exp(lg - chain.logit):
                chain.logit, chain.seed, chain.label, chain.score = lg, int(seeds[i]), int(labels[i]), s
                self.accepts += 1
            if s > chain.best[0]:
                chain.best = (s, int(seeds[i]), int(labels[i]))
            chain.steps += 1
            if chain.steps >= self.chain_length:
                self._close(g)
        self.done = all(len(k) >= q for k, q in zip(self.kept, self.quota))

    def entries(self) -> list[Entry]:
        for g in range(len(self.quota)):  # a pool that ran out mid-chain keeps that chain's state
            if len(self.kept[g]) < self.quota[g]:
                self._close(g)
        out = [(label, seed, score, rank) for kept in self.kept
               for rank, (label, seed, score) in enumerate(kept, 1)]
        return order_entries(out, self.per_class)


class FilterSelector(SeedOrderSelector):
    """Label-consistency filtering with a D floor, in seed order (GaFi, Lampis et al. 2023, plus D).

    A candidate is kept when the label judge (a classifier of the real training split) gives its
    requested class at least `min_confidence` and D scores it at or above its class's floor (a
    low percentile of D over held-out generated samples of that class). Unlike top-k it keeps
    no preference among the accepted, so the variety of G survives: it only drops what a
    classifier of real data would misread and what D finds least real. Quotas a pool cannot
    fill are topped up with the rejects the judge found most consistent.
    """

    needs_confidence = True

    def __init__(self, count: int, num_labels: int, per_class: bool, min_confidence: float,
                 floors: np.ndarray, first_seed: int, shares: list[float] | None = None) -> None:
        super().__init__(count, num_labels, per_class, first_seed, shares)
        self.min_confidence, self.floors = min_confidence, np.asarray(floors, np.float64)
        self.failed_judge = self.failed_floor = 0

    def _verdict(self, scores: np.ndarray, seeds: np.ndarray, labels: np.ndarray,
                 confidence: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if confidence is None:
            raise ValueError("the filter rule needs the label judge's confidence of each candidate")
        judged = confidence >= self.min_confidence
        floored = scores >= self.floors[labels]
        self.failed_judge += int((~judged).sum())
        self.failed_floor += int((judged & ~floored).sum())
        return judged & floored, confidence - (~floored)   # rejects: most consistent first, floor-passers ahead


def make_selector(rule: str, params: GenerateParams, num_labels: int, cal: Calibration | None = None,
                  data: CalibrationData | None = None, count: int | None = None,
                  floors: np.ndarray | None = None, shares: list[float] | None = None) -> Selector:
    """The selector for `rule` (filter | topk | drs | mh) keeping `count` (default params.count) images."""
    count = params.count if count is None else count
    if rule == "topk":
        return TopKSelector(count, num_labels, params.per_class, params.seed, shares)
    if rule == "filter":
        if floors is None:
            raise ValueError("rank 'filter' needs the per-class D floors")
        return FilterSelector(count, num_labels, params.per_class, params.min_confidence, floors, params.seed, shares)
    if cal is None or data is None:
        raise ValueError(f"rank {rule!r} needs a calibration")
    if rule == "drs":
        return DRSSelector(count, num_labels, params.per_class, cal, params.seed, shares)
    if rule == "mh":
        per_class = params.per_class and num_labels > 1
        starts = cal.logit(data.real_scores)
        groups = range(num_labels) if per_class else [0]
        by_group = [starts[data.real_labels == g] if per_class else starts for g in groups]
        return MHSelector(count, num_labels, params.per_class, params.oversample, cal, by_group, shares)
    raise ValueError(f"rank {rule!r} is not one of filter, topk, drs, mh")


@dataclass
class RuleSelection:
    """What generate.select returns for drs/mh: the selector, with what it learnt on the way."""

    selector: Selector
    calibration: Calibration | None
    stats: dict[str, Any] = field(default_factory=dict)

    def entries(self) -> list[Entry]:
        return self.selector.entries()


def selector_stats(selector: Selector) -> dict[str, Any]:
    if isinstance(selector, DRSSelector):
        return {"candidates_seen": selector.seen, "topped_up_from_rejects": selector.fallback}
    if isinstance(selector, FilterSelector):
        return {"candidates_seen": selector.seen, "failed_judge": selector.failed_judge,
                "failed_d_floor": selector.failed_floor, "topped_up_from_rejects": selector.fallback}
    if isinstance(selector, MHSelector):
        rate = selector.accepts / selector.proposals if selector.proposals else 0.0
        return {"proposals": selector.proposals, "acceptance_rate": round(rate, 4), "chains_never_moved": selector.stuck}
    return {}


def prepare_rule(sampler: Any, params: GenerateParams, rule: str, count: int | None = None,
                 data: CalibrationData | None = None) -> tuple[Selector, Calibration | None, dict[str, Any]]:
    """The selector of a streaming rule, with what it needs fitted first: D floors (filter) or a calibration (drs, mh)."""
    k = sampler.num_labels
    shares = class_shares(sampler, params) if params.per_class and k > 1 else None
    if rule == "filter":
        floors = class_floors(sampler, params) if params.d_floor > 0 else np.full(k, -np.inf)
        selector = make_selector(rule, params, k, count=count, floors=floors, shares=shares)
        return selector, None, {"d_floors": [round(float(f), 4) for f in floors]}
    data = calibration_data(sampler, params) if data is None else data
    cal = calibrate(data, params)
    log.info("calibrated D (%s) on %d held-out real (%s split) and %d generated samples: %s", params.calibration,
             len(data.real_scores), data.source_split, len(data.fake_scores), cal.to_dict())
    return make_selector(rule, params, k, cal, data, count=count, shares=shares), cal, {"calibration": cal.to_dict()}


def select_with_rule(sampler: Any, params: GenerateParams, progress: Progress = SILENT,
                     histogram_sample: int = 200_000, ctx: Any = None) -> tuple[RuleSelection, np.ndarray, int]:
    """generate.select for rank filter/drs/mh: prepare the rule, then stream candidates until every quota is full."""
    k = sampler.num_labels
    selector, cal, stats = prepare_rule(sampler, params, params.rank)
    quota = getattr(selector, "quota", [params.count])
    # Labels cycle through the classes, so every class sees oversample x the largest quota.
    total = params.count * params.oversample if len(set(quota)) <= 1 else len(quota) * max(quota) * params.oversample
    sample: list[np.ndarray] = []
    sampled = scored = 0
    progress.start("score", total=total, description=f"generate + {params.rank}")
    world, rank = (ctx.world, ctx.rank) if ctx is not None else (1, 0)
    if world > 1 and params.rank == "mh":
        raise RankingError("generate.rank: 'mh' runs in one process only (its chains are sequential); "
                           "under torchrun use rank filter, drs or topk")
    for batch_no, (seeds, labels) in enumerate(candidate_batches(params.seed, total, k, params.batch_size)):
        if batch_no % world != rank:   # under torchrun each rank streams every world-th batch
            continue
        images, scores = sampler.images_and_scores(seeds, labels)
        conf = sampler.confidence(images, labels) if selector.needs_confidence else None
        selector.add(scores, seeds, labels, conf)
        scored += len(seeds)
        if sampled < histogram_sample:
            sample.append(scores[: histogram_sample - sampled])
            sampled += len(sample[-1])
        progress.advance("score", len(seeds))
        if selector.done:
            break
    progress.finish("score")
    if world > 1:
        gathered = ctx.gather((selector, scored, np.concatenate(sample) if sample else np.empty(0)))
        selector = merge_seed_order([g[0] for g in gathered])
        scored = sum(g[1] for g in gathered)
        sample = [g[2] for g in gathered]
    stats.update(selector_stats(selector))
    log.info("%s: %s", params.rank, stats)
    sample_all = np.concatenate(sample)[:histogram_sample] if sample else np.empty(0)
    return RuleSelection(selector, cal, stats), sample_all, scored
