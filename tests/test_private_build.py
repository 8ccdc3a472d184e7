"""The streaming, resumable table build (``hashwatch.private.build``) and ``private setup``."""

from __future__ import annotations

import stat

import numpy as np
import pytest
from typer.testing import CliRunner

from hashwatch.cli import app
from hashwatch.private import build, sodium
from hashwatch.private.build import BuildError, build_table_files
from hashwatch.private.client import ClientState, VoucherClient
from hashwatch.private.server import PsiServer
from hashwatch.private.table import KEY_DOMAIN, PublicTable, ServerSecret, slot_positions


def _entries(n: int, seed: int = 3) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(f"e{i}", rng.bytes(32).hex()) for i in range(n)]


def _listed_keys_in_place(out, entries) -> int:
    """How many (entry, table) keys sit blinded in one of their 3 slots: checked with the secret
    from first principles, not through the client code."""
    sec = ServerSecret.load(out / "server-secret.npz")
    table = PublicTable.load(out, sec.sign_pk)
    p = table.params
    found = 0
    for _, hx in entries:
        for key in p.key_design.server_keys(hx):
            want = sodium.scalar_mult(sec.alpha, sodium.hash_to_point(KEY_DOMAIN, key))
            found += any(table.point(s) == want
                         for s in slot_positions(p.cuckoo_seed, key, p.n_slots))
    return found


def test_build_places_every_key_and_is_verifiable(tmp_path):
    entries = _entries(300)
    s = build_table_files(lambda: entries, tmp_path, threshold=4)
    assert (s.entries, s.keys) == (300, 2400)
    assert _listed_keys_in_place(tmp_path, entries) == 2400
    assert not (tmp_path / build.WORK).exists() and not (tmp_path / "table.bin.part").exists()
    assert stat.S_IMODE((tmp_path / "server-secret.npz").stat().st_mode) == 0o600
    t = PublicTable.load(tmp_path, bytes.fromhex(s.sign_pk), map_file=True)
    assert t.commitment.digest.hex() == s.digest
    assert len(t.points) == 32 * s.slots


def test_interrupted_build_resumes_without_redoing_finished_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "SLOT_CHUNK", 512)
    entries = _entries(400)

    class Stop(Exception):
        pass

    def stop_after_two(stage: str, done: int, total: int) -> None:
        if stage == "blind" and done >= 2:
            raise Stop

    with pytest.raises(Stop):
        build_table_files(lambda: entries, tmp_path, threshold=4, progress=stop_after_two)
    work = tmp_path / build.WORK
    done = [int(x) for x in (work / "blinded.txt").read_text().split()]
    assert len(done) >= 2 and not (tmp_path / "table.bin").exists()
    assert stat.S_IMODE((work / "secret.json").stat().st_mode) == 0o600
    part = (tmp_path / "table.bin.part").read_bytes()
    hlen = 12 + int.from_bytes(part[8:12], "little")
    first = {c: part[hlen + 32 * 512 * c : hlen + 32 * 512 * (c + 1)] for c in done}

    def must_not_read():
        raise AssertionError("a resumed build must not read its input again")

    s = build_table_files(must_not_read, tmp_path, threshold=4)
    final = (tmp_path / "table.bin").read_bytes()
    for c, chunk in first.items():  # random fillers included: only identical if not redone
        assert final[hlen + 32 * 512 * c : hlen + 32 * 512 * (c + 1)] == chunk
    assert _listed_keys_in_place(tmp_path, entries) == 8 * 400
    # and the resumed table works end to end: a listed hash opens a voucher, a stranger's not
    sec = ServerSecret.load(tmp_path / "server-secret.npz")
    pub = PublicTable.load(tmp_path, sec.sign_pk)
    server = PsiServer(pub.params, sec)
    client = VoucherClient(pub, ClientState.new(), bytes.fromhex(s.sign_pk))
    v = client.voucher_for_hash(entries[5][1], synthetic=False)
    assert server.ingest("a", v).status == "opened"
    stranger = np.random.default_rng(99).bytes(32).hex()
    assert server.ingest("a", client.voucher_for_hash(stranger, synthetic=False)).status \
        == "unopened"


def test_work_folder_of_another_build_is_refused_and_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "SLOT_CHUNK", 512)
    entries = _entries(200)

    def stop(stage: str, done: int, total: int) -> None:
        if stage == "blind":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_table_files(lambda: entries, tmp_path, threshold=4, fingerprint="a", progress=stop)
    before = sorted(p.name for p in (tmp_path / build.WORK).iterdir())
    with pytest.raises(BuildError, match="another input"):
        build_table_files(lambda: entries, tmp_path, threshold=5, fingerprint="a")
    with pytest.raises(BuildError, match="another input"):
        build_table_files(lambda: entries, tmp_path, threshold=4, fingerprint="b")
    assert sorted(p.name for p in (tmp_path / build.WORK).iterdir()) == before


def test_bad_hash_is_a_clear_error_and_writes_no_table(tmp_path):
    entries = _entries(5) + [("bad", "zz" * 32)] + _entries(5, seed=4)
    with pytest.raises(BuildError, match=r"entry 6 \(bad\)"):
        build_table_files(lambda: entries, tmp_path)
    assert not (tmp_path / "table.bin").exists()


def test_duplicate_hashes_are_listed_once_first_id_wins(tmp_path):
    entries = _entries(50)
    dup = [("again", entries[7][1]), ("again2", entries[7][1].upper())]
    s = build_table_files(lambda: entries[:20] + dup + entries[20:], tmp_path)
    sec = ServerSecret.load(tmp_path / "server-secret.npz")
    assert s.entries == 50 and list(sec.entry_ids) == [e for e, _ in entries]


def test_cli_setup_streams_a_list_and_refuses_to_overwrite(tmp_path):
    entries = _entries(120)
    lst = tmp_path / "list.txt"
    lst.write_text("# a comment\n" + "".join(f"{e},{h}\n" for e, h in entries))
    out = tmp_path / "psi"
    runner = CliRunner()
    r = runner.invoke(app, ["private", "setup", str(lst), "--out", str(out), "--threshold", "4",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "120 distinct hashes" in r.output
    digest = (out / "commitment.json").read_text()
    r = runner.invoke(app, ["private", "setup", str(lst), "--out", str(out), "--workers", "1"])
    assert r.exit_code == 2 and "already built" in r.output
    assert (out / "commitment.json").read_text() == digest


@pytest.mark.parametrize("n", [1, 7, 301])
def test_slot_counts_that_are_not_a_multiple_of_eight(tmp_path, monkeypatch, n):
    """The last blinding chunk is partial: it must write exactly its own slots."""
    monkeypatch.setattr(build, "SLOT_CHUNK", 1000)
    entries = _entries(n, seed=n)
    s = build_table_files(lambda: entries, tmp_path, min_slots=13, threshold=4)
    assert s.slots % 8 != 0 or n == 1
    assert (tmp_path / "table.bin").stat().st_size == s.table_bytes
    assert _listed_keys_in_place(tmp_path, entries) == 8 * n
