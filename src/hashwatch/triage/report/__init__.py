"""Case outputs in --out DIR: report.html, report.pdf, files.csv, report.json, case.vics.json
and manifest.sha256 (the SHA-256 of every other output, in ``sha256sum`` format, so the
outputs can be verified later with ``sha256sum -c manifest.sha256``).

Every output holds hashes of seized files, so each is created owner-only (0600).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from hashwatch.triage.report.document import build
from hashwatch.triage.report.summary import category_key, summarise
from hashwatch.triage.report.tables import (
    CSV_COLUMNS,
    private_file,
    vics_records,
    write_csv,
    write_vics,
)

__all__ = ["CSV_COLUMNS", "OUTPUTS", "category_key", "summarise", "vics_records",
           "write_manifest", "write_reports"]

OUTPUTS = ("report.html", "report.pdf", "files.csv", "report.json", "case.vics.json")
MANIFEST = "manifest.sha256"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(out: Path, names: list[str]) -> Path:
    """``manifest.sha256``: ``<sha256>  <name>`` per output (``sha256sum -c`` reads it)."""
    path = out / MANIFEST
    with private_file(path) as fh:
        for name in names:
            fh.write(f"{_sha256(out / name)}  {name}\n")
    return path


def _all_files(conn: sqlite3.Connection) -> list[list[str]]:
    return [[f"{r['id']:,}", r["path"], "" if r["size"] is None else f"{r['size']:,}",
             r["sha256"] or "", r["state"], r["taken"] or "", r["fs_modified"] or ""]
            for r in conn.execute("SELECT id, path, size, sha256, state, taken, fs_modified "
                                  "FROM files ORDER BY id")]


def write_reports(conn: sqlite3.Connection, out: Path, *, thumbnails: bool = False,
                  pdf: bool = True) -> dict[str, str]:
    """Write every output of the case from its work database; returns name -> path
    (``manifest.sha256`` included). ``pdf=False`` skips report.pdf (it is the slowest)."""
    from hashwatch.triage.report.html import render_html

    out = Path(out)
    s = summarise(conn)
    with private_file(out / "report.json") as fh:
        json.dump(s, fh, indent=1, ensure_ascii=False)
    write_csv(conn, out / "files.csv")
    write_vics(conn, out / "case.vics.json")
    sections = build(s, _all_files(conn))
    with private_file(out / "report.html") as fh:
        fh.write(render_html(conn, s, sections, thumbnails=thumbnails))
    names = ["report.html", "files.csv", "report.json", "case.vics.json"]
    if pdf:
        from hashwatch.triage.report.pdf import render_pdf

        path = out / "report.pdf"
        private_file(path, binary=True).close()  # created 0600 before fpdf2 writes it
        render_pdf(path, s, sections)
        os.chmod(path, 0o600)
        names.insert(1, "report.pdf")
    elif (out / "report.pdf").exists():
        (out / "report.pdf").unlink()  # a stale PDF would contradict the new outputs
    write_manifest(out, names)
    return {k: str(out / k) for k in names + [MANIFEST]}
