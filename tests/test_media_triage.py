# ruff: noqa: F811  (pytest fixtures imported from test_media are redefined as parameters)
"""Triage on videos and animated images: display rotation, robust frame views, animation
frames, and files.csv's pdq_matchable (the cases animated-gif-later-frame and
video-rotation-metadata, generated here)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from PIL import Image

from media_gen import animation
from test_media import FOUND, clips, known, run, videos  # noqa: F401  (module fixtures)


def test_triage_finds_them_and_says_pdq_matchable(known, videos, tmp_path) -> None:
    db, _d, pic = known
    ev = tmp_path / "ev"
    shutil.copytree(videos, ev)
    Image.new("RGB", (200, 150), (0, 0, 0)).save(ev / "black.png")
    card = Image.new("RGB", pic.size, (128, 128, 128))
    animation(ev / "anim.gif", [card, pic], [500, 3000], "GIF")
    run("triage", ev, "--case", "M1", "--out", tmp_path / "out", "--db", db, "-w", "1")
    text = (tmp_path / "out/files.csv").read_text()
    rows = {Path(r["path"]).name: r for r in csv.DictReader(text.splitlines())}
    for name in [*FOUND, "anim.gif"]:
        assert rows[name]["state"] == "known_near", name
        assert rows[name]["pdq_matchable"] == "true"
    assert rows["unrelated.mp4"]["state"] == "unknown"
    assert rows["black.png"]["pdq_matchable"] == "false"
    assert "quality 0 is below the matching floor 50" in rows["black.png"]["pdq_reason"]




def test_triage_finds_a_known_video_by_vpdq(clips, tmp_path) -> None:
    """A trimmed copy of a known video (listed as its vPDQ) is known_near in triage; an
    unrelated clip stays unknown."""
    db = tmp_path / "v.db"
    run("lists", "create", "videos", "--db", db)
    run("lists", "add", "videos", clips / "known_clip.mp4", "--db", db)
    ev = tmp_path / "ev"
    ev.mkdir()
    for name in ("trimmed.mp4", "letterboxed.mp4", "unrelated_clip.mp4"):
        shutil.copy(clips / name, ev / name)
    run("triage", ev, "--case", "V1", "--out", tmp_path / "out", "--db", db, "-w", "1")
    text = (tmp_path / "out/files.csv").read_text()
    rows = {Path(r["path"]).name: r for r in csv.DictReader(text.splitlines())}
    assert rows["trimmed.mp4"]["state"] == "known_near"
    assert rows["letterboxed.mp4"]["state"] == "known_near"
    assert rows["unrelated_clip.mp4"]["state"] == "unknown"
    # case.vics.json carries each video's vPDQ (reference JSON), ready for a partner's list
    media = json.loads((tmp_path / "out/case.vics.json").read_text())["value"]
    vp = {m["MediaFiles"][0]["FileName"]: json.loads(a["HashValue"]) for m in media
          for a in m.get("AlternativeHashes", []) if a["HashName"] == "vPDQ"}
    assert len(vp["unrelated_clip.mp4"]) == 10 and len(vp["trimmed.mp4"]) == 7
