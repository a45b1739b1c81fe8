"""The one HTTP wrapper the crawler uses (after gallery-dl's extractor/downloader split).

`HttpClient` owns a `requests.Session` and every politeness and robustness rule:

- a descriptive User-Agent and (connect, read) timeouts on every request;
- bounded retries with exponential backoff and jitter on timeouts, connection errors,
  truncated bodies and 5xx; 429 and 503 honour `Retry-After` (seconds or an HTTP date,
  capped) and hold back every worker talking to that host, not only the one that got it;
- other 4xx are final at once (a 404 will not turn into a 200 by asking again);
- a per-host minimum interval between requests, shared by all threads: each request
  reserves the next free slot under a lock, then sleeps outside it;
- robots.txt through `urllib.robotparser`, fetched with the same session and rules;
- `download()` streams into a `.part` file in the destination folder with a byte cap
  and a Content-Length check, hashing as it goes; the caller verifies and renames it.

The clock, the sleep function and the jitter source are injectable so tests run fast.
"""
from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TypeVar
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
T = TypeVar("T")
_CHUNK = 64 * 1024


class HttpError(RuntimeError):
    """A request that failed for good; `reason` is a short code fit for counting."""

    def __init__(self, url: str, reason: str, status: Optional[int] = None, detail: str = "") -> None:
        self.url, self.reason, self.status, self.detail = url, reason, status, detail
        super().__init__(f"{url}: {reason}" + (f" ({detail})" if detail else ""))


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, reason: str, detail: str = "", wait: Optional[float] = None, status: Optional[int] = None) -> None:
        super().__init__(reason)
        self.reason, self.detail, self.wait, self.status = reason, detail, wait, status


@dataclass(frozen=True)
class Download:
    """A complete body on disk (`path` is a `.part` file the caller must rename or delete)."""

    url: str
    path: Path
    size: int
    md5: str
    content_type: str


