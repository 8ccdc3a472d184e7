"""The HMA-compatible API end to end: the real app on SQLite and PostgreSQL, real images,
real keys. Every answer is checked against the shapes recorded by hand from HMA's published
API documentation (tests/fixtures/hma_api_shapes.json, which names its sources), and the
values against what hashwatch's own library computes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("fastapi")

import hashwatch  # noqa: E402
from conftest_pg import pg_db, pg_url, store_url  # noqa: E402,F401  (fixtures: both backends)
from hashwatch.hashing import hash_file  # noqa: E402
from test_service import Svc  # noqa: E402

DEMO = Path(hashwatch.__file__).parent / "demo_data"
SHAPES = {e["name"]: e for e in json.loads(
    (Path(__file__).parent / "fixtures" / "hma_api_shapes.json").read_text())["exchanges"]}


def same_shape(doc: Any, ours: Any, where: str = "$", extra: frozenset[str] = frozenset()
               ) -> None:
    """``ours`` has the structure of HMA's recorded ``doc``: the same keys (``<...>`` keys
    stand for data), the same JSON types, recursively."""
    if isinstance(doc, dict):
        assert isinstance(ours, dict), f"{where}: expected an object, got {ours!r}"
        data_keys = [k for k in doc if k.startswith("<")]
        if data_keys:
            for k, v in ours.items():
                same_shape(doc[data_keys[0]], v, f"{where}.{k}")
        elif doc:  # {} in the docs is a free-form object
            assert set(ours) - extra == set(doc), f"{where}: keys {sorted(ours)} != {sorted(doc)}"
            for k, v in doc.items():
                same_shape(v, ours[k], f"{where}.{k}")
    elif isinstance(doc, list):
        assert isinstance(ours, list), f"{where}: expected a list, got {ours!r}"
        if doc and all(type(x) is type(doc[0]) for x in doc) and len(doc) == 1:
            for i, v in enumerate(ours):
                same_shape(doc[0], v, f"{where}[{i}]")
        else:  # a tuple: position by position
            assert len(ours) == len(doc), f"{where}: {ours!r} is not like {doc!r}"
            for i, (d, v) in enumerate(zip(doc, ours, strict=True)):
                same_shape(d, v, f"{where}[{i}]")
    elif doc is None:
        assert ours is None, f"{where}: expected null, got {ours!r}"
    elif isinstance(doc, bool):
        assert isinstance(ours, bool), f"{where}: expected a boolean, got {ours!r}"
    elif isinstance(doc, int | float):
        assert isinstance(ours, int | float) and not isinstance(ours, bool), \
            f"{where}: expected a number, got {ours!r}"
        if isinstance(doc, int) and not isinstance(doc, bool):
            assert isinstance(ours, int), f"{where}: expected an integer, got {ours!r}"
    else:
        assert isinstance(ours, str), f"{where}: expected a string, got {ours!r}"


def check(name: str, r: Any) -> Any:
    """Assert the response has the status and shape HMA documents for exchange ``name``."""
    spec = SHAPES[name]
    assert r.status_code == spec["status"], f"{name}: {r.status_code} {r.text}"
    body = r.json()
    same_shape(spec["response"], body, name, frozenset(spec.get("hashwatch_adds", ())))
    return body


def flip_bits(hex64: str, n: int) -> str:
    """The PDQ hash with its first ``n`` bits inverted (a known Hamming distance of n)."""
    v = int(hex64, 16) ^ (((1 << n) - 1) << (256 - n))
    return f"{v:064x}"


def jpeg(im: Image.Image, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
def hma(store_url):  # noqa: F811 - on SQLite and on PostgreSQL
    s = Svc(store_url)
    s.curator = s.key("curator", "curate")
    s.platform = s.key("platform", "match")
    s.hasher = s.key("hasher", "hash")
    yield s
    s.close()


def test_hma_endpoints_end_to_end(hma):
    c = hma.client
    cur, plat, hsh = hma.h(hma.curator), hma.h(hma.platform), hma.h(hma.hasher)
    known = DEMO / "kodim01.jpg"
    lib = hash_file(known)  # what the library says the known picture's hashes are

    # -- banks ------------------------------------------------------------------------------------
    body = check("bank_create", c.post("/c/banks", json={"name": "KNOWN_A"}, headers=cur))
    assert body == {"name": "KNOWN_A", "matching_enabled_ratio": 1.0}
    assert c.post("/c/banks", json={"name": "KNOWN_B", "enabled": False},
                  headers=cur).json()["matching_enabled_ratio"] == 0.0
    check("error", c.post("/c/banks", json={"name": "lower_case"}, headers=cur))
    check("error", c.post("/c/banks", json={"name": "01_DIGIT_FIRST"}, headers=cur))
    r = c.post("/c/banks", json={"name": "KNOWN_A"}, headers=cur)
    assert r.status_code == 403 and r.json()["message"] == "Bank already exists"
    r = c.post("/c/banks", json={"name": "HALF", "enabled_ratio": 0.5}, headers=cur)
    assert r.status_code == 400 and "on or off" in r.json()["message"]
    banks = check("banks_index", c.get("/c/banks", headers=plat))
    assert [b["name"] for b in banks] == ["KNOWN_A", "KNOWN_B"]
    assert check("bank_show", c.get("/c/bank/KNOWN_B", headers=plat))["matching_enabled_ratio"] == 0
    assert c.get("/c/bank/NOPE", headers=plat).status_code == 404

    # -- content: an upload (hashed like `lists add`) and signal values ---------------------------
    meta = {"content_id": "post-17", "content_uri": "https://platform.example/p/17",
            "json": {"queue": "csam", "reviewer": 4}}
    body = check("content_add_upload", c.post(
        "/c/bank/KNOWN_A/content", files={"photo": ("known.jpg", known.read_bytes())},
        data={"metadata": json.dumps(meta), "note": "reported twice"}, headers=cur))
    cid = body["id"]
    assert body["signals"] == {"pdq": lib.pdq, "md5": lib.md5, "sha1": lib.sha1,
                               "sha256": lib.sha256}
    shown = check("content_show", c.get(f"/c/bank/KNOWN_A/content/{cid}",
                                        params={"include_signals": "true"}, headers=cur))
    assert shown["id"] == cid and shown["bank"]["name"] == "KNOWN_A"
    assert shown["signals"] == body["signals"] and shown["metadata"] == meta
    assert shown["note"] == "reported twice"
    plain = c.get(f"/c/bank/KNOWN_A/content/{cid}", params={"include_metadata": "false"},
                  headers=cur).json()
    assert "signals" not in plain and "metadata" not in plain
    assert c.get(f"/c/bank/KNOWN_B/content/{cid}", headers=cur).status_code == 404

    other = hash_file(DEMO / "kodim02.jpg")
    near = flip_bits(other.pdq, 5)  # a partner's PDQ of a near copy of kodim02
    body = check("content_add_signal", c.post(
        "/c/bank/KNOWN_A/signal", json={"pdq": near, "video_md5": "AB" * 16, "note": "partner"},
        headers=cur))
    cid2 = body["id"]
    assert cid2 != cid and body["signals"] == {"pdq": near, "video_md5": "ab" * 16}
    # the same values again: the same content, nothing new
    again = c.post("/c/bank/KNOWN_A/signal", json={"pdq": near}, headers=cur).json()
    assert again["id"] == cid2
    assert c.post("/c/bank/KNOWN_A/signal", json={"pdq": "xyz"}, headers=cur).status_code == 400
    assert c.post("/c/bank/KNOWN_A/signal", json={"note": "n"}, headers=cur).status_code == 400
    assert c.post("/c/bank/KNOWN_A/signal", json={"pdq": near, "note": "x" * 256},
                  headers=cur).status_code == 400

    # -- hashing ----------------------------------------------------------------------------------
    hashed = check("hash_upload", c.post("/h/hash", files={"photo": ("a.jpg", known.read_bytes())},
                                          headers=hsh))
    assert hashed == {"pdq": lib.pdq, "md5": lib.md5, "sha1": lib.sha1, "sha256": lib.sha256}
    only = c.post("/h/hash", params={"types": "pdq"},
                  files={"photo": ("a.jpg", known.read_bytes())}, headers=hsh).json()
    assert only == {"pdq": lib.pdq}
    r = c.post("/h/hash", files={"picture": ("a.jpg", known.read_bytes())}, headers=hsh)
    assert r.status_code == 400 and "content_type" in r.json()["message"]

    # -- lookups ----------------------------------------------------------------------------------
    reenc = jpeg(Image.open(known).resize((600, 400)), 60)
    q = c.post("/h/hash", files={"photo": ("q.jpg", reenc)}, headers=hsh).json()["pdq"]
    d = bin(int(q, 16) ^ int(lib.pdq, 16)).count("1")
    assert 0 < d <= 31
    found = check("lookup_signal", c.get("/m/lookup", params={"signal_type": "pdq", "signal": q},
                                         headers=plat))
    assert found == {"KNOWN_A": [{"bank_content_id": cid, "distance": str(d)}]}
    exact = c.get("/m/lookup", params={"signal_type": "video_md5", "signal": "ab" * 16},
                  headers=plat).json()
    assert exact == {"KNOWN_A": [{"bank_content_id": cid2, "distance": "-"}]}
    far = flip_bits(lib.pdq, 40)
    assert c.get("/m/lookup", params={"signal_type": "pdq", "signal": far},
                 headers=plat).json() == {}
    for banks in ("KNOWN_B", "NO_SUCH_BANK"):  # HMA: a filter naming no match is no match
        assert c.get("/m/lookup", params={"signal_type": "pdq", "signal": q, "banks": banks},
                     headers=plat).json() == {}
    check("raw_lookup", r := c.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": q},
                                   headers=plat))
    assert r.json() == {"matches": [cid]}
    r = c.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": flip_bits(other.pdq, 2),
                                       "include_distance": "true"}, headers=plat)
    assert check("raw_lookup_distance", r) == {"matches": [{"bank_content_id": cid2,
                                                            "distance": "3"}]}
    bad = check("error", c.get("/m/lookup", params={"signal_type": "pdq", "signal": "12ab"},
                               headers=plat))
    assert "pdq" in bad["message"]
    assert c.get("/m/lookup", params={"signal_type": "tmk", "signal": "00"},
                 headers=plat).status_code == 400

    # an upload of the picture mirrored: found through the robust routes, by content id
    mirrored = jpeg(Image.open(known).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    up = check("lookup_upload", c.post("/m/lookup", files={"photo": ("m.jpg", mirrored)},
                                       headers=plat))
    assert set(up) == {"pdq", "md5", "sha1", "sha256"}
    assert [m["bank_content_id"] for m in up["pdq"]["KNOWN_A"]] == [cid]
    assert up["md5"] == {} and up["sha256"] == {}
    # the file itself: matched exactly by each crypto hash, one content (the matcher folds
    # its identical PDQ into the exact match)
    same = c.post("/m/lookup", files={"photo": ("k.jpg", known.read_bytes())}, headers=plat).json()
    for sig in ("md5", "sha1", "sha256"):
        assert same[sig] == {"KNOWN_A": [{"bank_content_id": cid, "distance": "-"}]}

    # -- compare and index status -----------------------------------------------------------------
    cmp = check("compare", c.post("/m/compare", json={"pdq": [lib.pdq, flip_bits(lib.pdq, 9)]},
                                  headers=hsh))
    assert cmp == {"pdq": [True, {"distance": 9}]}
    assert c.post("/m/compare", json={"pdq": [lib.pdq, flip_bits(lib.pdq, 40)],
                                      "md5": [lib.md5, lib.md5.upper()]},
                  headers=hsh).json() == {"pdq": [False, {"distance": 40}], "md5": [True, {}]}
    for bad_body in (["banana"], {"pdq": "banana"}, {"pdq": []}, {"pdq": ["banana", "banana"]},
                     {"pdq": [lib.pdq, lib.pdq, lib.pdq]}):
        assert c.post("/m/compare", json=bad_body, headers=hsh).status_code == 400
    status = check("index_status", c.get("/m/index/status", headers=plat))
    assert status["pdq"]["present"] is True and status["pdq"]["size"] >= 2
    # live entries: kodim01's SHA-256; its MD5 and the partner's video MD5
    assert status["sha256"]["size"] == 1 and status["md5"]["size"] == 2
    assert status["video_md5"] == status["md5"]
    assert set(status) >= {"pdq", "md5", "sha1", "sha256", "video_md5"}
    assert list(c.get("/m/index/status", params={"signal_type": "pdq"},
                      headers=plat).json()) == ["pdq"]

    # -- list state applies: a disabled bank does not match ---------------------------------------
    check("bank_update", c.put("/c/bank/KNOWN_A", json={"enabled": False}, headers=cur))
    assert c.get("/m/lookup", params={"signal_type": "pdq", "signal": q},
                 headers=plat).json() == {}
    assert c.put("/c/bank/KNOWN_A", json={"enabled_ratio": 1.0},
                 headers=cur).json()["matching_enabled_ratio"] == 1.0
    assert c.get("/m/lookup", params={"signal_type": "pdq", "signal": q},
                 headers=plat).json() == found
    assert c.put("/c/bank/KNOWN_A", json={"name": "RENAMED"}, headers=cur).status_code == 400

    # -- removing content -------------------------------------------------------------------------
    assert check("content_delete", c.delete(f"/c/bank/KNOWN_A/content/{cid}",
                                            headers=cur)) == {"deleted": 1}
    assert c.delete(f"/c/bank/KNOWN_A/content/{cid}", headers=cur).json() == {"deleted": 0}
    assert c.get("/m/lookup", params={"signal_type": "pdq", "signal": q},
                 headers=plat).json() == {}
    assert c.get(f"/c/bank/KNOWN_A/content/{cid}", headers=cur).status_code == 404
    # adding the picture again restores the same content
    back = c.post("/c/bank/KNOWN_A/content", files={"photo": ("k.jpg", known.read_bytes())},
                  headers=cur).json()
    assert back["id"] == cid

    # -- deleting banks ---------------------------------------------------------------------------
    assert check("bank_delete", c.delete("/c/bank/KNOWN_B", headers=cur)) == {"message": "Done"}
    assert c.delete("/c/bank/KNOWN_B", headers=cur).status_code == 200  # as HMA: no error
    assert c.get("/c/bank/KNOWN_B", headers=plat).status_code == 404

    # -- audited like every other call, under the key's name --------------------------------------
    events = c.get("/v1/audit", params={"limit": 1000}, headers=hma.h()).json()["events"]
    did = {(e["actor"], e["action"]) for e in events}
    assert {("curator", "list.create"), ("curator", "entries.add"),
            ("curator", "entries.remove"), ("curator", "list.disable"),
            ("curator", "list.delete"), ("curator", "hma.content.read"),
            ("platform", "match.hashes"), ("platform", "match.upload")} <= did


def test_hma_endpoints_need_keys_and_scopes(tmp_path):
    s = Svc(str(tmp_path / "hw.db"))
    c = s.client
    try:
        hasher, matcher = s.key("hasher", "hash"), s.key("matcher", "match")
        pdq = "f" * 64
        calls = [("get", "/c/banks", {}), ("post", "/c/banks", {"json": {"name": "B"}}),
                 ("get", "/m/lookup", {"params": {"signal_type": "pdq", "signal": pdq}}),
                 ("get", "/m/raw_lookup", {"params": {"signal_type": "pdq", "signal": pdq}}),
                 ("get", "/m/index/status", {}),
                 ("post", "/m/compare", {"json": {"pdq": [pdq, pdq]}}),
                 ("post", "/h/hash", {"files": {"photo": ("a.jpg", b"x")}})]
        for method, path, kw in calls:  # HMA has no authentication; hashwatch does
            r = getattr(c, method)(path, **kw)
            # refused by the request guard before any router: hashwatch's error shape
            assert r.status_code == 401 and r.json()["error"]["message"], (path, r.text)
        # scopes: hashing is not matching, matching is not curating
        assert c.get("/m/lookup", params={"signal_type": "pdq", "signal": pdq},
                     headers=s.h(hasher)).status_code == 403
        assert c.post("/c/banks", json={"name": "B"}, headers=s.h(matcher)).status_code == 403
        assert c.post("/c/bank/B/signal", json={"pdq": pdq},
                      headers=s.h(matcher)).status_code == 403
        assert c.post("/m/compare", json={"pdq": [pdq, pdq]},
                      headers=s.h(hasher)).status_code == 200
        assert c.get("/c/banks", headers=s.h(matcher)).json() == []
    finally:
        s.close()


def test_hma_video_content_and_lookup(tmp_path):
    """A known video added through /c/bank/<name>/content (field ``video``) is kept as its
    MD5/SHA-1/SHA-256 and vPDQ; a re-encoded copy trimmed at both ends is found by vPDQ, the
    file itself by ``video_md5``; an unrelated clip is not."""
    from media_gen import scenes, write_video

    known = write_video(tmp_path / "known.mp4", scenes(11, 8), 80)
    trimmed = write_video(tmp_path / "trimmed.mp4", lambda i: scenes(11, 8)(i + 15), 50,
                          bit_rate=600_000)
    other = write_video(tmp_path / "other.mp4", scenes(12, 6), 60)
    s = Svc(str(tmp_path / "hw.db"))
    c, h = s.client, s.h()
    try:
        assert c.post("/c/banks", json={"name": "VIDEOS"}, headers=h).status_code == 201
        body = check("content_add_upload", c.post(
            "/c/bank/VIDEOS/content", files={"video": ("k.mp4", known.read_bytes())},
            headers=h))
        lib = hash_file(known)
        ref = json.dumps([str(f) for f in lib.vpdq], separators=(",", ":"))  # vpdq_to_json
        assert len(lib.vpdq) >= 3
        assert body["signals"] == {"video_md5": lib.md5, "sha1": lib.sha1,
                                   "sha256": lib.sha256, "vpdq": ref}
        cid = body["id"]
        hashed = c.post("/h/hash", files={"video": ("k.mp4", known.read_bytes())},
                        headers=h).json()
        assert hashed == body["signals"]
        shown = c.get(f"/c/bank/VIDEOS/content/{cid}", params={"include_signals": "true"},
                      headers=h).json()
        assert shown["signals"] == body["signals"]  # frames folded back into one vpdq value
        # a partner's content given as signal values: the vpdq value is a whole video
        assert c.post("/c/banks", json={"name": "PARTNER"}, headers=h).status_code == 201
        given = c.post("/c/bank/PARTNER/signal",
                       json={"vpdq": ref, "video_md5": lib.md5}, headers=h)
        assert given.status_code == 200, given.text
        pid = given.json()["id"]
        assert c.get(f"/c/bank/PARTNER/content/{pid}", params={"include_signals": "true"},
                     headers=h).json()["signals"] == {"vpdq": ref, "video_md5": lib.md5}
        bad = c.post("/c/bank/PARTNER/signal", json={"vpdq": "[\"zz,1,0\"]"},
                     headers=h)
        assert bad.status_code == 400 and "vpdq" in bad.text
        found = check("lookup_upload", c.post("/m/lookup", files={"video": (
            "t.mp4", trimmed.read_bytes())}, headers=h))
        assert [m["bank_content_id"] for m in found["vpdq"]["VIDEOS"]] == [cid]
        assert [m["bank_content_id"] for m in found["vpdq"]["PARTNER"]] == [pid]
        assert found["video_md5"] == {}
        same = c.post("/m/lookup", files={"video": ("k.mp4", known.read_bytes())},
                      headers=h).json()
        assert same["video_md5"] == {"VIDEOS": [{"bank_content_id": cid, "distance": "-"}],
                                     "PARTNER": [{"bank_content_id": pid, "distance": "-"}]}
        miss = c.post("/m/lookup", files={"video": ("o.mp4", other.read_bytes())},
                      headers=h).json()
        assert all(v == {} for v in miss.values())
    finally:
        s.close()
