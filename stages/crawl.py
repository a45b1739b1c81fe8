"""`augment crawl`: import the embedded dataset or a folder, or crawl a Moebooru board."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from pipeline.shared.config import CrawlParams as P
from stages.common import PARAMS_OPTION, execute, fail, load, option


def command(
    source: Annotated[Optional[str], option(P, "source")] = None,
    out: Annotated[Optional[Path], option(P, "out")] = None,
    root: Annotated[Optional[Path], option(P, "root")] = None,
    limit: Annotated[Optional[int], option(P, "limit")] = None,
    base_url: Annotated[Optional[str], option(P, "base_url")] = None,
    tags: Annotated[Optional[str], option(P, "tags")] = None,
    pages: Annotated[Optional[int], option(P, "pages")] = None,
    max_images: Annotated[Optional[int], option(P, "max_images")] = None,
    start_page: Annotated[Optional[int], option(P, "start_page")] = None,
    rating: Annotated[Optional[str], option(P, "rating")] = None,
    variant: Annotated[Optional[str], option(P, "variant")] = None,
    mode: Annotated[Optional[str], option(P, "mode")] = None,
    workers: Annotated[Optional[int], option(P, "workers")] = None,
    delay: Annotated[Optional[float], option(P, "delay")] = None,
    timeout: Annotated[Optional[float], option(P, "timeout")] = None,
    retries: Annotated[Optional[int], option(P, "retries")] = None,
    deadline: Annotated[Optional[float], option(P, "deadline")] = None,
    allow_hosts: Annotated[Optional[str], option(P, "allow_hosts")] = None,
    respect_robots: Annotated[Optional[bool], option(P, "respect_robots", "--robots/--no-robots")] = None,
    seed: Annotated[Optional[int], option(P, "seed")] = None,
    params: Annotated[Path, PARAMS_OPTION] = Path("params.yaml"),
) -> None:
    """Fetch images and their labels or tags into the crawl output folder."""
    overrides = {k: v for k, v in locals().items() if k != "params"}
    cfg: P = load(params, "crawl", overrides)
    from pipeline.crawl.crawl import run

    result = execute(f"crawl ({cfg.source})", lambda bar: run(cfg, bar), writes=[cfg.out])
    if not result.ok:
        fail(f"nothing was kept from {result.due} images due; see {cfg.out / 'failures.jsonl'}")
