"""Evaluation metrics against known answers, the DRS/MH selection rules, and a small evaluate run."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline.evaluate.fidelity import frechet_distance, precision_recall
from pipeline.generate import calibration, ranking
from pipeline.generate import sampling


# --- Fréchet distance --------------------------------------------------------------------


def samples_with(mu: np.ndarray, cov: np.ndarray, n: int = 500, seed: int = 0) -> np.ndarray:
    """n points whose sample mean and covariance (ddof 1) are exactly `mu` and `cov`."""
    x = np.random.default_rng(seed).normal(size=(n, len(mu)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T   # sample covariance I
    return x @ np.linalg.cholesky(cov).T + mu


def test_frechet_of_commuting_gaussians_has_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = np.array([1.0, 2, 3, 4, 5]), np.array([2.0, 1, 3, 0.5, 9])
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    x1, x2 = samples_with(mu1, s1, seed=1), samples_with(mu2, s2, seed=2)
    assert frechet_distance(x1, x2) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(x1, samples_with(mu1, s1, seed=3)) == pytest.approx(0.0, abs=1e-7)


def test_frechet_of_non_commuting_2d_gaussians() -> None:
    # For 2 x 2 matrices Tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), with M = S1 S2.
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    expected = 5.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(samples_with(mu1, s1), samples_with(mu2, s2, seed=1)) == pytest.approx(expected, rel=1e-7)


def test_frechet_from_samples_approaches_the_population_value() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, size=(20_000, 3))
    b = rng.normal(1, 2, size=(20_000, 3))
    assert frechet_distance(a, b) == pytest.approx(3 * 1 + 3 * (2 - 1) ** 2, rel=0.03)


# --- precision / recall --------------------------------------------------------------------


def grid(nx: int, ny: int, dx: float = 0.0) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(nx, dtype=float) + dx, np.arange(ny, dtype=float), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], 1)


def test_precision_recall_on_constructed_sets() -> None:
    real = grid(10, 10)
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    assert precision_recall(real, grid(10, 10, dx=100), k=3) == (0.0, 0.0)
    # The left half of the grid: every sample is realistic, but it covers only its own
    # 50 points and the next column (at distance 1 = its k-NN radius): recall 0.6.
    assert precision_recall(real, grid(5, 10), k=3) == (1.0, 0.6)
    # 25 outliers far away among the 100 real points: precision 100 / 125.
    p, r = precision_recall(real, np.concatenate([real, grid(5, 5, dx=1000)]), k=3)
    assert p == 0.8 and r == 1.0


# --- calibration and selection rules -------------------------------------------------------------


def test_logistic_calibration_recovers_the_log_odds() -> None:
    rng = np.random.default_rng(0)
    real, fake = rng.normal(1, 1, 20_000), rng.normal(-1, 1, 20_000)  # true log-odds: 2 s
    a, b = calibration.fit_logistic(real, fake)
    assert a == pytest.approx(2.0, abs=0.08) and b == pytest.approx(0.0, abs=0.05)


def test_isotonic_calibration_is_monotone_and_bounded() -> None:
    rng = np.random.default_rng(0)
    real, fake = rng.normal(1, 1, 500), rng.normal(-1, 1, 500)
    cal = calibration.fit_calibration("isotonic", real, fake)
    x = np.linspace(-5, 5, 200)
    logits = cal.logit(x)
    assert np.all(np.diff(logits) >= 0) and np.all(np.isfinite(logits))
    assert cal.logit(np.array([-4.0]))[0] < -2 < 2 < cal.logit(np.array([4.0]))[0]


def test_uniforms_depend_only_on_the_seed() -> None:
    seeds = np.arange(1000, 6000)
    u = sampling.uniforms(seeds, 7)
    assert np.array_equal(u[100:200], sampling.uniforms(seeds[100:200], 7))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    assert not np.array_equal(u, sampling.uniforms(seeds, 8))


def _stream(selector: ranking.Selector, scores: np.ndarray, k: int, batch: int) -> list:
    seeds = np.arange(len(scores), dtype=np.int64)
    for start in range(0, len(scores), batch):
        sl = slice(start, start + batch)
        selector.add(scores[sl], seeds[sl], seeds[sl] % k)
        if selector.done:
            break
    return selector.entries()


def test_drs_fills_quotas_in_seed_order_independent_of_batching() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=600)
    cal = calibration.fit_calibration("logistic", rng.normal(1, 1, 500), rng.normal(0, 1, 500), drs_percentile=80)
    a = _stream(ranking.DRSSelector(60, 3, True, cal, 0), scores, 3, 7)
    b = _stream(ranking.DRSSelector(60, 3, True, cal, 0), scores, 3, 64)
    assert a == b and len(a) == 60 and [sum(e[0] == c for e in a) for c in range(3)] == [20, 20, 20]
    assert all(e[1] % 3 == e[0] for e in a)
    accepted = sampling.uniforms(np.arange(600), ranking.DRSSelector.SALT) < cal.drs_accept_prob(scores)
    first = [int(s) for s in np.flatnonzero(accepted) if s % 3 == 0][:20]
    assert [e[1] for e in a if e[0] == 0] == first
    assert np.mean(scores[[e[1] for e in a]]) > scores.mean() + 0.3  # it prefers high scores


def test_drs_accepting_everything_keeps_the_first_candidates_and_tops_up_a_short_pool() -> None:
    cal = calibration.Calibration("logistic", max_fake=10.0, gamma=-1e6)  # accept probability 1
    entries = _stream(ranking.DRSSelector(6, 2, True, cal, 0), np.zeros(40), 2, 5)
    assert sorted(e[1] for e in entries) == list(range(6))
    reject_all = calibration.Calibration("logistic", max_fake=10.0, gamma=1e6)
    scores = np.arange(40, dtype=float)
    entries = _stream(ranking.DRSSelector(6, 2, True, reject_all, 0), scores, 2, 5)
    assert sorted(e[1] for e in entries) == [34, 35, 36, 37, 38, 39]  # the best rejects of each class


def test_drs_acceptance_follows_azadi_et_al_with_a_fixed_gamma() -> None:
    """F(x) = D~(x) - D*_M - log(1 - exp(D~(x) - D*_M - eps)) - gamma, accepted with probability sigmoid(F)."""
    rng = np.random.default_rng(0)
    cal = calibration.fit_calibration("logistic", rng.normal(1, 1, 400), rng.normal(-1, 1, 400), drs_gamma=0.3,
                                  drs_percentile=None)
    raw = np.linspace(-3, 3, 25)
    d = cal.a * raw + cal.b
    dm = np.minimum(d - cal.max_fake, 0.0)
    f = d - cal.max_fake - np.log1p(-np.exp(dm - calibration.DRS_EPS)) - 0.3
    assert cal.gamma == 0.3
    np.testing.assert_allclose(cal.drs_accept_prob(raw), 1 / (1 + np.exp(-f)), rtol=1e-9, atol=1e-12)


def test_drs_memory_holds_no_label_per_rejected_candidate() -> None:
    reject_all = calibration.Calibration("logistic", max_fake=10.0, gamma=1e6)
    sel = ranking.DRSSelector(6, 3, True, reject_all, first_seed=100)
    seeds = np.arange(100, 100 + 30_000, dtype=np.int64)
    for start in range(0, len(seeds), 1000):
        sl = seeds[start:start + 1000]
        sel.add(np.zeros(len(sl)), sl, (sl - 100) % 3)
    assert not hasattr(sel, "labels_of")
    assert all(len(h.scores) + h._pending_n <= 4096 + 1000 for h in sel.rejected)
    entries = sel.entries()
    assert len(entries) == 6 and all(e[0] == (e[1] - 100) % 3 for e in entries)


def _filter_stream(count: int, k: int, scores: np.ndarray, conf: np.ndarray, batch: int, floors: np.ndarray,
                   min_confidence: float = 0.9) -> tuple[list, ranking.FilterSelector]:
    sel = ranking.FilterSelector(count, k, True, min_confidence, floors, first_seed=0)
    seeds = np.arange(len(scores), dtype=np.int64)
    for start in range(0, len(scores), batch):
        sl = slice(start, start + batch)
        sel.add(scores[sl], seeds[sl], seeds[sl] % k, conf[sl])
        if sel.done:
            break
    return sel.entries(), sel


def test_filter_keeps_the_first_consistent_candidates_above_the_floor_per_class() -> None:
    rng = np.random.default_rng(1)
    n, k = 3000, 3
    scores, conf = rng.normal(size=n), rng.uniform(size=n)
    floors = np.array([-0.5, 0.0, 0.5])
    a, sel = _filter_stream(90, k, scores, conf, 7, floors)
    b, _ = _filter_stream(90, k, scores, conf, 500, floors)
    assert a == b                                                       # independent of batching
    assert len(a) == 90 and len({e[1] for e in a}) == 90                # quota filled, no duplicates
    assert [sum(e[0] == c for e in a) for c in range(k)] == [30, 30, 30]
    ok = (conf >= 0.9) & (scores >= floors[np.arange(n) % k])
    for c in range(k):                                                  # the first passing seeds of each class
        expected = [int(s) for s in np.flatnonzero(ok) if s % k == c][:30]
        assert [e[1] for e in a if e[0] == c] == expected
    assert sel.fallback == 0 and sel.failed_judge > 0 and sel.failed_floor > 0


def test_filter_tops_up_a_short_pool_with_the_most_consistent_rejects() -> None:
    conf = np.linspace(0.0, 0.5, 40)                                    # nobody reaches 0.9
    entries, sel = _filter_stream(6, 2, np.zeros(40), conf, 5, np.full(2, -np.inf))
    assert sel.fallback == 6 and sorted(e[1] for e in entries) == [34, 35, 36, 37, 38, 39]
    assert all(np.isfinite(e[2]) for e in entries)


def test_mh_chains() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=60)
    # A real start no proposal can beat: every chain keeps its best proposal.
    stuck = ranking.MHSelector(6, 2, True, 5, calibration.Calibration("logistic"), [np.array([1e9]), np.array([1e9])])
    entries = _stream(stuck, scores, 2, 8)
    assert stuck.stuck == 6 and len(entries) == 6
    for label, seed, score, rank in entries:
        chain = [s for s in range(60) if s % 2 == label][(rank - 1) * 5:rank * 5]
        assert seed == max(chain, key=lambda s: scores[s])
    # A start far below every proposal, and a flat D: every proposal is accepted, the last one kept.
    flat = ranking.MHSelector(6, 2, True, 5, calibration.Calibration("logistic", a=0.0), [np.array([-1e9])] * 2)
    entries = _stream(flat, scores, 2, 8)
    assert sorted(e[1] for e in entries) == [8, 9, 18, 19, 28, 29] and flat.accepts == 30


# --- generate with drs/mh, and a small evaluate run ---------------------------------------------


@pytest.fixture(scope="module")
def pipeline_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Shapes data with train and test splits, a briefly trained model, a generated set and its export."""
    from pipeline.crawl import crawl
    from pipeline.crop import crop
    from pipeline.export import export
    from pipeline.generate import generate
    from pipeline.shared.config import CrawlParams, CropParams, ExportParams, GenerateParams, TrainParams
    from pipeline.train import train
    from tests.conftest import shapes_with_splits

    tmp = tmp_path_factory.mktemp("eval")
    shapes_with_splits(tmp / "shapes", {"train": (90, 3), "test": (60, 4)})
    crawl.run(CrawlParams(source="folder", root=tmp / "shapes", out=tmp / "raw"))
    crop.run(CropParams(input=tmp / "raw", out=tmp / "crop", metrics=tmp / "crop.json"))
    train.run(TrainParams(input=tmp / "crop", out=tmp / "train", metrics=tmp / "train.json", batch_size=16, z_dim=8,
                          g_channels=8, d_channels=8, embed_dim=4, max_steps=6, threads=1,
                          judge_steps=20))
    ckpt = tmp / "train" / "checkpoint.pt"
    generate.run(GenerateParams(checkpoint=ckpt, out=tmp / "gen", real=tmp / "crop", count=30, oversample=3,
                                batch_size=32, threads=1, writers=0))
    export.run(ExportParams(input=tmp / "gen", real=tmp / "crop", out=tmp / "export"))
    return {"tmp": tmp, "crop": tmp / "crop", "ckpt": ckpt, "export": tmp / "export"}


