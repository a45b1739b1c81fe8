"""Progress reporting that library code calls and the CLI layer renders.

Library functions take a `Progress` and never print; `stages` passes a rich-backed one,
tests pass nothing (the silent default).
"""
from __future__ import annotations

from typing import Any


class Progress:
    """Silent base: `start` a named task, `advance` it (with optional counters), `finish` it."""

    def start(self, name: str, total: int | None = None, description: str = "") -> None:
        pass

    def advance(self, name: str, n: int = 1, **counters: Any) -> None:
        pass

    def finish(self, name: str) -> None:
        pass


SILENT = Progress()
