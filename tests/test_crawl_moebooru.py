"""The Moebooru crawler against a real local HTTP server (tests/moebooru_server.py); no internet, no mocks."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.crawl.crawl import run
from pipeline.crawl.http import HttpClient, parse_retry_after
from pipeline.crawl.responses import HttpError
from pipeline.crawl.sources.base import CrawlError
from pipeline.crawl.sources.moebooru import client_for, crawl_moebooru
from pipeline.crawl.sources.moebooru_listings import resolve
from pipeline.shared.config import CrawlParams
from pipeline.shared.manifest import read_manifest
from stages.cli import app

try:  # pytest puts tests/ on sys.path (rootdir-relative layout without __init__.py)
    from moebooru_server import FakePost, closed_port, serve
except ImportError:  # tests/ is a package
    from tests.moebooru_server import FakePost, closed_port, serve

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(60)


class FakeClock:
    """A monotonic clock that only moves when someone sleeps: waits are recorded, not spent."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def params_for(server: Any, out: Path, **overrides: Any) -> CrawlParams:
    values: dict[str, Any] = dict(source="konachan", base_url=server.base_url, out=out, delay=0, timeout=2, retries=2,
                                  page_size=5, variant="file", workers=2)
    values.update(overrides)
    return CrawlParams(**values)


def crawl(server: Any, out: Path, clock: FakeClock | None = None, **overrides: Any):
    params = params_for(server, out, **overrides)
    clock = clock or FakeClock()
    with client_for(params, clock=clock, sleep=clock.sleep, jitter=lambda: 0.5) as client:
        return crawl_moebooru(params, client=client)


def manifest_md5s(out: Path) -> list[str]:
    return [r.md5 for r in read_manifest(out / "manifest.jsonl")] if (out / "manifest.jsonl").exists() else []


def assert_consistent(out: Path, check_md5: bool = True) -> list[str]:
    """images/ and the manifest name the same complete files, each once; returns the md5s."""
    records = read_manifest(out / "manifest.jsonl")
    md5s = [r.md5 for r in records]
    assert len(md5s) == len(set(md5s)), "an md5 appears twice in the manifest"
    files = {p.name for p in (out / "images").iterdir()}
    assert files == {Path(r.file).name for r in records}, "images/ and manifest.jsonl disagree"
    for r in records:
        data = (out / r.file).read_bytes()
        assert r.file == f"images/{r.md5}.{r.file.rsplit('.', 1)[1]}"
        if check_md5:
            assert hashlib.md5(data).hexdigest() == r.md5
    return md5s


def failure_reasons(out: Path) -> dict[Any, str]:
    lines = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    return {line["id"]: line["reason"] for line in lines}


def plain_posts(n: int, start: int = 1) -> list[FakePost]:
    styles = ("absolute", "protocol", "relative")
    return [FakePost(i, url_style=styles[i % 3], fmt="PNG" if i % 2 else "JPEG") for i in range(start, start + n)]


# -- modes, pagination, URLs --------------------------------------------------------------


def test_api_mode_pages_to_the_end_and_resolves_every_url_style(tmp_path: Path) -> None:
    with serve(plain_posts(12)) as server:
        summary = crawl(server, tmp_path)
        page_requests = server.site.requests_for("/post.json")
        agents = {agent for _, _, agent in server.site.log}
    assert summary.kept == summary.new == 12 and summary.failed == 0
    assert len(page_requests) == 3  # 5 + 5 + 2: the short third page is the last one
    assert all("limit=5" in path for path in page_requests)
    assert agents == {CrawlParams().user_agent}
    assert_consistent(tmp_path)
    record = read_manifest(tmp_path / "manifest.jsonl")[0]
    assert record.tags == ["1girl", "blue_hair"] and record.rating == "s" and record.label is None
    assert record.width == 48 and record.height == 40 and record.source_url.startswith("http://127.0.0.1:")
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["complete"] and meta["params"]["variant"] == "file" and meta["counts"]["kept"] == 12


