"""The red-team findings of issue 13, each as a test of its whole kind: hostile input is a
small, fast 4xx; limits act before parsing and authentication work; decoding is bounded;
destinations, the allow-list and review images follow least privilege; secrets are never
printed; failed authentication is recorded without filling the disk."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi import Request  # noqa: E402  (a route below names it in an annotation)

from conftest_pg import pg_db, pg_url, store_url  # noqa: E402,F401  (fixtures: both backends)
from hashwatch.service import review as review_mod  # noqa: E402
from hashwatch.service import webhooks as wh  # noqa: E402
from hashwatch.service.app import create_app  # noqa: E402
from hashwatch.service.destinations import (  # noqa: E402
    DestinationError,
    DestinationPolicy,
    embedded_ipv4,
    literal_ip,
    resolve_checked,
)
from hashwatch.service.isolation import PixelBudget  # noqa: E402
from hashwatch.store import Store  # noqa: E402
from test_service import (  # noqa: E402
    Receiver,
    Svc,
    assert_error,
    corpus_jpegs,
    fast_settings,
    pdq_of,
    reencode,
    wait_for,
)

SMALL = 2048  # no error body needs more than this


@pytest.fixture
def svc(store_url):  # noqa: F811 - both backends
    s = Svc(store_url)
    yield s
    s.close()


def small_error(r, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert_error(r, status, code)
    assert len(r.content) <= SMALL, len(r.content)
    return r.json()["error"]


# -- hostile but valid JSON: never a 5xx, on SQLite and PostgreSQL ----------------------
HOSTILE_STRINGS = ["a\x00b", "\ud800", "x\udfffy", "\x00"]


def _raw_json(obj_text: str) -> bytes:
    return obj_text.encode()


def test_hostile_strings_in_any_json_field_are_4xx(svc):
    c, h = svc.client, {**svc.h(), "Content-Type": "application/json"}
    c.post("/v1/lists", json={"name": "l"}, headers=svc.h())
    for bad in HOSTILE_STRINGS:
        esc = json.dumps(bad)  # "\u0000" / "\ud800" escapes: valid JSON text
        bodies = {
            "/v1/lists": f'{{"name": {esc}}}',
            "/v1/lists/l/entries": f'{{"entries": [{{"signal_type": "md5", "value": '
                                   f'"{"a" * 32}", "ref": {esc}}}]}}',
            "/v1/match/hashes": f'{{"hashes": [{{"signal_type": "pdq", "value": {esc}}}]}}',
            "/v1/keys": f'{{"name": {esc}, "scopes": ["match"]}}',
            "/v1/lists/l/webhooks": f'{{"url": "http://example.org/{esc[1:-1]}"}}',
        }
        bodies["/v1/match/hashes#lists"] = (f'{{"hashes": [{{"signal_type": "md5", "value": '
                                            f'"{"a" * 32}"}}], "lists": [{esc}]}}')
        bodies["/v1/lists#key"] = f'{{{esc}: "x", "name": "ok"}}'
        for path, body in bodies.items():
            r = c.post(path.split("#")[0], content=_raw_json(body), headers=h)
            err = small_error(r, 422)
            assert err["code"] == "invalid_json_value", (path, r.text)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999",
                                    "99999999999999999999", "1" + "0" * 5000])
def test_non_finite_and_out_of_range_numbers_are_4xx(svc, number):
    h = {**svc.h(), "Content-Type": "application/json"}
    for path, body in (
        ("/v1/keys", f'{{"name": "k", "scopes": ["match"], "rate_limit": {number}}}'),
        ("/v1/match/hashes", f'{{"hashes": [{{"signal_type": "pdq", "value": "{"a" * 64}", '
                             f'"quality": {number}}}]}}'),
        ("/v1/lists/x/entries/remove", f'{{"ids": [{number}]}}'),
    ):
        r = svc.client.post(path, content=body.encode(), headers=h)
        small_error(r, 422)


def test_nul_and_control_characters_in_paths_and_queries_are_4xx(svc):
    c, h = svc.client, svc.h()
    for url in ("/v1/lists/a%00b", "/v1/lists/a%00b/entries", "/v1/lists/%ff%fe",
                "/v1/lists/a%E2%80%AEb", "/v1/review/items?status=pending%00",
                "/v1/lists/l/export?format=csv%00", "/v1/audit?after_id=1%00",
                "/v1/lists?x=%ed%a0%80"):
        r = c.get(url, headers=h)
        small_error(r, 422)
    # a ref with NUL in a multipart upload, and a NUL file name
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, "JPEG")
    r = c.post("/v1/match/upload", files={"file": ("a\x00.jpg", jpeg.getvalue())},
               data={"ref": "r\x00"}, headers=h)
    assert r.status_code < 500, r.text


def test_deep_nesting_is_4xx(svc):
    body = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = svc.client.post("/v1/lists", content=body,
                        headers={**svc.h(), "Content-Type": "application/json"})
    small_error(r, 422)


def test_csv_field_over_the_csv_limit_is_a_row_error(svc):
    c, h = svc.client, svc.h()
    c.post("/v1/lists", json={"name": "big"}, headers=h)
    body = ("signal_type,value,source_ref\n"
            f"md5,{'a' * 32},{'x' * 200_000}\n"
            f"md5,{'b' * 32},ok\n"
            f"md5,{'c' * 32},nul\x00ref\n").encode()
    r = c.post("/v1/lists/big/import?format=csv", content=body, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["added"] == 1 and out["errors"] == 2
    assert len(r.content) < 4096  # the 200 KB field is not echoed


# -- errors never echo more than a few bytes ------------------------------------------
def test_error_bodies_name_field_and_problem_without_echo(svc):
    c, h = svc.client, svc.h()
    huge = "Z" * 1_000_000
    cases = [
        c.post("/v1/lists", json={"name": huge}, headers=h),
        c.post("/v1/match/hashes", json={"hashes": [{"signal_type": "pdq", "value": huge}]},
               headers=h),
        c.post("/v1/match/hashes", json={"hashes": [{"signal_type": huge, "value": "a"}]},
               headers=h),
        c.post("/v1/keys", json={"name": huge, "scopes": ["match"]}, headers=h),
        c.get(f"/v1/lists/{'Q' * 5000}", headers=h),
        c.post("/v1/match/hashes", json={"hashes": [{"signal_type": "md5", "value": "a" * 32}]
                                         * 1001}, headers=h),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, r.text[:300]
        assert len(r.content) <= SMALL, (r.status_code, len(r.content))
        assert "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ" not in r.text
    details = cases[0].json()["error"]["details"]
    assert details[0]["field"] == ["body", "name"] and details[0]["problem"]


# -- size limits before parsing and before authentication ------------------------------
async def _asgi(app, method: str, path: str, headers: list[tuple[bytes, bytes]],
                chunks: list[bytes]) -> tuple[int, bytes, int]:
    """Call the ASGI app directly; returns (status, body, body chunks the app read)."""
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1],
                    "more_body": read < len(chunks)}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(msg: dict) -> None:
        sent.append(msg)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "client": ("127.0.0.1", 5555), "server": ("t", 80),
             "scheme": "http", "root_path": "", "app": app}
    await asyncio.wait_for(app(scope, receive, send), 30)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, read


def test_unauthenticated_big_body_is_refused_before_it_is_read(svc):
    app = svc.client.app
    mb = b"x" * (1024 * 1024)
    for path, ctype, size in (("/v1/match/hashes", b"application/json", 16_000_000),
                              ("/v1/lists/l/import", b"application/octet-stream", 50_000_000),
                              ("/v1/match/upload", b"multipart/form-data; boundary=zz",
                               50_000_000)):
        status, body, read = asyncio.run(_asgi(
            app, "POST", path, [(b"content-type", ctype),
                                (b"content-length", str(size).encode())], [mb] * (size >> 20)))
        assert status == 401 and read == 0, (path, status, read)
        assert len(body) < SMALL
    # over the limit: 413 before authentication and before reading, key or no key
    status, _b, read = asyncio.run(_asgi(
        app, "POST", "/v1/match/upload",
        [(b"content-type", b"multipart/form-data; boundary=zz"),
         (b"content-length", str(60 * 1024 * 1024).encode())], [mb]))
    assert (status, read) == (413, 0)


def test_chunked_oversize_bodies_are_413(tmp_path):
    s = Svc(str(tmp_path / "hw.db"), max_upload_bytes=300_000, max_json_bytes=200_000)
    try:
        def chunks(n: int, head: bytes = b"", tail: bytes = b""):  # type: ignore[no-untyped-def]
            yield head
            for _ in range(n):
                yield b"0" * 65536
            yield tail

        # multipart upload without Content-Length (chunked): was a generic 400
        head = (b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n")
        r = s.client.post("/v1/hash", content=chunks(10, head, b"\r\n--zz--\r\n"),
                          headers={**s.h(), "Content-Type": "multipart/form-data; boundary=zz"})
        small_error(r, 413, "too_large")
        # chunked JSON over the JSON limit
        r = s.client.post("/v1/match/hashes", content=chunks(10, b'{"hashes": "'),
                          headers={**s.h(), "Content-Type": "application/json"})
        small_error(r, 413, "too_large")
        # and the service still answers
        assert s.client.get("/v1/lists", headers=s.h()).status_code == 200
    finally:
        s.close()


def test_batch_caps(svc):
    h = svc.h()
    one = {"signal_type": "md5", "value": "a" * 32}
    t0 = time.monotonic()
    r = svc.client.post("/v1/match/hashes", json={"hashes": [one] * 1001}, headers=h)
    small_error(r, 422)
    # the red team's 519,096 hashes: refused by size before any parsing
    body = ('{"hashes": [' + ",".join([json.dumps(one)] * 519_096) + "]}").encode()
    r = svc.client.post("/v1/match/hashes", content=body,
                        headers={**h, "Content-Type": "application/json"})
    small_error(r, 413, "too_large")
    assert time.monotonic() - t0 < 10
    r = svc.client.post("/v1/match/hashes", json={"hashes": [one] * 1000}, headers=h)
    assert r.status_code == 200 and len(r.json()["results"]) == 1000


# -- decoding bounded per worker ---------------------------------------------------------
def _flat_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), 77).save(buf, "PNG")
    return buf.getvalue()


def test_concurrent_huge_images_stay_within_the_pixel_budget(tmp_path):
    import psutil

    big = _flat_png(10_000, 10_000)  # 100 MP, ~120 KB
    s = Svc(str(tmp_path / "hw.db"), decode_workers=2, decode_pixel_budget=100_000_000)
    try:
        dec = s.client.app.state.service.decoder
        holding: list[int] = []
        peak = [0]
        acquire, release = dec.budget.acquire, dec.budget.release

        def acq(n: int, timeout: float) -> bool:
            ok = acquire(n, timeout)
            if ok:
                holding.append(n)
                peak[0] = max(peak[0], sum(holding))
            return ok

        def rel(n: int) -> None:
            holding.remove(n)
            release(n)

        dec.budget.acquire, dec.budget.release = acq, rel
        me = psutil.Process()
        rss0 = me.memory_info().rss
        codes: list[int] = []

        def up() -> None:
            r = s.client.post("/v1/hash", files={"file": ("b.png", big)}, headers=s.h())
            codes.append(r.status_code)

        threads = [threading.Thread(target=up) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes.count(200) == 8, codes
        assert peak[0] <= 100_000_000  # never two 100 MP decodes at once in this worker
        # the worker itself never held the decoded pixels
        assert me.memory_info().rss - rss0 < 200 * 1024 * 1024
    finally:
        s.close()


def test_pixel_budget_waits_and_times_out():
    b = PixelBudget(100)
    assert b.acquire(80, 1)
    assert not b.acquire(30, 0.2)  # would exceed: waits, then gives up
    threading.Timer(0.2, b.release, args=(80,)).start()
    assert b.acquire(30, 5)  # granted once the first is released
    assert b.acquire(1000, 0.1) is False  # capped to the total: waits for the rest


def test_a_runaway_decode_is_killed_at_its_deadline_and_the_worker_goes_on(tmp_path):
    s = Svc(str(tmp_path / "hw.db"), decode_workers=1, decode_timeout=0.3)
    try:
        big = _flat_png(10_000, 10_000)  # takes well over 0.3 s to decode
        r = s.client.post("/v1/hash", files={"file": ("b.png", big)}, headers=s.h())
        small_error(r, 422, "decode_timeout")
        assert s.client.app.state.service.decoder.killed == 1
        jpeg = io.BytesIO()
        Image.new("RGB", (64, 48), (9, 99, 199)).save(jpeg, "JPEG")
        r = s.client.post("/v1/hash", files={"file": ("ok.jpg", jpeg.getvalue())},
                          headers=s.h())
        assert r.status_code == 200 and r.json()["hashes"]["width"] == 64
    finally:
        s.close()


def _static_video(w: int, h: int, frames: int) -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as c:
        st = c.add_stream("mpeg4", rate=30)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"g": "100000"}  # one key frame, then tiny predicted frames
        fr = av.VideoFrame.from_ndarray(np.full((h, w, 3), 90, np.uint8), format="rgb24")
        for _ in range(frames):
            for pkt in st.encode(fr):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return buf.getvalue()


def test_video_decoding_is_bounded_by_pixels_times_frames(tmp_path):
    pytest.importorskip("av")
    video = _static_video(640, 480, 300)  # 92 M pixel-frames in a few KB
    s = Svc(str(tmp_path / "hw.db"), video_max_decoded_pixels=50_000_000)
    try:
        r = s.client.post("/v1/hash", files={"file": ("v.mp4", video)}, headers=s.h())
        assert r.status_code == 200, r.text
        got = r.json()["hashes"]
        # decoding stopped at the budget (50 M / 307,200 pixels a frame), and says so
        assert got["limited"] == "max_pixel_frames"
        assert got["frame_count"] <= 50_000_000 // (640 * 480) + 1
    finally:
        s.close()
    s = Svc(str(tmp_path / "hw2.db"), video_max_decoded_pixels=200_000_000)
    try:
        r = s.client.post("/v1/hash", files={"file": ("v.mp4", video)}, headers=s.h())
        got = r.json()["hashes"]
        assert r.status_code == 200 and got["frame_count"] == 300 and not got.get("limited")
        assert len(got["frames"]) == 10  # one a second
    finally:
        s.close()


# -- identifiers -------------------------------------------------------------------------
def test_identifiers_refuse_control_bidi_and_path_like(svc):
    h = svc.h()
    for name in ("a\u202eb", "x\u2066y", "a\u200bb", "..", "a/../b", "a\\b", "tab\there",
                 "nl\nx", "bell\x07"):
        small_error(svc.client.post("/v1/lists", json={"name": name}, headers=h), 422)
        small_error(svc.client.post("/v1/keys", json={"name": name, "scopes": ["match"]},
                                    headers=h), 422)
        small_error(svc.client.post("/v1/keys", json={"name": "k1", "scopes": ["match"],
                                                      "queue": name}, headers=h), 422)
    assert svc.client.get("/v1/lists", headers=h).json()["lists"] == []


# -- webhook destinations ------------------------------------------------------------------
REFUSED_URLS = [
    "http://127.0.0.1/h", "http://localhost/h", "http://2130706433/h", "http://0x7f000001/h",
    "http://0177.0.0.1/h", "http://127.1/h", "http://[::1]/h", "http://[::ffff:127.0.0.1]/h",
    "http://[::ffff:7f00:1]/h", "http://[::127.0.0.1]/h", "http://[64:ff9b::7f00:1]/h",
    "http://[64:ff9b:1::a00:1]/h", "http://[2002:7f00:1::]/h", "http://[2002:a9fe:a9fe::]/h",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fefe]/h",  # Teredo client 127.0.1.1
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/h",
    "http://[fe80::1]/h", "http://10.0.0.1/h", "http://192.168.1.1/h", "http://172.16.0.1/h",
    "http://100.64.0.1/h", "http://0.0.0.0/h", "http://[::]/h", "http://224.0.0.1/h",
    "http://user:pw@example.org/h", "http://token@example.org/h", "ftp://example.org/h",
    "http://example.org:0/h", "http:///h",
]


def test_webhook_destination_rules_at_creation(tmp_path):
    s = Svc(str(tmp_path / "hw.db"), webhook_allowed_networks=[])
    try:
        c, h = s.client, s.h()
        c.post("/v1/lists", json={"name": "w"}, headers=h)
        for url in REFUSED_URLS:
            r = c.post("/v1/lists/w/webhooks", json={"url": url}, headers=h)
            assert r.status_code in (403, 422), (url, r.status_code, r.text)
            assert "pw" not in r.text and "token" not in r.text
        assert c.get("/v1/lists/w/webhooks", headers=h).json()["webhooks"] == []
    finally:
        s.close()


def test_transition_forms_lead_to_their_ipv4():
    import ipaddress

    for text, v4 in (("64:ff9b::7f00:1", "127.0.0.1"), ("2002:7f00:1::", "127.0.0.1"),
                     ("::ffff:10.0.0.1", "10.0.0.1"), ("64:ff9b:1::a9fe:a9fe",
                                                        "169.254.169.254")):
        assert ipaddress.IPv4Address(v4) in embedded_ipv4(ipaddress.ip_address(text))
    assert str(literal_ip("0x7f.1")) == "127.0.0.1"
    assert literal_ip("example.org") is None
    pub = DestinationPolicy()
    assert pub.allows(ipaddress.ip_address("8.8.8.8"))
    assert pub.allows(ipaddress.ip_address("64:ff9b::808:808"))  # NAT64 to a public v4
    assert not pub.allows(ipaddress.ip_address("64:ff9b::a00:1"))
    with pytest.raises(DestinationError):
        resolve_checked("localhost", 80, pub)
    lo = DestinationPolicy.from_settings(False, ["127.0.0.0/8"])
    assert resolve_checked("127.0.0.1", 80, lo) == "127.0.0.1"


def test_webhook_rules_are_applied_again_at_delivery(tmp_path):
    db = str(tmp_path / "hw.db")
    rx = Receiver()
    s = Svc(db)  # loopback allowed by name: the webhook is created
    try:
        c, h = s.client, s.h()
        c.post("/v1/lists", json={"name": "d"}, headers=h)
        rx.secret = c.post("/v1/lists/d/webhooks", json={"url": rx.url},
                           headers=h).json()["secret"]
    finally:
        s.close()
    # the operator narrows the rules (or the name moved to a refused address): the next
    # delivery resolves and checks again, and refuses
    s = Svc(db, admin_name="admin2", webhook_allowed_networks=[], webhook_max_attempts=1)
    try:
        c, h = s.client, s.h()
        c.post("/v1/lists/d/entries", json={"entries": [{"signal_type": "md5",
                                                         "value": "ab" * 16}]}, headers=h)
        c.post("/v1/match/hashes", json={"hashes": [{"signal_type": "md5", "value": "ab" * 16}]},
               headers=h)
        ev = wait_for(lambda: [e for e in c.get("/v1/outbox", headers=h).json()["events"]
                               if e["status"] == "dead"])
        assert ev and "address_not_allowed" in ev[0]["last_error"]
        assert rx.hits == 0
    finally:
        s.close()
        rx.close()


class _SlowReceiver:
    def __init__(self, delay: float) -> None:
        outer = self
        self.hits = 0

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.hits += 1
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/slow"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_receiver_does_not_delay_other_destinations(tmp_path):
    slow = _SlowReceiver(delay=4.0)
    fast = Receiver()
    s = Svc(str(tmp_path / "hw.db"), webhook_timeout=8)
    try:
        c, h = s.client, s.h()
        for name, url in (("slow", slow.url), ("fast", fast.url)):
            c.post("/v1/lists", json={"name": name}, headers=h)
            sec = c.post(f"/v1/lists/{name}/webhooks", json={"url": url}, headers=h).json()
            if name == "fast":
                fast.secret = sec["secret"]
            c.post(f"/v1/lists/{name}/entries", headers=h, json={"entries": [
                {"signal_type": "md5", "value": ("1" if name == "slow" else "2") * 32}]})
        # three events for the slow receiver first, then one for the fast one
        for _ in range(3):
            c.post("/v1/match/hashes", headers=h,
                   json={"hashes": [{"signal_type": "md5", "value": "1" * 32}]})
        assert wait_for(lambda: slow.hits >= 1, timeout=5)
        t0 = time.monotonic()
        c.post("/v1/match/hashes", headers=h,
               json={"hashes": [{"signal_type": "md5", "value": "2" * 32}]})
        assert wait_for(lambda: fast.accepted, timeout=3)
        assert time.monotonic() - t0 < 3  # not behind the slow receiver's 3 x 4 s
    finally:
        s.close()
        slow.close()
        fast.close()


# -- allow-list: scoped, never over exact entries, second person, API, audit ---------------
def test_allow_list_never_silences_an_exact_entry(svc):
    c, h = svc.client, svc.h()
    img = corpus_jpegs(1)[0]
    orig = pdq_of(svc, img.read_bytes())
    c.post("/v1/lists", json={"name": "caid"}, headers=h)
    c.post("/v1/lists/caid/entries", headers=h, json={"entries": [
        {"signal_type": "md5", "value": orig["md5"], "ref": "exact"},
        {"signal_type": "pdq", "value": orig["pdq"], "ref": "perceptual"}]})
    rev = svc.h(svc.key("rev", "review"))
    curator = svc.h(svc.key("cur", "curate"))
    edited = reencode(img, quality=60, scale=0.7)
    r = c.post("/v1/match/upload", files={"file": ("e.jpg", edited)}, headers=h).json()
    assert [m["ref"] for m in r["matches"]] == ["perceptual"]
    item = r["review_item_id"]
    d = c.post(f"/v1/review/items/{item}/decision", headers=rev,
               json={"decision": "false_positive", "allow_list": True})
    assert d.status_code == 200, d.text
    # pending: the edited copy still alerts
    r = c.post("/v1/match/upload", files={"file": ("e.jpg", edited)}, headers=h).json()
    assert r["matches"] and not r["allow_listed"]
    rows = c.get("/v1/allow-list?status=pending", headers=curator).json()["entries"]
    assert rows and all(x["entry_id"] is not None for x in rows)
    for row in rows:  # curate scope approves
        assert c.post(f"/v1/allow-list/{row['id']}/approve", headers=curator).status_code == 200
    r = c.post("/v1/match/upload", files={"file": ("e.jpg", edited)}, headers=h).json()
    assert r["matches"] == [] and r["allow_listed"]
    # the original: its exact MD5 entry still matches (only the perceptual one is silenced)
    r = c.post("/v1/match/upload", files={"file": ("o.jpg", img.read_bytes())}, headers=h).json()
    assert [m["ref"] for m in r["matches"]] == ["exact"] and r["review_item_id"]
    r = c.post("/v1/match/hashes", headers=h, json={"hashes": [
        {"signal_type": "md5", "value": orig["md5"]}]}).json()
    assert r["results"][0]["matches"][0]["ref"] == "exact"
    # a reviewer cannot allow-list an exact-only match at all
    exact_item = c.post("/v1/match/upload", files={"file": ("o.jpg", img.read_bytes())},
                        headers=h).json()["review_item_id"]
    small_error(c.post(f"/v1/review/items/{exact_item}/decision", headers=rev,
                       json={"decision": "false_positive", "allow_list": True}), 422)
    # removal (curate only) brings the alert back; everything audited
    small_error(c.delete(f"/v1/allow-list/{rows[0]['id']}", headers=rev), 403)
    for row in rows:
        assert c.delete(f"/v1/allow-list/{row['id']}", headers=curator).json()["status"] == \
            "removed"
    r = c.post("/v1/match/upload", files={"file": ("e.jpg", edited)}, headers=h).json()
    assert [m["ref"] for m in r["matches"]] == ["perceptual"]
    acts = [e["action"] for e in c.get("/v1/audit", headers=h).json()["events"]]
    for a in ("review.decide", "allow_list.approve", "allow_list.remove"):
        assert a in acts


# -- review queues, ids, retention -----------------------------------------------------
def _matched_item(svc: Svc, key: str, img) -> str:  # type: ignore[no-untyped-def]
    r = svc.client.post("/v1/match/upload", files={"file": ("u.jpg", reencode(img))},
                        headers=svc.h(key)).json()
    assert r["review_item_id"], r
    return r["review_item_id"]


def _known_and_matched(s: Svc, img) -> str:  # type: ignore[no-untyped-def]
    """A list holding ``img``'s PDQ, and the review item of a matching upload."""
    s.client.post("/v1/lists", json={"name": "r"}, headers=s.h())
    s.client.post("/v1/lists/r/entries", headers=s.h(), json={"entries": [
        {"signal_type": "pdq", "value": pdq_of(s, img.read_bytes())["pdq"]}]})
    return _matched_item(s, s.admin, img)


