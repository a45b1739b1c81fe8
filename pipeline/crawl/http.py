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
  and a Content-Length check, hashing as it goes, and fsyncs it; the caller verifies and
  renames it.

A hostile or broken server cannot exhaust memory or hold a worker forever:

- every body is read in chunks and decoded here (gzip/deflate through `zlib` with a bound on
  each step's output), so the caps count *decoded* bytes: `get()` stops at `max_page_bytes`
  (robots.txt at 500 KiB, of which the first part is used, as RFC 9309 allows), `download()`
  at its `max_bytes`; a gzip bomb or an endless chunked answer ends in "too large";
- every call has a total deadline (`deadline` seconds, all attempts included), checked
  between reads, so a server trickling one byte at a time ends in "deadline";
- a `HostPolicy` (crawl/hosts.py) decides which hosts may be contacted at all, checked before every request
  and after every redirect (redirects are followed here, one hop at a time).

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
import zlib
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from pipeline.crawl.hosts import HostPolicy
from pipeline.crawl.responses import Download, HttpError, Page

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
T = TypeVar("T")
_CHUNK = 64 * 1024
_PIECE = 1 << 20            # most decoded bytes one decompression step may produce
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 2.5: a crawler may stop parsing robots.txt after 500 KiB
MAX_REDIRECTS = 5
REDIRECT_CODES = (301, 302, 303, 307, 308)


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, reason: str, detail: str = "", wait: Optional[float] = None, status: Optional[int] = None) -> None:
        super().__init__(reason)
        self.reason, self.detail, self.wait, self.status = reason, detail, wait, status


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
        max_page_bytes: int = 10_000_000,
        deadline: float = 600.0,
        policy: Optional[HostPolicy] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.user_agent = user_agent
        self.timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self.retries, self.delay = retries, delay
        self.backoff, self.backoff_max, self.retry_after_max = backoff, backoff_max, retry_after_max
        self.respect_robots = respect_robots
        self.max_page_bytes, self.deadline, self.policy = max_page_bytes, deadline, policy
        self.clock, self.sleep, self.jitter = clock, sleep, jitter
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        # Only what _Body can decode with a bound on its output (requests would add br/zstd when installed).
        self.session.headers["Accept-Encoding"] = "gzip, deflate"
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

    def check_host(self, url: str) -> None:
        """Raise HttpError when the host policy forbids contacting `url` (nothing is sent)."""
        if self.policy is not None:
            self.policy.check(url)

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
            page = self.get(site + "/robots.txt", max_bytes=ROBOTS_MAX_BYTES, truncate=True)
        except HttpError as err:
            if err.status in (401, 403):
                parser.disallow_all = True  # the convention robotparser itself follows
                return parser
            if err.status is not None and 400 <= err.status < 500:
                parser.allow_all = True  # no robots.txt: everything is allowed
                return parser
            raise
        lines = page.text.splitlines()
        if page.truncated:
            # RFC 9309 2.5: parse (at least) the first 500 KiB; the line cut in the middle is dropped.
            log.warning("%s/robots.txt is larger than %d bytes; obeying its first %d bytes", site, ROBOTS_MAX_BYTES, ROBOTS_MAX_BYTES)
            lines = lines[:-1]
        parser.parse(lines)
        crawl_delay = parser.crawl_delay(self.user_agent)
        if crawl_delay:
            # A site's own Crawl-delay is a floor for our interval, never a reason to go faster.
            with self._lock:
                self._min_interval[urlsplit(site).netloc] = float(crawl_delay)
        return parser

    # -- requests ---------------------------------------------------------------------

    def get(self, url: str, *, max_bytes: Optional[int] = None, truncate: bool = False) -> Page:
        """GET with retries; the body is read, at most `max_bytes` decoded bytes (default `max_page_bytes`).

        A longer body raises HttpError "too large", or with `truncate` comes back cut at the cap.
        """
        limit = self.max_page_bytes if max_bytes is None else max_bytes
        return self._with_retries(url, lambda deadline: self._get_once(url, limit, truncate, deadline))

    def download(self, url: str, folder: Path, max_bytes: int) -> Download:
        """Stream `url` into a `.part` file in `folder`; raises HttpError (nothing left behind) on failure."""
        return self._with_retries(url, lambda deadline: self._download_once(url, Path(folder), max_bytes, deadline))

    def _with_retries(self, url: str, attempt_once: Callable[[float], T]) -> T:
        deadline = time.monotonic() + self.deadline  # real time: the injectable clock paces, this bounds
        last: Optional[_Retry] = None
        for attempt in range(self.retries + 1):
            self._wait_turn(url)
            if time.monotonic() > deadline:
                raise self._deadline_error(url)
            try:
                return attempt_once(deadline)
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

    def _deadline_error(self, url: str, status: Optional[int] = None) -> HttpError:
        return HttpError(url, "deadline", status, f"no complete answer within crawl.deadline = {self.deadline:g} s")

    def _request(self, url: str, deadline: float, headers: Optional[dict[str, str]] = None) -> requests.Response:
        """The response (headers read, body not) after following redirects one checked hop at a time."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            self.check_host(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._deadline_error(url)
            # Waiting for the headers may not outlast the deadline either.
            timeout = (self.timeout[0], max(0.001, min(self.timeout[1], remaining)))
            try:
                resp = self.session.get(current, timeout=timeout, stream=True, headers=headers, allow_redirects=False)
            except requests.Timeout as err:
                raise _Retry("timeout", type(err).__name__) from None
            except requests.ConnectionError as err:
                raise _Retry("connection error", _connection_detail(err)) from None
            except requests.RequestException as err:  # invalid URL, ...
                raise HttpError(url, "bad request", detail=_first_line(err)) from None
            location = resp.headers.get("Location")
            if resp.status_code in REDIRECT_CODES and location:
                resp.close()
                current = urljoin(current, location)
                continue
            self._check_status(url, resp)
            return resp
        raise HttpError(url, "too many redirects", detail=f"more than {MAX_REDIRECTS}")

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

    def _get_once(self, url: str, limit: int, truncate: bool, deadline: float) -> Page:
        resp = self._request(url, deadline)
        with resp:
            body = _Body(resp, url, limit, deadline, self._deadline_error)
            data = bytearray()
            for piece in body:
                data += piece
            if body.size > limit and not truncate:
                raise HttpError(url, "too large", resp.status_code, f"more than {limit} bytes (crawl.max_page_bytes)")
            body.check_length()
        return Page(url, resp.status_code, bytes(data[:limit]), resp.headers, body.size > limit)

    def _download_once(self, url: str, folder: Path, max_bytes: int, deadline: float) -> Download:
        # identity encoding: the bytes counted against Content-Length are the bytes of the file.
        resp = self._request(url, deadline, headers={"Accept-Encoding": "identity"})
        with resp:
            expected = _content_length(resp)
            if expected is not None and expected > max_bytes and "Content-Encoding" not in resp.headers:
                raise HttpError(url, "too large", resp.status_code, f"{expected} bytes > {max_bytes}")
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=PART_SUFFIX, dir=folder)
            try:
                body = _Body(resp, url, max_bytes, deadline, self._deadline_error)
                size, digest = _stream_to(fd, body, url, max_bytes)
                body.check_length()
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return Download(url, Path(tmp), size, digest, resp.headers.get("Content-Type", ""))


class _Body:
    """The decoded body of a streamed response, read a chunk at a time.

    Decoding is done here (gzip and deflate through zlib), never by urllib3, so that each
    decompression step produces at most `_PIECE` bytes and iteration stops just past `limit`:
    a small compressed body that inflates to gigabytes costs at most `limit` + `_PIECE`.
    The deadline is checked before every read; `read1` returns after one socket read, so a
    server that trickles bytes cannot keep a read going past it.
    """

    def __init__(self, resp: requests.Response, url: str, limit: int, deadline: float,
                 deadline_error: Callable[[str, Optional[int]], HttpError]) -> None:
        self.resp, self.url, self.limit, self.deadline, self.deadline_error = resp, url, limit, deadline, deadline_error
        encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding in ("identity", ""):
            self.decoder = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            self.decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected
        else:
            raise HttpError(url, "unsupported encoding", resp.status_code, encoding)
        self.raw_bytes = 0   # as sent (compared with Content-Length)
        self.size = 0        # decoded

    def __iter__(self) -> Iterator[bytes]:
        while self.size <= self.limit:
            if time.monotonic() > self.deadline:
                raise self.deadline_error(self.url, self.resp.status_code)
            try:
                data = self.resp.raw.read1(_CHUNK, decode_content=False)
            except urllib3.exceptions.ReadTimeoutError:
                raise _Retry("timeout", "read timed out") from None
            except (urllib3.exceptions.HTTPError, OSError, requests.RequestException) as err:
                raise _Retry("truncated", _first_line(err)) from None
            if not data:
                return
            self.raw_bytes += len(data)
            if self.decoder is None:
                self.size += len(data)
                yield data
                continue
            while data and self.size <= self.limit:
                try:
                    piece = self.decoder.decompress(data, min(_PIECE, self.limit - self.size + 1))
                except zlib.error as err:
                    raise HttpError(self.url, "bad encoding", self.resp.status_code, str(err)) from None
                data = self.decoder.unconsumed_tail
                self.size += len(piece)
                yield piece

    def check_length(self) -> None:
        """A body shorter than its Content-Length was cut off: worth another try."""
        expected = _content_length(self.resp)
        if expected is not None and self.size <= self.limit and self.raw_bytes != expected:
            raise _Retry("truncated", f"{self.raw_bytes} of {expected} bytes")


def _stream_to(fd: int, body: _Body, url: str, max_bytes: int) -> tuple[int, str]:
    md5 = hashlib.md5()
    size = 0
    with os.fdopen(fd, "wb") as fh:
        for chunk in body:
            size += len(chunk)
            if size > max_bytes:
                raise HttpError(url, "too large", body.resp.status_code, f"more than {max_bytes} bytes")
            md5.update(chunk)
            fh.write(chunk)
        # On disk before the caller renames it and a manifest line vouches for it (safe across a reboot).
        fh.flush()
        os.fsync(fh.fileno())
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
