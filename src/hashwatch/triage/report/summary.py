"""A case's work database -> the facts every output shows (``report.json`` is exactly this).

Besides counts per state, category and source, it gathers the leads among unknown material:
devices (make + model + serial, or + software) with their time spans and how they link to
known material, and near-duplicate clusters with their devices and dates, ordered largest and
most linked first.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from hashwatch import __version__
from hashwatch.metadata import device_label
from hashwatch.triage.classify import STATES
from hashwatch.triage.report.methods import methods

__all__ = ["category_key", "cluster_facts", "device_leads", "files", "summarise"]

KNOWN = ("known_exact", "known_near")


def cats(row: sqlite3.Row) -> list[str]:
    return json.loads(row["categories"] or "[]")


def category_key(row: sqlite3.Row) -> str:
    c = cats(row)
    if not c:
        return "uncategorised"
    if len(c) == 1:
        return c[0]
    return "conflict: " + " | ".join(c)


def files(conn: sqlite3.Connection, where: str = "", args: tuple[Any, ...] = ()
          ) -> Iterator[sqlite3.Row]:
    q = ("SELECT id, path, source, container, kind, format, size, md5, sha1, sha256, pdq,"
         " pdq_quality, width, height, duration, frame_count, state, distance, lists, categories,"
         " conflict, matches, cluster, error, route, how, inliers, matched_ref, list_version,"
         " meta, warnings, device, taken, fs_modified FROM files " + where + " ORDER BY id")
    yield from conn.execute(q, args)


def meta_of(row: sqlite3.Row) -> dict[str, Any]:
    return json.loads(row["meta"] or "{}")


def _span(times: list[str]) -> tuple[str | None, str | None]:
    ts = sorted(t for t in times if t)
    return (ts[0], ts[-1]) if ts else (None, None)


def device_leads(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every recording device seen in the case, strongest lead first: devices that took both
    known and unknown pictures (the same camera as known material: a lead to new victims),
    then by unknown files. Each: device key and label, file counts per state, the time span
    of the pictures it took (EXIF / container times) and the clusters of its unknown files."""
    by: dict[str, dict[str, Any]] = {}
    for r in conn.execute("SELECT device, state, taken, cluster, categories FROM files "
                          "WHERE device IS NOT NULL"):
        d = by.setdefault(r["device"], {"device": r["device"], "label": device_label(r["device"]),
                                        "files": 0, "known": 0, "unknown": 0, "times": [],
                                        "clusters": set(), "known_categories": Counter()})
        d["files"] += 1
        if r["state"] in KNOWN:
            d["known"] += 1
            for c in json.loads(r["categories"] or "[]") or ["uncategorised"]:
                d["known_categories"][c] += 1
        elif r["state"] == "unknown":
            d["unknown"] += 1
            if r["cluster"] is not None:
                d["clusters"].add(r["cluster"])
        d["times"].append(r["taken"])
    out = []
    for d in by.values():
        first, last = _span(d.pop("times"))
        d["first_taken"], d["last_taken"] = first, last
        d["clusters"] = sorted(d["clusters"])
        d["known_categories"] = dict(d["known_categories"].most_common())
        d["lead"] = ("same device as known material" if d["known"] and d["unknown"] else
                     "unknown material only" if d["unknown"] else "known material only")
        out.append(d)
    out.sort(key=lambda d: (not (d["known"] and d["unknown"]), -d["unknown"], -d["files"],
                            d["device"]))
    return out


def cluster_facts(conn: sqlite3.Connection, leads: list[dict[str, Any]] | None = None,
                  members_shown: int | None = None) -> list[dict[str, Any]]:
    """Clusters of unknown images with their devices, date span and links, largest and most
    linked first. ``links``: how many known files share a device with the cluster."""
    if leads is None:
        leads = device_leads(conn)
    known_by_device = {d["device"]: d["known"] for d in leads}
    members: dict[int, list[sqlite3.Row]] = defaultdict(list)
    for r in conn.execute("SELECT id, path, sha256, pdq, cluster, device, taken, fs_modified "
                          "FROM files WHERE cluster IS NOT NULL ORDER BY id"):
        members[r["cluster"]].append(r)
    out = []
    for c in conn.execute("SELECT cluster, size, representative FROM clusters"):
        rows = members.get(c["cluster"], [])
        devs = Counter(r["device"] for r in rows if r["device"])
        first, last = _span([r["taken"] for r in rows])
        mfirst, mlast = _span([r["fs_modified"] for r in rows])
        links = sum(known_by_device.get(d, 0) for d in devs)
        shown = rows if members_shown is None else rows[:members_shown]
        out.append({
            "cluster": c["cluster"], "size": c["size"], "representative": c["representative"],
            "devices": [{"device": d, "label": device_label(d), "files": n}
                        for d, n in devs.most_common()],
            "first_taken": first, "last_taken": last,
            "first_modified": mfirst, "last_modified": mlast, "links": links,
            "members": [{"id": r["id"], "path": r["path"], "sha256": r["sha256"],
                         "pdq": r["pdq"], "device": r["device"], "taken": r["taken"]}
                        for r in shown],
        })
    out.sort(key=lambda c: (-c["size"], -c["links"], c["cluster"]))
    return out


def _month(t: str | None) -> str | None:
    return t[:7] if t and len(t) >= 7 and t[4] == "-" else None