def test_reviewers_see_only_their_queue_and_ids_are_not_enumerable(svc):
    c, h = svc.client, svc.h()
    imgs = corpus_jpegs(2)
    c.post("/v1/lists", json={"name": "q"}, headers=h)
    for p in imgs:
        c.post("/v1/lists/q/entries", headers=h, json={"entries": [
            {"signal_type": "pdq", "value": pdq_of(svc, p.read_bytes())["pdq"]}]})
    a = _matched_item(svc, svc.key("platform-a", "match", queue="a"), imgs[0])
    b = _matched_item(svc, svc.key("platform-b", "match", queue="b"), imgs[1])
    assert a.startswith("ri_") and len(a) == 25 and a != b
    ra = svc.h(svc.key("rev-a", "review", queue="a"))
    assert [i["id"] for i in c.get("/v1/review/items", headers=ra).json()["items"]] == [a]
    for path in ("", "/thumb", "/preview"):
        err_other = small_error(c.get(f"/v1/review/items/{b}{path}", headers=ra), 404)
        err_none = small_error(c.get(f"/v1/review/items/ri_{'A' * 22}{path}", headers=ra), 404)
        assert err_other == err_none  # another queue's item looks exactly like no item
    small_error(c.post(f"/v1/review/items/{b}/decision", headers=ra,
                       json={"decision": "confirm"}), 404)
    assert c.get(f"/v1/review/items/{a}/thumb", headers=ra).status_code == 200
    # an admin sees every queue
    assert len(c.get("/v1/review/items", headers=h).json()["items"]) == 2


