"""The report page, checked where a user looks at it: rendered by headless Chromium, with no network."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.export import export
from pipeline.report import report
from pipeline.shared.config import ExportParams, ReportParams

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")

# Added to a copy of the page only here (the report itself has no script): after every image has loaded or
# failed, it writes what the browser rendered into <pre id="probe">, which --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const ok = images.filter(i => i.complete && i.naturalWidth > 0);
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    sections: [...document.querySelectorAll("section")].map(s => [s.id, s.querySelector("h2").textContent]),
    images: images.length, loaded: ok.length, broken: images.filter(i => !ok.includes(i)).map(i => i.alt),
    text: document.body.innerText.length});
  document.body.appendChild(probe);
});
</script>"""


# 3 classes x (exported + real grid); generate's and evaluate's score plots; per-class accuracy; top and bottom
# grids of the rule comparison; the loss curves.
IMAGES = 3 * 2 + 2 + 1 + 2 + 1


def params(t: dict[str, Path], out: Path, **kw: object) -> ReportParams:
    return ReportParams(**{"export": t["export"], "generated": t["gen"], "real": t["crop"], "train": t["train"],
                           "evaluate": t["evaluate"], "metrics": t["metrics"] / "evaluate.json", "out": out,
                           "per_class": 4, **kw})


def render(page: Path, tmp: Path) -> dict:
    """What Chromium made of the page: sections (id, title), images loaded; every host name resolves to nothing."""
    probed = tmp / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
                           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000", "--dump-dom",
                           probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"chromium rendered no probe:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


@needs_chromium
def test_chromium_renders_every_section_and_every_image(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    summary = report.run(params(tiny_run, tmp_path / "report"))
    page = tmp_path / "report" / "index.html"
    seen = render(page, tmp_path)
    assert [s[0] for s in seen["sections"]] == list(report.SECTIONS) == summary.sections
    assert seen["images"] == summary.images == IMAGES
    assert seen["loaded"] == seen["images"] and seen["broken"] == []
    text = page.read_text()
    m = json.loads((tiny_run["metrics"] / "evaluate.json").read_text())
    assert m["notes"] and m["ranking"]
    for needle in ("cas", f"{m['cas']:.4f} ± {m['cas_std']:.4f}", f"{next(iter(m['gain']))}.gain", "precision_real_reference",
                   "fd", *m["ranking"], html.escape(m["notes"][0]),
                   json.loads((tiny_run["export"] / "dataset.json").read_text())["model_sha256"], "matches"):
        assert needle in text, needle


def test_the_page_needs_no_network(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    report.run(params(tiny_run, tmp_path / "report"))
    text = (tmp_path / "report" / "index.html").read_text()
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["augment-stage.json", "index.html"]
    sources = re.findall(r'(?:src|href)="([^"]*)"', text) + re.findall(r"url\(([^)]*)\)", text)
    assert sources and all(s.startswith("data:image/png;base64,") or s.startswith("#") for s in sources), sources
    assert "<script" not in text and "@import" not in text and "<link" not in text


@needs_chromium
def test_a_webdataset_export_is_shown_too(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    export.run(ExportParams(input=tiny_run["gen"], out=tmp_path / "wds", format="webdataset", shard_size=5))
    report.run(params(tiny_run, tmp_path / "report", export=tmp_path / "wds"))
    seen = render(tmp_path / "report" / "index.html", tmp_path)
    assert seen["loaded"] == seen["images"] == IMAGES and seen["broken"] == []


def test_every_per_class_entry_of_the_metrics_is_shown(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    """Whatever per-class numbers evaluate adds (here a made-up nested `variety`), the page shows them by class."""
    metrics = json.loads((tiny_run["metrics"] / "evaluate.json").read_text())
    metrics["made_up"] = {"lpips": {"c0": 0.125, "c1": 0.25, "c2": 0.375}}  # nested: {measure: {class: x}}
    metrics["made_up_too"] = {c: {"spread": 0.5 + i, "images": 20} for i, c in enumerate(["c0", "c1", "c2"])}
    (tmp_path / "evaluate.json").write_text(json.dumps(metrics))
    report.run(params(tiny_run, tmp_path / "report", metrics=tmp_path / "evaluate.json"))
    text = (tmp_path / "report" / "index.html").read_text()
    for column in ("made_up.lpips", "made_up_too.spread", "made_up_too.images"):
        assert f"<th>{column}</th>" in text, column
    assert re.search(r"<th>c2</th>(<td class=n>[^<]*</td>)*<td class=n>0.3750</td>", text)
    assert re.search(r"<th>c2</th>(<td class=n>[^<]*</td>)*<td class=n>2.5000</td><td class=n>20</td>", text)


def test_a_missing_input_is_one_line_naming_it(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    with pytest.raises(report.ReportError, match=r"^report.metrics: .*nothing.json does not exist; run `augment evaluate` first$"):
        report.run(params(tiny_run, tmp_path / "report", metrics=tmp_path / "nothing.json"))
    assert not (tmp_path / "report").exists()
