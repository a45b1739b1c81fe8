"""`augment generate`: draw candidates from the trained model, rank them with D, write the best."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from pipeline.shared.config import GenerateParams as P
from stages.common import PARAMS_OPTION, execute, load, option


def command(
    count: Annotated[Optional[int], option(P, "count")] = None,
    ranked: Annotated[Optional[bool], option(P, "ranked", "--ranked/--unranked")] = None,
    oversample: Annotated[Optional[int], option(P, "oversample")] = None,
    rank: Annotated[Optional[str], option(P, "rank")] = None,
    min_confidence: Annotated[Optional[float], option(P, "min_confidence")] = None,
    d_floor: Annotated[Optional[float], option(P, "d_floor")] = None,
    d_stats: Annotated[Optional[str], option(P, "d_stats")] = None,
    latent_scale: Annotated[Optional[float], option(P, "latent_scale")] = None,
    per_class: Annotated[Optional[bool], option(P, "per_class", "--per-class/--overall")] = None,
    class_distribution: Annotated[Optional[str], option(P, "class_distribution")] = None,
    batch_size: Annotated[Optional[int], option(P, "batch_size")] = None,
    seed: Annotated[Optional[int], option(P, "seed")] = None,
    checkpoint: Annotated[Optional[Path], option(P, "checkpoint")] = None,
    out: Annotated[Optional[Path], option(P, "out")] = None,
    scores_only: Annotated[Optional[bool], option(P, "scores_only", "--scores-only/--images")] = None,
    device: Annotated[Optional[str], option(P, "device")] = None,
    precision: Annotated[Optional[str], option(P, "precision")] = None,
    threads: Annotated[Optional[int], option(P, "threads")] = None,
    writers: Annotated[Optional[int], option(P, "writers")] = None,
    params: Annotated[Path, PARAMS_OPTION] = Path("params.yaml"),
) -> None:
    """Generate labelled samples; with --ranked keep the best of --oversample candidates each."""
    overrides = {k: v for k, v in locals().items() if k != "params"}
    cfg: P = load(params, "generate", overrides)
    from pipeline.generate.generate import run

    execute("generate", lambda bar: run(cfg, bar), writes=[cfg.out])
