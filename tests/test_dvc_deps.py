"""dvc.yaml declares what each stage really depends on: its code (parsed from the imports) and its input folder."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, copy_repo, dvc

CODE_ROOTS = ("pipeline", "stages")


def module_file(name: str) -> Path | None:
    """The file of a module of ours (`pipeline.x` -> pipeline/x.py or pipeline/x/__init__.py), else None."""
    parts = name.split(".")
    if parts[0] not in CODE_ROOTS:
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (lazy imports run too).

    The one exception: functions of a package's `__init__.py` (`pipeline.load_export`) are
    conveniences for users of the package; no stage calls them, so their imports are not followed.
    """
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if path.name != "__init__.py" else iter(tree.body)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pipeline import crawl`
    expanded = set()
    for name in names:  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        parts = name.split(".")
        expanded.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return expanded


def is_trivial(path: Path) -> bool:
    """An __init__.py holding only a docstring changes nothing a stage computes."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def code_closure(stage_file: Path) -> set[str]:
    """Repository-relative files of ours that running `stage_file` can execute."""
    seen: set[Path] = set()
    todo = [stage_file]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            found = module_file(name)
            if found is not None and found not in seen:
                todo.append(found)
    return {p.relative_to(REPO).as_posix() for p in seen if not is_trivial(p)}


def code_deps(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) if d.split("/")[0] in CODE_ROOTS]


def covered(files: set[str], deps: list[str]) -> set[str]:
    return {f for f in files if any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)}


@pytest.mark.parametrize("stage", ["crawl", "crop", "train", "generate", "export", "evaluate", "report"])
def test_dvc_deps_are_exactly_the_code_each_stage_imports(stage: str) -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    needed = code_closure(REPO / "stages" / f"{stage}.py")
    deps = code_deps(stages[stage])
    missing = sorted(needed - covered(needed, deps))
    assert not missing, f"dvc.yaml stage {stage!r} misses deps it imports: {missing}"
    unused = [d for d in deps if not covered(needed, [d])]
    assert not unused, f"dvc.yaml stage {stage!r} lists code it does not import: {unused}"


def test_the_closure_follows_lazy_and_package_imports() -> None:
    train = code_closure(REPO / "stages" / "train.py")
    # classifier is imported inside a Trainer method; pipeline/__init__ runs for any pipeline.x
    assert {"pipeline/shared/classifier.py", "pipeline/shared/distributed.py", "pipeline/__init__.py", "stages/common.py"} <= train
    assert "pipeline/crawl/sources/moebooru.py" in code_closure(REPO / "stages" / "crawl.py")


# -- data paths are said once: params.yaml, templated into dvc.yaml ------------------------------------

SECTIONS = {"crawl": "CrawlParams", "crop": "CropParams", "train": "TrainParams", "generate": "GenerateParams",
            "export": "ExportParams", "evaluate": "EvaluateParams", "report": "ReportParams"}
NOT_IN_DVC = {  # path params deliberately left out of dvc.yaml, and why
    "crawl.data_dir": "the system's Fashion-MNIST files (Debian's package), outside the repository",
    "crop.cache": "face detections kept between runs outside crop.out, which DVC deletes before a run",
    "evaluate.cache": "real-only classifiers' results kept between runs outside evaluate.out, which DVC deletes",
    "evaluate.inception_weights": "an optional local weights file, null by default",
}


def path_params(section: str) -> list[str]:
    from pipeline.shared import config

    model = getattr(config, SECTIONS[section])
    return [name for name, f in model.model_fields.items() if "Path" in str(f.annotation)]


def stage_paths(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) + stage.get("outs", []) + stage.get("metrics", [])
            if d.split("/")[0] not in CODE_ROOTS]


@pytest.mark.parametrize("stage", list(SECTIONS))
def test_every_data_path_of_a_stage_is_its_param_templated(stage: str) -> None:
    """dvc.yaml cannot disagree with the code: each data path is `${<stage>.<param>}`, the value the stage reads."""
    paths = stage_paths(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage])
    assert all(re.fullmatch(r"\$\{%s\.\w+\}" % stage, p) for p in paths), paths
    for name in path_params(stage):
        key = f"{stage}.{name}"
        assert ("${%s}" % key in paths) != (key in NOT_IN_DVC), f"{key}: in dvc.yaml unless listed in NOT_IN_DVC"


def test_the_default_params_connect_each_stage_to_its_upstream() -> None:
    from pipeline.train.train import CHECKPOINT_NAME

    p = yaml.safe_load((REPO / "params.yaml").read_text())
    assert p["crop"]["input"] == p["crawl"]["out"]
    assert p["train"]["input"] == p["crop"]["out"]
    assert Path(p["generate"]["checkpoint"]) == Path(p["train"]["out"]) / CHECKPOINT_NAME
    assert p["export"]["input"] == p["generate"]["out"]
    assert p["evaluate"]["export"] == p["export"]["out"]
    assert p["evaluate"]["checkpoint"] == p["generate"]["checkpoint"]
    assert p["generate"]["real"] == p["export"]["real"] == p["evaluate"]["real"] == p["report"]["real"] == p["crop"]["out"]
    assert (p["report"]["export"], p["report"]["generated"], p["report"]["train"], p["report"]["evaluate"],
            p["report"]["metrics"]) == (p["export"]["out"], p["generate"]["out"], p["train"]["out"], p["evaluate"]["out"],
                                        p["evaluate"]["metrics"])


def test_dvc_resolves_the_templated_chain(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    edges = set(re.findall(r'"([a-z]+)" -> "([a-z]+)"', dvc(repo, "dag", "--dot")))
    assert {("crawl", "crop"), ("crop", "train"), ("train", "generate"), ("generate", "export"),
            ("export", "evaluate"), ("train", "evaluate"), ("crop", "evaluate"), ("evaluate", "report")} <= edges, edges


# -- a folder import re-runs when the folder changes ---------------------------------------------------


def test_changing_the_imported_folder_reruns_the_crawl(tmp_path: Path) -> None:
    from PIL import Image

    repo = copy_repo(tmp_path / "repo")
    assert (repo / "data" / "import").is_dir(), "the default crawl.root must exist so that DVC can hash it"
    pics = repo / "pics"
    rng = np.random.default_rng(0)
    for i in range(4):
        (pics / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(pics / f"c{i % 2}" / f"{i}.png")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["crawl"].update(source="folder", root="pics")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert re.findall(r"Running stage '([^']+)'", dvc(repo, "repro", "crawl")) == ["crawl"]
    assert re.findall(r"Running stage '([^']+)'", dvc(repo, "repro", "crawl")) == []
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(pics / "c0" / "new.png")
    assert re.findall(r"Running stage '([^']+)'", dvc(repo, "repro", "crawl")) == ["crawl"]
    assert len((repo / "data" / "raw" / "manifest.jsonl").read_text().splitlines()) == 5
