"""The crawler against a hostile or broken board (issue 11): bounded bodies, deadlines, allowed hosts,
another source's folder, and files made durable before the manifest vouches for them.

Everything runs against the real loopback server (tests/moebooru_server.py). No test sends a
packet beyond loopback: `loopback_only` makes any other connect() fail (and records it) before
a single byte leaves, so a regression shows up as a failed test, not as traffic.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any, Callable

import pytest

from pipeline.crawl.responses import HttpError
from pipeline.crawl.sources.base import CrawlError
from pipeline.crawl.sources.moebooru import client_for, crawl_moebooru
from pipeline.shared.config import CrawlParams

try:
    from moebooru_server import FakePost, serve
except ImportError:
    from tests.moebooru_server import FakePost, serve

pytestmark = pytest.mark.timeout(120)
MiB = 1 << 20


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse (and record) every connect() to an address that is not loopback."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            attempts.append(address)
            raise OSError(f"test: connection to non-loopback {address} blocked")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def crawl(server: Any, out: Path, **overrides: Any):
    values: dict[str, Any] = dict(source="konachan", base_url=server.base_url, out=out, delay=0, timeout=2, retries=1,
                                  page_size=5, variant="file", workers=2)
    values.update(overrides)
    params = CrawlParams(**values)
    clock = FakeClock()
    with client_for(params, clock=clock, sleep=clock.sleep, jitter=lambda: 0.5) as client:
        return crawl_moebooru(params, client=client)


def failures(out: Path) -> dict[Any, str]:
    lines = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    return {line["id"]: line["reason"] for line in lines}


def in_thread(fn: Callable[[], Any], limit: float) -> tuple[Any, float]:
    """Run fn with a wall-clock bound the test controls; returns (result or exception, seconds)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            box["result"] = err

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still running after {limit} s: no deadline"
    return box["result"], time.monotonic() - started


