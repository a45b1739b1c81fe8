"""Crawl sources. Each source module exposes one function `(CrawlParams, Progress) -> CrawlSummary`."""
