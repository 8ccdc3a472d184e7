"""CLI and demo of private matching: setup -> voucher -> ingest, and the two-account demo."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from hashwatch.private.cli import app, read_vouchers
from hashwatch.private.client import pdq_with_coeffs
from hashwatch.private.demo import generated_images, run_demo


def test_cli_setup_voucher_ingest(tmp_path, monkeypatch):
    # The client replaces a voucher by a synthetic one at random (rate 1%, secret budget) and
    # the server can tell which only after recovery: left to chance, a synthetic voucher in
    # place of a listed picture's made this test fail in ~3% of runs. The choice is fixed
    # here instead: never synthetic first, then synthetic for exactly one listed picture.
    from hashwatch.private.client import VoucherClient

    monkeypatch.setattr(VoucherClient, "_want_synthetic", lambda self: False)
    ims = list(generated_images(5, seed=3))
    paths = []
    for i, im in enumerate(ims):
        p = tmp_path / f"img{i}.png"
        im.save(p)
        paths.append(p)
    listed = [pdq_with_coeffs(np.asarray(im))[0] for im in ims[:3]]
    rng = np.random.default_rng(0)
    lines = [f"entry-{i},{h}" for i, h in enumerate(listed)] + [rng.bytes(32).hex()
                                                              for _ in range(50)]
    hashes = tmp_path / "list.txt"
    hashes.write_text("# test list\n" + "\n".join(lines) + "\n")
    r = CliRunner().invoke(app, ["setup", str(hashes), "--out", str(tmp_path / "t"),
                                 "--threshold", "3"])
    assert r.exit_code == 0, r.output
    pub = r.output.split("pin this in clients): ")[1].split()[0]
    assert ((tmp_path / "t" / "server-secret.npz").stat().st_mode & 0o777) == 0o600

    r = CliRunner().invoke(app, ["voucher", str(tmp_path / "t"), *map(str, paths), "--pubkey",
                                 pub, "--state", str(tmp_path / "c.json"), "--out",
                                 str(tmp_path / "v.bin")])
    assert r.exit_code == 0, r.output
    assert len(read_vouchers(tmp_path / "v.bin")) == 5

    bad = "00" * 32  # a client pinned to another key refuses the table
    r = CliRunner().invoke(app, ["voucher", str(tmp_path / "t"), str(paths[0]), "--pubkey", bad,
                                 "--state", str(tmp_path / "c2.json"), "--out",
                                 str(tmp_path / "v2.bin")])
    assert r.exit_code == 2 and "rejected" in r.output

    state = tmp_path / "server-state.json"
    r = CliRunner().invoke(app, ["ingest", str(tmp_path / "t"), str(tmp_path / "v.bin"),
                                 "--account", "acct", "--state", str(state)])
    assert r.exit_code == 0, r.output
    acct = json.loads(state.read_text())["accounts"]["acct"]
    assert acct["vouchers_received"] == 5
    # 3 listed pictures, threshold 3: exactly their vouchers open and the account is
    # recovered; only listed hashes are revealed
    assert len(acct["opened"]) == 3 and acct["recovered"] and acct["synthetic"] == []
    assert {x["pdq"] for x in acct["revealed"]} == set(listed)
    # the same file again: every voucher is a replay
    r = CliRunner().invoke(app, ["ingest", str(tmp_path / "t"), str(tmp_path / "v.bin"),
                                 "--account", "acct", "--state", str(state)])
    assert '"replay": 5' in r.output

    # another account whose client sends a synthetic voucher in place of the first listed
    # picture's: three vouchers open, but only two real shares, so nothing is recovered
    # and the server cannot tell the synthetic one apart
    calls = iter([True] + [False] * 10)
    monkeypatch.setattr(VoucherClient, "_want_synthetic", lambda self: next(calls))
    r = CliRunner().invoke(app, ["voucher", str(tmp_path / "t"), *map(str, paths), "--pubkey",
                                 pub, "--state", str(tmp_path / "c3.json"), "--out",
                                 str(tmp_path / "v3.bin")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["ingest", str(tmp_path / "t"), str(tmp_path / "v3.bin"),
                                 "--account", "acct2", "--state", str(state)])
    assert r.exit_code == 0, r.output
    acct2 = json.loads(state.read_text())["accounts"]["acct2"]
    assert acct2["vouchers_received"] == 5 and len(acct2["opened"]) == 3
    assert not acct2["recovered"] and acct2["revealed"] == [] and acct2["synthetic"] == []


def test_demo_one_account_crosses_one_does_not(monkeypatch):
    monkeypatch.delenv("HASHWATCH_CORPUS", raising=False)
    lines: list[str] = []
    summary = run_demo(threshold=3, fillers=100, out=lines.append)
    assert summary["alice"]["threshold_crossed"] and summary["alice"]["report_raised"]
    assert summary["alice"]["verified"] >= 3
    assert not summary["bob"]["threshold_crossed"] and summary["bob"]["revealed"] == 0
    assert any("THRESHOLD CROSSED" in x for x in lines)


def test_demo_uses_the_transport_it_is_given():
    calls: list[tuple[str, int]] = []

    def transport(account: str, vouchers: list[bytes]) -> list[dict]:
        calls.append((account, len(vouchers)))
        return [{"status": "unopened", "threshold_crossed": False, "report_raised": False}
                for _ in vouchers]

    summary = run_demo(transport, threshold=3, fillers=100, out=lambda s: None)
    assert {a for a, _ in calls} == {"alice", "bob"}
    assert not summary["alice"]["threshold_crossed"] and "revealed" not in summary["alice"]


def test_demo_through_the_http_service():
    """`hashwatch private demo`: devices post vouchers to the real service over loopback;
    alice crosses the threshold and is reported, bob stays below with nothing decrypted."""
    from typer.testing import CliRunner

    from hashwatch.cli import app

    res = CliRunner().invoke(app, ["private", "demo", "--threshold", "3"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "/v1/private/" in res.output
    assert "alice" in res.output and "THRESHOLD CROSSED" in res.output
    assert "bob" in res.output and "below threshold" in res.output


def test_private_endpoints_answer_devices_only_accepted(tmp_path):
    """A device hears 202 for matching, non-matching and garbage vouchers alike; only a
    reviewer key sees the account; bad requests get JSON 4xx."""
    import numpy as np
    from fastapi.testclient import TestClient

    from hashwatch.private.client import ClientState, VoucherClient
    from hashwatch.private.demo import make_setup
    from hashwatch.service.app import create_app
    from hashwatch.service.auth import create_key
    from hashwatch.service.settings import Settings
    from hashwatch.store import Store

    setup = make_setup(3, None, fillers=50)
    folder = tmp_path / "private"
    setup.table.save(folder)
    setup.secret.save(folder / "server-secret.npz")
    db = str(tmp_path / "s.db")
    with Store.open(db) as store:
        device = {"Authorization": "Bearer " + create_key(store, "device", "match")}
        reviewer = {"Authorization": "Bearer " + create_key(store, "rev", "review")}
    client_lib = VoucherClient(setup.table, ClientState.new(), setup.secret.sign_pk)
    settings = Settings(db=db, private_dir=str(folder), run_webhook_worker=False)
    with TestClient(create_app(settings)) as c:
        table = c.get("/v1/private/table.bin", headers=device)
        assert table.status_code == 200 and table.content == (folder / "table.bin").read_bytes()
        listed = client_lib.voucher_for_pixels(np.asarray(setup.known[0]))
        unlisted = client_lib.voucher_for_pixels(np.asarray(setup.other[0]))
        answers = [c.post("/v1/private/accounts/a1/vouchers", content=v, headers=device)
                   for v in (listed, unlisted, b"garbage" * 10)]
        assert [(r.status_code, r.json()) for r in answers] == [(202, {"accepted": True})] * 3
        assert c.get("/v1/private/accounts/a1", headers=device).status_code == 403
        view = c.get("/v1/private/accounts/a1", headers=reviewer).json()
        assert view["vouchers_received"] == 3 and view["threshold_crossed"] is False
        too_big = c.post("/v1/private/accounts/a1/vouchers", content=b"x" * 70_000,
                         headers=device)
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"
        empty = c.post("/v1/private/accounts/a1/vouchers", content=b"", headers=device)
        assert empty.status_code == 400
        for bad in ("a..b", "a%E2%80%AEb", "a%00b"):  # path-like, bidi override, NUL
            r = c.post(f"/v1/private/accounts/{bad}/vouchers", content=listed, headers=device)
            assert r.status_code == 422, (bad, r.text)
        assert c.post("/v1/private/accounts/a1/vouchers", content=listed).status_code == 401
