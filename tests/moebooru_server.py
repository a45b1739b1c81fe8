"""A real HTTP server on 127.0.0.1 that behaves like a small Moebooru site, with faults on demand.

It serves what the crawler reads from konachan.net -- `post.json` pages, the `/post` HTML
list, images under Moebooru's paths, `robots.txt` -- from an in-memory list of `FakePost`s,
so the crawler's tests and its benchmark run against real sockets and never the internet.

Per-post faults (`FakePost.fault`):
  500-once   first request for the image answers 500, later ones the image
  429-once   first request answers 429 with `Retry-After: <retry_after>`
  slow       waits `slow_seconds` before answering (longer than the client's timeout)
  truncated  sends half the body under a Content-Length for all of it, then closes
  wrong-md5  the post's md5 is not the md5 of the bytes served
  html       an HTML page served as image/jpeg
  huge       a valid PNG header whose IHDR says 100000 x 100000
  redirect-localhost  answers 302 to the same path on http://localhost:<port> (another host name)

`FakePost.host` puts a post's image URLs on another host (e.g. a private address the crawler
must refuse). `FakeMoebooru.custom` maps a path to a function that writes the whole answer
(gzip bombs, endless or trickling bodies).
"""
from __future__ import annotations

import hashlib
import html
import io
import json
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
from PIL import Image

RATING_WORDS = {"s": "Safe", "q": "Questionable", "e": "Explicit"}


@dataclass
class FakePost:
    id: int
    rating: str = "s"
    tags: list[str] = field(default_factory=lambda: ["1girl", "blue_hair"])
    fmt: str = "PNG"                      # format of the original file
    size: tuple[int, int] = (48, 40)
    noise: bool = False                   # random pixels: realistic (incompressible) JPEG sizes for the benchmark
    fault: Optional[str] = None
    url_style: str = "absolute"           # absolute | protocol | relative | elsewhere (FakeMoebooru.elsewhere)
    md5: Optional[str] = None             # forced md5 value (a hostile one, or a duplicate's)
    deleted: bool = False
    image_of: Optional[int] = None        # serve the same bytes as this post (duplicate across pages)
    host: Optional[str] = None            # scheme://host[:port] its image URLs name instead of the site's


