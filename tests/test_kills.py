"""Issue 21: SIGKILL at any moment of crop, train, generate, export or evaluate leaves nothing half-visible,
and the re-run equals an uninterrupted run (train: resumed from its last checkpoint, the same weights).

Each stage runs as a real `augment <stage>` process on a tiny chain; after an uninterrupted run
(the reference) it is killed (SIGKILL to its process group) at seeded random times and just before
seeded random moves into place, what a reader would see is checked after every kill, and then one
re-run must reproduce the reference.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import tiny_params

pytestmark = pytest.mark.slow
# Per stage: two kills just before seeded random moves of a finished file into place (os.replace,
# os.rename), and one at a seeded random time in the second half of the reference run.
KILLS_AT_MOVES = 2


# The real `augment` command, with os.replace and os.rename counted: it kills itself with SIGKILL just
# before the Nth one (KILL_AT), the moment a finished temp file or folder would be moved into place,
# and writes how many it made to COUNT_TO on a normal exit. Nothing in the package knows about it.
RUN_AUGMENT = """
import atexit, os, signal, sys
kill_at, count = int(os.environ["KILL_AT"]), [0]
def counted(real):
    def move(*args, **kwargs):
        count[0] += 1
        if count[0] == kill_at:
            os.killpg(0, signal.SIGKILL)
        return real(*args, **kwargs)
    return move
os.replace, os.rename = counted(os.replace), counted(os.rename)
atexit.register(lambda: open(os.environ["COUNT_TO"], "w").write(str(count[0])))
from stages.cli import app
sys.argv[0] = "augment"
app()
"""


def augment(root: Path, *args: str, kill_after: float | None = None, kill_at: int = 0) -> tuple[float, int]:
    """Run `augment <args>` in its own process group; SIGKILL the group after `kill_after` s, or just before
    its `kill_at`-th move into place. Returns (seconds, or moves made when it exits normally; exit code)."""
    started = time.perf_counter()
    count = root.parent / "moves"
    proc = subprocess.Popen([sys.executable, "-c", RUN_AUGMENT, *args, "--params", str(root / "params.yaml")], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT": str(kill_at), "COUNT_TO": str(count)})
    try:
        _, err = proc.communicate(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        if kill_after is None:
            raise
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    if kill_after is None and not kill_at:
        assert proc.returncode == 0, err.decode()[-3000:]
        return time.perf_counter() - started, int(count.read_text())
    return time.perf_counter() - started, proc.returncode


# --- what a reader sees -------------------------------------------------------------------------------


def readable(path: Path) -> None:
    """A file under its final name is complete: it parses or decodes as what its name says."""
    from pipeline.shared.checkpoint import load_checkpoint
    from pipeline.shared.io import read_image, read_json
    from pipeline.shared.manifest import read_manifest

    if path.suffix == ".json":
        read_json(path)
    elif path.suffix == ".png":
        read_image(path)
    elif path.suffix == ".npy":
        np.load(path, allow_pickle=False)
    elif path.suffix == ".pt":
        load_checkpoint(path)
    elif path.suffix == ".jsonl":
        read_manifest(path)


def visible_files(folder: Path) -> list[Path]:
    """What a reader (or DVC) sees: files whose names and folders are not hidden temp names."""
    return [p for p in folder.rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def fingerprint(stage: str, root: Path) -> dict[str, Any]:
    """The output of a stage, less what measures time (seconds in metrics and meta)."""
    params = tiny_params(root)[stage]
    out = Path(params["out"])
    if stage == "train":
        from pipeline.shared.checkpoint import load_checkpoint

        state = load_checkpoint(out / "checkpoint.pt")
        return {"step": state["step"], "history": state["history"],
                **{f"{key}.{name}": t for key in ("g", "d", "g_ema") for name, t in state[key].items()}}
    files: dict[str, Any] = {str(p.relative_to(out)): p.read_bytes() for p in visible_files(out)}
    for name in ("meta.json", "params.json"):
        if name in files:
            files[name] = {k: v for k, v in json.loads(files[name]).items() if k != "timing"}
    if "metrics" in params:
        files["metrics"] = {k: v for k, v in json.loads(Path(params["metrics"]).read_text()).items() if k != "seconds"}
    return files


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
               for k in a)


def check_after_kill(stage: str, root: Path, reference: dict[str, Any]) -> str:
    """Nothing half-visible; a manifest names only complete files; the previous output is whole or replaced."""
    from pipeline.shared.manifest import read_manifest

    params = tiny_params(root)[stage]
    out = Path(params["out"])
    for path in visible_files(out) if out.exists() else []:
        readable(path)
    if "metrics" in params and Path(params["metrics"]).exists():
        readable(Path(params["metrics"]))
    manifest = out / "manifest.jsonl"
    if stage in ("crop", "generate", "export") and manifest.exists():
        for r in read_manifest(manifest):
            readable(out / r.file)
        # Runs are deterministic, so the previous complete output and the new one are the same bytes.
        assert same(fingerprint(stage, root), reference), f"{stage}: a manifest beside files of another run"
        return "complete"
    if stage == "export":   # renamed into place whole: absent only between the two renames
        assert not out.exists(), "export: a folder without its manifest"
    if stage == "train" and (out / "checkpoint.pt").exists():
        return f"checkpoint at step {fingerprint(stage, root)['step']}"
    return "absent" if stage != "evaluate" else "files complete"


def leftovers(stage: str, root: Path) -> list[str]:
    params = tiny_params(root)[stage]
    out = Path(params["out"])
    hidden = [str(p) for p in out.rglob("*") if p.name.startswith(".")]
    beside = [str(p) for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    metrics = Path(params["metrics"]).parent if "metrics" in params else None
    temp = [str(p) for p in metrics.iterdir() if p.name.endswith(".tmp")] if metrics else []
    return hidden + beside + temp


@pytest.mark.parametrize("stage", ["crop", "train", "generate", "export", "evaluate"])
def test_sigkill_at_any_moment_leaves_nothing_half_visible_and_the_rerun_equals_a_clean_run(
        tmp_path: Path, tiny_chain: Path, stage: str) -> None:
    root = tmp_path / "w"
    shutil.copytree(tiny_chain, root)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(root)))
    out = Path(tiny_params(root)[stage]["out"])
    seconds, moves = augment(root, stage)
    reference = fingerprint(stage, root)
    rng = random.Random(f"kill {stage}")
    # train: the kills at a move hit fresh runs (their moves are the reference's), the timed one a resumed run.
    kills = [{"kill_at": n} for n in sorted(rng.sample(range(1, moves + 1), KILLS_AT_MOVES))]
    kills.append({"kill_after": seconds * rng.uniform(0.5, 1.0)})
    seen = []
    for kill in kills:
        resume = ["--resume"] if stage == "train" and "kill_after" in kill and (out / "checkpoint.pt").exists() else []
        _, code = augment(root, stage, *resume, **kill)
        seen.append((kill, code, check_after_kill(stage, root, reference)))
    resume = ["--resume"] if stage == "train" and (out / "checkpoint.pt").exists() else []
    augment(root, stage, *resume)
    assert same(fingerprint(stage, root), reference), f"{stage}: the re-run differs from a clean run (kills: {seen})"
    assert leftovers(stage, root) == [], seen
    print(stage, f"{moves} moves into place;", seen)
