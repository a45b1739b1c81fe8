"""`augment crop`: fit whole images or crop anime faces into uint8 shards with labels."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from pipeline.config import CropParams as P
from stages.common import PARAMS_OPTION, execute, load, option


def command(
    mode: Annotated[Optional[str], option(P, "mode")] = None,
    input: Annotated[Optional[Path], option(P, "input")] = None,
    out: Annotated[Optional[Path], option(P, "out")] = None,
    size: Annotated[Optional[int], option(P, "size")] = None,
    fit: Annotated[Optional[str], option(P, "fit")] = None,
    margin: Annotated[Optional[float], option(P, "margin")] = None,
    label_from: Annotated[Optional[str], option(P, "label_from")] = None,
    min_likelihood: Annotated[Optional[float], option(P, "min_likelihood")] = None,
    keep: Annotated[Optional[str], option(P, "keep")] = None,
    workers: Annotated[Optional[int], option(P, "workers")] = None,
    min_face: Annotated[Optional[int], option(P, "min_face")] = None,
    pad_mode: Annotated[Optional[str], option(P, "pad_mode")] = None,
    dedup_hamming: Annotated[Optional[int], option(P, "dedup_hamming")] = None,
    tag_policy: Annotated[Optional[str], option(P, "tag_policy")] = None,
    min_class_count: Annotated[Optional[int], option(P, "min_class_count")] = None,
    cache: Annotated[Optional[Path], option(P, "cache")] = None,
    seed: Annotated[Optional[int], option(P, "seed")] = None,
    params: Annotated[Path, PARAMS_OPTION] = Path("params.yaml"),
) -> None:
    """Fit images (resize) or detect and crop anime faces (faces) into training shards."""
    overrides = {k: v for k, v in locals().items() if k != "params"}
    cfg: P = load(params, "crop", overrides)
    from pipeline.crop import run

    execute(f"crop ({cfg.mode})", lambda bar: run(cfg, bar))
