"""crop.mode faces: the real AnimeFace detector on drawn anime heads (tests/face_art.py)."""
from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import yaml
from PIL import Image

from face_art import HAIR_COLOURS, anime_face, blank, blurred_face, plain_portrait, random_shapes, sprite, two_faces
from pipeline.crop import dedup, detector, faces
from pipeline.crop.cropping import CropError, CropSummary, FaceError, hash_split
from pipeline.crop.dedup import near_duplicates
from pipeline.crop.detector import check_pillow
from pipeline.crop.faces import crop_faces, crop_square, square_around
from pipeline.crop.hair import nearest_colour
from pipeline.shared.config import CropParams
from pipeline.shared.manifest import Record, read_manifest, write_manifest

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

@pytest.mark.parametrize("style", ["a", "b"])
def test_detector_finds_the_drawn_faces_and_nothing_in_negatives(style: str) -> None:
    """Fails if detection silently returns nothing, as animeface 2.0.3 does with Pillow >= 12.

    Style b (tests/face_art_b.py) is the second face set of `bench_anime.py --style b`.
    """
    from face_art_b import anime_face_b

    draw = anime_face if style == "a" else anime_face_b
    hits = 0
    for seed in range(6):
        img, drawn = draw(seed, SIZE, list(HAIR_COLOURS)[seed])
        found = detector.detect(img)
        assert found, f"no face found in style-{style} fixture seed {seed} (Pillow/animeface mismatch?)"
        x, y, w, h = found[0].box
        dx, dy, dw, dh = drawn.box
        assert dx <= x + w / 2 <= dx + dw and dy <= y + h / 2 <= dy + dh, "face centre is outside the drawn head"
        hits += found[0].likelihood >= 0.5
    assert hits >= 5
    for negative in (blank(SIZE), blurred_face(0, SIZE), random_shapes(0, SIZE)):
        assert detector.detect(negative) == []


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
    assert nearest_colour((235, 212, 125), palette) == "blonde"
    assert nearest_colour((125, 80, 55), palette) == "brown"
    assert nearest_colour((190, 50, 45), palette) == "red"
    with pytest.raises(FaceError, match="hair_palette"):
        nearest_colour((0, 0, 0), {})


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


def test_near_duplicates_need_a_close_hash_and_pass_the_same_test() -> None:
    a, b = 0x0F0F_0F0F_0F0F_0F0F, 0x0F0F_0F0F_0F0F_0F0E        # 1 bit apart
    far = a ^ 0xFFFF_FFFF_0000_0000
    assert near_duplicates([a, b, far, a], range(4), 4) == {1, 3}
    assert near_duplicates([a, b, far, a], range(4), 0) == {3}
    assert near_duplicates([a, b], range(2), -1) == set()
    # `same(kept, candidate)` is asked only about kept faces whose hash is close enough.
    asked: list[tuple[int, int]] = []
    assert near_duplicates([a, b, far, a], range(4), 4, lambda j, i: asked.append((j, i)) or i == 3) == {3}
    assert asked == [(0, 1), (0, 3)]          # far is never asked about; the first match settles it


def brute_force_near_duplicates(hashes: list[int], order: list[int], max_distance: int, same) -> set[int]:
    """The definition, written as the scan of every kept face it replaced."""
    kept: list[int] = []
    dropped: set[int] = set()
    for i in order:
        if any(bin(hashes[j] ^ hashes[i]).count("1") <= max_distance and same(j, i) for j in kept):
            dropped.add(i)
        else:
            kept.append(i)
    return dropped


@pytest.mark.parametrize("max_distance", [0, 1, 6, 13, 40, 63, 64])
def test_the_hash_band_index_decides_exactly_as_the_full_scan(max_distance: int) -> None:
    """Random hashes with planted near copies (1..max bits flipped) and an arbitrary `same`: identical drops and asks."""
    rng = np.random.default_rng(max_distance)
    hashes = [int(high) * 2 + int(low) for high, low in zip(rng.integers(0, 2 ** 63, 400), rng.integers(0, 2, 400))]
    for i in range(0, 400, 3):           # near copies of earlier hashes, up to max_distance + 2 bits away
        bits = rng.choice(64, size=int(rng.integers(0, min(max_distance + 3, 64))), replace=False)
        hashes[i] = hashes[int(rng.integers(0, 400))] ^ sum(1 << int(b) for b in bits)
    order = [int(i) for i in rng.permutation(400)]
    verdict = {(j, i): bool(rng.random() < 0.7) for j in range(400) for i in range(400)}
    asked_fast: list[tuple[int, int]] = []
    asked_full: list[tuple[int, int]] = []
    fast = near_duplicates(hashes, order, max_distance, lambda j, i: asked_fast.append((j, i)) or verdict[j, i])
    full = brute_force_near_duplicates(hashes, order, max_distance,
                                       lambda j, i: asked_full.append((j, i)) or verdict[j, i])
    assert fast == full and len(fast) > 0
    assert asked_fast == asked_full


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


