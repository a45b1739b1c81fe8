"""Crawl a Moebooru image board (konachan.net/.com, yande.re, ...) into `images/<md5>.<ext>` + manifest.

One generic crawler, as in gallery-dl: a site is just its `base_url`. Posts come from the
JSON API (`post.json`, the default) or from the HTML post list (both read in moebooru_listings.py);
both turn into `Post`s that go through the same filters, downloads and checks.

Output folder layout and the guarantees a killed-and-resumed crawl keeps:

- `images/<md5>.<ext>`: `md5` must match `^[0-9a-f]{32}$` and `ext` is whitelisted, so no
  name from the server ever reaches the file system. A download lands in a `.part` file in
  `images/` and is renamed only after it passed every check.
- `manifest.jsonl`: one line per file, appended (and fsynced) only after the file's data was
  fsynced, it was renamed and `images/` was fsynced, so a line never names a missing or
  partial file, not even after a power cut.
- On start, the folder is reconciled: a torn last line is cut, lines whose file is gone or
  whose md5 repeats are dropped, `.part` files are deleted. A file in `images/` with no
  manifest line (a kill between rename and append) is *adopted* when this run meets its
  post again -- after the same checks as a fresh download, and without downloading it --
  and deleted at the end of a run that did not meet it, because without its post we have
  no tags or rating to describe it. So after a completed run, `images/` and the manifest
  hold exactly the same files.
- `failures.jsonl`: one line per post that could not be kept (url, reason), appended.
- `meta.json`: source, site, tags and resolved params; a crawl folder keeps one variant, and
  a folder written by another source (its meta.json says so) is refused, never rewritten.
- The board names the image URLs: `HostPolicy` (pipeline/crawl/hosts.py) refuses hosts other than
  the board's and `crawl.allow_hosts`, and private addresses, before anything is sent.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from pipeline.crawl.hosts import HostPolicy
from pipeline.crawl.http import PART_SUFFIX, HttpClient
from pipeline.crawl.responses import Download, HttpError
from pipeline.crawl.sources.base import CrawlError, CrawlSummary
from pipeline.crawl.sources.moebooru_listings import (MD5_RE, Post, list_url, parse_api_page, parse_html_page,
                                                      post_from_api)
from pipeline.shared.config import CrawlParams, to_jsonable
from pipeline.shared.io import file_digest, fsync_dir, write_json
from pipeline.shared.manifest import MANIFEST_NAME, ManifestAppender, Record, read_manifest, write_manifest
from pipeline.shared.progress import SILENT, Progress

log = logging.getLogger(__name__)

EXTENSIONS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP"}
FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}
# Hosts a known board serves its images from besides its own (added to crawl.allow_hosts).
BOARD_IMAGE_HOSTS = {
    "konachan.net": [], "konachan.com": [],
    "yande.re": ["files.yande.re", "assets.yande.re"],
}
IMAGES = "images"
FAILURES = "failures.jsonl"
META = "meta.json"


class _Rejected(Exception):
    """A download that arrived but cannot be kept; `reason` is counted and logged to failures.jsonl."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


# -- checks on the downloaded bytes -------------------------------------------------------


def url_extension(url: str) -> Optional[str]:
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return ext if ext in EXTENSIONS else None