@pytest.mark.parametrize("rule", ["drs", "mh"])
def test_generate_with_drs_and_mh(tmp_path: Path, pipeline_dirs: dict[str, Path], rule: str) -> None:
    from pipeline.generate import generate
    from pipeline.shared.config import GenerateParams
    from pipeline.shared.manifest import read_manifest

    params = GenerateParams(checkpoint=pipeline_dirs["ckpt"], out=tmp_path / rule, real=pipeline_dirs["crop"], count=15,
                            oversample=4, batch_size=16, threads=1, writers=0, rank=rule, calibration_samples=20)
    generate.run(params)
    kept = read_manifest(tmp_path / rule / "manifest.jsonl")
    assert len(kept) == 15 and [sum(r.label_id == c for r in kept) for c in range(3)] == [5, 5, 5]
    assert len({r.seed for r in kept}) == 15 and all((tmp_path / rule / r.file).exists() for r in kept)
    assert all(0 <= r.seed < 60 and r.seed % 3 == r.label_id for r in kept)
    generate.run(params.model_copy(update={"out": tmp_path / "again"}))
    assert [r.seed for r in read_manifest(tmp_path / "again" / "manifest.jsonl")] == [r.seed for r in kept]
    meta = json.loads((tmp_path / rule / "meta.json").read_text())
    assert meta["params"]["rank"] == rule


