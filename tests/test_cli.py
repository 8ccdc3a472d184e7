"""The CLI end to end, in-process through Typer's runner, on a real SQLite file."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat

import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from hashwatch.cli import app
from hashwatch.demo import demo_images

runner = CliRunner()


def run(*args: str, ok: bool = True):
    res = runner.invoke(app, list(args), catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output + (res.stderr if res.stderr_bytes else "")
    return res


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "cli.db")


@pytest.fixture
def images(tmp_path):
    """Three known images, an edited copy, an unrelated image, a corrupt file, a text file."""
    src = demo_images()
    known = tmp_path / "known"
    known.mkdir()
    for p in src[:3]:
        shutil.copy(p, known / p.name)
    ev = tmp_path / "evidence" / "sub"
    ev.mkdir(parents=True)
    im = Image.open(src[0]).convert("RGB")
    im.resize((im.width // 2, im.height // 2)).save(ev / "small.webp", quality=70)
    ImageOps.grayscale(Image.open(src[1])).save(ev / "grey.png")
    Image.open(src[5]).save(ev / "unrelated.bmp")
    (ev / "broken.jpg").write_bytes(src[2].read_bytes()[:1500])
    (ev / "readme.txt").write_text("hello")
    return known, tmp_path / "evidence"


def test_hash_jsonl_and_csv(images, tmp_path):
    known, evidence = images
    res = run("hash", str(known), str(evidence))
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(recs) == 8
    fields = {"path", "size", "md5", "sha1", "sha256", "pdq", "pdq_quality", "width", "height",
              "error"}
    assert all(set(r) == fields for r in recs)
    by_name = {os.path.basename(r["path"]): r for r in recs}
    assert by_name["broken.jpg"]["error"].startswith("truncated")
    assert by_name["broken.jpg"]["sha256"] and by_name["broken.jpg"]["pdq"] is None
    assert by_name["readme.txt"]["error"].startswith("not_an_image")
    assert by_name["small.webp"]["error"] is None and len(by_name["small.webp"]["pdq"]) == 64
    out = tmp_path / "h.csv"
    run("hash", str(evidence), "--format", "csv", "--workers", "2", "--out", str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = list(csv.DictReader(out.open()))
    assert [os.path.basename(r["path"]) for r in rows] == sorted(
        os.path.basename(r["path"]) for r in rows if "sub" in r["path"])
    assert {os.path.basename(r["path"]) for r in rows} == {
        "small.webp", "grey.png", "unrelated.bmp", "broken.jpg", "readme.txt"}


def test_hash_missing_path_is_a_record(tmp_path):
    res = run("hash", str(tmp_path / "nope.jpg"))
    rec = json.loads(res.stdout)
    assert rec["error"] and rec["md5"] is None


def test_lists_add_match_and_filters(images, db, tmp_path):
    known, evidence = images
    run("lists", "create", "caid", "--scheme", "uk", "--db", db)
    run("lists", "create", "other", "--db", db)
    run("lists", "add", "caid", str(known), "--category", "uk:B", "--db", db)
    res = run("match", str(evidence), str(known / "kodim03.jpg"), "--db", db)
    out = {os.path.basename(json.loads(x)["path"]): json.loads(x) for x in res.stdout.splitlines()}
    small = out["small.webp"]["matches"]
    assert small and small[0]["list"] == "caid" and small[0]["ref"] == "kodim01.jpg"
    assert small[0]["exact"] is False and small[0]["distance"] <= 31
    assert small[0]["category"] == "uk:B" and small[0]["signal"] == "pdq"
    assert set(small[0]) >= {"list", "entry_id", "ref", "signal", "distance", "category", "exact"}
    assert out["grey.png"]["matches"][0]["ref"] == "kodim02.jpg"
    exact = out["kodim03.jpg"]["matches"]
    assert {m["signal"] for m in exact if m["exact"]} == {"md5", "sha1", "sha256"}
    assert out["unrelated.bmp"]["matches"] == []
    assert out["broken.jpg"]["error"].startswith("truncated")
    assert out["readme.txt"]["matches"] == []
    # --list restricts
    res = run("match", str(evidence), "--list", "other", "--db", db)
    assert all(json.loads(x)["matches"] == [] for x in res.stdout.splitlines())
    res = run("match", str(evidence), "--list", "nosuch", "--db", db, ok=False)
    assert res.exit_code == 2 and "no hash list" in res.stderr


def test_table_piped_to_a_file_is_not_cut(images, db, tmp_path):
    """`hashwatch match --format table > out.txt`: Rich assumes 80 columns off a terminal and
    cut paths and refs to "…"; what was found must reach the file whole."""
    import subprocess
    import sys

    known, evidence = images
    deep = evidence / ("case-2026-0001-seized-laptop-" * 3) / "Pictures" / "holiday"
    deep.mkdir(parents=True)
    shutil.copy(evidence / "sub" / "grey.png", deep / "IMG_20260101_120000_000001.png")
    run("lists", "create", "national-list-of-known-images", "--db", db)
    run("lists", "add", "national-list-of-known-images", str(known), "--db", db)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = subprocess.run([sys.executable, "-m", "hashwatch.cli", "match", str(deep), "--format",
                          "table", "--db", db], capture_output=True, text=True, env=env,
                         check=True)
    path = str(deep / "IMG_20260101_120000_000001.png")
    row = [line for line in res.stdout.splitlines() if path in line]
    assert len(row) == 1 and "national-list-of-known-images" in row[0], res.stdout
    assert "…" not in res.stdout


def test_import_reports_bad_rows_and_reimport_adds_nothing(db, tmp_path):
    f = tmp_path / "list.txt"
    lines = [f"{i:032x}" for i in range(5000)]
    lines[10] = "zzz"
    lines[4000] = "12345"
    f.write_text("\n".join(lines) + "\n")
    run("lists", "create", "l", "--db", db)
    res = run("lists", "import", "l", str(f), "--format", "hashlines", "--db", db)
    assert "line 11:" in res.stderr and "line 4001:" in res.stderr
    assert "4998 added" in res.stderr and "2 bad rows" in res.stderr
    res = run("lists", "import", "l", str(f), "--format", "hashlines", "--db", db)
    assert "0 added, 4998 already present" in res.stderr
    stats = json.loads(run("db", "stats", "--json", "--db", db).stdout)
    assert stats["entries"] == [{"list": "l", "signal_type": "md5", "entries": 4998,
                                 "matchable": True}]


def test_import_errors_are_clear(db, tmp_path):
    run("lists", "create", "l", "--db", db)
    res = run("lists", "import", "missing", str(tmp_path), "--db", db, ok=False)
    assert res.exit_code == 2
    bad_json = tmp_path / "x.json"
    bad_json.write_text('{"value": [')
    res = run("lists", "import", "l", str(bad_json), "--format", "vics", "--db", db, ok=False)
    assert res.exit_code == 2 and "not valid VICS JSON" in res.stderr
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"signal_type,value\n\xff\xfe\x00bad\n")
    res = run("lists", "import", "l", str(binary), "--db", db, ok=False)
    assert res.exit_code == 1 and "line 2" in res.stderr  # undecodable bytes: a bad row
    jpeg = tmp_path / "photo.csv"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4)
    res = run("lists", "import", "l", str(jpeg), "--db", db, ok=False)
    assert res.exit_code == 2 and "CSV header" in res.stderr
    res = run("lists", "import", "nolist", str(binary), "--db", db, ok=False)
    assert "no hash list" in res.stderr
    res = run("lists", "add", "l", str(tmp_path), "--category", "uk:Z", "--db", db, ok=False)
    assert res.exit_code == 2 and "unknown code" in res.stderr


def test_export_formats_are_owner_only_and_reimportable(images, db, tmp_path):
    known, _ = images
    run("lists", "create", "src", "--db", db)
    run("lists", "add", "src", str(known), "--category", "vics:1", "--db", db)
    for fmt in ("csv", "vics", "icse", "hashlines"):
        out = tmp_path / f"export.{fmt}"
        run("lists", "export", "src", "--format", fmt, "--out", str(out), "--db", db)
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        run("lists", "import", f"dst-{fmt}", str(out), "--format", fmt, "--create", "--db", db)
    shown = json.loads(run("lists", "show", "--json", "--db", db).stdout)
    counts = {i["name"]: i["entry_count"] for i in shown}
    from hashwatch.store import Store

    with Store.open(db) as s:
        views = sum(1 for e in s.iter_entries(list_name="src") if e.variant)
    assert views >= 3  # the robust matcher's extra PDQ views of each image
    assert counts["src"] == 12 + views  # 3 images x (md5, sha1, sha256, pdq) + views
    assert counts["dst-csv"] == counts["dst-vics"] == counts["dst-hashlines"] == counts["src"]
    assert counts["dst-icse"] == 12  # ICSE carries one row of primary hashes per image
    text = (tmp_path / "export.hashlines").read_text()
    assert "md5:" in text and "pdq:" in text


def test_demo_runs(tmp_path):
    res = run("demo", "--out", str(tmp_path / "d"), "--workers", "1")
    assert "false matches" in res.stdout
    # the triage line's parts add up to its total, as in report.json
    import re

    line = " ".join(res.stdout.split())
    m = re.search(r"\(case DEMO-1\): (\d+) files = (\d+) known \+ (\d+) new \+ (\d+) not "
                  r"pictures \(documents, archives\) \+ (\d+) unreadable", line)
    assert m, line
    total, *parts = (int(x) for x in m.groups())
    assert sum(parts) == total
    per_state = json.loads((tmp_path / "d" / "case" / "report.json").read_text())["per_state"]
    assert total == sum(per_state.values()) and parts[2] == per_state["not_image"] > 0
    rows = [json.loads(x) for x in (tmp_path / "d" / "matches.jsonl").read_text().splitlines()]
    unrelated = [r for r in rows if "unrelated" in r["path"]]
    assert unrelated and all(r["matches"] == [] for r in unrelated)
    copies = [r for r in rows if r["path"].endswith("-copy.jpg")]
    assert copies and all(any(m["exact"] for m in r["matches"]) for r in copies)


def test_version_and_help():
    assert "hashwatch" in run("--version").stdout
    assert "lists" in run("--help").stdout
    _ = io  # keep import for readability of helpers above


def test_eval_reports_table_and_plot(corpus_dir, tmp_path):
    out = tmp_path / "ev"
    res = run("eval", "--corpus", str(corpus_dir), "--known", "4", "--max-distractors", "12",
              "--edits", "mirror,border-black5,grid3x3", "--out", str(out))
    assert "mirror" in res.stdout and "border-black5" in res.stdout and "grid3x3" in res.stdout
    assert "mean recall %, edits in combination (1)" in res.stdout
    assert (out / "robustness.png").stat().st_size > 1000
    res = run("eval", "--corpus", str(corpus_dir), "--edits", "nosuch", ok=False)
    assert res.exit_code == 2 and "unknown edit" in res.stderr
    # the error names the families too, which --edits also takes
    flat = " ".join(res.stderr.split())
    assert "families: single, combined," in flat and "orient-part" in flat


def test_eval_quick_mode_and_corpus_pointer(corpus_dir, tmp_path, monkeypatch):
    """--quick runs the quick edit list; a corpus that is not there is a clear error naming
    where it was looked for and how to point at it (option and environment variable)."""
    from hashwatch.evaluate import CorpusNotFound, quick_edits, resolve_corpus

    out = tmp_path / "q"
    res = run("eval", "--quick", "--corpus", str(corpus_dir), "--known", "4",
              "--max-distractors", "3", "--no-local", "--out", str(out))
    rows = [line.split("|")[1].strip() for line in res.stdout.splitlines()
            if line.startswith("| ") and "|---" not in line]
    assert [r for r in rows if r in quick_edits()] == quick_edits()
    assert 15 <= len(quick_edits()) <= 30
    missing = tmp_path / "no-corpus"
    res = run("eval", "--corpus", str(missing), ok=False)
    assert res.exit_code != 0 and "corpus not found" in res.stderr
    assert str(missing) in res.stderr and "--corpus" in res.stderr
    monkeypatch.setenv("HASHWATCH_CORPUS", str(missing))
    with pytest.raises(CorpusNotFound, match="HASHWATCH_CORPUS"):
        resolve_corpus()
    monkeypatch.setenv("HASHWATCH_CORPUS", str(corpus_dir))
    assert resolve_corpus() == corpus_dir


def test_first_open_after_an_upgrade_says_it_is_upgrading(db):
    # an existing database one schema revision behind: the first command says it upgrades
    # (some migrations rebuild indexes for minutes on a large list), later ones say nothing
    from alembic import command
    from alembic.config import Config

    from hashwatch.store import Store

    run("lists", "create", "l", "--db", db)
    cfg = Config()
    cfg.set_main_option("script_location", "hashwatch.store:migrations")
    with Store.open(db) as s, s.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "entries_identity_order@-1")  # undoes 0016
    keys = run("keys", "list", "--db", db)  # the service's commands say so too
    assert "upgrading" in keys.stderr and "schema" in keys.stderr
    with Store.open(db) as s, s.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "entries_identity_order@-1")
    first = run("lists", "show", "l", "--db", db)
    assert "upgrading" in first.stderr and "schema" in first.stderr
    again = run("lists", "show", "l", "--db", db)
    assert "upgrading" not in again.stderr
    new = run("lists", "create", "m", "--db", db + ".new")  # a new database is not upgraded
    assert "upgrading" not in new.stderr


def test_table_shows_a_keypoint_match_for_what_it_is(tmp_path, db):
    # a keypoint-tier match in `--format table`: its tier and decision (review), and its
    # inliers instead of a hash distance of -1
    from test_matcher import _keypoint_only_edit

    src = demo_images()[:6]
    known = tmp_path / "k"
    known.mkdir()
    for p in src:
        shutil.copy(p, known / p.name)
    edit = tmp_path / "edit.png"
    _keypoint_only_edit(src[2], edit)
    run("lists", "create", "l", "--db", db)
    run("lists", "add", "l", str(known), "--db", db)
    res = run("match", str(edit), "--format", "table", "--db", db)
    row = [line for line in res.stdout.splitlines() if src[2].name in line]
    assert len(row) == 1, res.stdout
    cells = [c.strip() for c in row[0].split("│")]
    assert "keypoint (review)" in cells and any(c.startswith("keypoints") for c in cells)
    assert "similarity" in res.stdout  # what the keypoints fit: turned and cropped
    assert any(c.endswith(" inliers") and int(c.split()[0]) >= 15 for c in cells)
    exact = run("match", str(src[0]), "--format", "table", "--db", db).stdout
    assert "exact (act)" in exact
