"""No stage deletes or overwrites what it did not write: a folder holding a user's files is refused, untouched.

Every stage that writes a folder runs here for real (tiny settings) on the outputs of `tiny_run`.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from pipeline.crawl import crawl
from pipeline.crop import crop
from pipeline.evaluate import evaluate
from pipeline.export import export
from pipeline.generate import generate
from pipeline.report import report
from pipeline.shared.config import (CrawlParams, CropParams, EvaluateParams, ExportParams, GenerateParams, ReportParams,
                                    TrainParams)
from pipeline.shared.ownership import MARKER, OWN, FolderNotOwnedError, check_out, claim_out, drop_unrewritten, foreign_entries
from pipeline.train import train
from tests.conftest import REPO, bin_path


def _runners(t: dict[str, Path], scratch: Path) -> dict[str, Callable[[Path], object]]:
    """Each stage writing into the folder it is given, from the tiny run's inputs."""
    ckpt = t["train"] / "checkpoint.pt"
    return {
        "crawl": lambda out: crawl.run(CrawlParams(source="folder", root=t["shapes"], out=out)),
        "crop": lambda out: crop.run(CropParams(input=t["raw"], out=out, metrics=scratch / "crop.json")),
        "train": lambda out: train.run(TrainParams(input=t["crop"], out=out, metrics=scratch / "train.json",
                                                   batch_size=16, z_dim=8, g_channels=8, d_channels=8, embed_dim=4,
                                                   max_steps=2, threads=1, judge_steps=0)),
        "generate": lambda out: generate.run(GenerateParams(checkpoint=ckpt, out=out, real=t["crop"], count=6,
                                                            oversample=1, batch_size=16, threads=1, writers=0)),
        "export": lambda out: export.run(ExportParams(input=t["gen"], out=out)),
        "evaluate": lambda out: evaluate.run(EvaluateParams(export=t["export"], real=t["crop"], checkpoint=ckpt, out=out,
                                                            metrics=scratch / "evaluate.json", steps=1, feature_steps=1,
                                                            seeds=1, batch_size=16, fractions=[], compare_rankings=False,
                                                            feature_samples=10, threads=1)),
        "report": lambda out: report.run(ReportParams(export=t["export"], generated=t["gen"], real=t["crop"], train=t["train"],
                                                      evaluate=t["evaluate"], metrics=t["metrics"] / "evaluate.json",
                                                      out=out, per_class=2)),
    }


