"""The export through the outside loaders a training job uses: torchvision, Hugging Face `datasets`, `webdataset`.

The snippets between `# README: <name>` and `# end` are the ones README.md shows (test_readme_shows_these_snippets
keeps them equal); each runs here in a folder holding `data/export`, as a user's job would.
"""
from __future__ import annotations

import csv
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluate import evaluate
from pipeline.export import export
from pipeline.shared.config import ExportParams
from pipeline.shared.io import InputError
from pipeline.shared.manifest import read_manifest
from tests.conftest import REPO, bin_path


def _manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def job_dir(tmp_path: Path, tiny_run: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder whose `data/export` is an imagefolder export (with the real images), and whose
    `data/wds` is the same export as WebDataset shards; the test runs in it."""
    params = dict(input=tiny_run["gen"], real=tiny_run["crop"], include_real=True)
    export.run(ExportParams(**params, out=tmp_path / "data" / "export"))
    export.run(ExportParams(**params, out=tmp_path / "data" / "wds", format="webdataset", shard_size=7))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_torchvision(job_dir: Path) -> None:
    # README: torchvision
    from torchvision import datasets, transforms
    ds = datasets.ImageFolder("data/export", transform=transforms.Compose([transforms.Grayscale(), transforms.ToTensor()]))
    # ds.class_to_idx == {'0_T-shirt_top': 0, '1_Trouser': 1, ..., '9_Ankle_boot': 9}: the Fashion-MNIST label ids
    # end
    rows = {r["file"]: r for r in _manifest(job_dir / "data" / "export")}
    assert len(ds) == len(rows)
    for path, idx in ds.samples:
        assert idx == int(rows[Path(path).relative_to("data/export").as_posix()]["label_id"])


def test_hugging_face_datasets(job_dir: Path) -> None:
    # README: datasets
    import datasets
    ds = datasets.load_dataset("imagefolder", data_dir="data/export", split="train")
    classes = ds.features["label"].names  # the export's classes, in label-id order
    # ds[0] == {'image': <PIL image>, 'label': 0, 'score': 0.61, 'seed': 36, 'rank': 1, 'source': 'synthetic'}
    # end
    card = json.loads((job_dir / "data" / "export" / "dataset.json").read_text())
    assert isinstance(ds.features["label"], datasets.ClassLabel) and classes == card["classes"]
    rows = _manifest(job_dir / "data" / "export")
    assert len(ds) == len(rows) and {r["source"] for r in rows} == {"synthetic", "real"}
    assert set(ds.column_names) == {"image", "label", "score", "seed", "rank", "source"}
    # The builder keeps the metadata's order: row i is manifest row i, image included.
    for row, item in zip(rows, ds):
        assert item["label"] == int(row["label_id"]) and item["source"] == row["source"]
        assert classes[item["label"]] == row["label"]
        for key, cast in (("score", float), ("seed", int), ("rank", int)):
            assert item[key] == (cast(row[key]) if row[key] != "" else None)
        expected = np.asarray(Image.open(job_dir / "data" / "export" / row["file"]))
        assert np.array_equal(np.asarray(item["image"]), expected)


def test_webdataset(job_dir: Path) -> None:
    # README: webdataset
    import glob

    import webdataset as wds

    shards = sorted(glob.glob("data/wds/shard-*.tar"))
    ds = wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("png", "cls", "json")
    for image, label_id, record in ds:  # a PIL image, its label id, its manifest record (seed, score, ...)
        ...
    # end
    records = read_manifest(job_dir / "data" / "wds" / "manifest.jsonl")
    seen = list(ds)
    assert len(seen) == len(records) > len(shards) > 1
    pictures = {r["seed"]: r for r in _manifest(job_dir / "data" / "export") if r["seed"]}
    for (image, label_id, record), r in zip(seen, records):
        assert (record["file"], record["index"], record["label_id"], record["seed"]) == (r.file, r.index, label_id, r.seed)
        assert record["source"] == r.source and record.get("score") == r.score
        if r.seed is not None:  # the same pixels as the imagefolder export's PNG of that seed
            png = job_dir / "data" / "export" / pictures[str(r.seed)]["file"]
            assert np.array_equal(np.asarray(image), np.asarray(Image.open(png).convert(image.mode)))


def test_readme_shows_these_snippets() -> None:
    readme = (REPO / "README.md").read_text()
    source = inspect.getsource(inspect.getmodule(test_readme_shows_these_snippets))
    snippets = re.findall(r"# README: (\w+)\n(.*?)    # end\n", source, re.S)
    assert {name for name, _ in snippets} == {"torchvision", "datasets", "webdataset"}
    for name, body in snippets:
        code = "\n".join(line[4:] for line in body.rstrip("\n").split("\n"))
        assert f"```python\n{code}\n```" in readme, f"README's {name} snippet differs from tests/test_loaders.py"


def test_webdataset_order_spreads_every_class_and_is_reproducible(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    params = dict(input=tiny_run["gen"], format="webdataset", shard_size=3)
    export.run(ExportParams(**params, out=tmp_path / "a"))
    export.run(ExportParams(**params, out=tmp_path / "b"))
    export.run(ExportParams(**params, out=tmp_path / "c", seed=1))
    records = read_manifest(tmp_path / "a" / "manifest.jsonl")
    classes = {r.label_id for r in records}
    assert len(classes) == 3 and len(records) % 3 == 0
    for start in range(0, len(records) - 2, 3):  # balanced classes, shards of 3: every shard holds every class
        assert {r.label_id for r in records[start:start + 3]} == classes
    shards = sorted(p.name for p in (tmp_path / "a").glob("shard-*.tar"))
    assert len(shards) == len(records) // 3 and shards == sorted(p.name for p in (tmp_path / "b").glob("shard-*.tar"))
    assert all((tmp_path / "a" / s).read_bytes() == (tmp_path / "b" / s).read_bytes() for s in shards)
    assert [r.seed for r in read_manifest(tmp_path / "c" / "manifest.jsonl")] != [r.seed for r in records]
    assert sorted(r.seed for r in read_manifest(tmp_path / "c" / "manifest.jsonl")) == sorted(r.seed for r in records)


def test_spread_order_puts_every_class_in_the_first_shard() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 20 + [None] * 5
    order = export.spread_order(labels, seed=3)
    assert sorted(order) == list(range(len(labels)))
    assert {labels[i] for i in order[:4]} == {0, 1, 2, None}
    assert not np.array_equal(order, export.spread_order(labels, seed=4))


def test_a_rerun_replaces_the_previous_runs_shards_and_folders(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    out = tmp_path / "export"
    n = len(read_manifest(tiny_run["gen"] / "manifest.jsonl"))
    export.run(ExportParams(input=tiny_run["gen"], out=out, format="webdataset", shard_size=2))
    assert len(list(out.glob("shard-*.tar"))) == -(-n // 2)
    export.run(ExportParams(input=tiny_run["gen"], out=out, format="webdataset", shard_size=n // 3))
    assert sorted(p.name for p in out.glob("shard-*.tar")) == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    export.run(ExportParams(input=tiny_run["gen"], out=out))
    assert not list(out.glob("shard-*.tar")) and len(list(out.glob("*_c*/seed*.png"))) == n
    export.run(ExportParams(input=tiny_run["gen"], out=out, format="webdataset"))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == []
    assert "shard-{00000..00000}.tar" in (out / "README.md").read_text()
    with pytest.raises(export.ExportError, match="is a webdataset export; stream its shards with webdataset"):
        export.load_export(out)
    with pytest.raises(evaluate.EvaluateError, match="is a webdataset export; evaluate reads export.format imagefolder"):
        evaluate.load_export_set(out)
    assert not [p for p in tmp_path.iterdir() if p.name != "export"]  # no staging or set-aside folder left


def test_a_failed_export_leaves_the_previous_one_untouched(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    gen = tmp_path / "gen"
    shutil.copytree(tiny_run["gen"], gen)
    out = tmp_path / "export"
    export.run(ExportParams(input=gen, out=out, format="webdataset", shard_size=5))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    victim = read_manifest(gen / "manifest.jsonl")[-1].file
    (gen / victim).unlink()  # one image gone: the run fails with some shards already written
    with pytest.raises(InputError, match=f"{victim}.* does not exist"):
        export.run(ExportParams(input=gen, out=out, format="webdataset", shard_size=3))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "gen"]


@pytest.mark.parametrize("flag, value, message", [
    ("--format", "parquet", "export.format: 'parquet' is not allowed (allowed: 'imagefolder' or 'webdataset')"),
    ("--shard-size", "0", "export.shard_size: 0"),
])
def test_bad_format_or_shard_size_is_one_line_and_writes_nothing(tmp_path: Path, tiny_run: dict[str, Path],
                                                                  flag: str, value: str, message: str) -> None:
    out = tmp_path / "export"
    proc = subprocess.run([bin_path("augment"), "export", "--input", str(tiny_run["gen"]), "--out", str(out), flag, value],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