def parse_retry_after(value: Optional[str], now: Callable[[], float] = time.time) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - now())
    return None


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class HttpClient:
    """Polite, retrying GETs and verified-length streaming downloads; safe to share between threads."""

    def __init__(
        self,
        *,
        user_agent: str,
        timeout: float | tuple[float, float] = 30.0,
        retries: int = 4,
        delay: float = 1.0,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        retry_after_max: float = 300.0,
        respect_robots: bool = True,
        pool_size: int = 8,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.user_agent = user_agent
        self.timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self.retries, self.delay = retries, delay
        self.backoff, self.backoff_max, self.retry_after_max = backoff, backoff_max, retry_after_max
        self.respect_robots = respect_robots
        self.clock, self.sleep, self.jitter = clock, sleep, jitter
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        # Our own retry loop is the only one; the pool is sized so every worker keeps its connection.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 1), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._lock = threading.Lock()
        self._next_slot: dict[str, float] = {}
        self._min_interval: dict[str, float] = {}
        self._robots: dict[str, RobotFileParser] = {}
        self._robots_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- politeness -------------------------------------------------------------------

    def reserve(self, host: str) -> float:
        """Claim the next request slot for `host`; returns how long the caller must wait."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next_slot.get(host, now))
            self._next_slot[host] = slot + max(self.delay, self._min_interval.get(host, 0.0))
            return slot - now

    def hold(self, host: str, seconds: float) -> None:
        """Keep every thread off `host` for `seconds` (after a 429/503 for one of them)."""
        with self._lock:
            until = self.clock() + seconds
            self._next_slot[host] = max(self._next_slot.get(host, until), until)

    def _wait_turn(self, url: str) -> None:
        wait = self.reserve(urlsplit(url).netloc)
        if wait > 0:
            self.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        # Full exponential backoff with +-50% jitter so that parallel workers do not retry in lockstep.
        return min(self.backoff_max, self.backoff * 2 ** attempt) * (0.5 + self.jitter())

    # -- robots.txt -------------------------------------------------------------------

    def allowed(self, url: str) -> bool:
        """Whether robots.txt of the URL's site lets our User-Agent fetch it (True when not respected)."""
        if not self.respect_robots:
            return True
        return self._robots_for(origin(url)).can_fetch(self.user_agent, url)

    def _robots_for(self, site: str) -> RobotFileParser:
        with self._robots_lock:
            if site not in self._robots:
                try:
                    self._robots[site] = self._fetch_robots(site)
                except HttpError:
                    # RFC 9309: an unreachable robots.txt means "disallow all"; remember it so that
                    # every later URL of that site is refused at once instead of retried again.
                    self._robots[site] = RobotFileParser()
                    self._robots[site].disallow_all = True
                    raise
            return self._robots[site]

    def _fetch_robots(self, site: str) -> RobotFileParser:
        parser = RobotFileParser(site + "/robots.txt")
        try:
            text = self.get(site + "/robots.txt").text
        except HttpError as err:
            if err.status in (401, 403):
                parser.disallow_all = True  # the convention robotparser itself follows
                return parser
            if err.status is not None and 400 <= err.status < 500:
                parser.allow_all = True  # no robots.txt: everything is allowed
                return parser
            raise
        parser.parse(text.splitlines())
        crawl_delay = parser.crawl_delay(self.user_agent)
        if crawl_delay:
            # A site's own Crawl-delay is a floor for our interval, never a reason to go faster.
            with self._lock:
                self._min_interval[urlsplit(site).netloc] = float(crawl_delay)
        return parser

    # -- requests ---------------------------------------------------------------------

    def get(self, url: str) -> requests.Response:
        """GET with retries; the body is read. Raises HttpError when it fails for good."""
        return self._with_retries(url, lambda: self._get_once(url))

    def download(self, url: str, folder: Path, max_bytes: int) -> Download:
        """Stream `url` into a `.part` file in `folder`; raises HttpError (nothing left behind) on failure."""
        return self._with_retries(url, lambda: self._download_once(url, Path(folder), max_bytes))

    def _with_retries(self, url: str, attempt_once: Callable[[], T]) -> T:
        last: Optional[_Retry] = None
        for attempt in range(self.retries + 1):
            self._wait_turn(url)
            try:
                return attempt_once()
            except _Retry as err:
                last = err
                if attempt == self.retries:
                    break
                if err.wait is not None:
                    self.hold(urlsplit(url).netloc, err.wait)
                else:
                    self.sleep(self._backoff(attempt))
                log.debug("retrying %s after %s (attempt %d)", url, err.reason, attempt + 1)
        assert last is not None
        raise HttpError(url, last.reason, last.status, last.detail)

    def _request(self, url: str, *, stream: bool, headers: Optional[dict[str, str]] = None) -> requests.Response:
        try:
            resp = self.session.get(url, timeout=self.timeout, stream=stream, headers=headers, allow_redirects=True)
        except requests.Timeout as err:
            raise _Retry("timeout", type(err).__name__) from None
        except requests.ConnectionError as err:
            raise _Retry("connection error", _connection_detail(err)) from None
        except requests.RequestException as err:  # invalid URL, too many redirects, ...
            raise HttpError(url, "bad request", detail=_first_line(err)) from None
        self._check_status(url, resp)
        return resp

    def _check_status(self, url: str, resp: requests.Response) -> None:
        status = resp.status_code
        if status < 400:
            return
        resp.close()
        if status in (429, 503):
            wait = parse_retry_after(resp.headers.get("Retry-After"))
            wait = None if wait is None else min(wait, self.retry_after_max)
            raise _Retry(f"http {status}", wait=wait, status=status)
        if status >= 500:
            raise _Retry(f"http {status}", status=status)
        raise HttpError(url, f"http {status}", status)

    def _get_once(self, url: str) -> requests.Response:
        resp = self._request(url, stream=False)
        try:
            _ = resp.content  # read here so a body cut short is retried like any other drop
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as err:
            raise _Retry("truncated", _first_line(err)) from None
        return resp

    def _download_once(self, url: str, folder: Path, max_bytes: int) -> Download:
        # identity encoding: the bytes counted against Content-Length are the bytes of the file.
        resp = self._request(url, stream=True, headers={"Accept-Encoding": "identity"})
        with resp:
            expected = _content_length(resp)
            if expected is not None and expected > max_bytes:
                raise HttpError(url, "too large", resp.status_code, f"{expected} bytes > {max_bytes}")
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=PART_SUFFIX, dir=folder)
            try:
                size, digest = _stream_to(fd, resp, url, max_bytes)
                if expected is not None and size != expected:
                    raise _Retry("truncated", f"{size} of {expected} bytes")
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return Download(url, Path(tmp), size, digest, resp.headers.get("Content-Type", ""))


def _stream_to(fd: int, resp: requests.Response, url: str, max_bytes: int) -> tuple[int, str]:
    md5 = hashlib.md5()
    size = 0
    with os.fdopen(fd, "wb") as fh:
        try:
            for chunk in resp.iter_content(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise HttpError(url, "too large", resp.status_code, f"more than {max_bytes} bytes")
                md5.update(chunk)
                fh.write(chunk)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as err:
            raise _Retry("truncated", _first_line(err)) from None
    return size, md5.hexdigest()


def _content_length(resp: requests.Response) -> Optional[int]:
    value = resp.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


_CONNECTION_CAUSES = (
    ("refused", "connection refused"), ("Name or service not known", "host name not found"),
    ("nodename nor servname", "host name not found"), ("getaddrinfo", "host name not found"),
    ("timed out", "timed out"), ("reset by peer", "connection reset"), ("SSL", "TLS error"),
)


def _connection_detail(err: BaseException) -> str:
    """A few words instead of urllib3's nested repr (which repeats the URL and the pool)."""
    text = str(err)
    return next((words for needle, words in _CONNECTION_CAUSES if needle in text), _first_line(err))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
