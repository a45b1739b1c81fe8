"""Import a local folder of images: `<root>/<label>/*.png|jpg`, or a flat unlabelled folder.

If `<root>` holds `train/` and `test/`, those are the splits (each with label folders);
otherwise everything is the train split. Files are verified with Pillow and copied to
`images/<md5>.<ext>`, the same layout the image-board crawler writes, so crop treats
both alike. Unreadable files are counted and listed in failures.jsonl, not fatal.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Iterator

from pipeline.crawl.sources.base import CrawlError, CrawlSummary
from pipeline.shared.config import CrawlParams, to_jsonable
from pipeline.shared.io import atomic_path, write_json
from pipeline.shared.manifest import MANIFEST_NAME, Record, write_manifest
from pipeline.shared.progress import SILENT, Progress

EXTENSIONS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".gif": "gif", ".bmp": "bmp"}


def _walk(root: Path) -> Iterator[tuple[str, str | None, Path]]:
    """(split, label or None, file) for every image file under root, in a stable order."""
    splits = [s for s in ("train", "test") if (root / s).is_dir()]
    for split, base in ([(s, root / s) for s in splits] or [("train", root)]):
        for path in sorted(base.iterdir()):
            if path.is_dir():
                for f in sorted(path.rglob("*")):
                    if f.suffix.lower() in EXTENSIONS and f.is_file():
                        yield split, path.name, f
            elif path.suffix.lower() in EXTENSIONS:
                yield split, None, path


def _verify(path: Path, max_pixels: int) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        if img.width * img.height > max_pixels:
            raise ValueError(f"{img.width}x{img.height} is over crawl.max_pixels={max_pixels}")
        img.load()
        return img.width, img.height


def import_folder(params: CrawlParams, progress: Progress = SILENT) -> CrawlSummary:
    root, out = Path(params.root), Path(params.out)  # type: ignore[arg-type]
    if not root.is_dir():
        raise CrawlError(f"crawl.root: {root} is not a folder")
    files = list(_walk(root))
    if params.limit is not None:
        files = [f for s in ("train", "test") for f in [x for x in files if x[0] == s][: params.limit]]
    (out / "images").mkdir(parents=True, exist_ok=True)
    summary = CrawlSummary(source="folder", out=out, due=len(files))
    records: list[Record] = []
    seen: set[str] = set()
    failures = []
    progress.start("import", total=len(files), description="import folder")
    for split, label, path in files:
        progress.advance("import", 1, kept=len(records), failed=summary.failed)
        try:
            width, height = _verify(path, params.max_pixels)
        except Exception as err:  # any decode error: count it, keep going
            summary.failed += 1
            failures.append({"file": str(path), "reason": f"unreadable: {type(err).__name__}: {err}"})
            continue
        data = path.read_bytes()
        md5 = hashlib.md5(data).hexdigest()
        if md5 in seen:
            summary.skipped += 1
            continue
        seen.add(md5)
        name = f"images/{md5}.{EXTENSIONS[path.suffix.lower()]}"
        with atomic_path(out / name) as tmp:
            shutil.copyfile(path, tmp)
        records.append(Record(file=name, label=label, split=split, md5=md5, width=width, height=height,
                              extra={"original": str(path.relative_to(root))}))
    progress.finish("import")
    classes = sorted({r.label for r in records if r.label is not None})
    for r in records:
        r.label_id = classes.index(r.label) if r.label is not None else None
    write_manifest(out / MANIFEST_NAME, records)
    with atomic_path(out / "failures.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(f) + "\n" for f in failures))
    write_json(out / "meta.json", {"source": "folder", "root": str(root), "classes": classes, "params": to_jsonable(params)})
    summary.kept = summary.new = len(records)
    summary.counters = {"classes": len(classes), "duplicates": summary.skipped}
    return summary