def test_evaluate_command_writes_metrics_csvs_and_pictures(tmp_path: Path, pipeline_dirs: dict[str, Path]) -> None:
    from stages.cli import app

    out, metrics = tmp_path / "evaluate", tmp_path / "metrics" / "evaluate.json"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {
        "export": str(pipeline_dirs["export"]), "real": str(pipeline_dirs["crop"]), "checkpoint": str(pipeline_dirs["ckpt"]),
        "out": str(out), "metrics": str(metrics), "steps": 4, "feature_steps": 6, "gain_steps": 5, "seeds": 2, "batch_size": 16, "fractions": [0.1, 0.5],
        "rules": ["unranked", "filter", "topk", "drs", "mh"],
        "compare_count": 12, "feature_samples": 40, "grid_per_class": 3, "threads": 1}}))
    result = CliRunner().invoke(app, ["evaluate", "--params", str(params)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "CAS" in result.output and "best rule" in result.output
    m = json.loads(metrics.read_text())
    assert m["train_images"] == 30 and m["test_images"] + m["held_out_for_calibration"] == 60
    assert m["held_out_for_calibration"] > 0  # drs and mh calibrate on held-out test images
    for key in ("cas", "real_accuracy", "real_accuracy_all"):
        assert 0 <= m[key] <= 1
    assert m["seeds"] == [0, 1] and m["cas_std"] >= 0 and "gain_std" in m["gain"]["10pct"]
    assert set(m["gain"]) == {"10pct", "50pct"} and m["gain"]["50pct"]["real_images"] in range(40, 50)
    assert m["fidelity"]["fd"] >= 0 and 0 <= m["fidelity"]["precision"] <= 1
    assert set(m["ranking"]) == {"unranked", "filter", "topk", "drs", "mh"} and m["pool"] == 12 * 3
    assert m["pool_scored"] == [36, 36]   # topk, drs and mh read the whole pool
    assert all("cas_std" in r and "precision_std" in r for r in m["ranking"].values())
    assert m["ranked_vs_unranked"]["rule"] == "filter" and "beyond_2_std" in m["ranked_vs_unranked"]["cas"]
    assert set(m["winner"]) == {"cas", "precision", "recall", "fd"}
    with open(out / "per_class_accuracy.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class"] for r in rows] == ["c0", "c1", "c2"] and all(r["mh"] != "" for r in rows)
    for name in ("per_class_precision.csv", "per_class_recall.csv", "scores.png", "per_class_accuracy.png",
                 "top.png", "bottom.png"):
        assert (out / name).exists(), name


def test_no_cache_flag_turns_the_params_cache_off_for_one_run(tmp_path: Path, pipeline_dirs: dict[str, Path]) -> None:
    from stages.cli import app

    cache = tmp_path / "cache"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {
        "export": str(pipeline_dirs["export"]), "real": str(pipeline_dirs["crop"]), "checkpoint": str(pipeline_dirs["ckpt"]),
        "out": str(tmp_path / "evaluate"), "metrics": str(tmp_path / "evaluate.json"), "steps": 3, "feature_steps": 4,
        "gain_steps": 3, "seeds": 1, "batch_size": 16, "fractions": [0.5], "compare_rankings": False,
        "feature_samples": 20, "threads": 1, "cache": str(cache), "feature_model": "train"}}))
    result = CliRunner().invoke(app, ["evaluate", "--params", str(params), "--no-cache"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert not cache.exists()
    both = CliRunner().invoke(app, ["evaluate", "--params", str(params), "--no-cache", "--cache", str(cache)],
                              terminal_width=200)
    assert both.exit_code == 2 and "--no-cache" in both.output and not cache.exists()
    result = CliRunner().invoke(app, ["evaluate", "--params", str(params)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert len(list(cache.glob("*.json"))) == 3  # the feature model, the real reference, the gain's real arm


def test_the_comparison_scores_candidates_only_as_far_as_unranked_and_filter_read(pipeline_dirs: dict[str, Path]) -> None:
    """The filter's set from a pool scored lazily is the set it picks from the whole pool scored first."""
    from pipeline.evaluate.comparison import CandidatePool, make_sampler, select_from_pool
    from pipeline.evaluate.evaluate import generate_settings
    from pipeline.shared.config import EvaluateParams
    from pipeline.shared.progress import SILENT

    card = json.loads((pipeline_dirs["export"] / "dataset.json").read_text())
    gen = generate_settings(card, EvaluateParams(checkpoint=pipeline_dirs["ckpt"], real=pipeline_dirs["crop"], threads=1))
    gen = gen.model_copy(update={"oversample": 40, "batch_size": 8, "min_confidence": 0.0})  # a 6-step G: D floor only
    sampler = make_sampler(gen, 3, torch.device("cpu"))
    lazy, whole = (CandidatePool(sampler, gen, 6, True, SILENT, "pool") for _ in range(2))
    whole.ensure(whole.planned)
    assert whole.total == 240
    unranked, _ = select_from_pool(lazy, "unranked", gen, None)
    assert lazy.total == 8 and [e[1] for e in unranked] == list(range(gen.seed, gen.seed + 6))
    picked, stats = select_from_pool(lazy, "filter", gen, None)
    assert [e[:2] for e in picked] == [e[:2] for e in select_from_pool(whole, "filter", gen, None)[0]]
    assert len(picked) == 6 and stats["topped_up_from_rejects"] == 0
    assert stats["candidates_seen"] <= lazy.total < 240 and lazy.total % 8 == 0
    assert np.array_equal(lazy.scores, whole.scores[:lazy.total])


def test_evaluate_judges_on_the_whole_test_split_when_no_rule_calibrates(tmp_path: Path,
                                                                        pipeline_dirs: dict[str, Path]) -> None:
    from pipeline.evaluate import evaluate
    from pipeline.shared.config import EvaluateParams

    m = evaluate.run(EvaluateParams(export=pipeline_dirs["export"], real=pipeline_dirs["crop"],
                                    checkpoint=pipeline_dirs["ckpt"], out=tmp_path / "e", metrics=tmp_path / "m.json",
                                    steps=2, feature_steps=2, seeds=1, batch_size=16, fractions=[], compare_count=12,
                                    rules=["unranked", "filter"], feature_samples=20, threads=1)).metrics
    assert m["held_out_for_calibration"] == 0 and m["test_images"] == 60


def test_evaluate_refuses_data_without_a_test_split(tmp_path: Path, crop_dir: Path, pipeline_dirs: dict[str, Path]) -> None:
    from pipeline.evaluate import evaluate
    from pipeline.shared.config import EvaluateParams

    with pytest.raises(evaluate.EvaluateError, match="no test split"):
        evaluate.run(EvaluateParams(export=pipeline_dirs["export"], real=crop_dir, out=tmp_path / "e",
                                    metrics=tmp_path / "m.json", threads=1))


def test_inception_features_from_a_local_state_dict(tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    from pipeline.evaluate.fidelity import inception_features, kernel_inception_distance, load_inception

    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), tmp_path / "inc.pt")
    model = load_inception(tmp_path / "inc.pt")
    feats = inception_features(model, torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8))
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    rng = np.random.default_rng(0)
    same = kernel_inception_distance(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), subset_size=100)
    a, b = rng.normal(size=(200, 8)), rng.normal(2, 1, size=(200, 8))
    before = torch.get_rng_state()
    shifted = kernel_inception_distance(a, b, subset_size=100, seed=5)
    assert torch.equal(torch.get_rng_state(), before)   # its subsets come from a forked, seeded generator
    assert kernel_inception_distance(a, b, subset_size=100, seed=5) == shifted
    assert abs(same) < 0.05 < shifted


def test_inception_maps_imagenet_normalised_input_as_its_weights_expect(tmp_path: Path) -> None:
    """torchvision's Inception weights want transform_input (their builder sets it); a bare state dict must too."""
    from torchvision.models import inception_v3

    from pipeline.evaluate.fidelity import load_inception

    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), tmp_path / "inc.pt")
    assert load_inception(tmp_path / "inc.pt").transform_input is True


