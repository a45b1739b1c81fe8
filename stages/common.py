"""What every stage command shares: params loading, option help, errors, progress, summaries."""
from __future__ import annotations

import errno
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichBar, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.shared.config import ParamsError, allowed_values, field_help, load_section
from pipeline.shared.progress import Progress

console = Console(stderr=True)
log = logging.getLogger("augment")

PARAMS_OPTION = typer.Option("--params", "-p", help="Params file to read this stage's section from.", show_default=True)
DEFAULT_PARAMS = Path("params.yaml")
OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT}


def option(model: type, name: str, *flags: str, **kwargs: Any) -> Any:
    """A Typer option that overrides one params.yaml value; help shows the shipped default."""
    description, default = field_help(model, name)
    choices = allowed_values(model, name)
    if choices:
        description += f" One of: {', '.join(map(str, choices))}."
    flag = flags or ("--" + name.replace("_", "-"),)
    return typer.Option(*flag, help=description, show_default=f"{default}, from params.yaml", **kwargs)


def load(params_path: Path, section: str, overrides: dict[str, Any]) -> Any:
    """Load and validate a section, turning a bad value into a one-line error and exit code 2.

    A params file named with --params must exist; only the default `params.yaml` may be
    absent (outside a checkout), and then the built-in defaults are used and said once.
    """
    if not Path(params_path).is_file():
        if Path(params_path) != DEFAULT_PARAMS or Path(params_path).exists():
            fail(f"--params: {params_path} does not exist or is not a file", code=2)
        console.print(f"note: {DEFAULT_PARAMS} not found in {Path.cwd()}; using the built-in defaults", highlight=False)
    try:
        return load_section(params_path, section, overrides)
    except ParamsError as err:
        fail(str(err), code=2)


def execute(title: str, work: Callable[[Progress], Any], writes: Sequence[Path] = ()) -> Any:
    """Run a stage's library call under progress bars; expected failures become one line + exit code.

    `writes` are the folders and files the stage writes: a full disk is one line naming the one
    it filled, and after a run that succeeded the temp files of a killed earlier run are removed
    from them (so the output equals an uninterrupted run's, file for file).
    """
    from pipeline.shared.errors import PipelineError
    from pipeline.shared.io import sweep_temp

    try:
        with progress() as bar:
            result = work(bar)
    except PipelineError as err:
        fail(str(err), code=err.exit_code)
    except OSError as err:
        if err.errno not in OUT_OF_SPACE:
            raise
        fail(out_of_space(err, writes))
    for path in writes:
        sweep_temp(path)
    summary(title, result.rows())
    return result


def out_of_space(err: OSError, writes: Sequence[Path]) -> str:
    """The one line for a full disk (or quota): which output it hit and what to do."""
    where = _written_by(Path(err.filename), writes) if err.filename else None
    if where is None:
        where = ", ".join(str(w) for w in writes) or "its output"
    return (f"out of space writing {where} ({os.strerror(err.errno)}): free space on that disk, "
            "or write elsewhere with --out, and run the stage again")


def _written_by(file: Path, writes: Sequence[Path]) -> Path:
    """The output in `writes` that `file` belongs to (inside it, or a temp name beside it), else its folder."""
    file = file.absolute()
    for out in map(lambda w: Path(w).absolute(), writes):
        for part in (file, *file.parents):
            if part == out or (part.parent == out.parent and part.name.startswith(f".{out.name}.")):
                return out
    return file.parent


def fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class RichProgress(Progress):
    """Renders the library's progress events as rich progress bars on stderr."""

    def __init__(self, bar: RichBar) -> None:
        self.bar = bar
        self.tasks: dict[str, Any] = {}
        self.labels: dict[str, str] = {}

    def start(self, name: str, total: int | None = None, description: str = "") -> None:
        self.labels[name] = description or name
        self.tasks[name] = self.bar.add_task(self.labels[name], total=total, counters="")

    def advance(self, name: str, n: int = 1, **counters: Any) -> None:
        if name not in self.tasks:
            self.start(name)
        text = "  ".join(f"{k}={v}" for k, v in counters.items())
        self.bar.update(self.tasks[name], advance=n, counters=text)

    def finish(self, name: str) -> None:
        # A task done before its planned total (a filter that filled its quotas early) is complete at
        # what it did: a bar left at 5500/20000 would read as a run cut short.
        if name in self.tasks:
            task = self.bar.tasks[self.tasks[name]]
            if task.total is None or task.completed < task.total:
                self.bar.update(self.tasks[name], total=task.completed)


@contextmanager
def progress() -> Iterator[RichProgress]:
    bar = RichBar(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[counters]}"),
        console=console, transient=False,
    )
    with bar:
        yield RichProgress(bar)


def summary(title: str, rows: dict[str, Any]) -> None:
    """The one-screen summary every stage ends with."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(str(key), _fmt(value))
    console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "-"
    return str(value)
