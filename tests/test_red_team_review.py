"""Holes found by the second red-team pass over issue 13 (after the hardening landed), each
as a test of its kind. The first pass's findings are tests in test_service_hardening.py."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

pytest.importorskip("fastapi")

from hashwatch.service import guards  # noqa: E402
from hashwatch.service.errors import error_response  # noqa: E402
from hashwatch.service.routes.hma import hma_error  # noqa: E402
from test_service import Svc  # noqa: E402

SMALL = 2048


@pytest.fixture
def sq(tmp_path):
    s = Svc(str(tmp_path / "hw.db"))
    yield s
    s.close()


def _small_4xx(r, where: str) -> None:  # type: ignore[no-untyped-def]
    assert 400 <= r.status_code < 500, (where, r.status_code, r.text[:300])
    assert len(r.content) <= SMALL, (where, len(r.content))


# -- every JSON the service parses is checked, whatever the request says it is ----------
HOSTILE_JSON = {
    "deep": b'{"pdq": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nan": b'{"pdq": [NaN, "a"]}',
    "surrogate key": b'{"\\ud800": ["a", "b"]}',
    "surrogate raw bytes": b'{"pdq": ["a\xed\xa0\x80", "b"], "note": "\xed\xa0\x80"}',
    "NUL in UTF-16": '{"pdq": ["a\\u0000", "b"], "note": "\\u0000"}'.encode("utf-16"),
}


def test_json_bodies_are_checked_whatever_their_declared_type(sq):
    """HMA's JSON endpoints read the body as JSON themselves; FastAPI parses any
    ``application/<anything>+json``. Neither may reach a route unchecked (a nesting bomb was
    a 500, a surrogate member name a 500 while encoding the error)."""
    c = sq.client
    c.post("/c/banks", json={"name": "B"}, headers=sq.h())
    for path in ("/m/compare", "/c/bank/B/signal", "/v1/lists", "/v1/match/hashes"):
        for ctype in ("application/json", "application/vnd.a_b+json", "text/plain", None):
            for name, body in HOSTILE_JSON.items():
                h = sq.h() | ({"Content-Type": ctype} if ctype else {})
                r = c.post(path, content=body, headers=h)
                _small_4xx(r, (path, ctype, name))
                if ctype and ctype.endswith("json"):  # refused by the guard, named
                    assert r.json()["error"]["code"] == "invalid_json_value", (path, ctype, name)
    # HMA answers a body that is not declared JSON as Flask does: 415
    r = c.post("/m/compare", content=b'{"pdq": ["a", "b"]}',
               headers=sq.h() | {"Content-Type": "text/plain"})
    assert r.status_code == 415, r.text
    assert r.json()["message"]


def test_hma_multipart_metadata_is_checked_json(sq):
    c = sq.client
    c.post("/c/banks", json={"name": "B"}, headers=sq.h())
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, "PNG")
    for meta in (b'{"json": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                 b'{"json": {"x": NaN}}', b'{"content_id": "a\\u0000"}',
                 b'{"content_id": "\\udfff"}'):
        r = c.post("/c/bank/B/content", files={"photo": ("a.png", buf.getvalue())},
                   data={"metadata": meta.decode()}, headers=sq.h())
        _small_4xx(r, meta[:20])
    assert c.get("/c/bank/B/content/1", headers=sq.h()).status_code == 404  # nothing stored


def test_a_json_body_of_too_many_values_is_refused_before_it_is_parsed(sq):
    # number arrays cost the checker a Python call per value: bounded by count, not bytes
    body = b"[" + b"0," * guards.MAX_JSON_VALUES + b"0]"
    r = sq.client.post("/v1/match/hashes", content=body,
                       headers=sq.h() | {"Content-Type": "application/json"})
    _small_4xx(r, "values")
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text


def test_error_bodies_encode_whatever_text_they_carry():
    # a message that repeats input must never fail to encode (UnicodeEncodeError = 500)
    for resp in (error_response(400, "x", "bad \ud800 name \x00"),
                 hma_error(400, "x", "Comparison hashes for \udfff was not a list")):
        doc = json.loads(resp.body)
        text = doc["error"]["message"]
        assert "\\ud" in text or "\\u0000" in text or "\\x00" in text, text

