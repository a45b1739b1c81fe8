"""What every crawl source returns and raises: CrawlSummary (counts for the summary table) and CrawlError."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.shared.errors import PipelineError


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
