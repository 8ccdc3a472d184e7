"""End-to-end tests of investigator triage: real decoding, hashing, store, matcher and index.

One small evidence tree (corpus images, an edited copy renamed .txt, nested zip, tar.gz, 7z,
a video holding a known frame, corrupt files, documents) is triaged once per module; the
tests then check states, categories, conflicts, clusters, outputs, grading and promotion.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from hashwatch.categories import parse_category
from hashwatch.formats import vics
from hashwatch.hashing import hash_file
from hashwatch.known import entries_for_record
from hashwatch.store import Store
from hashwatch.triage.classify import STATES
from hashwatch.triage.cluster import cluster_pdq
from hashwatch.triage.grading import GradeRule, add_vote, case_grades, decide, resolve_target
from hashwatch.triage.promote import promote
from hashwatch.triage.report import CSV_COLUMNS
from hashwatch.triage.run import TriageOptions, open_workdb, run_triage
from hashwatch.triage.sources import sniff

REPO = Path(__file__).resolve().parents[1]


def _jpeg(im: Image.Image, q: int = 85) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _video(path: Path, frames: list[np.ndarray], fps: int = 5) -> None:
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for a in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


class Tree:
    """The generated evidence tree and what each planted file must become."""

    def __init__(self, root: Path, corpus: Path) -> None:
        self.root = root
        ev = root / "evidence"
        (ev / "photos").mkdir(parents=True)
        (ev / "docs").mkdir()
        train = sorted((corpus / "bsds500-train").glob("*.jpg"))
        self.known_src = train[:4]  # on the list
        others = sorted((corpus / "bsds500-val").glob("*.jpg"))[:6]
        flowers = sorted((corpus / "flowers128").rglob("*.jpg"))[:8]
        self.expect: dict[str, str] = {}
        k0, k1, k2, k3 = self.known_src

        def put(rel: str, data: bytes, state: str | None = None) -> None:
            p = ev / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            if state:
                self.expect[str(p)] = state

        put("photos/DSC_0001.jpg", k0.read_bytes(), "known_exact")
        # an edited copy of a known image, renamed .txt: found by content, as near-duplicate
        put("docs/holiday_notes.txt", _jpeg(ImageEnhance.Brightness(Image.open(k1)).enhance(1.1)),
            "known_near")
        # unrelated images, and a re-encoded pair that must cluster together
        for i, f in enumerate(others):
            put(f"photos/other_{i}.jpg", f.read_bytes(), "unknown")
        put("photos/other_0_small.jpg", _jpeg(Image.open(others[0]).resize((240, 160)), 70),
            "unknown")
        put("docs/letter.txt", b"dear sir, " * 200, "not_image")
        put("docs/data.csv", b"a,b\n1,2\n", "not_image")
        put("docs/empty.bin", b"", "not_image")
        # corrupt: a truncated JPEG, and a zip that is not one
        put("photos/broken.jpg", others[1].read_bytes()[:2500], "error")
        put("photos/fake.zip", b"PK\x03\x04" + b"\x00" * 100, "error")
        # nested archives: zip holding a zip holding a known image, plus tar.gz and 7z
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as z:
            z.writestr("deep/known.jpg", k2.read_bytes())
            z.writestr("deep/readme.txt", "inner")
        tgz = io.BytesIO()
        with tarfile.open(fileobj=tgz, mode="w:gz") as t:
            for j, f in enumerate(flowers[:3]):
                data = f.read_bytes()
                ti = tarfile.TarInfo(f"t/{j}.jpg")
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
        import py7zr

        s7 = io.BytesIO()
        with py7zr.SevenZipFile(s7, "w") as s:
            s.writestr(k3.read_bytes(), "x/known3.jpg")
            s.writestr(b"seven", "x/note.txt")
        outer = ev / "backup.zip"
        with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("inner.zip", inner.getvalue())
            z.writestr("more.tar.gz", tgz.getvalue())
            z.writestr("stuff.7z", s7.getvalue())
            for f in flowers[3:]:
                z.writestr(f"phone/{f.name}", f.read_bytes())
        self.expect[f"{outer}"] = "not_image"
        self.expect[f"{outer}!inner.zip!deep/known.jpg"] = "known_exact"
        self.expect[f"{outer}!inner.zip!deep/readme.txt"] = "not_image"
        self.expect[f"{outer}!more.tar.gz!t/0.jpg"] = "unknown"
        self.expect[f"{outer}!stuff.7z!x/known3.jpg"] = "known_exact"
        self.expect[f"{outer}!stuff.7z!x/note.txt"] = "not_image"
        # a video: an unrelated scene, then the known image k0 for 2 s (found by its frames)
        scene = np.asarray(Image.open(others[2]).convert("RGB").resize((320, 240)))
        kf = np.asarray(Image.open(k0).convert("RGB").resize((320, 240)))
        (ev / "videos").mkdir()
        self.video = ev / "videos" / "clip.mp4"
        _video(self.video, [scene] * 10 + [kf] * 10 + [scene] * 5)
        self.expect[str(self.video)] = "known_near"
        self.ev = ev


@pytest.fixture(scope="module")
def corpus(corpus_dir: Path) -> Path:
    """../shared/corpus via conftest's corpus_dir (fails under CI=true when missing)."""
    return corpus_dir


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Tree:
    return Tree(tmp_path_factory.mktemp("tree"), corpus)


