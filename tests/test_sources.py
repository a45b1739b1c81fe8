"""The embedded and local-folder sources, and the resize crop over them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.crawl import crawl
from pipeline.crawl.sources.base import CrawlError
from pipeline.crop import crop
from pipeline.shared.config import CrawlParams, CropParams
from pipeline.shared.io import ShardReader
from pipeline.shared.manifest import read_manifest
from tests.conftest import needs_fmnist


@needs_fmnist
def test_fashion_mnist_imports_both_splits_with_labels(tmp_path: Path) -> None:
    summary = crawl.run(CrawlParams(out=tmp_path / "raw", limit=50))
    records = read_manifest(tmp_path / "raw" / "manifest.jsonl")
    assert summary.kept == 100 and {r.split for r in records} == {"train", "test"}
    meta = json.loads((tmp_path / "raw" / "meta.json").read_text())
    assert meta["classes"][0] == "T-shirt/top" and len(meta["classes"]) == 10
    image = ShardReader(tmp_path / "raw").get(records[0].file, records[0].index)
    assert image.shape == (28, 28, 1) and image.dtype == np.uint8 and image.max() > 0
    assert all(meta["classes"][r.label_id] == r.label for r in records)


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path) -> None:
    import socket

    socket.setdefaulttimeout(2)  # torchvision's download attempt must fail fast when offline
    try:
        with pytest.raises(CrawlError, match="apt-get install dataset-fashion-mnist") as err:
            crawl.run(CrawlParams(out=tmp_path / "raw", data_dir=tmp_path / "nowhere"))
    except AssertionError:
        pytest.skip("the network answered: torchvision downloaded Fashion-MNIST itself")
    finally:
        socket.setdefaulttimeout(None)
    assert "\n" not in str(err.value)


def test_folder_import_counts_unreadable_files(tmp_path: Path, shapes_folder: Path) -> None:
    summary = crawl.run(CrawlParams(source="folder", root=shapes_folder, out=tmp_path / "raw"))
    assert summary.kept == 96 and summary.failed == 1
    failures = (tmp_path / "raw" / "failures.jsonl").read_text()
    assert "broken.png" in failures
    records = read_manifest(tmp_path / "raw" / "manifest.jsonl")
    assert {r.label for r in records} == {"bar", "disc", "square"}
    assert all((tmp_path / "raw" / r.file).exists() and len(r.md5) == 32 for r in records)


def test_flat_folder_is_unlabelled_and_crop_keeps_rgb(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8)).save(root / f"{i}.png")
    crawl.run(CrawlParams(source="folder", root=root, out=tmp_path / "raw"))
    summary = crop.run(CropParams(input=tmp_path / "raw", out=tmp_path / "crop", metrics=tmp_path / "m.json", size=32))
    records = read_manifest(tmp_path / "crop" / "manifest.jsonl")
    assert summary.kept == 5 and all(r.label is None and r.label_id is None for r in records)
    shard = np.load(tmp_path / "crop" / records[0].file)
    assert shard.shape == (5, 32, 32, 3)
    assert json.loads((tmp_path / "crop" / "meta.json").read_text())["classes"] == []


@pytest.mark.parametrize("fit", ["pad", "stretch", "center-crop"])
def test_resize_fits_every_image_to_size(tmp_path: Path, fit: str) -> None:
    root = tmp_path / "imgs" / "a"
    root.mkdir(parents=True)
    Image.new("L", (100, 50), 200).save(root / "wide.png")
    Image.new("L", (20, 20), 200).save(root / "small.png")
    crawl.run(CrawlParams(source="folder", root=tmp_path / "imgs", out=tmp_path / "raw"))
    crop.run(CropParams(input=tmp_path / "raw", out=tmp_path / "crop", metrics=tmp_path / "m.json", size=64, fit=fit))
    shard = np.load(tmp_path / "crop" / "shard-00000.npy")
    assert shard.shape == (2, 64, 64, 1)
    if fit == "pad":  # wide image: scaled to 64 x 32 and centred, black above and below
        wide = shard[[r.extra["input_file"] for r in read_manifest(tmp_path / "crop" / "manifest.jsonl")].index(
            next(r.file for r in read_manifest(tmp_path / "raw" / "manifest.jsonl") if r.width == 100))]
        assert wide[:10].max() == 0 and wide[32, 32, 0] == 200


def test_crop_without_crawl_output_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(crop.CropError, match="run `augment crawl` first"):
        crop.run(CropParams(input=tmp_path / "nothing", out=tmp_path / "crop", metrics=tmp_path / "m.json"))


def test_unreadable_crawled_image_is_counted_in_crop(tmp_path: Path, shapes_folder: Path) -> None:
    crawl.run(CrawlParams(source="folder", root=shapes_folder, out=tmp_path / "raw"))
    victim = read_manifest(tmp_path / "raw" / "manifest.jsonl")[0]
    (tmp_path / "raw" / victim.file).write_bytes(b"garbage")
    summary = crop.run(CropParams(input=tmp_path / "raw", out=tmp_path / "crop", metrics=tmp_path / "m.json"))
    assert summary.kept == 95 and summary.failed == 1
    assert any("unreadable" in k for k in summary.reasons)
    assert json.loads((tmp_path / "m.json").read_text())["failed"] == 1
