"""The export stage: a labelled dataset another training job loads in a few lines, as an ImageFolder or WebDataset shards.

`export.format: imagefolder` (torchvision ImageFolder): `<out>/<id>_<label>/<name>.png` (sorted folder order =
label ids), plus `metadata.parquet` for Hugging Face `datasets` (file_name, label as a ClassLabel of the label ids,
score, seed, rank, source). `webdataset`: `shard-00000.tar`, ... of at most `shard_size` samples `<key>.png`,
`<key>.cls` (label id), `<key>.json` (the manifest record), in a seeded order that spreads every class evenly.
Both write `manifest.csv` (file, label, label_id, score, source, seed, rank, model_sha256), `manifest.jsonl`,
`dataset.json` and a `README.md` card. The folder is built under a temporary name and renamed into place, so a
reader never sees half an export; an existing `out` is replaced only when export wrote all of it (pipeline.shared.ownership).
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.shared.config import ExportParams, to_jsonable
from pipeline.shared.errors import PipelineError
from pipeline.shared.io import ShardReader, read_image, read_json, write_json, write_text
from pipeline.shared.labels import class_dirs
from pipeline.shared.manifest import MANIFEST_NAME, Record, path_inside, read_manifest, write_manifest
from pipeline.shared.ownership import check_out, mark_out
from pipeline.shared.progress import SILENT, Progress

CSV_COLUMNS = ("file", "label", "label_id", "score", "source", "seed", "rank", "model_sha256")
UNLABELLED = "unlabelled"
HF_METADATA = "metadata.parquet"  # the imagefolder builder's metadata file; parquet carries the ClassLabel
SHARD_PATTERN = "shard-{:05d}.tar"
TAR_MTIME = 946684800  # fixed member times (2000-01-01), so the same export gives byte-identical shards


class ExportError(PipelineError):
    """The inputs of the export cannot be used."""


@dataclass
class ExportSummary:
    out: Path
    format: str = "imagefolder"
    synthetic: int = 0
    real: int = 0
    shards: int = 0
    per_class: dict[str, int] | None = None

    def rows(self) -> dict[str, Any]:
        rows: dict[str, Any] = {"output": str(self.out), "format": self.format, "synthetic images": self.synthetic,
                                "real images": self.real}
        if self.format == "webdataset":
            rows["shards"] = self.shards
        return {**rows, "per class": self.per_class or {}}


@dataclass
class Sample:
    """One image to export: its record (file relative to the export) and how to get its PNG bytes."""

    record: Record
    key: str
    png: Callable[[], bytes]


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
    check_out(out, "export")  # before any work: an `out` holding anything export did not write is refused
    records, meta = _read_generated(gen_dir)
    classes: list[str] = list(meta.get("classes", []))
    dirs = class_dirs(classes)
    model_sha = meta.get("checkpoint_sha256", "")
    samples = _synthetic_samples(records, gen_dir, dirs)
    if params.include_real:
        samples += _real_samples(Path(params.real), classes, dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        mark_out(staging, "export")
        summary = ExportSummary(out=out, format=params.format)
        if params.format == "webdataset":
            rows, summary.shards = _write_shards(staging, samples, params, progress)
        else:
            rows = _write_imagefolder(staging, samples, progress)
            _write_hf_metadata(staging / HF_METADATA, rows, classes)
        summary.synthetic = sum(r.source == "synthetic" for r in rows)
        summary.real = len(rows) - summary.synthetic
        _write_tables(staging, rows, model_sha)
        summary.per_class = dict(Counter(r.label or UNLABELLED for r in rows))
        card = _dataset_card(rows, classes, dirs, meta, params, model_sha)
        if params.format == "webdataset":
            card["shards"] = [SHARD_PATTERN.format(i) for i in range(summary.shards)]
        write_json(staging / "dataset.json", card)
        write_text(staging / "README.md", _readme(card))
        check_out(out, "export")  # again, just before the swap: nothing of anyone else's appeared meanwhile
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format="PNG")
    return buf.getvalue()


def _checked_png(path: Path) -> Callable[[], bytes]:
    def load() -> bytes:
        read_image(path)  # one that does not decode stops the export here, naming it
        return path.read_bytes()

    return load


def _folder(dirs: list[str], label_id: Optional[int]) -> str:
    return dirs[label_id] if label_id is not None else UNLABELLED


def _synthetic_samples(records: list[Record], gen_dir: Path, dirs: list[str]) -> list[Sample]:
    shards = ShardReader(gen_dir)
    samples = []
    for r in records:
        if r.index is None:
            png: Callable[[], bytes] = _checked_png(path_inside(gen_dir, r.file))
        else:
            png = (lambda file, index: lambda: _png_bytes(shards.get(file, index)))(r.file, r.index)
        row = Record(file=f"{_folder(dirs, r.label_id)}/seed{r.seed}.png", label=r.label, label_id=r.label_id,
                     source="synthetic", score=r.score, seed=r.seed, rank=r.rank)
        samples.append(Sample(row, f"seed{r.seed}", png))
    return samples


def _real_samples(folder: Path, classes: list[str], dirs: list[str]) -> list[Sample]:
    real, reader = _real_records(folder, classes)
    samples = []
    for r in real:
        key = f"real-{Path(r.file).stem}-{r.index:06d}"
        row = Record(file=f"{_folder(dirs, r.label_id)}/{key}.png", label=r.label, label_id=r.label_id,
                     source="real", md5=r.md5)
        png = (lambda file, index: lambda: _png_bytes(reader.get(file, index)))(r.file, r.index)
        samples.append(Sample(row, key, png))
    return samples


def _write_imagefolder(staging: Path, samples: list[Sample], progress: Progress) -> list[Record]:
    progress.start("export", total=len(samples), description="export images")
    for s in samples:
        path = staging / s.record.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s.png())  # the staging folder is private until the swap, so no temp names here
        progress.advance("export")
    return [s.record for s in samples]


def spread_order(label_ids: list[Optional[int]], seed: int) -> np.ndarray:
    """A seeded shuffle that spreads every class evenly over the order, each class's first sample leading.

    Item j of a class of n (a seeded shuffle of the class) gets the key (j + u) / n, u uniform in [0, 1), and
    item 0 the key u / n_largest: sorting by key puts one sample of every class first, in a random order, then
    deals each class out at its own even rate. So a first shard of at least as many samples as classes holds
    every class, and with balanced classes every such shard does.
    """
    rng = np.random.default_rng(seed)
    labels = np.array([-1 if x is None else x for x in label_ids], np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    keys = np.empty(len(labels), np.float64)
    for c, n in zip(classes, counts):
        members = rng.permutation(np.flatnonzero(labels == c))
        keys[members] = (np.arange(n) + rng.random(n)) / n
        keys[members[0]] = rng.random() / counts.max()
    return np.argsort(keys, kind="stable")


def _write_shards(staging: Path, samples: list[Sample], params: ExportParams,
                  progress: Progress) -> tuple[list[Record], int]:
    """Write `shard-*.tar` in the spread order; returns the rows (file = shard, index = position) and the shard count."""
    order = spread_order([s.record.label_id for s in samples], params.seed)
    rows: list[Record] = []
    progress.start("export", total=len(samples), description="export shards")
    shard_count = 0
    for start in range(0, len(order), params.shard_size):
        name = SHARD_PATTERN.format(shard_count)
        with tarfile.open(staging / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for index, i in enumerate(order[start:start + params.shard_size]):
                s = samples[i]
                row = Record(**{**s.record.to_dict(), "file": name, "index": index, "extra": {"key": s.key}})
                members = {".png": s.png(), ".json": json.dumps({**row.to_dict(), "seed": row.seed}).encode()}
                if row.label_id is not None:
                    members[".cls"] = str(row.label_id).encode()
                for ext, data in members.items():
                    _add_member(tar, s.key + ext, data)
                rows.append(row)
                progress.advance("export")
        shard_count += 1
    return rows, shard_count


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_hf_metadata(path: Path, rows: list[Record], classes: list[str]) -> None:
    """`metadata.parquet` for `datasets.load_dataset("imagefolder", data_dir=...)`.

    The builder ignores the folder names once a metadata file exists, and a JSON Lines or CSV file
    cannot say that `label` is a ClassLabel; parquet can, through the `huggingface` schema
    metadata that `datasets.Features.from_arrow_schema` reads. So `label` comes out as a
    ClassLabel whose names are the classes in label-id order.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = classes or [UNLABELLED]
    features = {
        "file_name": {"dtype": "string", "_type": "Value"},
        "label": {"names": names, "_type": "ClassLabel"},
        "score": {"dtype": "float64", "_type": "Value"},
        "seed": {"dtype": "int64", "_type": "Value"},
        "rank": {"dtype": "int64", "_type": "Value"},
        "source": {"dtype": "string", "_type": "Value"},
    }
    schema = pa.schema([("file_name", pa.string()), ("label", pa.int64()), ("score", pa.float64()),
                        ("seed", pa.int64()), ("rank", pa.int64()), ("source", pa.string())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    table = pa.table({
        "file_name": [r.file for r in rows],
        "label": [r.label_id if r.label_id is not None else 0 for r in rows],
        "score": [r.score for r in rows], "seed": [r.seed for r in rows], "rank": [r.rank for r in rows],
        "source": [r.source for r in rows],
    }, schema=schema)
    pq.write_table(table, path)


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
    layout = ("ImageFolder: <id>_<label>/<name>.png, folders sort in label-id order; labels and ids in manifest.csv"
              if params.format == "imagefolder" else
              "WebDataset: shard-*.tar of <key>.png, <key>.cls (label id), <key>.json (manifest record)")
    return {
        "name": "augment synthetic dataset",
        "format": params.format,
        "layout": layout,
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
    if card.get("format") == "webdataset":
        layout = [f"{card['total']} images in WebDataset shards (`shard-*.tar`): each sample is `<key>.png`,",
                  "`<key>.cls` (the label id) and `<key>.json` (its manifest record, with the seed), in a seeded",
                  "order that spreads every class evenly, so every shard holds every class."]
        load = ["Load it with:", "", "```python", "import webdataset as wds",
                f"ds = wds.WebDataset('path/to/export/shard-{{00000..{len(card['shards']) - 1:05d}}}.tar', shardshuffle=False)",
                "ds = ds.decode('pil').to_tuple('png', 'cls')  # (PIL image, label id) pairs",
                "```", ""]
    else:
        layout = [f"{card['total']} images in torchvision ImageFolder layout, one folder per class, named",
                  "`<id>_<label>` so that ImageFolder's class indices (sorted folder names) equal the label ids."]
        load = ["Load it with:", "", "```python", "from pipeline import load_export",
                "ds = load_export('path/to/export')  # (image tensor, label_id) pairs", "```", "",
                "or, without augment installed:", "", "```python", "from torchvision.datasets import ImageFolder",
                "ds = ImageFolder('path/to/export')  # ds.class_to_idx maps each folder to its label id", "```", "",
                "```python", "import datasets  # label: a ClassLabel of the label ids; score, seed, rank, source columns",
                "ds = datasets.load_dataset('imagefolder', data_dir='path/to/export', split='train')", "```", ""]
    lines = [
        "# Synthetic dataset made by augment", "", *layout,
        "Synthetic images were drawn from a conditional DCGAN and selected with its discriminator",
        "and a classifier of the real data (see `dataset.json` for the rule and its settings);",
        "each one's seed is in `manifest.csv` so it can be regenerated exactly.", "",
        f"- model sha256: `{card['model_sha256']}`",
        f"- classes: {', '.join(card['classes'])}",
        f"- discriminator score of kept samples: {card['score_stats']}", "",
        "| label/source | images |", "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in card["counts"].items()], "", *load,
    ]
    return "\n".join(lines)


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace `out` (which `check_out` found to hold only export's own files) with the finished staging folder."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        out.replace(old)  # onto the fresh empty folder: a directory rename is atomic
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
        if self.info.get("format", "imagefolder") != "imagefolder":
            raise ExportError(f"{self.root} is a {self.info['format']} export; stream its shards with webdataset")
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
