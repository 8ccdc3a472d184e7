# ruff: noqa: F811  (pytest fixtures imported from test_media are redefined as parameters)
"""The service on moving pictures and flat pictures: /v1/hash and /v1/match/upload with videos
(display rotation, letterbox, vPDQ) and animated images (later frames), and pdq_matchable."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image

from media_gen import animation
from test_media import FOUND, clips, known, run, videos  # noqa: F401  (module fixtures)
from test_service import Svc


@pytest.fixture
def service(known, clips, tmp_path):
    """A service on a copy of the `known` database, with a known vPDQ video added."""
    db = tmp_path / "svc.db"
    shutil.copy(known[0], db)
    run("lists", "create", "videos", "--db", db)
    run("lists", "add", "videos", clips / "known_clip.mp4", "--db", db)
    s = Svc(str(db))
    yield s
    s.close()


def _upload(svc: Svc, path_or_bytes, name: str) -> dict:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    r = svc.client.post("/v1/match/upload", files={"file": (name, data)}, headers=svc.h())
    assert r.status_code == 200, r.text
    return r.json()


def test_videos_and_animations_through_the_service(service, known, videos, clips) -> None:
    _db, _d, pic = known
    for name in FOUND:
        r = _upload(service, videos / name, name)
        ms = [m for m in r["matches"] if m["ref"] == "known.png"]
        assert ms and ms[0]["frame"]["index"] == 0 and ms[0]["frame_time"] == 0.0, name
        assert r["review_item_id"] and r["pdq_matchable"] is True
    r = _upload(service, videos / "unrelated.mp4", "u.mp4")
    assert r["matches"] == []
    card = Image.new("RGB", pic.size, (128, 128, 128))
    buf = io.BytesIO()
    animation(buf, [card, pic], [500, 3000], "GIF")
    r = _upload(service, buf.getvalue(), "a.gif")
    assert [m["frame"] for m in r["matches"]] == [{"index": 1, "t": 0.5}]
    assert r["hashes"]["kind"] == "animation" and len(r["hashes"]["frames"]) == 2
    # vPDQ: the trimmed copy of a known video, with the reference's percentages
    r = _upload(service, clips / "trimmed.mp4", "t.mp4")
    v = [m for m in r["matches"] if m["signal"] == "vpdq"]
    assert len(v) == 1 and v[0]["ref"] == "known_clip.mp4" and v[0]["query_match_percent"] >= 80
    h = service.client.post("/v1/hash", files={"file": ("r.mp4", (videos /
                            "rotated_tag90.mp4").read_bytes())}, headers=service.h()).json()
    h = h["hashes"]
    assert (h["kind"], h["rotation"], h["width"], h["height"]) == ("video", 270, 384, 256)
    assert len(h["vpdq"]) == 3 and h["vpdq"][0].split(",")[0] == h["frames"][0]["pdq"]


def test_flat_picture_says_it_cannot_be_matched_perceptually(service) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200, 150), (0, 0, 0)).save(buf, "PNG")
    r = _upload(service, buf.getvalue(), "black.png")
    assert r["matches"] == [] and r["pdq_matchable"] is False
    assert "below the matching floor 50" in r["pdq_reason"]
    assert r["hashes"]["pdq_matchable"] is False