def test_classifier_precision_auto_falls_back_to_fp32_without_native_bf16(monkeypatch: pytest.MonkeyPatch,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.shared import device as dev

    cpu = torch.device("cpu")
    assert dev.resolve_precision("auto", cpu) == "fp32"                 # the GAN's rule: fp32 on any CPU
    assert dev.resolve_precision("bf16", cpu) == "bf16" and dev.resolve_precision("fp32", cpu, "bf16") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert dev.resolve_precision("auto", cpu, cpu_auto="bf16") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(dev, "_said_no_bf16", False)
    with caplog.at_level("INFO", logger="pipeline.shared.device"):
        assert dev.resolve_precision("auto", cpu, cpu_auto="bf16") == "fp32"
        assert dev.resolve_precision("auto", cpu, cpu_auto="bf16") == "fp32"
    assert [r.getMessage() for r in caplog.records].count(
        "this CPU has no native bf16 (AVX512-BF16/AMX): training runs in fp32") == 1


def test_the_classifier_learns_as_well_in_bf16_as_in_fp32() -> None:
    """bf16 autocast is the classifiers' default on bf16 CPUs: it must not change what they learn."""
    from pipeline.shared.classifier import TrainConfig, accuracy, predict, train_classifier

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (512,), generator=gen)
    images = torch.randint(0, 60, (512, 1, 16, 16), generator=gen, dtype=torch.uint8)
    for c in range(4):   # class c: a bright square in quadrant c
        y, x = divmod(c, 2)
        images[labels == c, :, 8 * y:8 * y + 8, 8 * x:8 * x + 8] += 150
    test, train = slice(0, 128), slice(128, None)
    accs = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(steps=60, batch_size=64, seed=0, precision=precision)
        model = train_classifier(images[train], labels[train], 4, cfg)
        accs[precision], _ = accuracy(predict(model, images[test]), labels[test].numpy(), 4)
    assert accs["fp32"] > 0.95 and accs["bf16"] > 0.95, accs


