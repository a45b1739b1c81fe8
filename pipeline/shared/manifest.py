"""The one manifest schema every stage reads and writes: JSON Lines, one object per image.

`file` is relative to the manifest's folder. For an image inside a uint8 array shard
(N x H x W x C `.npy`), `file` names the shard and `index` the row.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Literal, Optional

import pydantic

from pipeline.shared.errors import PipelineError
from pipeline.shared.io import atomic_path

MANIFEST_NAME = "manifest.jsonl"
SPLITS = ("train", "test")
SOURCES = ("real", "synthetic")


class ManifestError(PipelineError, ValueError):
    """A manifest line that does not follow the schema."""


@dataclass(slots=True)
class Record:
    file: str
    label: Optional[str] = None
    label_id: Optional[int] = None
    split: Literal["train", "test"] = "train"
    source: Literal["real", "synthetic"] = "real"
    index: Optional[int] = None
    # crawl
    md5: Optional[str] = None
    id: Optional[int] = None
    tags: Optional[list[str]] = None
    rating: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    source_url: Optional[str] = None
    # crop
    box: Optional[list[int]] = None
    likelihood: Optional[float] = None
    # generate
    score: Optional[float] = None
    seed: Optional[int] = None
    rank: Optional[int] = None
    # anything a stage wants to add without a schema change goes here
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict without empty optional fields (label and label_id are always kept)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("label", "label_id") or (value is not None and value != {}):
                out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        """A record from a parsed manifest object, every field's type checked strictly (`"index": "3"` is refused)."""
        return _record_from(data, json.dumps(data))

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise ManifestError(f"split {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.source not in SOURCES:
            raise ManifestError(f"source {self.source!r} is not one of {', '.join(SOURCES)}")
        check_file(self.file)
        if (self.label is None) != (self.label_id is None):
            raise ManifestError(f"{self.file}: label and label_id must be both set or both null")


_FIELD_NAMES = {f.name for f in dataclasses.fields(Record)}
# pydantic (as for params) checks the field types the dataclass only declares.
_ADAPTER = pydantic.TypeAdapter(Record)


def _record_from(data: dict[str, Any], line: str) -> Record:
    """`data` is `line` parsed: the schema's checks with their own messages, then pydantic's strict types."""
    unknown = set(data) - _FIELD_NAMES
    if unknown:
        raise ManifestError(f"unknown manifest field {sorted(unknown)[0]!r}")
    if not isinstance(data.get("file"), str) or not data["file"]:
        raise ManifestError("manifest line has no 'file'")
    try:
        record = _ADAPTER.validate_json(line, strict=True)   # JSON mode: an object, never a coerced "3"
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ManifestError(f"{where} {first['input']!r}: {first['msg']}") from None
    record.validate()
    return record


def check_file(file: str) -> None:
    """The schema's rule for `file`: a relative path that stays inside the manifest's folder."""
    if not isinstance(file, str) or not file or os.path.isabs(file) or ".." in Path(file).parts:
        raise ManifestError(f"file {file!r} must be a relative path inside the manifest's folder")


def path_inside(root: Path, file: str) -> Path:
    """`root / file` for a manifest's `file`, refused when it is absolute, climbs out with `..`,
    or resolves (through a link) outside `root`: a shared export must not read other local files."""
    check_file(file)
    path = Path(root) / file
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise ManifestError(f"file {file!r} resolves outside {root} (through a link); refusing to read it")
    return path


def parse_line(line: str) -> Record:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise ManifestError(f"not JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise ManifestError("manifest line is not a JSON object")
    return _record_from(data, line)


def iter_manifest(path: Path, *, tolerate_partial_tail: bool = False) -> Iterator[Record]:
    """Yield records; a torn last line (no newline, from a killed writer) is skipped when tolerated."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if not line.endswith("\n") and tolerate_partial_tail:
                return
            try:
                yield parse_line(line)
            except ManifestError as err:
                raise ManifestError(f"{path}:{lineno}: {err}") from None


def read_manifest(path: Path, **kwargs: Any) -> list[Record]:
    return list(iter_manifest(path, **kwargs))


def write_manifest(path: Path, records: Iterable[Record]) -> int:
    """Write all records atomically (temp file + fsync + rename); returns the count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.to_json() + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())  # one per manifest: the rename below never exposes an empty file after a crash
    return n


class ManifestAppender:
    """Appends records one at a time, each flushed and fsynced, for resumable stages.

    Call `repair()` first: it truncates a torn last line left by a killed process so that
    the file is always a sequence of complete lines.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh: IO[str] | None = None

    def repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)

    def append(self, record: Record) -> None:
        if self._fh is None:
            self.repair()
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(record.to_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ManifestAppender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def class_names(records: Iterable[Record]) -> list[str]:
    """Label names ordered by label_id; raises if ids are not 0..K-1 or names disagree."""
    by_id: dict[int, str] = {}
    for r in records:
        if r.label_id is None:
            continue
        if by_id.setdefault(r.label_id, r.label) != r.label:  # type: ignore[arg-type]
            raise ManifestError(f"label_id {r.label_id} is used for both {by_id[r.label_id]!r} and {r.label!r}")
    if sorted(by_id) != list(range(len(by_id))):
        raise ManifestError(f"label ids must be 0..K-1, found {sorted(by_id)}")
    return [by_id[i] for i in range(len(by_id))]
