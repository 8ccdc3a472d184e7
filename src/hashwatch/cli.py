"""The ``hashwatch`` command: a thin Typer + Rich layer over the library."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hashwatch import __version__
from hashwatch.clikit import (
    DbOpt,
    db_target,
    err,
    fail,
    files_under,
    hash_records,
    open_store,
    out,
    output,
    progressed,
)
from hashwatch.clilists import lists_app, not_matchable
from hashwatch.cliviews import HashViewsOpt, parse_hash_views

app = typer.Typer(
    name="hashwatch",
    help="Recognise known images again: hash, keep hash lists, match, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database information.", no_args_is_help=True)
app.add_typer(lists_app, name="lists")
app.add_typer(db_app, name="db")

def _version(value: bool) -> None:
    if value:
        print(f"hashwatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """hashwatch: recognise known images wherever they turn up again."""
    if os.environ.get("HASHWATCH_KEYPOINT_VOCAB"):
        from hashwatch.robust.vocab import chosen_vocabulary

        try:  # checked before any work, not when the keypoint tier first loads
            chosen_vocabulary()
        except ValueError as exc:
            raise fail(str(exc)) from None


HASH_FIELDS = [
    "path",
    "size",
    "md5",
    "sha1",
    "sha256",
    "pdq",
    "pdq_quality",
    "width",
    "height",
    "error",
]
# videos and animated images (also in csv; vpdq there is the reference's JSON interchange form)
MEDIA_FIELDS = ["kind", "frame_count", "duration", "rotation", "limited", "vpdq"]


def media_row(rec: Any) -> dict[str, Any]:
    """One ``hash`` record: the still-image fields, then for videos and animations the kept
    frames (index, seconds, PDQ, quality) and a video's vPDQ (``"hex,quality,seconds"``)."""
    row: dict[str, Any] = {k: getattr(rec, k) for k in HASH_FIELDS}
    row["path"] = str(row["path"])
    if not rec.frames:
        return row  # a still: the record is as it always was
    row.update({k: getattr(rec, k) for k in MEDIA_FIELDS})
    row["vpdq"] = [str(f) for f in rec.vpdq] if rec.vpdq else None
    row["frames"] = [f.as_dict() for f in rec.frames] if rec.frames else None
    return row


@app.command("hash")
def hash_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (recursive).")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Processes.")] = 1,
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Write here (0600).")] = None,
) -> None:
    """Hash files: size, MD5, SHA-1, SHA-256, PDQ (+quality) and dimensions, one record each;
    videos and animated images also every kept frame's PDQ, videos their vPDQ."""
    from hashwatch.signals.vpdq import format_vpdq

    if fmt not in ("jsonl", "csv"):
        raise fail("--format must be jsonl or csv")
    n = errors = 0
    with output(out_path) as fh:
        writer = (
            csv.DictWriter(fh, fieldnames=HASH_FIELDS + MEDIA_FIELDS, lineterminator="\n")
            if fmt == "csv"
            else None
        )
        if writer:
            writer.writeheader()
        for rec in hash_records(paths, workers, "hashing"):
            row = media_row(rec)
            if writer:
                row.update({k: getattr(rec, k) for k in MEDIA_FIELDS})
                row["vpdq"] = format_vpdq(rec.vpdq) if rec.vpdq else None
                row.pop("frames", None)
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
            else:
                fh.write(json.dumps(row) + "\n")
            n += 1
            errors += rec.error is not None
    err.print(f"hashed {n} file(s), {errors} with an error")


