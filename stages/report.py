"""`augment report`: one self-contained HTML page of what the pipeline made and how it scored."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from pipeline.shared.config import ReportParams as P
from stages.common import PARAMS_OPTION, execute, load, option


def command(
    export: Annotated[Optional[Path], option(P, "export")] = None,
    generated: Annotated[Optional[Path], option(P, "generated")] = None,
    real: Annotated[Optional[Path], option(P, "real")] = None,
    train: Annotated[Optional[Path], option(P, "train")] = None,
    evaluate: Annotated[Optional[Path], option(P, "evaluate")] = None,
    metrics: Annotated[Optional[Path], option(P, "metrics")] = None,
    out: Annotated[Optional[Path], option(P, "out")] = None,
    per_class: Annotated[Optional[int], option(P, "per_class")] = None,
    seed: Annotated[Optional[int], option(P, "seed")] = None,
    params: Annotated[Path, PARAMS_OPTION] = Path("params.yaml"),
) -> None:
    """Write runs/report/index.html: per-class grids, counts and scores, metrics, rules, losses, params."""
    overrides = {k: v for k, v in locals().items() if k != "params"}
    cfg: P = load(params, "report", overrides)
    from pipeline.report.report import run

    execute("report", lambda bar: run(cfg, bar), writes=[cfg.out])
