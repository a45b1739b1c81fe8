"""The export stage: a labelled dataset another training job loads in a few lines.

Layout (torchvision ImageFolder): `<out>/<id>_<label>/<name>.png` (sorted folder order = label ids), plus `manifest.csv`
(file, label, label_id, score, source, seed, rank, model_sha256), `manifest.jsonl` (the
pipeline's schema), `dataset.json` and a `README.md` dataset card. The folder is built
under a temporary name and renamed into place, so a reader never sees half an export.
"""
from __future__ import annotations

import csv
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.config import ExportParams, to_jsonable
from pipeline.errors import PipelineError
from pipeline.io import ShardReader, read_image, read_json, save_png, write_json, write_text
from pipeline.labels import class_dirs
from pipeline.manifest import MANIFEST_NAME, Record, path_inside, read_manifest, write_manifest
from pipeline.progress import SILENT, Progress

CSV_COLUMNS = ("file", "label", "label_id", "score", "source", "seed", "rank", "model_sha256")
UNLABELLED = "unlabelled"


class ExportError(PipelineError):
    """The inputs of the export cannot be used."""


@dataclass
class ExportSummary:
    out: Path
    synthetic: int = 0
    real: int = 0
    per_class: dict[str, int] | None = None

    def rows(self) -> dict[str, Any]:
        return {"output": str(self.out), "synthetic images": self.synthetic, "real images": self.real,
                "per class": self.per_class or {}}


def _read_generated(folder: Path) -> tuple[list[Record], dict[str, Any]]:
    meta_path = folder / "meta.json"
    meta = read_json(meta_path) if meta_path.exists() else {}
    if meta.get("params", {}).get("scores_only"):
        raise ExportError(f"export.input: {folder} was generated with --scores-only and holds no images")
    if not (folder / MANIFEST_NAME).exists():
        raise ExportError(f"export.input: {folder} has no {MANIFEST_NAME}; run `augment generate` first")
    return read_manifest(folder / MANIFEST_NAME), meta


def _real_records(folder: Path, classes: list[str]) -> tuple[list[Record], ShardReader]:
    if not (folder / MANIFEST_NAME).exists():
        raise ExportError(f"export.real: {folder} has no {MANIFEST_NAME}; run `augment crop` first")
    meta = read_json(folder / "meta.json")
    if list(meta.get("classes", [])) != list(classes):
        raise ExportError(f"export.real: classes of {folder} {meta.get('classes')} differ from the model's {classes}")
    return [r for r in read_manifest(folder / MANIFEST_NAME) if r.split == "train"], ShardReader(folder)


def run(params: ExportParams, progress: Progress = SILENT) -> ExportSummary:
    gen_dir, out = Path(params.input), Path(params.out)
    records, meta = _read_generated(gen_dir)
    classes: list[str] = list(meta.get("classes", []))
    dirs = class_dirs(classes)
    model_sha = meta.get("checkpoint_sha256", "")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rows: list[Record] = []
        progress.start("export", total=len(records), description="export synthetic")
        shards = ShardReader(gen_dir)
        for r in records:
            name = f"{dirs[r.label_id] if r.label_id is not None else UNLABELLED}/seed{r.seed}.png"
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            if r.index is None:
                read_image(path_inside(gen_dir, r.file))  # one that does not decode stops here, naming it
                shutil.copyfile(gen_dir / r.file, staging / name)
            else:
                save_png(staging / name, shards.get(r.file, r.index))
            rows.append(Record(file=name, label=r.label, label_id=r.label_id, source="synthetic",
                               score=r.score, seed=r.seed, rank=r.rank))
            progress.advance("export")
        summary = ExportSummary(out=out, synthetic=len(rows))
        if params.include_real:
            rows += _export_real(Path(params.real), classes, dirs, staging, progress)
            summary.real = len(rows) - summary.synthetic
        _write_tables(staging, rows, model_sha)
        summary.per_class = dict(Counter(r.label or UNLABELLED for r in rows))
        card = _dataset_card(rows, classes, dirs, meta, params, model_sha)
        write_json(staging / "dataset.json", card)
        write_text(staging / "README.md", _readme(card))
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _export_real(folder: Path, classes: list[str], dirs: list[str], staging: Path, progress: Progress) -> list[Record]:
    real, reader = _real_records(folder, classes)
    rows = []
    progress.start("real", total=len(real), description="export real")
    for r in real:
        name = f"{dirs[r.label_id] if r.label_id is not None else UNLABELLED}/real-{Path(r.file).stem}-{r.index:06d}.png"
        save_png(staging / name, reader.get(r.file, r.index))
        rows.append(Record(file=name, label=r.label, label_id=r.label_id, source="real", md5=r.md5))
        progress.advance("real")
    return rows


