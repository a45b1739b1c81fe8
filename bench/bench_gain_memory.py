"""evaluate's peak memory from the gain arms: mixes built in evaluate's process vs in the workers (issue 19).

A gain arm trains on `augmented_mix(real subset, export, real_share)`: the export plus the subset
repeated to half the set. evaluate submits every arm before reading any result, so when the mixes
are built in evaluate's own process, every one of them (a copy of the export and as much again
of repeated real images) is held until a worker takes it. `Judge.fit_mix` sends the subset and the
export instead and builds the mix in the worker. Each way runs in a fresh process on the anime
route's shape (64 px RGB, an export of `--export` images, 1,492 real training faces, 2 fractions
x 3 seeds = 6 arms, 2 classifier steps each: the memory, not the training, is measured) and
reports the growth of that process's peak RSS over the data it starts with.

    .venv/bin/python bench/bench_gain_memory.py --export 10000
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluate.yardstick import Judge, LabelledSet, augmented_mix, stratified_subset  # noqa: E402
from pipeline.shared.config import EvaluateParams  # noqa: E402
from pipeline.shared.progress import SILENT  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_way(way: str, n_export: int, size: int) -> dict:
    rng = np.random.default_rng(0)

    def labelled(n: int) -> LabelledSet:
        return LabelledSet(torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)),
                           rng.integers(0, 7, n).astype(np.int64))
    export, real, test = labelled(n_export), labelled(1492), labelled(372)
    params = EvaluateParams(cache=None, gain_steps=2, steps=2)
    start = peak_mib()
    with Judge(params, test, 7, torch.device("cpu"), SILENT, workers=2) as judge:
        arms = []
        for seed in range(3):
            for fraction in (0.01, 0.1):
                subset = real.take(stratified_subset(real.labels, fraction, seed, 7))
                if way == "main":
                    arms.append(judge.fit(augmented_mix(subset, export, params.real_share), params.gain_steps, seed=seed))
                else:
                    arms.append(judge.fit_mix(subset, export, params.real_share, params.gain_steps, seed=seed))
        accs = [a.get()[0] for a in arms]
    return {"way": way, "start_mib": round(start), "peak_mib": round(peak_mib()), "growth_mib": round(peak_mib() - start),
            "accuracies": [round(a, 4) for a in accs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=int, default=10000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--way", choices=["main", "worker"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.way:
        print(json.dumps(one_way(args.way, args.export, args.size)))
        return
    rows = []
    for way in ("main", "worker"):
        out = subprocess.run([sys.executable, __file__, "--export", str(args.export), "--size", str(args.size),
                              "--way", way], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    mix_mib = args.export * 3 * args.size ** 2 * 2 / 2 ** 20
    print(f"# 6 gain arms, export {args.export} x 3 x {args.size} x {args.size} uint8 (one mix ~{mix_mib:.0f} MiB)\n")
    print("| mixes built in | peak RSS before the arms (MiB) | peak RSS after (MiB) | growth (MiB) |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {'evaluate (before)' if r['way'] == 'main' else 'the workers (now)'} | {r['start_mib']} | "
              f"{r['peak_mib']} | {r['growth_mib']} |")
    same = rows[0]["accuracies"] == rows[1]["accuracies"]
    print(f"\nsame accuracies both ways: {same} ({rows[0]['accuracies']})")


if __name__ == "__main__":
    main()
