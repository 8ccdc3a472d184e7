"""Holes found by the second red-team pass over issue 13 (after the hardening landed), each
as a test of its kind. The first pass's findings are tests in test_service_hardening.py."""

from __future__ import annotations

import io
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


def _reference_problem(doc, strings: bool) -> str | None:  # type: ignore[no-untyped-def]
    """The rule load_json enforces, written as plainly as possible: containers nested at
    most MAX_JSON_DEPTH deep, and (strings) no string or member name with a problem."""
    from hashwatch.store.guards import text_problem

    def walk(node, depth):  # type: ignore[no-untyped-def]
        if isinstance(node, dict | list):
            if depth > guards.MAX_JSON_DEPTH:
                return "deep"
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                if strings and isinstance(k, str) and text_problem(k):
                    return "key"
                found = walk(v, depth + 1)
                if found:
                    return found
        elif strings and isinstance(node, str) and text_problem(node):
            return "text"
        return None

    return walk(doc, 0)


_json_text = st.text(alphabet=st.sampled_from(["a", "\x00", "\ud800", "\udfff", "é", "\x1f"]),
                     max_size=4)
_json_docs = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | _json_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_text, inner, max_size=3),
    max_leaves=40)


def _nest(doc, n: int):  # type: ignore[no-untyped-def]
    for _ in range(n):
        doc = [doc]
    return doc


@settings(max_examples=300, deadline=None)
@given(doc=_json_docs, extra=st.integers(0, 34))
def test_json_checker_refuses_exactly_what_the_rule_refuses(doc, extra):
    """The guard's one-pass check (fast, path worked out only when refusing) against the
    rule written plainly: the same documents pass, the same are refused."""
    body = json.dumps(_nest(doc, extra)).encode()  # ensure_ascii: NUL, surrogates -> \u
    doc = json.loads(body)  # the document the text holds (a \ud800\udfff pair is one char)
    expected = _reference_problem(doc, strings=True)
    try:
        got = guards.load_json(body)
    except guards.JsonRefused as exc:
        assert expected is not None, (body[:200], exc.problem)
        assert exc.status == 422 and exc.problem != "refused", exc.problem
    else:
        assert expected is None, (body[:200], expected)
        assert got == doc


def test_error_bodies_encode_whatever_text_they_carry():
    # a message that repeats input must never fail to encode (UnicodeEncodeError = 500)
    for resp in (error_response(400, "x", "bad \ud800 name \x00"),
                 hma_error(400, "x", "Comparison hashes for \udfff was not a list")):
        doc = json.loads(resp.body)
        text = doc["error"]["message"]
        assert "\\ud" in text or "\\u0000" in text or "\\x00" in text, text


