"""`augment crop`: fit whole images or crop anime faces into uint8 shards with labels."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from pipeline.shared.config import CropParams as P
from stages.common import PARAMS_OPTION, execute, load, option


def command(
    mode: Annotated[Optional[str], option(P, "mode")] = None,
    input: Annotated[Optional[Path], option(P, "input")] = None,
    out: Annotated[Optional[Path], option(P, "out")] = None,
    metrics: Annotated[Optional[Path], option(P, "metrics")] = None,
    size: Annotated[Optional[int], option(P, "size")] = None,
    channels: Annotated[Optional[str], option(P, "channels")] = None,
    fit: Annotated[Optional[str], option(P, "fit")] = None,
    shard_size: Annotated[Optional[int], option(P, "shard_size")] = None,
    margin: Annotated[Optional[float], option(P, "margin")] = None,
    pad_mode: Annotated[Optional[str], option(P, "pad_mode")] = None,
    background: Annotated[Optional[str], option(P, "background")] = None,
    label_from: Annotated[Optional[str], option(P, "label_from")] = None,
    min_likelihood: Annotated[Optional[float], option(P, "min_likelihood")] = None,
    min_face: Annotated[Optional[int], option(P, "min_face")] = None,
    keep: Annotated[Optional[str], option(P, "keep")] = None,
    max_faces_per_image: Annotated[Optional[int], option(P, "max_faces_per_image")] = None,
    min_source_side: Annotated[Optional[int], option(P, "min_source_side")] = None,
    reject_monochrome: Annotated[Optional[bool], option(P, "reject_monochrome", "--reject-monochrome/--keep-monochrome")] = None,
    dup_iou: Annotated[Optional[float], option(P, "dup_iou")] = None,
    dedup_hamming: Annotated[Optional[int], option(P, "dedup_hamming")] = None,
    dedup_max_diff: Annotated[Optional[float], option(P, "dedup_max_diff")] = None,
    tag_policy: Annotated[Optional[str], option(P, "tag_policy")] = None,
    other_label: Annotated[Optional[str], option(P, "other_label")] = None,
    min_class_count: Annotated[Optional[int], option(P, "min_class_count")] = None,
    small_classes: Annotated[Optional[str], option(P, "small_classes")] = None,
    test_fraction: Annotated[Optional[float], option(P, "test_fraction")] = None,
    workers: Annotated[Optional[int], option(P, "workers")] = None,
    cache: Annotated[Optional[Path], option(P, "cache")] = None,
    seed: Annotated[Optional[int], option(P, "seed")] = None,
    params: Annotated[Path, PARAMS_OPTION] = Path("params.yaml"),
) -> None:
    """Fit images (resize) or detect and crop anime faces (faces) into training shards.

    tag_labels and hair_palette (tables) are set in params.yaml only.
    """
    overrides = {k: v for k, v in locals().items() if k != "params"}
    if overrides.get("channels") in ("1", "3"):
        overrides["channels"] = int(overrides["channels"])
    cfg: P = load(params, "crop", overrides)
    from pipeline.crop.crop import run

    execute(f"crop ({cfg.mode})", lambda bar: run(cfg, bar), writes=[cfg.out, cfg.metrics, cfg.cache])
