"""crop.mode faces: the real AnimeFace detector on drawn anime heads (tests/face_art.py)."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import yaml
from PIL import Image

from face_art import HAIR_COLOURS, anime_face, blank, blurred_face, random_shapes
from pipeline import faces
from pipeline.config import CropParams
from pipeline.crop import CropError
from pipeline.faces import FaceError, check_pillow, crop_faces, crop_square, near_duplicates, square_around
from pipeline.manifest import Record, read_manifest, write_manifest

SIZE = 256        # canvas side: big enough for reliable detection, small enough to be fast


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def write_crawl(folder: Path, items: list[tuple[bytes, Optional[list[str]]]]) -> list[Record]:
    """A crawl output like the Moebooru crawler's: images/<md5>.<ext> and manifest.jsonl."""
    records = []
    for i, (data, tags) in enumerate(items):
        md5 = hashlib.md5(data).hexdigest()
        ext = "jpg" if data[:2] == b"\xff\xd8" else "png"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "images" / f"{md5}.{ext}").write_bytes(data)
        records.append(Record(file=f"images/{md5}.{ext}", md5=md5, id=100 + i, tags=tags,
                              source_url=f"https://example.invalid/post/{100 + i}"))
    write_manifest(folder / "manifest.jsonl", records)
    return records


def face_png(seed: int, hair: str = "blue", size: int = SIZE, **kwargs: Any) -> bytes:
    return encode(anime_face(seed, size, hair, **kwargs)[0])


def params(tmp_path: Path, **overrides: Any) -> CropParams:
    values: dict[str, Any] = dict(mode="faces", input=tmp_path / "raw", out=tmp_path / "crop", size=64, workers=1,
                                  metrics=tmp_path / "metrics" / "crop.json", cache=tmp_path / "cache")
    values.update(overrides)
    return CropParams(**values)


def shards(out: Path) -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted(out.glob("shard-*.npy"))])


# ---- the detector and the Pillow trap ------------------------------------------------------

def test_detector_finds_the_drawn_faces_and_nothing_in_negatives() -> None:
    """Fails if detection silently returns nothing, as animeface 2.0.3 does with Pillow >= 12."""
    hits = 0
    for seed in range(6):
        img, drawn = anime_face(seed, SIZE, list(HAIR_COLOURS)[seed])
        found = faces.detect(img)
        assert found, f"no face found in fixture seed {seed} (Pillow/animeface mismatch?)"
        x, y, w, h = found[0].box
        dx, dy, dw, dh = drawn.box
        assert dx <= x + w / 2 <= dx + dw and dy <= y + h / 2 <= dy + dh, "face centre is outside the drawn head"
        hits += found[0].likelihood >= 0.5
    assert hits >= 5
    for negative in (blank(SIZE), blurred_face(0, SIZE), random_shapes(0, SIZE)):
        assert faces.detect(negative) == []


def test_pillow_12_is_refused_with_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_pillow()                       # the installed Pillow is fine
    check_pillow("11.3.0")
    with pytest.raises(FaceError, match=r"Pillow 12\.0\.0 .*pillow>=10,<12"):
        check_pillow("12.0.0")
    import PIL

    write_crawl(tmp_path / "raw", [(face_png(0), None)])
    monkeypatch.setattr(PIL, "__version__", "12.1.0")
    with pytest.raises(FaceError) as err:
        crop_faces(params(tmp_path))
    assert "\n" not in str(err.value) and "12.1.0" in str(err.value)


# ---- geometry ------------------------------------------------------------------------------

def test_square_around_adds_the_margin_on_each_side() -> None:
    assert square_around((10, 20, 40, 40), 0.25) == (0, 10, 60)
    assert square_around((10, 20, 40, 40), 0.0) == (10, 20, 40)
    assert square_around((0, 0, 30, 20), 0.5) == (-15, -20, 60)   # the longer side sets the square


def test_crop_square_pads_with_edge_or_reflect_outside_the_image() -> None:
    rgb = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    edge = crop_square(rgb, -2, -1, 4, "edge")
    assert edge.shape == (4, 4, 3)
    assert (edge[1:, 2:] == rgb[:3, :2]).all()
    assert (edge[0, 2:] == rgb[0, :2]).all() and (edge[1:, 0] == rgb[:3, 0]).all()
    reflect = crop_square(rgb, -2, 0, 4, "reflect")
    assert (reflect == np.pad(rgb, ((0, 0), (2, 0), (0, 0)), mode="reflect")[:4, :4]).all()
    # A square far bigger than the image still mirrors the image, as np.pad does.
    big = crop_square(rgb, -7, -9, 20, "reflect")
    assert (big == np.pad(rgb, ((9, 6), (7, 7), (0, 0)), mode="reflect")).all()
    assert (crop_square(rgb, -7, -9, 20, "edge") == np.pad(rgb, ((9, 6), (7, 7), (0, 0)), mode="edge")).all()
    inside = crop_square(rgb, 1, 1, 3, "edge")
    assert (inside == rgb[1:4, 1:4]).all()


