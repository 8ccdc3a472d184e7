"""CLI and demo of private matching: setup -> voucher -> ingest, and the two-account demo."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from hashwatch.private.cli import app, read_vouchers
from hashwatch.private.client import pdq_with_coeffs
from hashwatch.private.demo import generated_images, run_demo


def test_cli_setup_voucher_ingest(tmp_path):
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
    # 3 listed pictures: with threshold 3 the account is recovered unless the client
    # substituted a synthetic voucher for one of them (rate 1%)
    real_opened = len(acct["opened"]) - len(acct["synthetic"])
    assert acct["recovered"] == (real_opened >= 3)
    if acct["recovered"]:
        assert {x["pdq"] for x in acct["revealed"]} <= set(listed)
    # the same file again: every voucher is a replay
    r = CliRunner().invoke(app, ["ingest", str(tmp_path / "t"), str(tmp_path / "v.bin"),
                                 "--account", "acct", "--state", str(state)])
    assert '"replay": 5' in r.output


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
