"""Does bf16 autocast hurt the GAN? Same seed, same data, fp32 vs bf16, side by side.

Trains the default model twice on the same crop output (only `train.precision` differs),
then for each: ranked generation, export, and `augment evaluate` without the ranking
comparison. Prints losses, speed and the evaluation numbers in one table.

    .venv/bin/python bench/bench_bf16.py --crop data/crop --epochs 2 --count 5000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluate import evaluate  # noqa: E402
from pipeline.export import export  # noqa: E402
from pipeline.generate import generate  # noqa: E402
from pipeline.shared.config import load_section  # noqa: E402
from pipeline.train import train  # noqa: E402


def one_run(workdir: Path, crop: Path, precision: str, args: argparse.Namespace) -> dict:
    base = Path(args.params)
    started = time.perf_counter()
    summary = train.run(load_section(base, "train", {"input": crop, "out": workdir / "train", "epochs": args.epochs,
                                                    "metrics": workdir / "train.json", "precision": precision}))
    train_seconds = time.perf_counter() - started
    generate.run(load_section(base, "generate", {"checkpoint": workdir / "train" / "checkpoint.pt", "out": workdir / "gen",
                                                "count": args.count, "precision": precision, "real": crop}))
    export.run(load_section(base, "export", {"input": workdir / "gen", "out": workdir / "export", "real": crop}))
    result = evaluate.run(load_section(base, "evaluate", {"export": workdir / "export", "real": crop,
                                                         "checkpoint": workdir / "train" / "checkpoint.pt",
                                                         "out": workdir / "eval", "metrics": workdir / "eval.json",
                                                         "compare_rankings": False}))
    m = result.metrics
    return {"loss_d": summary.metrics["loss_d"], "loss_g": summary.metrics["loss_g"],
            "img/s": summary.metrics["images_per_second"], "train s": round(train_seconds),
            "CAS": m.get("cas"), "real acc": m.get("real_accuracy"), "FD": m.get("fidelity", {}).get("fd"),
            "precision": m.get("fidelity", {}).get("precision"), "recall": m.get("fidelity", {}).get("recall")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crop", type=Path, default=Path("data/crop"))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--count", type=int, default=5000)
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            rows[precision] = one_run(Path(tmp) / precision, args.crop, precision, args)
    keys = list(rows["fp32"])
    print(f"# fp32 vs bf16 autocast, {args.epochs} epochs, same seed and data, {args.count} ranked samples\n")
    print("| precision | " + " | ".join(keys) + " |")
    print("| --- | " + " | ".join("---" for _ in keys) + " |")
    for precision, row in rows.items():
        print(f"| {precision} | " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