def verify_image(path: Path, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of a complete, decodable image no larger than `max_pixels`.

    `Image.open` reads only the header, so the pixel cap is applied before any decoding;
    `verify()` checks the structure (PNG CRCs), then a full `load()` catches a truncated
    JPEG that `verify()` does not notice. Pillow's own bomb guard stays as it is.
    """
    try:
        with Image.open(path) as img:
            fmt, (width, height) = img.format or "", img.size
            if width * height > max_pixels:
                raise _Rejected("too many pixels", f"{width}x{height} > {max_pixels}")
            if fmt not in FORMAT_EXT:
                raise _Rejected("unsupported format", fmt or "unknown")
            img.verify()
        with Image.open(path) as img:
            img.load()
    except Image.DecompressionBombError as err:
        raise _Rejected("too many pixels", str(err).split(".")[0]) from None
    except UnidentifiedImageError:
        raise _Rejected("not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # what Pillow raises for broken data
        raise _Rejected("broken image", str(err)[:200]) from None
    return fmt, width, height


def choose_extension(url: str, fmt: str) -> str:
    """The URL's whitelisted extension, unless the bytes say otherwise (then the format's own)."""
    ext = url_extension(url)
    return ext if ext is not None and EXTENSIONS[ext] == fmt else FORMAT_EXT[fmt]


def check_download(post: Post, got: Download, max_pixels: int) -> tuple[str, int, int]:
    """(extension, width, height) of a download that may be kept, else _Rejected."""
    fmt, width, height = verify_image(got.path, max_pixels)
    if post.variant == "file" and got.md5 != post.md5:
        raise _Rejected("md5 mismatch", f"got {got.md5}")
    return choose_extension(post.url or "", fmt), width, height


# -- the crawl ----------------------------------------------------------------------------


def allowed_hosts(params: CrawlParams) -> list[str]:
    """crawl.allow_hosts plus the known image hosts of the board (the base URL's host is always allowed)."""
    board = (urlsplit(params.base_url).hostname or "").lower()
    return list(dict.fromkeys([*params.allow_hosts, *BOARD_IMAGE_HOSTS.get(board, [])]))


def client_for(params: CrawlParams, **overrides: Any) -> HttpClient:
    """The HttpClient a crawl with these params uses; tests override clock/sleep/backoff."""
    settings: dict[str, Any] = dict(
        user_agent=params.user_agent, timeout=params.timeout, retries=params.retries, delay=params.delay,
        respect_robots=params.respect_robots, pool_size=params.workers + 1, deadline=params.deadline,
        max_page_bytes=params.max_page_bytes, policy=HostPolicy(params.base_url, allowed_hosts(params)),
    )
    settings.update(overrides)
    return HttpClient(**settings)


def crawl_moebooru(params: CrawlParams, progress: Progress = SILENT, *, client: Optional[HttpClient] = None) -> CrawlSummary:
    """Crawl `params.base_url` into `params.out`; resumable, see the module docstring."""
    if urlsplit(params.base_url).scheme not in ("http", "https"):
        raise CrawlError(f"crawl.base_url: {params.base_url!r} is not an http(s) URL")
    if not params.respect_robots:
        log.warning("robots.txt is ignored (--no-robots); make sure %s allows crawling", params.base_url)
    own_client = client is None
    client = client or client_for(params)
    try:
        return _Crawl(params, progress, client).run()
    finally:
        if own_client:
            client.close()


class _Crawl:
    """State of one run: what is on disk, what is in flight, and the counters."""

    def __init__(self, params: CrawlParams, progress: Progress, client: HttpClient) -> None:
        self.params, self.progress, self.client = params, progress, client
        self.out = Path(params.out)
        self.images = self.out / IMAGES
        self.known: set[str] = set()           # md5s in the manifest (earlier runs and this one)
        self.earlier: set[str] = set()         # md5s kept by earlier runs
        self.scheduled: set[str] = set()       # md5s this run already dealt with
        self.seen_ids: set[int] = set()
        self.orphans: dict[str, Path] = {}     # md5 -> file in images/ without a manifest line
        self.kept = self.new = self.failed = self.due = self.pages = self.bytes = 0
        self.skips: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.fallbacks = 0
        self.adopted = 0                       # orphans kept without a download (counted in `kept`, not `new`)

    # setup and teardown

    def run(self) -> CrawlSummary:
        self.images.mkdir(parents=True, exist_ok=True)
        self._check_meta()
        self._reconcile()
        self._write_meta(complete=False)
        if self._room(0):
            # robots.txt first, before any progress bar: an unreachable site fails in one line.
            self._may_fetch(list_url(self.params, self.params.start_page), first=True)
        self.progress.start("pages", total=self.params.pages, description="list pages")
        self.progress.start("downloads", total=self.params.max_images, description="downloads")
        with ManifestAppender(self.out / MANIFEST_NAME) as manifest, open(self._failures_path(), "a", encoding="utf-8") as failures:
            self.manifest, self.failures_fh = manifest, failures
            self._crawl()
        self._drop_orphans()
        self.progress.finish("pages")
        self.progress.finish("downloads")
        self._write_meta(complete=True)
        return self._summary()

    def _failures_path(self) -> Path:
        path = self.out / FAILURES
        ManifestAppender(path).repair()  # same torn-tail cut works for any JSONL file
        return path

    def _check_meta(self) -> None:
        meta_path = self.out / META
        if not meta_path.exists():
            if (self.out / MANIFEST_NAME).exists():  # every crawl writes meta.json before its first manifest line
                raise CrawlError(f"{self.out} holds a {MANIFEST_NAME} but no {META}: not a konachan crawl; use another --out")
            return
        try:
            earlier = json.loads(meta_path.read_text())
        except (ValueError, OSError):
            return  # unreadable meta.json: it is rewritten below
        # Another source's output (an import of Fashion-MNIST or a folder): reconciling would rewrite its manifest.
        if isinstance(earlier, dict) and earlier.get("source") not in (None, "konachan"):
            raise CrawlError(f"{self.out} holds the output of source {earlier['source']!r}, not a konachan crawl; "
                             "use another --out (or remove that folder)")
        # md5 names the post, not the bytes: mixing variants in one folder would mix image sizes.
        if isinstance(earlier, dict) and earlier.get("source") == "konachan" and earlier.get("variant") not in (None, self.params.variant):
            raise CrawlError(f"{self.out} holds a crawl of variant {earlier['variant']!r}, not {self.params.variant!r}; use another --out")

    def _reconcile(self) -> None:
        """Make manifest and images/ agree after whatever happened to an earlier run."""
        manifest_path = self.out / MANIFEST_NAME
        ManifestAppender(manifest_path).repair()
        records = read_manifest(manifest_path, tolerate_partial_tail=True) if manifest_path.exists() else []
        good: list[Record] = []
        for record in records:
            if record.md5 and record.md5 not in self.known and (self.out / record.file).is_file():
                self.known.add(record.md5)
                good.append(record)
        if len(good) != len(records):
            log.warning("%s: dropped %d manifest lines whose file is missing or repeated", manifest_path, len(records) - len(good))
            write_manifest(manifest_path, good)
        listed = {Path(r.file).name for r in good}
        for path in self.images.iterdir():
            if path.name.endswith(PART_SUFFIX) or path.name.endswith(".tmp"):
                path.unlink()  # a download or rename cut short
            elif path.is_file() and path.name not in listed:
                stem = path.name.split(".", 1)[0]
                if MD5_RE.match(stem) and stem not in self.known:
                    self.orphans[stem] = path
                else:
                    path.unlink()
        self.kept = len(good)
        self.earlier = set(self.known)

    def _drop_orphans(self) -> None:
        for path in self.orphans.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.orphans.clear()

    def _write_meta(self, complete: bool) -> None:
        write_json(self.out / META, {
            "source": "konachan", "base_url": self.params.base_url, "tags": self.params.tags,
            "mode": self.params.mode, "variant": self.params.variant, "complete": complete,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z") if complete else None,
            "counts": {"kept": self.kept, "new": self.new, "skipped": sum(self.skips.values()), "failed": self.failed,
                       "pages": self.pages, "bytes": self.bytes},
            "params": to_jsonable(self.params),
        })

    def _summary(self) -> CrawlSummary:
        counters: dict[str, Any] = {"pages": self.pages, "MB downloaded": round(self.bytes / 1e6, 3),
                                    "skip reasons": dict(self.skips), "failure reasons": dict(self.failures)}
        if self.adopted:
            counters["adopted from an earlier run"] = self.adopted
        if self.fallbacks:
            counters["preview instead of " + self.params.variant] = self.fallbacks
        return CrawlSummary(source="konachan", out=self.out, kept=self.kept, new=self.new,
                            skipped=sum(self.skips.values()), failed=self.failed, due=self.due, counters=counters)

    # the main loop

    def _crawl(self) -> None:
        window = self.params.workers * 2  # enough queued work to keep every worker busy, no more
        candidates = self._candidates()
        inflight: dict[Future[Download], Post] = {}
        with ThreadPoolExecutor(self.params.workers, thread_name_prefix="crawl") as pool:
            try:
                exhausted = False
                while True:
                    while not exhausted and len(inflight) < window and self._room(len(inflight)):
                        post = next(candidates, None)
                        if post is None:
                            exhausted = True
                        elif not self._adopt(post):
                            self.due += 1
                            inflight[pool.submit(self.client.download, post.url, self.images, self.params.max_bytes)] = post
                    if not inflight:
                        return
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for future in done:
                        self._finish(inflight.pop(future), future)
            finally:
                for future in inflight:
                    future.cancel()

    def _room(self, inflight: int) -> bool:
        return self.params.max_images is None or self.kept + inflight < self.params.max_images

    def _candidates(self) -> Iterator[Post]:
        """Posts due for download, page after page, with every skip counted."""
        for post in self._posts():
            reason = self._skip_reason(post)
            if reason is None:
                try:  # the board names the URL: refuse other hosts before any request (robots.txt included)
                    self.client.check_host(post.url or "")
                except HttpError as err:
                    self.scheduled.add(post.md5)
                    self._fail(post, err.url, err.reason, err.detail)
                    continue
                reason = self._robots_reason(post)
            if reason:
                self.skips[reason] += 1
                self._tick()
                continue
            self.scheduled.add(post.md5)
            yield post

    def _skip_reason(self, post: Post) -> Optional[str]:
        if post.deleted:
            return "deleted"
        if not MD5_RE.match(post.md5):
            return "invalid md5"
        if post.rating not in self.params.rating:
            return "rating"
        if post.md5 in self.earlier:
            return "already kept"
        if post.md5 in self.scheduled or post.md5 in self.known:
            return "duplicate"
        if not post.url:
            return "no url"
        return None

    def _robots_reason(self, post: Post) -> Optional[str]:
        try:
            if not self.client.allowed(post.url):
                return "robots.txt"
        except HttpError:  # an image host whose robots.txt cannot be read: treated as disallowing all
            return "robots.txt unreachable"
        return None

    def _posts(self) -> Iterator[Post]:
        last = self.params.start_page + self.params.pages - 1 if self.params.pages else None
        page = self.params.start_page
        while last is None or page <= last:
            posts, full = self._fetch_page(page)
            self.pages += 1
            self.progress.advance("pages", 1, page=page, posts=len(posts))
            new_ids = {p.id for p in posts if p.id is not None} - self.seen_ids
            if not posts or (posts and all(p.id is not None for p in posts) and not new_ids):
                return  # empty page, or the site keeps answering the same page
            self.seen_ids |= new_ids
            yield from posts
            if not full:
                return
            page += 1

    def _fetch_page(self, page: int) -> tuple[list[Post], bool]:
        """(posts, whether the page was full) for one list page; CrawlError if the first one is unusable."""
        url = list_url(self.params, page)
        first = page == self.params.start_page
        if not self._may_fetch(url, first):
            return [], False
        try:
            body = self.client.get(url).content
        except HttpError as err:
            if first:
                raise CrawlError(f"cannot crawl {url}: {err.reason}" + (f" ({err.detail})" if err.detail else "")) from None
            self._fail(None, url, err.reason, err.detail)
            return [], False
        if self.params.mode == "api":
            items = parse_api_page(body, url, first)
            return [post_from_api(item, self.params) for item in items], len(items) >= self.params.page_size
        posts, broken = parse_html_page(body, self.params, url)
        if broken:
            self.skips["unreadable markup"] += broken
        self.fallbacks += sum(p.variant != self.params.variant for p in posts)
        return posts, True  # the HTML page size is a user setting on the site: go on until a page is empty

    def _may_fetch(self, url: str, first: bool) -> bool:
        try:
            allowed = self.client.allowed(url)
        except HttpError as err:
            raise CrawlError(f"cannot reach {err.url}: {err.reason}" + (f" ({err.detail})" if err.detail else "")) from None
        if not allowed and first:
            raise CrawlError(f"robots.txt of {self.params.base_url} disallows {url}; pass --no-robots only if the site allows crawling")
        if not allowed:
            self.skips["robots.txt (list page)"] += 1
        return allowed

    # per post

    def _adopt(self, post: Post) -> bool:
        """Keep an orphan file left by a kill between rename and manifest line, if it checks out."""
        path = self.orphans.pop(post.md5, None)
        if path is None:
            return False
        try:
            fmt, width, height = verify_image(path, self.params.max_pixels)
            if post.variant == "file" and file_digest(path) != post.md5:
                raise _Rejected("md5 mismatch")
        except _Rejected:
            path.unlink()
            return False
        self._record(post, path.name, width, height)
        self.adopted += 1
        self._tick(1)
        return True

    def _finish(self, post: Post, future: Future[Download]) -> None:
        try:
            got = future.result()
        except HttpError as err:
            self._fail(post, err.url, err.reason, err.detail)
            return
        try:
            ext, width, height = check_download(post, got, self.params.max_pixels)
        except _Rejected as err:
            got.path.unlink()
            self._fail(post, got.url, err.reason, err.detail)
            return
        name = f"{post.md5}.{ext}"
        os.replace(got.path, self.images / name)  # file first (its data was fsynced before) ...
        fsync_dir(self.images)                    # ... and its name, so that a reboot keeps both ...
        self._record(post, name, width, height)  # ... manifest line second (appended and fsynced)
        self.new += 1
        self.bytes += got.size
        self._tick(1)

    def _record(self, post: Post, name: str, width: int, height: int) -> None:
        extra = {k: v for k, v in (("score", post.score), ("variant", post.variant)) if v is not None}
        self.manifest.append(Record(file=f"{IMAGES}/{name}", md5=post.md5, id=post.id, tags=post.tags, rating=post.rating,
                                    width=width, height=height, source_url=post.url, label=None, extra=extra))
        self.known.add(post.md5)
        self.kept += 1

    def _fail(self, post: Optional[Post], url: str, reason: str, detail: str = "") -> None:
        line = {"url": url, "reason": reason, "detail": detail or None,
                "id": post.id if post else None, "md5": post.md5 if post else None,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.failures_fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.failures_fh.flush()
        self.failures[reason] += 1
        if post is not None:
            self.failed += 1
            self._tick()

    def _tick(self, kept: int = 0) -> None:
        self.progress.advance("downloads", kept, downloaded=self.new, skipped=sum(self.skips.values()),
                              failed=self.failed, MB=round(self.bytes / 1e6, 1))

