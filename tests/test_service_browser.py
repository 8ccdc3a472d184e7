"""End to end in a real browser: key via the CLI, list import, upload, signed webhook,
blurred review item, reveal by click, decision by keyboard, audit, allow-list.

Runs the real server (uvicorn, in a subprocess) and Debian's chromium driven by Playwright.
The set-up installs chromium with apt-get under CI=true when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from test_service import Receiver, corpus_jpegs, live_service, reencode, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _need(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    if not CHROMIUM.exists() and os.environ.get("CI") == "true" and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        res = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env,
                             capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            pytest.fail(f"apt-get install chromium failed: {res.stderr[-1000:]}")
    if not CHROMIUM.exists():
        _need("chromium not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _need("the playwright package is not installed (pip install playwright)")
    return str(CHROMIUM)


@pytest.fixture
def server(tmp_path):
    """The real service in its own process, on loopback."""
    db = str(tmp_path / "hw.db")
    with live_service(db, refresh_interval="0.2", webhook_poll_interval="0.1", rate_limit="0",
                      webhook_allowed_networks="127.0.0.0/8") as (base, _proc):  # local rx
        yield base, db


def _cli(db: str, *args: str) -> str:
    from hashwatch.service.cli import register

    app = typer.Typer()
    register(app)
    res = CliRunner().invoke(app, [*args, "--db", db])
    assert res.exit_code == 0, res.output
    return res.stdout.strip()


def test_platform_workflow_in_a_real_browser(server, chromium):
    from playwright.sync_api import sync_playwright

    base, db = server
    admin = _cli(db, "keys", "create", "ops", "--scopes", "admin").splitlines()[0]
    reviewer = _cli(db, "keys", "create", "reviewer1", "--scopes", "review").splitlines()[0]
    uploader = _cli(db, "keys", "create", "platform", "--scopes", "match,hash").splitlines()[0]
    assert "reviewer1" in _cli(db, "keys", "list")
    H = {"Authorization": f"Bearer {admin}"}
    U = {"Authorization": f"Bearer {uploader}"}
    imgs = corpus_jpegs(2)
    rx = Receiver()
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            # the custodian imports a list and subscribes a webhook
            assert c.post("/v1/lists", json={"name": "known"}, headers=H).status_code == 201
            rows = ["signal_type,value,category,source_ref"]
            for i, p in enumerate(imgs):
                k = c.post("/v1/hash", files={"file": (p.name, p.read_bytes())}, headers=U)
                rows.append(f"pdq,{k.json()['hashes']['pdq']},uk:C,known-{i}")
            r = c.post("/v1/lists/known/import?format=csv", content="\n".join(rows).encode(),
                       headers=H)
            assert r.json()["added"] == 2
            rx.secret = c.post("/v1/lists/known/webhooks", json={"url": rx.url},
                               headers=H).json()["secret"]
            # the platform uploads a re-encoded copy: a match, a signed webhook
            r = c.post("/v1/match/upload", files={"file": ("u1.jpg", reencode(imgs[0]))},
                       data={"ref": "post-1"}, headers=U).json()
            assert r["matches"][0]["ref"] == "known-0" and r["review_item_id"]
            item_id = r["review_item_id"]
            assert wait_for(lambda: rx.accepted, timeout=10)
            assert rx.accepted[0]["content"]["ref"] == "post-1"
            headers, body = rx.raw[0]
            assert rx.handle(headers, body) == 409  # a replay is refused

            # the reviewer works the queue in the browser
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
                page = browser.new_page()
                requests: list[str] = []
                page.on("request", lambda req: requests.append(req.url))
                page.goto(base + "/review")
                page.fill("#apikey", reviewer)
                page.click("#keysave")
                page.wait_for_selector(f"#item[data-item-id='{item_id}']")
                page.wait_for_function("() => document.getElementById('image').naturalWidth > 0")
                img = page.locator("#image")
                assert img.get_attribute("class") == "protected"
                style = img.evaluate("e => getComputedStyle(e).filter")
                assert "blur" in style and "grayscale" in style
                # what was sent is greyscale already (server-side), not just CSS-filtered
                grey = page.evaluate("""() => { const i = document.getElementById('image');
                    const c = document.createElement('canvas'); c.width = i.naturalWidth;
                    c.height = i.naturalHeight; const x = c.getContext('2d'); x.drawImage(i, 0, 0);
                    const d = x.getImageData(0, 0, c.width, c.height).data; let m = 0;
                    for (let k = 0; k < d.length; k += 4)
                      m = Math.max(m, Math.abs(d[k] - d[k+1]), Math.abs(d[k+1] - d[k+2]));
                    return m; }""")
                assert grey <= 3
                assert not any("/preview" in u for u in requests)  # clear image never sent
                assert page.locator("#matches tbody tr").count() == 1
                # reveal on an explicit click
                page.click("#reveal")
                page.wait_for_selector("#image.revealed")
                assert img.evaluate("e => getComputedStyle(e).filter") == "none"
                assert any(u.endswith(f"/review/items/{item_id}/preview") for u in requests)
                # decide with the keyboard: A = false positive + allow-list
                page.keyboard.press("a")
                page.wait_for_function(
                    f"() => document.body.dataset.lastDecision === "
                    f"'{item_id}:false_positive+allow'")
                page.wait_for_selector("#status:has-text('Queue empty')")
                browser.close()

            # the decision and the reveal are audited, by the reviewer's key name
            events = c.get("/v1/audit", headers=H).json()["events"]
            acts = [(e["actor"], e["action"]) for e in events]
            assert ("reviewer1", "review.reveal") in acts
            dec = [e for e in events if e["action"] == "review.decide"]
            assert dec[0]["actor"] == "reviewer1"
            assert dec[0]["detail"]["decision"] == "false_positive"
            assert dec[0]["detail"]["allow_listed"] is True
            assert ("platform", "match.upload") in acts and ("ops", "entries.import") in acts
            # a reviewer alone only proposes the allow-list rows; the custodian approves
            pending = c.get("/v1/allow-list?status=pending", headers=H).json()["entries"]
            assert pending and all(e["created_by"] == "reviewer1" for e in pending)
            for e in pending:
                assert c.post(f"/v1/allow-list/{e['id']}/approve",
                              headers=H).json()["status"] == "active"
            # the false positive never alerts again, even re-encoded differently
            n = len(rx.accepted)
            for data in (reencode(imgs[0], quality=50, scale=0.5), imgs[0].read_bytes()):
                r = c.post("/v1/match/upload", files={"file": ("u2.jpg", data)},
                           headers=U).json()
                assert r["matches"] == [] and r["allow_listed"] and r["events"] == 0
            items = c.get("/v1/review/items", headers={"Authorization": f"Bearer {reviewer}"})
            assert items.json()["items"] == []
            time.sleep(0.5)
            assert len(rx.accepted) == n
            # other known content still alerts
            r = c.post("/v1/match/upload", files={"file": ("u3.jpg", reencode(imgs[1]))},
                       headers=U).json()
            assert r["matches"] and r["events"] == 1
            assert wait_for(lambda: len(rx.accepted) == n + 1, timeout=10)
    finally:
        rx.close()
