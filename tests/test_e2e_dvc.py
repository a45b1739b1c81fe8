"""The whole pipeline under a real `dvc repro` in a temporary copy of the repository."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pipeline.shared.manifest import read_manifest
from tests.conftest import copy_repo, dvc, needs_fmnist

pytestmark = [pytest.mark.slow, needs_fmnist]

TINY = {
    "crawl": {"limit": 150},
    "train": {"epochs": 1, "batch_size": 32, "z_dim": 16, "g_channels": 8, "d_channels": 8, "embed_dim": 4,
              "threads": 1, "checkpoint_every": 2, "grid_per_class": 3, "judge_steps": 5},
    "generate": {"count": 40, "oversample": 2, "batch_size": 40, "threads": 1, "writers": 1},
    "evaluate": {"steps": 3, "feature_steps": 3, "gain_steps": 3, "seeds": 2, "batch_size": 16, "fractions": [0.1], "compare_count": 10,
                 "feature_samples": 40,
                 "grid_per_class": 2, "threads": 1},
}


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's tracked and new files, as a git + DVC repo with tiny params."""
    dest = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def test_repro_runs_every_stage_and_writes_every_output(repo: Path) -> None:
    out = dvc(repo, "repro")
    assert ran(out) == ["crawl", "crop", "train", "generate", "export", "evaluate", "report"]

    raw = read_manifest(repo / "data/raw/manifest.jsonl")
    assert {r.split for r in raw} == {"train", "test"} and len(raw) == 300
    crop = read_manifest(repo / "data/crop/manifest.jsonl")
    assert len(crop) == 300 and all(r.file.startswith("shard-") and r.index is not None for r in crop)
    assert (repo / "data/crop/preview.png").exists()
    assert json.loads((repo / "metrics/crop.json").read_text())["kept"] == 300

    assert (repo / "runs/train/checkpoint.pt").exists() and (repo / "runs/train/samples/epoch-001.png").exists()
    assert (repo / "runs/train/losses.csv").read_text().startswith("step,epoch,loss_d,loss_g")
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert metrics["steps"] == 150 // 32 and metrics["classes"] == 10

    generated = read_manifest(repo / "data/generated/manifest.jsonl")
    assert len(generated) == 40 and all(r.source == "synthetic" and r.seed is not None and r.rank for r in generated)
    assert {r.label_id for r in generated} == set(range(10))
    card = json.loads((repo / "data/export/dataset.json").read_text())
    assert card["total"] == 40 and len(card["classes"]) == 10
    assert len(list((repo / "data/export").glob("*/*.png"))) == 40
    assert "train.json" in dvc(repo, "metrics", "show")
    assert '<section id="params">' in (repo / "runs/report/index.html").read_text()


def test_second_repro_skips_everything(repo: Path) -> None:
    out = dvc(repo, "repro")
    assert ran(out) == [], out


def test_changing_a_generate_value_reruns_only_generate_and_export(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["generate"]["count"] = 30
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(repo, "repro")
    assert ran(out) == ["generate", "export", "evaluate", "report"], out
    assert len(read_manifest(repo / "data/generated/manifest.jsonl")) == 30
    assert json.loads((repo / "data/export/dataset.json").read_text())["total"] == 30


def test_evaluate_stage_ran_and_its_metrics_are_dvc_metrics(repo: Path) -> None:
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert 0 <= metrics["cas"] <= 1 and 0 <= metrics["real_accuracy"] <= 1
    assert set(metrics["ranking"]) == {"unranked", "filter"} and "10pct" in metrics["gain"]
    assert (repo / "runs/evaluate/per_class_accuracy.csv").exists() and (repo / "runs/evaluate/scores.png").exists()
    shown = dvc(repo, "metrics", "show")
    assert "evaluate.json" in shown and "cas" in shown
