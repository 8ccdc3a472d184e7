"""`hashwatch serve`: the HTTP API against real components (store, index, decoder, HTTP).

Fast tests use Starlette's TestClient (the real app, in process); the live-update and
webhook tests involve a second process or a real HTTP receiver.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from conftest_pg import pg_db, pg_url, store_url  # noqa: E402,F401  (fixtures: both backends)
from hashwatch.service import webhooks as wh  # noqa: E402
from hashwatch.service.app import create_app  # noqa: E402
from hashwatch.service.auth import create_key  # noqa: E402
from hashwatch.service.schema import api_keys  # noqa: E402
from hashwatch.service.settings import Settings  # noqa: E402
from hashwatch.service.urlfetch import FetchError, fetch, host_allowed  # noqa: E402
from hashwatch.store import Store  # noqa: E402


# -- shared helpers (also used by test_service_browser.py) -------------------------------
def corpus_dir() -> Path:
    env = os.environ.get("HASHWATCH_CORPUS")
    d = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "corpus"
    if not d.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"corpus missing at {d} (set HASHWATCH_CORPUS)")
        pytest.skip(f"corpus missing at {d}")
    return d


def corpus_jpegs(n: int) -> list[Path]:
    files = sorted(p for p in corpus_dir().rglob("*.jpg"))
    if len(files) < n:
        pytest.skip("not enough corpus images")
    return files[:: max(1, len(files) // n)][:n]


def reencode(path: Path, quality: int = 70, scale: float = 0.8) -> bytes:
    im = Image.open(path).convert("RGB")
    im = im.resize((int(im.width * scale), int(im.height * scale)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class Receiver:
    """A webhook receiver doing what the docs tell platforms to do: verify the HMAC over
    timestamp + body, refuse stale timestamps and replayed event ids."""

    def __init__(self, secret: str = "", fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.accepted: list[dict] = []
        self.raw: list[tuple[dict, bytes]] = []
        self.refused: list[str] = []
        self.guard = wh.ReplayGuard()
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items()}
                code = outer.handle(headers, body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, headers: dict, body: bytes) -> int:
        self.hits += 1
        if self.hits <= self.fail_first:
            return 503
        ts = headers.get(wh.TIMESTAMP_HEADER)
        sig = headers.get(wh.SIGNATURE_HEADER)
        if not wh.verify_signature(self.secret, body, ts, sig, headers.get(wh.EVENT_HEADER)):
            self.refused.append("signature")
            return 401
        if not self.guard.first_time(headers.get(wh.EVENT_HEADER, "")):
            self.refused.append("replay")
            return 409
        self.raw.append((headers, body))
        self.accepted.append(json.loads(body))
        return 200

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(pred, timeout: float = 10.0, step: float = 0.05):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def _die_with_parent() -> None:
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def live_service(db: str, **env: str):  # type: ignore[no-untyped-def]
    """The real service (uvicorn) in its own process on a free loopback port, with
    ``HASHWATCH_<NAME>`` settings from ``env``; yields (base URL, process). Its output is
    returned by ``proc.output`` after the block (for checks on what it logged)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    full = dict(os.environ, HASHWATCH_DB=db,
                **{f"HASHWATCH_{k.upper()}": v for k, v in env.items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hashwatch.service.app:app_from_env", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(base + "/v1/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        if not wait_for(ready, timeout=60, step=0.1):
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
            pytest.fail(f"server did not become ready:\n{out[-3000:]}")
        yield base, proc
    finally:
        proc.terminate()
        try:
            out = proc.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
        proc.output = out.decode(errors="replace")  # type: ignore[attr-defined]


def fast_settings(db: str, **kw: object) -> Settings:
    # receivers in these tests listen on loopback: allowed by name, as an operator would
    base = dict(db=db, refresh_interval=0.2, webhook_poll_interval=0.05,
                webhook_backoff_base=0.1, rate_limit=0,
                webhook_allowed_networks=["127.0.0.0/8"])
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


class Svc:
    """A running app (TestClient) with an admin key."""

    def __init__(self, db: str, admin_name: str = "admin", **kw: object) -> None:
        with Store.open(db) as s:
            self.admin = create_key(s, admin_name, "admin")
        self.db = db
        self.client = TestClient(create_app(fast_settings(db, **kw)))
        self.client.__enter__()
        assert wait_for(lambda: self.client.get("/v1/health/ready").status_code == 200)

    def h(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin}"}

    def key(self, name: str, scopes: str, **kw: object) -> str:
        r = self.client.post("/v1/keys", json={"name": name, "scopes": scopes.split(","), **kw},
                             headers=self.h())
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def close(self) -> None:
        self.client.__exit__(None, None, None)


@pytest.fixture
def svc(store_url):  # noqa: F811 - API tests run on SQLite and on PostgreSQL
    s = Svc(store_url)
    yield s
    s.close()


def pdq_of(svc: Svc, data: bytes) -> dict:
    r = svc.client.post("/v1/hash", files={"file": ("x.jpg", data)}, headers=svc.h())
    assert r.status_code == 200, r.text
    return r.json()["hashes"]


def assert_error(r, status: int, code: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    body = r.json()
    assert "error" in body and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code


# -- authentication and scopes --------------------------------------------------------
def test_metrics_name_the_worker_and_give_its_process_figures(svc):
    """Workers share a port, so each scrape says which worker answered (pid) and gives that
    process's own resident memory and CPU time (the standard ``process_*`` metrics)."""
    text = svc.client.get("/v1/health/metrics").text
    lines = text.splitlines()
    info = [ln for ln in lines if ln.startswith("hashwatch_worker_info{")]
    assert len(info) == 1 and f'pid="{os.getpid()}"' in info[0], info

    def value(name: str) -> float:
        return float(next(ln for ln in lines if ln.startswith(name + " ")).split()[1])

    status = Path("/proc/self/status").read_text()
    vm_rss = int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])
    assert 0.8 < value("process_resident_memory_bytes") / (vm_rss * 1024) < 1.25
    assert 0 < value("process_cpu_seconds_total") <= time.process_time() + 1
    assert abs(value("process_start_time_seconds") - time.time()) < 24 * 3600


def test_every_data_endpoint_needs_a_valid_key_with_scope(svc):
    c = svc.client
    assert_error(c.get("/v1/lists"), 401, "unauthenticated")
    forged = "Bearer hw_0123456789ab_" + "x" * 40
    assert_error(c.get("/v1/lists", headers={"Authorization": forged}), 401)
    assert_error(c.get("/v1/lists", headers={"Authorization": "Bearer nonsense"}), 401)
    hasher = svc.key("hasher", "hash")
    assert_error(c.post("/v1/lists", json={"name": "x"}, headers=svc.h(hasher)), 403, "forbidden")
    assert_error(c.post("/v1/match/hashes", json={"hashes": [{"signal_type": "md5",
                                                               "value": "a" * 32}]},
                        headers=svc.h(hasher)), 403)
    # X-API-Key works as well as Bearer
    matcher = svc.key("matcher", "match")
    assert c.get("/v1/lists", headers={"X-API-Key": matcher}).status_code == 200
    # only a salted hash is stored: the secret appears nowhere in the database
    with Store.open(svc.db) as s, s.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(api_keys))]
    secret = matcher.split("_", 2)[2]
    assert rows and all(secret not in str(r) for r in rows)
    # revocation: refused at once in this worker (and within 5 s in others)
    assert c.delete("/v1/keys/matcher", headers=svc.h()).status_code == 200
    assert_error(c.get("/v1/lists", headers={"X-API-Key": matcher}), 401)
    actions = [e["action"] for e in c.get("/v1/audit", headers=svc.h()).json()["events"]]
    assert "key.create" in actions and "key.revoke" in actions


