"""How much a test set of a given size can tell: confidence intervals and "too few" notes.

A crawl of a few hundred faces leaves a test split of a few dozen, after `generate` keeps
half of it back for calibration; with 30 test images an accuracy is known to about +-0.17, and a
class with 3 test images moves by 33 points per image. `evaluate` reports the interval and
leaves per-class numbers out where they would be noise, and says so in the metrics.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

# Below this many test images the 95% interval of an accuracy near 0.5 is wider than +-0.1.
MIN_TEST_IMAGES = 100
# Below this many test images of a class, one image moves its accuracy by 10 points or more.
MIN_PER_CLASS = 10


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy measured on n images (good for small n and p near 0/1)."""
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def reliability_report(test_labels: Sequence[int], classes: Sequence[str], cas: float,
                    per_class_accuracy: Sequence[float]) -> dict[str, Any]:
    """What the test set supports: CAS with its interval, per-class CAS where a class has enough
    test images (else null), the counts, and plain-language notes when it is too small."""
    counts = Counter(int(c) for c in test_labels)
    n = len(test_labels)
    low, high = wilson_interval(cas, n)
    per_class = {name: (round(float(per_class_accuracy[i]), 4) if counts[i] >= MIN_PER_CLASS else None)
                 for i, name in enumerate(classes)}
    notes = []
    if n < MIN_TEST_IMAGES:
        notes.append(f"only {n} test images: CAS {cas:.3f} lies anywhere in [{low:.3f}, {high:.3f}] (95%); "
                     f"use {MIN_TEST_IMAGES}+ (a larger crawl or crop.test_fraction) before comparing runs")
    small = [name for i, name in enumerate(classes) if counts[i] < MIN_PER_CLASS]
    if small:
        notes.append(f"{len(small)} classes have fewer than {MIN_PER_CLASS} test images ({', '.join(small)}): "
                     "their per-class CAS is left out (null)")
    return {"test_images_per_class": {name: counts[i] for i, name in enumerate(classes)},
            "cas_ci95": [round(low, 4), round(high, 4)], "per_class_cas": per_class,
            "enough_test_images": not notes, "notes": notes}
