"""What an HTTP request of the crawler ends in: a Page in memory, a Download on disk, or an HttpError."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional


class HttpError(RuntimeError):
    """A request that failed for good; `reason` is a short code fit for counting."""

    def __init__(self, url: str, reason: str, status: Optional[int] = None, detail: str = "") -> None:
        self.url, self.reason, self.status, self.detail = url, reason, status, detail
        super().__init__(f"{url}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Download:
    """A complete body on disk (`path` is a `.part` file the caller must rename or delete)."""

    url: str
    path: Path
    size: int
    md5: str
    content_type: str


@dataclass(frozen=True)
class Page:
    """A whole (capped) body read into memory: a list page or robots.txt."""

    url: str
    status: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    truncated: bool = False   # cut at the cap (only when the caller allowed that)

    @property
    def text(self) -> str:
        return self.content.decode(_charset(self.headers.get("Content-Type", "")) or "utf-8", errors="replace")


def _charset(content_type: str) -> Optional[str]:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            with contextlib.suppress(LookupError):
                import codecs

                return codecs.lookup(value.strip('"')).name
    return None
