"""Typer commands: ``triage``, ``grade``, ``grades`` and ``lists promote``.

The main CLI calls :func:`register`; the commands use the helpers every command shares
(:mod:`hashwatch.clikit`), which import nothing of the CLI itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from hashwatch import clikit as h  # module-qualified: `out` is also an option name here
from hashwatch.clikit import DbOpt
from hashwatch.clilists import category_option
from hashwatch.cliviews import HashViewsOpt, parse_hash_views
from hashwatch.console import styled

__all__ = ["register"]

MinVotes = Annotated[int, typer.Option("--min-votes", min=1,
                                       help="Agreeing analysts needed for a trusted grade.")]
MaxDissent = Annotated[int, typer.Option("--max-dissent", min=0,
                                         help="Dissenting analysts tolerated.")]


def triage(
    sources: Annotated[list[Path], typer.Argument(help="Folders, files and archives to triage.")],
    case: Annotated[str, typer.Option("--case", help="Case id (used by grade and promote).")],
    out: Annotated[Path | None, typer.Option("--out", help="Results folder (default: "
                                              "./triage-CASE). Re-run with it to resume.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=0,
                                         help="Processes (0: all cores).")] = 0,
    list_names: Annotated[list[str] | None,
                          typer.Option("--list", help="Only these lists.")] = None,
    thumbnails: Annotated[bool, typer.Option(
        "--thumbnails", help="Put small greyscale thumbnails in report.html, blurred until "
        "clicked (default: no picture at all).")] = False,
    robust: Annotated[bool, typer.Option(
        "--robust/--no-robust", help="Match robust views of each image too (flips, rotations, "
        "crops, borders, screenshots). --no-robust keeps plain PDQ: about 1.7x faster on "
        "12-MP photos, blind to those edits.")] = True,
    examiner: Annotated[str | None, typer.Option(
        "--examiner", help="Examiner's name for the report (kept for later runs).")] = None,
    notes: Annotated[str | None, typer.Option(
        "--notes", help="Case notes for the report (kept for later runs).")] = None,
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="Also write report.pdf.")] = True,
    hash_views: HashViewsOpt = None,
    db: DbOpt = None,
) -> None:
    """Triage seized media: hash every file (archives opened, videos sampled), match against
    the lists, cluster unknown images and write report.html, files.csv, report.json and
    case.vics.json. Resumable: kill it, run the same command again."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.table import Table

    from hashwatch.store import StoreError
    from hashwatch.triage.run import CaseError, TriageOptions, run_triage

    for s in sources:
        if not s.exists():
            h.err.print(styled("warning:", "yellow", f"{s} does not exist (reported as "
                               "unreadable)"))
    out_dir = out if out is not None else Path(f"triage-{case}")
    opts = TriageOptions(case_id=case, sources=[str(s) for s in sources], out_dir=out_dir,
                         workers=workers, lists=list_names or None, thumbnails=thumbnails,
                         robust=robust, examiner=examiner, notes=notes, pdf=pdf,
                         hash_views=parse_hash_views(hash_views))
    bar = Progress(
        SpinnerColumn(), TextColumn("[bold]triage"), BarColumn(),
        TextColumn("{task.fields[files]}"), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=h.err, disable=not h.err.is_terminal,
    )
    task: Any = None

    def on_progress(p: Any) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task("triage", total=p.bytes_total or 1, files="", rate="")
            if p.skipped:
                h.err.print(f"resuming: {p.skipped:,} file(s) already done")
        t = bar.tasks[task]
        rate = f"{(p.files_done - p.skipped) / t.elapsed:,.1f} files/s" if t.elapsed else ""
        bar.update(task, completed=p.bytes_done,
                   files=f"{p.files_done:,}/{p.files_total:,} files", rate=rate)

    with h.open_store(db, need_lists=True) as store:
        try:
            with bar:
                summary = run_triage(opts, store, progress=on_progress)
        except (CaseError, StoreError) as exc:
            raise h.fail(str(exc)) from None
    table = Table(title=f"case {case}: {summary.files:,} files")
    table.add_column("state")
    table.add_column("files", justify="right")
    for k, v in summary.counts.items():
        table.add_row(k, f"{v:,}")
    h.out.print(table)
    h.err.print(f"{summary.new_records:,} file(s) processed in this run "
                f"({summary.resumed_tasks:,} already done), {summary.clusters:,} unknown "
                f"cluster(s), {summary.wall:.1f} s")
    if summary.counts.get("error"):
        h.err.print(styled(f"{summary.counts['error']} file(s) could not be read or decoded:",
                           "yellow", "reasons in report.html and files.csv (column error)"))
        errors = json.loads(Path(summary.outputs["report.json"]).read_text())["errors"]
        for e in errors[:10]:
            h.err.print(f"  {e['path']}: {e['error']}")
        if len(errors) > 10:
            h.err.print(f"  ... and {len(errors) - 10} more")
    h.err.print(f"report: {Path(summary.outputs['report.html']).resolve()}")
    if "report.pdf" in summary.outputs:
        h.err.print(f"pdf:    {Path(summary.outputs['report.pdf']).resolve()}")
    h.err.print(f"manifest of every output (sha256sum -c): "
                f"{Path(summary.outputs['manifest.sha256']).resolve()}")


