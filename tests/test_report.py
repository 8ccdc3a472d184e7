"""The investigator's case report end to end, on generated evidence that carries EXIF (three
fake cameras written with Pillow, GPS on some, one malformed), archive members with their own
timestamps and a video with a creation time and device tags (PyAV).

Checks every output against what was written into the evidence (not against the code's own
output): files.csv, report.json, case.vics.json (read back by the VICS reader and imported
into a list), the work database, report.pdf (text extracted with pypdf), manifest.sha256,
and report.html rendered in Chromium (no request leaves the page, charts present, counts
equal report.json); the test also makes the README's screenshot (docs/img/report.png).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from hashwatch import robust
from hashwatch.categories import Category
from hashwatch.demo import CAMERAS, demo_images, write_case_material
from hashwatch.formats import vics
from hashwatch.hashing import hash_file
from hashwatch.lists import add_records
from hashwatch.store import Store
from hashwatch.triage.report.methods import MEASURED
from hashwatch.triage.run import TriageOptions, run_triage
from test_service_browser import ARGS, chromium  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    images = demo_images()
    store = Store.open(tmp / "hw.db")
    store.create_list("known", source="test", category_scheme="uk")
    for i, img in enumerate(images[:8]):
        add_records(store, "known", [hash_file(img, extras=robust.known_extras)],
                    category=Category("uk", "ABC"[i % 3]), actor="test")
    evidence = tmp / "evidence"
    made = write_case_material(images, evidence)
    out = tmp / "case"
    summary = run_triage(TriageOptions(case_id="C-7", sources=[str(evidence)], out_dir=out,
                                       workers=1, examiner="A. Examiner",
                                       notes="Seized phone, item 3."), store)
    yield store, out, made, summary
    store.close()


def _csv(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "files.csv", newline="") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


def test_exif_devices_and_gps_per_file(case) -> None:
    _store, out, made, _ = case
    rows = _csv(out)
    for path, (cam, taken) in made["cameras"].items():
        make, model, serial, software, gps = CAMERAS[cam]
        r = rows[path]
        assert (r["make"], r["model"], r["software"]) == (make, model, software)
        assert r["serial"] == (serial or "")
        assert r["taken"] == taken.replace(":", "-", 2).replace(" ", "T")
        assert r["device"].startswith(f"{make} | {model} | ")
        if gps and path != made["bad_gps"]:
            assert abs(float(r["gps_lat"]) - gps[0]) < 1e-3
            assert abs(float(r["gps_lon"]) - gps[1]) < 1e-3
        else:
            assert r["gps_lat"] == r["gps_lon"] == ""
    bad = rows[made["bad_gps"]]
    # malformed metadata is a warning on the file, never a failed file
    assert bad["state"] == "known_near" and not bad["error"]
    assert "GPS reference 'X'" in bad["warnings"]
    for r in rows.values():  # file-system times on every file on disk
        if "!" not in r["path"]:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["fs_modified"]), r


def test_archive_members_and_video_times(case) -> None:
    _store, out, made, _ = case
    rows = _csv(out)
    for path, when in made["archives"].items():
        assert rows[path]["member_modified"] == when
        assert rows[path]["fs_modified"] == ""  # the archive's own time is not the member's
    vpath, created = made["video"]
    v = rows[vpath]
    assert v["taken"] == created and v["make"] == CAMERAS[2][0] and v["state"] == "known_near"
    rep = json.loads((out / "report.json").read_text())
    (video,) = rep["videos"]
    assert video["taken"] == created and CAMERAS[2][1] in video["device"]


def test_route_in_words_and_fields_no_placeholder(case) -> None:
    _store, out, _, _ = case
    rows = _csv(out)
    known = [r for r in rows.values() if r["state"].startswith("known")]
    assert known
    for r in known:
        assert r["route"] in ("exact", "pdq_full", "pdq_view", "pdq_region", "keypoints"), r
        assert r["matched_ref"].startswith("kodim") and r["list_version"].isdigit()
        assert r["how"] and r["matched_ref"] in r["how"]
        assert r["distance"] != "-1" and "-1" not in r["how"]
        if r["route"] == "keypoints":
            assert r["distance"] == "" and int(r["inliers"]) >= 15
        else:
            assert 0 <= int(r["distance"]) <= 31
    assert any(r["route"] == "exact" and "identical file" in r["how"] for r in known)
    conn = sqlite3.connect(out / "work.db")
    for (matches,) in conn.execute("SELECT matches FROM files WHERE state LIKE 'known%'"):
        for m in json.loads(matches):
            assert m["distance"] is None or m["distance"] >= 0
            assert m["how"] and m["list_version"] >= 1
    conn.close()


def test_leads_by_device_and_clusters(case) -> None:
    _store, out, _, _ = case
    rep = json.loads((out / "report.json").read_text())
    leads = {d["label"].split(",")[0]: d for d in rep["devices"]}
    kestrel = leads["Kestrel Optics K-100"]
    assert kestrel["lead"] == "same device as known material"
    assert kestrel["known"] == 1 and kestrel["unknown"] >= 3
    assert (kestrel["first_taken"], kestrel["last_taken"]) == ("2021-03-04T10:11:12",
                                                                "2021-04-01T18:31:00")
    assert leads["Marlin M2 Pro"]["lead"] == "unknown material only"
    assert rep["devices"][0]["lead"] == "same device as known material"
    clusters = rep["clusters"]
    assert [c["size"] for c in clusters] == sorted((c["size"] for c in clusters), reverse=True)
    pair = next(c for c in clusters if any("IMG_0003-small" in m["path"] for m in c["members"]))
    assert pair["size"] >= 2 and pair["devices"][0]["label"].startswith("Kestrel Optics")
    assert pair["first_taken"] == "2021-04-01T18:30:00" and pair["links"] >= 1


def test_vics_export_carries_metadata_and_reads_back(case, tmp_path) -> None:
    store, out, made, _ = case
    rows = _csv(out)
    with open(out / "case.vics.json", "rb") as fh:
        media = list(vics.iter_media(fh))
    back = {m["MediaFiles"][0]["FilePath"]: vics.media_metadata(m) for m in media}
    for path in list(made["cameras"]) + list(made["archives"]) + [made["video"][0]]:
        r, meta = rows[path], back[path]
        for key in ("make", "model", "serial", "software", "taken"):
            assert meta.get(key, "") == r[key], (path, key)
        for key in ("gps_lat", "gps_lon"):
            assert (str(meta[key]) if key in meta else "") == r[key]
        assert meta.get("fs_modified") == (r["member_modified"] or r["fs_modified"])
        assert meta.get("fs_created", "") == r["fs_created"]
    # imported as a list: entries remember the device and date
    store.create_list("from-case")
    with open(out / "case.vics.json", "rb") as fh:
        store.add_entries("from-case", (e for e in vics.read(fh)
                                        if not isinstance(e, vics.RowError)))
    labels = {lab for e in store.iter_entries(list_name="from-case") for lab in e.labels}
    assert "device:Kestrel Optics | K-100 | serial=KO-000123" in labels
    assert "taken:2021-03-04T10:11:12" in labels


def test_manifest_verifies_every_output(case) -> None:
    _store, out, _, summary = case
    lines = (out / "manifest.sha256").read_text().splitlines()
    names = {line.split("  ", 1)[1] for line in lines}
    assert names == {"report.html", "report.pdf", "files.csv", "report.json", "case.vics.json"}
    for line in lines:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert set(summary.outputs) == names | {"manifest.sha256"}


def test_pdf_text_matches_report_json(case) -> None:
    from pypdf import PdfReader

    _store, out, _, _ = case
    rep = json.loads((out / "report.json").read_text())
    text = "\n".join(p.extract_text() or "" for p in PdfReader(out / "report.pdf").pages)
    flat = re.sub(r"\s+", " ", text)
    sm = rep["summary"]
    for label, key in (("files examined (archive members included)", "files"),
                       ("known material (on a list)", "known"),
                       ("new material (pictures and videos on no list)", "new"),
                       ("could not be read or decoded", "errors")):
        assert re.search(re.escape(label) + r" " + f"{sm[key]:,}" + r"\b", flat), label
    for cat, n in rep["per_category"].items():
        assert re.search(re.escape(cat) + r" " + str(n) + r"\b", flat), cat
    assert "A. Examiner" in flat and "Seized phone, item 3." in flat and "C-7" in flat
    for li in rep["lists"]:  # the content digest, possibly wrapped inside its table cell
        assert li["digest"] in re.sub(r"\s+", "", text)
    for d in rep["devices"]:
        assert d["label"].split(",")[0] in flat
    assert "Methods" in flat and MEASURED[0]["rate"] in flat


def test_methods_figures_are_the_measured_ones() -> None:
    bench = (ROOT / "BENCHMARKS.md").read_text()
    for m in MEASURED:
        assert m["section"] in bench
        assert m["rate"] in bench and m["figure"] in bench
        assert m["command"].split(" --out ")[0].split("python ")[1] in bench


def test_report_renders_in_chromium(case, chromium) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    _store, out, _, _ = case
    rep = json.loads((out / "report.json").read_text())
    url = (out / "report.html").as_uri()
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2000})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url)
            page.wait_for_load_state("load")
            charts = page.eval_on_selector_all(
                "svg.chart", "els => els.map(e => [e.dataset.chart, e.getBoundingClientRect()"
                ".width, e.querySelectorAll('path, rect, use').length])")
            counts = page.eval_on_selector_all(
                "[data-count]", "els => els.map(e => [e.dataset.count, e.textContent])")
            cats = page.eval_on_selector_all(
                "table[data-table=per_category] tr", "rs => rs.slice(1).map(r => "
                "Array.from(r.cells).map(c => c.textContent))")
            shot = page.screenshot(clip={"x": 0, "y": 0, "width": 1280, "height": 1500})
        finally:
            browser.close()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    # the README's screenshot: written when missing, refreshed with HASHWATCH_UPDATE_DOCS=1
    # (not on every run, so a test run leaves the work tree clean)
    doc = ROOT / "docs" / "img" / "report.png"
    if not doc.exists() or os.environ.get("HASHWATCH_UPDATE_DOCS") == "1":
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_bytes(shot)
    assert requests == [url]  # the page itself and nothing else
    assert {c[0] for c in charts} == {"states", "categories", "devices", "timeline"}
    assert all(w > 200 and n > 5 for _, w, n in charts)
    got = {k: int(v.replace(",", "")) for k, v in counts}
    sm = rep["summary"]
    assert got == {k: sm[k] for k in ("files", "known", "known_exact", "known_near", "new",
                                      "not_image", "errors", "clusters", "devices")}
    assert {c: int(n) for c, n in cats} == rep["per_category"]