# ---- transparency (issue 10) -------------------------------------------------------------------

MAGENTA = (255, 0, 255)


def magenta_pixels(img: np.ndarray) -> int:
    """Pixels showing the colour hidden under alpha 0 (pure or nearly: the drawing has no magenta)."""
    c = img.astype(int)
    return int(((c[..., 0] > 200) & (c[..., 1] < 90) & (c[..., 2] > 200)).sum())


def paletted(rgba: Image.Image) -> bytes:
    """The sprite as a palette PNG whose transparent index is the hidden colour."""
    binary = Image.new("RGB", rgba.size, MAGENTA)
    binary.paste(rgba.convert("RGB"), mask=rgba.getchannel("A").point(lambda a: 255 if a > 127 else 0))
    p = binary.quantize(colors=200, dither=Image.Dither.NONE)
    palette = np.array(p.getpalette()[:600]).reshape(-1, 3)
    index = int(np.abs(palette - MAGENTA).sum(axis=1).argmin())
    return encode(p, "PNG", transparency=index)


def test_transparent_sprites_are_composited_onto_the_background(tmp_path: Path) -> None:
    rgba = sprite(0, hidden=MAGENTA)
    assert np.asarray(rgba)[0, 0].tolist() == [255, 0, 255, 0]         # the hidden colour is really there
    items = [(encode(rgba), None), (encode(rgba.convert("LA")), None), (paletted(sprite(1, hidden=MAGENTA, hair="pink")), None)]
    records = write_crawl(tmp_path / "raw", items)
    summary = crop_faces(params(tmp_path, dedup_hamming=-1, margin=0.5))
    assert summary.kept == 3, summary.reasons
    crops = shards(tmp_path / "crop")
    by_file = {r.extra["input_file"]: crops[i] for i, r in enumerate(read_manifest(tmp_path / "crop" / "manifest.jsonl"))}
    for r in records:
        crop = by_file[r.file]
        assert magenta_pixels(crop) == 0, f"{r.file}: the colour under alpha 0 shows"
        assert (crop[0, 0] >= 250).all() and (crop[0, -1] >= 250).all(), f"{r.file}: corners should be the white background"
    # The RGBA crop is the crop of the same drawing made on white.
    flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)
    drawn_on_white = detector.detect(flat.convert("RGB"))
    (rgba_record,) = [r for r in read_manifest(tmp_path / "crop" / "manifest.jsonl") if r.file and r.extra["input_file"] == records[0].file]
    assert list(drawn_on_white[0].box) == rgba_record.box

    grey = crop_faces(params(tmp_path, dedup_hamming=-1, margin=0.5, background="#808080", out=tmp_path / "grey"))
    assert grey.kept == 3
    corner = shards(tmp_path / "grey")[0][0, 0]
    assert np.abs(corner.astype(int) - 128).max() <= 2
    with pytest.raises(ValueError, match="background"):
        params(tmp_path, background="transparent-ish")


def test_resize_mode_composites_transparency_too(tmp_path: Path) -> None:
    from pipeline.crop.crop import crop_resize

    write_crawl(tmp_path / "raw", [(encode(sprite(0, hidden=MAGENTA)), None)])
    p = params(tmp_path, mode="resize", size=32)
    crop_resize(p)
    img = shards(p.out)[0]
    assert magenta_pixels(img) == 0 and (img[0, 0] >= 250).all()


# ---- duplicates within and across images (issue 10) ---------------------------------------------

def test_two_close_but_separate_faces_in_one_image_are_both_kept(tmp_path: Path) -> None:
    # Centres 132 px apart on a 2700 px wide image: under 5% of its side, but the boxes do not overlap.
    img = two_faces((2700, 300), [(1300, 150), (1435, 150)], [125, 125])
    write_crawl(tmp_path / "raw", [(encode(img), None)])
    summary = crop_faces(params(tmp_path, keep="all", min_face=32))
    assert summary.kept == 2 and summary.reasons["duplicate"] == 0 and summary.reasons["detected twice"] == 0
    boxes = [r.box for r in read_manifest(tmp_path / "crop" / "manifest.jsonl")]
    assert dedup.iou(boxes[0], boxes[1]) == 0


def result_with(boxes_and_likelihoods: list[tuple[tuple[int, int, int, int], float]]) -> faces._Result:
    """A detection result of one 1000 x 1000 image as the worker returns it (most likely first)."""
    found = [{"box": list(box), "likelihood": lik, "hair": [70, 110, 220], "chroma": 0.2,
              "crop_box": list(square_around(box, 0.3)) + [square_around(box, 0.3)[2]]}
             for box, lik in sorted(boxes_and_likelihoods, key=lambda f: -f[1])]
    crops = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(len(found))])
    return faces._Result("ok", "d" * 64, 1000, 1000, len(found), "0" * 16, found, crops)


