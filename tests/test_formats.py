"""Import/export formats: streaming, bad rows with line numbers, round trips."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashwatch.categories import Category
from hashwatch.formats import FormatError, RowError, reader, writer
from hashwatch.store import EntryIn, Store

hexs = st.text(alphabet="0123456789abcdef", min_size=1, max_size=1)


def _hex(n: int):
    return st.text(alphabet="0123456789abcdef", min_size=n, max_size=n)


def split(items):
    good = [i for i in items if not isinstance(i, RowError)]
    bad = [i for i in items if isinstance(i, RowError)]
    return good, bad


def test_hashlines_guesses_and_reports_bad_lines():
    text = (
        "# comment\n"
        + "A" * 32
        + "\n\n"
        + "b" * 40
        + "\nnot-a-hash\n"
        + "c" * 64
        + "\npdq:"
        + "d" * 64
        + "\n"
    )
    good, bad = split(list(reader("hashlines")(io.StringIO(text))))
    assert [(e.signal_type, e.value) for e in good] == [
        ("md5", "a" * 32),
        ("sha1", "b" * 40),
        ("pdq", "d" * 64),
    ]
    assert [b.line for b in bad] == [5, 6]
    assert "sha256 or pdq" in bad[1].message


def test_hashlines_with_signal_and_invalid_value():
    text = "e" * 64 + "\n" + "e" * 63 + "\n" + "g" * 64 + "\n"
    good, bad = split(list(reader("hashlines")(io.StringIO(text), signal="pdq")))
    assert len(good) == 1 and [b.line for b in bad] == [2, 3]
    assert "64 hex characters" in bad[0].message and "non-hex" in bad[1].message


def test_csv_long_and_wide_forms():
    long_csv = (
        "signal_type,value,category,labels,source_ref\n"
        f"md5,{'a' * 32},uk:A,x;y,img1.jpg\n"
        f"pdq,{'b' * 64},vics:9,,img2.jpg\n"  # vics has no code 9
        f"sha1,{'c' * 40},,,\n"
        "pdq,zz,,,\n"
    )
    good, bad = split(list(reader("csv")(io.StringIO(long_csv))))
    assert [(e.signal_type, e.category, e.labels, e.source_ref) for e in good] == [
        ("md5", Category("uk", "A"), ("x", "y"), "img1.jpg"),
        ("sha1", None, (), ""),
    ]
    assert [b.line for b in bad] == [3, 5]
    wide = "md5,sha1,pdq,category_scheme,category_code\n" + f"{'a' * 32},,{'b' * 64},ncmec,a1\n"
    good, bad = split(list(reader("csv")(io.StringIO(wide))))
    assert not bad and {e.signal_type for e in good} == {"md5", "pdq"}
    assert all(e.category == Category("ncmec", "A1") for e in good)


def test_csv_without_usable_header():
    with pytest.raises(FormatError):
        list(reader("csv")(io.StringIO("")))
    with pytest.raises(FormatError):
        list(reader("csv")(io.StringIO("foo,bar\n1,2\n")))


def test_unknown_format():
    with pytest.raises(FormatError):
        reader("xml")


VICS_13 = {
    "odata.metadata": "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/1.3.xml#Cases",
    "value": [
        {
            "CaseID": "c1",
            "Media": [
                {
                    "MediaID": 1,
                    "Category": 1,
                    "MD5": "A" * 32,
                    "SHA1": "B" * 40,
                    "AlternativeHashes": [{"HashName": "PDQ", "HashValue": "c" * 64}],
                },
                {"MediaID": 2, "MD5": "bad"},
                {"MediaID": 3, "Category": 0, "SHA1": "d" * 40},
            ],
        }
    ],
}


def test_vics_13_and_20_read():
    good, bad = split(list(reader("vics")(io.BytesIO(json.dumps(VICS_13).encode()))))
    assert [(e.signal_type, str(e.category)) for e in good] == [
        ("md5", "vics:1"),
        ("sha1", "vics:1"),
        ("pdq", "vics:1"),
        ("sha1", "vics:0"),
    ]
    assert [(b.unit, b.line) for b in bad] == [("record", 2)]
    v20 = {"@odata.context": "x", "value": VICS_13["value"][0]["Media"]}
    good2, bad2 = split(list(reader("vics")(io.BytesIO(json.dumps(v20).encode()))))
    assert good2 == good and len(bad2) == 1


def test_vics_malformed():
    with pytest.raises(FormatError):
        list(reader("vics")(io.BytesIO(b'{"value": [ {"MD5": ')))
    with pytest.raises(FormatError):
        list(reader("vics")(io.BytesIO(b'{"something": []}')))


def _media_json(members: list[tuple[str, str]]) -> str:
    """A Media object written member by member (json.dumps cannot repeat a name)."""
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in members) + "}"


@pytest.mark.parametrize("layout", ["2.0", "1.x"])
@given(dup=st.sampled_from(["MD5", "SHA1", "AlternativeHashes", "HashValue", "Category"]),
       first=st.booleans())
@settings(max_examples=25, deadline=None)
def test_vics_member_named_twice_is_a_bad_record(layout: str, dup: str, first: bool) -> None:
    """JSON readers differ on which of two same-named members wins (RFC 8259 section 4); a
    plain dict keeps the last, so two MD5s or two AlternativeHashes lost hashes silently. The
    record is reported (by number, naming the member), the records around it are kept."""
    md5s = ['"' + "a" * 32 + '"', '"' + "b" * 32 + '"']
    alt = '[{"HashName": "PDQ", "HashValue": "' + "0" * 64 + '"}]'
    members = [("MediaID", "2"), ("MD5", md5s[0]), ("SHA1", '"' + "c" * 40 + '"'),
               ("Category", "1"), ("AlternativeHashes", alt)]
    if dup == "HashValue":
        members[-1] = ("AlternativeHashes", '[{"HashName": "PDQ", "HashValue": "' + "0" * 64
                       + '", "HashValue": "' + "f" * 64 + '"}]')
    else:
        again = {"MD5": md5s[1], "SHA1": '"' + "d" * 40 + '"', "Category": "2",
                 "AlternativeHashes": alt}[dup]
        members.insert(1 if first else len(members), (dup, again))
    ok1 = '{"MediaID": 1, "SHA1": "' + "1" * 40 + '"}'
    ok3 = '{"MediaID": 3, "SHA1": "' + "3" * 40 + '"}'
    media = f"[{ok1}, {_media_json(members)}, {ok3}]"
    doc = (f'{{"value": {media}}}' if layout == "2.0"
           else f'{{"value": [{{"CaseID": 9, "Media": {media}}}]}}')
    good, bad = split(list(reader("vics")(io.BytesIO(doc.encode()))))
    assert [e.value for e in good] == ["1" * 40, "3" * 40]
    assert len(bad) == 1 and bad[0].line == 2 and bad[0].unit == "record"
    assert f"names {dup} twice" in str(bad[0])


entry_strategy = st.builds(
    lambda sig, val, cat, ref, var: EntryIn(sig, val, cat, (), ref, "", var),
    st.sampled_from(["md5", "sha1", "sha256", "pdq"]),
    st.just(""),
    st.one_of(
        st.none(),
        st.sampled_from(
            [
                Category("uk", "A"),
                Category("vics", "2"),
                Category("ncmec", "B1"),
                Category("acme", "Red 7"),
            ]
        ),
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
    st.just(""),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(entry_strategy, st.randoms()), min_size=1, max_size=12),
    st.sampled_from(["csv", "vics", "hashlines"]),
)
def test_round_trip_through_store(tmp_path_factory, items, fmt):
    """export(import(x)) keeps every hash, category (unknown schemes too) and reference."""
    lengths = {"md5": 32, "sha1": 40, "sha256": 64, "pdq": 64}
    entries = []
    for e, rnd in items:
        value = "".join(rnd.choice("0123456789abcdef") for _ in range(lengths[e.signal_type]))
        ref = e.source_ref.strip()
        entries.append(EntryIn(e.signal_type, value, e.category, (), ref, f"g{len(entries)}"))
    db = tmp_path_factory.mktemp("rt") / "rt.db"
    with Store.open(db) as s:
        s.create_list("src")
        s.add_entries("src", entries)
        buf = io.StringIO()
        if fmt == "hashlines":
            from hashwatch.formats import hashlines

            hashlines.write(s.iter_entries(list_name="src"), buf)
        else:
            writer(fmt)(s.iter_entries(list_name="src"), buf)
        data = buf.getvalue()
        src = io.BytesIO(data.encode()) if fmt == "vics" else io.StringIO(data)
        back, bad = split(list(reader(fmt)(src)))
        assert not bad
        s.create_list("dst")
        s.add_entries("dst", back)
        want = sorted((e.signal_type, e.value) for e in s.iter_entries(list_name="src"))
        got = sorted((e.signal_type, e.value) for e in s.iter_entries(list_name="dst"))
        assert got == want
        if fmt != "hashlines":  # hashlines carries hashes only
            want_c = sorted(
                (e.value, str(e.category), e.source_ref) for e in s.iter_entries(list_name="src")
            )
            got_c = sorted(
                (e.value, str(e.category), e.source_ref) for e in s.iter_entries(list_name="dst")
            )
            assert got_c == want_c


def test_icse_columns_categories_and_bad_rows():
    text = (
        "ImageID,MD5,SHA1,PhotoDNA,Category\n"
        f"img-1,{'a' * 32},{'b' * 40},,1\n"
        f"img-2,,{'c' * 40},,uk:C\n"
        "img-3,,,,2\n"
        f"img-4,{'x' * 32},,,\n"
        f"img-5,{'d' * 32},,,1,extra\n"
    )
    good, bad = split(list(reader("icse")(io.StringIO(text))))
    assert [(e.signal_type, str(e.category), e.source_ref, e.group_ref) for e in good] == [
        ("md5", "icse:1", "img-1", "img-1"),
        ("sha1", "icse:1", "img-1", "img-1"),
        ("sha1", "uk:C", "img-2", "img-2"),
    ]
    assert [(b.line, b.message.split(" ")[0]) for b in bad] == [(4, "no"), (5, "md5"), (6, "more")]
    with pytest.raises(FormatError):
        list(reader("icse")(io.StringIO("ImageID,Notes\n1,2\n")))


def test_hashlines_reads_every_checksum_tool_layout():
    """md5sum/sha256sum lines (plain, binary marker, escaped names) and the BSD tagged form
    (macOS ``md5``, ``shasum --tag``, ``sha256sum --tag``, ``openssl dgst``): the tag names
    the signal type, so a 64-hex SHA-256 needs no --signal; an unknown tag is a bad line."""
    import hashlib

    data = [b"benign-%d" % i for i in range(6)]
    md5 = [hashlib.md5(b).hexdigest() for b in data]
    sha1 = [hashlib.sha1(b).hexdigest() for b in data]
    sha256 = [hashlib.sha256(b).hexdigest() for b in data]
    text = "\r\n".join([
        f"MD5 (photo 1.jpg) = {md5[0]}",                  # macOS md5
        f"SHA256 (dir/a (copy).jpg) = {sha256[1]}",       # sha256sum --tag, parentheses
        f"SHA1 (b.jpg) = {sha1[2].upper()}",              # shasum --tag
        f"SHA2-256(c.jpg)= {sha256[3]}",                  # openssl 3 dgst
        f"{md5[4]}  plain name.jpg",                      # md5sum
        f"\\{md5[5]}  back\\\\slash\\nnewline.jpg",       # md5sum, escaped name
        f"\\SHA256 (x\\\\y.jpg) = {sha256[5]}",            # sha256sum --tag, escaped name
        f"BLAKE2b (z.jpg) = {'ab' * 64}",                 # a hash hashwatch has no type for
    ]) + "\r\n"
    good, bad = split(list(reader("hashlines")(io.BytesIO(text.encode("utf-8-sig")))))
    assert [(e.signal_type, e.value, e.source_ref) for e in good] == [
        ("md5", md5[0], "photo 1.jpg"),
        ("sha256", sha256[1], "dir/a (copy).jpg"),
        ("sha1", sha1[2], "b.jpg"),
        ("sha256", sha256[3], "c.jpg"),
        ("md5", md5[4], "plain name.jpg"),
        ("md5", md5[5], "back\\slash\nnewline.jpg"),
        ("sha256", sha256[5], "x\\y.jpg"),
    ]
    assert [b.line for b in bad] == [8] and "blake2b" in bad[0].message
