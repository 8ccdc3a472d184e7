"""files.csv (one row per file, archive members included) and case.vics.json (Project VIC).

VICS 2.0 carries file-system times on each ``MediaFiles`` item (``Created``, ``Written``,
``Accessed``: ISO 8601) and EXIF as ``Exifs`` rows of ``{PropertyName, PropertyValue}`` on
the Media record; hashwatch writes the EXIF tag names (``Make``, ``Model``,
``BodySerialNumber``, ``Software``, ``DateTimeOriginal``) and ``GPSLatitude`` /
``GPSLongitude`` as signed decimal degrees. :func:`hashwatch.formats.vics.media_metadata`
reads them back.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hashwatch.formats import vics
from hashwatch.signals.vpdq import VpdqFeature, format_vpdq
from hashwatch.triage.report.summary import cats, files, meta_of

__all__ = ["CSV_COLUMNS", "private_file", "vics_records", "write_csv", "write_vics"]

CSV_COLUMNS = [
    "path", "size", "md5", "sha1", "sha256", "pdq", "state", "route", "how", "distance",
    "inliers", "list", "list_version", "matched_ref", "category_scheme", "category_code",
    "cluster", "device", "make", "model", "serial", "software", "taken", "gps_lat", "gps_lon",
    "fs_modified", "fs_changed", "fs_accessed", "fs_created", "member_modified", "error",
    "warnings", "pdq_matchable", "pdq_reason",
]
_META_COLUMNS = ("make", "model", "serial", "software", "taken", "gps_lat", "gps_lon",
                 "fs_modified", "fs_changed", "fs_accessed", "fs_created", "member_modified")


def private_file(path: Path, binary: bool = False) -> IO[Any]:
    """Create or truncate ``path`` owner-only (every case output holds hashes)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file from an earlier run keeps owner-only too
    if binary:
        return os.fdopen(fd, "wb")
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


def _v(x: Any) -> Any:
    return "" if x is None else x


def write_csv(conn: sqlite3.Connection, path: Path) -> int:
    n = 0
    with private_file(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        # videos and animations: matchable when any kept frame is (not only the record's PDQ)
        best_frame = dict(conn.execute(
            "SELECT file_id, MAX(quality) FROM frames GROUP BY file_id").fetchall())
        for r in files(conn):
            c = cats(r)
            m = meta_of(r)
            # conflicting categories stay visible: every one, aligned, separated by '|'
            schemes = "|".join(x.split(":", 1)[0] for x in c)
            codes = "|".join(x.split(":", 1)[1] for x in c)
            warnings = json.loads(r["warnings"]) if r["warnings"] else []
            w.writerow([r["path"], _v(r["size"]), _v(r["md5"]), _v(r["sha1"]), _v(r["sha256"]),
                        _v(r["pdq"]), r["state"], _v(r["route"]), _v(r["how"]),
                        _v(r["distance"]), _v(r["inliers"]), r["lists"], _v(r["list_version"]),
                        _v(r["matched_ref"]), schemes, codes, _v(r["cluster"]), _v(r["device"])]
                       + [_v(m.get(k)) for k in _META_COLUMNS]
                       + [_v(r["error"]), " | ".join(warnings)]
                       + list(_matchable(r, best_frame.get(r["id"]))))
            n += 1
    return n


def _matchable(r: sqlite3.Row, best_frame: int | None) -> tuple[str, str]:
    """pdq_matchable / pdq_reason: whether the file's PDQ (a video's or animation's best kept
    frame) was good enough to match perceptually, and if not why; blank for non-pictures."""
    from types import SimpleNamespace

    from hashwatch.matcher import pdq_matchability

    if r["kind"] not in ("image", "video"):
        return "", ""
    frames = [SimpleNamespace(quality=best_frame)] if best_frame is not None else None
    ok, why = pdq_matchability(SimpleNamespace(frames=frames, pdq=r["pdq"],
                                               pdq_quality=r["pdq_quality"], error=r["error"]))
    return ("true" if ok else "false"), why or ""


_EXIF_NAMES = (("make", "Make"), ("model", "Model"), ("serial", "BodySerialNumber"),
               ("software", "Software"), ("taken", "DateTimeOriginal"),
               ("gps_lat", "GPSLatitude"), ("gps_lon", "GPSLongitude"))


def vics_records(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    """VICS 2.0 Media records of the case: MD5, SHA1, SHA256, category, PDQ as an
    AlternativeHash (video frames as ``PDQ:frame@SECONDS`` and the video's ``vPDQ``), EXIF /
    container metadata as ``Exifs``, file times on ``MediaFiles``, and how the file matched
    in ``Comments``."""
    for n, r in enumerate(files(conn, "WHERE md5 IS NOT NULL"), start=1):
        rec: dict[str, Any] = {"MediaID": n, "MD5": r["md5"].upper(), "SHA1": r["sha1"].upper(),
                               "SHA256": r["sha256"].upper(), "MediaSize": r["size"]}
        c = cats(r)
        vics_cats = [x for x in c if x.startswith("vics:")]
        if vics_cats:
            rec["Category"] = int(vics_cats[0].split(":", 1)[1])
        tags = [x for x in c if x not in vics_cats[:1]]
        if tags:
            rec["Tags"] = tags
        alts = []
        if r["kind"] == "video":
            frames = conn.execute("SELECT t, pdq, quality, cut FROM frames WHERE file_id = ? "
                                  "ORDER BY t", (r["id"],)).fetchall()
            for f in frames:
                alts.append({"HashName": f"PDQ:frame@{f['t']:g}s", "HashValue": f["pdq"]})
            grid = [f for f in frames if not f["cut"]]  # frames kept after a cut are not
            if grid:  # the video's vPDQ, in the reference's interchange form
                alts.append({"HashName": "vPDQ", "HashValue": format_vpdq(
                    VpdqFeature(f["pdq"], f["quality"], f["t"]) for f in grid)})
        elif r["pdq"]:
            alts.append({"HashName": "PDQ", "HashValue": r["pdq"]})
        if alts:
            rec["AlternativeHashes"] = alts
        m = meta_of(r)
        exifs = [{"PropertyName": name, "PropertyValue": str(m[key])}
                 for key, name in _EXIF_NAMES if m.get(key) not in (None, "")]
        if exifs:
            rec["Exifs"] = exifs
        mf: dict[str, Any] = {"FileName": os.path.basename(r["path"].split("!")[-1]),
                              "FilePath": r["path"]}
        for key, name in (("fs_created", "Created"), ("fs_accessed", "Accessed")):
            if m.get(key):
                mf[name] = m[key]
        written = m.get("member_modified") or m.get("fs_modified")
        if written:
            mf["Written"] = written
        rec["MediaFiles"] = [mf]
        comment = f"hashwatch triage: {r['state']}"
        if r["how"]:
            comment += f"; {r['how']}"
        rec["Comments"] = comment
        yield rec


def write_vics(conn: sqlite3.Connection, path: Path) -> int:
    with private_file(path) as fh:
        return vics.write_records(vics_records(conn), fh)
