"""The report stage: one self-contained HTML page (every image inline) showing what the pipeline made and how it scored.

`runs/report/index.html` needs no network: images are `data:` URIs, styles are inline, there is no script.
Sections (each a `<section id=...>`, which tests/test_report.py checks in headless Chromium):
`classes` (per class, exported images beside real ones), `counts` (images and D scores per class, score
histograms), `metrics` (CAS, gains, FD, precision, recall, each with its std, and every per-class entry of
evaluate's metrics, whatever evaluate adds), `rules` (the selection-rule comparison and evaluate's notes),
`losses` (the GAN loss curves), `params` (the params of each stage and the model's sha256).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from pipeline.shared.config import ReportParams
from pipeline.shared.errors import PipelineError
from pipeline.shared.io import ShardReader, file_digest, image_grid, read_json, write_text
from pipeline.shared.manifest import MANIFEST_NAME, Record, path_inside, read_manifest
from pipeline.shared.ownership import check_out, mark_out
from pipeline.shared.progress import SILENT, Progress

SECTIONS = ("classes", "counts", "metrics", "rules", "losses", "params")
REPORT_NAME = "index.html"
HEADLINE = ("cas", "real_accuracy", "real_accuracy_all", "cas_gap", "cas_ratio")
BINS = 20


class ReportError(PipelineError):
    """An input the report needs is missing or unreadable."""


@dataclass
class ReportSummary:
    out: Path
    sections: list[str] = field(default_factory=list)
    images: int = 0
    bytes: int = 0

    def rows(self) -> dict[str, Any]:
        return {"page": str(self.out / REPORT_NAME), "sections": ", ".join(self.sections), "images inline": self.images,
                "size": f"{self.bytes / 1e6:.1f} MB"}


def run(params: ReportParams, progress: Progress = SILENT) -> ReportSummary:
    out = Path(params.out)
    check_out(out, "report")  # before any work: a folder holding anything report did not write is refused
    page = Page()
    progress.start("report", total=len(SECTIONS), description="report")
    inputs = _Inputs(params)
    for name in SECTIONS:
        page.section(name, *BUILDERS[name](inputs, page))
        progress.advance("report")
    text = page.render(inputs.card.get("name", "augment"))
    mark_out(out, "report")
    write_text(out / REPORT_NAME, text)
    return ReportSummary(out=out, sections=list(SECTIONS), images=page.images, bytes=len(text.encode()))


class _Inputs:
    """Everything the page shows, read once; a missing required input is a one-line error naming it."""

    def __init__(self, p: ReportParams) -> None:
        self.p = p
        self.card = _json(p.export / "dataset.json", "report.export", "run `augment export` first")
        self.records = read_manifest(_need(p.export / MANIFEST_NAME, "report.export"))
        self.classes: list[str] = list(self.card.get("classes", []))
        self.metrics = _json(p.metrics, "report.metrics", "run `augment evaluate` first")
        self.generated = _json(p.generated / "meta.json", "report.generated", "run `augment generate` first")
        self.evaluate_params = _json(p.evaluate / "params.json", "report.evaluate", "run `augment evaluate` first")
        real_manifest = _need(p.real / MANIFEST_NAME, "report.real")
        self.real = [r for r in read_manifest(real_manifest) if r.split == "train"]


def _need(path: Path, key: str, hint: str = "") -> Path:
    if not Path(path).is_file():
        raise ReportError(f"{key}: {path} does not exist" + (f"; {hint}" if hint else ""))
    return Path(path)


def _json(path: Path, key: str, hint: str) -> dict[str, Any]:
    return read_json(_need(path, key, hint))  # an unparsable file is io.InputError naming it


class Page:
    """The HTML being built: sections in order, images as data URIs."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.images = 0

    def img(self, png: bytes, alt: str, width: Optional[int] = None) -> str:
        self.images += 1
        size = f' width="{width}"' if width else ""
        data = base64.b64encode(png).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"{size}>'

    def img_file(self, path: Path, alt: str) -> str:
        return self.img(path.read_bytes(), alt) if Path(path).is_file() else f"<p>({html.escape(str(path))} is absent)</p>"

    def section(self, name: str, title: str, body: str) -> None:
        self.parts.append(f'<section id="{name}">\n<h2>{html.escape(title)}</h2>\n{body}\n</section>')

    def render(self, title: str) -> str:
        nav = " · ".join(f'<a href="#{name}">{name}</a>' for name in SECTIONS)
        return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}: report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
                f"<h1>{html.escape(title)}</h1>\n<nav>{nav}</nav>\n" + "\n".join(self.parts) + "\n</body>\n</html>\n")


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: middle; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { image-rendering: pixelated; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
section { margin-bottom: 2em; }
.wide { overflow-x: auto; }
"""


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img.convert("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB"), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _export_image(folder: Path, r: Record, tars: dict[str, tarfile.TarFile]) -> np.ndarray:
    """An exported image, from its PNG (imagefolder) or from its shard (webdataset: member `<key>.png`)."""
    if r.index is None:
        return _decode(path_inside(folder, r.file).read_bytes())
    if r.file not in tars:
        tars[r.file] = tarfile.open(path_inside(folder, r.file))
    member = tars[r.file].extractfile(f"{r.extra['key']}.png")
    if member is None:
        raise ReportError(f"report.export: {r.file} has no {r.extra['key']}.png")
    return _decode(member.read())


def _pick(records: list[Record], label_id: int, n: int, rng: np.random.Generator) -> list[Record]:
    mine = [r for r in records if r.label_id == label_id]
    return [mine[i] for i in sorted(rng.choice(len(mine), size=min(n, len(mine)), replace=False))] if mine else []


def _grid(page: Page, images: list[np.ndarray], cols: int, alt: str) -> str:
    """One row of images as an inline PNG, shown at twice its size (up to 600 px) so small crops are visible."""
    if not images:
        return "<em>none</em>"
    channels = max(a.shape[-1] for a in images)
    stack = np.stack([np.repeat(a, channels, axis=-1) if a.shape[-1] != channels else a for a in images])
    grid = image_grid(stack, rows=1, cols=cols)
    return page.img(_png(grid), alt, width=min(600, 2 * grid.shape[1]))


def _classes(x: _Inputs, page: Page) -> tuple[str, str]:
    rng = np.random.default_rng(x.p.seed)
    reader = ShardReader(x.p.real)
    tars: dict[str, tarfile.TarFile] = {}
    synthetic = [r for r in x.records if r.source == "synthetic"]
    rows = []
    try:
        for label_id, label in enumerate(x.classes):
            made = [_export_image(x.p.export, r, tars) for r in _pick(synthetic, label_id, x.p.per_class, rng)]
            real = [reader.get(r.file, r.index) if r.index is not None else _decode((x.p.real / r.file).read_bytes())
                    for r in _pick(x.real, label_id, x.p.per_class, rng)]
            cells = [_grid(page, made, x.p.per_class, f"exported {label}"), _grid(page, real, x.p.per_class, f"real {label}")]
            rows.append(f"<tr><th>{label_id}: {html.escape(label)}</th><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
    finally:
        for tar in tars.values():
            tar.close()
    body = ("<p>Exported (synthetic) images of each class beside real training images of that class, "
            f"{x.p.per_class} of each, chosen with seed {x.p.seed}.</p>\n"
            "<table><tr><th>class</th><th>exported</th><th>real</th></tr>\n" + "\n".join(rows) + "</table>")
    return "Each class: exported next to real", body


def _histogram_svg(values: Iterable[float], lo: float, hi: float) -> str:
    counts, _ = np.histogram(np.asarray(list(values), np.float64), bins=BINS, range=(lo, hi if hi > lo else lo + 1))
    top = max(int(counts.max()), 1)
    bars = "".join(f'<rect x="{i * 6}" y="{40 - 40 * c / top:.1f}" width="5" height="{40 * c / top:.1f}" fill="#4a7"/>'
                   for i, c in enumerate(counts))
    return f'<svg role="img" width="{BINS * 6}" height="40" viewBox="0 0 {BINS * 6} 40">{bars}</svg>'


def _counts(x: _Inputs, page: Page) -> tuple[str, str]:
    scores = [r.score for r in x.records if r.score is not None]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    rows = []
    for label_id, label in enumerate(x.classes):
        mine = [r for r in x.records if r.label_id == label_id]
        s = np.array([r.score for r in mine if r.score is not None], np.float64)
        stats = [f"{v:.4f}" for v in (s.mean(), s.std(), s.min(), s.max())] if len(s) else ["-"] * 4
        rows.append(f"<tr><th>{label_id}: {html.escape(label)}</th>"
                    f"<td class=n>{sum(r.source == 'synthetic' for r in mine)}</td><td class=n>{sum(r.source == 'real' for r in mine)}</td>"
                    + "".join(f"<td class=n>{v}</td>" for v in stats) + f"<td>{_histogram_svg(s, lo, hi)}</td></tr>")
    body = ("<p>Images per class in the export and the discriminator scores of the kept synthetic ones "
            f"(histograms over [{lo:.3f}, {hi:.3f}], {BINS} bins).</p>\n"
            "<table><tr><th>class</th><th>synthetic</th><th>real</th><th>score mean</th><th>std</th><th>min</th>"
            "<th>max</th><th>histogram</th></tr>\n" + "\n".join(rows) + "</table>\n"
            "<h3>Scores of all candidates and of the kept ones (generate)</h3>\n"
            + page.img_file(x.p.generated / "scores.png", "generate score histogram") +
            "\n<h3>Scores of each rule's pool (evaluate)</h3>\n" + page.img_file(x.p.evaluate / "scores.png", "evaluate scores"))
    return "Counts and scores per class", body


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "-"
    return html.escape(json.dumps(value) if isinstance(value, (list, dict)) else str(value))


def _mean_std_rows(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(name, 'mean ± std' or value) for every number under `data`, a `x_std` folded into its `x`."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        if key.endswith("_std") and key[:-4] in data:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _mean_std_rows(value, name + ".")
        elif f"{key}_std" in data and isinstance(value, (int, float)):
            rows.append((name, f"{_fmt(value)} ± {_fmt(data[key + '_std'])}"))
        else:
            rows.append((name, _fmt(value)))
    return rows


def _table(rows: list[tuple[str, str]], head: tuple[str, str] = ("measure", "value")) -> str:
    return (f"<table><tr><th>{head[0]}</th><th>{head[1]}</th></tr>\n"
            + "\n".join(f"<tr><th>{html.escape(k)}</th><td class=n>{v}</td></tr>" for k, v in rows) + "</table>")


def _per_class_entries(metrics: dict[str, Any], classes: list[str], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every entry of the metrics keyed by class name (per_class_cas, test_images_per_class, variety, ...)."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if isinstance(value, dict) and value and set(value) <= set(classes):
            inner = [v for v in value.values() if isinstance(v, dict)]
            if not inner:
                found[prefix + key] = value
            for sub in dict.fromkeys(k for v in inner for k in v):  # {class: {measure: x}}: a column per measure
                found[f"{prefix}{key}.{sub}"] = {c: v.get(sub) if isinstance(v, dict) else None for c, v in value.items()}
        elif isinstance(value, dict):
            found.update(_per_class_entries(value, classes, f"{prefix}{key}."))
    return found


def _class_table(entries: dict[str, dict[str, Any]], classes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in entries)
    rows = "\n".join(f"<tr><th>{html.escape(c)}</th>" + "".join(f"<td class=n>{_fmt(e.get(c))}</td>" for e in entries.values())
                     + "</tr>" for c in classes)
    return f'<div class="wide"><table><tr><th>class</th>{head}</tr>\n{rows}</table></div>'


def _csv_table(path: Path) -> str:
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh)]
    keep = [i for i in range(len(rows[0])) if i == 0 or any(r[i] for r in rows[1:])]  # drop rules not compared
    head = "".join(f"<th>{html.escape(rows[0][i])}</th>" for i in keep)
    body = "\n".join("<tr>" + "".join(f"<td class=n>{html.escape(r[i])}</td>" for i in keep) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>\n{body}</table>"


def _metrics(x: _Inputs, page: Page) -> tuple[str, str]:
    m = x.metrics
    headline = [(k, v) for k, v in _mean_std_rows({k: m[k] for k in m if k.removesuffix("_std") in HEADLINE})]
    per_class = _per_class_entries(m, x.classes)
    rest = {k: v for k, v in m.items() if k.removesuffix("_std") not in HEADLINE
            and k not in ("fidelity", "gain", "ranking", "winner", "ranked_vs_unranked", "notes") and k not in per_class}
    body = ["<p>From evaluate (mean ± standard deviation over its seeds).</p>",
            "<h3>Classification accuracy on real test images (CAS: trained on the export)</h3>", _table(headline),
            "<h3>Augmentation gain (real subset vs subset + export)</h3>", _table(_mean_std_rows(m.get("gain", {}))),
            "<h3>Fréchet distance, precision and recall</h3>", _table(_mean_std_rows(m.get("fidelity", {})))]
    if per_class:
        body += ["<h3>Per class</h3>", _class_table(per_class, x.classes)]
    for path in sorted(x.p.evaluate.glob("per_class_*.csv")):
        body += [f"<h3>{html.escape(path.stem.replace('_', ' '))} (evaluate/{html.escape(path.name)})</h3>", _csv_table(path)]
    body += [page.img_file(x.p.evaluate / "per_class_accuracy.png", "per-class accuracy"),
             "<h3>Everything else evaluate measured</h3>", _table(_mean_std_rows(rest))]
    return "Metrics", "\n".join(body)


def _rules(x: _Inputs, page: Page) -> tuple[str, str]:
    m = x.metrics
    ranking: dict[str, dict[str, Any]] = m.get("ranking", {})
    body = []
    if ranking:
        keys = [k for k in next(iter(ranking.values())) if not k.endswith("_std")]
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        rows = "\n".join(f"<tr><th>{html.escape(rule)}</th>" + "".join(
            f"<td class=n>{_fmt(v.get(k))}{' ± ' + _fmt(v[k + '_std']) if k + '_std' in v else ''}</td>" for k in keys)
            + "</tr>" for rule, v in ranking.items())
        body += ["<p>Sets chosen by each selection rule from the same candidates, judged alike.</p>",
                 f"<table><tr><th>rule</th>{head}</tr>\n{rows}</table>",
                 "<h3>Best rule per measure</h3>", _table([(k, _fmt(v)) for k, v in m.get("winner", {}).items()]),
                 "<h3>Ranked vs unranked</h3>", _table(_mean_std_rows(m.get("ranked_vs_unranked", {})))]
        for name in ("top", "bottom"):
            body += [f"<h3>{name.title()}-ranked candidates per class</h3>", page.img_file(x.p.evaluate / f"{name}.png", name)]
    else:
        body.append("<p>evaluate compared no rules (evaluate.compare_rankings is off).</p>")
    notes = m.get("notes") or []
    body += ["<h3>Evaluate's notes</h3>",
             "<ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>" if notes else "<p>No notes.</p>"]
    return "Selection rules and notes", "\n".join(body)


def _losses(x: _Inputs, page: Page) -> tuple[str, str]:
    return "Loss curves", ("<p>Discriminator and generator losses during training (train/losses.png).</p>\n"
                           + page.img_file(x.p.train / "losses.png", "loss curves"))


def _params(x: _Inputs, page: Page) -> tuple[str, str]:
    checkpoint = x.p.train / "checkpoint.pt"
    actual = file_digest(checkpoint, "sha256") if checkpoint.is_file() else "(absent)"
    recorded = x.card.get("model_sha256", "")
    match = "matches" if actual == recorded else "differs from"
    blocks = {"generate (model config)": x.generated.get("model_config", {}), "generate": x.card.get("generate_params", {}),
              "export": x.card.get("export_params", {}), "evaluate": x.evaluate_params.get("evaluate", {}),
              "report": json.loads(x.p.model_dump_json())}
    body = [f"<p>Model sha256 (in the export): <code>{html.escape(recorded)}</code> — {match} "
            f"{html.escape(str(checkpoint))}: <code>{html.escape(actual)}</code></p>"]
    for name, values in blocks.items():
        body.append(f"<h3>{html.escape(name)}</h3>\n<pre>{html.escape(json.dumps(values, indent=2))}</pre>")
    return "Params and model", "\n".join(body)


BUILDERS = {"classes": _classes, "counts": _counts, "metrics": _metrics, "rules": _rules, "losses": _losses, "params": _params}
