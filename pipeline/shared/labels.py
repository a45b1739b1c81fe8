"""Labels and class names: from the source, from tags, or none; settling the classes; class folder names.

A label is a class name; `label_id` is its index in the sorted class list, so ids are
always 0..K-1 after small classes are dropped or merged.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Optional, Sequence

from pipeline.shared.config import CropParams


def label_from_tags(tags: Sequence[str] | None, params: CropParams) -> Optional[str]:
    """The mapped label of a post's tags; None means 'drop' under the 'drop' policy."""
    found = {params.tag_labels[t] for t in (tags or ()) if t in params.tag_labels}
    if len(found) == 1:
        return found.pop()
    return params.other_label if params.tag_policy == "other" else None


def settle_classes(
    labels: Sequence[Optional[str]], params: CropParams, order: Sequence[str] | None = None
) -> tuple[list[Optional[str]], list[str]]:
    """Apply min_class_count (drop or merge small classes); return final labels and the classes.

    Classes keep the source's `order` when given (so Fashion-MNIST ids stay the usual ones),
    else they are sorted by name. A label of None for an input that had one means 'drop'.
    """
    counts = Counter(label for label in labels if label is not None)
    small = {name for name, n in counts.items() if n < params.min_class_count}
    settled: list[Optional[str]] = []
    for label in labels:
        if label in small:
            label = params.other_label if params.small_classes == "merge" else None
        settled.append(label)
    present = {label for label in settled if label is not None}
    ranked = [name for name in (order or ()) if name in present]
    classes = ranked + sorted(present - set(ranked))
    return settled, classes


def safe_name(label: str | None) -> str:
    """A folder name from a label: no separators, no dots at the start, never empty."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", label or "unlabelled").strip("._") or "class"
    return name[:64]


def class_dirs(classes: list[str]) -> list[str]:
    """One folder per class whose sorted order is the label order: `<id>_<safe label>`.

    torchvision's ImageFolder numbers classes by sorted folder name, so `0_T-shirt_top`,
    `1_Trouser`, ... (ids zero-padded to one width when there are 10+ classes) give a job that
    has never heard of this package the same label ids as the manifest and the source data.
    """
    if not classes:
        return [safe_name(None)]
    width = len(str(len(classes) - 1))
    return [f"{i:0{width}d}_{safe_name(label)}" for i, label in enumerate(classes)]