def test_rate_limit_per_key(tmp_path):
    s = Svc(str(tmp_path / "hw.db"))
    try:
        slow = s.key("slow", "match", rate_limit=2)
        codes = [s.client.get("/v1/lists", headers=s.h(slow)).status_code for _ in range(8)]
        assert codes[:4] == [200] * 4 and 429 in codes  # burst = 2 s worth
        r = s.client.get("/v1/lists", headers=s.h(slow))
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        # another key is not affected
        assert s.client.get("/v1/lists", headers=s.h()).status_code == 200
    finally:
        s.close()


# -- bad input: always a JSON 4xx -----------------------------------------------------
def _png_bomb() -> bytes:
    """A valid tiny PNG whose header claims 100,000 x 100,000 pixels."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 100_000, 100_000)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def test_bad_inputs_are_clear_4xx(tmp_path):
    s = Svc(str(tmp_path / "hw.db"), max_upload_bytes=200_000)
    c, h = s.client, s.h()
    try:
        def m(hashes, **kw):  # type: ignore[no-untyped-def]
            return c.post("/v1/match/hashes", json={"hashes": hashes, **kw}, headers=h)

        assert_error(m([{"signal_type": "pdq", "value": "xyz"}]), 422, "malformed_hash")
        assert_error(m([{"signal_type": "md5", "value": "g" * 32}]), 422, "malformed_hash")
        assert_error(m([{"signal_type": "nosuch", "value": "a"}]), 422, "unknown_signal_type")
        assert_error(m([{"signal_type": "md5", "value": "a" * 32}], lists=["nope"]), 404,
                     "unknown_list")
        assert_error(m([{"signal_type": "md5", "value": "a" * 32}] * 1001), 422,
                     "invalid_request")
        assert_error(m([]), 422)
        assert_error(c.post("/v1/match/hashes", content=b"{not json", headers=h), 422)
        up = c.post
        assert_error(up("/v1/match/upload", files={"file": ("x.txt", b"hello")}, headers=h),
                     415, "not_an_image")
        assert_error(up("/v1/match/upload", files={"file": ("x.png", _png_bomb())}, headers=h),
                     413, "image_too_large")
        assert_error(up("/v1/match/upload", files={"file": ("x", b"")}, headers=h), 422)
        assert_error(up("/v1/hash", files={"file": ("big.bin", os.urandom(300_000))},
                        headers=h), 413, "too_large")
        mp4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64  # a video header, no video
        assert_error(up("/v1/hash", files={"file": ("v.mp4", mp4)}, headers=h), 422,
                     "bad_video")
        assert_error(up("/v1/match/upload", headers=h), 422)
        jpeg = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, "JPEG")
        assert_error(up("/v1/hash", files={"file": ("t.jpg", jpeg.getvalue()[:200])},
                        headers=h), 422, "truncated_image")
        assert_error(c.get("/v1/lists/nope", headers=h), 404, "unknown_list")
        assert_error(c.post("/v1/lists", json={"name": "a/b"}, headers=h), 422)
        assert_error(c.post("/v1/lists/nope/entries", json={"entries": [
            {"signal_type": "md5", "value": "a" * 32}]}, headers=h), 404)
        c.post("/v1/lists", json={"name": "l"}, headers=h)
        assert_error(c.post("/v1/lists", json={"name": "l"}, headers=h), 409, "list_exists")
        assert_error(c.post("/v1/lists/l/entries", json={"entries": [
            {"signal_type": "pdq", "value": "12"}]}, headers=h), 422, "malformed_entry")
        assert_error(c.post("/v1/lists/l/entries", json={"entries": [
            {"signal_type": "md5", "value": "a" * 32, "category": "nocolon"}]}, headers=h), 422)
        assert_error(c.post("/v1/lists/l/import?format=vics", content=b"[[[", headers=h), 422)
        assert_error(c.post("/v1/lists/l/import?format=xml", content=b"", headers=h), 422)
        assert_error(c.get("/v1/review/items/ri_" + "A" * 22, headers=h), 404, "unknown_item")
        assert_error(c.get("/v1/review/items/99", headers=h), 422)  # not an id at all
        assert_error(c.get("/v1/nowhere", headers=h), 404, "not_found")
        assert_error(c.post("/v1/match/url", json={"url": "http://example.org/a.jpg"},
                            headers=h), 403, "url_fetch_disabled")
    finally:
        s.close()


def test_openapi_served_and_documents_the_api(svc):
    spec = svc.client.get("/openapi.json").json()
    for path in ("/v1/match/hashes", "/v1/match/upload", "/v1/hash", "/v1/lists",
                 "/v1/lists/{name}/import", "/v1/review/items/{item_id}/decision"):
        assert path in spec["paths"]
    assert svc.client.get("/docs").status_code == 404  # no CDN-hosted Swagger UI


# -- lists, matching, audit -----------------------------------------------------------
def test_lists_import_match_export_and_audit(svc):
    c, h = svc.client, svc.h()
    imgs = corpus_jpegs(3)
    known = [pdq_of(svc, p.read_bytes()) for p in imgs[:2]]
    assert c.post("/v1/lists", json={"name": "caid", "category_scheme": "uk"},
                  headers=h).status_code == 201
    csv_body = "signal_type,value,category,source_ref\n" + "".join(
        f"pdq,{k['pdq']},uk:A,img{i}\n" for i, k in enumerate(known)
    ) + f"md5,{known[0]['md5']},uk:B,img0\nmd5,zzz,uk:B,bad\n"
    r = c.post("/v1/lists/caid/import?format=csv", content=csv_body.encode(), headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 3 and r.json()["errors"] == 1
    assert "line 5" in r.json()["first_errors"][0]
    # a re-encoded, resized copy matches by PDQ; the original bytes also match by md5
    r = c.post("/v1/match/upload", files={"file": ("a.jpg", reencode(imgs[0]))}, headers=h)
    ms = r.json()["matches"]
    assert [m["ref"] for m in ms] == ["img0"] and ms[0]["distance"] <= 31
    assert ms[0]["category"] == "uk:A" and not ms[0]["exact"]
    r = c.post("/v1/match/upload", files={"file": ("a.jpg", imgs[0].read_bytes())}, headers=h)
    assert [(m["signal"], m["exact"]) for m in r.json()["matches"]][0] == ("md5", True)
    # unrelated image: nothing
    r = c.post("/v1/match/upload", files={"file": ("c.jpg", imgs[2].read_bytes())}, headers=h)
    assert r.json()["matches"] == []
    # batch by hash: per-query results in order
    r = c.post("/v1/match/hashes", headers=h, json={"hashes": [
        {"signal_type": "pdq", "value": known[1]["pdq"].upper(), "ref": "q1"},
        {"signal_type": "md5", "value": known[0]["md5"]},
        {"signal_type": "sha256", "value": "0" * 64},
        {"signal_type": "pdq", "value": known[1]["pdq"], "quality": 10},
    ]})
    res = r.json()["results"]
    assert [len(x["matches"]) for x in res] == [1, 1, 0, 0]
    assert res[0]["ref"] == "q1" and res[0]["value"] == known[1]["pdq"]  # normalised
    # disabling the list stops matches at once; enabling brings them back
    assert c.patch("/v1/lists/caid", json={"enabled": False}, headers=h).json()["enabled"] is False
    q = {"hashes": [{"signal_type": "pdq", "value": known[1]["pdq"]}]}
    assert c.post("/v1/match/hashes", json=q, headers=h).json()["results"][0]["matches"] == []
    c.patch("/v1/lists/caid", json={"enabled": True}, headers=h)
    assert c.post("/v1/match/hashes", json=q, headers=h).json()["results"][0]["matches"]
    # export: hashes only, every active entry, each format
    out = c.get("/v1/lists/caid/export?format=csv", headers=h)
    assert out.status_code == 200 and out.text.count("\n") == 4
    assert known[0]["pdq"] in out.text
    for fmt in ("hashlines", "vics", "icse"):
        assert c.get(f"/v1/lists/caid/export?format={fmt}", headers=h).status_code == 200
    # entries page, remove
    page = c.get("/v1/lists/caid/entries?limit=2", headers=h).json()
    assert len(page["entries"]) == 2
    nxt = c.get(f"/v1/lists/caid/entries?after_id={page['next_after_id']}", headers=h).json()
    assert len(nxt["entries"]) == 1
    rid = [e["id"] for e in page["entries"] if e["value"] == known[1]["pdq"]]
    assert c.post("/v1/lists/caid/entries/remove", json={"ids": rid},
                  headers=h).json()["removed"] == 1
    assert c.post("/v1/match/hashes", json=q, headers=h).json()["results"][0]["matches"] == []
    # soft delete: gone from matching and listing, audited
    assert c.delete("/v1/lists/caid", headers=h).status_code == 200
    assert_error(c.get("/v1/lists/caid", headers=h), 404)
    events = c.get("/v1/audit", headers=h).json()["events"]
    actions = [(e["actor"], e["action"]) for e in events]
    for a in ("list.create", "entries.import", "match.upload", "match.hashes", "list.disable",
              "list.enable", "list.export", "entries.remove", "list.delete"):
        assert ("admin", a) in actions, a
    lookups = [e for e in events if e["action"] == "match.hashes"]
    assert lookups[0]["detail"]["n"] == 4 and lookups[0]["detail"]["hits"] == 2
    uploads = [e for e in events if e["action"] == "match.upload"]
    assert uploads[0]["detail"]["result"][0]["distance"] <= 31 and uploads[0]["at"]


def test_upload_matching_uses_the_robust_tier(svc):
    # a mirrored copy defeats plain PDQ; the matcher's robust views find it
    c, h = svc.client, svc.h()
    img = corpus_jpegs(4)[3]
    k = pdq_of(svc, img.read_bytes())
    c.post("/v1/lists", json={"name": "rb"}, headers=h)
    c.post("/v1/lists/rb/entries", headers=h, json={"entries": [
        {"signal_type": "pdq", "value": k["pdq"], "ref": "orig"}]})
    buf = io.BytesIO()
    Image.open(img).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buf, "JPEG",
                                                                                   quality=85)
    flipped = pdq_of(svc, buf.getvalue())["pdq"]
    r = c.post("/v1/match/hashes", headers=h,
               json={"hashes": [{"signal_type": "pdq", "value": flipped}]}).json()
    assert r["results"][0]["matches"] == []  # plain PDQ alone misses it
    r = c.post("/v1/match/upload", files={"file": ("f.jpg", buf.getvalue())}, headers=h).json()
    assert [m["ref"] for m in r["matches"]] == ["orig"]


def test_a_still_upload_s_query_views_are_computed_in_its_decoder_child():
    """The robust query views and keypoints of a still upload are computed in the decoding
    child (a process of its own, so uploads use every core), from the same decoded pixels
    the worker would have used: identical to computing them in the worker."""
    from functools import partial

    from hashwatch import robust
    from hashwatch.service.isolation import DecodePool

    qx = partial(robust.query_extras, local=True)
    pool = DecodePool(workers=1)
    try:
        up = pool.run(corpus_jpegs(2)[1].read_bytes(), "x.jpg", None, qx)
        plain = pool.run(corpus_jpegs(2)[1].read_bytes(), "x.jpg")
    finally:
        pool.close()
    assert up.hashes.extras is not None and up.hashes.extras["local"]
    assert up.hashes.extras == qx(up.pixels)
    assert plain.hashes.extras is None  # /v1/hash asks for no views


def test_hash_endpoint_matches_the_cli_hasher(svc, tmp_path):
    from hashwatch.hashing import hash_file

    p = corpus_jpegs(1)[0]
    got = pdq_of(svc, p.read_bytes())
    ref = hash_file(p)
    assert (got["pdq"], got["sha256"], got["width"]) == (ref.pdq, ref.sha256, ref.width)


def _video_of(frames: list[bytes], fps: int = 1) -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as c:
        st = c.add_stream("mpeg4", rate=fps)
        st.width, st.height, st.pix_fmt = 320, 240, "yuv420p"
        for data in frames:
            im = Image.open(io.BytesIO(data)).convert("RGB").resize((320, 240))
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.asarray(im), format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return buf.getvalue()


def test_video_upload_matches_known_frames(svc):
    pytest.importorskip("av")
    c, h = svc.client, svc.h()
    a, b = corpus_jpegs(2)
    video = _video_of([a.read_bytes(), a.read_bytes(), b.read_bytes()])
    r = c.post("/v1/hash", files={"file": ("v.mp4", video)}, headers=h).json()["hashes"]
    assert len(r["frames"]) == 3 and r["sha256"] and r["pdq"] is None
    c.post("/v1/lists", json={"name": "vl"}, headers=h)
    kb = pdq_of(svc, reencode(b, quality=90, scale=320 / Image.open(b).width))
    c.post("/v1/lists/vl/entries", headers=h, json={"entries": [
        {"signal_type": "pdq", "value": kb["pdq"], "ref": "known-b"}]})
    r = c.post("/v1/match/upload", files={"file": ("v.mp4", video)}, headers=h).json()
    assert [m["ref"] for m in r["matches"]] == ["known-b"]
    assert r["matches"][0]["frame_time"] == 2.0 and r["review_item_id"]


# -- live updates ---------------------------------------------------------------------
ADD_SCRIPT = """
import sys
from hashwatch.store import EntryIn, Store
with Store.open(sys.argv[1]) as s:
    s.add_entries("live", [EntryIn(sys.argv[2], sys.argv[3])], actor="other-process")
