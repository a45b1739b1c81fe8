"""The ranking comparison of evaluate: one scored candidate pool per seed, each rule's kept set, judged and summed up.

Seed i's pool is candidates `generate.seed + i * pool .. + pool - 1` of the evaluated checkpoint,
so the seeds differ in the candidates drawn as well as in the classifier's weights and data
order, while every rule of one seed chooses from exactly the same candidates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.evaluate.yardstick import Judge, Judged, LabelledSet, Pending, mean_std
from pipeline.generate.calibration import CalibrationData, calibration_data
from pipeline.generate.ranking import prepare_rule, selector_stats
from pipeline.generate.sampling import Entry, Sampler, candidate_batches
from pipeline.shared.config import EvaluateParams, GenerateParams
from pipeline.shared.data import to_uint8
from pipeline.shared.device import resolve_precision
from pipeline.shared.errors import PipelineError
from pipeline.shared.progress import Progress


class ComparisonError(PipelineError):
    """The checkpoint does not fit the evaluated data."""


class CandidatePool:
    """One seed's candidates, scored once each (D's logit, and the label judge's confidence when a rule
    needs it), in generate's batches and only as far as a rule reads: unranked and filter stop
    where their sets are full, topk, drs and mh read the whole pool."""

    def __init__(self, sampler: Sampler, gen: GenerateParams, count: int, need_confidence: bool,
                 progress: Progress, description: str) -> None:
        self.sampler, self.batch_size, self.count, self.need_confidence = sampler, gen.batch_size, count, need_confidence
        self.planned = count * gen.oversample                       # the most candidates a rule may read
        self.kept: dict[str, np.ndarray] = {}                       # rule -> mask over the scored candidates
        self._batches = candidate_batches(gen.seed, self.planned, sampler.num_labels, gen.batch_size)
        self._parts: list[tuple[np.ndarray, ...]] = []
        self.seeds = self.labels = self.scores = self.confidence = np.empty(0)
        self._scored = 0
        self.progress = progress
        progress.start("pool", total=self.planned, description=description)

    def ensure(self, n: int) -> None:
        """Score candidates until the first `n` (at most the planned pool) are scored."""
        before = self._scored
        while self._scored < min(n, self.planned):
            seeds, labels = next(self._batches)
            images, scores = self.sampler.images_and_scores(seeds, labels)
            conf = self.sampler.confidence(images, labels) if self.need_confidence else np.zeros(len(seeds))
            self._parts.append((seeds, labels, scores, conf))
            self._scored += len(seeds)
            self.progress.advance("pool", len(seeds))
        if self._scored > before:
            self.seeds, self.labels, self.scores, self.confidence = (np.concatenate(c) for c in zip(*self._parts))

    def finish(self) -> None:
        self.progress.finish("pool")

    @property
    def total(self) -> int:
        """Candidates scored."""
        return self._scored


@dataclass
class RuleResult:
    """One rule's kept set of one pool: how the yardstick judged it and what the rule reported."""

    judged: Pending[Judged]
    stats: dict[str, Any]
    kept_score_mean: float
    discarded_score_mean: float | None


@dataclass
class RuleRun:
    """All rules of one seed's pool."""

    pool: CandidatePool
    results: dict[str, RuleResult]

    def judged(self, rule: str) -> Judged:
        return self.results[rule].judged.get()


def make_sampler(gen: GenerateParams, num_classes: int, device: torch.device) -> Sampler:
    """The evaluated checkpoint's Sampler, checked against the data's classes."""
    sampler = Sampler.from_params(gen, device, resolve_precision(gen.precision, device))
    if sampler.num_labels != num_classes:
        raise ComparisonError(f"evaluate.checkpoint: the model has {sampler.num_labels} classes, the data {num_classes}")
    return sampler


def render(sampler: Sampler, entries: list[Entry], batch_size: int) -> torch.Tensor:
    """The images of `entries` (regenerated from their seeds) as uint8 N x C x H x W."""
    out = []
    for start in range(0, len(entries), batch_size):
        chunk = entries[start:start + batch_size]
        images, _ = sampler.images_and_scores(np.array([e[1] for e in chunk], np.int64),
                                              np.array([e[0] for e in chunk], np.int64))
        out.append(torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2))
    return torch.cat(out).contiguous()


