"""The augmentation-gain protocol: real subset alone vs subset + export, by classifier steps and real share.

For each `fraction:share:steps` (share `real` = the subset alone) and each seed, the evaluate
stage's own code picks the class-stratified real subset and builds the mix (`yardstick.stratified_subset`,
`yardstick.augmented_mix`), trains the yardstick CNN and tests it on the real test split, as
`augment evaluate` does for its `gain` metrics. Prints mean ± std per row and writes --out (JSON).
docs/evaluate.md ("The augmentation gain needs a converged classifier too") has the table.

    .venv/bin/python bench/bench_gain.py --export data/export --real data/crop \\
        --rows 0.1:real:300 0.1:0.5:300 0.1:real:900 0.1:0.5:900 0.01:real:900 0.01:0.5:900
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.evaluate import evaluate as ev
from pipeline.evaluate.yardstick import LabelledSet, augmented_mix, stratified_subset
from pipeline.shared.classifier import TrainConfig, accuracy, predict, train_classifier
from pipeline.shared.data import load_split
from pipeline.shared.device import resolve_precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=Path("data/export"))
    ap.add_argument("--real", type=Path, default=Path("data/crop"))
    ap.add_argument("--rows", nargs="+", required=True, help="fraction:share:steps, share a number in (0, 1) or `real`")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/gain.json"))
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="the classifiers' precision, resolved as evaluate.precision is (auto: bf16 on CPUs with native bf16)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    precision = resolve_precision(args.precision, torch.device("cpu"), cpu_auto="bf16")
    export, classes, _ = ev.load_export_set(args.export)
    train_images, train_labels, _, _ = load_split(args.real, "train")
    test_images, test_labels, _, _ = load_split(args.real, "test")
    real, k = LabelledSet(train_images, train_labels), len(classes)
    results = {}
    for row in args.rows:
        fraction, share, steps = row.split(":")
        accs = []
        for seed in range(args.seeds):
            subset = real.take(stratified_subset(real.labels, float(fraction), seed + 19, k))
            data = subset if share == "real" else augmented_mix(subset, export, float(share))
            started = time.perf_counter()
            cfg = TrainConfig(steps=int(steps), seed=seed, precision=precision)
            model = train_classifier(data.images, torch.from_numpy(data.labels), k, cfg)
            accs.append(accuracy(predict(model, test_images), test_labels, k)[0])
            print(f"{row} seed {seed}: {accs[-1]:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
        results[row] = {"mean": round(float(np.mean(accs)), 4), "std": round(float(np.std(accs)), 4), "runs": accs}
        print(f"{row}: {results[row]['mean']:.4f} ± {results[row]['std']:.4f}", flush=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
