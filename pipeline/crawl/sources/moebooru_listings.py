"""A Moebooru board's listings read into Posts: the post.json API, the HTML post list, and the URLs in them."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlencode, urljoin, urlsplit

from pipeline.crawl.sources.base import CrawlError
from pipeline.shared.config import CrawlParams

MD5_RE = re.compile(r"^[0-9a-f]{32}$")
VARIANT_FIELD = {"preview": "preview_url", "sample": "sample_url", "jpeg": "jpeg_url", "file": "file_url"}
URL_FIELDS = tuple(VARIANT_FIELD.values())
# Where Moebooru keeps each variant: /image/<md5>/..., /jpeg/<md5>/..., /sample/<md5>/..., /data/preview/../<md5>.jpg
PATH_VARIANT = {"image": "file", "jpeg": "jpeg", "sample": "sample", "preview": "preview"}
RATING_WORDS = {"safe": "s", "questionable": "q", "explicit": "e"}


@dataclass
class Post:
    """One post as either listing describes it; `url` is the resolved URL of the requested variant."""

    id: Optional[int]
    md5: str
    url: Optional[str]
    variant: str
    tags: list[str] = field(default_factory=list)
    rating: Optional[str] = None
    score: Optional[int] = None
    deleted: bool = False


def resolve(base_url: str, raw: Any) -> Optional[str]:
    """An absolute http(s) URL from an absolute, protocol-relative (//host/x) or site-relative one."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    url = urljoin(base_url.rstrip("/") + "/", raw.strip())
    return url if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc else None


def list_url(params: CrawlParams, page: int) -> str:
    base = params.base_url.rstrip("/")
    if params.mode == "api":
        return f"{base}/post.json?" + urlencode({"page": page, "limit": params.page_size, "tags": params.tags})
    return f"{base}/post?" + urlencode({"page": page, "tags": params.tags})


def post_from_api(item: dict[str, Any], params: CrawlParams) -> Post:
    tags = item.get("tags")
    url = resolve(params.base_url, item.get(VARIANT_FIELD[params.variant]))
    no_urls = not any(item.get(name) for name in URL_FIELDS)
    return Post(
        id=_int(item.get("id")),
        md5=str(item.get("md5") or "").lower(),
        url=url,
        variant=params.variant,
        tags=tags.split() if isinstance(tags, str) else [],
        rating=item.get("rating") if isinstance(item.get("rating"), str) else None,
        score=_int(item.get("score")),
        deleted=no_urls or item.get("status") == "deleted",
    )


def parse_api_page(body: bytes, url: str, first: bool) -> list[dict[str, Any]]:
    """The posts of one post.json page; raises CrawlError when it is not a Moebooru answer."""
    try:
        data = json.loads(body)
    except ValueError:
        raise CrawlError(f"{url} did not answer JSON; is this a Moebooru site?") from None
    if not isinstance(data, list):
        raise CrawlError(f"{url} answered a JSON {type(data).__name__}, not a list of posts; is this a Moebooru site?")
    posts = [item for item in data if isinstance(item, dict)]
    if first and data and not any("id" in p and "md5" in p for p in posts):
        raise CrawlError(f"{url} answered a list without Moebooru posts (no 'id'/'md5' fields)")
    return posts


def parse_html_page(html: bytes, params: CrawlParams, url: str) -> tuple[list[Post], int]:
    """Posts from one HTML list page, plus how many entries were unreadable (markup drift)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    listing = soup.select_one("ul#post-list-posts")
    if listing is None:
        if soup.select_one("#post-list") or soup.find(string=re.compile(r"Nobody here but us chickens")):
            return [], 0  # Moebooru's empty result page
        raise CrawlError(f"{url} has no post list (ul#post-list-posts); is this a Moebooru site?")
    posts, broken = [], 0
    for item in listing.find_all("li", recursive=False):
        post = _post_from_li(item, params)
        if post is None:
            broken += 1
        else:
            posts.append(post)
    return posts, broken


def _post_from_li(item: Any, params: CrawlParams) -> Optional[Post]:
    img = item.select_one("img.preview")
    src = resolve(params.base_url, img.get("src")) if img is not None else None
    if src is None:
        return None
    chosen, variant = src, "preview"
    if params.variant != "preview":
        # The list page links the large image too (a.directlink); use it when it is the variant asked for.
        for link in item.select("a.directlink"):
            href = resolve(params.base_url, link.get("href"))
            if href and _variant_of(href) == params.variant:
                chosen, variant = href, params.variant
                break
    text = str(img.get("title") or img.get("alt") or "")
    thumb = item.select_one("a.thumb") or img.find_parent("a")
    post_id = _int(_search(r"/post/show/(\d+)", str(thumb.get("href") or "") if thumb is not None else ""))
    if post_id is None:
        post_id = _int(_search(r"^p(\d+)$", str(item.get("id") or "")))
    rating_word = (_search(r"Rating:\s*(\w+)", text) or "").lower()
    tags = _search(r"Tags:\s*(.*?)\s*(?:User:|$)", text) or ""
    return Post(
        id=post_id,
        md5=_md5_from_url(chosen) or _md5_from_url(src) or "",
        url=chosen,
        variant=variant,
        tags=tags.split(),
        rating=RATING_WORDS.get(rating_word, rating_word[:1] or None),
        score=_int(_search(r"Score:\s*(-?\d+)", text)),
    )


def _variant_of(url: str) -> Optional[str]:
    segments = [s for s in urlsplit(url).path.split("/") if s]
    for segment in segments[:-1]:
        if segment in PATH_VARIANT:
            return PATH_VARIANT[segment]
    return None


def _md5_from_url(url: str) -> Optional[str]:
    """Moebooru puts the md5 in the path: /image/<md5>/name.png or /data/preview/ab/cd/<md5>.jpg."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    for segment in reversed(segments):
        stem = segment.rsplit(".", 1)[0].lower()
        if MD5_RE.match(stem):
            return stem
    return None


def _search(pattern: str, text: str) -> Optional[str]:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