"""


def test_entry_added_by_another_process_is_matchable_within_bound(store_url):  # noqa: F811
    # two service workers on one database; the entry is added by a third process
    with Store.open(store_url) as s:
        s.create_list("live")
    a = Svc(store_url)
    b = Svc(store_url, admin_name="admin-b")
    try:
        value = "1f" * 32
        q = {"hashes": [{"signal_type": "pdq", "value": value}]}
        for w in (a, b):
            assert w.client.post("/v1/match/hashes", json=q, headers=w.h()
                                 ).json()["results"][0]["matches"] == []
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", ADD_SCRIPT, store_url, "pdq", value], check=True)
        t_added = time.monotonic()

        def seen(w: Svc) -> bool:
            r = w.client.post("/v1/match/hashes", json=q, headers=w.h())
            return bool(r.json()["results"][0]["matches"])

        assert wait_for(lambda: seen(a) and seen(b), timeout=10)
        fresh = time.monotonic() - t_added
        assert fresh < 10, fresh
        # disabling the list via one worker stops matching in both at once (read-time filter)
        a.client.patch("/v1/lists/live", json={"enabled": False}, headers=a.h())
        assert not seen(a) and not seen(b)
        print(f"freshness {fresh:.2f}s (added in {t_added - t0:.2f}s)")
    finally:
        a.close()
        b.close()


# -- webhooks -------------------------------------------------------------------------
def test_webhook_signed_retried_and_replays_refused(svc):
    c, h = svc.client, svc.h()
    rx = Receiver(fail_first=1)  # the first attempt fails: the event must be retried
    try:
        c.post("/v1/lists", json={"name": "wl"}, headers=h)
        hook = c.post("/v1/lists/wl/webhooks", json={"url": rx.url}, headers=h)
        assert hook.status_code == 201
        rx.secret = hook.json()["secret"]
        assert "secret" not in c.get("/v1/lists/wl/webhooks", headers=h).json()["webhooks"][0]
        img = corpus_jpegs(1)[0]
        k = pdq_of(svc, img.read_bytes())
        c.post("/v1/lists/wl/entries", headers=h, json={"entries": [
            {"signal_type": "pdq", "value": k["pdq"], "category": "uk:A", "ref": "k1"}]})
        r = c.post("/v1/match/upload", files={"file": ("u.jpg", reencode(img))},
                   data={"ref": "upload-42"}, headers=h)
        assert r.json()["events"] == 1
        assert wait_for(lambda: rx.accepted, timeout=10)
        ev = rx.accepted[0]
        assert ev["type"] == "match" and ev["list"] == "wl" and ev["content"]["ref"] == "upload-42"
        assert ev["matches"][0]["ref"] == "k1" and ev["content"]["review_item_id"]
        assert rx.hits == 2  # one failure, one retry
        # the worker records the delivery after the receiver's 200: wait for that write
        def delivered() -> list:
            ev = c.get("/v1/outbox", headers=h).json()["events"]
            return ev if ev and ev[0]["status"] == "delivered" else []

        out = wait_for(delivered, timeout=10)
        assert out and out[0]["status"] == "delivered" and out[0]["attempts"] == 2
        # replay of the captured request: refused (same event id); so is a forged body and
        # a stale timestamp with a once-valid signature
        headers, body = rx.raw[0]
        assert rx.handle(headers, body) == 409
        assert rx.handle(headers, body.replace(b"upload-42", b"upload-43")) == 401
        old = str(int(time.time()) - 3600)
        eid = headers[wh.EVENT_HEADER]
        stale = dict(headers, **{wh.TIMESTAMP_HEADER: old,
                                  wh.SIGNATURE_HEADER: wh.sign(rx.secret, old, eid, body)})
        assert rx.handle(stale, body) == 401
        # the captured request under a new event id (to pass the replay guard): the
        # signature covers the event id, so it fails
        renamed = dict(headers, **{wh.EVENT_HEADER: "f" * 32})
        assert rx.handle(renamed, body) == 401
        assert rx.refused == ["replay", "signature", "signature", "signature"]
    finally:
        rx.close()


def test_outbox_survives_a_restart(tmp_path):
    db = str(tmp_path / "hw.db")
    rx = Receiver()
    s = Svc(db, run_webhook_worker=False)  # a worker that dies before delivering
    try:
        c, h = s.client, s.h()
        c.post("/v1/lists", json={"name": "ol"}, headers=h)
        rx.secret = c.post("/v1/lists/ol/webhooks", json={"url": rx.url},
                           headers=h).json()["secret"]
        c.post("/v1/lists/ol/entries", headers=h,
               json={"entries": [{"signal_type": "md5", "value": "ab" * 16}]})
        r = c.post("/v1/match/hashes", headers=h,
                   json={"hashes": [{"signal_type": "md5", "value": "ab" * 16, "ref": "r1"}]})
        assert r.json()["events"] == 1
        time.sleep(0.3)
        assert rx.accepted == []
    finally:
        s.close()
    s2 = Svc(db, admin_name="admin2")  # restarted with delivery on: the pending event goes out
    try:
        assert wait_for(lambda: rx.accepted, timeout=10)
        assert rx.accepted[0]["content"]["ref"] == "r1"
    finally:
        s2.close()
        rx.close()


def test_webhook_gives_up_after_max_attempts(tmp_path):
    s = Svc(str(tmp_path / "hw.db"), webhook_max_attempts=2, webhook_backoff_base=0.05)
    try:
        c, h = s.client, s.h()
        c.post("/v1/lists", json={"name": "dl"}, headers=h)
        c.post("/v1/lists/dl/webhooks", json={"url": "http://127.0.0.1:9/nothing"}, headers=h)
        c.post("/v1/lists/dl/entries", headers=h,
               json={"entries": [{"signal_type": "md5", "value": "cd" * 16}]})
        c.post("/v1/match/hashes", headers=h,
               json={"hashes": [{"signal_type": "md5", "value": "cd" * 16}]})
        ev = wait_for(lambda: [e for e in c.get("/v1/outbox", headers=h).json()["events"]
                               if e["status"] == "dead"])
        assert ev and ev[0]["attempts"] == 2 and ev[0]["last_error"]
    finally:
        s.close()


def test_two_delivery_workers_deliver_each_event_once(store_url):  # noqa: F811
    rx = Receiver()
    try:
        with Store.open(store_url) as s:
            s.create_list("cl")
            policy = wh.DestinationPolicy.from_settings(False, ["127.0.0.0/8"])
            rx.secret = wh.create_webhook(s, "cl", rx.url, actor="t", policy=policy)["secret"]
            ids = []
            for i in range(30):
                ids += wh.enqueue_match_events(s, [{"list": "cl", "entry_id": i}], {"ref": i})
            workers = [wh.DeliveryWorker(s, poll_interval=0.05, policy=policy)
                       for _ in range(2)]
            threads = [threading.Thread(target=w.deliver_due, kwargs={"wait": True})
                       for w in workers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for w in workers:
                w.stop()
        got = sorted(e["id"] for e in rx.accepted)
        assert got == sorted(ids) and rx.refused == []
    finally:
        rx.close()


def test_audit_writer_group_commits_every_row(store_url):  # noqa: F811
    from hashwatch.service.audit import AuditUnavailable, AuditWriter

    with Store.open(store_url) as s:
        w = AuditWriter(s)
        threads = [threading.Thread(target=lambda t=t: [
            w.write(f"t{t}", "match.hashes", {"i": i}) for i in range(40)]) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = [e for e in s.iter_audit() if e["action"] == "match.hashes"]
        assert len(rows) == 240
        for t in range(6):  # each caller's rows are in its own order
            assert [e["detail"]["i"] for e in rows if e["actor"] == f"t{t}"] == list(range(40))
        w.close()
        # a row that cannot be written is an error for the caller, never silently dropped
        w2 = AuditWriter(s, timeout=5)
        with pytest.raises(AuditUnavailable):
            w2.write(None, "match.hashes", {})  # type: ignore[arg-type]  # NOT NULL actor
        w2.close()


def test_signature_helpers():
    body = b'{"a":1}'
    ts = int(time.time())
    sig = wh.sign("k", ts, "e1", body)
    assert sig.startswith("v2=")
    assert wh.verify_signature("k", body, str(ts), sig, "e1")
    assert not wh.verify_signature("other", body, str(ts), sig, "e1")
    assert not wh.verify_signature("k", body + b" ", str(ts), sig, "e1")
    assert not wh.verify_signature("k", body, str(ts), sig, "e2")  # event id is signed
    assert not wh.verify_signature("k", body, str(ts), sig, None)
    assert not wh.verify_signature("k", body, str(ts - 1000),
                                   wh.sign("k", ts - 1000, "e1", body), "e1")
    assert not wh.verify_signature("k", body, "notanumber", sig, "e1")
    assert not wh.verify_signature("k", body, None, sig, "e1")
    assert not wh.verify_signature("k", body, str(ts), "v2=\udcff", "e1")
    g = wh.ReplayGuard(size=2)
    assert g.first_time("a") and not g.first_time("a")


# -- review queue and allow-list --------------------------------------------------------
def test_review_decisions_audited_and_allow_list_silences_content(svc):
    c, h = svc.client, svc.h()
    reviewer = svc.key("rev", "review")
    rx = Receiver()
    try:
        c.post("/v1/lists", json={"name": "rl"}, headers=h)
        rx.secret = c.post("/v1/lists/rl/webhooks", json={"url": rx.url},
                           headers=h).json()["secret"]
        imgs = corpus_jpegs(2)
        for p in imgs:
            k = pdq_of(svc, p.read_bytes())
            c.post("/v1/lists/rl/entries", headers=h, json={"entries": [
                {"signal_type": "pdq", "value": k["pdq"], "ref": p.name}]})
        ids = []
        for p in imgs:
            r = c.post("/v1/match/upload", files={"file": ("u.jpg", reencode(p))}, headers=h)
            ids.append(r.json()["review_item_id"])
        assert all(ids)
        hr = svc.h(reviewer)
        items = c.get("/v1/review/items", headers=hr).json()["items"]
        assert [i["id"] for i in items] == ids and items[0]["status"] == "pending"
        assert "thumb" not in items[0] and "preview" not in items[0]
        # the default image is greyscale and blurred; the preview is the clear one
        thumb = Image.open(io.BytesIO(c.get(f"/v1/review/items/{ids[0]}/thumb",
                                            headers=hr).content))
        assert thumb.mode == "L" and max(thumb.size) <= 256
        prev = Image.open(io.BytesIO(c.get(f"/v1/review/items/{ids[0]}/preview",
                                           headers=hr).content))
        assert prev.mode == "RGB"
        assert_error(c.get(f"/v1/review/items/{ids[0]}/thumb", headers=svc.h(
            svc.key("m", "match"))), 403)
        # decisions
        r = c.post(f"/v1/review/items/{ids[0]}/decision", headers=hr,
                   json={"decision": "false_positive", "allow_list": True, "note": "a cat"})
        assert r.json()["status"] == "false_positive" and r.json()["decided_by"] == "rev"
        r = c.post(f"/v1/review/items/{ids[1]}/decision", headers=hr,
                   json={"decision": "escalate"})
        assert r.json()["status"] == "escalated"
        assert_error(c.post(f"/v1/review/items/{ids[1]}/decision", headers=hr,
                            json={"decision": "confirm", "allow_list": True}), 422)
        assert_error(c.post(f"/v1/review/items/{ids[1]}/decision", headers=hr,
                            json={"decision": "maybe"}), 422)
        assert c.get("/v1/review/items", headers=hr).json()["items"] == []
        events = c.get("/v1/audit", headers=h).json()["events"]
        decisions = [e for e in events if e["action"] == "review.decide"]
        assert [(e["actor"], e["detail"]["decision"]) for e in decisions] == [
            ("rev", "false_positive"), ("rev", "escalate")]
        assert decisions[0]["detail"]["allow_listed"] is True
        assert [e["actor"] for e in events if e["action"] == "review.reveal"] == ["rev"]
        # a reviewer alone only proposes: pending until a second person approves
        pending = c.get("/v1/allow-list?status=pending", headers=hr).json()["entries"]
        assert pending and {e["created_by"] for e in pending} == {"rev"}
        assert_error(c.post(f"/v1/allow-list/{pending[0]['id']}/approve", headers=hr), 403,
                     "second_person_required")
        hr2 = svc.h(svc.key("rev2", "review"))
        for e in pending:
            r = c.post(f"/v1/allow-list/{e['id']}/approve", headers=hr2)
            assert r.status_code == 200 and r.json()["status"] == "active", r.text
        wait_for(lambda: len(rx.accepted) == 2)
        n_events = len(rx.accepted)
        # the allow-listed content never alerts again: another re-encode, the original,
        # and its hash: no match, no review item, no webhook. The escalated one still does.
        for data in (reencode(imgs[0], quality=60, scale=0.6), imgs[0].read_bytes()):
            r = c.post("/v1/match/upload", files={"file": ("u.jpg", data)}, headers=h).json()
            assert r["matches"] == [] and r["allow_listed"] and r["review_item_id"] is None
        k0 = pdq_of(svc, imgs[0].read_bytes())
        r = c.post("/v1/match/hashes", headers=h,
                   json={"hashes": [{"signal_type": "pdq", "value": k0["pdq"]}]}).json()
        assert r["results"][0]["matches"] == [] and r["results"][0]["allow_listed"]
        r = c.post("/v1/match/upload", files={"file": ("u.jpg", reencode(imgs[1]))},
                   headers=h).json()
        assert r["matches"] and r["review_item_id"]
        time.sleep(0.5)
        assert len(rx.accepted) == n_events + 1
    finally:
        rx.close()


# -- URL fetch --------------------------------------------------------------------------
class _ImageServer:
    def __init__(self, payload: bytes, redirect_to: str | None = None) -> None:
        outer = self
        self.payload, self.redirect_to = payload, redirect_to

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if outer.redirect_to and self.path == "/redir":
                    self.send_response(302)
                    self.send_header("Location", outer.redirect_to)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.payload)))
                self.end_headers()
                self.wfile.write(outer.payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_url_fetch_guards():
    assert host_allowed("img.example.org", ["*.example.org"])
    assert not host_allowed("example.org.evil.com", ["*.example.org"])
    assert not host_allowed("other.org", ["example.org"])
    srv = _ImageServer(b"x" * 5000, redirect_to="http://localhost:1/elsewhere")
    try:
        base = f"http://127.0.0.1:{srv.port}"
        with pytest.raises(FetchError) as e:
            fetch(base + "/a.jpg", allowed_hosts=["example.org"])
        assert e.value.code == "host_not_allowed"
        with pytest.raises(FetchError) as e:  # loopback refused unless configured
            fetch(base + "/a.jpg", allowed_hosts=["127.0.0.1"])
        assert e.value.code == "address_not_allowed"
        assert fetch(base + "/a.jpg", allowed_hosts=["127.0.0.1"], allow_private=True) == \
            b"x" * 5000
        with pytest.raises(FetchError) as e:
            fetch(base + "/a.jpg", allowed_hosts=["127.0.0.1"], allow_private=True,
                  max_bytes=1000)
        assert e.value.code == "too_large"
        with pytest.raises(FetchError) as e:
            fetch(base + "/redir", allowed_hosts=["127.0.0.1", "localhost"], allow_private=True)
        assert e.value.code == "redirect_not_allowed"
        with pytest.raises(FetchError) as e:
            fetch("file:///etc/passwd", allowed_hosts=["127.0.0.1"])
        assert e.value.code == "bad_url"
    finally:
        srv.close()


def test_match_by_url_when_enabled(tmp_path):
    img = corpus_jpegs(1)[0]
    srv = _ImageServer(img.read_bytes())
    s = Svc(str(tmp_path / "hw.db"), url_fetch=True, url_allowed_hosts=["127.0.0.1"],
            url_allow_private=True)
    try:
        c, h = s.client, s.h()
        c.post("/v1/lists", json={"name": "ul"}, headers=h)
        k = pdq_of(s, img.read_bytes())
        c.post("/v1/lists/ul/entries", headers=h,
               json={"entries": [{"signal_type": "sha256", "value": k["sha256"]}]})
        r = c.post("/v1/match/url", headers=h,
                   json={"url": f"http://127.0.0.1:{srv.port}/pic.jpg"})
        assert r.status_code == 200 and r.json()["matches"][0]["exact"]
        assert_error(c.post("/v1/match/url", headers=h,
                            json={"url": "http://10.0.0.1.nip.io/x.jpg"}), 403)
    finally:
        s.close()
        srv.close()


def test_matches_carry_their_tier_and_confidence(tmp_path):
    """Hash-tier matches may be acted on (confidence "act"); keypoint-tier matches go to
    review (confidence "review"), in the upload response and in the webhook event."""
    from hashwatch import robust
    from hashwatch.demo import demo_images
    from hashwatch.hashing import hash_file
    from hashwatch.lists import add_records

    imgs = demo_images()[:4]
    db = str(tmp_path / "conf.db")
    with Store.open(db) as s:
        s.create_list("kl")
        add_records(s, "kl", [hash_file(p, extras=robust.known_extras) for p in imgs])
    rx = Receiver()
    s = Svc(db)
    try:
        c, h = s.client, s.h()
        rx.secret = c.post("/v1/lists/kl/webhooks", json={"url": rx.url},
                           headers=h).json()["secret"]
        # hash tier: a mirrored copy
        buf = io.BytesIO()
        Image.open(imgs[0]).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            buf, "JPEG", quality=85)
        r = c.post("/v1/match/upload", files={"file": ("m.jpg", buf.getvalue())}, headers=h)
        m = r.json()["matches"]
        assert [x["ref"] for x in m] == [imgs[0].name]
        assert m[0]["tier"] == "hash" and m[0]["confidence"] == "act"
        assert r.json()["confidence"] == "act"
        # keypoint tier: turned by 12 degrees and cropped off-centre
        im = Image.open(imgs[2]).convert("RGB").rotate(12, resample=Image.Resampling.BICUBIC)
        w, hh = im.size
        buf = io.BytesIO()
        im.crop((int(w * 0.25), int(hh * 0.1), int(w * 0.95), int(hh * 0.85))).save(buf, "PNG")
        r = c.post("/v1/match/upload", files={"file": ("t.png", buf.getvalue())},
                   data={"ref": "kp-1"}, headers=h)
        m = r.json()["matches"]
        assert [x["ref"] for x in m] == [imgs[2].name]
        assert m[0]["tier"] == "keypoint" and m[0]["confidence"] == "review"
        assert m[0]["inliers"] >= robust.LOCAL_MIN_INLIERS and r.json()["confidence"] == "review"
        assert wait_for(lambda: len(rx.accepted) == 2, timeout=15)
        by_ref = {ev["content"]["ref"]: ev for ev in rx.accepted}
        assert by_ref["kp-1"]["confidence"] == "review"
        assert by_ref["kp-1"]["matches"][0]["confidence"] == "review"
        assert by_ref[""]["confidence"] == "act"
        # exact hash look-ups say so too
        md5 = hash_file(imgs[1]).md5
        r = c.post("/v1/match/hashes", headers=h,
                   json={"hashes": [{"signal_type": "md5", "value": md5}]}).json()
        assert r["results"][0]["matches"][0]["confidence"] == "act"
        assert r["results"][0]["matches"][0]["tier"] == "exact"
    finally:
        rx.close()
        s.close()