def _make_store(db: Path, tree: Tree) -> Store:
    store = Store.open(db)
    store.create_list("national", category_scheme="uk")
    store.create_list("partner", category_scheme="vics")
    cats = ["uk:A", "uk:B", "uk:C", "uk:A"]
    for src, cat in zip(tree.known_src, cats, strict=True):
        store.add_entries("national", entries_for_record(hash_file(src),
                                                         category=parse_category(cat)))
    # the partner list grades known image 2 differently: a conflict to show, not resolve
    store.add_entries("partner", entries_for_record(hash_file(tree.known_src[2]),
                                                    category=parse_category("vics:2")))
    return store


@pytest.fixture(scope="module")
def case(tree: Tree, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("case")
    store = _make_store(base / "hw.db", tree)
    out = base / "out"
    summary = run_triage(TriageOptions("CASE-1", [str(tree.ev)], out, workers=2), store)
    yield store, out, summary
    store.close()


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "files.csv", newline="") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


# -- identification ----------------------------------------------------------------------
def test_sniff_by_content_not_extension(corpus: Path) -> None:
    jpg = next((corpus / "bsds500-train").glob("*.jpg")).read_bytes()
    assert sniff(jpg[:4096]) == "image"
    assert sniff(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20) == "image"
    assert sniff(b"PK\x03\x04rest") == "zip"
    assert sniff(b"7z\xbc\xaf\x27\x1c\x00\x04") == "7z"
    assert sniff(b"\x1f\x8b\x08\x00") == "gzip"
    assert sniff(b"\x00\x00\x00\x20ftypisom\x00\x00") == "video"
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00") == "image"
    assert sniff(b"\x1a\x45\xdf\xa3\x01") == "video"
    assert sniff(b"BM plain text that starts with BM") == "other"
    assert sniff(b"hello") == "other"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_sniff_total_on_any_bytes(data: bytes) -> None:
    assert sniff(data) in {"image", "video", "zip", "tar", "gzip", "bzip2", "xz", "7z", "other"}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_cluster_is_transitive_partition(flips: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 32, dtype=np.uint8)
    codes = []
    for i, _ in enumerate(flips):  # a chain: each code 20 bits from the previous one
        c = base.copy() if i == 0 else codes[-1].copy()
        if i:
            bits = np.unpackbits(c)
            idx = rng.choice(256, 20, replace=False)
            bits[idx] ^= 1
            c = np.packbits(bits)
        codes.append(c)
    codes.append(rng.integers(0, 256, 32, dtype=np.uint8))  # a stranger
    ids = list(range(100, 100 + len(codes)))
    groups = cluster_pdq(ids, [c.tobytes().hex() for c in codes], 31)
    assert sorted(i for g in groups for i in g) == ids  # a partition
    assert [len(g) for g in groups] == sorted((len(g) for g in groups), reverse=True)
    # brute force: connected components of the "within 31" graph
    d = lambda a, b: int(np.unpackbits(a ^ b).sum())  # noqa: E731
    for g in groups:
        for other in groups:
            if other is g:
                continue
            assert all(d(codes[a - 100], codes[b - 100]) > 31 for a in g for b in other)
    chain = ids[: len(flips)]
    assert any(set(chain) <= set(g) for g in groups)


