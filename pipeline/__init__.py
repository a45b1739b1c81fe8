"""augment: crawl -> crop -> train -> generate -> export, as plain library functions."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_export(path: Any, **kwargs: Any) -> Any:
    """Load an exported synthetic dataset as a torch Dataset (see pipeline.export.export.load_export)."""
    from pipeline.export.export import load_export as _load

    return _load(path, **kwargs)
