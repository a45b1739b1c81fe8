"""Crawl throughput against the local fake Moebooru server: the crawler at 1/4/8 workers vs a plain loop.

    .venv/bin/python bench/bench_crawl.py [--posts 48] [--latency 0.02] [--repeats 2]

The server (tests/moebooru_server.py) runs in its own process so it does not share the
GIL with the crawler; it adds a fixed `--latency` to every response to model the network.
Images are noise JPEGs of 100-300 KB. The crawler runs with delay 0 (no politeness
interval) and variant=file, so it streams, hashes, checks the MD5 and fully decodes every
image; the plain loop (one requests.Session, sequential) only fetches and writes.
Prints a markdown table with posts/s, MB/s and the ratio to the plain loop.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import requests  # noqa: E402

from pipeline.crawl.sources.moebooru import crawl_moebooru  # noqa: E402
from pipeline.shared.config import CrawlParams  # noqa: E402


def _serve(posts: int, latency: float, ready: Any, stop: Any) -> None:
    from moebooru_server import FakePost, serve

    sizes = [(400, 300), (512, 384), (576, 432)]
    fake = [FakePost(i, fmt="JPEG", noise=True, size=sizes[i % 3]) for i in range(1, posts + 1)]
    with serve(fake, latency=latency) as server:
        for post in fake:  # render every image before timing starts
            server.site.file_bytes(post)
        ready.put(server.base_url)
        stop.wait()


def plain_loop(base_url: str, out: Path) -> tuple[int, int]:
    """What a first script would do: one page of post.json, then each file_url in turn."""
    out.mkdir(parents=True)
    posts, size = 0, 0
    with requests.Session() as session:
        page = 1
        while True:
            items = session.get(f"{base_url}/post.json", params={"page": page, "limit": 100}, timeout=30).json()
            for item in items:
                body = session.get(item["file_url"], timeout=30).content
                (out / f"{item['md5']}.jpg").write_bytes(body)
                posts, size = posts + 1, size + len(body)
            if len(items) < 100:
                return posts, size
            page += 1


def crawler(base_url: str, out: Path, workers: int) -> tuple[int, int]:
    params = CrawlParams(source="konachan", base_url=base_url, out=out, delay=0, workers=workers, variant="file",
                         rating=["s"], timeout=30)
    summary = crawl_moebooru(params)
    size = sum(p.stat().st_size for p in (out / "images").iterdir())
    return summary.new, size


def timed(fn: Any, *args: Any) -> tuple[float, int, int]:
    started = time.perf_counter()
    posts, size = fn(*args)
    return time.perf_counter() - started, posts, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to every response")
    parser.add_argument("--repeats", type=int, default=2, help="runs per row; the best is reported")
    args = parser.parse_args()

    ready, stop = mp.Queue(), mp.Event()
    server = mp.Process(target=_serve, args=(args.posts, args.latency, ready, stop), daemon=True)
    server.start()
    base_url = ready.get(timeout=120)
    rows: list[tuple[str, float, int, int]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-crawl-") as tmp:
            cases = [("plain requests loop (sequential)", plain_loop, None)] + [
                (f"augment crawl, {w} worker{'s' * (w > 1)}", crawler, w) for w in (1, 4, 8)]
            for name, fn, workers in cases:
                best = None
                for rep in range(args.repeats):
                    out = Path(tmp) / f"{name.split()[0]}-{workers}-{rep}"
                    result = timed(fn, base_url, out, *(() if workers is None else (workers,)))
                    best = result if best is None or result[0] < best[0] else best
                rows.append((name, *best))
    finally:
        stop.set()
        server.join(timeout=10)

    base_rate = rows[0][2] / rows[0][1]
    print(f"{args.posts} posts, {rows[0][3] / args.posts / 1e3:.0f} KB per image on average, "
          f"{args.latency * 1e3:.0f} ms added per response, delay 0, best of {args.repeats}; "
          f"{platform.node()} ({mp.cpu_count()} CPUs), Python {platform.python_version()}")
    print()
    print("| run | seconds | posts/s | MB/s | vs plain loop |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, posts, size in rows:
        rate = posts / seconds
        print(f"| {name} | {seconds:.2f} | {rate:.1f} | {size / seconds / 1e6:.2f} | {rate / base_rate:.2f}x |")


if __name__ == "__main__":
    main()
