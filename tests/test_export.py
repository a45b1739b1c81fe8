"""The export is read correctly by a job that has never heard of this package (torchvision ImageFolder)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from pipeline.crawl import crawl
from pipeline.crop import crop
from pipeline.export import export
from pipeline.generate import generate
from pipeline.shared.config import CrawlParams, CropParams, ExportParams, GenerateParams, TrainParams
from pipeline.shared.labels import class_dirs
from pipeline.shared.manifest import read_manifest
from pipeline.train import train
from tests.conftest import draw_shapes

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.mark.parametrize("classes", [FASHION, [f"c{i}" for i in range(12)], ["b", "a b", "a0"], ["zz", "Z/z", "a"]])
def test_class_folders_sort_in_label_order(classes: list[str]) -> None:
    dirs = class_dirs(classes)
    assert sorted(dirs) == dirs and len(set(dirs)) == len(classes)
    assert all("/" not in d and not d.startswith(".") for d in dirs)


def test_imagefolder_reads_the_manifest_label_ids(tmp_path: Path) -> None:
    """Folder labels whose sorted order changes once made safe ('a b' -> 'a_b' sorts after 'a0')."""
    from torchvision.datasets import ImageFolder

    names = ["a b", "a0", "b"]
    images, labels = draw_shapes(48, 28, seed=5)
    for i, (img, c) in enumerate(zip(images, labels)):
        (tmp_path / "src" / names[c]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(tmp_path / "src" / names[c] / f"{i}.png")
    crawl.run(CrawlParams(source="folder", root=tmp_path / "src", out=tmp_path / "raw"))
    crop.run(CropParams(input=tmp_path / "raw", out=tmp_path / "crop", metrics=tmp_path / "crop.json"))
    source_ids = {r.label: r.label_id for r in read_manifest(tmp_path / "crop" / "manifest.jsonl")}
    train.run(TrainParams(input=tmp_path / "crop", out=tmp_path / "train", metrics=tmp_path / "train.json",
                          batch_size=16, z_dim=8, g_channels=8, d_channels=8, embed_dim=4, max_steps=2, threads=1,
                          judge_steps=5))
    generate.run(GenerateParams(checkpoint=tmp_path / "train" / "checkpoint.pt", out=tmp_path / "gen",
                                real=tmp_path / "crop", count=12, oversample=2, batch_size=16, threads=1, writers=0))
    export.run(ExportParams(input=tmp_path / "gen", real=tmp_path / "crop", out=tmp_path / "export", include_real=True))

    folder = ImageFolder(str(tmp_path / "export"))
    with open(tmp_path / "export" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_file = {r["file"]: r for r in rows}
    assert len(folder.samples) == len(rows) == 12 + 48
    for path, idx in folder.samples:   # every image: ImageFolder's class index == the manifest's label_id
        row = by_file[str(Path(path).relative_to(tmp_path / "export"))]
        assert idx == int(row["label_id"]) == source_ids[row["label"]]
    assert {folder.classes[source_ids[n]] for n in names} == set(folder.classes)
    assert [folder.class_to_idx[d] for d in class_dirs(sorted(source_ids, key=source_ids.get))] == [0, 1, 2]


def test_a_set_aside_export_left_by_a_kill_is_swept_and_nothing_else(tmp_path: Path) -> None:
    """export swaps its folder in by moving the old one to .<out>.old.XXXXXXXX first: a kill before that
    folder's removal left it for good; the sweep after the next run removes it, and only names of that form."""
    from pipeline.shared.io import sweep_temp

    out = tmp_path / "export"
    out.mkdir()
    aside, staging = tmp_path / ".export.old.k3j_9x2a", tmp_path / ".export.q0w9e8r7"
    theirs = [tmp_path / ".export.old.mine", tmp_path / ".exports.old.k3j_9x2a", tmp_path / "export.old.k3j_9x2a"]
    for folder in (aside, staging, *theirs):
        (folder / "c0").mkdir(parents=True)
        (folder / "c0" / "a.png").write_bytes(b"png")
    sweep_temp(out)
    assert not aside.exists() and not staging.exists()
    assert all((folder / "c0" / "a.png").exists() for folder in theirs)
