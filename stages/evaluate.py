"""`augment evaluate`: does the synthetic data help a classifier on real data, and does ranking help?"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.shared.config import EvaluateParams as P
from stages.common import PARAMS_OPTION, execute, fail, load, option


def command(
    export: Annotated[Optional[Path], option(P, "export")] = None,
    real: Annotated[Optional[Path], option(P, "real")] = None,
    checkpoint: Annotated[Optional[Path], option(P, "checkpoint")] = None,
    out: Annotated[Optional[Path], option(P, "out")] = None,
    metrics: Annotated[Optional[Path], option(P, "metrics")] = None,
    steps: Annotated[Optional[int], option(P, "steps")] = None,
    seeds: Annotated[Optional[int], option(P, "seeds")] = None,
    feature_model: Annotated[Optional[str], option(P, "feature_model")] = None,
    feature_steps: Annotated[Optional[int], option(P, "feature_steps")] = None,
    gain_steps: Annotated[Optional[int], option(P, "gain_steps")] = None,
    gain_real_epochs: Annotated[Optional[float], option(P, "gain_real_epochs")] = None,
    gain_mixed_epochs: Annotated[Optional[float], option(P, "gain_mixed_epochs")] = None,
    fractions: Annotated[Optional[str], option(P, "fractions")] = None,
    compare_rankings: Annotated[Optional[bool], option(P, "compare_rankings", "--compare-rankings/--no-compare-rankings")] = None,
    rules: Annotated[Optional[str], option(P, "rules")] = None,
    compare_count: Annotated[Optional[int], option(P, "compare_count")] = None,
    feature_samples: Annotated[Optional[int], option(P, "feature_samples")] = None,
    inception_weights: Annotated[Optional[Path], option(P, "inception_weights")] = None,
    seed: Annotated[Optional[int], option(P, "seed")] = None,
    device: Annotated[Optional[str], option(P, "device")] = None,
    precision: Annotated[Optional[str], option(P, "precision")] = None,
    cache: Annotated[Optional[Path], option(P, "cache")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Leave evaluate.cache out of this run: every real-only classifier is trained afresh and nothing is kept.")] = False,
    threads: Annotated[Optional[int], option(P, "threads")] = None,
    workers: Annotated[Optional[int], option(P, "workers")] = None,
    params: Annotated[Path, PARAMS_OPTION] = Path("params.yaml"),
) -> None:
    """Train a fixed small CNN on the export, real subsets and ranked/unranked sets; test on real data."""
    overrides = {k: v for k, v in locals().items() if k not in ("params", "no_cache")}
    if no_cache and cache is not None:
        fail(f"--cache {cache} and --no-cache: give one of them", code=2)
    cfg: P = load(params, "evaluate", overrides)
    if no_cache:
        cfg = cfg.model_copy(update={"cache": None})
    from pipeline.evaluate.evaluate import run

    execute("evaluate", lambda bar: run(cfg, bar), writes=[cfg.out, cfg.metrics])