def _write_tables(staging: Path, rows: list[Record], model_sha: str) -> None:
    write_manifest(staging / MANIFEST_NAME, rows)
    with open(staging / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([r.file, r.label or "", "" if r.label_id is None else r.label_id,
                             "" if r.score is None else r.score, r.source, "" if r.seed is None else r.seed,
                             "" if r.rank is None else r.rank, model_sha if r.source == "synthetic" else ""])


def _dataset_card(rows: list[Record], classes: list[str], dirs: list[str], meta: dict[str, Any],
                  params: ExportParams, model_sha: str) -> dict[str, Any]:
    scores = np.array([r.score for r in rows if r.score is not None], dtype=np.float64)
    counts = Counter((r.label or UNLABELLED, r.source) for r in rows)
    return {
        "name": "augment synthetic dataset",
        "layout": "ImageFolder: <id>_<label>/<name>.png, folders sort in label-id order; labels and ids in manifest.csv",
        "classes": classes or [UNLABELLED],
        "class_folders": dirs if classes else [UNLABELLED],
        "counts": {f"{label}/{source}": n for (label, source), n in sorted(counts.items())},
        "total": len(rows),
        "score_stats": meta.get("score_stats", {}) if len(scores) else {},
        "model_sha256": model_sha,
        "model_config": meta.get("model_config", {}),
        "generate_params": meta.get("params", {}),
        "export_params": to_jsonable(params),
        "seed": params.seed,
    }


def _readme(card: dict[str, Any]) -> str:
    lines = [
        "# Synthetic dataset made by augment", "",
        f"{card['total']} images in torchvision ImageFolder layout, one folder per class, named",
        "`<id>_<label>` so that ImageFolder's class indices (sorted folder names) equal the label ids.",
        "Synthetic images were drawn from a conditional DCGAN and selected with its discriminator",
        "and a classifier of the real data (see `dataset.json` for the rule and its settings);",
        "each one's seed is in `manifest.csv` so it can be regenerated exactly.", "",
        f"- model sha256: `{card['model_sha256']}`",
        f"- classes: {', '.join(card['classes'])}",
        f"- discriminator score of kept samples: {card['score_stats']}", "",
        "| label/source | images |", "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in card["counts"].items()], "",
        "Load it with:", "", "```python", "from pipeline import load_export",
        "ds = load_export('path/to/export')  # (image tensor, label_id) pairs", "```", "",
        "or, without augment installed:", "", "```python", "from torchvision.datasets import ImageFolder",
        "ds = ImageFolder('path/to/export')  # ds.class_to_idx maps each folder to its label id", "```", "",
    ]
    return "\n".join(lines)


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace `out` with the finished staging folder (a directory rename is atomic)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


class ExportDataset(Dataset):
    """A torch-style Dataset over an export: `ds[i] -> (C x H x W float tensor in [0, 1], label_id)`."""

    def __init__(self, root: Path, transform: Optional[Callable[[Any], Any]] = None,
                 source: Optional[str] = None) -> None:
        self.root = Path(root)
        card = self.root / "dataset.json"
        if not card.exists():
            raise ExportError(f"{self.root} is not an augment export (no dataset.json)")
        self.info = read_json(card)
        self.classes: list[str] = self.info["classes"]
        with open(self.root / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        self.rows = [r for r in rows if source is None or r["source"] == source]
        self.paths = [path_inside(self.root, r["file"]) for r in self.rows]  # the same rule as every manifest
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        row = self.rows[i]
        with Image.open(self.paths[i]) as img:
            img.load()
        if self.transform is not None:
            image = self.transform(img)
        else:
            arr = np.asarray(img, dtype=np.uint8)
            arr = arr[..., None] if arr.ndim == 2 else arr
            image = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
        return image, int(row["label_id"]) if row["label_id"] != "" else 0

    @property
    def targets(self) -> list[int]:
        return [int(r["label_id"]) if r["label_id"] != "" else 0 for r in self.rows]


def load_export(path: Path, transform: Optional[Callable[[Any], Any]] = None,
                source: Optional[str] = None) -> ExportDataset:
    """Open an export as a torch `Dataset` (optionally only source='synthetic' or 'real')."""
    return ExportDataset(path, transform=transform, source=source)
