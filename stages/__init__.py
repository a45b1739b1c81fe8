"""Thin Typer commands, one module per pipeline stage."""