def test_faces_are_cropped_at_the_right_place_and_size(tmp_path: Path) -> None:
    records = write_crawl(tmp_path / "raw", [(face_png(0, "blonde"), None), (face_png(1, "blue"), None)])
    p = params(tmp_path, margin=0.3, size=64)
    summary = crop_faces(p)
    assert (summary.seen, summary.kept, summary.failed) == (2, 2, 0)
    images = shards(p.out)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    out = read_manifest(p.out / "manifest.jsonl")
    assert [r.md5 for r in out] == [r.md5 for r in records]
    for r, img in zip(out, images):
        assert r.likelihood is not None and r.likelihood >= p.min_likelihood
        assert r.extra["input_file"] == next(s.file for s in records if s.md5 == r.md5)
        x0, y0, side, _ = r.extra["crop_box"]
        assert (x0, y0, side) == square_around(r.box, 0.3)
        with Image.open(p.input / r.extra["input_file"]) as src:
            assert x0 >= 0 and y0 >= 0 and x0 + side <= src.width and y0 + side <= src.height
            expected = np.asarray(src.convert("RGB").crop((x0, y0, x0 + side, y0 + side))
                                  .resize((64, 64), Image.Resampling.LANCZOS))
        assert np.abs(img.astype(int) - expected).max() <= 1
    meta = json.loads((p.out / "meta.json").read_text())
    assert meta["size"] == 64 and meta["channels"] == 3 and meta["classes"] == []
    assert (p.out / "preview.png").exists()
    metrics = json.loads(p.metrics.read_text())
    assert metrics["kept"] == 2 and metrics["faces found"] >= 2


def test_a_face_at_the_border_is_padded(tmp_path: Path) -> None:
    data = face_png(1, "pink", size=320, face_frac=0.5, centre=(0.2, 0.42))
    write_crawl(tmp_path / "raw", [(data, None)])
    p = params(tmp_path, margin=0.5, pad_mode="edge", size=96)
    crop_faces(p)
    (r,) = read_manifest(p.out / "manifest.jsonl")
    x0, y0, side, _ = r.extra["crop_box"]
    assert x0 < 0 <= y0 and side == square_around(r.box, 0.5)[2]
    img = shards(p.out)[0]
    assert img.shape == (96, 96, 3)
    pad = round(-x0 / side * 96) - 2          # columns made only of the replicated left edge
    assert pad > 5
    assert (np.abs(np.diff(img[:, :pad].astype(int), axis=1)) <= 2).all(), "edge padding should repeat column 0"


# ---- labels --------------------------------------------------------------------------------

def test_labels_from_tags_with_drop_and_other_policies(tmp_path: Path) -> None:
    write_crawl(tmp_path / "raw", [(face_png(0, "blonde"), ["blonde_hair", "smile"]),
                                   (face_png(1, "blue"), ["blue_hair", "pink_hair"]),
                                   (face_png(2, "pink"), ["smile"])])
    dropped = crop_faces(params(tmp_path, label_from="tags", tag_policy="drop"))
    assert dropped.kept == 1 and dropped.reasons["no label"] == 2 and dropped.labels == {"blonde": 1}
    p = params(tmp_path, label_from="tags", tag_policy="other", other_label="misc")
    other = crop_faces(p)
    assert other.kept == 3 and other.labels == {"blonde": 1, "misc": 2}
    out = read_manifest(p.out / "manifest.jsonl")
    assert [r.label for r in out] == ["blonde", "misc", "misc"]
    assert json.loads((p.out / "meta.json").read_text())["classes"] == ["blonde", "misc"]
    assert json.loads(p.metrics.read_text())["labels"] == {"blonde": 1, "misc": 2}


