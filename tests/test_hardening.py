"""Issue 11 (hardening): each test pins one fault a review found; all use real files and real stages."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.export import export
from pipeline.generate import generate
from pipeline.shared.config import CropParams, ExportParams, GenerateParams, ParamsError, TrainParams, parse_section
from pipeline.shared.manifest import ManifestError, read_manifest
from pipeline.train import dataset, train
from stages.cli import app

TINY = dict(batch_size=16, z_dim=8, g_channels=8, d_channels=8, embed_dim=4, threads=1, ema_start=2, grid_per_class=4,
            judge_steps=5)


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


# -- 12: a missing --params file is an error, the default one absent is said once -----------------


def test_missing_params_file_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "--params", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2, result.output
    line = one_line_error(result.output)
    assert "nope.yaml" in line and "does not exist" in line


def test_absent_default_params_file_is_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export"])
    assert result.exit_code == 1  # no generate output here; the note comes first
    assert result.output.count("params.yaml not found") == 1, result.output


# -- 11: mode resize cannot label by hair colour -----------------------------------------------------


def test_resize_with_hair_color_labels_is_refused() -> None:
    with pytest.raises(ParamsError) as err:
        parse_section("crop", {"mode": "resize", "label_from": "hair_color"})
    assert "crop.label_from" in str(err.value) and "hair_color" in str(err.value) and "faces" in str(err.value)
    result = CliRunner().invoke(app, ["crop", "--mode", "resize", "--label-from", "hair_color", "--params", "params.yaml"])
    assert result.exit_code == 2 and "hair_color" in one_line_error(result.output)
    assert CropParams(mode="faces", label_from="hair_color").label_from == "hair_color"


# -- 2: cross-rank batch norm sums in float32 ---------------------------------------------------------


@pytest.fixture
def one_rank_group(tmp_path: Path):
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_synced_batchnorm_accumulates_in_float32(one_rank_group: None) -> None:
    from pipeline.train.models import BatchNorm2d

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(32, 4, 8, 8, generator=gen) * 0.5 + 12).to(torch.bfloat16)  # large mean, small spread
    bn = BatchNorm2d(4).train()
    bn.sync = True
    out = bn(x)
    ref = torch.nn.functional.batch_norm(x.double(), None, None, training=True, eps=bn.eps)
    assert torch.isfinite(out).all()
    assert (out.double() - ref).abs().max() < 0.1, (out.double() - ref).abs().max()
    true_var = x.double().var(dim=(0, 2, 3), unbiased=True)
    expected = 0.9 * 1 + 0.1 * true_var
    assert torch.allclose(bn.running_var.double(), expected, rtol=1e-3)


# -- 1: the process group serves CPU tensors on CUDA ranks --------------------------------------------


def test_process_group_backend_serves_cpu_and_cuda() -> None:
    from pipeline.shared.distributed import backend_for

    assert backend_for(torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"
    assert backend_for(torch.device("cpu")) == "gloo"


def test_dist_mean_under_a_gloo_group(one_rank_group: None) -> None:
    from pipeline.shared.distributed import Dist

    # world=2 takes the all-reduce path; with one real rank the sum is the value itself.
    assert Dist(rank=0, world=2).mean([2.0, 4.0]) == [1.0, 2.0]


# -- 7: --resume refuses changed training settings or data --------------------------------------------


def test_resume_refuses_changed_settings_and_data(tmp_path: Path, crop_dir: Path) -> None:
    def p(**kw: object) -> TrainParams:
        return TrainParams(**{"input": crop_dir, "out": tmp_path / "run", "metrics": tmp_path / "m.json", **TINY, "max_steps": 2, **kw})

    train.run(p())
    for change, words in (({"batch_size": 32}, "batch_size: 16 -> 32"), ({"loss": "hinge"}, "loss: 'bce' -> 'hinge'"),
                          ({"lr_d": 1e-3}, "lr_d: 0.0004 -> 0.001")):
        with pytest.raises(dataset.TrainError) as err:
            train.run(p(max_steps=3, **change), resume=True)
        assert words in str(err.value) and "\n" not in str(err.value)
    # Other training data (one image fewer) is refused as well.
    other = tmp_path / "crop2"
    records = read_manifest(crop_dir / "manifest.jsonl")
    import shutil

    shutil.copytree(crop_dir, other)
    from pipeline.shared.manifest import write_manifest

    write_manifest(other / "manifest.jsonl", [r for r in records if r.split == "train"][1:])
    with pytest.raises(dataset.TrainError, match="training data"):
        train.run(p(max_steps=3, input=other), resume=True)
    # Settings that do not change the run (length, checkpointing, threads) are fine, and a flag overrides the check.
    assert train.run(p(max_steps=3, checkpoint_every=7), resume=True).steps == 3
    assert train.run(p(max_steps=4, batch_size=32), resume=True, force=True).steps == 4
    result = CliRunner().invoke(app, ["train", "--help"])
    assert "--force-resume" in result.output


# -- 11: scores-only manifests and npy shards ---------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import shapes_crop

    tmp = tmp_path_factory.mktemp("hard")
    shapes_crop(tmp, 48, seed=2)
    train.run(TrainParams(input=tmp / "crop", out=tmp / "train", metrics=tmp / "train.json", **{**TINY, "max_steps": 2}))
    return tmp / "train" / "checkpoint.pt"


def gen(out: Path, ckpt: Path, **kw: object) -> None:
    generate.run(GenerateParams(checkpoint=ckpt, out=out, batch_size=32, threads=1, writers=0, **kw))


def test_scores_only_names_no_missing_files(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "g"
    gen(out, checkpoint, count=9, oversample=2)          # an earlier full run leaves images and a manifest
    gen(out, checkpoint, count=6, oversample=2, scores_only=True)
    manifest = out / "manifest.jsonl"
    assert not manifest.exists() or all((out / r.file).exists() for r in read_manifest(manifest))
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"seed", "label", "label_id", "score", "rank"} <= set(rows[0])
    assert not (out / "images").exists()
    with pytest.raises(export.ExportError, match="scores-only"):
        export.run(ExportParams(input=out, out=tmp_path / "exp"))


def test_npy_rerun_leaves_no_stale_shards(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "g"
    gen(out, checkpoint, count=20, oversample=1, format="npy", shard_size=8)
    assert len(list(out.glob("shard-*.npy"))) == 3
    gen(out, checkpoint, count=6, oversample=1, format="npy", shard_size=8)
    named = {r.file for r in read_manifest(out / "manifest.jsonl")}
    assert {p.name for p in out.glob("*.npy")} == named == {"shard-00-00000.npy"}
    gen(out, checkpoint, count=6, oversample=1, format="png")
    assert not list(out.glob("*.npy"))


# -- 15: export readers refuse paths outside the export ------------------------------------------------


@pytest.mark.parametrize("bad", ["{secret}", "../secret.png", "c0/../../secret.png"])
def test_export_readers_refuse_paths_outside_the_export(tmp_path: Path, checkpoint: Path, bad: str) -> None:
    from PIL import Image

    from pipeline import load_export
    from pipeline.evaluate.evaluate import load_export_set

    gen(tmp_path / "g", checkpoint, count=6, oversample=1)
    root = tmp_path / "exp"
    export.run(ExportParams(input=tmp_path / "g", out=root))
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(secret)
    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["file"] = bad.format(secret=secret)
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ManifestError, match="relative path inside"):
        load_export(root)[0]
    with pytest.raises(ManifestError, match="relative path inside"):
        load_export_set(root)


def test_export_readers_refuse_a_link_out_of_the_export(tmp_path: Path, checkpoint: Path) -> None:
    from pipeline import load_export

    gen(tmp_path / "g", checkpoint, count=6, oversample=1)
    root = tmp_path / "exp"
    export.run(ExportParams(input=tmp_path / "g", out=root))
    first = next(csv.DictReader(open(root / "manifest.csv", newline="")))["file"]
    (tmp_path / "secret.png").write_bytes((root / first).read_bytes())
    (root / first).unlink()
    (root / first).symlink_to(tmp_path / "secret.png")
    with pytest.raises(ManifestError, match="outside"):
        load_export(root)