def test_real_only_classifiers_are_read_back_from_the_cache(tmp_path: Path, pipeline_dirs: dict[str, Path]) -> None:
    """A second run on the same real data re-trains only the classifiers that see the export, with the same metrics."""
    from pipeline.evaluate import evaluate
    from pipeline.shared.config import EvaluateParams

    def run(name: str, **change: object) -> evaluate.EvaluateSummary:
        params = EvaluateParams(export=pipeline_dirs["export"], real=pipeline_dirs["crop"], checkpoint=pipeline_dirs["ckpt"],
                                out=tmp_path / name, metrics=tmp_path / f"{name}.json", steps=3, feature_steps=4,
                                gain_steps=3, seeds=2, batch_size=16, fractions=[0.5], compare_rankings=False,
                                feature_samples=20, threads=1, cache=tmp_path / "cache", precision="fp32",
                                feature_model="train")
        return evaluate.run(params.model_copy(update=change))

    first = run("first")
    # real-only: the feature model, and per seed the real reference and the gain's real arm
    assert first.cached == "0 of 5" and len(list((tmp_path / "cache").glob("*.json"))) == 5
    again = run("again")
    assert again.cached == "5 of 5"
    drop = {"seconds"}
    assert {k: v for k, v in again.metrics.items() if k not in drop} == {k: v for k, v in first.metrics.items() if k not in drop}
    assert run("more-steps", gain_steps=4).cached == "3 of 5"      # the gain arms' key holds their steps
    assert run("off", cache=None).cached == ""


