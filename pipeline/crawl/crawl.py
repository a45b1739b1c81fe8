"""The crawl stage: dispatch to the source that brings images and their labels/tags into `crawl.out`.

Every source writes the same layout: `manifest.jsonl` (pipeline.shared.manifest schema) plus
either uint8 array shards (embedded datasets) or `images/<md5>.<ext>` files (folders,
image boards), and `meta.json` with the resolved params.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.crawl.sources.base import CrawlError, CrawlSummary
from pipeline.shared.config import CrawlParams
from pipeline.shared.ownership import MARKER, claim_out, drop_unrewritten, mark_out
from pipeline.shared.progress import SILENT, Progress


def run(params: CrawlParams, progress: Progress = SILENT) -> CrawlSummary:
    """Import or crawl according to `params.source`, into a folder that is empty or this source's own."""
    _adopt_unmarked_crawl(Path(params.out), params.source)
    earlier = claim_out(params.out, f"crawl:{params.source}")
    if params.source in ("fashion-mnist", "folder"):
        summary = _import(params, progress)
        drop_unrewritten(params.out, earlier)  # an import replaces the earlier one (a board crawl resumes instead)
        return summary
    if params.source == "konachan":
        from pipeline.crawl.sources.moebooru import crawl_moebooru

        return crawl_moebooru(params, progress)
    raise CrawlError(f"crawl.source: {params.source!r} is not supported")


def _import(params: CrawlParams, progress: Progress) -> CrawlSummary:
    if params.source == "fashion-mnist":
        from pipeline.crawl.sources.fashion_mnist import import_fashion_mnist

        return import_fashion_mnist(params, progress)
    from pipeline.crawl.sources.folder import import_folder

    return import_folder(params, progress)


def _adopt_unmarked_crawl(out: Path, source: str) -> None:
    """A crawl made before folders carried a marker names its source in meta.json: keep resuming it."""
    if (out / MARKER).exists() or not (out / "meta.json").is_file():
        return
    try:
        earlier = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(earlier, dict) and earlier.get("source") == source:
        mark_out(out, f"crawl:{source}")