def test_review_images_deleted_after_decision_retention_and_on_a_schedule(tmp_path):
    img = corpus_jpegs(1)[0]
    s = Svc(str(tmp_path / "hw.db"), review_image_retention=0.5, review_purge_interval=0.2)
    try:
        c, h = s.client, s.h()
        item = _known_and_matched(s, img)
        keep = _matched_item(s, s.admin, img)  # undecided: keeps its images
        assert c.get(f"/v1/review/items/{item}/preview", headers=h).status_code == 200
        c.post(f"/v1/review/items/{item}/decision", headers=h, json={"decision": "confirm"})
        assert c.get(f"/v1/review/items/{item}/thumb", headers=h).status_code == 200
        # no request needed: the schedule deletes them once the retention is over
        assert wait_for(lambda: c.get(f"/v1/review/items/{item}/thumb",
                                      headers=h).status_code == 404, timeout=10)
        small_error(c.get(f"/v1/review/items/{item}/preview", headers=h), 404, "no_image")
        with Store.open(s.db) as st, st.engine.connect() as conn:
            import sqlalchemy as sa

            from hashwatch.service.schema import review_items

            row = conn.execute(sa.select(review_items.c.thumb, review_items.c.preview,
                                         review_items.c.images_purged_at)
                               .where(review_items.c.public_id == item)).one()
        assert row.thumb is None and row.preview is None and row.images_purged_at
        assert c.get(f"/v1/review/items/{keep}/thumb", headers=h).status_code == 200
        acts = [e["action"] for e in c.get("/v1/audit", headers=h).json()["events"]]
        assert "review.images_purged" in acts
    finally:
        s.close()