def test_labels_from_hair_colour_and_small_classes(tmp_path: Path) -> None:
    hairs = ["blonde", "blue", "pink", "black", "blonde"]
    write_crawl(tmp_path / "raw", [(face_png(seed, hair), None) for seed, hair in enumerate(hairs)])
    p = params(tmp_path, label_from="hair_color")
    summary = crop_faces(p)
    out = read_manifest(p.out / "manifest.jsonl")
    assert [r.label for r in out] == hairs
    assert summary.labels == {"blonde": 2, "blue": 1, "pink": 1, "black": 1}
    assert json.loads(p.metrics.read_text())["labels"] == summary.labels
    assert all(len(r.extra["hair_rgb"]) == 3 for r in out)

    dropped = crop_faces(params(tmp_path, label_from="hair_color", min_class_count=2, small_classes="drop"))
    assert dropped.labels == {"blonde": 2} and dropped.reasons["small class"] == 3
    merged = crop_faces(params(tmp_path, label_from="hair_color", min_class_count=2, small_classes="merge"))
    assert merged.labels == {"blonde": 2, "other": 3}


def test_nearest_colour_uses_the_palette() -> None:
    palette = CropParams().hair_palette
    assert faces.nearest_colour((235, 212, 125), palette) == "blonde"
    assert faces.nearest_colour((125, 80, 55), palette) == "brown"
    assert faces.nearest_colour((190, 50, 45), palette) == "red"
    with pytest.raises(FaceError, match="hair_palette"):
        faces.nearest_colour((0, 0, 0), {})


def test_label_from_none_leaves_labels_empty(tmp_path: Path) -> None:
    write_crawl(tmp_path / "raw", [(face_png(0), ["blue_hair"])])
    p = params(tmp_path, label_from="none")
    crop_faces(p)
    (r,) = read_manifest(p.out / "manifest.jsonl")
    assert r.label is None and r.label_id is None


# ---- duplicates, negatives, filters, bad files ---------------------------------------------

def test_near_duplicates_are_removed_keeping_the_larger_copy(tmp_path: Path) -> None:
    original, _ = anime_face(0, 320, "blue")
    repost = encode(original.resize((256, 256), Image.Resampling.BICUBIC), "JPEG", quality=70)
    records = write_crawl(tmp_path / "raw", [(repost, None), (encode(original), None), (face_png(3, "pink"), None)])
    summary = crop_faces(params(tmp_path, dedup_hamming=6))
    assert summary.kept == 2 and summary.counters["duplicates removed"] == 1 and summary.reasons["duplicate"] == 1
    kept = {r.md5 for r in read_manifest(tmp_path / "crop" / "manifest.jsonl")}
    assert kept == {records[1].md5, records[2].md5}, "the full-size original should be the copy kept"
    assert crop_faces(params(tmp_path, dedup_hamming=-1)).kept == 3


def test_near_duplicates_need_a_close_hash_and_the_same_place() -> None:
    a, b = 0x0F0F_0F0F_0F0F_0F0F, 0x0F0F_0F0F_0F0F_0F0E        # 1 bit apart
    far = a ^ 0xFFFF_FFFF_0000_0000
    centres = [[0.5, 0.5], [0.51, 0.5], [0.5, 0.5], [0.2, 0.5]]
    assert near_duplicates([a, b, far, a], centres, range(4), 4) == {1}
    assert near_duplicates([a, b, far, a], centres, range(4), 0) == set()
    assert near_duplicates([a, b], centres[:2], range(2), -1) == set()


def test_negatives_yield_no_crops(tmp_path: Path) -> None:
    negatives = [(encode(img), None) for img in (blank(SIZE), blurred_face(0, SIZE), random_shapes(0, SIZE))]
    write_crawl(tmp_path / "raw", negatives)
    with pytest.raises(CropError, match="no faces kept from 3 images"):
        crop_faces(params(tmp_path))
    write_crawl(tmp_path / "raw", negatives + [(face_png(0), None)])
    summary = crop_faces(params(tmp_path))
    assert summary.kept == 1 and summary.reasons["no face in image"] == 3