def select_from_pool(pool: CandidatePool, rule: str, gen: GenerateParams,
                     cal_data: CalibrationData | None) -> tuple[list[Entry], dict[str, Any]]:
    """The entries `rule` keeps from the pool (streamed in generate's batches), and its stats."""
    if rule == "unranked":
        n = pool.count
        pool.ensure(n)
        return [(int(pool.labels[i]), int(pool.seeds[i]), float(pool.scores[i]), 0) for i in range(n)], {}
    selector, _, stats = prepare_rule(pool.sampler, gen, rule, count=pool.count, data=cal_data)
    if rule != "filter":   # topk ranks the whole pool; drs and mh read it all too
        pool.ensure(pool.planned)
    for start in range(0, pool.planned, pool.batch_size):
        pool.ensure(start + pool.batch_size)
        sl = slice(start, start + pool.batch_size)
        selector.add(pool.scores[sl], pool.seeds[sl], pool.labels[sl],
                     pool.confidence[sl] if selector.needs_confidence else None)
        if selector.done:
            break
    stats.update(selector_stats(selector))
    return selector.entries(), stats


def compare_rules(params: EvaluateParams, gen: GenerateParams, rules: list[str], judge: Judge, sampler: Sampler,
                  export_size: int, seed: int, progress: Progress) -> RuleRun:
    """One candidate pool for evaluation seed `seed`; each rule selects from it, each kept set is rendered and judged."""
    n = params.compare_count or export_size
    total = n * gen.oversample
    gen = gen.model_copy(update={"seed": gen.seed + (seed - params.seed) * total})
    pool = CandidatePool(sampler, gen, n, "filter" in rules, progress, f"score candidate pool (seed {seed})")
    results: dict[str, RuleResult] = {}
    cal_data = None
    selected = {}
    for rule in rules:
        if rule in ("drs", "mh") and cal_data is None:
            cal_data = calibration_data(sampler, gen)
        selected[rule] = select_from_pool(pool, rule, gen, cal_data)
    pool.finish()
    for rule, (entries, stats) in selected.items():   # the masks cover every candidate any rule had scored
        kept = LabelledSet(render(sampler, entries, gen.batch_size), np.array([e[0] for e in entries], np.int64))
        mask = np.isin(pool.seeds, np.array([e[1] for e in entries], np.int64))
        pool.kept[rule] = mask
        results[rule] = RuleResult(judge.judge(kept, seed), stats, float(pool.scores[mask].mean()),
                                   float(pool.scores[~mask].mean()) if (~mask).any() else None)
    return RuleRun(pool, results)


def ranking_metrics(rules: list[str], runs: list[RuleRun], gen: GenerateParams) -> dict[str, Any]:
    """ranking.<rule>.{cas, fd, precision, recall}(_std) over seeds, the winners, and ranked vs unranked."""
    ranking: dict[str, Any] = {}
    for rule in rules:
        js = [r.judged(rule) for r in runs]
        row: dict[str, Any] = {}
        row.update(mean_std("cas", [j.accuracy for j in js]))
        for name in ("fd", "precision", "recall"):
            values = [getattr(j, name) for j in js]
            if all(v is not None for v in values):   # a metric that could not be measured stays absent, never 0
                row.update(mean_std(name, values))
        row["kept_score_mean"] = round(float(np.mean([r.results[rule].kept_score_mean for r in runs])), 4)
        discarded = [r.results[rule].discarded_score_mean for r in runs if r.results[rule].discarded_score_mean is not None]
        row["discarded_score_mean"] = round(float(np.mean(discarded)), 4) if discarded else None
        for key, value in runs[0].results[rule].stats.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = value
        ranking[rule] = row
    out: dict[str, Any] = {"ranking": ranking, "compare_count": runs[0].pool.count, "pool": runs[0].pool.planned,
                           "pool_scored": [r.pool.total for r in runs]}
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
