"""The `augment` command: one Typer app, one subcommand per pipeline stage."""
from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from pipeline import __version__
from stages import crawl, crop, evaluate, export, generate, train

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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


app.command("crawl")(crawl.command)
app.command("crop")(crop.command)
app.command("train")(train.command)
app.command("generate")(generate.command)
app.command("export")(export.command)
app.command("evaluate")(evaluate.command)


def main() -> None:
    app()
