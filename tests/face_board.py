"""A fake Moebooru board serving drawn anime heads (tests/face_art*.py) tagged with their hair colour.

Used by tests/test_e2e_anime.py and bench/bench_anime.py: the loopback server of
tests/moebooru_server.py, with every post's image replaced by a seeded head of the hair colour
its `<colour>_hair` tag names (brown when it has none).
"""
from __future__ import annotations

import io

from PIL import Image

from face_art import anime_face
from face_art_b import anime_face_b
from moebooru_server import FakeMoebooru, FakePost


class FaceBoard(FakeMoebooru):
    """The fake board, serving a drawn anime head of the post's hair colour for every post."""

    canvas = 256
    draw = staticmethod(anime_face)

    def file_bytes(self, post: FakePost) -> bytes:
        if post.id not in self._bytes:
            hair = next((t[:-5] for t in post.tags if t.endswith("_hair")), "brown")
            buf = io.BytesIO()
            self.draw(post.id, self.canvas, hair)[0].save(buf, "PNG")
            self._bytes[post.id] = buf.getvalue()
        return self._bytes[post.id]

    def variant_bytes(self, post: FakePost, variant: str) -> bytes:
        if variant == "file":
            return self.file_bytes(post)
        key = -post.id * 10 - len(variant)
        if key not in self._bytes:
            img = Image.open(io.BytesIO(self.file_bytes(post))).convert("RGB")
            if variant == "preview":
                img = img.resize((self.canvas // 2, self.canvas // 2), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            self._bytes[key] = buf.getvalue()
        return self._bytes[key]


class FaceBoardB(FaceBoard):
    """The same board drawn in the second style (tests/face_art_b.py)."""

    draw = staticmethod(anime_face_b)


def face_posts(hairs: dict[str, int], untagged: int = 0) -> list[FakePost]:
    """`hairs[colour]` posts tagged `1girl solo <colour>_hair`, then `untagged` without a hair tag."""
    out, pid = [], 1
    for hair, n in hairs.items():
        for _ in range(n):
            out.append(FakePost(id=pid, tags=["1girl", "solo", f"{hair}_hair"], size=(FaceBoard.canvas, FaceBoard.canvas)))
            pid += 1
    for _ in range(untagged):
        out.append(FakePost(id=pid, tags=["1girl", "solo"], size=(FaceBoard.canvas, FaceBoard.canvas)))
        pid += 1
    return out
