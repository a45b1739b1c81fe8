"""Import Fashion-MNIST (Debian's `dataset-fashion-mnist`) into uint8 shards + manifest."""
from __future__ import annotations

import gzip
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.crawl.sources.base import CrawlError, CrawlSummary
from pipeline.shared.config import CrawlParams, to_jsonable
from pipeline.shared.io import write_json, write_shards
from pipeline.shared.manifest import MANIFEST_NAME, Record, write_manifest
from pipeline.shared.progress import SILENT, Progress

log = logging.getLogger(__name__)
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
INSTALL_HINT = "install it with `sudo apt-get install dataset-fashion-mnist`, or set crawl.data_dir to a folder holding the four *-ubyte.gz files"


def _stage_raw_files(data_dir: Path, root: Path) -> bool:
    """Decompress the Debian .gz files into torchvision's expected `<root>/FashionMNIST/raw/`."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        gz, plain = data_dir / f"{name}.gz", data_dir / name
        if gz.exists():
            with gzip.open(gz, "rb") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        elif plain.exists():
            shutil.copyfile(plain, raw / name)
        else:
            return False
    return True


def _load_split(root: Path, train: bool, download: bool):
    from torchvision.datasets import FashionMNIST

    return FashionMNIST(str(root), train=train, download=download)


def load_fashion_mnist(data_dir: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Both splits as (N x 28 x 28 uint8 images, N labels), plus the class names."""
    with tempfile.TemporaryDirectory(prefix="fashion-mnist-") as tmp:
        root = Path(tmp)
        local = _stage_raw_files(Path(data_dir), root)
        try:
            splits = {name: _load_split(root, name == "train", download=not local) for name in ("train", "test")}
        except Exception as err:  # torchvision raises RuntimeError/URLError/OSError when offline
            raise CrawlError(f"Fashion-MNIST not found in {data_dir} and the download failed ({type(err).__name__}); {INSTALL_HINT}") from None
        classes = list(splits["train"].classes)
        arrays = {name: (ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.int64)) for name, ds in splits.items()}
    return arrays, classes


def _subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def import_fashion_mnist(params: CrawlParams, progress: Progress = SILENT) -> CrawlSummary:
    arrays, classes = load_fashion_mnist(params.data_dir)
    out = Path(params.out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    progress.start("import", total=len(arrays), description="import fashion-mnist")
    for split, (images, labels) in arrays.items():
        keep = _subsample(len(images), params.limit, params.seed)
        chunk = images[keep][..., None]  # N x 28 x 28 x 1
        locations = write_shards(out, chunk, shard_size=50_000, prefix=split)
        for (file, index), label_id in zip(locations, labels[keep]):
            records.append(Record(file=file, index=index, label=classes[label_id], label_id=int(label_id), split=split))
        progress.advance("import", 1, images=len(records))
    progress.finish("import")
    write_manifest(out / MANIFEST_NAME, records)
    write_json(out / "meta.json", {"source": "fashion-mnist", "classes": classes, "params": to_jsonable(params)})
    per_split = {s: sum(r.split == s for r in records) for s in arrays}
    return CrawlSummary(source="fashion-mnist", out=out, kept=len(records), new=len(records), due=len(records),
                        counters={"classes": len(classes), **{f"{s} images": n for s, n in per_split.items()}})