def png_with_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR (+ IEND) claiming `width` x `height`: cheap to send, a bomb to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def make_image(seed: int, size: tuple[int, int], fmt: str, noise: bool = False, quality: int = 90) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    if noise:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        pixels = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 256, 3, dtype=np.uint8)
        pixels[h // 4: h // 2, w // 4: w // 2] = rng.integers(0, 256, 3, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


class FakeMoebooru:
    """The site's content and behaviour; the HTTP handler only routes requests to it."""

    def __init__(self, posts: list[FakePost], *, robots: Optional[str] = "User-agent: *\nDisallow: /admin\n",
                 html_page_size: int = 4, retry_after: str = "2", slow_seconds: float = 1.0,
                 latency: float = 0.0, image_delay: float = 0.0, flavour: str = "moebooru",
                 broken_markup: bool = False) -> None:
        self.posts = sorted(posts, key=lambda p: -p.id)  # Moebooru lists newest first
        self.robots, self.html_page_size, self.retry_after = robots, html_page_size, retry_after
        self.slow_seconds, self.latency, self.image_delay = slow_seconds, latency, image_delay
        self.flavour, self.broken_markup = flavour, broken_markup
        self.base_url = ""  # set once the server has a port
        self.elsewhere = "http://127.0.0.1:9"  # image host for url_style="elsewhere" (nothing listens there)
        self.log: list[tuple[str, float, str]] = []   # (path, monotonic time, user agent)
        self._hits: dict[str, int] = {}
        self._lock = threading.Lock()
        self._bytes: dict[int, bytes] = {}
        self._routes: dict[str, tuple[FakePost, str]] = {}
        self.custom: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}

    # content

    def file_bytes(self, post: FakePost) -> bytes:
        source = post.image_of if post.image_of is not None else post.id
        if source not in self._bytes:
            src = next(p for p in self.posts if p.id == source)
            self._bytes[source] = make_image(source, src.size, src.fmt, src.noise)
        return self._bytes[source]

    def variant_bytes(self, post: FakePost, variant: str) -> bytes:
        if variant == "file":
            return self.file_bytes(post)
        key = -(post.image_of if post.image_of is not None else post.id) * 10 - len(variant)
        if key not in self._bytes:
            w, h = post.size
            scale = {"preview": 0.5, "sample": 0.8, "jpeg": 1.0}[variant]
            self._bytes[key] = make_image(abs(key), (max(1, int(w * scale)), max(1, int(h * scale))), "JPEG", post.noise)
        return self._bytes[key]

    def md5_of(self, post: FakePost) -> str:
        if post.md5 is not None:
            return post.md5
        if post.fault == "wrong-md5":
            return hashlib.md5(b"not these bytes %d" % post.id).hexdigest()
        return hashlib.md5(self.file_bytes(post)).hexdigest()

    def paths(self, post: FakePost) -> dict[str, str]:
        md5 = self.md5_of(post)
        token = md5 if len(md5) == 32 and md5.isalnum() else quote(md5, safe="")
        ext = "png" if post.fmt == "PNG" else "jpg"
        name = quote(f"Fake - {post.id} {' '.join(post.tags)}")
        return {
            "file": f"/image/{token}/{name}.{ext}",
            "jpeg": f"/jpeg/{token}/{name}.jpg",
            "sample": f"/sample/{token}/{name}.jpg",
            "preview": f"/data/preview/{token[:2]}/{token[2:4]}/{token}.jpg",
        }

    def url(self, post: FakePost, path: str) -> str:
        if post.host is not None:
            return post.host + path
        host = self.base_url.split("://", 1)[1]
        return {"absolute": self.base_url + path, "protocol": f"//{host}{path}", "relative": path,
                "elsewhere": self.elsewhere + path}[post.url_style]

    def build_routes(self) -> None:
        for post in self.posts:
            for variant, path in self.paths(post).items():
                self._routes[path] = (post, variant)

    def api_post(self, post: FakePost) -> dict[str, Any]:
        w, h = post.size
        item: dict[str, Any] = {
            "id": post.id, "tags": " ".join(post.tags), "created_at": 1700000000 + post.id, "creator_id": 1,
            "author": "tester", "change": post.id, "source": "", "score": post.id % 50, "md5": self.md5_of(post),
            "file_size": len(self.file_bytes(post)), "width": w, "height": h, "rating": post.rating,
            "has_children": False, "parent_id": None, "status": "deleted" if post.deleted else "active",
        }
        if not post.deleted:
            paths = self.paths(post)
            item.update({f"{v}_url": self.url(post, paths[v]) for v in ("file", "sample", "jpeg", "preview")})
        return item

    def matching(self, tags: str) -> list[FakePost]:
        wanted = set(tags.split())
        return [p for p in self.posts if wanted <= set(p.tags)]

    def api_page(self, page: int, limit: int, tags: str) -> list[dict[str, Any]]:
        posts = self.matching(tags)[(page - 1) * limit: page * limit]
        return [self.api_post(p) for p in posts]

    def html_page(self, page: int, tags: str) -> str:
        visible = [p for p in self.matching(tags) if not p.deleted]
        posts = visible[(page - 1) * self.html_page_size: page * self.html_page_size]
        items = [self._li(p) for p in posts]
        if self.broken_markup and page == 1:
            items.append('<li id="p999999"><div class="inner"><a class="thumb" href="/post/show/999999"></a></div></li>')
            items.append('<li id="p999998"><a class="thumb" href="/post/show/999998"><img class="preview" alt="x"></a></li>')
        body = ('<ul id="post-list-posts">' + "\n".join(items) + "</ul>") if posts else (
            '<div id="post-list"><p>Nobody here but us chickens!</p></div>')
        nav = f'<div id="paginator"><a class="next_page" rel="next" href="/post?page={page + 1}">Next</a></div>'
        return f"<!DOCTYPE html><html><head><title>Fake Moebooru</title></head><body><div id='content'>{body}{nav}</div></body></html>"

    def _li(self, post: FakePost) -> str:
        paths = self.paths(post)
        w, h = post.size
        title = html.escape(f"Rating: {RATING_WORDS.get(post.rating, post.rating)} Score: {post.id % 50} "
                            f"Tags: {' '.join(post.tags)} User: tester")
        return (f'<li id="p{post.id}" class="creator-id-1 javascript-hide"><div class="inner" style="width: 150px;">'
                f'<a class="thumb" href="/post/show/{post.id}"><img src="{html.escape(self.url(post, paths["preview"]))}" '
                f'alt="{title}" class="preview" title="{title}" width="150" height="100"></a></div>'
                f'<a class="directlink largeimg" href="{html.escape(self.url(post, paths["file"]))}">'
                f'<span class="directlink-info">Image</span><span class="directlink-res">{w} x {h}</span></a></li>')

    def hit(self, path: str) -> int:
        with self._lock:
            self._hits[path] = self._hits.get(path, 0) + 1
            return self._hits[path]

    def requests_for(self, prefix: str) -> list[str]:
        return [path for path, _, _ in self.log if path.startswith(prefix)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real site behind a CDN
    server: "_Server"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        site = self.server.site
        parts = urlsplit(self.path)
        site.log.append((self.path, time.monotonic(), self.headers.get("User-Agent", "")))
        if site.latency:
            time.sleep(site.latency)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            self._route(site, parts.path, query)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True  # the client gave up (timeout test); nothing to do

    def _route(self, site: FakeMoebooru, path: str, query: dict[str, str]) -> None:
        if path in site.custom:
            return site.custom[path](self)
        if site.flavour == "html-site":
            return self._send(200, b"<html><body><h1>Welcome to my blog</h1></body></html>", "text/html")
        if path == "/robots.txt":
            if site.robots is None:
                return self._send(404, b"not found", "text/plain")
            return self._send(200, site.robots.encode(), "text/plain")
        if path == "/post.json":
            if site.flavour == "json-object":
                return self._send(200, b'{"success": false, "reason": "not here"}', "application/json")
            page, limit = int(query.get("page", 1)), min(int(query.get("limit", 16)), 100)
            return self._send(200, json.dumps(site.api_page(page, limit, query.get("tags", ""))).encode(), "application/json")
        if path == "/post":
            return self._send(200, site.html_page(int(query.get("page", 1)), query.get("tags", "")).encode(), "text/html; charset=utf-8")
        route = site._routes.get(path)
        if route is None:
            return self._send(404, b"not found", "text/plain")
        self._image(site, path, *route)

    def _image(self, site: FakeMoebooru, path: str, post: FakePost, variant: str) -> None:
        if site.image_delay:
            time.sleep(site.image_delay)
        hits = site.hit(path)
        body = site.variant_bytes(post, variant)
        ctype = "image/png" if body.startswith(b"\x89PNG") else "image/jpeg"
        if post.fault == "500-once" and hits == 1:
            return self._send(500, b"internal error", "text/plain")
        if post.fault == "redirect-localhost" and "hop=1" not in self.path:
            port = site.base_url.rsplit(":", 1)[1]
            return self._send(302, b"", "text/plain", {"Location": f"http://localhost:{port}{path}?hop=1"})
        if post.fault == "429-once" and hits == 1:
            return self._send(429, b"slow down", "text/plain", {"Retry-After": site.retry_after})
        if post.fault == "slow":
            time.sleep(site.slow_seconds)
        if post.fault == "html":
            body, ctype = b"<html><body>Please enable cookies.</body></html>" * 20, "image/jpeg"
        if post.fault == "huge":
            body, ctype = png_with_header_only(100_000, 100_000), "image/png"
        if post.fault == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(200, body, ctype)

    def _send(self, status: int, body: bytes, ctype: str, headers: Optional[dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: FakeMoebooru

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-answer is part of the tests, not an error


class MoebooruServer:
    """Runs a FakeMoebooru on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, site: FakeMoebooru) -> None:
        self.site = site
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.site = site
        site.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        site.build_routes()
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return self.site.base_url

    def __enter__(self) -> "MoebooruServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(posts: list[FakePost], **kwargs: Any) -> MoebooruServer:
    """`with serve(posts) as server:` -- a started server for one test."""
    return MoebooruServer(FakeMoebooru(posts, **kwargs))


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
