"""Building the table: the binary fuse layout, the resumable chunk build, ``private setup``."""

from __future__ import annotations

import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hashwatch.cli import app
from hashwatch.private import build, fuse, sodium
from hashwatch.private.build import BuildError, build_chunk
from hashwatch.private.client import ClientState, VoucherClient
from hashwatch.private.keys import DEFAULT_DESIGN
from hashwatch.private.publish import Publisher
from hashwatch.private.server import PsiServer
from hashwatch.private.table import KEY_DOMAIN, Chunk


def _entries(n: int, seed: int = 3) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(f"e{i}", rng.bytes(32).hex()) for i in range(n)]


def _keys(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16), dtype=np.uint8)


ALPHA = sodium.scalar_reduce(bytes(range(64)))
FILL = bytes(32)


def _decodes_blinded(chunk: Chunk, keys: np.ndarray) -> int:
    """How many keys decode to alpha * H(key): checked from first principles."""
    found = 0
    for k in map(bytes, keys):
        want = sodium.scalar_mult(ALPHA, sodium.hash_to_point(KEY_DOMAIN, k))
        found += chunk.decode(k) == want
    return found


# --- the fuse layout ------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**32))
def test_fuse_cells_lie_in_three_consecutive_segments_and_peel(n, seed):
    geom = fuse.FuseGeometry.sized(n)
    assert geom.array_length >= n * 1.12
    words = np.random.default_rng(seed).integers(0, 2**63, (n, 2), dtype=np.int64)
    pos = fuse.positions(geom, words.astype(np.uint64))
    assert pos.min() >= 0 and pos.max() < geom.array_length
    seg = pos // geom.segment_length
    assert np.all(seg[:, 1] == seg[:, 0] + 1) and np.all(seg[:, 2] == seg[:, 0] + 2)
    try:
        rounds = fuse.peel(pos, geom.array_length)
    except fuse.PeelingFailed:
        return  # rare, the build then takes another seed
    order = np.concatenate([k for k, _ in rounds])
    own = np.concatenate([c for _, c in rounds])
    assert sorted(order.tolist()) == list(range(n))  # every key peeled exactly once
    assert len(set(own.tolist())) == n  # each with a cell of its own
    # solving from the last round back, a key's other cells are never solved after it
    solved_at = {int(c): r for r, (_, cs) in enumerate(rounds) for c in cs}
    for r, (ks, cs) in enumerate(rounds):
        for k, c in zip(ks.tolist(), cs.tolist(), strict=True):
            assert c in pos[k]
            for other in pos[k]:
                if other != c and int(other) in solved_at:
                    assert solved_at[int(other)] > r


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 30_000_000), st.binary(min_size=16, max_size=16),
       st.binary(min_size=32, max_size=32))
def test_client_key_cells_are_the_build_positions(n, key, seed):
    # the device's per-key shortcut must name exactly the cells the build solved for the key
    geom = fuse.FuseGeometry.sized(n)
    row = np.frombuffer(key, np.uint8).reshape(1, 16)
    want = fuse.positions(geom, fuse.key_words(seed, row))[0].tolist()
    assert list(fuse.key_cells(seed, geom, key)) == want


# --- the chunk build -----------------------------------------------------------------------

def test_chunk_decodes_every_key_to_its_blinded_point_and_nothing_else(tmp_path):
    keys = _keys(700)
    s = build_chunk(keys, tmp_path / "c.bin", alpha=ALPHA, fill_key=FILL, epoch=0, index=0,
                    params_digest=bytes(32), work=tmp_path / "w")
    c = Chunk.load(tmp_path / "c.bin")
    assert s.keys == 700 and c.geometry.array_length == s.cells
    assert _decodes_blinded(c, keys) == 700
    assert _decodes_blinded(c, _keys(50, seed=2)) == 0  # keys not in the chunk
    assert c.digest.hex() == s.digest and (tmp_path / "c.bin").stat().st_size == s.file_bytes
    build.check_cells(c)
    assert not (tmp_path / "w" / "cells.bin").exists()
    with pytest.raises(BuildError, match="distinct"):
        build_chunk(np.concatenate([keys, keys[:1]]), tmp_path / "d.bin", alpha=ALPHA,
                    fill_key=FILL, epoch=0, index=0, params_digest=bytes(32),
                    work=tmp_path / "w2")


def test_seeded_chunk_build_is_byte_identical_on_one_or_two_processes(tmp_path):
    keys = _keys(900)
    kw = {"alpha": ALPHA, "fill_key": FILL, "epoch": 0, "index": 0, "params_digest": bytes(32)}
    build_chunk(keys, tmp_path / "a.bin", work=tmp_path / "wa", **kw)
    build_chunk(keys, tmp_path / "b.bin", work=tmp_path / "wb", workers=2, **kw)
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    build_chunk(keys, tmp_path / "c.bin", work=tmp_path / "wc", **{**kw, "fill_key": b"x" * 32})
    assert (tmp_path / "a.bin").read_bytes() != (tmp_path / "c.bin").read_bytes()