def test_overlapping_boxes_in_one_image_are_one_face_detected_twice(tmp_path: Path) -> None:
    p = params(tmp_path, keep="all", min_face=10, dup_iou=0.4)
    res = result_with([((100, 100, 100, 100), 0.9), ((110, 105, 110, 110), 0.8),   # IoU ~0.72: the same face
                       ((215, 100, 100, 100), 0.7)])                               # next to it, no overlap
    summary = CropSummary(mode="faces", out=tmp_path)
    picked = faces._select(Record(file="x.png"), res, p, summary)
    assert [c.face["box"] for c in picked] == [[100, 100, 100, 100], [215, 100, 100, 100]]
    assert summary.reasons["detected twice"] == 1


def test_keep_best_breaks_likelihood_ties_by_size_and_max_faces_applies_after_the_filters(tmp_path: Path) -> None:
    res = result_with([((10, 10, 127, 127), 1.0), ((300, 300, 262, 262), 1.0), ((700, 50, 150, 150), 0.99)])
    summary = CropSummary(mode="faces", out=tmp_path)
    (best,) = faces._select(Record(file="x.png"), res, params(tmp_path, keep="best", min_face=10), summary)
    assert best.face["box"] == [300, 300, 262, 262] and summary.reasons["not the best face"] == 2
    # The two most likely faces are too small: max_faces_per_image=1 must count only faces that passed.
    res = result_with([((10, 10, 40, 40), 1.0), ((100, 10, 40, 40), 0.98), ((300, 300, 200, 200), 0.9),
                       ((600, 600, 180, 180), 0.85)])
    summary = CropSummary(mode="faces", out=tmp_path)
    picked = faces._select(Record(file="x.png"), res, params(tmp_path, keep="all", max_faces_per_image=1, min_face=64), summary)
    assert [c.face["box"] for c in picked] == [[300, 300, 200, 200]]
    assert summary.reasons["face too small"] == 2 and summary.reasons["over max_faces_per_image"] == 1


def test_different_characters_of_one_layout_are_not_merged_but_reposts_are(tmp_path: Path) -> None:
    """40 characters on one plain background, head centred (whole-image pHashes within 6 bits of
    each other for many pairs), plus 5 reposts resized 1.3x and recompressed as JPEG q85."""
    originals = [plain_portrait(seed) for seed in range(40)]
    reposts = [encode(originals[i].resize((333, 333), Image.Resampling.BICUBIC), "JPEG", quality=85) for i in range(5)]
    records = write_crawl(tmp_path / "raw", [(encode(img), None) for img in originals] + [(r, None) for r in reposts])
    found = crop_faces(params(tmp_path, dedup_hamming=-1, min_face=32))
    detected = {r.md5 for r in read_manifest(tmp_path / "crop" / "manifest.jsonl")}
    hashes = {r.md5: int(dedup.image_hash(Image.open(tmp_path / "raw" / r.file).convert("RGB"))) for r in records[:40]}
    close = sum(bin(hashes[a.md5] ^ hashes[b.md5]).count("1") <= 6 for i, a in enumerate(records[:40]) for b in records[i + 1:40])
    assert close >= 10, "the fixture should fool a whole-image hash"

    summary = crop_faces(params(tmp_path, min_face=32))
    kept = {r.md5 for r in read_manifest(tmp_path / "crop" / "manifest.jsonl")}
    originals_found = {r.md5 for r in records[:40]} & detected
    pairs = [(records[i].md5, records[40 + i].md5) for i in range(5)
             if records[i].md5 in detected and records[40 + i].md5 in detected]
    assert len(originals_found) >= 36 and len(pairs) >= 4, found.reasons
    lost = [m for m in originals_found if m not in kept and not any(m == a and b in kept for a, b in pairs)]
    assert lost == [], f"{len(lost)} different characters merged as duplicates"
    assert all(len({a, b} & kept) == 1 for a, b in pairs), "every repost should be merged with its original"
    assert summary.counters["duplicates removed"] == len(pairs)


def test_region_difference_aligns_a_resized_copy() -> None:
    img = plain_portrait(3)
    copy = img.resize((333, 333), Image.Resampling.BICUBIC)
    a, b = detector.detect(img)[0], detector.detect(copy)[0]
    ca, sa = faces.crop_face(np.asarray(img), a.box, 0.3, "edge", 64)
    cb, sb = faces.crop_face(np.asarray(copy), b.box, 0.3, "edge", 64)
    ra = dedup.relative_square({"crop_box": sa}, 256, 256)
    rb = dedup.relative_square({"crop_box": sb}, 333, 333)
    assert dedup.region_difference(ca, ra, cb, rb) < 8
    other = plain_portrait(11)                     # same hair colour (11 % 8 == 3), another character
    c = detector.detect(other)[0]
    cc, sc = faces.crop_face(np.asarray(other), c.box, 0.3, "edge", 64)
    assert dedup.region_difference(ca, ra, cc, dedup.relative_square({"crop_box": sc}, 256, 256)) > 24