def test_api_mode_stops_at_an_empty_page(tmp_path: Path) -> None:
    with serve(plain_posts(10)) as server:
        summary = crawl(server, tmp_path)
        assert len(server.site.requests_for("/post.json")) == 3  # two full pages, then an empty one
    assert summary.kept == 10


def test_url_resolution() -> None:
    base = "https://konachan.net"
    assert resolve(base, "https://a.b/x.jpg") == "https://a.b/x.jpg"
    assert resolve(base, "//c.d/x.jpg") == "https://c.d/x.jpg"
    assert resolve(base, "/data/x.jpg") == "https://konachan.net/data/x.jpg"
    assert resolve(base, "data/x.jpg") == "https://konachan.net/data/x.jpg"
    assert resolve(base, "javascript:alert(1)") is None and resolve(base, None) is None


def test_html_mode_parses_the_post_list(tmp_path: Path) -> None:
    posts = plain_posts(9) + [FakePost(50, rating="q", tags=["solo", "red_hair"])]
    with serve(posts, broken_markup=True) as server:
        summary = crawl(server, tmp_path, mode="html", rating=["s", "q"])
        assert len(server.site.requests_for("/post?")) == 4  # 3 pages of 4, 4, 2 posts, then the empty page
        assert not server.site.requests_for("/data/preview")  # variant=file: the page's direct link is used
    assert summary.kept == 10
    assert summary.counters["skip reasons"]["unreadable markup"] == 2  # an li without img, an img without src
    assert_consistent(tmp_path)
    by_id = {r.id: r for r in read_manifest(tmp_path / "manifest.jsonl")}
    assert by_id[50].rating == "q" and by_id[50].tags == ["solo", "red_hair"]


def test_html_mode_preview_variant(tmp_path: Path) -> None:
    with serve(plain_posts(3)) as server:
        summary = crawl(server, tmp_path, mode="html", variant="preview")
        assert len(server.site.requests_for("/data/preview")) == 3
    assert summary.kept == 3
    assert all(r.file.endswith(".jpg") and r.width == 24 for r in read_manifest(tmp_path / "manifest.jsonl"))


# -- retries and faults -------------------------------------------------------------------


def test_500_then_success(tmp_path: Path) -> None:
    with serve([FakePost(1, fault="500-once"), FakePost(2)]) as server:
        clock = FakeClock()
        summary = crawl(server, tmp_path, clock=clock)
        assert len(server.site.requests_for("/image/")) == 3
    assert summary.kept == 2 and summary.failed == 0
    assert clock.sleeps == [pytest.approx(1.0)]  # one backoff: base 1 s x (0.5 + jitter 0.5)


def test_429_honours_retry_after(tmp_path: Path) -> None:
    with serve([FakePost(1, fault="429-once")], retry_after="7") as server:
        clock = FakeClock()
        summary = crawl(server, tmp_path, clock=clock)
    assert summary.kept == 1
    assert clock.sleeps == [pytest.approx(7.0)]


def test_retry_after_forms() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=lambda: 1445412480.0) == pytest.approx(10)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_slow_response_times_out(tmp_path: Path) -> None:
    with serve([FakePost(1, fault="slow"), FakePost(2)], slow_seconds=1.5) as server:
        started = time.monotonic()
        summary = crawl(server, tmp_path, timeout=0.3, retries=1)
        assert time.monotonic() - started < 1.5
    assert summary.kept == 1 and summary.failed == 1
    assert failure_reasons(tmp_path) == {1: "timeout"}


def test_truncated_body_is_discarded(tmp_path: Path) -> None:
    with serve([FakePost(1, fault="truncated", size=(200, 200)), FakePost(2)]) as server:
        summary = crawl(server, tmp_path)
        assert len(server.site.requests_for("/image/")) == 1 + 3  # retried, as a dropped connection would be
    assert summary.failed == 1 and failure_reasons(tmp_path) == {1: "truncated"}
    assert_consistent(tmp_path)


