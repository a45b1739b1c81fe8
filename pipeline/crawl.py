"""The crawl stage: bring images and their labels/tags into `crawl.out` with a manifest.

Every source writes the same layout: `manifest.jsonl` (pipeline.manifest schema) plus
either uint8 array shards (embedded datasets) or `images/<md5>.<ext>` files (folders,
image boards), and `meta.json` with the resolved params.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import CrawlParams
from pipeline.errors import PipelineError
from pipeline.progress import SILENT, Progress


class CrawlError(PipelineError):
    """The source cannot be used at all (unreachable, not the expected API, missing data)."""


@dataclass
class CrawlSummary:
    source: str
    out: Path
    kept: int = 0          # images in the output after this run (new and earlier ones)
    new: int = 0           # images added by this run
    skipped: int = 0       # not due (duplicate, rating, already present, ...)
    failed: int = 0        # tried and could not be kept
    due: int = 0           # images this run tried to get
    counters: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Success when something was kept, or when nothing was due."""
        return self.kept > 0 or self.due == 0

    def rows(self) -> dict[str, Any]:
        return {"source": self.source, "output": str(self.out), "images kept": self.kept, "new this run": self.new,
                "skipped": self.skipped, "failed": self.failed, **self.counters}


def run(params: CrawlParams, progress: Progress = SILENT) -> CrawlSummary:
    """Import or crawl according to `params.source`."""
    if params.source == "fashion-mnist":
        from pipeline.sources.fashion_mnist import import_fashion_mnist

        return import_fashion_mnist(params, progress)
    if params.source == "folder":
        from pipeline.sources.folder import import_folder

        return import_folder(params, progress)
    if params.source == "konachan":
        from pipeline.sources.moebooru import crawl_moebooru

        return crawl_moebooru(params, progress)
    raise CrawlError(f"crawl.source: {params.source!r} is not supported")