# -- outbound requests (webhook deliveries, URL fetches) are bounded in time and bytes -------
class _HostileHTTP:
    """A loopback server that answers ``/drip`` with one header line every 0.2 s (for up
    to a minute: a per-read timeout never fires) and ``/endless`` with a body that never
    ends (up to 64 MiB); ``sent`` counts the body bytes the client took."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        import threading

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn) -> None:  # type: ignore[no-untyped-def]
        import time

        try:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            if b" /drip" in head.split(b"\r\n")[0]:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for i in range(300):
                    if self.stop.is_set():
                        break
                    time.sleep(0.2)
                    conn.sendall(b"X-Drip: %d\r\n" % i)
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                chunk = b"A" * 65536
                for _ in range(1024):
                    conn.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    self.sent += len(chunk)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_webhook_delivery_attempt_is_bounded_in_time_and_bytes(tmp_path):
    """A receiver that drips its headers held a delivery lane (and the service's shutdown)
    for as long as it liked; one answering an endless body was read whole into memory
    (8 GB in the red-team run). An attempt now ends at its deadline and reads no body."""
    import time

    from hashwatch.service import webhooks as wh
    from hashwatch.service.destinations import DestinationPolicy
    from hashwatch.store import Store

    srv = _HostileHTTP()
    try:
        with Store.open(str(tmp_path / "hw.db")) as store:
            store.create_list("l")
            for path in ("/drip", "/endless"):
                wh.create_webhook(store, "l", srv.url(path), actor="t",
                                  policy=DestinationPolicy(allow_private=True))
            wh.enqueue_match_events(store, [{"list": "l", "entry_id": 1}], {"ref": "x"})
            worker = wh.DeliveryWorker(store, timeout=1.0,
                                       policy=DestinationPolicy(allow_private=True))
            t0 = time.monotonic()
            worker.deliver_due(wait=True)
            took = time.monotonic() - t0
            worker.stop()
            rows = {r["webhook_id"]: r for r in wh.outbox_rows(store)}
        assert took < 20, took  # the drip lasts a minute; the deadline is 1 s
        assert rows[1]["status"] == "pending" and rows[1]["last_error"], rows[1]
        assert rows[2]["status"] == "delivered", rows[2]  # a 2xx is all a receiver owes
        assert srv.sent < 16 * 1024 * 1024, srv.sent  # the body was not read
    finally:
        srv.close()


def test_a_url_fetch_is_bounded_by_its_total_deadline(tmp_path):
    import time

    from hashwatch.service.urlfetch import FetchError, fetch

    srv = _HostileHTTP()
    try:
        t0 = time.monotonic()
        with pytest.raises(FetchError) as exc:
            fetch(srv.url("/drip"), allowed_hosts=["127.0.0.1"], allow_private=True,
                  timeout=1.0)
        assert exc.value.status == 504 and time.monotonic() - t0 < 20
        with pytest.raises(FetchError) as exc:
            fetch(srv.url("/endless"), allowed_hosts=["127.0.0.1"], allow_private=True,
                  timeout=30.0, max_bytes=1024 * 1024)
        assert exc.value.status == 413
        assert srv.sent < 16 * 1024 * 1024, srv.sent
    finally:
        srv.close()


# -- a flood of failed attempts never locks out a valid key --------------------------------
def test_failed_auth_throttle_never_refuses_a_valid_key(sq):
    """The throttle answered 429 to every request from a failing source, valid keys
    included: behind a proxy or NAT one client sending bad keys locked everyone out."""
    c = sq.client
    other = sq.key("platform", "match")
    codes = [c.get("/v1/lists", headers={"Authorization": f"Bearer hw_{i:012x}_" + "x" * 40}
                   ).status_code for i in range(60)]
    assert codes[0] == 401 and codes[-1] == 429  # the failing source is throttled
    assert c.get("/v1/lists", headers=sq.h()).status_code == 200
    assert c.get("/v1/lists", headers=sq.h(other)).status_code == 200
    # a real key id with a wrong secret is still checked (and refused), not waved through
    forged = other.rsplit("_", 1)[0] + "_" + "y" * 43
    assert c.get("/v1/lists", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


# -- the allow-list's second person sees the item; reviewers see their own queue's rows -----
def test_allow_list_rows_and_approvals_follow_the_review_queue(sq):
    """A reviewer of another queue could list every queue's allow-list proposals (hashes,
    notes) and approve them as the 'second person' without being able to see the item."""
    from test_service import corpus_jpegs, pdq_of, reencode

    c, h = sq.client, sq.h()
    img = corpus_jpegs(1)[0]
    c.post("/v1/lists", json={"name": "q"}, headers=h)
    c.post("/v1/lists/q/entries", headers=h, json={"entries": [
        {"signal_type": "pdq", "value": pdq_of(sq, img.read_bytes())["pdq"]}]})
    plat = sq.key("platform-a", "match", queue="a")
    item = c.post("/v1/match/upload", files={"file": ("u.jpg", reencode(img))},
                  headers=sq.h(plat)).json()["review_item_id"]
    ra, ra2 = sq.h(sq.key("rev-a", "review", queue="a")), sq.h(sq.key("rev-a2", "review",
                                                                       queue="a"))
    rb = sq.h(sq.key("rev-b", "review", queue="b"))
    cur = sq.h(sq.key("curator", "curate"))
    r = c.post(f"/v1/review/items/{item}/decision", headers=ra,
               json={"decision": "false_positive", "allow_list": True, "note": "fine"})
    assert r.status_code == 200, r.text
    rows = c.get("/v1/allow-list", headers=ra).json()["entries"]
    assert rows and all(x["status"] == "pending" for x in rows)
    assert c.get("/v1/allow-list", headers=rb).json()["entries"] == []
    for x in rows:
        other = c.post(f"/v1/allow-list/{x['id']}/approve", headers=rb)
        missing = c.post("/v1/allow-list/999999/approve", headers=rb)
        assert other.status_code == missing.status_code == 404
        # the same answer as for a row that does not exist (only the id it names differs)
        assert other.text.replace(str(x["id"]), "N") == missing.text.replace("999999", "N")
    assert [x["id"] for x in c.get("/v1/allow-list", headers=cur).json()["entries"]] == \
        [x["id"] for x in rows]  # curate (and admin) keys see every queue's rows
    assert c.post(f"/v1/allow-list/{rows[0]['id']}/approve", headers=ra2).status_code == 200


# -- a throttled flood is counted, not only its first few attempts ---------------------------
def test_every_failed_attempt_is_counted_in_the_audit_including_throttled_ones(sq):
    """Attempts answered 429 by the throttle left no trace: 4,000 failures on loopback
    gave 6 rows whose counts summed to about 120."""
    c = sq.client
    n = 300
    codes = [c.get("/v1/lists", headers={"Authorization": f"Bearer hw_{i:012x}_" + "x" * 40}
                   ).status_code for i in range(n)]
    assert 429 in codes and 401 in codes
    sq.client.app.state.service.auth_failures.flush()
    deadline = time.monotonic() + 10
    while True:
        rows = [e for e in c.get("/v1/audit?limit=10000", headers=sq.h()).json()["events"]
                if e["action"].startswith("auth.failed")]
        counted = sum(1 if "reason" in r["detail"] else
                      r["detail"].get("repeated", r["detail"].get("attempts", 0)) for r in rows)
        if counted == n or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counted == n, rows
    assert len(rows) <= 3  # still bounded: first failure, one summary
    throttled = sum(r["detail"].get("reasons", {}).get("throttled", 0) for r in rows)
    assert throttled == codes.count(429)