def test_archive_edge_cases(tmp_path: Path, corpus: Path) -> None:
    import gzip
    import warnings

    from hashwatch.triage.sources import SourceFile
    from hashwatch.triage.work import MAX_DEPTH, WorkOptions, process_file

    z = tmp_path / "dup.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("x.txt", "one")
            zf.writestr("x.txt", "two")
    recs = process_file(SourceFile(str(z), z.stat().st_size, str(tmp_path)), WorkOptions())
    assert [r.path.split("!", 1)[-1] for r in recs[1:]] == ["x.txt", "x.txt#2"]
    assert recs[1].md5 != recs[2].md5
    # a plain .gz (not a tar) holding a JPEG: the decompressed member is hashed as an image
    g = tmp_path / "photo.gz"
    g.write_bytes(gzip.compress(next((corpus / "bsds500-train").glob("*.jpg")).read_bytes()))
    recs = process_file(SourceFile(str(g), g.stat().st_size, str(tmp_path)), WorkOptions())
    assert recs[1].path.endswith("!(decompressed)") and recs[1].kind == "image" and recs[1].pdq
    # zips nested deeper than MAX_DEPTH are recorded but not opened
    data = b"bottom"
    for _ in range(MAX_DEPTH + 2):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("n.zip" if data != b"bottom" else "b.txt", data)
        data = buf.getvalue()
    deep = tmp_path / "deep.zip"
    deep.write_bytes(data)
    recs = process_file(SourceFile(str(deep), len(data), str(tmp_path)), WorkOptions())
    assert any(r.error and r.error.startswith("too_deep") for r in recs)
    assert all(r.path.count("!") <= MAX_DEPTH for r in recs)


# -- triage end to end ------------------------------------------------------------------
def test_every_file_in_its_expected_state(case, tree: Tree) -> None:
    _store, out, summary = case
    rows = _rows(out)
    for path, state in tree.expect.items():
        assert path in rows, path
        assert rows[path]["state"] == state, (path, rows[path])
    assert all(r["state"] in STATES for r in rows.values())
    known = {p for p, r in rows.items() if r["state"].startswith("known")}
    assert known == {p for p, s in tree.expect.items() if s.startswith("known")}
    assert summary.counts["known_exact"] == 3 and summary.counts["known_near"] == 2
    assert len(rows) == summary.files  # one row per file, no duplicates


def test_categories_distance_and_conflicts(case, tree: Tree) -> None:
    _store, out, _ = case
    rows = _rows(out)
    exact = rows[str(tree.ev / "photos/DSC_0001.jpg")]
    assert (exact["category_scheme"], exact["category_code"], exact["distance"]) == ("uk", "A", "0")
    assert exact["list"] == "national"
    near = rows[str(tree.ev / "docs/holiday_notes.txt")]
    assert near["category_scheme"] == "uk" and near["category_code"] == "B"
    assert 0 <= int(near["distance"]) <= 31 and near["pdq"]
    conflict = rows[f"{tree.ev / 'backup.zip'}!inner.zip!deep/known.jpg"]
    # both lists' categories kept, aligned: never silently resolved
    assert conflict["category_scheme"] == "uk|vics" and conflict["category_code"] == "C|2"
    assert set(conflict["list"].split("|")) == {"national", "partner"}
    rep = json.loads((out / "report.json").read_text())
    assert rep["per_category"]["conflict: uk:C | vics:2"] == 1
    assert rep["per_scheme"]["conflict"] == 1
    assert [c["path"] for c in rep["conflicts"]] == [conflict["path"]]


def test_video_with_known_frame(case, tree: Tree) -> None:
    _store, out, _ = case
    conn = open_workdb(out, create=False)
    r = conn.execute("SELECT * FROM files WHERE path = ?", (str(tree.video),)).fetchone()
    assert r["kind"] == "video" and r["state"] == "known_near"
    assert r["frame_count"] == 25 and 4.0 <= r["duration"] <= 6.0
    frames = conn.execute("SELECT t FROM frames WHERE file_id = ?", (r["id"],)).fetchall()
    assert 4 <= len(frames) <= 6  # about one per second
    m = json.loads(r["matches"])[0]
    assert m["ref"] == tree.known_src[0].name and 2.0 <= m["frame_time"] <= 4.0
    assert json.loads(r["categories"]) == ["uk:A"]
    conn.close()
    v = json.loads((out / "report.json").read_text())["videos"]
    assert [(x["path"], x["frame_count"], x["frames_hashed"]) for x in v] == [
        (str(tree.video), 25, len(frames))]
    assert "Videos (1)" in (out / "report.html").read_text()


