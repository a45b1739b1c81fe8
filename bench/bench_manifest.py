"""Reading a manifest: pydantic's strict type check (this version) against the unchecked reader it replaced.

Writes a 70,000-line manifest like the Fashion-MNIST crawl's (shard, index, label, label_id,
split) plus face-crop fields, then reads it with `read_manifest` and with the previous reader
(json.loads, the dataclass constructor and the schema's own checks, no type checks), best of 3.

    .venv/bin/python bench/bench_manifest.py
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from pipeline.shared.manifest import Record, read_manifest, write_manifest


def unchecked_read(path: Path) -> list[Record]:
    """The reader before pydantic: any JSON value went into any field."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = Record(**json.loads(line))
            record.validate()
            out.append(record)
    return out


def best(fn, path: Path, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    records = [Record(file=f"shard-{i // 50000:05d}.npy", index=i % 50000, label=f"class{i % 10}", label_id=i % 10,
                      split="train" if i % 7 else "test", md5=f"{i:032x}", box=[1, 2, 30, 30], likelihood=0.98,
                      tags=["1girl", "solo", "blue_hair"]) for i in range(70_000)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.jsonl"
        write_manifest(path, records)
        assert read_manifest(path) == unchecked_read(path) == records
        new, old = best(read_manifest, path), best(unchecked_read, path)
    print(f"70,000 lines: read_manifest (pydantic strict) {new:.3f} s, unchecked reader {old:.3f} s, "
          f"ratio {new / old:.2f}x")


if __name__ == "__main__":
    main()
