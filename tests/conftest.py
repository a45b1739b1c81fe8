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

    from pipeline import crawl, crop
    from pipeline.config import CrawlParams, CropParams

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
    from pipeline import crawl, crop
    from pipeline.config import CrawlParams, CropParams

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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every stage once, tiny, through the library: shapes with both splits -> crop -> train -> generate ->
    export -> evaluate. For the tests that read the outputs (loaders, report, folder ownership)."""
    from pipeline import crawl, crop, evaluate, export, generate, train
    from pipeline.config import CrawlParams, CropParams, EvaluateParams, ExportParams, GenerateParams, TrainParams

    tmp = tmp_path_factory.mktemp("tiny")
    shapes_with_splits(tmp / "shapes", {"train": (60, 7), "test": (30, 8)})
    dirs = {name: tmp / name for name in ("raw", "crop", "train", "gen", "export", "evaluate")}
    dirs.update(metrics=tmp / "metrics", shapes=tmp / "shapes")
    crawl.run(CrawlParams(source="folder", root=tmp / "shapes", out=dirs["raw"]))
    crop.run(CropParams(input=dirs["raw"], out=dirs["crop"], metrics=dirs["metrics"] / "crop.json"))
    train.run(TrainParams(input=dirs["crop"], out=dirs["train"], metrics=dirs["metrics"] / "train.json", batch_size=16,
                          z_dim=8, g_channels=8, d_channels=8, embed_dim=4, max_steps=4, threads=1, judge_steps=5))
    generate.run(GenerateParams(checkpoint=dirs["train"] / "checkpoint.pt", out=dirs["gen"], real=dirs["crop"],
                                count=24, oversample=2, batch_size=16, threads=1, writers=0))
    export.run(ExportParams(input=dirs["gen"], real=dirs["crop"], out=dirs["export"]))
    evaluate.run(EvaluateParams(export=dirs["export"], real=dirs["crop"], checkpoint=dirs["train"] / "checkpoint.pt",
                                out=dirs["evaluate"], metrics=dirs["metrics"] / "evaluate.json", steps=2, feature_steps=2,
                                gain_steps=2, seeds=2, batch_size=16, fractions=[0.1], compare_count=12,
                                rules=["unranked", "filter"], feature_samples=12, grid_per_class=2, threads=1))
    return dirs