def test_the_label_judge_is_the_feature_space_when_it_learnt_this_real_split(tmp_path: Path,
                                                                           pipeline_dirs: dict[str, Path]) -> None:
    """feature_model judge: the checkpoint's judge gives real_accuracy_all and the features; a judge of other
    images, or none, is not used: the feature model is trained, and a note says why."""
    from pipeline.evaluate import evaluate
    from pipeline.shared.checkpoint import load_checkpoint
    from pipeline.shared.classifier import accuracy, load_judge, predict
    from pipeline.shared.config import EvaluateParams, TrainParams
    from pipeline.shared.data import load_split
    from pipeline.train import train

    def run(name: str, **change: object) -> dict:
        params = EvaluateParams(export=pipeline_dirs["export"], real=pipeline_dirs["crop"], checkpoint=pipeline_dirs["ckpt"],
                                out=tmp_path / name, metrics=tmp_path / f"{name}.json", steps=3, feature_steps=4,
                                gain_steps=3, seeds=1, batch_size=16, fractions=[0.5], compare_rankings=False,
                                feature_samples=20, threads=1, cache=None, precision="fp32")
        return evaluate.run(params.model_copy(update=change)).metrics

    judged = run("judge")
    test_images, test_labels, _, _ = load_split(pipeline_dirs["crop"], "test")
    model = load_judge(load_checkpoint(pipeline_dirs["ckpt"])["judge"])
    assert judged["feature_model"] == "judge"
    assert judged["real_accuracy_all"] == round(accuracy(predict(model, test_images), test_labels, 3)[0], 4)
    assert not any("feature_model" in note for note in judged["notes"])
    trained = run("train", feature_model="train")
    assert trained["feature_model"] == "train" and trained["fidelity"] != judged["fidelity"]
    assert trained["cas"] == judged["cas"]   # the classifiers are the same; only the feature space differs
    # A judge trained on fewer images (20 steps x 256) than the feature model would (300 x 128) is not used.
    short = run("short", feature_steps=300, batch_size=128)
    assert short["feature_model"] == "train" and any("fewer than" in note and "38,400" in note for note in short["notes"])

    # A checkpoint whose judge learnt other images: the crop's train split less one image.
    crop = tmp_path / "crop-less-one"
    shutil.copytree(pipeline_dirs["crop"], crop)
    manifest = crop / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    first_train = next(i for i, line in enumerate(lines) if json.loads(line).get("split") == "train")
    manifest.write_text("\n".join(lines[:first_train] + lines[first_train + 1:]) + "\n")
    train.run(TrainParams(input=crop, out=tmp_path / "t2", metrics=tmp_path / "t2.json", batch_size=16, z_dim=8,
                          g_channels=8, d_channels=8, embed_dim=4, max_steps=2, threads=1, judge_steps=5))
    foreign = run("foreign", checkpoint=tmp_path / "t2" / "checkpoint.pt")
    assert foreign["feature_model"] == "train"
    assert any("trained on other images" in note and str(pipeline_dirs["crop"]) in note for note in foreign["notes"])
    train.run(TrainParams(input=pipeline_dirs["crop"], out=tmp_path / "t3", metrics=tmp_path / "t3.json", batch_size=16,
                          z_dim=8, g_channels=8, d_channels=8, embed_dim=4, max_steps=2, threads=1, judge_steps=0))
    none = run("none", checkpoint=tmp_path / "t3" / "checkpoint.pt")
    assert none["feature_model"] == "train" and any("holds no label judge" in note for note in none["notes"])


