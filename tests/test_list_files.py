"""List files as partner tools write them: a property test over encodings, delimiters,
header spellings, line endings, quoting and trailing columns, for every format.

Each example draws a list of known images (each with some of MD5, SHA-1, SHA-256, PDQ and
PhotoDNA, a category and a reference), writes it the way some tool might (the writers here
are the test's own, independent of hashwatch's), imports it into a fresh list and checks
that the list holds exactly what was written: every hash, category and reference, and
nothing else.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import itertools
import json
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashwatch.lists import import_stream
from hashwatch.store import Store

SIGNALS = ("md5", "sha1", "sha256", "pdq", "photodna")
_BYTES = {"md5": 16, "sha1": 20, "sha256": 32, "pdq": 32, "photodna": 144}

# header spellings seen in partner exports, per canonical column
ICSE_NAMES = {
    "imageid": ["ImageID", "Image ID", "ID", "image_id", "Media ID"],
    "md5": ["MD5", "MD5 Hash", "md5", "Hash MD5", "MD5Sum"],
    "sha1": ["SHA1", "SHA-1", "SHA1 Hash", "sha1"],
    "sha256": ["SHA256", "SHA-256", "SHA256 Hash"],
    "pdq": ["PDQ", "PDQ Hash", "pdq"],
    "photodna": ["PhotoDNA", "PhotoDNA Hash", "photodna"],
    "category": ["Category", "category", "Category ID"],
}
CSV_NAMES = {
    "signal_type": ["signal_type", "Signal Type", "Hash Type", "signal"],
    "value": ["value", "Hash Value", "Hash", "VALUE"],
    "category": ["category", "Category"],
    "labels": ["labels", "Labels", "Tags"],
    "source_ref": ["source_ref", "Source Ref", "ref", "Reference"],
}
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252")
NEWLINES = ("\n", "\r\n")
DELIMITERS = (",", ";", "\t")
EXTRA_COLUMNS = ("Is distributed", "Media Type", "Notes")


@dataclass(frozen=True)
class Known:
    ref: str
    hashes: tuple[tuple[str, str], ...]  # (signal type, canonical value)
    category: str | None  # "scheme:code" canonical
    labels: tuple[str, ...]


def _value(signal: str, seed: int, i: int) -> str:
    raw = hashlib.shake_256(f"{signal}-{seed}-{i}".encode()).digest(_BYTES[signal])
    return raw.hex()


categories = st.one_of(
    st.none(),
    st.sampled_from(["uk:A", "uk:B", "uk:C", "vics:0", "vics:1", "vics:2", "vics:3", "vics:4",
                     "ncmec:A1", "ncmec:B2"]),
    st.builds(lambda s, c: f"{s}:{c}", st.sampled_from(["icse", "de-bka", "partnerx"]),
              st.text("ABCXYZ0123456789", min_size=1, max_size=4)),
)
# references: letters from several scripts, punctuation that needs quoting; no controls
ref_text = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 _-.,;'\"()éßøДжあ漢")),
    min_size=1, max_size=24,
).map(str.strip).filter(bool)
label_text = st.text(alphabet="abcdefXYZ0123 -", min_size=1, max_size=10).map(
    str.strip).filter(bool)


@st.composite
def known_lists(draw: st.DrawFn, *, cp1252: bool = False) -> list[Known]:
    seed = draw(st.integers(0, 2**32))
    n = draw(st.integers(1, 12))
    refs = draw(st.lists(ref_text, min_size=n, max_size=n, unique=True))
    out = []
    for i, ref in enumerate(refs):
        if cp1252:  # a Windows-1252 file cannot carry every script
            ref = ref.encode("cp1252", "replace").decode("cp1252").replace("?", "q")
        sigs = draw(st.lists(st.sampled_from(SIGNALS), min_size=1, max_size=5, unique=True))
        hashes = tuple((s, _value(s, seed, i)) for s in sorted(sigs))
        labels = tuple(draw(st.lists(label_text, max_size=3, unique=True)))
        out.append(Known(ref, hashes, draw(categories), labels))
    return out


def _spell(signal: str, value: str, upper: bool, photodna_b64: bool) -> str:
    if signal == "photodna" and photodna_b64:
        return base64.b64encode(bytes.fromhex(value)).decode()
    return value.upper() if upper else value


def _encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding)


# -- writers: the way other tools write these files -----------------------------------
def write_icse(known: list[Known], d: st.DataObject, enc: str) -> tuple[bytes, set]:
    cols = ["imageid", *SIGNALS, "category"]
    order = d.draw(st.permutations(cols))
    names = {c: d.draw(st.sampled_from(ICSE_NAMES[c])) for c in cols}
    extras = d.draw(st.lists(st.sampled_from(EXTRA_COLUMNS), max_size=2, unique=True))
    delim = d.draw(st.sampled_from(DELIMITERS))
    nl = d.draw(st.sampled_from(NEWLINES))
    quoting = d.draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    trailing = d.draw(st.integers(0, 2))  # empty columns after the last one
    upper = d.draw(st.booleans())
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delim, lineterminator=nl, quoting=quoting)
    w.writerow([names[c] for c in order] + list(extras) + [""] * trailing)
    expect = set()
    for k in known:
        cells = dict(k.hashes)
        row = []
        for c in order:
            if c == "imageid":
                row.append(k.ref)
            elif c == "category":
                row.append(k.category or "")
            else:
                row.append(_spell(c, cells[c], upper, False) if c in cells else "")
        w.writerow(row + ["Y"] * len(extras) + [""] * trailing)
        for sig, value in k.hashes:
            expect.add((sig, value, k.category, (), k.ref, k.ref))
    return _encode(buf.getvalue(), enc), expect


def write_csv(known: list[Known], d: st.DataObject, enc: str) -> tuple[bytes, set]:
    cols = ["signal_type", "value", "category", "labels", "source_ref"]
    order = d.draw(st.permutations(cols))
    names = {c: d.draw(st.sampled_from(CSV_NAMES[c])) for c in cols}
    delim = d.draw(st.sampled_from(DELIMITERS))
    nl = d.draw(st.sampled_from(NEWLINES))
    quoting = d.draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    upper = d.draw(st.booleans())
    b64 = d.draw(st.booleans())
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delim, lineterminator=nl, quoting=quoting)
    w.writerow([names[c] for c in order])
    expect = set()
    for k in known:
        for sig, value in k.hashes:
            rec = {"signal_type": sig.upper() if upper else sig,
                   "value": _spell(sig, value, upper, b64), "category": k.category or "",
                   "labels": ";".join(k.labels), "source_ref": k.ref}
            w.writerow([rec[c] for c in order])
            # long form: no group unless the file gives one
            expect.add((sig, value, k.category, k.labels, k.ref, ""))
    return _encode(buf.getvalue(), enc), expect


def write_hashlines(known: list[Known], d: st.DataObject, enc: str) -> tuple[bytes, set]:
    nl = d.draw(st.sampled_from(NEWLINES))
    style = d.draw(st.sampled_from(["signal:value", "value  name", "value *name", "tagged"]))
    tag = {"md5": "MD5", "sha1": "SHA1", "sha256": d.draw(st.sampled_from(["SHA256",
                                                                           "SHA2-256"]))}
    lines = ["# exported by a partner tool", ""]
    expect = set()
    for k in known:
        for sig, value in k.hashes:
            if style == "tagged" and sig in tag:  # BSD tagged: md5 (macOS), shasum --tag
                lines.append(f"{tag[sig]} ({k.ref}) = {value}")
                expect.add((sig, value, None, (), k.ref, ""))
            elif style in ("signal:value", "tagged") or sig not in ("md5", "sha1"):
                lines.append(f"{sig}:{value}")
                expect.add((sig, value, None, (), "", ""))
            else:  # checksum-tool lines: md5sum / sha1sum
                ref = k.ref
                lines.append(f"{value}  {ref}" if style == "value  name" else f"{value} *{ref}")
                expect.add((sig, value, None, (), ref, ""))
    return _encode(nl.join(lines) + nl, enc), expect


def write_vics(known: list[Known], d: st.DataObject, enc: str) -> tuple[bytes, set]:
    layout = d.draw(st.sampled_from(["1.x", "2.0"]))
    media = []
    expect = set()
    for i, k in enumerate(known, start=1):
        rec: dict = {"MediaID": i, "MediaFiles": [{"FileName": k.ref}]}
        cat = k.category
        if cat and cat.startswith("vics:"):
            rec["Category"] = int(cat.split(":")[1])
        elif cat:
            rec["Tags"] = [cat]
        alts = []
        for sig, value in k.hashes:
            if sig in ("md5", "sha1", "sha256"):
                rec[sig.upper()] = value.upper()
            elif sig == "pdq":
                alts.append({"HashName": "PDQ", "HashValue": value})
            else:
                alts.append({"HashName": "PhotoDNA", "HashValue": _spell(sig, value, False, True)})
        if alts:
            rec["AlternativeHashes"] = alts
        media.append(rec)
        vals = dict(k.hashes)
        group = vals.get("md5") or vals.get("sha1") or str(i)
        for sig, value in k.hashes:
            expect.add((sig, value, cat, (), k.ref, group))
    if layout == "1.x":
        doc = {"odata.metadata": "http://github.com/ICMEC/ProjectVic/DataModels/1.2.xml/X",
               "value": [{"CaseID": "1", "Media": media}]}
    else:
        doc = {"@odata.context": "x", "value": media}
    return _encode(json.dumps(doc, ensure_ascii=False, indent=1), enc), expect


WRITERS = {"icse": write_icse, "csv": write_csv, "hashlines": write_hashlines,
           "vics": write_vics}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store.open(tmp_path_factory.mktemp("lists") / "hw.db")
    yield s
    s.close()


_names = itertools.count()


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(d=st.data())
def test_import_gives_back_exactly_the_list(store: Store, fmt: str, d: st.DataObject) -> None:
    # JSON is Unicode only; the delimited formats also come in Windows-1252
    enc = d.draw(st.sampled_from(ENCODINGS[:4] if fmt == "vics" else ENCODINGS))
    known = d.draw(known_lists(cp1252=enc == "cp1252"))
    data, expect = WRITERS[fmt](known, d, enc)
    name = f"{fmt}-{next(_names)}"
    store.create_list(name)
    res = import_stream(store, name, io.BytesIO(data), fmt)
    assert res.bad_rows == 0, [str(e) for e in res.errors]
    got = {(e.signal_type, e.value, str(e.category) if e.category else None, e.labels,
            e.source_ref, e.group_ref) for e in store.iter_entries(list_name=name)}
    assert got == expect
    assert res.added == len(expect)
    if any(s == "photodna" for s, *_ in expect):
        assert "photodna" in res.not_matchable()


def test_a_bad_cell_never_drops_the_row(store: Store) -> None:
    """A malformed or unknown hash in a row is reported with its line; the row's other
    hashes are imported (ICSE, csv wide form and VICS)."""
    md5, sha1 = "a" * 32, "b" * 40
    icse = f"Image ID;MD5 Hash;SHA-1;PhotoDNA\r\nIMG-1;{md5};{sha1};not-a-photodna\r\n"
    store.create_list("bad-icse")
    res = import_stream(store, "bad-icse", io.BytesIO(icse.encode("utf-16")), "icse")
    assert res.added == 2 and res.bad_rows == 1 and "line 2" in str(res.errors[0])
    wide = f"md5,sha1,photodna\n{md5},{sha1},{'ab' * 100}\n"
    store.create_list("bad-wide")
    res = import_stream(store, "bad-wide", io.BytesIO(wide.encode()), "csv")
    assert res.added == 2 and res.bad_rows == 1 and "photodna" in str(res.errors[0])
    vics = {"value": [{"MediaID": 1, "MD5": md5, "AlternativeHashes": [
        {"HashName": "ImageSignature", "HashValue": "xyz"},
        {"HashName": "PDQ", "HashValue": "c" * 64}]}]}
    store.create_list("bad-vics")
    res = import_stream(store, "bad-vics", io.BytesIO(json.dumps(vics).encode()), "vics")
    assert res.added == 2 and res.bad_rows == 1 and "record 1" in str(res.errors[0])


def test_report_per_signal_type(store: Store) -> None:
    pdna = bytes(range(144)).hex()
    rows = "".join(f"IMG-{i},{hashlib.md5(bytes([i])).hexdigest()},{pdna if i < 2 else ''}\n"
                   for i in range(3))
    store.create_list("report")
    data = ("ImageID,MD5,PhotoDNA\n" + rows).encode()
    first = import_stream(store, "report", io.BytesIO(data), "icse")
    again = import_stream(store, "report", io.BytesIO(data + b"IMG-9,zz,\n"), "icse")
    assert first.as_dict()["by_signal"] == {
        "md5": {"added": 3, "duplicates": 0, "restored": 0, "matchable": True},
        # the same PhotoDNA value twice is one entry (an entry is a hash, not a row)
        "photodna": {"added": 1, "duplicates": 1, "restored": 0, "matchable": False},
    }
    assert first.not_matchable() == {"photodna": 2}
    assert again.added == 0 and again.by_signal["md5"].duplicates == 3
    assert again.bad_rows == 1 and again.errors[0].line == 5


# -- the handed cases' kinds, through the CLI and the service -----------------------------
def _benign(i: int) -> tuple[str, str, str]:
    b = f"benign-{i}".encode()
    return hashlib.md5(b).hexdigest(), hashlib.sha1(b).hexdigest(), hashlib.sha256(b).hexdigest()


def partner_files() -> dict[str, tuple[str, bytes, int]]:
    """name -> (format, file bytes, entries expected): files shaped like the cases in
    ../shared/cases (an ICSE export with ';' and 'Image ID'; ICSE and VICS records carrying
    PhotoDNA beside MD5/SHA-1/PDQ), written here so CI needs nothing but the repository."""
    rows = [_benign(i) for i in (1, 2)]
    semi = "MD5;SHA1;Image ID;Is distributed;Media Type;Baseline\n" + "".join(
        f"{m};{s};IMG-{i};Y;Image;Yes\n" for i, (m, s, _p) in enumerate(rows, 1))
    pdna_hex = bytes((7 * i) % 256 for i in range(144)).hex().upper()
    icse = "ImageID,MD5,SHA1,SHA256,PDQ,PhotoDNA,Category\n" + "".join(
        f"IMG-{i},{m},{s},,{p},{pdna_hex},1\n" for i, (m, s, p) in enumerate(rows, 1))
    wide = "md5,sha1,pdq,photodna\n" + "".join(
        f"{m},{s},{p},{pdna_hex}\n" for m, s, p in rows)
    pdna_b64 = base64.b64encode(bytes(range(144))).decode()
    media = [{"MediaID": i, "Category": 1, "MD5": m.upper(), "SHA1": s.upper(),
              "AlternativeHashes": [
                  {"HashName": "PhotoDNA", "HashValue": pdna_b64},
                  {"HashName": "PDQ", "HashValue": p}],
              "MediaFiles": [{"FileName": f"file{i}.jpg"}]} for i, (m, s, p) in enumerate(rows, 1)]
    vics = {"odata.metadata": "http://github.com/ICMEC/ProjectVic/DataModels/1.2.xml/X#Cases",
            "value": [{"CaseID": "1", "CaseNumber": "TEST", "Media": media}]}
    # MD5 + SHA-1 (+ PDQ) of two rows, plus the one distinct PhotoDNA value where present
    return {"icse-semicolon": ("icse", semi.encode("utf-8-sig"), 4),
            "icse-photodna": ("icse", icse.encode("utf-16"), 7),
            "csv-wide-photodna": ("csv", wide.encode(), 7),
            "vics-photodna": ("vics", json.dumps(vics, indent=1).encode(), 7)}


@pytest.mark.parametrize("case", sorted(partner_files()))
def test_partner_files_through_the_cli(case: str, tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from hashwatch.cli import app

    fmt, data, n = partner_files()[case]
    f = tmp_path / f"list.{fmt}"
    f.write_bytes(data)
    db = str(tmp_path / "hw.db")
    res = CliRunner().invoke(app, ["lists", "import", "L", str(f), "--format", fmt, "--create",
                                   "--db", db])
    assert res.exit_code == 0, res.output
    assert f"{n} added" in res.output and "0 bad rows" in res.output
    if "photodna" in case:
        assert "not matchable here" in res.output
    with Store.open(db) as s:
        sigs = {e.signal_type for e in s.iter_entries(list_name="L")}
    assert {"md5", "sha1"} <= sigs and ("photodna" in sigs) == ("photodna" in case)


def test_partner_files_through_the_service(tmp_path) -> None:  # noqa: ANN001
    from test_service import Svc

    svc = Svc(str(tmp_path / "hw.db"))
    try:
        c, h = svc.client, svc.h()
        for case, (fmt, data, n) in sorted(partner_files().items()):
            assert c.post("/v1/lists", json={"name": case}, headers=h).status_code == 201
            r = c.post(f"/v1/lists/{case}/import?format={fmt}", content=data, headers=h)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["added"] == n and body["errors"] == 0, (case, body)
            assert ("photodna" in body["by_signal"]) == ("photodna" in case)
            if "photodna" in case:
                assert body["by_signal"]["photodna"]["matchable"] is False
        # the MD5 imported beside a PhotoDNA value matches
        md5 = _benign(1)[0]
        r = c.post("/v1/match/hashes", headers=h,
                   json={"hashes": [{"signal_type": "md5", "value": md5}], "notify": False})
        assert {m["list"] for m in r.json()["results"][0]["matches"]} == set(partner_files())
    finally:
        svc.close()


@pytest.mark.parametrize(("data", "want"), [
    ("a,b\r\nß\r\n".encode("cp1252"), "cp1252"),  # a Windows-1252 byte at the very end
    ("a,bß".encode()[:-1], "cp1252"),  # the whole file: a cut character is no UTF-8
    ("ImageID;MD5\r\n".encode("utf-16-le"), "utf-16-le"),
    ("ImageID;MD5\r\n".encode("utf-16-be"), "utf-16-be"),
    ("ImageID;MD5\r\n".encode("utf-16"), "utf-16"),
    ("ImageID;MD5\r\n".encode("utf-8-sig"), "utf-8-sig"),
    ("Größe,MD5\n".encode(), "utf-8"),
])
def test_detect_encoding_of_whole_files(data: bytes, want: str) -> None:
    from hashwatch.formats._text import detect_encoding

    assert detect_encoding(data, whole=True) == want


def test_a_character_cut_by_the_sample_is_still_utf8() -> None:
    from hashwatch.formats._text import detect_encoding

    assert detect_encoding(b"x" * 10 + "ß".encode()[:1]) == "utf-8"


@pytest.mark.parametrize(("fmt", "data", "why"), [
    ("vics", b"{not json at all", "not valid VICS JSON"),
    ("icse", b"Name;Size;Date\nfoo;1;2\n", "no hash column"),
    ("csv", b"", "empty"),
])
def test_import_create_refused_file_makes_no_list(fmt: str, data: bytes, why: str,
                                                  tmp_path) -> None:  # noqa: ANN001
    """A file refused as a whole must not leave an empty list behind (a re-run with the
    right file would otherwise import into a list made from the wrong one's name)."""
    from typer.testing import CliRunner

    from hashwatch.cli import app

    f = tmp_path / "list.bin"
    f.write_bytes(data)
    db = str(tmp_path / "hw.db")
    with Store.open(db) as s:
        s.create_list("other")
    res = CliRunner().invoke(app, ["lists", "import", "L", str(f), "--format", fmt, "--create",
                                   "--db", db])
    assert res.exit_code != 0 and why in res.output, res.output
    with Store.open(db) as s:
        assert [i.name for i in s.lists(include_deleted=True)] == ["other"]


def test_import_create_needs_a_good_row(tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from hashwatch.cli import app

    f = tmp_path / "list.txt"
    f.write_text("not-a-hash\nalso bad\n")
    db = str(tmp_path / "hw.db")
    runner = CliRunner()
    res = runner.invoke(app, ["lists", "import", "L", str(f), "--format", "hashlines",
                              "--signal", "pdq", "--create", "--db", db])
    assert res.exit_code == 1 and "was not created" in res.output, res.output
    with Store.open(db) as s:
        assert s.lists(include_deleted=True) == []
    # the same file into an existing list: reported, list kept, exit 1
    with Store.open(db) as s:
        s.create_list("L")
    res = runner.invoke(app, ["lists", "import", "L", str(f), "--format", "hashlines",
                              "--signal", "pdq", "--create", "--db", db])
    assert res.exit_code == 1 and "2 bad rows" in res.output, res.output
    good = tmp_path / "good.txt"
    good.write_text("f" * 64 + "\nbad\n")
    res = runner.invoke(app, ["lists", "import", "M", str(good), "--format", "hashlines",
                              "--signal", "pdq", "--create", "--db", db])
    assert res.exit_code == 0 and "1 added" in res.output, res.output
    with Store.open(db) as s:
        assert s.get_list("M").entry_count == 1 and s.get_list("M").source == "good.txt"
