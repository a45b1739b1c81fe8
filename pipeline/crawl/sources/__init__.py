"""Crawl sources. Each exposes one function `(CrawlParams, Progress) -> CrawlSummary`."""
