"""`augment train`: train the (conditional) DCGAN on the crop stage's shards."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.shared.config import TrainParams as P
from stages.common import PARAMS_OPTION, console, execute, load, option


def command(
    input: Annotated[Optional[Path], option(P, "input")] = None,
    out: Annotated[Optional[Path], option(P, "out")] = None,
    loss: Annotated[Optional[str], option(P, "loss")] = None,
    label_sampling: Annotated[Optional[str], option(P, "label_sampling")] = None,
    diffaugment: Annotated[Optional[str], option(P, "diffaugment")] = None,
    diffaugment_groups: Annotated[Optional[bool], option(P, "diffaugment_groups", "--diffaugment-groups/--diffaugment-per-image")] = None,
    xflip: Annotated[Optional[bool], option(P, "xflip", "--xflip/--no-xflip")] = None,
    epochs: Annotated[Optional[float], option(P, "epochs")] = None,
    max_steps: Annotated[Optional[int], option(P, "max_steps")] = None,
    batch_size: Annotated[Optional[int], option(P, "batch_size")] = None,
    g_channels: Annotated[Optional[int], option(P, "g_channels")] = None,
    lr_g: Annotated[Optional[float], option(P, "lr_g")] = None,
    lr_d: Annotated[Optional[float], option(P, "lr_d")] = None,
    r1_gamma: Annotated[Optional[float], option(P, "r1_gamma")] = None,
    lecam_weight: Annotated[Optional[float], option(P, "lecam_weight")] = None,
    mbstd_by_class: Annotated[Optional[bool], option(P, "mbstd_by_class", "--mbstd-by-class/--mbstd-mixed")] = None,
    judge_steps: Annotated[Optional[int], option(P, "judge_steps")] = None,
    checkpoint_every: Annotated[Optional[int], option(P, "checkpoint_every")] = None,
    device: Annotated[Optional[str], option(P, "device")] = None,
    precision: Annotated[Optional[str], option(P, "precision")] = None,
    threads: Annotated[Optional[int], option(P, "threads")] = None,
    seed: Annotated[Optional[int], option(P, "seed")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --out.")] = False,
    force_resume: Annotated[bool, typer.Option("--force-resume", help="Resume even though train params (batch size, loss, learning rates, ...) or the training data changed.")] = False,
    params: Annotated[Path, PARAMS_OPTION] = Path("params.yaml"),
) -> None:
    """Train the DCGAN; writes checkpoints, per-epoch sample grids, losses.csv/png and metrics."""
    overrides = {k: v for k, v in locals().items() if k not in ("params", "resume", "force_resume")}
    cfg: P = load(params, "train", overrides)
    from pipeline.train.train import run

    result = execute("train", lambda bar: run(cfg, resume=resume or force_resume, progress=bar, force=force_resume),
                     writes=[cfg.out, cfg.metrics])
    if not result.finished:
        console.print(f"stopped early at step {result.steps}; continue with `augment train --resume`")
