"""A new user's first hour, through the real CLI on real SQLite files: user data printed
literally (no emoji or markup), a mistyped or empty --db refused, `grades` listing clusters
before anyone votes, and `lists promote` saying why nothing was promoted."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from hashwatch.categories import SCHEMES
from hashwatch.cli import app
from hashwatch.demo import demo_images

runner = CliRunner()
WIDE = {"COLUMNS": "400", "TERM": "dumb"}
# every code of every known scheme, and an unknown scheme that looks like markup and emoji
CODES = [f"{s}:{c}" for s, codes in SCHEMES.items() for c in codes] + ["x[red]:smile:"]


def run(*args: str, code: int | None = 0):
    res = runner.invoke(app, list(args), env=WIDE, catch_exceptions=False)
    if code is not None:
        assert res.exit_code == code, res.output
    return res


def _literal(text: str) -> None:
    """Only ASCII and Rich's table box-drawing characters: no emoji, no symbol that Rich
    substituted for a ``:name:`` code."""
    for ch in set(text):
        if ord(ch) < 128 or 0x2500 <= ord(ch) <= 0x257F or ch == "…":
            continue
        raise AssertionError(f"unexpected character {ch!r} ({unicodedata.name(ch, '?')})")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("first")
    db = str(tmp / "hw.db")
    images = demo_images()
    known = tmp / "known"
    known.mkdir()
    for p in images[:2]:
        shutil.copy(p, known / p.name)
    ev = tmp / "evidence"
    ev.mkdir()
    for p in images[8:12]:  # four new pictures: four clusters
        Image.open(p).convert("RGB").save(ev / f"{p.stem}.png")
    (ev / "[bold]odd:b:name.jpg").write_bytes(images[0].read_bytes()[:900])  # broken
    run("lists", "create", "caid", "--scheme", "uk", "--db", db)
    run("lists", "add", "caid", str(known), "--category", "uk:B", "--db", db)
    res = run("triage", str(ev), "--case", "C1", "--out", str(tmp / "out"), "-w", "1",
              "--no-pdf", "--db", db)
    return tmp, db, ev, res


def test_paths_printed_literally(setup) -> None:
    _tmp, _db, _ev, res = setup
    assert "[bold]odd:b:name.jpg" in res.output  # the broken file's path, as it is
    _literal(res.output)


def test_grades_lists_clusters_before_any_vote(setup) -> None:
    _tmp, db, _ev, _ = setup
    res = run("grades", "C1", "--db", db)
    assert "4 cluster(s)" in res.output and "ungraded" in res.output
    assert "3 agreeing votes from different analysts" in res.output


def test_every_scheme_code_printed_literally(setup) -> None:
    _tmp, db, _ev, _ = setup
    for n, code in enumerate(CODES):
        res = run("grade", "C1", "--cluster", "2", "--category", code, "--analyst", f"a{n}",
                  "--db", db)
        assert f"= {code.lower() if code.startswith('x') else code} by a{n}" in res.output
        _literal(res.output)
    res = run("grades", "C1", "--db", db)
    for code in CODES:
        shown = code if not code.startswith("x") else "x[red]:smile:"
        assert f"{shown}: 1" in res.output, code
    assert "disputed" in res.output
    _literal(res.output)


def test_promote_says_why_nothing_was_promoted(setup) -> None:
    _tmp, db, _ev, _ = setup
    run("grade", "C1", "--cluster", "1", "--category", "uk:C", "--analyst", "solo",
        "--db", db)
    res = run("lists", "promote", "C1", "--list", "caid", "--db", db)
    out = res.output
    assert out.index("only trusted grades are promoted") < out.index("nothing promoted")
    assert "1 pending" in out and "3 agreeing votes" in out


def test_missing_or_empty_database_is_refused(setup, tmp_path) -> None:
    _tmp, db, ev, _ = setup
    typo = tmp_path / "typo.db"
    for cmd in (["match", str(ev)], ["triage", str(ev), "--case", "T", "--out",
                                     str(tmp_path / "t")]):
        res = run(*cmd, "--db", str(typo), code=2)
        assert "does not exist" in res.output and str(typo) in res.output
        assert not typo.exists()  # nothing was created
    # commands that only read or change what is there refuse it too, and create nothing
    for cmd in (["db", "stats"], ["lists", "show"], ["lists", "export", "caid", "--out",
                                                     str(tmp_path / "x.csv")],
                ["lists", "remove", "caid", "1"], ["grades", "C1"],
                ["grade", "C1", "--cluster", "1", "--category", "uk:B", "--analyst", "a"],
                ["lists", "promote", "C1", "--list", "caid"]):
        res = run(*cmd, "--db", str(typo), code=2)
        assert "does not exist" in res.output and str(typo) in res.output, cmd
        assert not typo.exists(), cmd
    empty = tmp_path / "empty.db"
    from hashwatch.store import Store

    Store.open(str(empty)).close()  # a real, empty database
    res = run("match", str(ev), "--db", str(empty), code=2)
    assert "holds no hash list" in res.output and str(empty) in res.output
    res = run("match", str(ev), "--db", db)
    assert f"database: {Path(db).resolve()}" in res.output


def test_db_stats_shows_the_path(setup) -> None:
    _tmp, db, _ev, _ = setup
    res = run("db", "stats", "--db", db)
    assert f"database: {Path(db).resolve()}" in res.output


def test_serve_index_path_folder_checked_at_start_up(tmp_path) -> None:
    from hashwatch.service.cli import _prepare_index_dir

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    res = run("serve", "--db", str(tmp_path / "s.db"), "--index-path",
              str(blocker / "sub" / "pdq.idx"), code=2)
    assert "cannot keep the PDQ index" in res.output and str(blocker) in res.output
    target = tmp_path / "new" / "deeper" / "pdq.idx"
    _prepare_index_dir(str(target))  # what serve does before it starts the workers
    assert target.parent.is_dir() and target.parent.stat().st_mode & 0o777 == 0o700


def test_private_setup_errors_are_plain_text(tmp_path) -> None:
    (tmp_path / "list.txt").write_text("ab" * 32 + "\n")
    res = run("private", "setup", str(tmp_path / "list.txt"), "--out", str(tmp_path / "psi"),
              "--engine", "[bold]x", code=2)
    assert "error: --engine must be local or ray, not '[bold]x'" in res.output
    assert "[red]" not in res.output and "[/red]" not in res.output
    _literal(res.output)


def test_private_demo_counts_reconcile(monkeypatch, tmp_path) -> None:
    import re

    from hashwatch.private.demo import run_demo

    monkeypatch.delenv("HASHWATCH_CORPUS", raising=False)
    lines: list[str] = []
    summary = run_demo(tmp_path, threshold=3, out=lines.append)
    summary.pop("device")
    text = "\n".join(lines)
    for account, s in summary.items():
        m = re.search(rf"{account}: sent (\d+) vouchers = (\d+) edited copies of listed "
                      rf"pictures \+ (\d+) unlisted pictures; (\d+) of the (\d+) were synthetic",
                      text)
        assert m, text
        sent, listed, unlisted, synthetic, total = (int(x) for x in m.groups())
        assert sent == listed + unlisted == total == s["sent"]
        assert synthetic == s["synthetic_sent"] and listed == s["listed_pictures_sent"]
        m = re.search(rf"{account}: .*\n  server: (\d+) voucher\(s\) opened", text)
        assert m and int(m.group(1)) == s["opened"] <= listed + synthetic
