"""Private matching (threshold vouchers): protocol properties, each able to fail."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashwatch.private import field
from hashwatch.private.client import ClientState, VoucherClient
from hashwatch.private.keys import DEFAULT_DESIGN, bits_to_hex, hamming_hex, hex_to_bits
from hashwatch.private.publish import Publisher
from hashwatch.private.server import OBSERVED_FIELDS, PsiServer
from hashwatch.private.table import CHAIN_FILE, PublicTable, TableRejected, chunk_name
from hashwatch.private.views import View, client_views
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
    d = tmp_path_factory.mktemp("table")
    pub = Publisher.create(d, lambda: known + filler, design=DEFAULT_DESIGN, threshold=T,
                           sign_seed=b"s" * 32)
    return {"pub": pub, "table": pub.table(), "known": known, "dir": d, "rng": rng}


def _client(setup) -> VoucherClient:
    return VoucherClient(setup["table"], ClientState.new())


def _server(setup) -> PsiServer:
    return PsiServer.open(setup["dir"])


def _unrelated(setup) -> str:
    return _rand_hex(setup["rng"])


# --- table and commitment chain ---------------------------------------------------------------

def test_published_table_round_trips_and_verifies(setup):
    t = PublicTable.open(setup["dir"], setup["pub"].sign_pk)
    assert t.version == 0 and len(t.chunks) == 1
    assert bytes(t.chunks[0].cells) == bytes(setup["table"].chunks[0].cells)
    c = t.chunks[0]
    assert len(c.cells) == 32 * c.geometry.array_length
    assert c.geometry.n_keys == 312  # one key per entry: 12 known + 300 fillers


def _tamper(d, where):
    if where == "cell":
        p = d / chunk_name(0, 0)
        raw = bytearray(p.read_bytes())
        raw[-40] ^= 1
        p.write_bytes(bytes(raw))
    elif where == "params":
        p = next(d.glob("params-*.json"))
        p.write_text(p.read_text().replace('"threshold":4', '"threshold":3'))
    else:
        chain = json.loads((d / CHAIN_FILE).read_text())
        link = chain["links"][0]
        if where == "signature":
            link["signature"] = ("00" if link["signature"][:2] != "00" else "11") \
                + link["signature"][2:]
        else:  # the link itself: the stated head no longer matches, nor the signature
            link["link"]["entries"] += 1
        (d / CHAIN_FILE).write_text(json.dumps(chain))


@pytest.mark.parametrize("where", ["cell", "params", "signature", "link"])
def test_tampered_chunk_params_or_chain_is_rejected(setup, tmp_path, where):
    d = tmp_path / "copy"
    shutil.copytree(setup["dir"], d, ignore=shutil.ignore_patterns("secret"))
    PublicTable.open(d, setup["pub"].sign_pk)  # the copy verifies
    _tamper(d, where)
    with pytest.raises(TableRejected):
        PublicTable.open(d, setup["pub"].sign_pk)


def test_table_signed_by_another_key_is_rejected(setup):
    other_pk = bytes.fromhex("11" * 32)
    with pytest.raises(TableRejected):
        PublicTable.open(setup["dir"], other_pk)
    with pytest.raises(TableRejected):
        VoucherClient(setup["table"], ClientState.new(), other_pk)


def test_server_secret_files_are_owner_only(setup):
    secret = setup["dir"] / "secret"
    assert (secret.stat().st_mode & 0o777) == 0o700
    files = list(secret.iterdir())
    assert {f.name for f in files} >= {"signing.json", "epoch-0000.json", "list.npz"}
    assert all((f.stat().st_mode & 0o777) == 0o600 for f in files)
    entries = setup["pub"].entries()
    assert list(entries["ids"][:12]) == [e for e, _ in setup["known"]]


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
    design = setup["table"].params.key_design
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
    params = setup["table"].params
    for _ in range(T + 2):
        other_device = VoucherClient(setup["table"], ClientState(c.state.seed))
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
    params = setup["table"].params
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
        assert 1 <= rb["keys_opened"] <= len(params.synthetic_open)
    # the detection step, run by the server itself, cannot separate them below the threshold
    for view in (a, b):
        vecs = [[int(h, 16) for h in r["vector"]] for r in view["opened"]]
        assert field.dependent_rows(vecs) == set()


def test_server_state_holds_no_image_data_below_threshold(setup):
    c, s = _client(setup), _server(setup)
    design = setup["table"].params.key_design
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
    s = PsiServer.open(setup["dir"], state_path=tmp_path / "st.json")
    v = c.voucher_for_hash(setup["known"][0][1], synthetic=False)
    s.ingest("a", v)
    s.save()
    assert ((tmp_path / "st.json").stat().st_mode & 0o777) == 0o600
    s2 = PsiServer.open(setup["dir"], state_path=tmp_path / "st.json")
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
        VoucherClient(setup["table"], ClientState.new(), min_threshold=T + 1)


def test_client_synthetic_budget_is_bounded(setup):
    c = _client(setup)
    n = 0
    for _ in range(400):
        before = c.state.synthetic_sent
        c._want_synthetic() and c.state.__setattr__("synthetic_sent", before + 1)
        n = c.state.synthetic_sent
    assert n <= c.synthetic_budget <= setup["table"].params.synthetic_max


# --- images ---------------------------------------------------------------------------------

@pytest.mark.corpus
def test_edited_mirrored_and_bordered_copies_open_unlisted_pictures_do_not(corpus_dir, tmp_path):
    from PIL import Image

    from hashwatch import edits as suite

    files = sorted((corpus_dir / "kodak24").glob("*.png"))[:10]
    ims = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    known = [(f.name, client_views(im)[0].pdq.hex()) for f, im in zip(files, ims, strict=True)]
    pub = Publisher.create(tmp_path / "t", lambda: known[:T + 2], design=DEFAULT_DESIGN,
                           threshold=T)
    c = VoucherClient(pub.table(), ClientState.new())
    s = PsiServer.open(tmp_path / "t")
    c.state.synthetic_sent = 10**6  # no synthetic substitution in this test
    for im in ims[T + 2 :]:  # not on the list
        assert s.ingest("u", c.voucher_for_pixels(im)).status == "unopened"
    # edited copies of listed images: mirrored and turned copies open like re-encoded ones;
    # bordered ones open through the trimmed view (not every one: see BENCHMARKS for rates)
    edits = ["mirror", "border-white10", "rot90", "jpeg50", "letterbox16:9", "pad0.2"]
    opened = [s.ingest("u", c.voucher_for_pixels(suite.apply_edit(e, im))).status == "opened"
              for im, e in zip(ims[: T + 2], edits, strict=True)]
    assert opened[0] and opened[2] and opened[3] and sum(opened) >= T, opened
    v = s.account_view("u")
    assert v["recovered"] and v["report"]["verified_matches"] == sum(opened)
    items = v["report"]["items"]
    assert all(it["distance"] <= 31 for it in items)
    views = {it["view"] for it in items}
    assert "full:fliph" in views and any(x.startswith("trim") for x in views), views


# --- building blocks (hypothesis) ---------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_hex_bits_round_trip(raw):
    hx = raw.hex()
    bits = hex_to_bits(hx)
    assert bits_to_hex(bits) == hx
    # first vector element = most significant bit of the hex (hashwatch.signals.pdq convention)
    assert all(int(bits[k]) == (int(hx, 16) >> (255 - k)) & 1 for k in (0, 7, 8, 100, 255))


def test_views_reproduce_the_reference_pdq_of_flipped_and_trimmed_pictures():
    import pdqhash

    from hashwatch.private.demo import generated_images

    for im in generated_images(3, seed=5):
        px = np.asarray(im)
        views = {v.name: v for v in client_views(px)}
        ref, q = pdqhash.compute(px)
        assert hamming_hex(views["full"].pdq.hex(), bits_to_hex(ref)) <= 4
        for name, tf in [("full:fliph", px[:, ::-1]), ("full:flipv", px[::-1]),
                         ("full:rot180", px[::-1, ::-1]), ("full:rot90", np.rot90(px))]:
            # the view of the picture is the hash of the transformed picture
            r, _ = pdqhash.compute(np.ascontiguousarray(tf))
            assert hamming_hex(views[name].pdq.hex(), bits_to_hex(r)) <= 4, name
        assert not any(n.startswith("trim") for n in views)  # no border: no trim view
        framed = np.pad(px, ((30, 30), (40, 40), (0, 0)), constant_values=255)
        fviews = {v.name: v for v in client_views(framed)}
        # the trimmed view is a near copy of the picture; the full view of the framed
        # picture is not (PDQ alone does not survive borders)
        trim_d = hamming_hex(fviews["trim"].pdq.hex(), bits_to_hex(ref))
        assert trim_d <= 20 < hamming_hex(fviews["full"].pdq.hex(), bits_to_hex(ref))
        assert np.array_equal(hex_to_bits(views["full"].pdq.hex()), views["full"].bits)


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


def _view(coeffs: np.ndarray, name: str = "full") -> View:
    return View(name, np.asarray(coeffs, dtype=np.float64), 100)


def test_key_design_shares_keys_for_close_hashes_only():
    design = DEFAULT_DESIGN
    rng = np.random.default_rng(3)
    coeffs = rng.normal(0, 1, 256)
    v = _view(coeffs)
    hx = v.pdq.hex()
    keys = design.client_keys([v])
    assert len(keys) == len(set(keys)) == design.keys_per_image
    server = set(design.server_keys(hx))
    assert server <= set(keys)  # the picture's own key comes first
    # an entry differing in the two least reliable sampled bits is found by a probe
    pos = np.array(design.positions[0])
    rel = v.reliability[pos] / np.array(design.sigma)[pos]
    weakest = pos[np.argsort(rel)[:2]]
    near = v.bits.copy()
    near[weakest] ^= 1
    assert set(design.server_keys(bits_to_hex(near))) <= set(keys)
    # ... but not one differing in the two most reliable ones, nor an unrelated hash
    strongest = pos[np.argsort(rel)[-2:]]
    far_bits = v.bits.copy()
    far_bits[strongest] ^= 1
    assert not set(design.server_keys(bits_to_hex(far_bits))) & set(keys)
    other = rng.integers(0, 2, 256).astype(np.uint8)
    assert hamming_hex(hx, bits_to_hex(other)) > 64
    assert not set(design.server_keys(bits_to_hex(other))) & set(keys)


def test_every_view_gets_its_reserved_keys_and_the_order_follows_the_scores():
    design = DEFAULT_DESIGN
    rng = np.random.default_rng(4)
    base = rng.normal(0, 1, 256)
    views = [_view(base)] + [_view(rng.normal(0, 1, 256), f"full{s}")
                             for s in (":rot90", ":fliph")] + [_view(rng.normal(0, 1, 256),
                                                                    "trim")]
    cands = design.candidates(views)
    assert len(cands) == design.keys_per_image
    for v in views:  # each view's own key (no flipped bit) is among the keys
        own = design.server_keys(v.pdq.hex())[0]
        assert any(c[3] == own and c[1] == v.name and c[4] == 0 for c in cands)
    reserved = sum(design.view_reserve[i] for i in (0, 1, 1, 2))
    shared = [c[0] + dict(zip(("full", "dihedral", "trim", "trim-dihedral"),
                              design.view_offset, strict=True))[
        "full" if c[1] == "full" else "trim" if c[1] == "trim" else "dihedral"]
        for c in cands[reserved:]]
    assert shared == sorted(shared)
    assert design.client_keys([]) != design.client_keys([])  # no views: random, same count
    assert len(design.client_keys([])) == design.keys_per_image


# --- the check after the threshold -----------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.lists(st.integers(0, 60), max_size=12))
def test_index_verifier_finds_exactly_what_the_scan_finds(seed, n, dists):
    """The server's PDQ check through hashwatch.index answers exactly as reading every entry:
    views planted at distances around 31 from list entries, plus unrelated ones."""
    from hashwatch.private.server import ListSecret, brute_force_verifier, index_verifier

    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    hashes[n // 2 :] = hashes[0]  # duplicates and near-duplicates of one entry
    for i in range(n // 2, n):
        bits = np.unpackbits(hashes[i])
        bits[rng.choice(256, int(rng.integers(0, 20)), replace=False)] ^= 1
        hashes[i] = np.packbits(bits)
    lst = ListSecret(hashes, np.array([f"e{i}" for i in range(n)]))
    views = []
    for j, d in enumerate(dists):
        bits = np.unpackbits(hashes[int(rng.integers(0, n))])
        bits[rng.choice(256, d, replace=False)] ^= 1
        views.append((f"v{j}", np.packbits(bits).tobytes().hex()))
    views.append(("far", rng.bytes(32).hex()))
    assert index_verifier(lst)(views) == brute_force_verifier(lst)(views)


def test_every_key_opens_the_base_and_the_best_ranked_open_the_delta(tmp_path):
    """Each key block opens against the base; only the first ``delta_openings`` keys also
    open against a live delta (the device's CPU bound). Keys placed at chosen ranks."""
    rng = np.random.default_rng(11)
    base, new = _rand_hex(rng), _rand_hex(rng)
    pub = Publisher.create(tmp_path / "t", lambda: [("b", base)] + [
        (f"f{i}", _rand_hex(rng)) for i in range(50)], design=DEFAULT_DESIGN, threshold=T,
        delta_openings=4)
    pub.add_delta([("d", new)])
    table = pub.table()
    assert len(table.chunks) == 2
    (bkey,), (dkey,) = DEFAULT_DESIGN.server_keys(base), DEFAULT_DESIGN.server_keys(new)
    k = DEFAULT_DESIGN.keys_per_image
    payload = bytes(16 + 2 + 16 * 32)
    for key, rank, opens in ((dkey, 0, True), (dkey, 3, True), (dkey, 4, False),
                             (dkey, k - 1, False), (bkey, k - 1, True), (bkey, 0, True)):
        keys = [rng.bytes(16) for _ in range(k)]
        keys[rank] = key
        client = VoucherClient(table, ClientState.new())
        v = client._real(keys, rng.bytes(32), payload)
        assert len(v) == voucher_bytes(table.params)
        status = PsiServer.open(tmp_path / "t").ingest("a", v).status
        assert status == ("opened" if opens else "unopened"), (rank, opens)
