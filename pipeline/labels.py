"""Label assignment shared by the crop modes: from the source, from tags, or none.

A label is a class name; `label_id` is its index in the sorted class list, so ids are
always 0..K-1 after small classes are dropped or merged.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

from pipeline.config import CropParams


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