def test_retention_zero_deletes_at_the_decision(tmp_path):
    img = corpus_jpegs(1)[0]
    s = Svc(str(tmp_path / "hw.db"), review_image_retention=0, review_purge_interval=3600)
    try:
        c, h = s.client, s.h()
        item = _known_and_matched(s, img)
        c.post(f"/v1/review/items/{item}/decision", headers=h, json={"decision": "escalate"})
        small_error(c.get(f"/v1/review/items/{item}/thumb", headers=h), 404, "no_image")
    finally:
        s.close()


def test_purge_images_uses_the_decision_time(tmp_path):
    from datetime import UTC, datetime, timedelta

    class H:
        sha256, md5, pdq, pdq_quality = "s", "m", "", None

    with Store.open(str(tmp_path / "hw.db")) as st:
        pid = review_mod.create_item(st, submitted_by="p", filename="f", hashes=H(),
                                     matches=[], thumb=b"t", preview=b"p")
        review_mod.decide(st, pid, "confirm", actor="r")
        assert review_mod.purge_images(st, 3600) == 0
        later = datetime.now(UTC) + timedelta(hours=2)
        assert review_mod.purge_images(st, 3600, now=later) == 1
        assert review_mod.item_image(st, pid, "thumb") is None


# -- secrets never printed: service start-up ------------------------------------------------
def test_service_start_up_never_prints_the_database_password(tmp_path):
    secret = "Sup3rS3cret"
    url = f"postgresql+psycopg://hw:{secret}@127.0.0.1:1/hw"
    r = subprocess.run([sys.executable, "-m", "hashwatch.cli", "serve", "--db", url,
                        "--port", "1"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=dict(os.environ, HASHWATCH_DB=url))
    assert r.returncode != 0
    assert secret not in r.stdout + r.stderr and "hw:***@" in r.stdout + r.stderr
    with pytest.raises(Exception) as e, __import__("fastapi.testclient").testclient.TestClient(
            create_app(fast_settings(url))):
        pass
    assert secret not in repr(e.value) and secret not in str(e.value)
    assert secret not in repr(fast_settings(url))


# -- audit: paging is audited; failed authentication recorded but bounded ------------------
def test_paging_through_entries_is_audited(svc):
    c, h = svc.client, svc.h()
    c.post("/v1/lists", json={"name": "p"}, headers=h)
    c.post("/v1/lists/p/entries", headers=h, json={"entries": [
        {"signal_type": "md5", "value": f"{i:032x}"} for i in range(5)]})
    page = c.get("/v1/lists/p/entries?limit=2", headers=h).json()
    c.get(f"/v1/lists/p/entries?after_id={page['next_after_id']}&limit=10", headers=h)
    pages = [e for e in c.get("/v1/audit", headers=h).json()["events"]
             if e["action"] == "list.entries.page"]
    assert [e["detail"]["entries"] for e in pages] == [2, 3]
    assert pages[0]["actor"] == "admin" and pages[0]["list_id"] is not None


def test_failed_authentication_is_recorded_and_a_flood_is_bounded(tmp_path):
    s = Svc(str(tmp_path / "hw.db"))
    try:
        c = s.client
        codes = [c.get("/v1/lists", headers={"Authorization": f"Bearer hw_{i:012x}_"
                                             + "x" * 40}).status_code for i in range(300)]
        assert codes[0] == 401 and 429 in codes  # the source is throttled
        s.client.app.state.service.auth_failures.flush()
        time.sleep(0.5)
        rows = [e for e in c.get("/v1/audit?limit=10000", headers=s.h()).json()["events"]
                if e["action"].startswith("auth.failed")]
        assert rows and rows[0]["detail"]["reason"] == "invalid_or_revoked"
        assert rows[0]["detail"]["source"] and rows[0]["detail"]["key_id"] == "0" * 12
        assert len(rows) <= 3  # first failure, one summary of the rest
        assert sum(r["detail"].get("repeated", 0) for r in rows) >= 10
        # a valid key from the same (throttled) source is still served
        assert c.get("/v1/lists", headers=s.h()).status_code == 200
    finally:
        s.close()


def test_failed_auth_rows_are_capped_per_window():
    from hashwatch.service.audit import FailedAuthLog

    class W:
        def __init__(self) -> None:
            self.rows: list[tuple[str, dict]] = []

        def enqueue(self, actor: str, action: str, detail: dict) -> None:
            self.rows.append((action, detail))

    now = [0.0]
    w = W()
    log = FailedAuthLog(w, window=60, max_rows=10, throttle_rate=1e9,  # type: ignore[arg-type]
                        clock=lambda: now[0])
    for i in range(100_000):
        log.record(f"10.0.{i % 256}.{i // 256 % 256}", None, "missing")
    now[0] = 61.0
    log.record("x", None, "missing")
    assert len(w.rows) <= 10 + 10 + 1 + 1
    assert any(a == "auth.failed.suppressed" and d["attempts"] > 0 for a, d in w.rows)


def test_signature_verification_helper_round_trip():
    body = b"{}"
    ts = int(time.time())
    assert wh.verify_signature("s", body, str(ts), wh.sign("s", ts, "id1", body), "id1")


def test_ids_out_of_range_for_their_column_are_4xx(svc):
    # found by the fuzzer: webhook and allow-list ids are INTEGER columns; 2**62 passed
    # the BIGINT bound and PostgreSQL failed the statement (a 500)
    h = svc.h()
    for url in ("/v1/webhooks/4611686018427387904", "/v1/webhooks/2147483648",
                "/v1/allow-list/2147483648", "/v1/allow-list/4611686018427387904"):
        small_error(svc.client.delete(url, headers=h), 422)
    small_error(svc.client.post("/v1/allow-list/2147483648/approve", headers=h), 422)


def test_list_filters_are_capped(svc):
    h = svc.h()
    names = ",".join(f"l{i}" for i in range(101))
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, "JPEG")
    r = svc.client.post("/v1/match/upload", files={"file": ("a.jpg", jpeg.getvalue())},
                        data={"lists": names}, headers=h)
    small_error(r, 422)
    r = svc.client.post("/v1/match/url", json={"url": "http://example.org/a.jpg",
                                                "lists": ["x"] * 101}, headers=h)
    small_error(r, 422)


