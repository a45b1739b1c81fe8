"""Ranked generation keeps exactly the best candidates, reproducibly, in bounded memory; export loads."""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.export import export
from pipeline.generate import generate
from pipeline.generate.sampling import Sampler, TopK, seeded_normal
from pipeline.shared.config import ExportParams, GenerateParams, TrainParams
from pipeline.shared.data import to_uint8
from pipeline.shared.labels import class_dirs
from pipeline.shared.manifest import read_manifest
from pipeline.train import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A briefly trained conditional model on the shapes data, and its crop folder."""
    from tests.conftest import shapes_crop

    tmp = tmp_path_factory.mktemp("gen")
    shapes_crop(tmp, 60, seed=2)
    train.run(TrainParams(input=tmp / "crop", out=tmp / "train", metrics=tmp / "train.json", batch_size=16, z_dim=8,
                          g_channels=8, d_channels=8, embed_dim=4, max_steps=4, threads=1,
                          judge_steps=20))
    return tmp / "train" / "checkpoint.pt", tmp / "crop"


def gen(tmp: Path, ckpt: Path, name: str, **kw: object) -> tuple[list, Path]:
    params = GenerateParams(checkpoint=ckpt, out=tmp / name, batch_size=32, threads=1, writers=0, **kw)
    generate.run(params)
    return read_manifest(tmp / name / "manifest.jsonl"), tmp / name


def test_topk_is_exact_and_bounded() -> None:
    rng = np.random.default_rng(0)
    top = TopK(50)
    scores, seeds = rng.normal(size=20_000).astype(np.float32), np.arange(20_000)
    for start in range(0, 20_000, 300):
        top.add(scores[start:start + 300], seeds[start:start + 300])
        assert len(top.scores) <= 50 and top._pending_n <= 4096 + 300
    best_scores, best_seeds = top.result()
    expected = np.argsort(-scores, kind="stable")[:50]
    assert best_seeds.tolist() == seeds[expected].tolist()
    assert np.all(np.diff(best_scores) <= 0)


def test_ranked_per_class_keeps_exactly_the_top_of_each_class(tmp_path: Path, checkpoint: tuple[Path, Path]) -> None:
    ckpt, _ = checkpoint
    everyone, _ = gen(tmp_path, ckpt, "all", count=90, ranked=False)          # the same 90 candidates, all kept
    kept, out = gen(tmp_path, ckpt, "ranked", count=30, oversample=3, ranked=True, rank="topk")
    assert len(kept) == 30 and {r.label_id for r in kept} == {0, 1, 2}
    for c in range(3):
        pool = sorted((r for r in everyone if r.label_id == c), key=lambda r: (-r.score, r.seed))
        mine = [r for r in kept if r.label_id == c]
        assert [r.seed for r in mine] == [r.seed for r in pool[:10]]
        assert [r.rank for r in mine] == list(range(1, 11))
    assert all((out / r.file).exists() for r in kept)
    assert (out / "scores.png").exists() and (out / "grid.png").exists()


def test_overall_ranking_keeps_the_global_top(tmp_path: Path, checkpoint: tuple[Path, Path]) -> None:
    ckpt, _ = checkpoint
    everyone, _ = gen(tmp_path, ckpt, "all", count=60, ranked=False)
    kept, _ = gen(tmp_path, ckpt, "top", count=12, oversample=5, ranked=True, per_class=False, rank="topk")
    best = sorted(everyone, key=lambda r: (-r.score, r.seed))[:12]
    assert sorted(r.seed for r in kept) == sorted(r.seed for r in best)


def test_same_seed_same_files_and_seed_regenerates_the_image(tmp_path: Path, checkpoint: tuple[Path, Path]) -> None:
    from PIL import Image

    ckpt, _ = checkpoint
    a, out_a = gen(tmp_path, ckpt, "a", count=12, oversample=2, seed=5)
    b, out_b = gen(tmp_path, ckpt, "b", count=12, oversample=2, seed=5)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    for r in a:
        assert (out_a / r.file).read_bytes() == (out_b / r.file).read_bytes()
    sampler = Sampler.from_params(GenerateParams(checkpoint=ckpt), torch.device("cpu"), "fp32")
    image, score = sampler.images_and_scores(np.array([a[0].seed]), np.array([a[0].label_id]))
    assert score[0] == pytest.approx(a[0].score, abs=1e-4)
    pixels = np.asarray(Image.open(out_a / a[0].file))
    assert np.abs(pixels.astype(int) - to_uint8(image)[0, ..., 0].astype(int)).max() <= 1
    meta = json.loads((out_a / "meta.json").read_text())
    assert meta["seed"] == 5 and len(meta["checkpoint_sha256"]) == 64


@pytest.mark.parametrize("d_stats", ["generated", "running"])
def test_scores_do_not_depend_on_how_candidates_are_batched(checkpoint: tuple[Path, Path], d_stats: str) -> None:
    ckpt, _ = checkpoint
    sampler = Sampler.from_checkpoint(ckpt, torch.device("cpu"), "fp32", d_stats=d_stats)
    seeds = np.arange(40, dtype=np.int64)
    labels = seeds % 3
    whole = sampler.images_and_scores(seeds, labels)[1]
    one_by_one = np.concatenate([sampler.images_and_scores(seeds[i:i + 1], labels[i:i + 1])[1] for i in range(40)])
    np.testing.assert_allclose(one_by_one, whole, rtol=1e-4, atol=1e-4)
    assert not sampler.d.training


def test_generated_statistics_rescore_d_as_it_saw_fakes_in_training(checkpoint: tuple[Path, Path]) -> None:
    ckpt, _ = checkpoint
    running = Sampler.from_checkpoint(ckpt, torch.device("cpu"), "fp32", d_stats="running")
    generated = Sampler.from_checkpoint(ckpt, torch.device("cpu"), "fp32", d_stats="generated")
    bn = [m for m in generated.d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(int(m.num_batches_tracked) == 16 for m in bn)
    # A fake-only training-mode batch normalises with fake statistics: generated stats approximate that.
    seeds = np.arange(256, dtype=np.int64)
    z, y = generated.latents(seeds), torch.from_numpy(seeds % 3)
    with torch.no_grad():
        fake = generated.g(z, y)
        generated.d.train()
        batch_mode = generated.d(fake, y).numpy()
        generated.d.eval()
        gen_mode, run_mode = generated.d(fake, y).numpy(), running.d(fake, y).numpy()
    assert np.abs(gen_mode - batch_mode).mean() < np.abs(run_mode - batch_mode).mean()


def test_memory_does_not_grow_with_oversampling(tmp_path: Path, checkpoint: tuple[Path, Path]) -> None:
    """Past TopK's compaction threshold (4,096 pending per class): 18,000 candidates, 6,000 per class."""
    ckpt, _ = checkpoint
    sampler = Sampler.from_checkpoint(ckpt, torch.device("cpu"), "fp32")
    peaks = {}
    batch = 200
    for k in (2, 600):
        params = GenerateParams(checkpoint=ckpt, out=tmp_path / "x", count=30, oversample=k, batch_size=batch, threads=1,
                                rank="topk")
        tracemalloc.start()
        top, sample, total = generate.select(sampler, params)
        heaps = top.heaps
        peaks[k] = tracemalloc.get_traced_memory()[1] - sample.nbytes  # the histogram sample is bounded on its own
        tracemalloc.stop()
        # What each heap holds as select returns it: at most the threshold plus one batch, however many went past.
        assert all(len(h.scores) + h._pending_n <= max(h.capacity, 4096) + batch for h in heaps)
        assert total == 30 * k and sum(len(h.result()[0]) for h in heaps) == 30
    # Trimming heaps hold at most 3 x (4,096 + a batch) pending entries of 12 bytes (~150 KB) at
    # k=600; a heap that never trims would hold all 18,000 (216 KB): the bound sits between the two.
    assert peaks[600] < peaks[2] + 185_000, peaks