# -- match --------------------------------------------------------------------------------------
@app.command("match")
def match_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (recursive).")],
    list_names: Annotated[
        list[str] | None, typer.Option("--list", help="Only these lists.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or table.")] = "jsonl",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1)] = 1,
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Write here (0600).")] = None,
    vpdq_query_percent: Annotated[float, typer.Option(
        min=0, max=100, help="vPDQ: share of the video's frames found in a known video.")] = 80.0,
    vpdq_compared_percent: Annotated[float, typer.Option(
        min=0, max=100, help="vPDQ: share of the known video's frames found.")] = 0.0,
    hash_views: HashViewsOpt = None,
    db: DbOpt = None,
) -> None:
    """Match files against the lists: one JSON object per file (path, matches, error,
    pdq_matchable). Videos and animated images are matched frame by frame (each match says
    which frame), videos also by vPDQ (defaults: the reference's 80 / 0 percent). With
    ``--workers N`` each file is hashed and matched (every tier, keypoints and scene check
    included) in one of N processes sharing the mapped indexes."""
    from hashwatch import ListNotFound
    from hashwatch.matchwork import MatchSpec, match_paths

    if fmt not in ("jsonl", "table"):
        raise fail("--format must be jsonl or table")
    views = parse_hash_views(hash_views)
    with open_store(db, need_lists=True) as store:
        for n in list_names or []:
            try:
                store.get_list(n)
            except ListNotFound as exc:
                raise fail(str(exc)) from None
        spec = MatchSpec.for_store(store, lists=tuple(list_names) if list_names else None,
                                   vpdq_query_percent=vpdq_query_percent,
                                   vpdq_compared_percent=vpdq_compared_percent,
                                   hash_views=views)
        files = files_under(paths)
        results = progressed(match_paths(spec, files, workers=workers), len(files), "matching")
        matched = total = 0
        table = Table(title="matches") if fmt == "table" else None
        if table is not None:
            for col in ("file", "list", "ref", "signal", "distance", "category", "exact",
                        "tier (decision)", "frame / vPDQ %"):
                table.add_column(col)
        with output(out_path) as fh:
            for res in results:
                total += 1
                matched += bool(res.matches)
                if table is None:
                    fh.write(json.dumps(res.as_dict()) + "\n")
                    continue
                if res.error and not res.matches:
                    table.add_row(res.path, "", "", "", "", "", res.error, "", "")
                elif res.pdq_matchable is False and not res.matches:
                    table.add_row(res.path, "", "", "", "", "", res.pdq_reason or "", "", "")
                for m in res.matches:
                    keypoint = m.tier == "keypoint"
                    table.add_row(
                        res.path,
                        m.list,
                        m.ref,
                        # a keypoint match has no hash distance (-1 in JSON): say what it is,
                        # with what its keypoints fit (route local/orb:<model>[+mirrored])
                        (f"keypoints ({m.route.partition(':')[2]})" if ":" in m.route
                         else "keypoints") if keypoint else (
                            # a hash-tier route (a region, a cell, mirrored): say which
                            f"{m.signal} via {m.route}" if m.route else m.signal),
                        f"{m.inliers} inliers" if keypoint else str(m.distance),
                        m.category or "",
                        "yes" if m.exact else "no",
                        f"{m.tier} ({m.confidence})",
                        # a video's or animation's frame (seconds); vPDQ: query/known % found
                        f"{m.frame_time:g} s" if m.frame_time is not None else (
                            f"{m.query_match_percent:g}%/{m.compared_match_percent:g}%"
                            if m.query_match_percent is not None else ""),
                    )
        if table is not None:
            out.print(table)
        store.audit("cli", "match", {"files": total, "matched": matched})
    err.print(f"{matched} of {total} file(s) matched")


# -- demo -------------------------------------------------------------------------------------
@app.command("demo")
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the demo.")] = Path(
        "demo-out"
    ),
    workers: Annotated[int, typer.Option("--workers", "-w", min=1)] = 2,
) -> None:
    """Build a known list from bundled images, match an evidence folder, print a summary."""
    from hashwatch.demo import run_demo

    err.print(
        "hashwatch demo: known list from 8 bundled Kodak images, evidence of "
        "edited copies + unrelated images"
    )
    res = run_demo(out_dir, workers=workers)
    table = Table(title="evidence matched against list demo-known")
    for col in ("what", "files", "recognised", "how", "category"):
        table.add_column(col)
    for row in res.summary():
        table.add_row(*row)
    out.print(table)
    out.print(
        f"found {res.found} of {res.known_copies} edited copies of known images; "
        f"{res.false_matches} false matches among unrelated files"
    )
    out.print(f"database: {res.db_path.resolve()}")
    out.print(f"results:  {res.results_path.resolve()}  (one JSON object per file)")
    out.print(f"evidence: {(res.out_dir / 'evidence').resolve()}")
    if res.triage is not None:
        t = res.triage
        c = t.counts
        # every file in exactly one part, so the parts add up to the total
        out.print(f"triage of the evidence folder (case DEMO-1): {t.files} files = "
                  f"{c.get('known_exact', 0) + c.get('known_near', 0)} known + "
                  f"{c.get('unknown', 0)} new + {c.get('not_image', 0)} not pictures "
                  f"(documents, archives) + {c.get('error', 0)} unreadable")
        out.print(f"report:   {Path(t.outputs['report.html']).resolve()}")
        if "report.pdf" in t.outputs:
            out.print(f"pdf:      {Path(t.outputs['report.pdf']).resolve()}")