def test_routers_are_authenticated_by_default(svc):
    # deny by default: a path nobody listed as public needs a key before anything else,
    # so a router added later (e.g. under another prefix) is covered without per-route code
    from fastapi import APIRouter

    hits = []
    extra = APIRouter()

    @extra.post("/hma/v0/echo")
    async def echo(request: Request) -> dict:
        hits.append(len(await request.body()))
        return {}

    svc.client.app.include_router(extra)
    r = svc.client.post("/hma/v0/echo", content=b"x" * 1000)
    small_error(r, 401)
    assert hits == []
    assert svc.client.post("/hma/v0/echo", content=b"x", headers=svc.h()).status_code == 200
    assert svc.client.get("/v1/health/live").status_code == 200
    assert svc.client.get("/openapi.json").status_code == 200


def test_url_fetch_follows_the_same_destination_rules():
    from urllib.parse import urlsplit

    from hashwatch.service.urlfetch import FetchError, fetch

    for url in ("http://[64:ff9b::7f00:1]/a.jpg", "http://[2002:7f00:1::]/a.jpg",
                "http://2130706433/a.jpg", "http://[::ffff:127.0.0.1]/a.jpg",
                "http://169.254.169.254/latest/meta-data/"):
        host = urlsplit(url).hostname or ""
        with pytest.raises(FetchError) as e:
            fetch(url, allowed_hosts=[host], timeout=2)
        assert e.value.code == "address_not_allowed", (url, e.value.code)
    with pytest.raises(FetchError) as e:
        fetch("http://u:p@example.org/a.jpg", allowed_hosts=["example.org"])
    assert e.value.code == "bad_url"


