"""Issue 21: corrupt inputs and a full disk at every stage are one-line errors naming the file, never a traceback.

Each test copies one tiny chain (shapes through every stage, `tiny_pipeline`), breaks one file the
way a failed copy or a full disk would, and runs the real `augment <stage>` command on it.
docs/reliability.md lists each fault x stage with the test that shows it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import tiny_params


@pytest.fixture
def work(tmp_path: Path, tiny_chain: Path) -> Path:
    """A private copy of the tiny chain, its params.yaml naming it by absolute paths; returns its folder."""
    root = tmp_path / "w"
    shutil.copytree(tiny_chain, root)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(root)))
    return root


def augment(root: Path, *args: str) -> str:
    """Run `augment <args>` on the copy; it must fail cleanly: exit 1 or 2 and exactly one `error:` line."""
    result = CliRunner().invoke(app, [*args, "--params", str(root / "params.yaml")], terminal_width=500)
    assert isinstance(result.exception, SystemExit) and result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def cut_short(path: Path, keep: float = 0.5) -> None:
    """What a failed copy leaves: the first part of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- a shard cut short -----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["train"], ["export", "--include-real"], ["evaluate"]])
def test_a_crop_shard_cut_short_is_named(work: Path, args: list[str]) -> None:
    shard = work / "crop" / "shard-00000.npy"
    cut_short(shard)
    before = snapshot(work / "export")
    line = augment(work, *args)
    assert str(shard) in line and "not a complete array shard" in line
    assert snapshot(work / "export") == before  # export's previous output is untouched


def test_a_crawl_shard_cut_short_is_named_by_crop(work: Path) -> None:
    """Shard inputs of crop (as the Fashion-MNIST import writes them)."""
    from pipeline.shared.io import write_json, write_shards
    from pipeline.shared.manifest import Record, write_manifest
    from tests.conftest import draw_shapes

    raw = work / "raw"
    shutil.rmtree(raw)
    images, labels = draw_shapes(40, 28, seed=7)
    locations = write_shards(raw, images, 40, prefix="train")
    write_manifest(raw / "manifest.jsonl", [Record(file=f, index=i, label=f"c{c}", label_id=int(c))
                                            for (f, i), c in zip(locations, labels)])
    write_json(raw / "meta.json", {"classes": ["c0", "c1", "c2"]})
    cut_short(raw / "train-00000.npy")
    line = augment(work, "crop")
    assert str(raw / "train-00000.npy") in line and "not a complete array shard" in line


def test_a_manifest_row_a_shard_does_not_have_is_named(work: Path) -> None:
    lines = (work / "crop" / "manifest.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"index":2,', '"index":999,')
    (work / "crop" / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    line = augment(work, "train")
    assert str(work / "crop" / "shard-00000.npy") in line and "row 999" in line


# --- a manifest line that is not JSON, or has the wrong types --------------------------------------


@pytest.mark.parametrize("stage, folder, bad", [
    ("train", "crop", "{not json"),
    ("evaluate", "crop", '{"file": "shard-00000.npy", "index": "3", "label": "c0", "label_id": 0}'),
    ("crop", "raw", '{"file": 7}'),
    ("export", "gen", '{"file": "images/x.png", "seed": "7", "label": "c0", "label_id": 0}'),
])
def test_a_bad_manifest_line_is_named_with_its_number(work: Path, stage: str, folder: str, bad: str) -> None:
    manifest = work / folder / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    lines[2] = bad
    manifest.write_text("\n".join(lines) + "\n")
    line = augment(work, stage)
    assert f"{manifest}:3:" in line


def test_a_bad_export_table_row_is_named_with_its_line(work: Path) -> None:
    table = work / "export" / "manifest.csv"
    lines = table.read_text().splitlines()
    file, label, _, rest = lines[4].split(",", 3)
    lines[4] = ",".join([file, label, "two", rest])   # label_id
    table.write_text("\n".join(lines) + "\n")
    line = augment(work, "evaluate")
    assert f"{table}:5: label_id 'two' is not a whole number" in line


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_meta_json_that_is_not_json_is_named(work: Path, stage: str) -> None:
    (work / "crop" / "meta.json").write_text('{"classes": ["c0", ')
    line = augment(work, stage)
    assert f"{work / 'crop' / 'meta.json'}:1: not JSON" in line


# --- a PNG that does not decode --------------------------------------------------------------------


def test_a_generated_png_that_does_not_decode_stops_the_export(work: Path) -> None:
    png = sorted((work / "gen" / "images").rglob("*.png"))[5]
    cut_short(png)
    before = snapshot(work / "export")
    line = augment(work, "export")
    assert str(png) in line and "not a readable image" in line
    assert snapshot(work / "export") == before
    assert [p.name for p in work.iterdir() if p.name.startswith(".export")] == []  # its staging folder is gone


def test_an_exported_png_that_does_not_decode_stops_evaluate_before_training(work: Path) -> None:
    png = sorted((work / "export").rglob("*.png"))[3]
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    before = snapshot(work / "evaluate"), (work / "metrics" / "evaluate.json").read_bytes()
    line = augment(work, "evaluate")
    assert str(png) in line and "not a readable image" in line
    assert (snapshot(work / "evaluate"), (work / "metrics" / "evaluate.json").read_bytes()) == before


# --- a checkpoint cut short ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["generate"], ["evaluate"], ["train", "--resume"]])
def test_a_checkpoint_cut_short_is_named(work: Path, args: list[str]) -> None:
    ckpt = work / "train" / "checkpoint.pt"
    cut_short(ckpt, 0.7)
    before = snapshot(work / "gen")
    line = augment(work, *args)
    assert str(ckpt) in line and "cannot be read safely" in line
    assert snapshot(work / "gen") == before  # generate stops before it clears its previous output


# --- a params.yaml that is not YAML ----------------------------------------------------------------


@pytest.mark.parametrize("stage", ["crawl", "crop", "train", "generate", "export", "evaluate"])
def test_a_params_file_that_is_not_yaml_is_named(work: Path, stage: str) -> None:
    (work / "params.yaml").write_text("train:\n  epochs: [1, 2\n")
    line = augment(work, stage)
    assert f"{work / 'params.yaml'}: not valid YAML" in line


# --- a full disk -----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mounts a tmpfs of a given size (needs root, or CAP_SYS_ADMIN); skips where that is refused."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        if os.geteuid() != 0:
            pytest.skip("a small tmpfs needs root to mount; a full disk cannot be made without one here")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); a full disk cannot be made")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def retarget(root: Path, stage: str, key: str, value: object) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[stage][key] = str(value) if isinstance(value, Path) else value
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def assert_out_of_space(line: str, out: Path) -> None:
    assert f"out of space writing {out} (No space left on device)" in line, line


def no_temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".staged-")]


