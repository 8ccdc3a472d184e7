"""CLI and demo of private matching: setup -> voucher -> ingest, and the two-account demo."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from hashwatch.private.cli import app, read_vouchers
from hashwatch.private.demo import generated_images, make_setup, run_demo
from hashwatch.private.views import client_views


def _pdq(im) -> str:  # noqa: ANN001
    return client_views(np.asarray(im))[0].pdq.hex()


def test_cli_setup_update_sync_voucher_ingest_remove_rotate(tmp_path, monkeypatch):
    ims = list(generated_images(6, seed=3))
    paths = []
    for i, im in enumerate(ims):
        p = tmp_path / f"img{i}.png"
        im.save(p)
        paths.append(p)
    rng = np.random.default_rng(0)
    lines = [f"entry-{i},{_pdq(im)}" for i, im in enumerate(ims[:2])] + [
        rng.bytes(32).hex() for _ in range(50)]
    hashes = tmp_path / "list.txt"
    hashes.write_text("# test list\n" + "\n".join(lines) + "\n")
    srv = tmp_path / "t"
    runner = CliRunner()
    r = runner.invoke(app, ["setup", str(hashes), "--out", str(srv), "--threshold", "3",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    pub = r.output.split("pin this in clients): ")[1].split()[0]
    assert ((srv / "secret" / "epoch-0000.json").stat().st_mode & 0o777) == 0o600

    r = runner.invoke(app, ["cosign", str(srv), "--witness", str(tmp_path / "w.json")])
    assert r.exit_code == 0, r.output
    wkey = r.output.split("witness public key ")[1].split()[0]
    dev = tmp_path / "device"
    sync_args = ["sync", str(dev), "--from", str(srv), "--pubkey", pub, "--witness-key", wkey]
    r = runner.invoke(app, sync_args)
    assert r.exit_code == 0 and "version None -> 0" in r.output, r.output

    new = tmp_path / "new.txt"
    new.write_text(f"entry-2,{_pdq(ims[2])}\n" + rng.bytes(32).hex() + "\n")
    r = runner.invoke(app, ["update", str(srv), str(new), "--workers", "1"])
    assert r.exit_code == 0 and "version 1 (delta" in r.output, r.output
    r = runner.invoke(app, sync_args)  # the head lacks the witness's cosignature
    assert r.exit_code == 2 and "witness" in r.output, r.output
    assert runner.invoke(app, ["cosign", str(srv), "--witness",
                               str(tmp_path / "w.json")]).exit_code == 0
    r = runner.invoke(app, sync_args)
    assert r.exit_code == 0 and "version 0 -> 1: fetched 2 file(s)" in r.output, r.output

    # a device whose synthetic budget is spent: every voucher is the picture's own, so the
    # outcome below does not depend on the 1% synthetic draw
    (tmp_path / "c.json").write_text(json.dumps({"seed": "ab" * 32, "synthetic_sent": 10**6,
                                                 "sent": []}))
    r = runner.invoke(app, ["voucher", str(dev), *map(str, paths), "--pubkey", pub, "--state",
                            str(tmp_path / "c.json"), "--out", str(tmp_path / "v.bin"),
                            "--witness-key", wkey])
    assert r.exit_code == 0, r.output
    assert len(read_vouchers(tmp_path / "v.bin")) == 6
    bad = "00" * 32  # a client pinned to another key refuses the table
    r = runner.invoke(app, ["voucher", str(dev), str(paths[0]), "--pubkey", bad, "--state",
                            str(tmp_path / "c2.json"), "--out", str(tmp_path / "v2.bin")])
    assert r.exit_code == 2 and "rejected" in r.output

    state = tmp_path / "server-state.json"
    r = runner.invoke(app, ["ingest", str(srv), str(tmp_path / "v.bin"), "--account", "acct",
                            "--state", str(state)])
    assert r.exit_code == 0, r.output
    acct = json.loads(state.read_text())["accounts"]["acct"]
    assert acct["vouchers_received"] == 6
    # 3 listed pictures (2 in the base, 1 in the delta), threshold 3: recovered and reported
    assert len(acct["opened"]) == 3 and acct["recovered"] and acct["report"]
    assert {x["pdq"] for x in acct["revealed"]} == {_pdq(im) for im in ims[:3]}
    r = runner.invoke(app, ["ingest", str(srv), str(tmp_path / "v.bin"), "--account", "acct",
                            "--state", str(state)])
    assert '"replay": 6' in r.output

    # another account whose client sends a synthetic voucher in place of the first listed
    # picture's: three vouchers open, but only two real shares, so nothing is recovered
    # and the server cannot tell the synthetic one apart
    from hashwatch.private.client import VoucherClient

    calls = iter([True] + [False] * 10)
    monkeypatch.setattr(VoucherClient, "_want_synthetic", lambda self: next(calls))
    r = runner.invoke(app, ["voucher", str(dev), *map(str, paths), "--pubkey", pub, "--state",
                            str(tmp_path / "c3.json"), "--out", str(tmp_path / "v3.bin"),
                            "--witness-key", wkey])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["ingest", str(srv), str(tmp_path / "v3.bin"), "--account", "acct2",
                            "--state", str(state)])
    assert r.exit_code == 0, r.output
    acct2 = json.loads(state.read_text())["accounts"]["acct2"]
    assert acct2["vouchers_received"] == 6 and len(acct2["opened"]) == 3
    assert not acct2["recovered"] and acct2["revealed"] == [] and acct2["synthetic"] == []

    r = runner.invoke(app, ["remove", str(srv), "entry-0", "nope"])
    assert r.exit_code == 0 and "1 of 2 entries removed" in r.output
    r = runner.invoke(app, ["rotate", str(srv), "--workers", "1"])
    assert r.exit_code == 0 and "epoch 1" in r.output, r.output


def test_demo_updates_a_device_and_one_account_crosses_one_does_not(tmp_path, monkeypatch):
    monkeypatch.delenv("HASHWATCH_CORPUS", raising=False)
    lines: list[str] = []
    summary = run_demo(tmp_path, threshold=3, out=lines.append)
    assert summary["device"]["updated"] and summary["device"]["fork_refused"]
    assert summary["alice"]["threshold_crossed"] and summary["alice"]["report_raised"]
    assert summary["alice"]["verified"] >= 3
    assert {"mirror", "border-white10"} <= set(summary["alice"]["edits"])
    # the mirrored and the bordered copy are among the verified matches, in every run (a
    # synthetic voucher standing in for one of them no longer leaves it out)
    views = summary["alice"]["verified_views"]
    assert any("flip" in v for v in views) and any(v.startswith("trim") for v in views)
    assert not summary["bob"]["threshold_crossed"] and "verified" not in summary["bob"]
    assert any("THRESHOLD CROSSED" in x for x in lines)
    assert any("version 0 -> 1" in x for x in lines)


def test_demo_uses_the_transports_it_is_given(tmp_path):
    calls: list[tuple[str, int]] = []
    fetched: list[str] = []
    setup = make_setup(tmp_path / "p", 3, None, fillers=100)

    def transport(account: str, vouchers: list[bytes]) -> list[dict]:
        calls.append((account, len(vouchers)))
        return [{"status": "unopened", "threshold_crossed": False, "report_raised": False}
                for _ in vouchers]

    def fetch(name: str) -> bytes:
        fetched.append(name)
        return (setup.folder / name).read_bytes()

    summary = run_demo(tmp_path, setup, transport=transport, fetch=fetch, out=lambda s: None)
    assert {a for a, _ in calls} == {"alice", "bob"} and "chain.json" in fetched
    assert not summary["alice"]["threshold_crossed"] and "verified" not in summary["alice"]


def test_demo_through_the_http_service():
    """`hashwatch private demo`: the device fetches the chain and chunks from the real service
    over loopback and posts vouchers; alice crosses the threshold and is reported, bob stays
    below with nothing decrypted."""
    from typer.testing import CliRunner

    from hashwatch.cli import app

    res = CliRunner().invoke(app, ["private", "demo", "--threshold", "3"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "/v1/private/" in res.output and "version 0 -> 1" in res.output
    assert "alice" in res.output and "THRESHOLD CROSSED" in res.output
    # the reviewer's view of alice's report reaches the demo's output through the service
    assert "report raised for human review" in res.output, res.output
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

    setup = make_setup(tmp_path / "private", 3, None, fillers=50)
    folder = setup.folder
    db = str(tmp_path / "s.db")
    with Store.open(db) as store:
        device = {"Authorization": "Bearer " + create_key(store, "device", "match")}
        reviewer = {"Authorization": "Bearer " + create_key(store, "rev", "review")}
    client_lib = VoucherClient(setup.publisher.table(), ClientState.new())
    settings = Settings(db=db, private_dir=str(folder), run_webhook_worker=False)
    with TestClient(create_app(settings)) as c:
        for name in ("chain.json", "params-e0000.json", "chunk-e0000-0000.bin"):
            r = c.get(f"/v1/private/files/{name}", headers=device)
            assert r.status_code == 200 and r.content == (folder / name).read_bytes(), name
        for name in ("secret", "state.json", "..%2Fsecret%2Flist.npz", "chunk-e0000-0099.bin"):
            assert c.get(f"/v1/private/files/{name}", headers=device).status_code == 404, name
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


def test_cli_setup_keys_per_image_sets_the_voucher_shape(tmp_path):
    from hashwatch.private.keys import DEFAULT_DESIGN
    from hashwatch.private.publish import Publisher
    from hashwatch.private.table import DEFAULT_CHUNK_SLOTS, DEFAULT_DELTA_OPENINGS
    from hashwatch.private.voucher import voucher_bytes

    rng = np.random.default_rng(1)
    hashes = tmp_path / "list.txt"
    hashes.write_text("\n".join(rng.bytes(32).hex() for _ in range(20)) + "\n")
    runner = CliRunner()
    sizes = {}
    for k in (96, 128):
        r = runner.invoke(app, ["setup", str(hashes), "--out", str(tmp_path / str(k)),
                                "--workers", "1", "--keys-per-image", str(k),
                                "--delta-openings", str(k)])
        assert r.exit_code == 0, r.output
        params = Publisher(tmp_path / str(k)).params()
        assert params.key_design.keys_per_image == k and params.delta_openings == k
        sizes[k] = voucher_bytes(params)
    # every key block costs the same, so the voucher grows with the keys and nothing else
    assert sizes[128] > sizes[96]
    # the defaults the CLI signs are the library's
    r = runner.invoke(app, ["setup", str(hashes), "--out", str(tmp_path / "d"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    params = Publisher(tmp_path / "d").params()
    assert (params.key_design.keys_per_image, params.chunk_slots, params.delta_openings) == (
        DEFAULT_DESIGN.keys_per_image, DEFAULT_CHUNK_SLOTS, DEFAULT_DELTA_OPENINGS)
    r = runner.invoke(app, ["setup", str(hashes), "--out", str(tmp_path / "x"),
                            "--keys-per-image", "3"])
    assert r.exit_code != 0 and not (tmp_path / "x" / "chain.json").exists()