def test_scores_only_writes_no_images(tmp_path: Path, checkpoint: tuple[Path, Path]) -> None:
    ckpt, _ = checkpoint
    generate.run(GenerateParams(checkpoint=ckpt, out=tmp_path / "scores", batch_size=32, threads=1, writers=0,
                                count=9, oversample=2, scores_only=True))
    out = tmp_path / "scores"
    kept = (out / "scores.jsonl").read_text().splitlines()
    assert len(kept) == 9 and not (out / "images").exists() and not (out / "manifest.jsonl").exists()
    with pytest.raises(export.ExportError, match="scores-only"):
        export.run(ExportParams(input=out, out=tmp_path / "exp"))


def test_export_loads_as_a_torch_dataset(tmp_path: Path, checkpoint: tuple[Path, Path]) -> None:
    ckpt, crop_dir = checkpoint
    kept, out = gen(tmp_path, ckpt, "g", count=15, oversample=2)
    summary = export.run(ExportParams(input=out, real=crop_dir, out=tmp_path / "export", include_real=True))
    assert summary.synthetic == 15 and summary.real == 60
    from pipeline import load_export

    ds = load_export(tmp_path / "export")
    assert len(ds) == 75 and ds.classes == ["c0", "c1", "c2"]
    image, label = ds[0]
    assert image.shape == (1, 32, 32) and 0 <= float(image.min()) and float(image.max()) <= 1 and label in (0, 1, 2)
    assert len(load_export(tmp_path / "export", source="synthetic")) == 15
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
    x, y = next(iter(loader))
    assert x.shape == (8, 1, 32, 32) and y.dtype == torch.int64
    card = json.loads((tmp_path / "export" / "dataset.json").read_text())
    assert card["total"] == 75 and card["model_sha256"]
    assert (tmp_path / "export" / "README.md").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir() if p.name != "export" and "export" in p.name)