@pytest.mark.parametrize(("fault", "reason"), [("wrong-md5", "md5 mismatch"), ("html", "not an image"), ("huge", "too many pixels")])
def test_bad_bytes_are_discarded_and_counted(tmp_path: Path, fault: str, reason: str) -> None:
    with serve([FakePost(1, fault=fault), FakePost(2)]) as server:
        summary = crawl(server, tmp_path)
        assert len(server.site.requests_for("/image/")) == 2  # final answers: not retried
    assert summary.kept == 1 and summary.failed == 1
    assert failure_reasons(tmp_path) == {1: reason}
    assert summary.counters["failure reasons"] == {reason: 1}
    assert_consistent(tmp_path)


def test_pixel_cap_is_checked_from_the_header(tmp_path: Path) -> None:
    with serve([FakePost(1, size=(300, 200)), FakePost(2)]) as server:
        summary = crawl(server, tmp_path, max_pixels=10_000)
    assert summary.kept == 1 and failure_reasons(tmp_path) == {1: "too many pixels"}


def test_byte_cap(tmp_path: Path) -> None:
    with serve([FakePost(1, size=(400, 400), noise=True), FakePost(2)]) as server:
        summary = crawl(server, tmp_path, max_bytes=50_000)
    assert summary.kept == 1 and failure_reasons(tmp_path) == {1: "too large"}


def test_md5_is_only_checked_for_the_original_file(tmp_path: Path) -> None:
    with serve([FakePost(1, fault="wrong-md5")]) as server:
        summary = crawl(server, tmp_path, variant="sample")
    assert summary.kept == 1
    assert_consistent(tmp_path, check_md5=False)


def test_404_is_final(tmp_path: Path) -> None:
    with serve([]) as server, HttpClient(user_agent="t", retries=3, delay=0, sleep=lambda s: None) as client:
        with pytest.raises(HttpError) as err:
            client.get(server.base_url + "/nothing")
        assert err.value.reason == "http 404" and len(server.site.requests_for("/nothing")) == 1


# -- what is skipped ----------------------------------------------------------------------


