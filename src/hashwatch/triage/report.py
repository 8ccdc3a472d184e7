"""Case outputs in --out DIR: files.csv, report.json, case.vics.json and report.html.

Every output holds hashes of seized files, so each is created owner-only (0600).
report.html is one self-contained page: inline CSS and script, no external asset or link.
No picture is shown unless the run asked for thumbnails; thumbnails are small greyscale
JPEGs inlined as data: URIs, blurred until clicked.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hashwatch import __version__
from hashwatch.formats import vics
from hashwatch.triage.classify import STATES

__all__ = ["CSV_COLUMNS", "summarise", "vics_records", "write_reports"]

CSV_COLUMNS = ["path", "size", "md5", "sha1", "sha256", "pdq", "state", "distance", "list",
               "category_scheme", "category_code", "cluster", "error"]
MAX_CLUSTERS_SHOWN = 2000
MAX_THUMBS_PER_CLUSTER = 6


def _private(path: Path, binary: bool = False) -> IO[Any]:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file from an earlier run keeps owner-only too
    if binary:
        return os.fdopen(fd, "wb")
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


def _cats(row: sqlite3.Row) -> list[str]:
    return json.loads(row["categories"] or "[]")


def category_key(row: sqlite3.Row) -> str:
    cats = _cats(row)
    if not cats:
        return "uncategorised"
    if len(cats) == 1:
        return cats[0]
    return "conflict: " + " | ".join(cats)


def _files(conn: sqlite3.Connection, where: str = "", args: tuple = ()) -> Iterator[sqlite3.Row]:
    q = ("SELECT id, path, source, container, kind, format, size, md5, sha1, sha256, pdq,"
         " pdq_quality, width, height, duration, frame_count, state, distance, lists, categories,"
         " conflict, matches, cluster, error FROM files " + where + " ORDER BY id")
    yield from conn.execute(q, args)


def summarise(conn: sqlite3.Connection) -> dict[str, Any]:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    runs = [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY id")]
    for r in runs:
        r["lists"] = json.loads(r["lists"])
        r["sources"] = json.loads(r["sources"])
    per_state: Counter[str] = Counter({s: 0 for s in STATES})
    per_cat: Counter[str] = Counter()
    per_scheme: Counter[str] = Counter()
    per_source: dict[str, Counter[str]] = defaultdict(Counter)
    per_kind: Counter[str] = Counter()
    in_archives = 0
    total_bytes = 0
    conflicts: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    known: list[dict[str, Any]] = []
    for r in _files(conn):
        st = r["state"]
        per_state[st] += 1
        per_kind[r["kind"]] += 1
        per_source[r["source"]][st] += 1
        if r["container"]:
            in_archives += 1
        total_bytes += r["size"] or 0
        if st in ("known_exact", "known_near"):
            key = category_key(r)
            per_cat[key] += 1
            cats = _cats(r)
            per_scheme["conflict" if len(cats) > 1 else
                       (cats[0].split(":", 1)[0] if cats else "uncategorised")] += 1
            item = {"path": r["path"], "sha256": r["sha256"], "state": st,
                    "distance": r["distance"], "lists": r["lists"].split("|"),
                    "categories": cats, "matches": json.loads(r["matches"])}
            known.append(item)
            if r["conflict"]:
                conflicts.append(item)
        if st == "error" or (r["error"] and st != "known_exact"):
            errors.append({"path": r["path"], "error": r["error"], "state": st})
    videos = [
        {"path": v["path"], "sha256": v["sha256"], "state": v["state"], "format": v["format"],
         "duration": v["duration"], "frame_count": v["frame_count"],
         "width": v["width"], "height": v["height"], "frames_hashed": v["n"]}
        for v in conn.execute(
            "SELECT f.path, f.sha256, f.state, f.format, f.duration, f.frame_count, f.width,"
            " f.height, (SELECT COUNT(*) FROM frames WHERE file_id = f.id) AS n"
            " FROM files f WHERE f.kind = 'video' ORDER BY f.id")
    ]
    clusters = []
    for c in conn.execute("SELECT cluster, size, representative FROM clusters ORDER BY cluster"):
        members = [{"id": m["id"], "path": m["path"], "sha256": m["sha256"], "pdq": m["pdq"]}
                   for m in conn.execute("SELECT id, path, sha256, pdq FROM files WHERE cluster=?"
                                         " ORDER BY id", (c["cluster"],))]
        clusters.append({"cluster": c["cluster"], "size": c["size"],
                         "representative": c["representative"], "members": members})
    return {
        "case_id": meta.get("case_id"),
        "tool": {"name": "hashwatch", "version": __version__},
        "created_at": meta.get("created_at"),
        "started_at": runs[0]["started_at"] if runs else None,
        "finished_at": runs[-1]["finished_at"] if runs else None,
        "runs": runs,
        "lists": runs[-1]["lists"] if runs else [],
        "sources": json.loads(meta.get("sources", "[]")),
        "pdq_threshold": int(meta.get("pdq_threshold", "31")),
        "files": sum(per_state.values()),
        "bytes": total_bytes,
        "in_archives": in_archives,
        "per_state": dict(per_state),
        "per_kind": dict(per_kind),
        "per_category": dict(sorted(per_cat.items())),
        "per_scheme": dict(sorted(per_scheme.items())),
        "per_source": {k: dict(v) for k, v in sorted(per_source.items())},
        "known": known,
        "conflicts": conflicts,
        "errors": errors,
        "videos": videos,
        "clusters": clusters,
    }


def write_csv(conn: sqlite3.Connection, path: Path) -> int:
    n = 0
    with _private(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in _files(conn):
            cats = _cats(r)
            # conflicting categories stay visible: every one, aligned, separated by '|'
            schemes = "|".join(c.split(":", 1)[0] for c in cats)
            codes = "|".join(c.split(":", 1)[1] for c in cats)
            w.writerow([r["path"], "" if r["size"] is None else r["size"], r["md5"] or "",
                        r["sha1"] or "", r["sha256"] or "", r["pdq"] or "", r["state"],
                        "" if r["distance"] is None else r["distance"], r["lists"], schemes,
                        codes, "" if r["cluster"] is None else r["cluster"], r["error"] or ""])
            n += 1
    return n


def vics_records(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    """VICS 2.0 Media records of the case: MD5, SHA1, SHA256, category, PDQ as an
    AlternativeHash (video frames as ``PDQ:frame@SECONDS``)."""
    for n, r in enumerate(_files(conn, "WHERE md5 IS NOT NULL"), start=1):
        rec: dict[str, Any] = {"MediaID": n, "MD5": r["md5"].upper(), "SHA1": r["sha1"].upper(),
                               "SHA256": r["sha256"].upper(), "MediaSize": r["size"]}
        cats = _cats(r)
        vics_cats = [c for c in cats if c.startswith("vics:")]
        if vics_cats:
            rec["Category"] = int(vics_cats[0].split(":", 1)[1])
        tags = [c for c in cats if c not in vics_cats[:1]]
        if tags:
            rec["Tags"] = tags
        alts = []
        if r["kind"] == "video":
            for f in conn.execute("SELECT t, pdq FROM frames WHERE file_id = ? ORDER BY t",
                                  (r["id"],)):
                alts.append({"HashName": f"PDQ:frame@{f['t']:g}s", "HashValue": f["pdq"]})
        elif r["pdq"]:
            alts.append({"HashName": "PDQ", "HashValue": r["pdq"]})
        if alts:
            rec["AlternativeHashes"] = alts
        rec["MediaFiles"] = [{"FileName": os.path.basename(r["path"].split("!")[-1]),
                              "FilePath": r["path"]}]
        rec["Comments"] = f"hashwatch triage: {r['state']}" + (
            f" (distance {r['distance']})" if r["state"] == "known_near" else "")
        yield rec


def write_vics(conn: sqlite3.Connection, path: Path) -> int:
    with _private(path) as fh:
        return vics.write_records(vics_records(conn), fh)


def write_reports(conn: sqlite3.Connection, out: Path, *, thumbnails: bool = False
                  ) -> dict[str, str]:
    out = Path(out)
    s = summarise(conn)
    with _private(out / "report.json") as fh:
        json.dump(s, fh, indent=1)
    write_csv(conn, out / "files.csv")
    write_vics(conn, out / "case.vics.json")
    with _private(out / "report.html") as fh:
        fh.write(render_html(conn, s, thumbnails=thumbnails))
    return {k: str(out / k) for k in ("report.html", "files.csv", "report.json",
                                      "case.vics.json")}


# -- HTML ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#111;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right}code{font-size:.85em;word-break:break-all}
.known_exact{color:#a00}.known_near{color:#c50}.error{color:#666}
.thumb{width:96px;height:96px;object-fit:contain;filter:grayscale(1) blur(10px);cursor:pointer;
background:#ddd;margin:2px}
.thumb.shown{filter:grayscale(1)}.note{color:#555;font-size:.9em}
"""
_JS = """
document.addEventListener('click',function(e){var t=e.target;
if(t.classList&&t.classList.contains('thumb')){t.classList.toggle('shown');}});
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f"<td class=n>{_e(v)}</td>" if i in numeric else f"<td>{v}</td>"
            for i, v in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _thumb_img(blob: bytes | None, label: str) -> str:
    if not blob:
        return ""
    data = base64.b64encode(blob).decode("ascii")
    return (f'<img class="thumb" alt="{_e(label)} (blurred: click to reveal)" '
            f'title="click to reveal / hide" src="data:image/jpeg;base64,{data}">')


def render_html(conn: sqlite3.Connection, s: dict[str, Any], *, thumbnails: bool = False) -> str:
    p: list[str] = []
    a = p.append
    a("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>")
    a(f"<title>hashwatch triage report: case {_e(s['case_id'])}</title>")
    a(f"<style>{_CSS}</style></head><body>")
    a(f"<h1>Triage report &mdash; case {_e(s['case_id'])}</h1>")
    a("<p class=note>Generated by hashwatch. Hashes of every file are listed below so that "
      "each count ties back to the evidence. " + (
          "Thumbnails are greyscale and blurred: click one to reveal it." if thumbnails else
          "No picture is shown in this report.") + "</p>")
    a("<h2>Run</h2>")
    a(_table(["item", "value"], [
        ["tool", _e(f"hashwatch {s['tool']['version']}")],
        ["case", _e(s["case_id"])],
        ["started (UTC)", _e(s["started_at"])],
        ["finished (UTC)", _e(s["finished_at"])],
        ["runs (resumed runs included)", _e(len(s["runs"]))],
        ["sources", "<br>".join(_e(x) for x in s["sources"])],
        ["PDQ threshold", _e(s["pdq_threshold"])],
        ["files (archive members included)", _e(f"{s['files']:,}")],
        ["of which inside archives", _e(f"{s['in_archives']:,}")],
        ["bytes", _e(f"{s['bytes']:,}")],
    ]))
    a("<h3>Lists matched against</h3>")
    a(_table(["list", "version", "updated (UTC)", "enabled"],
             [[_e(li["name"]), _e(li["version"]), _e(li.get("updated_at")),
               _e("yes" if li["enabled"] else "no")] for li in s["lists"]]))
    if len(s["runs"]) > 1:
        a("<h3>Runs</h3>")
        a(_table(["run", "started", "finished", "files done", "tool"],
                 [[_e(r["id"]), _e(r["started_at"]), _e(r["finished_at"] or "interrupted"),
                   _e(r["files_done"]), _e(r["tool_version"])] for r in s["runs"]]))
    a("<h2>Counts per state</h2>")
    a(_table(["state", "files"], [[f"<span class={k}>{_e(k)}</span>", _e(v)]
                                  for k, v in s["per_state"].items()], {1}))
    a("<h2>Known material: counts per category</h2>")
    a(_table(["category (scheme:code)", "files"],
             [[_e(k), _e(v)] for k, v in s["per_category"].items()] or [["none", "0"]], {1}))
    a("<h3>Per scheme</h3>")
    a(_table(["scheme", "files"],
             [[_e(k), _e(v)] for k, v in s["per_scheme"].items()] or [["none", "0"]], {1}))
    if s["conflicts"]:
        a("<h3>Conflicting categories (not resolved: for the analyst to decide)</h3>")
        a(_table(["file", "categories", "lists"],
                 [[f"<code>{_e(c['path'])}</code>", _e(" | ".join(c["categories"])),
                   _e(", ".join(c["lists"]))] for c in s["conflicts"]]))
    a("<h2>Counts per source</h2>")
    a(_table(["source"] + list(STATES),
             [[f"<code>{_e(src)}</code>"] + [_e(c.get(st, 0)) for st in STATES]
              for src, c in s["per_source"].items()], set(range(1, 6))))
    a("<h2>Known files</h2>")
    a(_table(["file", "state", "distance", "categories", "lists"],
             [[f"<code>{_e(k['path'])}</code>", f"<span class={k['state']}>{_e(k['state'])}</span>",
               _e(k["distance"]), _e(" | ".join(k["categories"]) or "uncategorised"),
               _e(", ".join(k["lists"]))] for k in s["known"]]))
    multi = [c for c in s["clusters"] if c["size"] > 1]
    a(f"<h2>Unknown images: {len(s['clusters'])} clusters for review "
      f"({len(multi)} with near-duplicates), largest first</h2>")
    a("<p class=note>Grade a cluster with <code>hashwatch grade CASE --cluster N --category "
      "SCHEME:CODE --analyst ID</code>.</p>")
    rows = []
    for c in s["clusters"][:MAX_CLUSTERS_SHOWN]:
        thumbs = ""
        if thumbnails:
            ids = [m["id"] for m in c["members"][:MAX_THUMBS_PER_CLUSTER]]
            marks = ",".join("?" * len(ids))
            blobs = conn.execute(f"SELECT path, thumb FROM files WHERE id IN ({marks}) "
                                 "ORDER BY id", ids).fetchall()
            thumbs = "".join(_thumb_img(b["thumb"], b["path"]) for b in blobs)
        files = "<br>".join(f"<code>{_e(m['path'])}</code>" for m in c["members"][:20])
        if c["size"] > 20:
            files += f"<br>... and {c['size'] - 20} more (files.csv, column cluster)"
        rows.append([_e(c["cluster"]), _e(c["size"]), (thumbs + "<br>" if thumbs else "") + files])
    a(_table(["cluster", "files", "members"], rows, {0, 1}))
    if len(s["clusters"]) > MAX_CLUSTERS_SHOWN:
        a(f"<p class=note>{len(s['clusters']) - MAX_CLUSTERS_SHOWN} smaller clusters are in "
          "report.json and files.csv.</p>")
    if s["videos"]:
        a(f"<h2>Videos ({len(s['videos'])}): about one frame per second hashed</h2>")
        a(_table(["file", "state", "duration s", "frames", "frames hashed", "size"],
                 [[f"<code>{_e(v['path'])}</code>", f"<span class={v['state']}>"
                   f"{_e(v['state'])}</span>", _e(v["duration"]), _e(v["frame_count"]),
                   _e(v["frames_hashed"]), _e(f"{v['width']}x{v['height']}")]
                  for v in s["videos"]], {2, 3, 4}))
    if s["errors"]:
        a(f"<h2>Files that could not be read or decoded ({len(s['errors'])})</h2>")
        a(_table(["file", "state", "reason"],
                 [[f"<code>{_e(x['path'])}</code>", _e(x["state"]), _e(x["error"])]
                  for x in s["errors"]]))
    a("<h2>Every file, with its SHA-256</h2>")
    a("<details><summary>show all files</summary>")
    a("<table><tr><th>#</th><th>file</th><th>size</th><th>SHA-256</th><th>state</th></tr>")
    for r in conn.execute("SELECT id, path, size, sha256, state FROM files ORDER BY id"):
        a(f"<tr><td class=n>{r['id']}</td><td><code>{_e(r['path'])}</code></td>"
          f"<td class=n>{_e(r['size'])}</td><td><code>{_e(r['sha256'])}</code></td>"
          f"<td class={r['state']}>{_e(r['state'])}</td></tr>")
    a("</table></details>")
    a(f"<script>{_JS}</script></body></html>\n")
    return "\n".join(p)