def test_client_gone_mid_import_is_a_warning_and_imports_nothing(svc, caplog):
    # a client that drops the connection while sending a list file: nothing imported, one
    # warning naming the list, no error record or traceback in the server's log
    import logging

    svc.client.post("/v1/lists", json={"name": "gone"}, headers=svc.h())
    app = svc.client.app
    first = "".join(f"{i:064x}\n" for i in range(1, 2001)).encode()
    sent: list[dict] = []
    state = {"n": 0}

    async def receive() -> dict:
        state["n"] += 1
        if state["n"] == 1:
            return {"type": "http.request", "body": first, "more_body": True}
        return {"type": "http.disconnect"}

    async def send(msg: dict) -> None:
        sent.append(msg)

    path = "/v1/lists/gone/import"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "path": path, "raw_path": path.encode(),
             "query_string": b"format=hashlines&signal=pdq",
             "headers": [(b"content-type", b"application/octet-stream"),
                         (b"content-length", b"10000000"),
                         (b"authorization", f"Bearer {svc.admin}".encode())],
             "client": ("127.0.0.1", 5555), "server": ("t", 80), "scheme": "http",
             "root_path": "", "app": app}
    with caplog.at_level(logging.INFO):
        asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    assert state["n"] == 2  # the body was being read when the client went
    warned = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "gone" in warned[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    r = svc.client.get("/v1/lists/gone", headers=svc.h())
    assert r.json()["entry_count"] == 0, r.json()