def test_duplicates_rating_deleted_and_hostile_md5_are_skipped(tmp_path: Path) -> None:
    posts = plain_posts(6) + [
        FakePost(20, image_of=2), FakePost(21, image_of=5),         # same bytes, later pages
        FakePost(22, rating="e"), FakePost(23, rating="q"), FakePost(24, deleted=True),
        FakePost(25, md5="../../x"), FakePost(26, md5="/etc/passwd"),
    ]
    with serve(posts) as server:
        summary = crawl(server, tmp_path, page_size=4)
        downloaded = server.site.requests_for("/image/")
    assert summary.kept == 6 and len(downloaded) == 6
    assert summary.counters["skip reasons"] == {"duplicate": 2, "rating": 2, "deleted": 1, "invalid md5": 2}
    assert_consistent(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failures.jsonl", "images", "manifest.jsonl", "meta.json"]
    assert not (tmp_path.parent / "x").exists()


def test_html_mode_hostile_names(tmp_path: Path) -> None:
    with serve([FakePost(1, md5="../../x"), FakePost(2)]) as server:
        summary = crawl(server, tmp_path, mode="html")
    assert summary.kept == 1 and summary.counters["skip reasons"] == {"invalid md5": 1}
    assert_consistent(tmp_path)


def test_a_second_run_downloads_nothing_again(tmp_path: Path) -> None:
    with serve(plain_posts(7)) as server:
        crawl(server, tmp_path)
        before = len(server.site.requests_for("/image/"))
        again = crawl(server, tmp_path)
        assert len(server.site.requests_for("/image/")) == before
    assert again.kept == 7 and again.new == 0 and again.due == 0 and again.ok
    assert again.counters["skip reasons"] == {"already kept": 7}


def test_limits(tmp_path: Path) -> None:
    with serve(plain_posts(20)) as server:
        assert crawl(server, tmp_path / "a", max_images=7).kept == 7
        assert crawl(server, tmp_path / "a", max_images=9).kept == 9  # the limit counts what the folder holds
        pages = crawl(server, tmp_path / "b", pages=2, start_page=2)
    assert pages.kept == 10 and pages.counters["pages"] == 2
    assert_consistent(tmp_path / "a")


# -- robots.txt and politeness ------------------------------------------------------------


def test_robots_disallowing_the_api_stops_the_crawl(tmp_path: Path) -> None:
    with serve(plain_posts(2), robots="User-agent: *\nDisallow: /post.json\n") as server:
        with pytest.raises(CrawlError, match="robots.txt"):
            crawl(server, tmp_path)
        assert not server.site.requests_for("/post.json")
        assert crawl(server, tmp_path / "x", respect_robots=False).kept == 2


def test_robots_disallowing_images_skips_them(tmp_path: Path) -> None:
    robots = "User-agent: Googlebot\nDisallow: /\n\nUser-agent: augment\nDisallow: /image/\n"
    with serve(plain_posts(3), robots=robots) as server:
        summary = crawl(server, tmp_path)
        assert not server.site.requests_for("/image/")
    assert summary.kept == 0 and summary.counters["skip reasons"] == {"robots.txt": 3} and summary.ok


def test_an_unreachable_image_host_is_asked_once(tmp_path: Path) -> None:
    posts = [FakePost(i, url_style="elsewhere") for i in range(1, 4)] + [FakePost(9)]
    with serve(posts) as server:
        server.site.elsewhere = f"http://127.0.0.1:{closed_port()}"
        summary = crawl(server, tmp_path, retries=1)
    # the first post finds the host unreachable; the remembered "disallow all" refuses the others at once
    assert summary.kept == 1 and summary.counters["skip reasons"] == {"robots.txt unreachable": 1, "robots.txt": 2}


def test_crawl_delay_in_robots_is_a_floor(tmp_path: Path) -> None:
    with serve(plain_posts(3), robots="User-agent: *\nCrawl-delay: 3\n") as server:
        clock = FakeClock()
        crawl(server, tmp_path, clock=clock, workers=1)
    assert clock.now >= 3 * 4 - 3  # robots + 1 page + 3 images, 3 s apart


def test_min_interval_is_shared_by_threads() -> None:
    clock = FakeClock()
    client = HttpClient(user_agent="t", delay=0.5, clock=clock, sleep=clock.sleep)
    waits: list[float] = []
    threads = [threading.Thread(target=lambda: waits.extend(client.reserve("h") for _ in range(5))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([0.5 * i for i in range(20)])  # one slot each, none shared
    assert client.reserve("other-host") == 0


def test_min_interval_holds_on_the_wire(tmp_path: Path) -> None:
    with serve(plain_posts(6)) as server:
        crawl_params = params_for(server, tmp_path, delay=0.05, workers=4)
        crawl_moebooru(crawl_params)
        times = sorted(t for _, t, _ in server.site.log)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    # Slots are reserved 50 ms apart; thread wake-up jitter on a busy machine may shift one request, not the pace.
    assert times[-1] - times[0] >= 0.9 * 0.05 * len(gaps) and gaps[len(gaps) // 2] >= 0.045


# -- resume -------------------------------------------------------------------------------


def test_resume_repairs_the_folder(tmp_path: Path) -> None:
    with serve(plain_posts(8)) as server:
        crawl(server, tmp_path)
        manifest = tmp_path / "manifest.jsonl"
        lines = manifest.read_text().splitlines(keepends=True)
        records = read_manifest(manifest)
        (tmp_path / records[0].file).unlink()                     # a line whose file is gone
        orphan = records[1]                                       # a file whose line never got written
        (tmp_path / "images" / ".abc.part").write_bytes(b"half")  # a download cut short
        # the orphan's line is torn (kill mid-write) and another line is repeated
        manifest.write_text("".join(lines[:1] + lines[2:] + [lines[2]]) + lines[1][:20])
        server.site.log.clear()
        summary = crawl(server, tmp_path)
        fetched = server.site.requests_for("/image/")
    assert assert_consistent(tmp_path) and summary.kept == 8
    assert len(fetched) == 1 and records[0].md5 in fetched[0]  # only the lost file; the orphan was adopted
    assert orphan.md5 in manifest_md5s(tmp_path) and summary.counters["adopted from an earlier run"] == 1


def test_unmet_orphans_are_removed(tmp_path: Path) -> None:
    with serve(plain_posts(3)) as server:
        crawl(server, tmp_path)
        stray = tmp_path / "images" / ("0" * 32 + ".png")
        stray.write_bytes((tmp_path / read_manifest(tmp_path / "manifest.jsonl")[0].file).read_bytes())
        (tmp_path / "images" / "notes.txt").write_text("not ours")
        crawl(server, tmp_path)
    assert not stray.exists() and assert_consistent(tmp_path)


def test_a_folder_keeps_one_variant(tmp_path: Path) -> None:
    with serve(plain_posts(2)) as server:
        crawl(server, tmp_path)
        with pytest.raises(CrawlError, match="variant"):
            crawl(server, tmp_path, variant="sample")


# -- the CLI ------------------------------------------------------------------------------


def write_params(path: Path, base_url: str, out: Path, **extra: Any) -> Path:
    crawl_section = {"source": "konachan", "base_url": base_url, "out": str(out), "delay": 0, "timeout": 2,
                     "retries": 0, "page_size": 5, "variant": "file", "workers": 2, **extra}
    path.write_text(yaml.safe_dump({"crawl": crawl_section}))
    return path


def test_cli_unreachable_site(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", f"http://127.0.0.1:{closed_port()}", tmp_path / "out")
    result = CliRunner().invoke(app, ["crawl", "--params", str(params)])
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:" in " ".join(result.output.split())


@pytest.mark.parametrize("flavour", ["html-site", "json-object"])
def test_cli_not_a_moebooru_site(tmp_path: Path, flavour: str) -> None:
    with serve([], flavour=flavour, robots=None) as server:
        params = write_params(tmp_path / "params.yaml", server.base_url, tmp_path / "out")
        result = CliRunner().invoke(app, ["crawl", "--params", str(params)])
    assert result.exit_code == 1
    assert "Moebooru" in result.output and server.base_url in " ".join(result.output.split())


def test_cli_success_through_run(tmp_path: Path) -> None:
    with serve(plain_posts(3)) as server:
        params = write_params(tmp_path / "params.yaml", server.base_url, tmp_path / "out")
        result = CliRunner().invoke(app, ["crawl", "--params", str(params), "--mode", "html", "--rating", "s,q"])
    assert result.exit_code == 0, result.output
    assert len(manifest_md5s(tmp_path / "out")) == 3


def test_run_dispatches_to_moebooru(tmp_path: Path) -> None:
    with serve(plain_posts(2)) as server:
        assert run(params_for(server, tmp_path)).kept == 2


def test_kill_mid_crawl_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    posts = plain_posts(24)
    with serve(posts, image_delay=0.1) as server:
        params = write_params(tmp_path / "params.yaml", server.base_url, out)
        argv = [sys.executable, "-m", "pipeline", "crawl", "--params", str(params)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 40
            while len(manifest_md5s(out)) < 5 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, f"the crawl ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        first = set(manifest_md5s(out))
        assert 5 <= len(first) < 24
        requests_before = len(server.site.log)
        server.site.image_delay = 0
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        second = [path for path, _, _ in server.site.log[requests_before:] if path.startswith("/image/")]
        expected = {server.site.md5_of(p) for p in posts}
    assert set(assert_consistent(out)) == expected
    assert not any(md5 in path for md5 in first for path in second)  # nothing kept before is fetched again
    assert len(second) == len(set(second)) <= 24 - len(first)  # each missing file once (an adopted orphan not at all)