def test_classifiers_in_worker_processes_give_the_in_process_metrics(tmp_path: Path, pipeline_dirs: dict[str, Path]) -> None:
    """Every classifier trained in one-thread worker processes scores exactly as it does in this process on one thread."""
    from pipeline.evaluate import evaluate
    from pipeline.shared.config import EvaluateParams
    from pipeline.shared.workers import usable_cores

    workers = max(2, usable_cores())   # one thread per worker: the same float sums as threads=1 here

    def run(name: str, n: int) -> dict:
        params = EvaluateParams(export=pipeline_dirs["export"], real=pipeline_dirs["crop"], checkpoint=pipeline_dirs["ckpt"],
                                out=tmp_path / name, metrics=tmp_path / f"{name}.json", steps=3, feature_steps=4,
                                gain_steps=3, seeds=2, batch_size=16, fractions=[0.5], rules=["unranked", "filter"],
                                compare_count=12, feature_samples=20, threads=1, cache=None, precision="fp32", workers=n)
        return evaluate.run(params).metrics

    one, many = run("one", 1), run("many", workers)
    assert one["classifier_workers"] == 1 and many["classifier_workers"] == workers
    drop = {"seconds", "classifier_workers"}
    assert {k: v for k, v in many.items() if k not in drop} == {k: v for k, v in one.items() if k not in drop}
    assert "ranking" in many and "50pct" in many["gain"]


