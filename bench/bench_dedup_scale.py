"""Across-image face dedup at scale: the hash-band index against the scan of every kept face it replaced.

`pipeline.crop.dedup.near_duplicates` on N source-image hashes (random 64-bit pHashes plus 2% reposts
within 0-4 bits of an earlier one, `dedup_hamming` 6, `same` always true so only the hash search is
timed), against the previous implementation (a vectorised XOR + popcount over all kept faces per
face, reproduced below) at sizes it finishes; its time at 100,000 is extrapolated from its
quadratic fit. Both must drop the same faces.

    flock /tmp/augment-cpu.lock .venv/bin/python bench/bench_dedup_scale.py
"""
from __future__ import annotations

import time

import numpy as np

from pipeline.crop.dedup import near_duplicates


def scan_all_kept(hashes: list[int], order: list[int], max_distance: int) -> set[int]:
    """The previous near_duplicates (same = always true): every face against all kept faces."""
    as_bytes = np.array(hashes, dtype=np.uint64).view(np.uint8).reshape(-1, 8)
    kept = np.empty_like(as_bytes)
    n = 0
    dropped: set[int] = set()
    for i in order:
        if n and (np.unpackbits(kept[:n] ^ as_bytes[i], axis=1).sum(axis=1) <= max_distance).any():
            dropped.add(i)
            continue
        kept[n] = as_bytes[i]
        n += 1
    return dropped


def hashes_with_reposts(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    hashes = [int(h) for h in rng.integers(0, 2 ** 63, n)]
    for i in rng.choice(np.arange(1, n), size=n // 50, replace=False):
        bits = rng.choice(64, size=int(rng.integers(0, 5)), replace=False)
        hashes[i] = hashes[int(rng.integers(0, i))] ^ sum(1 << int(b) for b in bits)
    return hashes


def timed(fn, *args) -> tuple[float, set[int]]:
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def main() -> None:
    rows = []
    old_points = []
    for n in (5_000, 10_000, 20_000, 100_000):
        hashes = hashes_with_reposts(n)
        order = list(range(n))
        t_new, new = timed(near_duplicates, hashes, order, 6)
        if n <= 20_000:
            t_old, old = timed(scan_all_kept, hashes, order, 6)
            assert new == old, "the index must drop exactly the faces the scan drops"
            old_points.append((n, t_old))
        else:
            a = np.polyfit([p[0] for p in old_points], [p[1] for p in old_points], 2)
            t_old = float(np.polyval(a, n))
        rows.append((n, len(new), t_new, t_old, n > 20_000))
    print("| faces | dropped | hash-band index (s) | scan of all kept (s) | ratio |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n, dropped, t_new, t_old, extrapolated in rows:
        old = f"{t_old:.0f} (quadratic fit)" if extrapolated else f"{t_old:.2f}"
        print(f"| {n:,} | {dropped:,} | {t_new:.2f} | {old} | {t_old / t_new:.0f}x |")


if __name__ == "__main__":
    main()