def grade(
    case: Annotated[str, typer.Argument(help="Case id.")],
    category: Annotated[str, typer.Option("--category", help="SCHEME:CODE, e.g. uk:A, vics:1.")],
    analyst: Annotated[str, typer.Option("--analyst", help="Your analyst id.")],
    cluster: Annotated[int | None, typer.Option("--cluster", help="Cluster number.")] = None,
    file: Annotated[str | None, typer.Option("--file", help="A file: SHA-256 or path as in "
                                             "files.csv.")] = None,
    note: Annotated[str, typer.Option("--note", help="Free text kept with the vote.")] = "",
    db: DbOpt = None,
) -> None:
    """Record your vote on a cluster or a file (votes are only added, never overwritten)."""
    from hashwatch.triage.grading import GradeError, add_vote, decide, list_votes, resolve_target
    from hashwatch.triage.run import CaseError, check_store_case, open_workdb

    cat = category_option(category)
    with h.open_store(db, must_exist=True) as store:
        try:
            outdir = check_store_case(store, case)
            conn = open_workdb(outdir, create=False)
            try:
                target = resolve_target(conn, cluster=cluster, file=file)
            finally:
                conn.close()
            vote = add_vote(store, case, target, cat, analyst, note)
        except (CaseError, GradeError) as exc:
            raise h.fail(str(exc)) from None
        st = decide(target, [v for v in list_votes(store, case) if v.target == target])
    h.err.print(f"vote {vote.id} recorded: {target} = {cat} by {vote.analyst}; "
                f"{target} is now {st.status} {st.tally()}")