def gzip_bomb(prefix: bytes, filler: bytes, total: int) -> bytes:
    """gzip of `prefix` followed by `filler` repeated up to `total` bytes (compresses ~1000:1)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [comp.compress(prefix)]
    block = filler * (MiB // len(filler))
    for _ in range(total // len(block)):
        parts.append(comp.compress(block))
    parts.append(comp.flush())
    return b"".join(parts)


def send_body(handler: Any, body: bytes, headers: dict[str, str]) -> None:
    handler.send_response(200)
    for key, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


# -- 13: bounded bodies and a total deadline ------------------------------------------------------------


def crawl_answered_by(tmp_path: Path, path: str, respond: Any) -> tuple[Any, int, Any]:
    """Crawl a one-post board whose `path` answers with `respond`: the result, peak traced memory, the site."""
    with serve([FakePost(1)]) as server:
        server.site.custom[path] = respond
        tracemalloc.start()
        try:
            result, _ = in_thread(lambda: crawl(server, tmp_path / "out"), 30)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return result, peak, server.site


def test_a_gzip_bomb_list_page_is_refused_in_bounded_memory(tmp_path: Path, loopback_only: list) -> None:
    bomb = gzip_bomb(b"[", b" ", 400 * MiB)
    result, peak, _ = crawl_answered_by(tmp_path, "/post.json", lambda h: send_body(
        h, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    assert isinstance(result, CrawlError), result
    assert "too large" in str(result) and "\n" not in str(result)
    assert peak < 40 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_an_endless_chunked_list_page_is_cut_at_the_cap(tmp_path: Path, loopback_only: list) -> None:
    def endless(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b" " * (256 * 1024)
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        try:
            for _ in range(1200):  # 300 MB unless the client hangs up
                handler.wfile.write(frame)
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    result, peak, _ = crawl_answered_by(tmp_path, "/post.json", endless)
    assert isinstance(result, CrawlError) and "too large" in str(result), result
    assert peak < 40 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_robots_txt_is_read_up_to_its_cap_and_that_part_is_obeyed(tmp_path: Path, loopback_only: list) -> None:
    bomb = gzip_bomb(b"User-agent: *\nDisallow: /post.json\n", b"# filler\n", 300 * MiB)
    result, peak, site = crawl_answered_by(tmp_path, "/robots.txt", lambda h: send_body(
        h, bomb, {"Content-Type": "text/plain", "Content-Encoding": "gzip"}))
    assert not site.requests_for("/post.json")
    assert isinstance(result, CrawlError) and "robots.txt" in str(result) and "disallows" in str(result), result
    assert peak < 40 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_a_trickling_answer_ends_at_the_deadline(tmp_path: Path, loopback_only: list) -> None:
    def trickle(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"[")
        handler.wfile.flush()
        started = time.monotonic()
        try:
            while time.monotonic() - started < 30:  # one byte every 0.2 s: no single read ever times out
                time.sleep(0.2)
                handler.wfile.write(b" ")
                handler.wfile.flush()
        except OSError:
            pass

    with serve([FakePost(1)]) as server:
        server.site.custom["/post.json"] = trickle
        result, seconds = in_thread(lambda: crawl(server, tmp_path / "out", timeout=2, deadline=1.5), 20)
    assert isinstance(result, CrawlError) and "deadline" in str(result) and "\n" not in str(result), result
    assert seconds < 10


def test_a_trickling_image_fails_at_the_deadline_and_the_crawl_goes_on(tmp_path: Path, loopback_only: list) -> None:
    posts = [FakePost(1), FakePost(2)]
    with serve(posts) as server:
        slow_path = server.site.paths(posts[0])["file"]
        body = server.site.file_bytes(posts[0])

        def trickle(handler: Any) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            try:
                for i in range(len(body)):
                    handler.wfile.write(body[i:i + 1])
                    handler.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        server.site.custom[slow_path] = trickle
        result, seconds = in_thread(lambda: crawl(server, tmp_path / "out", deadline=1.0, retries=0), 20)
    assert not isinstance(result, BaseException), result
    assert result.kept == 1 and failures(tmp_path / "out") == {1: "deadline"}


# -- 14: only the board's hosts, never a private address it names -----------------------------------


def test_the_crawler_refuses_hosts_the_board_names(tmp_path: Path, loopback_only: list) -> None:
    posts = [FakePost(1), FakePost(2), FakePost(3), FakePost(4), FakePost(5), FakePost(6)]
    with serve(posts) as server:
        port = server.base_url.rsplit(":", 1)[1]
        posts[1].host = "http://169.254.169.254"            # cloud metadata
        posts[2].host = "http://10.0.0.5"                   # a private range
        posts[3].host = f"http://localhost:{port}"          # the same server under another name
        posts[4].host = "http://[::ffff:a00:5]"             # 10.0.0.5 as an IPv4-mapped IPv6 literal
        summary = crawl(server, tmp_path / "out")
        localhost_path = server.site.paths(posts[3])["file"]
        logged = [path for path, _, _ in server.site.log]
    assert loopback_only == [], "the crawler connected to a host the board named"
    assert summary.kept == 2  # posts 1 and 6, on the board's own host
    assert failures(tmp_path / "out") == {2: "host not allowed", 3: "host not allowed", 4: "host not allowed",
                                          5: "host not allowed"}
    assert localhost_path not in logged


def test_a_redirect_to_another_host_is_not_followed(tmp_path: Path, loopback_only: list) -> None:
    with serve([FakePost(1, fault="redirect-localhost"), FakePost(2)]) as server:
        summary = crawl(server, tmp_path / "out")
        hops = [path for path, _, _ in server.site.log if "hop=1" in path]
    assert hops == [], "the redirect target was fetched"
    assert summary.kept == 1 and failures(tmp_path / "out") == {1: "host not allowed"}


def test_allowed_image_hosts_are_still_checked_for_private_addresses() -> None:
    from pipeline.crawl.hosts import HostPolicy

    addresses = {"konachan.net": ["104.21.8.8"], "files.yande.re": ["104.21.9.9"], "cdn.example.org": ["10.0.0.5"],
                 "rebind.example.org": ["104.21.1.1", "127.0.0.1"]}
    policy = HostPolicy("https://konachan.net", ["cdn.example.org", ".yande.re", "169.254.169.254", "rebind.example.org"],
                        resolve=lambda host: addresses[host])

    def refusal(url: str) -> str:
        with pytest.raises(HttpError) as err:
            policy.check(url)
        assert "\n" not in str(err.value)
        return err.value.reason

    policy.check("https://konachan.net/image/abc/x.png")
    policy.check("https://files.yande.re/image/abc/x.png")
    assert refusal("http://169.254.169.254/latest/meta-data/iam") == "private address"
    assert refusal("http://cdn.example.org/x.png") == "private address"
    assert refusal("http://rebind.example.org/x.png") == "private address"
    assert refusal("http://localhost/x.png") == "host not allowed"
    assert refusal("http://10.0.0.5/x.png") == "host not allowed"
    assert refusal("http://konachan.net.evil.example/x.png") == "host not allowed"
    assert refusal("file:///etc/passwd") == "host not allowed"
    # A board on a private address (a test server, an intranet) may use private addresses.
    local = HostPolicy("http://127.0.0.1:8000", [], resolve=lambda host: addresses[host])
    local.check("http://127.0.0.1:9/x.png")
    with pytest.raises(HttpError, match="localhost"):
        local.check("http://localhost:8000/x.png")


def test_known_boards_allow_their_image_hosts() -> None:
    from pipeline.crawl.sources.moebooru import allowed_hosts

    assert {"files.yande.re", "assets.yande.re"} <= set(allowed_hosts(CrawlParams(base_url="https://yande.re")))
    assert allowed_hosts(CrawlParams(base_url="https://konachan.net", allow_hosts=["cdn.example.org"])) == ["cdn.example.org"]


# -- 10: a folder written by another source is refused -------------------------------------------------


def test_a_folder_of_another_source_is_refused_and_left_alone(tmp_path: Path, shapes_folder: Path) -> None:
    from pipeline.crawl import crawl as crawl_stage

    out = tmp_path / "raw"
    crawl_stage.run(CrawlParams(source="folder", root=shapes_folder, out=out))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with serve([FakePost(1)]) as server:
        with pytest.raises(CrawlError) as err:
            crawl(server, out)
        assert server.site.log == []
    assert "'folder'" in str(err.value) and "--out" in str(err.value) and "\n" not in str(err.value)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# -- 16: a kept file is on disk (and its name in the folder) before its manifest line ------------------


def test_files_are_fsynced_before_the_manifest_names_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        with lock:
            events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        real_replace(src, dst, **kw)
        with lock:
            events.append(("replace", f"{os.fspath(src)} -> {os.fspath(dst)}"))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    with serve([FakePost(i) for i in range(1, 5)]) as server:
        assert crawl(server, out, workers=1).kept == 4
    images, manifest = str(out / "images"), str(out / "manifest.jsonl")
    renames = [(i, e[1].split(" -> ")) for i, e in enumerate(events) if e[0] == "replace" and e[1].split(" -> ")[1].startswith(images + "/")]
    assert len(renames) == 4
    for i, (src, dst) in renames:
        assert ("fsync", src) in events[:i], f"{dst} renamed before its data was fsynced"
        later = events[i + 1:]
        next_manifest = next(j for j, e in enumerate(later) if e == ("fsync", manifest))
        assert ("fsync", images) in later[:next_manifest], f"{dst}: the folder was not fsynced before its manifest line"
