"""The crawl stage: dispatch to the source that brings images and their labels/tags into `crawl.out`.

Every source writes the same layout: `manifest.jsonl` (pipeline.manifest schema) plus
either uint8 array shards (embedded datasets) or `images/<md5>.<ext>` files (folders,
image boards), and `meta.json` with the resolved params.
"""
from __future__ import annotations

from pipeline.config import CrawlParams
from pipeline.progress import SILENT, Progress
from pipeline.sources.base import CrawlError, CrawlSummary


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