def grades(
    case: Annotated[str, typer.Argument(help="Case id.")],
    min_votes: MinVotes = 3,
    max_dissent: MaxDissent = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0,
                                       help="Clusters to show (0: all).")] = 50,
    db: DbOpt = None,
) -> None:
    """The case's clusters of new pictures to review, largest and most linked first (with
    their devices and dates), and the grading status of each: ungraded, pending, trusted or
    disputed. Files graded on their own are listed after the clusters."""
    from rich.table import Table

    from hashwatch.triage.grading import GradeRule, case_grades
    from hashwatch.triage.report.summary import cluster_facts
    from hashwatch.triage.run import CaseError, check_store_case, open_workdb

    rule = GradeRule(min_votes, max_dissent)
    with h.open_store(db, must_exist=True) as store:
        try:
            outdir = check_store_case(store, case)
        except CaseError as exc:
            raise h.fail(str(exc)) from None
        sts = {s.target: s for s in case_grades(store, case, rule)}
    conn = open_workdb(outdir, create=False)
    try:
        clusters = cluster_facts(conn, members_shown=0)
    finally:
        conn.close()
    from hashwatch.triage.grading import decide

    rows = []
    for c in clusters:
        target = f"cluster:{c['cluster']}"
        rows.append((c, sts.pop(target, None) or decide(target, [], rule)))
    files = list(sts.values())
    if as_json:
        print(json.dumps({"case": case, "rule": rule.describe(),
                          "clusters": [{**{k: v for k, v in c.items() if k != "members"},
                                        "grade": g.as_dict()} for c, g in rows],
                          "grades": [g.as_dict() for _, g in rows if g.votes]
                          + [g.as_dict() for g in files]}, indent=2))
        return
    h.err.print(f"trusted grade: {rule.describe()} (--min-votes / --max-dissent); "
                "`hashwatch lists promote` adds only trusted material")
    table = Table(title=f"case {case}: {len(clusters)} cluster(s) of new pictures, largest "
                  "and most linked first")
    for col in ("cluster", "files", "devices", "taken", "linked known", "status", "category",
                "votes"):
        table.add_column(col)
    shown = rows if not limit else rows[:limit]
    for c, g in shown:
        taken = c["first_taken"] or ""
        if c["last_taken"] and c["last_taken"] != taken:
            taken += f" to {c['last_taken']}"
        table.add_row(str(c["cluster"]), str(c["size"]),
                      "; ".join(d["label"] for d in c["devices"]) or "-", taken or "-",
                      str(c["links"]), g.status, str(g.category or ""),
                      ", ".join(f"{k}: {v}" for k, v in g.tally().items()))
    h.out.print(table)
    if len(rows) > len(shown):
        h.err.print(f"... and {len(rows) - len(shown)} smaller cluster(s) (--limit 0 shows "
                    "all, report.json has every one)")
    if files:
        ft = Table(title="files graded on their own")
        for col in ("file", "status", "category", "votes", "analysts"):
            ft.add_column(col)
        for g in files:
            ft.add_row(g.target if len(g.target) < 30 else g.target[:21] + "...", g.status,
                       str(g.category or ""),
                       ", ".join(f"{k}: {v}" for k, v in g.tally().items()),
                       ", ".join(v.analyst for v in g.votes))
        h.out.print(ft)


def promote(
    case: Annotated[str, typer.Argument(help="Case id.")],
    list_name: Annotated[str, typer.Option("--list", help="The list to add to.")],
    min_votes: MinVotes = 3,
    max_dissent: MaxDissent = 0,
    db: DbOpt = None,
) -> None:
    """Add a case's trusted-grade material to a list, with provenance (case, votes),
    skipping what the list already holds."""
    from hashwatch.store import ListNotFound
    from hashwatch.triage.grading import GradeRule
    from hashwatch.triage.promote import promote as do_promote
    from hashwatch.triage.run import CaseError

    actor = os.environ.get("USER") or "cli"
    rule = GradeRule(min_votes, max_dissent)
    h.err.print(f"only trusted grades are promoted: {rule.describe()}")
    with h.open_store(db, must_exist=True) as store:
        try:
            res = do_promote(store, case, list_name, rule=rule, actor=actor)
        except (CaseError, ListNotFound) as exc:
            raise h.fail(str(exc)) from None
    if res.files_promoted == 0 and not res.already_in_list:
        why = (", ".join(f"{n} {st}" for st, n in res.not_trusted.items())
               if res.not_trusted else "no votes recorded for this case")
        h.err.print(styled("nothing promoted:", "yellow",
                           f"no file has a trusted grade yet ({why}); each needs "
                           f"{rule.describe()}. See `hashwatch grades {case}`."))
        return
    h.err.print(f"promoted {res.files_promoted} file(s) of case {case} into {list_name}:"
                f" {res.entries_added} entries added, {res.already_in_list} file(s) already in "
                f"the list, not trusted: {res.not_trusted or 'none'}")
    for d in res.category_differs:
        h.err.print(styled("note:", "yellow", f"{d['sha256'][:16]}... trusted as "
                           f"{d['trusted']} but the list holds it as "
                           f"{', '.join(d['in_list']) or 'uncategorised'}"))


def register(app: typer.Typer, lists_app: typer.Typer) -> None:
    """Add ``triage``, ``grade`` and ``grades`` to ``app`` and ``promote`` to ``lists_app``."""
    app.command("triage")(triage)
    app.command("grade")(grade)
    app.command("grades")(grades)
    lists_app.command("promote")(promote)
