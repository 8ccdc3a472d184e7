"""The case report as a document model: sections of paragraphs, tables and charts, built
once from report.json's data and rendered twice (``html.py`` and ``pdf.py``), so the HTML
page and the PDF carry the same tables in the same order.

Long tables are capped (``MAX_ROWS``) with a note that names the output holding every row
(files.csv, report.json): a million-file case stays a readable document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hashwatch.metadata import device_label

__all__ = ["MAX_ROWS", "Section", "Table", "build"]

MAX_ROWS = 2000


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    key: str = ""  # a stable name (data-table in HTML), used by tests
    note: str = ""  # shown under the table (e.g. rows left out)
    counts: dict[int, str] = field(default_factory=dict)  # row index -> data-count name
    code: set[int] = field(default_factory=set)  # columns shown as code (paths, hashes)
    widths: list[float] | None = None  # relative column widths (PDF)


@dataclass
class Section:
    title: str
    key: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)
    level: int = 2


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else ("" if v is None else str(v))


def _capped(rows: list[list[str]], what: str, where: str) -> tuple[list[list[str]], str]:
    if len(rows) <= MAX_ROWS:
        return rows, ""
    return rows[:MAX_ROWS], (f"{len(rows) - MAX_ROWS:,} more {what} are in {where} "
                             f"(first {MAX_ROWS:,} shown).")


def _span(a: str | None, b: str | None) -> str:
    if not a:
        return ""
    return a if a == b else f"{a} to {b}"


def build(s: dict[str, Any], all_files: list[list[str]]) -> list[Section]:
    """Sections of the report, summary first. ``all_files``: rows (#, path, size, SHA-256,
    state, taken, modified) of every file, from the work database."""
    sm = s["summary"]
    out: list[Section] = []

    # -- summary ------------------------------------------------------------------------------
    rows = [
        ["files examined (archive members included)", _n(sm["files"])],
        ["known material (on a list)", _n(sm["known"])],
        ["  identical files (exact hash)", _n(sm["known_exact"])],
        ["  near-duplicates (perceptual hash or keypoints)", _n(sm["known_near"])],
        ["new material (pictures and videos on no list)", _n(sm["new"])],
        ["not pictures (documents, archives, audio)", _n(sm["not_image"])],
        ["could not be read or decoded", _n(sm["errors"])],
        ["clusters of new pictures for review", _n(sm["clusters"])],
        ["recording devices found in metadata", _n(sm["devices"])],
        ["devices that took both known and new material", _n(sm["devices_linking_known_and_new"])],
        ["files with metadata warnings (read anyway)", _n(sm["with_warnings"])],
    ]
    counts = {0: "files", 1: "known", 2: "known_exact", 3: "known_near", 4: "new",
              5: "not_image", 6: "errors", 7: "clusters", 8: "devices"}
    summary = Section("Summary", "summary", tables=[
        Table(["", "files"], rows, {1}, key="summary", counts=counts, widths=[3, 1])])
    cat_rows = [[k, _n(v)] for k, v in s["per_category"].items()] or [["none", "0"]]
    summary.tables.append(Table(["legal category (scheme:code)", "known files"], cat_rows, {1},
                                key="per_category", widths=[3, 1]))
    summary.charts = ["states", "categories"]
    facts = [f"Case {s['case_id']}"]
    if s.get("examiner"):
        facts.append(f"examiner {s['examiner']}")
    facts.append(f"hashwatch {s['tool']['version']}")
    facts.append(f"run {s['started_at']} to {s['finished_at'] or 'unfinished'} (UTC)")
    summary.paragraphs.append("; ".join(facts) + ".")
    out.append(summary)
    if s.get("notes"):
        out.append(Section("Examiner's notes", "notes", paragraphs=[s["notes"]]))

    # -- leads ------------------------------------------------------------------------------
    dev_rows = [[d["label"], d["lead"], _n(d["known"]), _n(d["unknown"]),
                 _span(d["first_taken"], d["last_taken"]),
                 ", ".join(str(c) for c in d["clusters"][:12])
                 + (" ..." if len(d["clusters"]) > 12 else ""),
                 ", ".join(f"{k}: {v}" for k, v in d["known_categories"].items())]
                for d in s["devices"]]
    dev_rows, note = _capped(dev_rows, "devices", "report.json (devices)")
    out.append(Section(
        "Leads: recording devices", "devices",
        paragraphs=["Pictures and videos grouped by the device that recorded them (camera "
                    "make, model and body serial number from EXIF or the video container; "
                    "make, model and software when there is no serial). A device that "
                    "recorded known material and new material is the strongest lead to new "
                    "victims: those come first."],
        tables=[Table(["device", "lead", "known", "new", "taken (first to last)",
                       "clusters of new pictures", "known categories"], dev_rows, {2, 3},
                      key="devices", note=note, widths=[3, 2, 1, 1, 3, 2, 2])],
        charts=["devices"]))

    cl_rows = [[_n(c["cluster"]), _n(c["size"]),
                "; ".join(f"{d['label']} ({d['files']})" for d in c["devices"]) or
                "none recorded",
                _span(c["first_taken"], c["last_taken"]),
                _span(c["first_modified"], c["last_modified"]), _n(c["links"]),
                "\n".join(m["path"] for m in c["members"][:5])
                + (f"\n... and {c['size'] - 5} more" if c["size"] > 5 else "")]
               for c in s["clusters"]]
    cl_rows, note = _capped(cl_rows, "clusters", "report.json and files.csv (column cluster)")
    out.append(Section(
        "Clusters of new pictures for review, largest and most linked first", "clusters",
        paragraphs=["Near-duplicate pictures (PDQ within the threshold, transitively) on no "
                    "list. 'Linked' counts known files taken with the same devices. Grade a "
                    "cluster with: hashwatch grade CASE --cluster N --category SCHEME:CODE "
                    "--analyst ID."],
        tables=[Table(["cluster", "files", "devices", "taken", "modified", "linked known",
                       "members"], cl_rows, {0, 1, 5}, key="clusters", note=note, code={6},
                      widths=[1, 1, 3, 3, 3, 1, 5])]))

    # -- known files --------------------------------------------------------------------------
    k_rows = [[k["path"], k["how"] or k["state"], k["route"] or "",
               _n(k["distance"]) if k["distance"] is not None else "",
               _n(k["inliers"]) if k["inliers"] is not None else "",
               k["matched_ref"] or "", _n(k["list_version"]),
               " | ".join(k["categories"]) or "uncategorised",
               device_label(k["device"]) if k["device"] else "", k["taken"] or ""]
              for k in s["known"]]
    k_rows, note = _capped(k_rows, "known files", "files.csv and report.json (known)")
    out.append(Section(
        "Known material, and how each file matched", "known",
        paragraphs=["Each file names the list entry it matched (reference and list version) "
                    "and how: an identical file, the perceptual hash of the whole picture, of "
                    "a flipped, turned, trimmed or cropped view, of a picture inside a "
                    "screenshot or collage, or local features (keypoints) that agree "
                    "geometrically. Distances are Hamming distances between 256-bit PDQ "
                    "hashes; keypoint matches are measured in inliers instead."],
        tables=[Table(["file", "how it matched", "route", "distance", "inliers",
                       "matched entry", "list version", "category", "device", "taken"],
                      k_rows, {3, 4, 6}, key="known", note=note, code={0},
                      widths=[4, 6, 1.5, 1, 1, 2, 1, 1.5, 2, 2])]))
    if s["conflicts"]:
        out.append(Section(
            "Conflicting categories (for the analyst to decide)", "conflicts", level=3,
            tables=[Table(["file", "categories", "lists"],
                          [[c["path"], " | ".join(c["categories"]), ", ".join(c["lists"])]
                           for c in s["conflicts"]], key="conflicts", code={0},
                          widths=[4, 2, 2])]))

    out.append(Section("Timeline", "timeline", charts=["timeline"], paragraphs=[
        "Files per month by the date the picture or video was taken (EXIF DateTimeOriginal, "
        "video creation time) and by the date the file was last modified (file system, or "
        "the archive's own record for archive members)."]))

    # -- methods ------------------------------------------------------------------------------
    mt = s["methods"]
    methods = Section("Methods", "methods", paragraphs=[
        f"Order of matching: {mt['order']}. PDQ threshold {mt['pdq_threshold']} (Hamming "
        f"distance out of 256 bits); pictures with PDQ quality below {mt['pdq_min_quality']} "
        "are not matched perceptually."
        + (f" Keypoint matches need at least {mt['keypoint_min_inliers']} geometrically "
           "verified inliers and a passed scene check." if mt.get("keypoint_min_inliers")
           else "")
        + (f" The PDQ index held only these views of the known images: "
           f"{', '.join(mt['hash_views'])}; copies the other views would have found were "
           "left to the keypoint tier." if mt.get("hash_views") else "")])
    methods.tables.append(Table(["hash or feature", "what it is"],
                                [[h["name"], h["what"]] for h in mt["hashes"]], key="hashes",
                                widths=[1, 4]))
    methods.tables.append(Table(["route", "what it means"],
                                [[r["route"], r["what"]] for r in mt["routes"]], key="routes",
                                widths=[1, 4]))
    if mt["route_thresholds"]:
        methods.tables.append(Table(
            ["query view", "known view", "threshold (bits)"],
            [[r["query"], r["known"], _n(r["threshold"])] for r in mt["route_thresholds"]],
            {2}, key="route_thresholds", widths=[1, 1, 1]))
    methods.tables.append(Table(
        ["measured", "result", "rate", "what the rate is", "command (BENCHMARKS.md)"],
        [[m["what"], m["figure"], m["rate"], m["rate_what"],
          f"{m['command']} (section: {m['section']})"] for m in mt["measured"]],
        key="measured", code={4}, widths=[3, 1, 1, 3, 4]))
    out.append(methods)

    # -- tool, lists, sources -----------------------------------------------------------------
    run_rows = [["tool", f"hashwatch {s['tool']['version']}"], ["case", s["case_id"] or ""],
                ["examiner", s.get("examiner") or ""],
                ["started (UTC)", s["started_at"] or ""],
                ["finished (UTC)", s["finished_at"] or "unfinished"],
                ["runs (resumed runs included)", _n(len(s["runs"]))],
                ["sources", "\n".join(s["sources"])],
                ["files (archive members included)", _n(s["files"])],
                ["of which inside archives", _n(s["in_archives"])], ["bytes", _n(s["bytes"])]]
    list_rows = [[li["name"], _n(li["version"]), _n(li.get("entries")),
                  li.get("updated_at") or "", "yes" if li["enabled"] else "no",
                  li.get("digest") or ""] for li in s["lists"]]
    out.append(Section("Tool, lists and sources", "provenance", tables=[
        Table(["item", "value"], run_rows, key="run", code={1}, widths=[1, 3]),
        Table(["list", "version", "entries", "updated (UTC)", "enabled",
               "content digest (SHA-256, hashwatch-list-digest-v1)"], list_rows, {1, 2},
              key="lists", code={5}, widths=[1.5, 1, 1, 2, 1, 5])],
        paragraphs=["A list's content digest is computed over its live entries in any order "
                    "(signal type, value, category, view): the same list content gives the "
                    "same digest, so the lists used can be verified later."]))
    if len(s["runs"]) > 1:
        out.append(Section("Runs", "runs", level=3, tables=[Table(
            ["run", "started", "finished", "files done", "tool"],
            [[_n(r["id"]), r["started_at"], r["finished_at"] or "interrupted",
              _n(r["files_done"]), r["tool_version"]] for r in s["runs"]], {0, 3},
            key="runs")]))
    out.append(Section("Counts per source", "sources", tables=[Table(
        ["source"] + list(s["per_state"]),
        [[src] + [_n(c.get(st, 0)) for st in s["per_state"]]
         for src, c in s["per_source"].items()], set(range(1, 6)), key="per_source",
        code={0}, widths=[4, 1, 1, 1, 1, 1])]))

    # -- videos, errors, warnings, every file -------------------------------------------------
    if s["videos"]:
        v_rows = [[v["path"], v["state"], _n(v["duration"]), _n(v["frame_count"]),
                   _n(v["frames_hashed"]), f"{v['width']}x{v['height']}", v["taken"] or "",
                   device_label(v["device"]) if v["device"] else ""] for v in s["videos"]]
        v_rows, note = _capped(v_rows, "videos", "report.json (videos)")
        out.append(Section(f"Videos ({len(s['videos']):,}): about one frame per second hashed",
                           "videos", tables=[Table(
                               ["file", "state", "duration s", "frames", "frames hashed",
                                "size", "created", "device"], v_rows, {2, 3, 4},
                               key="videos", note=note, code={0},
                               widths=[4, 1.5, 1, 1, 1, 1, 2, 2])]))
    if s["errors"]:
        e_rows, note = _capped([[e["path"], e["state"], e["error"] or ""] for e in s["errors"]],
                               "errors", "files.csv (column error)")
        out.append(Section(f"Files that could not be read or decoded ({len(s['errors']):,})",
                           "errors", tables=[Table(["file", "state", "reason"], e_rows,
                                                   key="errors", note=note, code={0},
                                                   widths=[4, 1, 4])]))
    if s["warnings"]:
        w_rows, note = _capped([[w["path"], "; ".join(w["warnings"])] for w in s["warnings"]],
                               "files with warnings", "files.csv (column warnings)")
        out.append(Section(f"Metadata warnings ({len(s['warnings']):,} files, all examined)",
                           "warnings", tables=[Table(["file", "warning"], w_rows,
                                                     key="warnings", note=note, code={0},
                                                     widths=[3, 4])]))
    f_rows, note = _capped(all_files, "files", "files.csv")
    out.append(Section("Every file, with its SHA-256", "files", tables=[Table(
        ["#", "file", "size", "SHA-256", "state", "taken", "modified"], f_rows, {0, 2},
        key="files", note=note, code={1, 3}, widths=[0.6, 4, 1, 4, 1.3, 1.8, 1.8])]))
    return out
