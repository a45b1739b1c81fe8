"""evaluate says when the test set is too small for its numbers to mean anything (issue 10)."""
from __future__ import annotations

from pipeline.evaluate.reliability import MIN_PER_CLASS, reliability_report, wilson_interval


def test_wilson_interval_narrows_with_more_images() -> None:
    lo, hi = wilson_interval(0.5, 30)
    assert 0.31 < lo < 0.34 and 0.66 < hi < 0.69
    lo, hi = wilson_interval(0.5, 10_000)
    assert hi - lo < 0.02
    assert wilson_interval(1.0, 5)[1] == 1.0 and wilson_interval(1.0, 5)[0] < 0.6


def test_small_test_sets_are_flagged_and_small_classes_left_out() -> None:
    labels = [0] * 20 + [1] * 3 + [2] * 12
    report = reliability_report(labels, ["blonde", "blue", "pink"], 0.6, [0.7, 0.33, 0.5])
    assert report["test_images_per_class"] == {"blonde": 20, "blue": 3, "pink": 12}
    assert report["per_class_cas"] == {"blonde": 0.7, "blue": None, "pink": 0.5}
    assert not report["enough_test_images"]
    assert "only 35 test images" in report["notes"][0] and "blue" in report["notes"][1]
    big = reliability_report([0] * 300 + [1] * 300, ["a", "b"], 0.9, [0.9, 0.9])
    assert big["enough_test_images"] and big["notes"] == [] and big["per_class_cas"] == {"a": 0.9, "b": 0.9}
    assert 3 < MIN_PER_CLASS <= 12
