"""The anime route at a real size on this machine: loopback board of drawn faces -> evaluate.

Serves `--faces` drawn heads in hair-colour classes of unequal size (tests/face_board.py) on the
loopback Moebooru server, runs every stage with `augment` against a params file (the README
recipe's values plus the sizes below), and prints the wall time of each stage and the evaluate
headline; sample grids per epoch, metrics and the export card are copied to `--keep`.

    flock /tmp/augment-cpu.lock .venv/bin/python bench/bench_anime.py --faces 2000 --epochs 90 \\
        --diffaugment translation,cutout --set train.r1_gamma=1.0 --seed 0 --no-compare --keep bench/anime-run/r1nc-s0

`--style b` serves the second drawing style (tests/face_art_b.py); `--keep-crop DIR` keeps the
crop for `--crop DIR` in later runs (seeds, ablations) without crawling again. `--workdir DIR`
keeps the whole run folder (params.yaml, data/, runs/, metrics/) so one stage can be re-run there
(`cd DIR && augment evaluate --precision fp32`); `--readme-evaluate` keeps params.yaml's evaluate
values (the README recipe's) instead of the CPU-sized ones.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from face_board import FaceBoard, FaceBoardB, face_posts  # noqa: E402
from moebooru_server import MoebooruServer  # noqa: E402

SHARES = {"blonde": 0.28, "blue": 0.22, "pink": 0.17, "black": 0.13, "red": 0.08, "green": 0.07, "purple": 0.05}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=2000)
    ap.add_argument("--style", choices=("a", "b"), default="a",
                    help="drawing style of the served faces: a (tests/face_art.py) or b (tests/face_art_b.py)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--keep", type=Path, default=REPO / "bench" / "anime-run" / "s0")
    # 64 px RGB costs the evaluation classifiers ~4x a 32 px step: sized for a CPU run.
    ap.add_argument("--judge-steps", type=int, default=400)
    ap.add_argument("--eval-steps", type=int, default=300)
    ap.add_argument("--feature-steps", type=int, default=800)
    ap.add_argument("--fractions", type=float, nargs="*", default=[])
    ap.add_argument("--diffaugment", default="", help='train.diffaugment, e.g. "color,translation,cutout"')
    ap.add_argument("--ema-rampup", type=float, default=0.25, help="train.ema_rampup; 0 = off (the EMA of earlier releases)")
    ap.add_argument("--seed", type=int, default=0, help="train.seed and generate.seed (evaluate keeps its own seeds)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=YAML",
                    help="any other param, e.g. --set train.diffaugment_groups=true (repeatable)")
    ap.add_argument("--crop", type=Path, help="reuse this crop folder (from an earlier run's --keep-crop) instead of crawling")
    ap.add_argument("--keep-crop", type=Path, help="copy the crop folder here, for --crop in later runs")
    ap.add_argument("--no-compare", action="store_true", help="evaluate.compare_rankings false (faster)")
    ap.add_argument("--workdir", type=Path,
                    help="run in this (new or empty) folder and keep it, to re-run single stages there later")
    ap.add_argument("--readme-evaluate", action="store_true",
                    help="evaluate with params.yaml's own evaluate values (the README recipe), not the CPU sizes")
    args = ap.parse_args()
    if args.workdir and args.workdir.exists() and any(args.workdir.iterdir()):
        sys.exit(f"--workdir {args.workdir}: not empty; give a new or empty folder")
    hairs = {h: max(10, round(s * args.faces)) for h, s in SHARES.items()}
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    board = {"a": FaceBoard, "b": FaceBoardB}[args.style](face_posts(hairs, untagged=20))
    with tempfile.TemporaryDirectory() as tmp, MoebooruServer(board) as server:
        work = args.workdir.resolve() if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        params["crawl"].update(source="konachan", base_url=server.base_url, tags="1girl solo", max_images=10 ** 6,
                               variant="sample", delay=0.0, workers=4)
        params["crop"].update(mode="faces", size=64, label_from="tags", test_fraction=0.2, workers=0)
        params["train"].update(epochs=args.epochs, batch_size=64, g_channels=args.channels, d_channels=args.channels,
                               checkpoint_every=10 ** 6, judge_steps=args.judge_steps,
                               diffaugment=args.diffaugment, ema_rampup=args.ema_rampup or None,
                               lr_g=2e-4, lr_d=2e-4)   # the recipe's rate (the default is 4e-4 since issue 19's fourth round)
        params["train"]["seed"] = args.seed
        params["generate"].update(count=args.count, oversample=10, batch_size=500, seed=args.seed)
        if not args.readme_evaluate:
            params["evaluate"].update(compare_count=min(args.count, 2000), steps=args.eval_steps,
                                      feature_steps=args.feature_steps, gain_steps=args.eval_steps,
                                      fractions=args.fractions, feature_model="train")  # issue 17's feature space
        params["evaluate"]["compare_rankings"] = params["evaluate"]["compare_rankings"] and not args.no_compare
        for item in args.set:
            key, value = item.split("=", 1)
            section, name = key.split(".", 1)
            params[section][name] = yaml.safe_load(value)
        stages = ("crawl", "crop", "train", "generate", "export", "evaluate")
        if args.crop:
            shutil.copytree(args.crop, work / "data/crop")
            stages = stages[2:]
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        times = {}
        for stage in stages:
            started = time.perf_counter()
            proc = subprocess.run([str(Path(sys.executable).parent / "augment"), stage], cwd=work, env=env,
                                  capture_output=True, text=True)
            times[stage] = round(time.perf_counter() - started, 1)
            if proc.returncode:
                sys.exit(f"{stage} failed:\n{proc.stderr[-3000:]}")
            print(f"{stage}: {times[stage]} s", flush=True)
        if args.keep_crop:
            shutil.copytree(work / "data/crop", args.keep_crop, dirs_exist_ok=True)
        args.keep.mkdir(parents=True, exist_ok=True)
        grids = sorted((work / "runs/train/samples").glob("*.png"))
        grids = grids[::max(1, len(grids) // 4)] + grids[-1:]  # about five epochs' grids, the last included
        for src in [*dict.fromkeys(grids), work / "data/crop/preview.png",
                    work / "runs/train/losses.png", work / "data/generated/grid.png", work / "runs/evaluate/top.png"]:
            if src.exists():
                shutil.copy(src, args.keep / src.name)
        for name in ("crop", "train", "evaluate"):
            if (work / "metrics" / f"{name}.json").exists():
                shutil.copy(work / "metrics" / f"{name}.json", args.keep / f"{name}.json")
        (args.keep / "times.json").write_text(json.dumps({"faces_served": sum(hairs.values()) + 20, "classes": hairs,
                                                           "seconds": times}, indent=1))
        ev = json.loads((work / "metrics/evaluate.json").read_text())
        print(json.dumps({k: ev.get(k) for k in ("test_images", "cas", "cas_std", "cas_ci95", "real_accuracy",
                                                 "real_accuracy_all", "fidelity", "gain", "ranked_vs_unranked",
                                                 "per_class_cas", "variety", "variety_min_ratio", "notes",
                                                 "winner")}, indent=1))


if __name__ == "__main__":
    main()
