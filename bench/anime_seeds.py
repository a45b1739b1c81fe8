"""Mean ± std over seeds of bench_anime.py runs: CAS, precision, recall, FD and each class's variety ratio.

    .venv/bin/python bench/anime_seeds.py bench/anime-run/s0 bench/anime-run/s1 bench/anime-run/s2

Each folder is a `--keep` of bench_anime.py (its evaluate.json). Prints a markdown table and
writes the same figures as JSON to --out (optional).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def stats(values: list[float]) -> str:
    a = np.asarray(values, np.float64)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ms = [json.loads((run / "evaluate.json").read_text()) for run in args.runs]
    rows: dict[str, list[float]] = {
        "CAS": [m["cas"] for m in ms],
        "precision": [m["fidelity"]["precision"] for m in ms],
        "recall": [m["fidelity"]["recall"] for m in ms],
        "FD": [m["fidelity"]["fd"] for m in ms],
        "lowest class variety (lower of pixel / MS-SSIM)": [m["variety_min_ratio"] for m in ms],
    }
    for cls in ms[0]["variety"]:
        rows[f"variety {cls}: pixel"] = [m["variety"][cls]["pixel_ratio"] for m in ms]
        rows[f"variety {cls}: MS-SSIM"] = [m["variety"][cls]["msssim_ratio"] for m in ms]
    print(f"| metric ({len(ms)} runs: {', '.join(str(r) for r in args.runs)}) | mean ± std | per run |")
    print("| --- | ---: | --- |")
    for name, values in rows.items():
        print(f"| {name} | {stats(values)} | {', '.join(f'{v:.3f}' for v in values)} |")
    if args.out:
        args.out.write_text(json.dumps({k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                                            "runs": v} for k, v in rows.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
