"""Private matching (threshold vouchers): protocol properties, each able to fail."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashwatch.private import field
from hashwatch.private.build import build_table
from hashwatch.private.client import ClientState, VoucherClient, pdq_with_coeffs
from hashwatch.private.keys import KeyDesign, bits_to_hex, hamming_hex, hex_to_bits
from hashwatch.private.server import OBSERVED_FIELDS, PsiServer
from hashwatch.private.table import PublicTable, TableRejected
from hashwatch.private.voucher import parse, voucher_bytes

T = 4  # threshold used in these tests (small, to keep them fast)
REPO = Path(__file__).resolve().parents[1]


def _rand_hex(rng: np.random.Generator) -> str:
    return rng.bytes(32).hex()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = np.random.default_rng(7)
    known = [(f"k{i}", _rand_hex(rng)) for i in range(12)]
    filler = [(f"f{i}", _rand_hex(rng)) for i in range(300)]
    pub, sec = build_table(known + filler, threshold=T, sign_seed=b"s" * 32)
    d = tmp_path_factory.mktemp("table")
    pub.save(d)
    return {"pub": pub, "sec": sec, "known": known, "dir": d, "rng": rng}


def _client(setup) -> VoucherClient:
    return VoucherClient(setup["pub"], ClientState.new(), setup["sec"].sign_pk)


def _server(setup) -> PsiServer:
    return PsiServer(setup["pub"].params, setup["sec"])


def _unrelated(setup) -> str:
    return _rand_hex(setup["rng"])


# --- table and commitment -------------------------------------------------------------------

def test_published_table_round_trips_and_verifies(setup):
    t = PublicTable.load(setup["dir"], setup["sec"].sign_pk)
    assert t.points == setup["pub"].points
    assert len(t.points) == 32 * t.params.n_slots


@pytest.mark.parametrize("where", ["point", "params", "digest", "signature"])
def test_tampered_table_or_commitment_is_rejected(setup, where):
    pub = setup["pub"]
    pts, params, com = pub.points, pub.params, pub.commitment
    if where == "point":
        i = 32 * 5 + 3
        pts = pts[:i] + bytes([pts[i] ^ 1]) + pts[i + 1 :]
    elif where == "params":
        # e.g. a server lowering the threshold for some clients
        params = type(params)(**{**params.__dict__, "threshold": params.threshold - 1})
    elif where == "digest":
        com = type(com)(bytes([com.digest[0] ^ 1]) + com.digest[1:], com.signature, com.public_key)
    else:
        com = type(com)(com.digest, bytes([com.signature[0] ^ 1]) + com.signature[1:],
                        com.public_key)
    bad = PublicTable(params, pts, com)
    with pytest.raises(TableRejected):
        bad.verify(setup["sec"].sign_pk)
    with pytest.raises(TableRejected):
        VoucherClient(bad, ClientState.new(), setup["sec"].sign_pk)


def test_table_signed_by_another_key_is_rejected(setup):
    rng = np.random.default_rng(1)
    other, _ = build_table([("x", _rand_hex(rng))], threshold=T)  # a validly signed impostor
    other.verify(other.commitment.public_key)
    with pytest.raises(TableRejected):
        other.verify(setup["sec"].sign_pk)


def test_tampered_table_file_is_rejected(setup, tmp_path):
    setup["pub"].save(tmp_path)
    raw = bytearray((tmp_path / "table.bin").read_bytes())
    raw[-7] ^= 0x40
    (tmp_path / "table.bin").write_bytes(bytes(raw))
    with pytest.raises(TableRejected):
        PublicTable.load(tmp_path, setup["sec"].sign_pk)


def test_server_secret_file_is_owner_only(setup, tmp_path):
    p = tmp_path / "secret.npz"
    setup["sec"].save(p)
    assert (p.stat().st_mode & 0o777) == 0o600
    assert type(setup["sec"]).load(p).entry_ids == setup["sec"].entry_ids


# --- matching ---------------------------------------------------------------------------------

def test_known_hash_opens_and_unknown_does_not(setup):
    c, s = _client(setup), _server(setup)
    known = c.voucher_for_hash(setup["known"][0][1], synthetic=False)
    unknown = c.voucher_for_hash(_unrelated(setup), synthetic=False)
    assert s.ingest("a", known).status == "opened"
    assert s.ingest("a", unknown).status == "unopened"


def test_below_threshold_server_decrypts_nothing(setup):
    c, s = _client(setup), _server(setup)
    for _, hx in setup["known"][: T - 1]:
        s.ingest("a", c.voucher_for_hash(hx, synthetic=False))
    for _ in range(5):  # synthetic vouchers must not push the account over
        s.ingest("a", c.voucher_for_hash(_unrelated(setup), synthetic=True))
        s.ingest("a", c.voucher_for_hash(_unrelated(setup), synthetic=False))
    v = s.account_view("a")
    assert len(v["opened"]) == T - 1 + 5
    assert not v["recovered"] and v["account_key"] is None
    assert v["revealed"] == [] and v["report"] is None and v["synthetic"] == []


def test_at_threshold_server_decrypts_exactly_the_real_matches(setup):
    c, s = _client(setup), _server(setup)
    real = setup["known"][:T]
    ids = [bytes([i + 1]) * 16 for i in range(T)]
    for _ in range(3):
        s.ingest("a", c.voucher_for_hash(_unrelated(setup), synthetic=True))
    for i, (_, hx) in enumerate(real[:-1]):
        s.ingest("a", c.voucher_for_hash(hx, image_id=ids[i], synthetic=False))
        s.ingest("a", c.voucher_for_hash(_unrelated(setup), synthetic=False))
    assert not s.account_view("a")["recovered"]
    r = s.ingest("a", c.voucher_for_hash(real[-1][1], image_id=ids[-1], synthetic=False))
    assert r.threshold_crossed and r.report_raised
    v = s.account_view("a")
    assert {x["pdq"] for x in v["revealed"]} == {hx for _, hx in real}
    assert {x["image_id"] for x in v["revealed"]} == {i.hex() for i in ids}
    assert len(v["synthetic"]) == 3
    assert v["report"]["verified_matches"] == T
    assert {it["entry_id"] for it in v["report"]["items"]} == {e for e, _ in real}
    # after the threshold, a later match is revealed at once; a non-match still is not
    s.ingest("a", c.voucher_for_hash(setup["known"][T][1], synthetic=False))
    s.ingest("a", c.voucher_for_hash(_unrelated(setup), synthetic=False))
    v = s.account_view("a")
    assert len(v["revealed"]) == T + 1 and v["unopened"] == T - 1 + 1


def test_key_collisions_beyond_pdq_distance_are_never_reported(setup):
    """Hashes sharing one match key with a listed hash but > 31 bits away open and, past the
    threshold, are decrypted, but the PDQ check stops them from becoming a report."""
    c, s = _client(setup), _server(setup)
    design = setup["pub"].params.key_design
    bits = hex_to_bits(setup["known"][0][1])
    outside = np.setdiff1d(np.arange(256), design.positions[0])
    rng = np.random.default_rng(9)
    for _ in range(T):
        b = bits.copy()
        b[rng.choice(outside, 40, replace=False)] ^= 1
        hx = bits_to_hex(b)
        assert hamming_hex(hx, setup["known"][0][1]) == 40
        assert s.ingest("a", c.voucher_for_hash(hx, synthetic=False)).status == "opened"
    v = s.account_view("a")
    assert v["recovered"] and len(v["revealed"]) == T
    assert all(r["list_matches"] == [] for r in v["revealed"]) and v["report"] is None


def test_accounts_do_not_combine(setup):
    s = _server(setup)
    c1, c2 = _client(setup), _client(setup)
    for _, hx in setup["known"][: T - 1]:
        s.ingest("a", c1.voucher_for_hash(hx, synthetic=False))
    # the same client's shares sent under another account are counted there, not here
    s.ingest("b", c1.voucher_for_hash(setup["known"][T][1], synthetic=False))
    s.ingest("a", c2.voucher_for_hash(setup["known"][T + 1][1], synthetic=False))
    assert not s.account_view("a")["recovered"]  # shares of two different account keys


def test_replayed_and_duplicated_vouchers_do_not_count_twice(setup):
    c, s = _client(setup), _server(setup)
    hx = setup["known"][0][1]
    v = c.voucher_for_hash(hx, synthetic=False)
    assert s.ingest("a", v).status == "opened"
    assert s.ingest("a", v).status == "replay"
    # the same device sends the same picture again: its voucher cannot match (client dedup)
    again = c.voucher_for_hash(hx, synthetic=False)
    assert again != v and s.ingest("a", again).status == "unopened"
    # a second device of the same account (same seed, fresh state): the server dedups the share
    params = setup["pub"].params
    for _ in range(T + 2):
        other_device = VoucherClient(setup["pub"], ClientState(c.state.seed), setup["sec"].sign_pk)
        assert s.ingest("a", other_device.voucher_for_hash(hx, synthetic=False)).status \
            == "duplicate_share"
        s.ingest("a", v)
    view = s.account_view("a")
    assert len(view["opened"]) == 1 and not view["recovered"] and params.threshold == T
    assert view["replays"] == T + 3 and view["duplicate_shares"] == T + 2


def test_malformed_voucher_is_counted_and_ignored(setup):
    c, s = _client(setup), _server(setup)
    v = c.voucher_for_hash(setup["known"][0][1], synthetic=False)
    assert s.ingest("a", v[:-1]).status == "malformed"
    bad = bytearray(v)
    bad[-3] ^= 1  # inner ciphertext: authentication fails, nothing opens
    assert s.ingest("a", bytes(bad)).status == "unopened"


# --- synthetic vouchers and what the server observes -------------------------------------------

def test_synthetic_vouchers_are_indistinguishable_in_format_and_size(setup):
    c, s = _client(setup), _server(setup)
    params = setup["pub"].params
    real = [c.voucher_for_hash(hx, synthetic=False) for _, hx in setup["known"][: T - 1]]
    syn = [c.voucher_for_hash(_unrelated(setup), synthetic=True) for _ in range(T - 1)]
    size = voucher_bytes(params)
    assert {len(v) for v in real + syn} == {size}
    for v in real + syn:
        p = parse(params, v)
        assert len(p.blocks) == params.key_design.keys_per_image
    for v in real:
        s.ingest("real", v)
    for v in syn:
        s.ingest("syn", v)
    a, b = s.account_view("real"), s.account_view("syn")
    assert a.keys() == b.keys() == set(OBSERVED_FIELDS)
    for ra, rb in zip(a["opened"], b["opened"], strict=True):
        assert {k: len(str(x)) for k, x in ra.items() if k != "keys_opened"} == {
            k: len(str(x)) for k, x in rb.items() if k != "keys_opened"}
        assert 1 <= rb["keys_opened"] <= params.key_design.tables
    # the detection step, run by the server itself, cannot separate them below the threshold
    for view in (a, b):
        vecs = [[int(h, 16) for h in r["vector"]] for r in view["opened"]]
        assert field.dependent_rows(vecs) == set()


def test_server_state_holds_no_image_data_below_threshold(setup):
    c, s = _client(setup), _server(setup)
    design = setup["pub"].params.key_design
    secrets_seen = []
    for i, (_, hx) in enumerate(setup["known"][: T - 1]):
        iid = bytes([0xA0 + i]) * 16
        s.ingest("a", c.voucher_for_hash(hx, image_id=iid, synthetic=False))
        secrets_seen += [hx, iid.hex()] + [k.hex() for k in design.server_keys(hx)]
    other = _unrelated(setup)
    s.ingest("a", c.voucher_for_hash(other, synthetic=False))
    secrets_seen.append(other)
    dump = str(s.state_dict())
    assert set(s.account_view("a")) == set(OBSERVED_FIELDS)
    for secret in secrets_seen:
        assert secret not in dump


def test_documented_observations_match_the_code():
    doc = (REPO / "docs" / "private-matching.md").read_text()
    for name in OBSERVED_FIELDS:
        assert f"`{name}`" in doc, name


def test_server_state_persists(setup, tmp_path):
    c = _client(setup)
    s = PsiServer(setup["pub"].params, setup["sec"], state_path=tmp_path / "st.json")
    v = c.voucher_for_hash(setup["known"][0][1], synthetic=False)
    s.ingest("a", v)
    s.save()
    assert ((tmp_path / "st.json").stat().st_mode & 0o777) == 0o600
    s2 = PsiServer(setup["pub"].params, setup["sec"], state_path=tmp_path / "st.json")
    assert s2.ingest("a", v).status == "replay"
    assert s2.account_view("a") == s.account_view("a") | {
        "vouchers_received": 2, "replays": 1}


def test_client_state_round_trips_and_rejects_low_threshold(setup, tmp_path):
    c = _client(setup)
    c.voucher_for_hash(setup["known"][0][1], synthetic=False)
    c.state.save(tmp_path / "c.json")
    assert ((tmp_path / "c.json").stat().st_mode & 0o777) == 0o600
    assert ClientState.load(tmp_path / "c.json") == c.state
    with pytest.raises(TableRejected):
        VoucherClient(setup["pub"], ClientState.new(), setup["sec"].sign_pk, min_threshold=T + 1)


def test_client_synthetic_budget_is_bounded(setup):
    c = _client(setup)
    n = 0
    for _ in range(400):
        before = c.state.synthetic_sent
        c._want_synthetic() and c.state.__setattr__("synthetic_sent", before + 1)
        n = c.state.synthetic_sent
    assert n <= c.synthetic_budget <= setup["pub"].params.synthetic_max


# --- images ---------------------------------------------------------------------------------

@pytest.mark.corpus
def test_matching_and_non_matching_images_end_to_end(corpus_dir):
    from PIL import Image

    from hashwatch.private.edits import apply_edit

    files = sorted((corpus_dir / "kodak24").glob("*.png"))[:8]
    ims = [Image.open(f).convert("RGB") for f in files]
    known = [(f.name, pdq_with_coeffs(np.asarray(im))[0])
             for f, im in zip(files, ims, strict=True)]
    pub, sec = build_table(known[:T + 1], threshold=T)
    c = VoucherClient(pub, ClientState.new(), sec.sign_pk)
    s = PsiServer(pub.params, sec)
    c.state.synthetic_sent = 10**6  # no synthetic substitution in this test
    for im in ims[T + 1 :]:  # not on the list
        assert s.ingest("u", c.voucher_for_pixels(np.asarray(im))).status == "unopened"
    edits = ["jpeg50", "gamma2", "blur2", "noise0.2", "jpeg75"]
    for im, e in zip(ims[: T + 1], edits, strict=True):  # edited copies of listed images
        r = s.ingest("u", c.voucher_for_pixels(np.asarray(apply_edit(e, im))))
        assert r.status == "opened", e
    v = s.account_view("u")
    assert v["recovered"] and v["report"]["verified_matches"] == T + 1
    assert all(it["distance"] <= 31 for it in v["report"]["items"])


# --- building blocks (hypothesis) ---------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_hex_bits_round_trip(raw):
    hx = raw.hex()
    bits = hex_to_bits(hx)
    assert bits_to_hex(bits) == hx
    # first vector element = most significant bit of the hex (hashwatch.signals.pdq convention)
    assert all(int(bits[k]) == (int(hx, 16) >> (255 - k)) & 1 for k in (0, 7, 8, 100, 255))


def test_hex_convention_matches_the_project_pdq_module():
    from hashwatch.private.demo import generated_images

    pdq = pytest.importorskip("hashwatch.signals.pdq")
    for im in generated_images(3, seed=5):
        px = np.asarray(im)
        hx, coeffs, quality = pdq_with_coeffs(px)
        assert (hx, quality) == pdq.pdq_hash(px)
        assert np.array_equal(hex_to_bits(hx), (coeffs > np.median(coeffs)).astype(np.uint8))


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.data())
def test_shamir_recovers_exactly_from_t_shares(t, data):
    coeffs = data.draw(st.lists(st.integers(0, field.P - 1), min_size=t, max_size=t))
    xs = data.draw(st.lists(st.integers(1, field.P - 1), min_size=t + 1, max_size=t + 1,
                            unique=True))
    pts = [(x, field.poly_eval(coeffs, x)) for x in xs]
    assert field.interpolate_at_zero(pts[:t]) == coeffs[0]
    assert field.interpolate_eval(pts[:t], xs[t]) == pts[t][1]


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 6), st.integers(0, 8), st.integers(0, 4), st.integers(0, 2**32))
def test_detection_finds_exactly_the_real_rows(t, n_syn, extra, seed):
    # uniformly random secrets, as the client draws them (not adversarially shrunk values)
    rnd = random.Random(seed)
    d = t + 10
    m = [[rnd.randrange(field.P) for _ in range(t - 1)] for _ in range(d)]
    n_real = t - 1 + extra
    real = [field.dhf_vector(m, rnd.randrange(1, field.P)) for _ in range(n_real)]
    syn = [[rnd.randrange(field.P) for _ in range(d)] for _ in range(n_syn)]
    rows = real + syn
    order = list(range(len(rows)))
    rnd.shuffle(order)
    found = field.dependent_rows([rows[i] for i in order])
    expect = {j for j, i in enumerate(order) if i < n_real} if n_real >= t else set()
    assert found == expect


def test_key_design_shares_keys_for_close_hashes_only():
    design = KeyDesign()
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, 256).astype(np.uint8)
    hx = bits_to_hex(bits)
    near = bits.copy()
    near[rng.choice(256, 2, replace=False)] ^= 1
    server = set(design.server_keys(hx))
    assert len(design.client_keys(near, None)) == design.keys_per_image
    assert server & set(design.client_keys(near, None))  # 2 flips: most tables unaffected
    far = rng.integers(0, 2, 256).astype(np.uint8)
    assert hamming_hex(hx, bits_to_hex(far)) > 64
    assert not server & set(design.client_keys(far, None))
    # probes recover a table whose sampled bits had a flip among the least reliable bits
    coeffs = rng.normal(0, 1, 256)
    b0 = (coeffs > np.median(coeffs)).astype(np.uint8)
    pos = design.positions[0]
    weakest = pos[np.argsort(np.abs(coeffs[pos] - np.median(coeffs)))[:2]]
    b1 = b0.copy()
    b1[weakest] ^= 1  # the listed copy differs in the edited image's two weakest bits
    k_list = design.server_keys(bits_to_hex(b1))[0]
    assert k_list in design.client_keys(b0, coeffs)
    assert k_list not in design.client_keys(b0, None)
