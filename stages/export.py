"""`augment export`: write the labelled synthetic dataset (ImageFolder or WebDataset shards + manifest.csv + card)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from pipeline.shared.config import ExportParams as P
from stages.common import PARAMS_OPTION, execute, load, option


def command(
    input: Annotated[Optional[Path], option(P, "input")] = None,
    out: Annotated[Optional[Path], option(P, "out")] = None,
    include_real: Annotated[Optional[bool], option(P, "include_real", "--include-real/--synthetic-only")] = None,
    format: Annotated[Optional[str], option(P, "format")] = None,
    shard_size: Annotated[Optional[int], option(P, "shard_size")] = None,
    seed: Annotated[Optional[int], option(P, "seed")] = None,
    params: Annotated[Path, PARAMS_OPTION] = Path("params.yaml"),
) -> None:
    """Export generated samples (and optionally the real ones) as an ImageFolder dataset or WebDataset shards."""
    overrides = {k: v for k, v in locals().items() if k != "params"}
    cfg: P = load(params, "export", overrides)
    from pipeline.export.export import run

    execute("export", lambda bar: run(cfg, bar), writes=[cfg.out])
