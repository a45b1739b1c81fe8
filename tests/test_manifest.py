"""The one manifest schema: round trip, validation, torn-line repair."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.shared.manifest import ManifestAppender, ManifestError, Record, class_names, parse_line, read_manifest, write_manifest


def test_round_trip_keeps_fields_and_drops_empty_ones(tmp_path: Path) -> None:
    records = [
        Record(file="shard-00000.npy", index=3, label="Bag", label_id=8, split="test"),
        Record(file="images/seed7.png", label=None, label_id=None, source="synthetic", score=1.5, seed=7, rank=1),
        Record(file="images/ab.jpg", md5="a" * 32, tags=["blue_hair", "smile"], source_url="http://x/y.jpg"),
    ]
    write_manifest(tmp_path / "m.jsonl", records)
    assert read_manifest(tmp_path / "m.jsonl") == records
    first = (tmp_path / "m.jsonl").read_text().splitlines()[0]
    assert '"score"' not in first and '"label":"Bag"' in first


@pytest.mark.parametrize("line,message", [
    ('{"file": "a.png", "split": "val"}', "split 'val'"),
    ('{"file": "/etc/passwd"}', "relative path"),
    ('{"file": "../../x.png"}', "relative path"),
    ('{"file": "a.png", "colour": 1}', "unknown manifest field 'colour'"),
    ('{"file": "a.png", "label": "x"}', "both set or both null"),
    ('[1, 2]', "not a JSON object"),
    ('{"label": null}', "no 'file'"),
    ('{"file": "s.npy", "index": "3"}', "index '3': Input should be a valid integer"),
    ('{"file": "a.png", "label": "x", "label_id": true}', "label_id True: Input should be a valid integer"),
    ('{"file": "a.png", "tags": ["smile", 2]}', "tags.1 2: Input should be a valid string"),
    ('{"file": "a.png", "score": "high"}', "score 'high'"),
])
def test_invalid_lines_are_rejected(line: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_line(line)


def test_appender_repairs_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_text(Record(file="a.png").to_json() + "\n" + '{"file": "b.pn')
    assert [r.file for r in read_manifest(path, tolerate_partial_tail=True)] == ["a.png"]
    with pytest.raises(ManifestError):
        read_manifest(path)
    with ManifestAppender(path) as app:
        app.append(Record(file="c.png"))
    assert [r.file for r in read_manifest(path)] == ["a.png", "c.png"]


def test_class_names_need_dense_consistent_ids() -> None:
    assert class_names([Record(file="a", label="y", label_id=1), Record(file="b", label="x", label_id=0)]) == ["x", "y"]
    with pytest.raises(ManifestError, match="0..K-1"):
        class_names([Record(file="a", label="y", label_id=2)])
    with pytest.raises(ManifestError, match="used for both"):
        class_names([Record(file="a", label="y", label_id=0), Record(file="b", label="z", label_id=0)])
