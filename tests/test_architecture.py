"""The layering docs/architecture.md describes: packages by stage over one shared package, no cycles, small modules."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = "shared"
STAGES = ("crawl", "crop", "train", "generate", "export", "evaluate", "report")   # one package per dvc.yaml stage
# A stage package's use of another stage's module: (importing package, imported module) -> why, in one line.
ALLOWED = {
    ("generate", "pipeline.train.models"): "generate rebuilds the trained G and D from the checkpoint",
    ("evaluate", "pipeline.generate.sampling"): "evaluate compares the rules on the very candidates generate draws",
    ("evaluate", "pipeline.generate.ranking"): "evaluate compares generate's rules on one scored candidate pool",
    ("evaluate", "pipeline.generate.calibration"): "calibrates D as generate does; its test set skips those images",
}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str = "pipeline") -> dict[str, set[str]]:
    """Module -> the package's modules it imports, function-level (lazy) imports included."""
    modules = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
        graph[name] = {d for d in deps if d in modules and d != name and d != package}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_pipeline_has_no_import_cycles() -> None:
    graph = import_graph()
    assert "pipeline.generate.generate" in graph and "pipeline.generate.sampling" in graph["pipeline.generate.generate"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def package_of(module: str) -> str | None:
    """`pipeline.crawl.sources.moebooru` -> `crawl`; None for the top (`pipeline`, `pipeline.__main__`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in (SHARED, *STAGES) else None


def layering_violations(graph: dict[str, set[str]], allowed: dict[tuple[str, str], str]) -> list[str]:
    """Imports that break the layering: shared -> a stage, or stage -> another stage outside `allowed`."""
    found = []
    for module, deps in sorted(graph.items()):
        own = package_of(module)
        for dep in sorted(deps):
            other = package_of(dep)
            if own is None or other in (None, own, SHARED):
                continue
            if own == SHARED or (own, dep) not in allowed:
                found.append(f"{module} -> {dep}")
    return found


def test_pipeline_lists_the_stages_and_the_shared_package() -> None:
    """Listing pipeline/ shows the architecture: a package per stage, one shared package, and nothing else."""
    entries = {p.name for p in (ROOT / "pipeline").iterdir() if p.name != "__pycache__"}
    assert entries == {"__init__.py", "__main__.py", SHARED, *STAGES}
    for name in (SHARED, *STAGES):
        assert (ROOT / "pipeline" / name / "__init__.py").is_file(), name
    stages = {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__", "cli", "common"}
    assert stages == set(STAGES)


def test_packages_import_only_down_to_shared_or_by_the_allow_list() -> None:
    graph = import_graph()
    assert layering_violations(graph, ALLOWED) == []
    used = {(package_of(m), d) for m, deps in graph.items() for d in deps}
    assert not [entry for entry in ALLOWED if entry not in used], "an allow-list entry nothing needs any more"


def test_the_layering_check_finds_what_breaks_it() -> None:
    graph = {"pipeline.shared.io": {"pipeline.crop.faces"}, "pipeline.crop.faces": {"pipeline.shared.io"},
             "pipeline.report.report": {"pipeline.export.export"}, "pipeline": {"pipeline.export.export"},
             "pipeline.evaluate.comparison": {"pipeline.generate.ranking", "pipeline.evaluate.yardstick"}}
    assert layering_violations(graph, {("evaluate", "pipeline.generate.ranking"): "why"}) == [
        "pipeline.report.report -> pipeline.export.export", "pipeline.shared.io -> pipeline.crop.faces"]
    assert "pipeline.evaluate.comparison -> pipeline.generate.ranking" in layering_violations(graph, {})


def test_no_module_is_over_500_lines() -> None:
    """A module is read in one sitting; a longer one holds two concepts (split along them, not by line count)."""
    long = {str(p.relative_to(ROOT)): n for folder in ("pipeline", "stages") for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_library_modules_do_not_import_the_cli() -> None:
    graph = import_graph()
    assert not [m for m, deps in graph.items() if any(d.startswith("stages") for d in deps)]
    for path in (ROOT / "pipeline").rglob("*.py"):
        assert "import typer" not in path.read_text(), path


def test_every_module_opens_with_one_line_saying_what_it_owns() -> None:
    for folder in ("pipeline", "stages"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc, f"{path} has no module docstring"
            first = doc.splitlines()[0]
            assert first.strip() and len(first) <= 120, f"{path}: opening line {first!r}"
