"""Within-class variety: the measures, evaluate's per-class report, and train's collapse warning."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline.shared.config import TrainParams
from pipeline.shared.variety import class_variety, msssim_diversity, pixel_spread, variety_report
from pipeline.train import dataset, train

TINY = dict(epochs=1, batch_size=16, z_dim=16, g_channels=8, d_channels=8, embed_dim=8, judge_steps=0,
            checkpoint_every=1000, grid_per_class=8)


def faces(n: int, seed: int) -> np.ndarray:
    """n different 32 px RGB 'images': random blobs on random backgrounds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    out = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        out[i] = rng.integers(0, 256, 3)
        cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(4, 10)
        out[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return out


def test_one_image_repeated_has_no_variety_and_distinct_images_do() -> None:
    x = faces(40, 0)
    assert pixel_spread(np.repeat(x[:1], 20, 0)) == 0.0 and msssim_diversity(np.repeat(x[:1], 20, 0)) < 1e-3
    assert pixel_spread(x) > 0.15 and msssim_diversity(x) > 0.3
    # N x H x W x C (shards) and N x C x H x W (tensors) give the same figure
    assert abs(pixel_spread(torch.from_numpy(x).permute(0, 3, 1, 2)) - pixel_spread(x)) < 1e-6


def test_a_class_of_near_copies_is_named_in_the_notes_and_a_varied_one_is_not() -> None:
    real, real_labels = faces(80, 1), np.arange(80) % 2
    varied = faces(40, 2)
    copies = np.clip(np.repeat(varied[:1], 20, 0).astype(int) + np.random.default_rng(3).integers(-3, 4, (20, 32, 32, 3)),
                     0, 255).astype(np.uint8)          # one image with a little noise
    fake = np.concatenate([varied[:20], copies])
    fake_labels = np.array([0] * 20 + [1] * 20)
    report = variety_report(class_variety(fake, fake_labels, real, real_labels, ["varied", "copies"]))
    assert report["collapsed_classes"] == ["copies"]
    assert report["variety"]["varied"]["ratio"] > 0.7 and report["variety"]["copies"]["ratio"] < 0.1
    assert len(report["variety_notes"]) == 1 and "'copies'" in report["variety_notes"][0]


def test_train_warns_when_g_ignores_its_noise(tmp_path: Path, crop_dir: Path, caplog) -> None:
    params = TrainParams(input=crop_dir, out=tmp_path / "run", metrics=tmp_path / "m.json", **TINY)
    data = dataset.load_training_data(crop_dir, torch.device("cpu"))
    trainer = train.Trainer(params, data, torch.device("cpu"), "fp32")
    with torch.no_grad():   # G whose first layer ignores z: every sample of a class is the same image
        trainer.g_ema.project.weight[:, : trainer.cfg.z_dim] = 0
    ignored = trainer.sample_grid("ignores-z")
    with caplog.at_level(logging.WARNING, logger="pipeline.train.train"):
        trainer.warn_if_collapsed(1, ignored)
    assert all(v.ratio < 0.01 for v in ignored) and len(ignored) == 3
    assert "epoch 1: bar, disc, square drew near-identical images" in caplog.text
    fresh = train.Trainer(params, data, torch.device("cpu"), "fp32").sample_grid("init")   # the same G, z intact
    assert min(v.ratio for v in fresh) > 10 * max(v.ratio for v in ignored)


def test_real_figures_kept_between_calls_are_the_ones_measured_and_are_read_back() -> None:
    real, real_labels = faces(80, 1), np.arange(80) % 2
    fake, fake_labels = faces(40, 2), np.arange(40) % 2
    kept: dict[str, tuple[float, float]] = {}
    first = class_variety(fake, fake_labels, real, real_labels, ["a", "b"], real_figures=kept)
    assert first == class_variety(fake, fake_labels, real, real_labels, ["a", "b"])   # keeping changes nothing
    assert kept == {v.label: (v.pixel_spread_real, v.msssim_diversity_real) for v in first}
    kept["a"] = (0.5, 0.25)          # a later call reads the kept figures instead of measuring again
    again = class_variety(fake[::-1], fake_labels[::-1], real, real_labels, ["a", "b"], real_figures=kept)
    assert (again[0].pixel_spread_real, again[0].msssim_diversity_real) == (0.5, 0.25)
    assert again[1].pixel_spread_real == first[1].pixel_spread_real