def first_run_on_a_small_disk(work: Path, small_disk: Callable[[str, str], Path], stage: str, size: str,
                              *args: str) -> Path:
    """Point the stage's out at a fresh tmpfs of `size` and run it there once, successfully; returns out."""
    out = small_disk("disk", size) / stage
    retarget(work, stage, "out", out)
    done = CliRunner().invoke(app, [stage, *args, "--params", str(work / "params.yaml")])
    assert done.exit_code == 0, done.output
    return out


def test_export_onto_a_full_disk_keeps_the_previous_export(work: Path, small_disk: Callable[[str, str], Path]) -> None:
    out = first_run_on_a_small_disk(work, small_disk, "export", "512k")
    before = snapshot(out)
    assert "manifest.csv" in before
    line = augment(work, "export", "--include-real")   # twice the images while the previous export is still there
    assert_out_of_space(line, out)
    assert snapshot(out) == before and sorted(p.name for p in out.parent.iterdir()) == ["export"]


def test_crop_onto_a_full_disk_keeps_the_previous_crop(work: Path, small_disk: Callable[[str, str], Path]) -> None:
    out = first_run_on_a_small_disk(work, small_disk, "crop", "1m")
    before = snapshot(out)
    line = augment(work, "crop", "--size", "128")      # 16x the bytes of the 32 px shards
    assert_out_of_space(line, out)
    assert snapshot(out) == before and no_temp_files(out.parent) == []


def test_train_onto_a_full_disk_keeps_the_last_checkpoint(work: Path, small_disk: Callable[[str, str], Path]) -> None:
    from pipeline.shared.checkpoint import load_checkpoint

    # room for a ~1 MB checkpoint and its next version's temp file
    out = first_run_on_a_small_disk(work, small_disk, "train", "3m", "--max-steps", "2")
    saved = (out / "checkpoint.pt").read_bytes()
    retarget(work, "train", "g_channels", 64)   # a checkpoint too big for the disk
    line = augment(work, "train")
    assert_out_of_space(line, out)
    assert (out / "checkpoint.pt").read_bytes() == saved and load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert no_temp_files(out.parent) == []


def test_generate_onto_a_full_disk_keeps_the_previous_output(work: Path, small_disk: Callable[[str, str], Path]) -> None:
    """generate renders beside its folder and swaps in only a complete run: a full disk leaves the previous run."""
    out = first_run_on_a_small_disk(work, small_disk, "generate", "1m")
    before = snapshot(out)
    assert "manifest.jsonl" in before
    line = augment(work, "generate", "--count", "2000")   # 2,000 PNGs of a 4 KiB page each: far over 1 MiB
    assert_out_of_space(line, out)
    assert snapshot(out) == before and sorted(p.name for p in out.parent.iterdir()) == ["generate"]


def test_evaluate_onto_a_full_disk_keeps_the_previous_metrics(work: Path, small_disk: Callable[[str, str], Path]) -> None:
    disk = small_disk("disk", "16k")   # too small for its plots
    retarget(work, "evaluate", "out", disk / "evaluate")
    before = (work / "metrics" / "evaluate.json").read_bytes()
    line = augment(work, "evaluate")
    assert_out_of_space(line, disk / "evaluate")
    assert (work / "metrics" / "evaluate.json").read_bytes() == before and no_temp_files(disk) == []


def test_out_of_space_names_the_output_a_temp_file_belongs_to() -> None:
    import errno

    from stages.common import out_of_space

    out = Path("/data/export")
    staged = OSError(errno.ENOSPC, "No space left on device", "/data/.export.ab12cd34/3_Dress/seed1.png")
    assert out_of_space(staged, [out]).startswith("out of space writing /data/export (No space left on device)")
    nameless = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert "writing /data/export, /m/x.json (Disk quota exceeded)" in out_of_space(nameless, [out, Path("/m/x.json")])
