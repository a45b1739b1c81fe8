"""One checkpoint dict (nanoGPT-style), saved atomically, loaded without unpickling code.

Keys: format, version, model_config, classes, params, g, d, g_ema, opt_g, opt_d, step,
rng, history. `torch.load(weights_only=True)` refuses anything but tensors and plain
containers, so a checkpoint from elsewhere cannot run code on load.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from pipeline.shared.errors import PipelineError
from pipeline.shared.io import atomic_path, file_digest

FORMAT = 1


class CheckpointError(PipelineError):
    """A checkpoint that is missing, unreadable or of another format."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    # Saved through a file object: given a path, torch names the zip's inner folder after the
    # (random) temp file, so the same state gave different bytes on every run. Serialised in
    # memory first: torch's own writer reports a full disk as a RuntimeError with no errno,
    # a plain write raises OSError(ENOSPC), which the CLI turns into one line naming the folder.
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buffer.getbuffer())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; run `augment train` (or `dvc repro train`) first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a torn or foreign file: say which, don't dump a traceback
        raise CheckpointError(f"checkpoint {path} cannot be read safely ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an augment checkpoint of format {FORMAT}")
    return state


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")