def summarise(conn: sqlite3.Connection) -> dict[str, Any]:
    """Everything report.json holds (see README, "Investigator triage")."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    runs = [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY id")]
    for r in runs:
        r["lists"] = json.loads(r["lists"])
        r["sources"] = json.loads(r["sources"])
    per_state: Counter[str] = Counter({s: 0 for s in STATES})
    per_cat: Counter[str] = Counter()
    per_scheme: Counter[str] = Counter()
    per_route: Counter[str] = Counter()
    per_source: dict[str, Counter[str]] = defaultdict(Counter)
    per_kind: Counter[str] = Counter()
    taken_months: dict[str, Counter[str]] = defaultdict(Counter)
    modified_months: dict[str, Counter[str]] = defaultdict(Counter)
    in_archives = 0
    total_bytes = 0
    with_gps = with_taken = with_device = 0
    conflicts: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    known: list[dict[str, Any]] = []
    for r in files(conn):
        st = r["state"]
        per_state[st] += 1
        per_kind[r["kind"]] += 1
        per_source[r["source"]][st] += 1
        m = meta_of(r)
        if r["container"]:
            in_archives += 1
        total_bytes += r["size"] or 0
        group = "known" if st in KNOWN else st
        if (mo := _month(r["taken"])):
            taken_months[mo][group] += 1
        if (mo := _month(r["fs_modified"])):
            modified_months[mo][group] += 1
        with_gps += "gps_lat" in m
        with_taken += bool(r["taken"])
        with_device += bool(r["device"])
        if st in KNOWN:
            key = category_key(r)
            per_cat[key] += 1
            c = cats(r)
            per_scheme["conflict" if len(c) > 1 else
                       (c[0].split(":", 1)[0] if c else "uncategorised")] += 1
            per_route[r["route"] or "unknown"] += 1
            item = {"path": r["path"], "sha256": r["sha256"], "state": st,
                    "route": r["route"], "how": r["how"], "distance": r["distance"],
                    "inliers": r["inliers"], "matched_ref": r["matched_ref"],
                    "list_version": r["list_version"], "lists": r["lists"].split("|"),
                    "categories": c, "device": r["device"], "taken": r["taken"],
                    "matches": json.loads(r["matches"])}
            known.append(item)
            if r["conflict"]:
                conflicts.append(item)
        if st == "error" or (r["error"] and st != "known_exact"):
            errors.append({"path": r["path"], "error": r["error"], "state": st})
        if r["warnings"]:
            warnings.append({"path": r["path"], "warnings": json.loads(r["warnings"])})
    videos = [
        {"path": v["path"], "sha256": v["sha256"], "state": v["state"], "format": v["format"],
         "duration": v["duration"], "frame_count": v["frame_count"],
         "width": v["width"], "height": v["height"], "frames_hashed": v["n"],
         "taken": v["taken"], "device": v["device"]}
        for v in conn.execute(
            "SELECT f.path, f.sha256, f.state, f.format, f.duration, f.frame_count, f.width,"
            " f.height, f.taken, f.device,"
            " (SELECT COUNT(*) FROM frames WHERE file_id = f.id) AS n"
            " FROM files f WHERE f.kind = 'video' ORDER BY f.id")
    ]
    leads = device_leads(conn)
    clusters = cluster_facts(conn, leads)
    lists = runs[-1]["lists"] if runs else []
    threshold = int(meta.get("pdq_threshold", "31"))
    n_files = sum(per_state.values())
    known_n = per_state["known_exact"] + per_state["known_near"]
    return {
        "case_id": meta.get("case_id"),
        "examiner": meta.get("examiner") or None,
        "notes": meta.get("notes") or None,
        "tool": {"name": "hashwatch", "version": __version__},
        "created_at": meta.get("created_at"),
        "started_at": runs[0]["started_at"] if runs else None,
        "finished_at": runs[-1]["finished_at"] if runs else None,
        "runs": runs,
        "lists": lists,
        "sources": json.loads(meta.get("sources", "[]")),
        "pdq_threshold": threshold,
        "summary": {
            "files": n_files, "known": known_n, "known_exact": per_state["known_exact"],
            "known_near": per_state["known_near"], "new": per_state["unknown"],
            "not_image": per_state["not_image"], "errors": per_state["error"],
            "in_archives": in_archives, "clusters": len(clusters),
            "clusters_with_duplicates": sum(1 for c in clusters if c["size"] > 1),
            "devices": len(leads),
            "devices_linking_known_and_new": sum(1 for d in leads if d["known"] and d["unknown"]),
            "with_device": with_device, "with_date_taken": with_taken, "with_gps": with_gps,
            "with_warnings": len(warnings),
        },
        "files": n_files,
        "bytes": total_bytes,
        "in_archives": in_archives,
        "per_state": dict(per_state),
        "per_kind": dict(per_kind),
        "per_category": dict(sorted(per_cat.items())),
        "per_scheme": dict(sorted(per_scheme.items())),
        "per_route": dict(per_route.most_common()),
        "per_source": {k: dict(v) for k, v in sorted(per_source.items())},
        "timeline": {"taken": {k: dict(v) for k, v in sorted(taken_months.items())},
                     "modified": {k: dict(v) for k, v in sorted(modified_months.items())}},
        "methods": methods(threshold, json.loads(meta.get("hash_views") or "null")),
        "known": known,
        "conflicts": conflicts,
        "errors": errors,
        "warnings": warnings,
        "videos": videos,
        "devices": leads,
        "clusters": clusters,
    }