# ---- the test split (issue 10) -------------------------------------------------------------------

def test_hash_split_is_stratified_by_class_and_keeps_an_image_together() -> None:
    sources = [f"md5-{i // 2}" for i in range(200)]               # 100 images of 2 faces each
    labels = ["blue" if i < 150 else "pink" for i in range(200)]   # 75 blue images, 25 pink
    split = hash_split(sources, labels, 0.2)
    for a, b in zip(split[::2], split[1::2]):
        assert a == b, "two faces of one image on different sides"
    assert sum(s == "test" for s, lab in zip(split, labels) if lab == "blue") == 2 * 15
    assert sum(s == "test" for s, lab in zip(split, labels) if lab == "pink") == 2 * 5
    assert hash_split(sources[::-1], labels[::-1], 0.2) == split[::-1], "the split must not depend on the order"
    assert hash_split(["a", "b"], ["x", "x"], 0.2).count("test") == 1      # a class of 2 gets one test image
    assert hash_split(["a"], ["x"], 0.2) == ["train"]


def test_test_fraction_puts_a_share_of_each_class_in_the_test_split(tmp_path: Path) -> None:
    hairs = ["blonde", "blue", "pink"] * 4
    write_crawl(tmp_path / "raw", [(face_png(seed, hair), None) for seed, hair in enumerate(hairs)])
    p = params(tmp_path, label_from="hair_color", test_fraction=0.25, dedup_hamming=-1)
    crop_faces(p)
    out = read_manifest(p.out / "manifest.jsonl")
    assert len(out) >= 10
    for hair in ("blonde", "blue", "pink"):
        splits = [r.split for r in out if r.label == hair]
        assert splits.count("test") == 1 and len(splits) >= 3, (hair, splits)     # round(0.25 x 3 or 4) = 1
    crop_faces(params(tmp_path, label_from="hair_color", dedup_hamming=-1))     # default 0.0: the source's split
    assert {r.split for r in read_manifest(p.out / "manifest.jsonl")} == {"train"}


# ---- the cache key (issue 11, item 3) -------------------------------------------------------------

def test_the_cache_is_keyed_on_the_files_bytes_not_the_posts_md5(tmp_path: Path) -> None:
    """Re-crawling another variant keeps the post md5 but changes the bytes: crops must follow the bytes."""
    first = face_png(0, "blonde", size=256)
    write_crawl(tmp_path / "raw", [(first, None)])
    p = params(tmp_path, label_from="hair_color")
    crop_faces(p)
    (old,) = read_manifest(p.out / "manifest.jsonl")
    # The same post (same md5 in the manifest, same file name), now a larger image of other pixels.
    other = face_png(5, "pink", size=320)
    (tmp_path / "raw" / old.extra["input_file"]).write_bytes(other)
    summary = crop_faces(p)
    (new,) = read_manifest(p.out / "manifest.jsonl")
    assert new.md5 == old.md5 and summary.counters["images from cache"] == 0
    assert new.label == "pink" and new.box != old.box
    with Image.open(tmp_path / "raw" / new.extra["input_file"]) as src:
        x0, y0, side, _ = new.extra["crop_box"]
        expected = np.asarray(src.convert("RGB").crop((x0, y0, x0 + side, y0 + side)).resize((64, 64), Image.Resampling.LANCZOS))
    assert np.abs(shards(p.out)[0].astype(int) - expected).max() <= 1
    # The detector settings are part of the key: another background re-detects.
    assert crop_faces(params(tmp_path, label_from="hair_color", background="black")).counters["images from cache"] == 0


# ---- every tunable key has a flag --------------------------------------------------------------

def test_every_crop_key_has_a_cli_flag() -> None:
    import typer

    from stages.cli import app

    flags = {p.name for p in typer.main.get_command(app).commands["crop"].params}  # type: ignore[attr-defined]
    missing = set(CropParams.model_fields) - {"tag_labels", "hair_palette"} - flags
    assert not missing, f"crop keys without a flag: {sorted(missing)}"


@pytest.mark.parametrize("module", ["animeface", "imagehash"])
def test_faces_without_the_extra_is_a_one_line_error_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)   # what an environment without the extra sees
    with pytest.raises(FaceError, match=rf"needs {module}, .*pip install 'augment\[faces\]'"):
        faces.crop_faces(CropParams(mode="faces", input=tmp_path / "nothing", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