def test_interrupted_chunk_build_resumes_without_redoing_finished_jobs(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "KEY_CHUNK", 256)
    keys = _keys(2000, seed=5)
    calls = []
    real = build._blind_job

    def counting(args):  # noqa: ANN001, ANN202
        calls.append(len(args[1]) // 16)
        return real(args)

    monkeypatch.setattr(build, "_blind_job", counting)

    class Stop(Exception):
        pass

    def stop(stage: str, done: int, total: int) -> None:
        if stage == "blind" and done >= 3 * 256:
            raise Stop

    kw = {"alpha": ALPHA, "fill_key": FILL, "epoch": 0, "index": 0, "params_digest": bytes(32)}
    with pytest.raises(Stop):
        build_chunk(keys, tmp_path / "c.bin", work=tmp_path / "w", progress=stop, **kw)
    assert not (tmp_path / "c.bin").exists() and sum(calls) == 3 * 256
    assert stat.S_IMODE((tmp_path / "w").stat().st_mode) == 0o700
    calls.clear()
    build_chunk(keys, tmp_path / "c.bin", work=tmp_path / "w", **kw)
    assert sum(calls) == 2000 - 3 * 256  # the finished jobs were not redone
    assert _decodes_blinded(Chunk.load(tmp_path / "c.bin"), keys) == 2000
    # a work folder left by the build of another chunk is refused, not mixed in
    with pytest.raises(Stop):
        build_chunk(keys[:1500], tmp_path / "d.bin", work=tmp_path / "w2", progress=stop, **kw)
    with pytest.raises(BuildError, match="another chunk"):
        build_chunk(keys, tmp_path / "d.bin", work=tmp_path / "w2", **kw)


# --- the publisher ------------------------------------------------------------------------

def test_bad_hash_is_a_clear_error_and_writes_no_table(tmp_path):
    entries = _entries(5) + [("bad", "zz" * 32)] + _entries(5, seed=4)
    with pytest.raises(BuildError, match=r"entry 6 \(bad\)"):
        Publisher.create(tmp_path, lambda: entries, design=DEFAULT_DESIGN)
    assert not (tmp_path / "chain.json").exists()


def test_duplicate_hashes_are_listed_once_first_id_wins_and_a_table_is_never_replaced(tmp_path):
    entries = _entries(50)
    dup = [("again", entries[7][1]), ("again2", entries[7][1].upper())]
    pub = Publisher.create(tmp_path, lambda: entries[:20] + dup + entries[20:],
                           design=DEFAULT_DESIGN)
    assert list(pub.entries()["ids"]) == [e for e, _ in entries]
    assert pub.table().chunks[0].geometry.n_keys == 50
    with pytest.raises(BuildError, match="already holds"):
        Publisher.create(tmp_path, lambda: entries, design=DEFAULT_DESIGN)


def test_interrupted_setup_resumes_without_reading_the_list_again(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "KEY_CHUNK", 128)
    entries = _entries(600)

    def stop(stage: str, done: int, total: int) -> None:
        if stage == "blind" and done >= 256:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Publisher.create(tmp_path, lambda: entries, design=DEFAULT_DESIGN, threshold=4,
                         progress=stop)

    def must_not_read():
        raise AssertionError("a resumed build must not read its input again")

    pub = Publisher.create(tmp_path, must_not_read, design=DEFAULT_DESIGN, threshold=4)
    with pytest.raises(KeyboardInterrupt):
        Publisher.create(tmp_path / "x", lambda: entries, design=DEFAULT_DESIGN, threshold=4,
                         progress=stop)
    with pytest.raises(BuildError, match="other settings"):  # an unfinished build of another
        Publisher.create(tmp_path / "x", lambda: entries, design=DEFAULT_DESIGN, threshold=5)
    server = PsiServer.open(tmp_path)
    client = VoucherClient(pub.table(), ClientState.new())
    assert server.ingest("a", client.voucher_for_hash(entries[5][1], synthetic=False)).status \
        == "opened"
    stranger = np.random.default_rng(99).bytes(32).hex()
    assert server.ingest("a", client.voucher_for_hash(stranger, synthetic=False)).status \
        == "unopened"


def test_cli_setup_streams_a_list_and_refuses_to_overwrite(tmp_path):
    entries = _entries(120)
    lst = tmp_path / "list.txt"
    lst.write_text("# a comment\n" + "".join(f"{e},{h}\n" for e, h in entries))
    out = tmp_path / "psi"
    runner = CliRunner()
    r = runner.invoke(app, ["private", "setup", str(lst), "--out", str(out), "--threshold", "4",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "version 0 (base, epoch 0)" in r.output
    chain = (out / "chain.json").read_text()
    r = runner.invoke(app, ["private", "setup", str(lst), "--out", str(out), "--workers", "1"])
    assert r.exit_code == 2 and "already" in r.output
    assert (out / "chain.json").read_text() == chain
    secret_alpha = Publisher(out).epoch_secret()["alpha"].hex()
    assert secret_alpha not in r.output
