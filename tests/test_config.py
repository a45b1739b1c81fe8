"""Params: the shipped file matches the models, bad values fail early with one clear line."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.shared.config import SECTIONS, ParamsError, load_section, parse_section, read_params_file
from stages.cli import app

REPO = Path(__file__).resolve().parents[1]


def test_shipped_params_equal_model_defaults() -> None:
    shipped = read_params_file(REPO / "params.yaml")
    assert set(shipped) == set(SECTIONS)
    for name, model in SECTIONS.items():
        assert parse_section(name, shipped[name]) == model(), f"params.yaml [{name}] drifted from pipeline/shared/config.py"


@pytest.mark.parametrize("section,key,value,allowed", [
    ("crawl", "source", "flickr", "fashion-mnist"),
    ("train", "loss", "wasserstein", "hinge"),
    ("crop", "size", 48, "32, 64, 96, 128"),
    ("crop", "mode", "smart", "resize"),
    ("generate", "device", "tpu", "cuda"),
])
def test_bad_value_names_key_value_and_allowed(section: str, key: str, value: object, allowed: str) -> None:
    with pytest.raises(ParamsError) as err:
        parse_section(section, {key: value})
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{section}.{key}" in msg and str(value) in msg and allowed in msg


def test_unknown_key_and_section(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"train\.epoch: unknown key .*epochs"):
        parse_section("train", {"epoch": 3})
    bad = tmp_path / "params.yaml"
    bad.write_text("trian: {epochs: 1}\n")
    with pytest.raises(ParamsError, match="unknown section 'trian'"):
        read_params_file(bad)


def test_wrong_type_and_range() -> None:
    with pytest.raises(ParamsError, match=r"train\.epochs: 'many'"):
        parse_section("train", {"epochs": "many"})
    with pytest.raises(ParamsError, match=r"generate\.count: 0"):
        parse_section("generate", {"count": 0})


def test_folder_source_needs_root() -> None:
    with pytest.raises(ParamsError, match="crawl.root is required"):
        parse_section("crawl", {"source": "folder", "root": None})
    assert parse_section("crawl", {"source": "folder"}).root == Path("data/import")  # the DVC dep's default


def test_overrides_beat_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 3, "loss": "bce"}}))
    cfg = load_section(path, "train", {"epochs": 7, "loss": None})
    assert cfg.epochs == 7 and cfg.loss == "bce"
    assert load_section(tmp_path / "missing.yaml", "train").epochs == SECTIONS["train"]().epochs


def test_cli_bad_value_exits_2_before_work(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"loss": "l1", "input": str(tmp_path / "nothing")}}))
    result = CliRunner().invoke(app, ["train", "--params", str(path)])
    assert result.exit_code == 2
    assert "train.loss: 'l1' is not allowed" in result.output
    result = CliRunner().invoke(app, ["crop", "--params", str(path), "--size", "50"])
    assert result.exit_code == 2 and "crop.size: 50" in result.output


def test_every_command_documents_its_flags_with_defaults() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).output.startswith("augment ")
    for command in ("crawl", "crop", "train", "generate", "export"):
        result = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        assert "--params" in result.output and "from params.yaml" in result.output
    assert "--oversample" in runner.invoke(app, ["generate", "--help"], terminal_width=200).output


def test_help_lists_choices_only_for_fields_with_choices() -> None:
    runner = CliRunner(env={"COLUMNS": "400"})   # rich's width: one help line per flag, nothing wrapped
    for command in ("crawl", "crop", "train", "generate", "export", "evaluate", "report"):
        text = runner.invoke(app, [command, "--help"]).output
        assert "<class" not in text, f"augment {command} --help lists types as choices"
    train_help = runner.invoke(app, ["train", "--help"]).output
    assert "One of: bce, lsgan, wgan-gp, hinge." in train_help     # a Literal still lists its values


def test_log_lines_go_through_the_progress_console(tmp_path: Path) -> None:
    """`augment -v`: records are rendered by rich's RichHandler on the console the progress bars use."""
    import logging

    from PIL import Image
    from rich.logging import RichHandler

    from stages.common import console

    pics = tmp_path / "pics" / "cat"
    pics.mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(pics / "a.png")
    (pics / "b.png").write_bytes(b"not a png")
    params = {"crawl": {"source": "folder", "root": str(tmp_path / "pics"), "out": str(tmp_path / "raw")},
              "crop": {"input": str(tmp_path / "raw"), "out": str(tmp_path / "crop"), "metrics": str(tmp_path / "m.json"),
                       "size": 32}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    runner = CliRunner()
    assert runner.invoke(app, ["crawl", "--params", str(path)]).exit_code == 0
    result = runner.invoke(app, ["-v", "crop", "--params", str(path)])
    handlers = logging.getLogger().handlers
    assert len(handlers) == 1 and isinstance(handlers[0], RichHandler) and handlers[0].console is console
    assert result.exit_code == 0, result.output


def test_a_bar_finished_before_its_planned_total_shows_complete_at_what_it_did() -> None:
    """The comparison pool and generate's filter stop when their quotas are full: their bars end at 100%."""
    import io

    from rich.console import Console
    from rich.progress import Progress as RichBar

    from stages.common import RichProgress

    bar = RichBar(console=Console(file=io.StringIO()))
    progress = RichProgress(bar)
    for name, total in (("pool", 20), ("open", None), ("full", 5)):
        progress.start(name, total=total)
        progress.advance(name, 5)
        progress.finish(name)
    totals = {name: bar.tasks[task].total for name, task in progress.tasks.items()}
    assert totals == {"pool": 5, "open": 5, "full": 5}
    assert all(bar.tasks[task].finished for task in progress.tasks.values())
