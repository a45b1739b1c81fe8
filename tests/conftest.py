"""Shared fixtures: tiny real datasets made through the pipeline's own stages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FMNIST = (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists()
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="Debian's dataset-fashion-mnist is not installed (make test installs it)")

# Tests use few threads: the machines have 2 cores and pytest runs one test at a time.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Hugging Face `datasets` (tests/test_loaders.py): its cache outside the home folder, and no network.
os.environ.setdefault("HF_HOME", os.path.join(tempfile.gettempdir(), "augment-tests-hf"))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def bin_path(name: str) -> str:
    """A console script of the environment running the tests."""
    return str(Path(sys.executable).parent / name)


def draw_shapes(n: int, size: int, seed: int = 0, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """n grey images of simple class-dependent shapes (square, disc, bar): data a GAN can learn fast."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size, 1), np.uint8)
    labels = rng.integers(0, classes, n)
    for i, c in enumerate(labels):
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        r = rng.integers(size // 8, size // 4)
        if c == 0:
            mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
        elif c == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            mask = abs(xx - cx) < max(1, r // 3)
        images[i, mask, 0] = rng.integers(150, 256)
    return images, labels


def shapes_with_splits(root: Path, splits: dict[str, tuple[int, int]]) -> Path:
    """Drawn shapes as `<root>/<split>/c<k>/<i>.png`, {split: (count, seed)}: a folder import with both splits."""
    from PIL import Image

    for split, (n, seed) in splits.items():
        images, labels = draw_shapes(n, 28, seed=seed)
        for i, (img, c) in enumerate(zip(images, labels)):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[..., 0]).save(root / split / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture
def shapes_folder(tmp_path: Path) -> Path:
    """A labelled image folder (<root>/<label>/*.png) of 96 small PNGs, plus one corrupt file."""
    from PIL import Image

    root = tmp_path / "shapes"
    images, labels = draw_shapes(96, 28, seed=1)
    names = ["square", "disc", "bar"]
    for i, (img, c) in enumerate(zip(images, labels)):
        folder = root / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(folder / f"{i:03d}.png")
    (root / "disc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def shapes_crop(tmp: Path, n: int, seed: int) -> Path:
    """`n` drawn shapes as <tmp>/shapes/c<k>/<i>.png, through the real crawl and crop stages: the crop folder."""
    from PIL import Image

    from pipeline.crawl import crawl
    from pipeline.crop import crop
    from pipeline.shared.config import CrawlParams, CropParams

    images, labels = draw_shapes(n, 28, seed=seed)
    for i, (img, c) in enumerate(zip(images, labels)):
        (tmp / "shapes" / f"c{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(tmp / "shapes" / f"c{c}" / f"{i}.png")
    crawl.run(CrawlParams(source="folder", root=tmp / "shapes", out=tmp / "raw"))
    crop.run(CropParams(input=tmp / "raw", out=tmp / "crop", metrics=tmp / "crop.json"))
    return tmp / "crop"


@pytest.fixture
def crop_dir(tmp_path: Path, shapes_folder: Path) -> Path:
    """The crop output for `shapes_folder` at 32 x 32, made by the real crawl and crop stages."""
    from pipeline.crawl import crawl
    from pipeline.crop import crop
    from pipeline.shared.config import CrawlParams, CropParams

    raw, out = tmp_path / "raw", tmp_path / "crop"
    crawl.run(CrawlParams(source="folder", root=shapes_folder, out=raw))
    crop.run(CropParams(input=raw, out=out, metrics=tmp_path / "metrics" / "crop.json", size=32))
    return out


def copy_repo(dest: Path) -> Path:
    """A copy of the project's tracked and new (not ignored) files in `dest`, as a fresh git repo."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    for rel in listed:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def dvc(repo: Path, *args: str, timeout: int = 900) -> str:
    """Run the environment's `dvc` in `repo` (console scripts on PATH); fail the test with its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([bin_path("dvc"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def tiny_params(tmp: Path) -> dict[str, dict]:
    """params.yaml sections for the whole chain at toy sizes, every path under `tmp` (crawl source: tmp/shapes);
    `Path(".")` gives paths relative to the folder the stages run in."""
    return {
        "crawl": {"source": "folder", "root": str(tmp / "shapes"), "out": str(tmp / "raw")},
        "crop": {"input": str(tmp / "raw"), "out": str(tmp / "crop"), "metrics": str(tmp / "metrics" / "crop.json"),
                 "cache": str(tmp / ".crop-cache")},
        "train": {"input": str(tmp / "crop"), "out": str(tmp / "train"), "metrics": str(tmp / "metrics" / "train.json"),
                  "batch_size": 16, "z_dim": 8, "g_channels": 8, "d_channels": 8, "embed_dim": 4, "epochs": 4,
                  "checkpoint_every": 2, "threads": 1, "ema_start": 2, "grid_per_class": 4, "judge_steps": 10},
        "generate": {"checkpoint": str(tmp / "train" / "checkpoint.pt"), "out": str(tmp / "gen"), "real": str(tmp / "crop"),
                     "count": 60, "oversample": 2, "batch_size": 16, "threads": 1, "writers": 0},
        "export": {"input": str(tmp / "gen"), "real": str(tmp / "crop"), "out": str(tmp / "export")},
        "evaluate": {"export": str(tmp / "export"), "real": str(tmp / "crop"), "checkpoint": str(tmp / "train" / "checkpoint.pt"),
                     "out": str(tmp / "evaluate"), "metrics": str(tmp / "metrics" / "evaluate.json"), "steps": 4,
                     "feature_steps": 6, "gain_steps": 5, "seeds": 1, "batch_size": 16, "fractions": [0.5],
                     "rules": ["unranked"], "compare_count": 12, "feature_samples": 40, "grid_per_class": 3, "threads": 1},
    }


def tiny_pipeline(tmp: Path) -> Path:
    """Shapes with train and test splits, run through every stage by the library with `tiny_params`;
    returns the params.yaml that names them all (for `augment <stage> --params`, run in `tmp`).

    Its paths are relative to `tmp`, so a copy of the folder is the same chain, file for file."""
    import contextlib

    import yaml

    from pipeline.crawl import crawl
    from pipeline.crop import crop
    from pipeline.evaluate import evaluate
    from pipeline.export import export
    from pipeline.generate import generate
    from pipeline.shared.config import load_section
    from pipeline.train import train

    with contextlib.chdir(tmp):
        shapes_with_splits(Path("shapes"), {"train": (60, 3), "test": (30, 4)})
        Path("params.yaml").write_text(yaml.safe_dump(tiny_params(Path("."))))
        for name, stage in (("crawl", crawl), ("crop", crop), ("train", train), ("generate", generate),
                            ("export", export), ("evaluate", evaluate)):
            stage.run(load_section(Path("params.yaml"), name))
    return tmp / "params.yaml"


@pytest.fixture(scope="session")
def tiny_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one finished `tiny_pipeline` chain; tests must work on a copy of it."""
    return tiny_pipeline(tmp_path_factory.mktemp("chain")).parent


@pytest.fixture(scope="session")
def tiny_run(tiny_chain: Path) -> dict[str, Path]:
    """The tiny chain's folders by name, for tests that only read them (loaders, report, folder ownership)."""
    return {name: tiny_chain / name for name in ("shapes", "raw", "crop", "train", "gen", "export", "evaluate", "metrics")}
