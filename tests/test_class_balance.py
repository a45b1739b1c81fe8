"""Classes of unequal size: G's training labels follow the class frequencies, and generate's
per-class quotas follow a chosen distribution (issue 10)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from pipeline.generate import generate
from pipeline.generate.sampling import class_quotas
from pipeline.shared.config import GenerateParams, TrainParams
from pipeline.shared.manifest import read_manifest
from pipeline.train import dataset, train
from pipeline.train.dataset import label_weights

COUNTS = {"c0": 48, "c1": 18, "c2": 6}          # 8 : 3 : 1


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A crop folder of shapes in three classes of 48, 18 and 6 images, and a briefly trained model."""
    from PIL import Image

    from pipeline.crawl import crawl
    from pipeline.crop import crop
    from pipeline.shared.config import CrawlParams, CropParams
    from tests.conftest import draw_shapes

    tmp = tmp_path_factory.mktemp("skewed")
    for c, (name, n) in enumerate(COUNTS.items()):
        images, labels = draw_shapes(n * 4, 28, seed=c)
        for i, img in enumerate(images[labels == c][:n]):
            (tmp / "shapes" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[..., 0]).save(tmp / "shapes" / name / f"{i}.png")
    crawl.run(CrawlParams(source="folder", root=tmp / "shapes", out=tmp / "raw"))
    crop.run(CropParams(input=tmp / "raw", out=tmp / "crop", metrics=tmp / "crop.json"))
    train.run(TrainParams(input=tmp / "crop", out=tmp / "train", metrics=tmp / "train.json", batch_size=16, z_dim=8,
                          g_channels=8, d_channels=8, embed_dim=4, max_steps=2, threads=1, judge_steps=5))
    return tmp / "crop", tmp / "train" / "checkpoint.pt"


def test_label_weights() -> None:
    assert torch.allclose(label_weights([30, 10, 60], "source"), torch.tensor([0.3, 0.1, 0.6], dtype=torch.float64))
    assert label_weights([30, 10, 60], "balanced") is None
    assert label_weights([20, 20, 20], "source") is None        # equal classes: the uniform draws as before


@pytest.mark.parametrize("sampling, expected", [("source", [8 / 12, 3 / 12, 1 / 12]), ("balanced", [1 / 3] * 3)])
def test_training_draws_generated_labels_by_class_frequency_or_evenly(skewed: tuple[Path, Path], sampling: str,
                                                                      expected: list[float]) -> None:
    crop, _ = skewed
    params = TrainParams(input=crop, batch_size=16, z_dim=8, g_channels=8, d_channels=8, embed_dim=4,
                         label_sampling=sampling)
    data = dataset.load_training_data(crop, torch.device("cpu"))
    assert data.meta["class_counts"] == list(COUNTS.values())
    trainer = train.Trainer(params, data, torch.device("cpu"), "fp32")
    _, y = trainer._noise(6000)
    shares = torch.bincount(y, minlength=3).double() / 6000
    assert torch.allclose(shares, torch.tensor(expected, dtype=torch.float64), atol=0.025), shares


def test_class_quotas() -> None:
    assert class_quotas(10, None, 3) == [4, 3, 3]
    assert class_quotas(12, [48, 18, 6], 3) == [8, 3, 1]
    assert class_quotas(10, [48, 18, 6], 3) == [7, 2, 1]         # 6.67, 2.5, 0.83: largest remainders
    assert class_quotas(5, [1000, 1, 1], 3) == [3, 1, 1]          # every class keeps at least one
    assert sum(class_quotas(1001, [5, 3, 2, 7], 4)) == 1001


@pytest.mark.parametrize("ranked", [True, False])
def test_generate_quotas_follow_the_source_frequencies(tmp_path: Path, skewed: tuple[Path, Path], ranked: bool) -> None:
    _, ckpt = skewed
    common = dict(checkpoint=ckpt, count=24, oversample=3, ranked=ranked, batch_size=32, threads=1, writers=0)
    generate.run(GenerateParams(out=tmp_path / "source", class_distribution="source", **common))
    got = Counter(r.label for r in read_manifest(tmp_path / "source" / "manifest.jsonl"))
    assert got == {"c0": 16, "c1": 6, "c2": 2}
    generate.run(GenerateParams(out=tmp_path / "balanced", **common))
    assert Counter(r.label for r in read_manifest(tmp_path / "balanced" / "manifest.jsonl")) == {"c0": 8, "c1": 8, "c2": 8}
    if not ranked:   # unranked keeps the first candidates of each class, whatever D thinks of them
        seeds = sorted(r.seed for r in read_manifest(tmp_path / "source" / "manifest.jsonl") if r.label == "c2")
        assert seeds == [2, 5]
    else:   # the default rule (filter) above; topk and drs fill the same source quotas
        for rule in ("topk", "drs"):
            generate.run(GenerateParams(out=tmp_path / rule, class_distribution="source", rank=rule, real=skewed[0],
                                        **common))
            assert Counter(r.label for r in read_manifest(tmp_path / rule / "manifest.jsonl")) == {"c0": 16, "c1": 6, "c2": 2}


def test_the_new_keys_have_flags_and_are_validated(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stages.cli import app

    (tmp_path / "none.yaml").write_text("{}\n")   # a params file with no sections: the built-in defaults
    bad = CliRunner().invoke(app, ["generate", "--class-distribution", "zipf", "--params", str(tmp_path / "none.yaml")])
    assert bad.exit_code == 2 and "generate.class_distribution: 'zipf'" in bad.output
    bad = CliRunner().invoke(app, ["train", "--label-sampling", "rare", "--params", str(tmp_path / "none.yaml")])
    assert bad.exit_code == 2 and "train.label_sampling: 'rare'" in bad.output