def test_errors_have_reasons_and_clusters_largest_first(case, tree: Tree) -> None:
    _store, out, summary = case
    rows = _rows(out)
    assert rows[str(tree.ev / "photos/broken.jpg")]["error"].startswith("truncated")
    assert rows[str(tree.ev / "photos/fake.zip")]["error"].startswith("corrupt_archive")
    pair = {rows[str(tree.ev / "photos/other_0.jpg")]["cluster"],
            rows[str(tree.ev / "photos/other_0_small.jpg")]["cluster"]}
    assert pair == {"1"}  # the only multi-member cluster is first
    unknown_images = [r for r in rows.values() if r["state"] == "unknown" and r["pdq"]
                      and not r["path"].endswith(".mp4")]
    assert all(r["cluster"] for r in unknown_images)
    assert summary.clusters == len({r["cluster"] for r in unknown_images})
    rep = json.loads((out / "report.json").read_text())
    sizes = [c["size"] for c in rep["clusters"]]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 2


def test_outputs_csv_html_json_private(case, tree: Tree) -> None:
    _store, out, _ = case
    with open(out / "files.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header == CSV_COLUMNS
    assert CSV_COLUMNS[:7] == ["path", "size", "md5", "sha1", "sha256", "pdq", "state"]
    assert {"route", "how", "distance", "inliers", "list", "list_version", "matched_ref",
            "category_scheme", "category_code", "cluster", "device", "taken", "gps_lat",
            "fs_modified", "fs_created", "member_modified", "error", "warnings"} <= set(header)
    for name in ("files.csv", "report.html", "report.pdf", "report.json", "case.vics.json",
                 "manifest.sha256", "work.db"):
        assert (out / name).stat().st_mode & 0o777 == 0o600, name
    page = (out / "report.html").read_text()
    assert "<img" not in page and "data:image" not in page
    # no external reference: links only to fragments of the page itself; SVG namespace
    # declarations (never fetched) are the only URLs
    bare = re.sub(r'xmlns(:\w+)?="[^"]*"', "", page)
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?#)""", bare, re.I)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", bare, re.I)
    rows = _rows(out)
    for r in rows.values():  # the report ties back to the evidence: every file's SHA-256
        if r["sha256"]:
            assert r["sha256"] in page
    assert "CASE-1" in page and "national" in page and "conflict: uk:C | vics:2" in page
    rep = json.loads((out / "report.json").read_text())
    assert rep["tool"]["name"] == "hashwatch" and rep["started_at"] and rep["finished_at"]
    assert {li["name"]: li["version"] for li in rep["lists"]} == {"national": 5, "partner": 2}
    assert sum(rep["per_state"].values()) == len(rows)
    assert str(tree.ev) in rep["per_source"]


def test_case_id_is_bound_to_its_folder(case, tmp_path: Path) -> None:
    from hashwatch.triage.run import CaseError

    store, out, _ = case
    with pytest.raises(CaseError, match="already has its results"):
        run_triage(TriageOptions("CASE-1", [str(tmp_path)], tmp_path / "elsewhere"), store)
    with pytest.raises(CaseError, match="holds case"):
        run_triage(TriageOptions("CASE-2", [str(tmp_path)], out), store)


def test_vics_export_round_trips(case) -> None:
    _store, out, _ = case
    rows = _rows(out)
    with open(out / "case.vics.json", "rb") as fh:
        media = list(vics.iter_media(fh))
    assert len(media) == sum(1 for r in rows.values() if r["md5"])
    by_path = {m["MediaFiles"][0]["FilePath"]: m for m in media}
    for path, r in rows.items():
        if not r["md5"]:
            continue
        got = {(e.signal_type, e.value) for e in vics.media_entries(by_path[path])}
        assert ("md5", r["md5"]) in got and ("sha1", r["sha1"]) in got
        assert ("sha256", r["sha256"]) in got
        if r["pdq"] and not path.endswith(".mp4"):
            assert ("pdq", r["pdq"]) in got
        cats = {str(e.category) for e in vics.media_entries(by_path[path]) if e.category}
        if r["category_scheme"] and "|" not in r["category_scheme"]:
            assert cats == {f"{r['category_scheme']}:{r['category_code']}"}
        if not r["category_scheme"]:
            assert cats == set()
    # and through the real importer into a list
    store = Store.open(out.parent / "import.db")
    store.create_list("imported")
    with open(out / "case.vics.json", "rb") as fh:
        res = store.add_entries("imported", (e for e in vics.read(fh)
                                             if not isinstance(e, vics.RowError)))
    assert res.added > 0
    known = [r for r in rows.values() if r["state"] == "known_exact" and "|" not in r["list"]]
    hits = store.lookup("sha256", [r["sha256"] for r in known])
    assert {h.value for h in hits} == {r["sha256"] for r in known}
    assert {str(h.category) for h in hits} <= {"uk:A", "uk:B", "uk:C"}
    store.close()


def test_thumbnails_option_blurred_inline(tree: Tree, tmp_path: Path) -> None:
    store = _make_store(tmp_path / "hw.db", tree)
    src = tree.ev / "photos"
    run_triage(TriageOptions("CASE-T", [str(src)], tmp_path / "out", workers=1,
                             thumbnails=True), store)
    page = (tmp_path / "out" / "report.html").read_text()
    imgs = re.findall(r"<img [^>]*>", page)
    assert imgs and all('class="thumb"' in i and 'src="data:image/jpeg;base64,' in i
                        for i in imgs)
    assert "blur(" in page and "grayscale(1)" in page
    assert not re.search(r"https?://", page)
    store.close()


def _crashy_process_file(sf, opts):
    from hashwatch.triage.work import process_file

    if os.path.basename(sf.path).startswith("crash"):
        os._exit(3)  # what a decoder segfault does to a worker
    return process_file(sf, opts)


def test_worker_crash_is_isolated(tree: Tree, tmp_path: Path, monkeypatch) -> None:
    import multiprocessing

    import hashwatch.triage.run as run_mod

    ev = tmp_path / "ev"
    ev.mkdir()
    for i in range(40):
        (ev / f"n{i:02d}.txt").write_text(f"note {i}")
    (ev / "crash_me.jpg").write_bytes(tree.known_src[0].read_bytes())
    # fork: the patched function is what the workers run
    monkeypatch.setattr(run_mod, "process_file", _crashy_process_file)
    with _make_store(tmp_path / "hw.db", tree) as store:
        s = run_triage(TriageOptions("CR", [str(ev)], tmp_path / "out", workers=2,
                                     chunk_files=4), store,
                       mp_context=multiprocessing.get_context("fork"))
    rows = _rows(tmp_path / "out")
    assert len(rows) == 41 and s.files == 41
    bad = rows[str(ev / "crash_me.jpg")]
    # an error with its reason, yet still identified exactly by its crypto hash
    assert bad["state"] == "known_exact" and bad["sha256"]
    conn = open_workdb(tmp_path / "out", create=False)
    err = conn.execute("SELECT error FROM files WHERE path = ?", (bad["path"],)).fetchone()[0]
    assert "worker process died" in err
    assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 41
    conn.close()


# -- resume ------------------------------------------------------------------------------
_RUNNER = textwrap.dedent("""
    import sys
    from hashwatch.cli import app, lists_app
    from hashwatch.triage.cli import register

    register(app, lists_app)
    if __name__ == "__main__":
        sys.argv[0] = "hashwatch"
        app()
""")


def _cli(tmp: Path, *args: str, db: Path, **kw):
    script = tmp / "hw_cli.py"
    script.write_text(_RUNNER)
    env = {**os.environ, "HASHWATCH_DB": str(db)}
    return subprocess.Popen([sys.executable, str(script), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.fault
@pytest.mark.timeout(600)  # the fault suite's bound (tests/test_faults.py)
def test_kill_and_resume(tree: Tree, tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    for i in range(1500):  # many small files: a run long enough to kill half-way
        (ev / f"{i // 100:02d}").mkdir(exist_ok=True)
        (ev / f"{i // 100:02d}" / f"n{i}.txt").write_bytes(f"note {i}\n".encode() * (i % 50 + 1))
    for i, f in enumerate(tree.known_src):
        (ev / f"k{i}.jpg").write_bytes(f.read_bytes())
    db = tmp_path / "hw.db"
    _make_store(db, tree).close()
    out = tmp_path / "out"
    args = ("triage", str(ev), "--case", "R1", "--out", str(out), "-w", "2")
    p = _cli(tmp_path, *args, db=db, start_new_session=True)
    deadline = time.time() + 60
    done_before = 0
    while time.time() < deadline:
        if (out / "work.db").exists():
            try:
                c = sqlite3.connect(out / "work.db", timeout=5)
                done_before = c.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
                c.close()
            except sqlite3.OperationalError:
                done_before = 0
            if done_before >= 50:
                break
        if p.poll() is not None:
            break
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)  # the run, its forkserver and its workers
    p.wait()
    assert 50 <= done_before < 1504, "the run must be killed half-way"
    c = sqlite3.connect(out / "work.db")
    first = dict(c.execute("SELECT path, id FROM files").fetchall())
    c.close()
    assert not (out / "report.html").exists()

    # the same command again (in-process here: the subprocess start-up is the slow part)
    with Store.open(db) as store:
        summary = run_triage(TriageOptions("R1", [str(ev)], out, workers=2), store)
    assert summary.resumed_tasks == len({p.split("!")[0] for p in first}) > 0
    c = sqlite3.connect(out / "work.db")
    total, distinct = c.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM files").fetchone()
    assert total == distinct == 1504
    assert c.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 1504
    # files finished before the kill were not hashed again: same rows, written by run 1
    again = dict(c.execute("SELECT path, id FROM files WHERE run_id = 1").fetchall())
    assert again == first
    assert c.execute("SELECT COUNT(*) FROM files WHERE run_id = 2").fetchone()[0] == 1504 - len(
        first)
    assert c.execute("SELECT COUNT(*) FROM files WHERE state='known_exact'").fetchone()[0] == 4
    runs = c.execute("SELECT id, finished_at FROM runs ORDER BY id").fetchall()
    assert runs[0][1] is None and runs[1][1] is not None  # the killed run shows as interrupted
    c.close()
    assert (out / "report.html").exists()


# -- grading and promotion ---------------------------------------------------------------
def test_grading_rule_trusted_disputed_append_only(case) -> None:
    store, out, _ = case
    conn = open_workdb(out, create=False)
    t1 = resolve_target(conn, cluster=1)
    t2 = resolve_target(conn, cluster=2)
    sha = conn.execute("SELECT sha256 FROM files WHERE cluster = 3").fetchone()[0]
    t3 = resolve_target(conn, file=sha)
    path = conn.execute("SELECT path FROM files WHERE cluster = 3").fetchone()[0]
    assert resolve_target(conn, file=path) == t3  # a file by its path in files.csv, too
    with pytest.raises(ValueError):
        resolve_target(conn, cluster=999)
    conn.close()
    a, b = parse_category("uk:A"), parse_category("uk:B")
    for who in ("ana", "ben"):
        add_vote(store, "CASE-1", t1, a, who)
    st = {g.target: g for g in case_grades(store, "CASE-1")}
    assert st[t1].status == "pending"
    add_vote(store, "CASE-1", t1, a, "ana")  # the same analyst twice still counts once
    assert {g.target: g for g in case_grades(store, "CASE-1")}[t1].status == "pending"
    add_vote(store, "CASE-1", t1, a, "cat")
    g1 = {g.target: g for g in case_grades(store, "CASE-1")}[t1]
    assert g1.status == "trusted" and g1.category == a and len(g1.history) == 4
    for who, cat in (("ana", a), ("ben", a), ("cat", b)):
        add_vote(store, "CASE-1", t2, cat, who)
    g2 = {g.target: g for g in case_grades(store, "CASE-1")}[t2]
    assert g2.status == "disputed" and g2.tally() == {"uk:A": 2, "uk:B": 1}
    # a configurable rule: two agreeing analysts, one dissent tolerated
    assert {g.target: g for g in case_grades(store, "CASE-1", GradeRule(2, 1))}[t2].status \
        == "trusted"
    add_vote(store, "CASE-1", t3, b, "ana")
    assert decide(t3, [], GradeRule()).status == "ungraded"
    # votes are never overwritten or deleted: the database refuses
    with store.engine.begin() as c, pytest.raises(sa.exc.DatabaseError):
        c.execute(sa.text("UPDATE triage_votes SET category_code = 'C'"))
    with store.engine.begin() as c, pytest.raises(sa.exc.DatabaseError):
        c.execute(sa.text("DELETE FROM triage_votes"))
    # an analyst changing their mind adds a vote: the latest counts, history keeps both
    add_vote(store, "CASE-1", t2, a, "cat")
    g2 = {g.target: g for g in case_grades(store, "CASE-1")}[t2]
    assert g2.status == "trusted" and len(g2.history) == 4


def test_promote_with_provenance_and_dedup(tree: Tree, tmp_path: Path) -> None:
    store = _make_store(tmp_path / "hw.db", tree)
    out = tmp_path / "out"
    run_triage(TriageOptions("CASE-P", [str(tree.ev / "photos")], out, workers=1), store)
    conn = open_workdb(out, create=False)
    members = [r["sha256"] for r in conn.execute("SELECT sha256 FROM files WHERE cluster = 1")]
    t = resolve_target(conn, cluster=1)
    conn.close()
    assert len(members) == 2
    store.create_list("new-material", category_scheme="uk")
    res = promote(store, "CASE-P", "new-material")
    assert res.files_promoted == 0  # nothing trusted yet
    votes = [add_vote(store, "CASE-P", t, parse_category("uk:C"), who) for who in "xyz"]
    res = promote(store, "CASE-P", "new-material")
    assert res.files_promoted == 2 and res.entries_added == 8  # md5, sha1, sha256, pdq each
    entries = list(store.iter_entries(list_name="new-material"))
    assert {e.group_ref for e in entries} == set(members)
    e = entries[0]
    assert str(e.category) == "uk:C" and e.source_ref == "case:CASE-P"
    assert "case:CASE-P" in e.labels
    assert f"votes:{','.join(str(v.id) for v in votes)}" in e.labels
    assert "analysts:x,y,z" in e.labels
    audit = [a for a in store.iter_audit() if a["action"] == "entries.promote"]
    assert audit[-1]["detail"]["case"] == "CASE-P"
    assert audit[-1]["detail"]["votes"] == sorted(v.id for v in votes)
    # promoting again adds nothing: the list already holds both files
    again = promote(store, "CASE-P", "new-material")
    assert again.files_promoted == 0 and again.already_in_list == 2 and again.entries_added == 0
    assert len(list(store.iter_entries(list_name="new-material"))) == 8
    # the promoted material is now known: a new case finds it exactly, with its category
    run_triage(TriageOptions("CASE-Q", [str(tree.ev / "photos")], tmp_path / "out2",
                             workers=1, lists=["new-material"]), store)
    rows = _rows(tmp_path / "out2")
    hits = [r for r in rows.values() if r["state"] == "known_exact"]
    assert {r["sha256"] for r in hits} == set(members)
    assert all(r["category_code"] == "C" for r in hits)
    store.close()


def test_cli_commands(tree: Tree, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from hashwatch.triage.cli import register

    app = typer.Typer()
    lists_app = typer.Typer()
    app.add_typer(lists_app, name="lists")
    register(app, lists_app)
    db = tmp_path / "hw.db"
    _make_store(db, tree).close()
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["triage", str(tree.ev / "photos"), "--case", "C9", "--out", str(out),
                            "-w", "1", "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert "known_exact" in r.output and (out / "report.html").exists()
    for who in ("a1", "a2", "a3"):
        r = runner.invoke(app, ["grade", "C9", "--cluster", "1", "--category", "uk:B",
                                "--analyst", who, "--db", str(db)])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["grade", "C9", "--cluster", "77", "--category", "uk:B",
                            "--analyst", "a1", "--db", str(db)])
    assert r.exit_code != 0 and "no cluster 77" in r.output
    r = runner.invoke(app, ["grades", "C9", "--json", "--db", str(db)])
    assert r.exit_code == 0
    g = json.loads(r.output)["grades"]
    assert g[0]["target"] == "cluster:1" and g[0]["status"] == "trusted"
    r = runner.invoke(app, ["lists", "promote", "C9", "--list", "national", "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert "promoted 2 file(s)" in r.output
    r = runner.invoke(app, ["grade", "NOPE", "--cluster", "1", "--category", "uk:B",
                            "--analyst", "a1", "--db", str(db)])
    assert r.exit_code != 0 and "no triage case" in r.output


def test_robust_option_finds_a_flipped_copy(tree: Tree, tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    im = Image.open(tree.known_src[0]).convert("RGB")
    (ev / "mirror.jpg").write_bytes(_jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 90))
    (ev / "rot90.jpg").write_bytes(_jpeg(im.transpose(Image.Transpose.ROTATE_90), 90))
    with _make_store(tmp_path / "hw.db", tree) as store:
        run_triage(TriageOptions("P1", [str(ev)], tmp_path / "plain", workers=1, robust=False),
                   store)
        run_triage(TriageOptions("R1", [str(ev)], tmp_path / "robust", workers=1, robust=True),
                   store)
    plain, robust = _rows(tmp_path / "plain"), _rows(tmp_path / "robust")
    for name in ("mirror.jpg", "rot90.jpg"):
        p = str(ev / name)
        assert plain[p]["state"] == "unknown"  # plain PDQ misses flips and rotations
        assert robust[p]["state"] == "known_near", robust[p]
        assert (robust[p]["category_scheme"], robust[p]["category_code"]) == ("uk", "A")


def test_one_and_two_workers_give_identical_results(tree: Tree, tmp_path: Path,
                                                    corpus: Path) -> None:
    """Matching runs in the pool workers (hashwatch.matchwork, indexes mapped in each), not
    in the parent: with one worker and with two, every file gets the same state, matches,
    route, distance and inliers, keypoint tier and archives included."""
    from hashwatch import robust
    from hashwatch.lists import add_records

    ev = tmp_path / "ev"
    ev.mkdir()
    im = Image.open(tree.known_src[1]).convert("RGB")
    w, h = im.size
    (ev / "mirror.jpg").write_bytes(_jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 90))
    # turned and cropped off-centre: only the keypoint tier finds it
    turned = im.rotate(12, resample=Image.Resampling.BICUBIC)
    (ev / "turned.jpg").write_bytes(_jpeg(turned.crop((int(w * 0.25), int(h * 0.1),
                                                       int(w * 0.95), int(h * 0.85))), 90))
    (ev / "copy.jpg").write_bytes(tree.known_src[2].read_bytes())
    for i, f in enumerate(sorted((corpus / "bsds500-val").glob("*.jpg"))[10:16]):
        (ev / f"other{i}.jpg").write_bytes(f.read_bytes())
    with zipfile.ZipFile(ev / "phone.zip", "w") as z:
        z.writestr("dcim/known.jpg", tree.known_src[3].read_bytes())
        z.writestr("dcim/mirror.jpg", _jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 80))
        z.writestr("note.txt", "x")
    (ev / "broken.jpg").write_bytes(tree.known_src[0].read_bytes()[:2000])
    with Store.open(tmp_path / "hw.db") as store:
        store.create_list("national", category_scheme="uk")
        add_records(store, "national", [hash_file(p, extras=robust.known_extras)
                                        for p in tree.known_src],
                    category=parse_category("uk:B"))
        one = run_triage(TriageOptions("W1", [str(ev)], tmp_path / "one", workers=1), store)
        two = run_triage(TriageOptions("W2", [str(ev)], tmp_path / "two", workers=2,
                                       chunk_files=2), store)
    assert one.counts == two.counts and one.files == two.files == 14
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert a.keys() == b.keys()
    keep = ("state", "route", "how", "distance", "inliers", "list", "matched_ref",
            "category_scheme", "category_code", "sha256", "pdq", "error", "pdq_matchable")
    for path in a:
        assert {k: a[path].get(k) for k in keep} == {k: b[path].get(k) for k in keep}, path
    assert a[str(ev / "turned.jpg")]["state"] == "known_near"
    assert a[str(ev / "mirror.jpg")]["state"] == "known_near"
    assert a[f"{ev / 'phone.zip'}!dcim/mirror.jpg"]["state"] == "known_near"
    # the matching CPU is counted where it ran (the workers), not lost
    assert two.timings["match"] > 0
