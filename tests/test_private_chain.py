"""Keeping the table current: deltas, the commitment chain, witnesses, compaction, rotation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hashwatch.private.chain import (
    ChainRejected,
    ForkDetected,
    Link,
    Witness,
    WitnessPolicy,
    sign_link,
)
from hashwatch.private.client import ClientState, VoucherClient
from hashwatch.private.device import folder_fetch, sync
from hashwatch.private.keys import DEFAULT_DESIGN
from hashwatch.private.publish import Publisher
from hashwatch.private.server import PsiServer
from hashwatch.private.table import CHAIN_FILE, PublicTable, TableRejected, chunk_name

T = 3


def _entries(n: int, seed: int, prefix: str = "e") -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(f"{prefix}{i}", rng.bytes(32).hex()) for i in range(n)]


@pytest.fixture
def world(tmp_path):
    base = _entries(200, 1)
    pub = Publisher.create(tmp_path / "server", lambda: base, design=DEFAULT_DESIGN,
                           threshold=T, chunk_slots=3)
    witnesses = [Witness.generate(tmp_path / f"w{i}.json", pub.sign_pk) for i in range(2)]
    pub.cosign(witnesses)
    policy = WitnessPolicy(tuple(w.pk for w in witnesses), 2)
    return {"pub": pub, "base": base, "witnesses": witnesses, "policy": policy,
            "server": tmp_path / "server", "device": tmp_path / "device", "tmp": tmp_path}


def _opens(world, table, hx: str) -> bool:
    server = PsiServer.open(world["server"])
    v = VoucherClient(table, ClientState.new()).voucher_for_hash(hx, synthetic=False)
    return server.ingest("acct", v).status == "opened"


def _publish(world, entries):
    res = world["pub"].add_delta(entries)
    world["pub"].cosign(world["witnesses"])
    return res


def test_device_fetches_only_the_new_chunk_and_matches_against_the_union(world):
    fetch = folder_fetch(world["server"])
    t0, rep0 = sync(world["device"], fetch, world["pub"].sign_pk, world["policy"])
    assert t0.version == 0 and rep0.bytes_fetched > 0
    new = _entries(40, 2, "n")
    res = _publish(world, new + world["base"][:5])  # already-listed entries are skipped
    assert res.entries == 40 and res.link.link.kind == "delta"
    t1, rep = sync(world["device"], fetch, world["pub"].sign_pk, world["policy"], t0)
    names = [n for n, _ in rep.fetched]
    assert names == [CHAIN_FILE, chunk_name(0, 1)]  # nothing the device already had
    assert rep.bytes_fetched < rep0.bytes_fetched
    assert t1.version == 1 and [c.index for c in t1.chunks] == [0, 1]
    assert _opens(world, t1, new[3][1]) and _opens(world, t1, world["base"][3][1])
    assert not _opens(world, t0, new[3][1])  # version 0 does not know the new entry
    # the device's copy verifies from scratch, as a fresh device would see it
    assert PublicTable.open(world["device"], world["pub"].sign_pk, world["policy"]).version == 1


def test_a_tampered_delta_is_rejected_and_the_device_keeps_its_version(world):
    fetch = folder_fetch(world["server"])
    t0, _ = sync(world["device"], fetch, world["pub"].sign_pk, world["policy"])
    _publish(world, _entries(30, 3, "n"))
    p = world["server"] / chunk_name(0, 1)
    raw = bytearray(p.read_bytes())
    raw[-7] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(TableRejected, match="digest"):
        sync(world["device"], fetch, world["pub"].sign_pk, world["policy"], t0)
    held = PublicTable.open(world["device"], world["pub"].sign_pk, world["policy"])
    assert held.version == 0


def test_witnesses_refuse_a_second_head_for_a_version_so_a_targeted_delta_fails(world):
    fetch = folder_fetch(world["server"])
    t0, _ = sync(world["device"], fetch, world["pub"].sign_pk, world["policy"])
    _publish(world, _entries(30, 4, "n"))  # the public version 1, cosigned
    head0 = t0.head.link
    special = sign_link(world["pub"].sign_sk, Link(
        1, 0, "delta", head0.head, head0.params_digest, 1, bytes(32), 0, (0, 1), 1))
    for w in world["witnesses"]:
        with pytest.raises(ForkDetected) as e:
            w.cosign(special)
        assert e.value.heads[0] != e.value.heads[1]
    with pytest.raises(TableRejected, match="witness"):
        t0.apply(world["device"], world["pub"].sign_pk, [special], world["policy"])
    # a device that already holds the public version 1 sees the fork in the server's chain
    t1, _ = sync(world["device"], fetch, world["pub"].sign_pk, world["policy"], t0)
    forked = world["tmp"] / "forked"
    shutil.copytree(world["server"], forked, ignore=shutil.ignore_patterns("secret"))
    chain = json.loads((forked / CHAIN_FILE).read_text())
    chain["links"][1] = special.to_dict()
    (forked / CHAIN_FILE).write_text(json.dumps(chain))
    with pytest.raises(TableRejected, match="fork"):
        sync(world["device"], folder_fetch(forked), world["pub"].sign_pk, world["policy"], t1)


def test_unsigned_or_out_of_order_links_are_rejected(world):
    t0 = world["pub"].table()
    head = t0.head.link
    good = Link(1, 0, "delta", head.head, head.params_digest, 1, bytes(32), 0, (0, 1), 1)
    other_key = Witness.generate(world["tmp"] / "x.json", b"")  # any other signing key
    cases = {
        "signature": sign_link(other_key.sk, good),
        "back link": sign_link(world["pub"].sign_sk, Link(
            1, 0, "delta", bytes(32), head.params_digest, 1, bytes(32), 0, (0, 1), 1)),
        "version": sign_link(world["pub"].sign_sk, Link(
            2, 0, "delta", head.head, head.params_digest, 1, bytes(32), 0, (0, 1), 1)),
        "drops a live chunk": sign_link(world["pub"].sign_sk, Link(
            1, 0, "delta", head.head, head.params_digest, 1, bytes(32), 0, (1,), 1)),
    }
    for what, sl in cases.items():
        with pytest.raises(TableRejected):
            t0.apply(world["server"], world["pub"].sign_pk, [sl])
        with pytest.raises(ChainRejected):
            world["witnesses"][0].cosign(sl)
        assert what


def test_when_the_slots_are_full_the_deltas_are_merged_into_one_chunk(world):
    fetch = folder_fetch(world["server"])
    t, _ = sync(world["device"], fetch, world["pub"].sign_pk, world["policy"])
    batches = [_entries(20, 10 + i, f"m{i}-") for i in range(3)]
    kinds = []
    for b in batches:
        kinds.append(_publish(world, b).link.link.kind)
        t, _ = sync(world["device"], fetch, world["pub"].sign_pk, world["policy"], t)
    assert kinds == ["delta", "delta", "compaction"]
    assert [c.index for c in t.chunks] == [0, 3] and t.chunks[1].geometry.n_keys == 60
    for b in batches:  # every delta entry still opens, from the merged chunk
        assert _opens(world, t, b[7][1])
    assert len(t.chunks) <= t.params.chunk_slots


def test_removed_entries_stop_counting_at_once_and_leave_the_table_at_rotation(world):
    pub = world["pub"]
    gone = world["base"][:T + 1]
    t0 = pub.table()
    assert pub.remove([e for e, _ in gone] + ["no-such-id"]) == T + 1
    server = PsiServer.open(world["server"])
    client = VoucherClient(t0, ClientState.new())
    for _, hx in gone:  # still in the table: they open, are decrypted, but are no report
        assert server.ingest("a", client.voucher_for_hash(hx, synthetic=False)).status \
            == "opened"
    v = server.account_view("a")
    assert v["recovered"] and v["report"] is None
    assert all(r["list_matches"] == [] for r in v["revealed"])
    old_voucher = VoucherClient(t0, ClientState.new()).voucher_for_hash(
        world["base"][50][1], synthetic=False)
    res = pub.rotate()
    pub.cosign(world["witnesses"])
    assert res.link.link.kind == "base" and res.link.link.epoch == 1
    assert res.entries == len(world["base"]) - (T + 1)
    t1, rep = sync(world["device"], folder_fetch(world["server"]), pub.sign_pk,
                   world["policy"])
    assert t1.epoch == 1 and t1.params.blind_pub != t0.params.blind_pub
    server = PsiServer.open(world["server"])
    assert not _opens(world, t1, gone[0][1])  # out of the table now
    assert _opens(world, t1, world["base"][60][1])
    # a voucher made for the previous epoch is still taken during the grace period ...
    assert server.ingest("b", old_voucher).status == "opened"
    # ... and refused as stale once the server no longer accepts that epoch
    strict = PsiServer.open(world["server"], grace_epochs=0)
    assert strict.ingest("c", old_voucher).status == "stale"


def test_a_refused_first_sync_leaves_the_device_able_to_sync_again(world):
    """A first sync from a tampered copy, and from a chain whose link lost its signature,
    is refused with TableRejected and leaves nothing behind: a later sync from the real
    server works (the device used to keep the unverified chain and stay stuck)."""
    bad = world["tmp"] / "bad"
    shutil.copytree(world["server"], bad, ignore=shutil.ignore_patterns("secret"))
    p = bad / chunk_name(0, 0)
    raw = bytearray(p.read_bytes())
    raw[-7] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(TableRejected):
        sync(world["device"], folder_fetch(bad), world["pub"].sign_pk, world["policy"])
    assert not (world["device"] / CHAIN_FILE).exists()
    unsigned = world["tmp"] / "unsigned"
    shutil.copytree(world["server"], unsigned, ignore=shutil.ignore_patterns("secret"))
    chain = json.loads((unsigned / CHAIN_FILE).read_text())
    del chain["links"][0]["signature"]
    (unsigned / CHAIN_FILE).write_text(json.dumps(chain))
    with pytest.raises(TableRejected, match="not readable"):
        sync(world["device"], folder_fetch(unsigned), world["pub"].sign_pk, world["policy"])
    t0, _ = sync(world["device"], folder_fetch(world["server"]), world["pub"].sign_pk,
                 world["policy"])
    assert t0.version == 0


def test_a_witness_that_missed_versions_or_joins_late_catches_up(world):
    """Two updates published between cosigns, and a witness created after version 0: both
    cosign every version in order, so devices pinned to them take the head (a witness used
    to refuse "version 2 does not follow 0" and devices were stuck)."""
    late = Witness.generate(world["tmp"] / "late.json", world["pub"].sign_pk)
    world["pub"].add_delta(_entries(10, 5, "a"))
    world["pub"].add_delta(_entries(10, 6, "b"))
    world["pub"].cosign(world["witnesses"] + [late])
    policy = WitnessPolicy((world["witnesses"][0].pk, late.pk), 2)
    t, _ = sync(world["device"], folder_fetch(world["server"]), world["pub"].sign_pk, policy)
    assert t.version == 2
    assert late.heads.keys() == {0, 1, 2}