STAGES = ["crawl", "crop", "train", "generate", "export", "evaluate", "report"]


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under folder with its bytes (None for a folder): what 'left byte-identical' compares."""
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def _add_users_things(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "mine").mkdir()
    (folder / "mine" / "keep.png").write_bytes(b"not from augment")


@pytest.mark.parametrize("stage", STAGES)
def test_a_users_folder_is_refused_and_left_byte_identical(stage: str, tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    out = tmp_path / "out"
    _add_users_things(out)
    before = _tree(out)
    with pytest.raises(FolderNotOwnedError) as err:
        _runners(tiny_run, tmp_path)[stage](out)
    message = str(err.value)
    assert "\n" not in message and str(out) in message and "'mine/'" in message and "'notes.txt'" in message
    assert _tree(out) == before


@pytest.mark.parametrize("stage", STAGES)
def test_the_stages_own_output_is_replaced_but_not_with_a_users_file_in_it(stage: str, tmp_path: Path,
                                                                          tiny_run: dict[str, Path]) -> None:
    run = _runners(tiny_run, tmp_path)[stage]
    out = tmp_path / "out"
    run(out)
    first = _tree(out)
    assert json.loads(first[MARKER])["owner"].split(":")[0] == stage
    run(out)  # its own earlier output: replaced, nothing left over
    assert set(_tree(out)) == set(first)
    (out / "notes.txt").write_text("mine\n")
    deep = next(p for p in sorted(out.rglob("*")) if p.is_dir()) if any(p.is_dir() for p in out.rglob("*")) else out
    (deep / "mine.txt").write_text("also mine\n")  # a user's file inside one of the stage's own subfolders
    before = _tree(out)
    with pytest.raises(FolderNotOwnedError, match="notes.txt"):
        run(out)
    assert _tree(out) == before


STALE = {"crawl": "images/0123456789abcdef0123456789abcdef.png", "crop": "shard-09999.npy", "train": "samples/epoch-999.png",
         "generate": "images/0_c0/seed999999.png", "export": "0_c0/seed999999.png", "evaluate": "per_class_old.csv"}


@pytest.mark.parametrize("stage", list(STALE))
def test_an_earlier_runs_leftovers_are_cleared(stage: str, tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    """A file of the stage's own kind that this run does not write (a longer earlier run's) is gone after it."""
    run = _runners(tiny_run, tmp_path)[stage]
    out = tmp_path / "out"
    run(out)
    (out / STALE[stage]).parent.mkdir(parents=True, exist_ok=True)
    (out / STALE[stage]).write_bytes(b"from an earlier run")
    run(out)
    assert not (out / STALE[stage]).exists()


def test_only_files_a_run_did_not_write_again_are_dropped(tmp_path: Path) -> None:
    out = tmp_path / "evaluate"
    claim_out(out, "evaluate")
    for name in ("kept.csv", "rewritten.csv", "stale.png"):
        (out / name).write_text("earlier run")
        os.utime(out / name, ns=(10**18, 10**18))  # an earlier run's: written long before this one
    earlier = claim_out(out, "evaluate")
    (out / "tmp.csv").write_text("this run")
    (out / "tmp.csv").replace(out / "rewritten.csv")  # as io.atomic_path writes
    with open(out / "kept.csv", "a") as fh:  # rewritten in place: a new mtime
        fh.write(" and this run")
    assert drop_unrewritten(out, earlier) == ["stale.png"]
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "kept.csv", "rewritten.csv"]


def test_another_stages_folder_and_a_file_as_out_are_refused(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    with pytest.raises(FolderNotOwnedError, match=r"holds the output of augment crop, not generate"):
        check_out(tiny_run["crop"], "generate")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderNotOwnedError, match="is not a folder"):
        check_out(tmp_path / "file", "export")
    assert check_out(tmp_path / "absent", "export") is False and not (tmp_path / "absent").exists()


def test_patterns_go_component_by_component(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    claim_out(out, "generate")
    for rel in ("images/0_a/seed1.png", "images/0_a/notes.txt", "images/notes.txt", "shard-00-00000.npy",
                ".grid.png.abcd1234.tmp", "images/0_a/.seed2.png.k3_x9a0q.tmp", "grid.png", "other/seed1.png"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"")
    assert sorted(foreign_entries(out, OWN["generate"])) == ["images/0_a/notes.txt", "images/notes.txt", "other/"]


def test_an_unmarked_crawl_of_the_same_source_is_resumed(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    """A crawl folder from before the marker existed names its source in meta.json: the crawl keeps using it."""
    out = tmp_path / "raw"
    crawl.run(CrawlParams(source="folder", root=tiny_run["shapes"], out=out))
    (out / MARKER).unlink()
    crawl.run(CrawlParams(source="folder", root=tiny_run["shapes"], out=out))
    (out / MARKER).unlink()
    with pytest.raises(FolderNotOwnedError, match="not written by augment crawl"):
        crawl.run(CrawlParams(source="fashion-mnist", out=out))


def test_the_cli_refuses_with_one_line_naming_the_folder(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    out = tmp_path / "datasets"
    _add_users_things(out)
    before = _tree(out)
    proc = subprocess.run([bin_path("augment"), "export", "--input", str(tiny_run["gen"]), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {out} holds 'mine/', 'notes.txt', not written by augment export; use another --out (nothing was changed)")
    assert _tree(out) == before