def test_seeded_latents_are_standard_normal_and_batch_independent() -> None:
    z = seeded_normal(np.arange(50_000), 63)
    assert z.shape == (50_000, 63) and z.dtype == np.float32
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(np.corrcoef(z[:, 0], z[:, 62])[0, 1]) < 0.02
    assert np.array_equal(seeded_normal(np.array([123]), 63)[0], z[123])


def test_npy_format_writes_shards_that_export_turns_into_pngs(tmp_path: Path, checkpoint: tuple[Path, Path]) -> None:
    from PIL import Image

    ckpt, _ = checkpoint
    png, out_png = gen(tmp_path, ckpt, "png", count=20, oversample=2)
    npy, out_npy = gen(tmp_path, ckpt, "npy", count=20, oversample=2, format="npy", shard_size=8)
    assert [r.seed for r in png] == [r.seed for r in npy]
    assert not list(out_npy.rglob("*.png")) or all(p.name in ("grid.png", "scores.png") for p in out_npy.rglob("*.png"))
    assert sorted({r.file for r in npy}) == ["shard-00-00000.npy", "shard-00-00001.npy", "shard-00-00002.npy"]
    export.run(ExportParams(input=out_npy, out=tmp_path / "exp"))
    for r in npy[:5]:
        exported = np.asarray(Image.open(tmp_path / "exp" / class_dirs(["c0", "c1", "c2"])[r.label_id] / f"seed{r.seed}.png"))
        assert np.array_equal(exported, np.asarray(Image.open(out_png / next(p.file for p in png if p.seed == r.seed))))


def test_png_writer_processes_write_every_image(tmp_path: Path) -> None:
    """The writer pool (spawned processes, pipeline.shared.workers) writes every submitted image, byte-exact pixels."""
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    paths = [str(tmp_path / f"{i}.png") for i in range(12)]
    writer = generate.PngWriter(2)
    for start in range(0, 12, 4):
        writer.submit(paths[start:start + 4], images[start:start + 4])
    assert writer.close() == 12
    for path, image in zip(paths, images):
        assert np.array_equal(np.asarray(Image.open(path)), image)