def test_unreadable_and_truncated_images_are_counted_and_skipped(tmp_path: Path) -> None:
    good = face_png(0)
    truncated = encode(anime_face(1, SIZE)[0], "JPEG", quality=90)
    write_crawl(tmp_path / "raw", [(good, None), (truncated[: len(truncated) // 2], None), (b"\x89PNG\r\n\x1a\n junk", None)])
    summary = crop_faces(params(tmp_path))
    assert (summary.seen, summary.kept, summary.failed) == (3, 1, 2)
    assert sum(n for why, n in summary.reasons.items() if why.startswith("unreadable")) == 2


def test_likelihood_size_monochrome_and_source_size_filters(tmp_path: Path) -> None:
    colour, _ = anime_face(0, SIZE, "blue")
    grey = colour.convert("L").convert("RGB")
    write_crawl(tmp_path / "raw", [(encode(colour), None), (encode(grey), None), (face_png(2, size=200), None)])
    assert crop_faces(params(tmp_path, dedup_hamming=-1)).kept == 3
    mono = crop_faces(params(tmp_path, reject_monochrome=True, dedup_hamming=-1))
    assert mono.kept == 2 and mono.reasons["monochrome"] == 1
    small = crop_faces(params(tmp_path, min_source_side=SIZE, dedup_hamming=-1))
    assert small.kept == 2 and small.reasons["small source"] == 1
    with pytest.raises(CropError, match="low likelihood: 3"):
        crop_faces(params(tmp_path, min_likelihood=1.0, dedup_hamming=-1))
    with pytest.raises(CropError, match="face too small"):
        crop_faces(params(tmp_path, min_face=500, dedup_hamming=-1))


def test_faces_mode_refuses_array_shard_inputs(tmp_path: Path) -> None:
    write_manifest(tmp_path / "raw" / "manifest.jsonl", [Record(file="shard-00000.npy", index=0)])
    with pytest.raises(CropError, match="needs image files"):
        crop_faces(params(tmp_path))


# ---- re-runs and the process pool ------------------------------------------------------------

def test_a_rerun_does_no_repeated_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_crawl(tmp_path / "raw", [(face_png(seed, hair), None) for seed, hair in enumerate(["blonde", "blue", "pink"])])
    p = params(tmp_path, label_from="hair_color")
    first = crop_faces(p)
    manifest, images = (p.out / "manifest.jsonl").read_text(), shards(p.out)
    assert first.counters["images from cache"] == 0
    assert not Path(p.cache).resolve().is_relative_to(Path(p.out).resolve())

    def forbidden(*args: Any) -> None:
        raise AssertionError("work repeated on a re-run")

    import shutil

    shutil.rmtree(p.out)                      # DVC deletes the stage's outs before running it
    monkeypatch.setattr(faces, "detect", forbidden)
    monkeypatch.setattr(faces, "_load_rgb", forbidden)
    again = crop_faces(p)
    assert again.counters["images from cache"] == 3
    assert (p.out / "manifest.jsonl").read_text() == manifest and (shards(p.out) == images).all()
    # New crop params re-crop from the decoded image but reuse the cached detections.
    monkeypatch.undo()
    monkeypatch.setattr(faces, "detect", forbidden)
    bigger = crop_faces(params(tmp_path, label_from="hair_color", size=96, margin=0.2))
    assert bigger.kept == 3 and shards(tmp_path / "crop").shape[1:] == (96, 96, 3)
    # A damaged cache entry is recomputed, not trusted and not fatal.
    for entry in Path(p.cache).glob("crops/*/*/*.npz"):
        entry.write_bytes(b"PK\x03\x04 not a zip")
    monkeypatch.undo()
    assert crop_faces(p).counters["images from cache"] == 0
    assert (p.out / "manifest.jsonl").read_text() == manifest


def test_the_process_pool_gives_the_same_output_as_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faces, "MIN_IMAGES_PER_WORKER", 1)      # use the pool even for 4 images
    write_crawl(tmp_path / "raw", [(face_png(seed), None) for seed in range(4)])
    one = params(tmp_path, workers=1, out=tmp_path / "one", cache=tmp_path / "cache1")
    two = params(tmp_path, workers=2, out=tmp_path / "two", cache=tmp_path / "cache2")
    crop_faces(one)
    assert crop_faces(two).counters["workers"] == 2
    assert (shards(one.out) == shards(two.out)).all()
    assert (one.out / "manifest.jsonl").read_text() == (two.out / "manifest.jsonl").read_text()


# ---- the command -------------------------------------------------------------------------------

def test_cli_crop_faces(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stages.cli import app

    write_crawl(tmp_path / "raw", [(face_png(0, "blonde"), None), (face_png(1, "pink"), None)])
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"crop": {"metrics": str(tmp_path / "m.json"), "cache": str(tmp_path / "cache"),
                                                    "min_likelihood": 0.5}}))
    args = ["crop", "--mode", "faces", "--input", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
            "--size", "64", "--margin", "0.25", "--label-from", "hair_color", "--workers", "1", "--params", str(params_file)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [r.label for r in out] == ["blonde", "pink"]
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["params"]["margin"] == 0.25
    assert json.loads((tmp_path / "m.json").read_text())["kept"] == 2

    bad = CliRunner().invoke(app, args[:-2] + ["--label-from", "colour", "--params", str(params_file)])
    assert bad.exit_code == 2 and "label_from" in bad.output
