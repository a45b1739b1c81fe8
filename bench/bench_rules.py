"""Compare selection rules and settings on one checkpoint, over several seeds (docs/evaluate.md).

Each setting is a JSON object of generate params plus `rules`; for every seed the evaluate
stage's own code draws one pool of `count x oversample` candidates, lets each rule keep `count`
and judges the kept set (yardstick CNN trained on it, tested on the real test split; FD and
precision/recall in the all-real classifier's features). Prints mean ± std per rule and
writes all metrics to --out (JSON).

    .venv/bin/python bench/bench_rules.py --checkpoint runs/train/checkpoint.pt --seeds 3 --steps 500 \\
        --settings '{"default": {"rules": ["unranked", "filter", "topk", "drs", "mh"]},
                     "floor0": {"rules": ["filter"], "d_floor": 0}}'
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.evaluate.comparison import compare_rules, make_sampler, ranking_metrics
from pipeline.evaluate.yardstick import Judge, LabelledSet
from pipeline.generate.calibration import held_out_positions
from pipeline.shared.config import EvaluateParams, GenerateParams
from pipeline.shared.data import load_split
from pipeline.shared.progress import SILENT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/train/checkpoint.pt"))
    ap.add_argument("--real", type=Path, default=Path("data/crop"))
    ap.add_argument("--settings", required=True, help="JSON: {name: {rules: [...], <generate key>: value, ...}}")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0, help="first seed (pools and classifiers); pick settings on other "
                                                            "seeds than the evaluate stage's 0, 1, 2 to report them fairly")
    ap.add_argument("--out", type=Path, default=Path("bench/rules.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    device = torch.device("cpu")
    params = EvaluateParams(checkpoint=args.checkpoint, real=args.real, compare_count=args.count,
                            seeds=args.seeds, steps=args.steps, seed=args.seed, cache=None)
    test_images, test_labels, _, classes = load_split(args.real, "test")
    train_images, train_labels, _, _ = load_split(args.real, "train")
    held = held_out_positions(len(test_labels), GenerateParams().calibration_samples, GenerateParams().seed)
    test = LabelledSet(test_images, test_labels).take(np.setdiff1d(np.arange(len(test_labels)), held))
    # (drs/mh calibrate on `held`; it stays out of the test set here whatever the rules, so rows compare.)
    judge = Judge(params, test, len(classes), device, SILENT)
    started = time.perf_counter()
    acc_all = judge.fit_real_features(LabelledSet(train_images, train_labels), params.feature_steps, params.seed).get()
    print(f"all-real classifier: {acc_all:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name, setting in json.loads(args.settings).items():
        started = time.perf_counter()
        rules = setting.pop("rules")
        gen = GenerateParams(checkpoint=args.checkpoint, real=args.real, **setting)
        sampler = make_sampler(gen, len(classes), device)
        runs = [compare_rules(params, gen, rules, judge, sampler, args.count, params.seed + s, SILENT)
                for s in range(args.seeds)]
        ranking = ranking_metrics(rules, runs, gen)["ranking"]
        results[name] = {"setting": setting, **ranking}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        for rule in rules:
            r = ranking[rule]
            print(f"{name:24s} {rule:9s} CAS {r['cas']:.4f} ± {r['cas_std']:.4f}  P {r['precision']:.3f} ± "
                  f"{r['precision_std']:.3f}  R {r['recall']:.3f} ± {r['recall_std']:.3f}  FD {r['fd']:.2f}", flush=True)
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