# -- eval ---------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    corpus: Annotated[
        Path | None,
        typer.Option(help="Benign image corpus (default: $HASHWATCH_CORPUS, else shared/corpus "
                     "beside the current folder or one of its parents)."),
    ] = None,
    known: Annotated[int | None, typer.Option(help="Images in the known set (200).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split and the edits.")] = 0,
    edits: Annotated[str | None, typer.Option(
        help="Comma-separated edits or families, or 'single' / 'combined' (default all).")] = None,
    max_distractors: Annotated[int | None, typer.Option(help="Cap the distractors.")] = None,
    local: Annotated[bool, typer.Option(help="Include the keypoint tier.")] = True,
    partner: Annotated[bool, typer.Option(
        help="Include partner mode: the list's CSV export imported into a fresh database, "
        "hash tier only.")] = True,
    quick: Annotated[bool, typer.Option(
        "--quick", help="A small run: 40 known images, 26 edits (one or two per family), "
        "300 distractors; options given explicitly still win.")] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("eval-out"),
) -> None:
    """Robustness evaluation: recall per edit and method, false matches among all
    distractor x known pairs, distance distributions (markdown table + PNG plot)."""
    import time

    from hashwatch.edits import EDITS, expand_edits
    from hashwatch.evaluate import (
        QUICK_DISTRACTORS,
        QUICK_KNOWN,
        CorpusNotFound,
        EvalConfig,
        quick_edits,
        resolve_corpus,
        run_eval,
        write_report,
    )

    try:
        corpus = resolve_corpus(corpus)
    except CorpusNotFound as exc:
        raise fail(str(exc)) from None
    try:
        chosen = expand_edits(edits) if edits else None
    except KeyError as exc:
        families = dict.fromkeys(e.family for e in EDITS.values())
        raise fail(f"unknown edit or family {exc.args[0]!r}; families: single, combined, "
                   f"{', '.join(families)}; edits: {', '.join(EDITS)}") from None
    edit_list = chosen if chosen else (quick_edits() if quick else None)
    if known is None:
        known = QUICK_KNOWN if quick else 200
    if max_distractors is None and quick:
        max_distractors = QUICK_DISTRACTORS
    t0 = time.perf_counter()
    err.print(f"corpus: {corpus}")
    cfg = EvalConfig(
        corpus=corpus,
        n_known=known,
        seed=seed,
        edits=edit_list,
        max_distractors=max_distractors,
        local=local,
        partner=partner,
        progress=lambda msg: err.print(f"[{time.perf_counter() - t0:7.1f}s] {msg}"),
    )
    res = run_eval(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    _, md = write_report(res, out_dir)
    (out_dir / "robustness.md").write_text(md)
    print(md)
    err.print(f"report: {out_dir / 'robustness.md'}, plot: {out_dir / 'robustness.png'}")


# -- db -----------------------------------------------------------------------------------------
@db_app.command("stats")
def db_stats(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    db: DbOpt = None,
) -> None:
    """Lists, and entries per list and signal type."""
    where = db_target(db)
    with open_store(db, must_exist=True) as store:
        rows = store.stats()
        infos = store.lists()
    kept = not_matchable(rows)
    for r in rows:
        r["matchable"] = r["signal_type"] not in kept.get(r["list"], {})
    if as_json:
        print(json.dumps({"database": where, "lists": [i.as_dict() for i in infos],
                          "entries": rows}, indent=2))
        return
    out.print(f"database: {where}")
    table = Table(title=f"{len(infos)} list(s)")
    for col in ("list", "signal", "entries", "matched"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["list"], r["signal_type"], f"{r['entries']:,}",
                      "yes" if r["matchable"] else "no (needs its plug-in)")
    out.print(table)


def _register_subcommands() -> None:
    # each part of hashwatch keeps its commands beside its code; the CLI only mounts them
    from hashwatch.private.cli import app as private_app
    from hashwatch.scan.cli import app as scan_app
    from hashwatch.service.cli import register as register_service
    from hashwatch.triage.cli import register as register_triage

    app.add_typer(private_app, name="private")
    app.add_typer(scan_app, name="scan")
    register_triage(app, lists_app)
    register_service(app)


_register_subcommands()


def main() -> None:
    from hashwatch.store.redact import install_log_redaction

    install_log_redaction()  # no database password in any log line or traceback
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