def test_auto_workers_are_one_per_core_capped_by_the_classifiers_and_eight() -> None:
    from pipeline.evaluate.evaluate import MAX_AUTO_WORKERS, classifier_workers
    from pipeline.shared.workers import usable_cores

    cpu = torch.device("cpu")
    assert classifier_workers(0, cpu, 100) == min(usable_cores(), MAX_AUTO_WORKERS) == min(usable_cores(), 8)
    assert classifier_workers(0, cpu, 1) == 1          # one classifier: no pool
    assert classifier_workers(3, cpu, 1) == 3          # an explicit value is the user's
    assert classifier_workers(0, torch.device("cuda"), 100) == 1


def test_a_gain_arm_built_in_a_worker_trains_on_the_mix_evaluate_would_build() -> None:
    """`Judge.fit_mix` sends the subset and the export and mixes them in the worker: the same result
    as training on `augmented_mix` built here (which evaluate no longer holds for every arm)."""
    from pipeline.evaluate.yardstick import Judge, LabelledSet, augmented_mix
    from pipeline.shared.classifier import fit_and_test
    from pipeline.shared.config import EvaluateParams
    from pipeline.shared.progress import SILENT

    rng = np.random.default_rng(0)

    def labelled(n: int) -> LabelledSet:
        return LabelledSet(torch.from_numpy(rng.integers(0, 256, (n, 1, 32, 32), dtype=np.uint8)),
                           rng.integers(0, 3, n).astype(np.int64))
    real, export, test = labelled(12), labelled(60), labelled(30)
    params = EvaluateParams(cache=None, steps=3, batch_size=16, precision="fp32")
    with Judge(params, test, 3, torch.device("cpu"), SILENT, workers=2) as judge:
        assert judge.pool is not None
        pending = judge.fit_mix(real, export, 0.5, steps=3, seed=1)
        mixed = augmented_mix(real, export, 0.5)
        assert len(mixed) == 60 + 12 * 5      # the subset repeated to half the set
        threads = torch.get_num_threads()
        try:   # the worker's thread count here too: the same float sums
            here = fit_and_test(mixed.images, torch.from_numpy(mixed.labels), 3, judge._cfg(3, 1), test.images,
                                test.labels, threads=judge.worker_threads)
        finally:
            torch.set_num_threads(threads)
        assert pending.get()[:2] == here[:2]


def test_a_small_real_subset_trains_its_gain_arm_only_as_long_as_its_curve_moves() -> None:
    from pipeline.evaluate.evaluate import gain_real_steps
    from pipeline.shared.config import EvaluateParams

    p = EvaluateParams()   # steps 300, gain_steps 900, batch 128, 30 passes
    assert gain_real_steps(p, 600) == 300                       # 1% of Fashion-MNIST: 30 passes = 141 steps, floor 300
    assert gain_real_steps(p, 6000) == 900                      # 10%: 30 passes = 1,407 steps, cap 900
    assert gain_real_steps(p, 3000) == 704                      # between: 30 passes
    assert gain_real_steps(p.model_copy(update={"gain_real_epochs": None}), 600) == 900
    assert gain_real_steps(p.model_copy(update={"gain_steps": 200}), 600) == 200   # never more than gain_steps


def test_a_gain_mix_of_few_distinct_images_trains_only_as_long_as_its_curve_moves() -> None:
    from pipeline.evaluate.evaluate import gain_mixed_steps
    from pipeline.shared.config import EvaluateParams

    p = EvaluateParams()   # steps 300, gain_steps 900, batch 128, 7.5 passes over the distinct images
    assert gain_mixed_steps(p, 600, 10_000) == 622                # 1% of Fashion-MNIST + the export
    assert gain_mixed_steps(p, 6_000, 10_000) == 900              # 10%: 938 passes' worth, cap 900
    assert gain_mixed_steps(p, 10, 2_000) == 300                  # a small export: floor `steps`
    assert gain_mixed_steps(p.model_copy(update={"gain_mixed_epochs": None}), 600, 10_000) == 900
