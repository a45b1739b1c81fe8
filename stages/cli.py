"""The `augment` command: one Typer app, one subcommand per pipeline stage."""
from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer
from rich.logging import RichHandler

from pipeline import __version__
from stages import crawl, crop, evaluate, export, generate, report, train
from stages.common import console

app = typer.Typer(
    name="augment",
    help="Turn an image-board crawl (or an embedded dataset) into a labelled synthetic dataset.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"augment {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    # Log records go through the progress bars' console, so a line logged mid-stage is printed
    # above the live bars instead of tearing them.
    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(name)s: %(message)s",
                        datefmt="[%X]", handlers=[handler], force=True)
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


app.command("crawl")(crawl.command)
app.command("crop")(crop.command)
app.command("train")(train.command)
app.command("generate")(generate.command)
app.command("export")(export.command)
app.command("evaluate")(evaluate.command)
app.command("report")(report.command)


def main() -> None:
    app()
