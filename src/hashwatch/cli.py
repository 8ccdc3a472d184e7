"""The ``hashwatch`` command: a thin Typer + Rich layer over the library."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from hashwatch import __version__
from hashwatch.cliviews import HashViewsOpt, parse_hash_views
from hashwatch.console import literal_console, styled

app = typer.Typer(
    name="hashwatch",
    help="Recognise known images again: hash, keep hash lists, match, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lists_app = typer.Typer(help="Hash lists: create, import, add, export, show.", no_args_is_help=True)
db_app = typer.Typer(help="Database information.", no_args_is_help=True)
app.add_typer(lists_app, name="lists")
app.add_typer(db_app, name="db")

# user data (categories, paths, names) is printed literally: no markup, no emoji codes
err = literal_console(stderr=True, soft_wrap=True)
out = literal_console()

DbOpt = Annotated[
    str | None,  # not Path: Path() folds the "//" of a postgresql:// URL
    typer.Option(
        "--db",
        help="Database file or SQLAlchemy URL (default: user data dir, or $HASHWATCH_DB).",
        show_default=False,
    ),
]


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


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(styled("error:", "bold red", message))
    return typer.Exit(code)


def db_target(db: Path | str | None) -> str:
    """The database a command uses: ``--db``, else ``$HASHWATCH_DB``, else the user data dir
    (a path, or a URL with its password masked, fit to print)."""
    from hashwatch.store import default_db_path

    # $HASHWATCH_DB as written: Path() would fold the "//" of a postgresql:// URL
    text = str(db) if db is not None else (os.environ.get("HASHWATCH_DB")
                                           or str(default_db_path()))
    if "://" in text:
        import sqlalchemy as sa

        try:
            return sa.engine.make_url(text).render_as_string(hide_password=True)
        except Exception:
            return text.split("://", 1)[0] + "://..."
    return str(Path(text).expanduser().resolve())


def open_store(db: str | Path | None, *, need_lists: bool = False,
               must_exist: bool = False) -> Any:
    """Open the store. ``need_lists``: for commands that match against lists, refuse a
    database that does not exist (a mistyped ``--db`` would otherwise create an empty one
    and every file would be "no match") or that holds no list, naming the database.
    ``must_exist``: for commands that only read or change what is already there (stats,
    show, export, grades), refuse a database that does not exist instead of creating it."""
    from hashwatch.store import Store, StoreError, upgrade_notice

    where = db_target(db)
    target = str(db) if db is not None else None
    if (need_lists or must_exist) and "://" not in where and not Path(where).is_file():
        raise fail(f"database {where} does not exist: check --db or $HASHWATCH_DB (create "
                   "lists with `hashwatch lists create` / `lists import` first; nothing "
                   "was created)")
    def upgrading(current: str, target_rev: str) -> None:
        err.print(styled("upgrading", "yellow",
                         f"database {where}: {upgrade_notice(current, target_rev)}"))

    try:
        store = Store.open(target, on_upgrade=upgrading)
    except StoreError as exc:
        raise fail(f"{exc} (database {where})") from None
    if need_lists:
        from hashwatch.triage.run import list_versions

        if not list_versions(store):
            store.close()
            raise fail(f"database {where} holds no hash list: nothing to match against "
                       "(check --db, or create and import a list first)")
        err.print(f"database: {where}")
    return store


def private_writer(path: Path) -> IO[str]:
    """Files holding hashes are created owner-only."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


@contextmanager
def output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
    else:
        with private_writer(path) as fh:
            yield fh


def progress(total: int | None, what: str) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=False,
    )


class _Rate:
    """Updates a progress task and shows its rate per second."""

    def __init__(self, prog: Progress, task: Any) -> None:
        self.prog, self.task = prog, task

    def __call__(self, n: int = 1) -> None:
        self.prog.advance(self.task, n)
        t = self.prog.tasks[self.task]
        if t.elapsed:
            self.prog.update(self.task, rate=f"{t.completed / t.elapsed:,.0f}/s")


def _files(paths: list[Path]) -> list[Any]:
    """The files under ``paths`` (folders walked), missing paths warned about and kept (each
    is reported with its error)."""
    from hashwatch import iter_files

    missing = [p for p in paths if not p.exists()]
    for p in missing:
        err.print(styled("warning:", "yellow", f"{p} does not exist"))
    return list(iter_files([p for p in paths if p.exists()])) + missing


def _progressed(items: Iterator[Any], total: int, what: str) -> Iterator[Any]:
    """``items`` as they come, with a progress bar (count and rate) on a terminal."""
    with progress(total, what) as prog:
        task = prog.add_task(what, total=total, rate="")
        tick = _Rate(prog, task)
        for item in items:
            tick()
            yield item


def _hash_records(paths: list[Path], workers: int, what: str) -> Iterator[Any]:
    from hashwatch import hash_many

    files = _files(paths)
    yield from _progressed(hash_many(files, workers=workers), len(files), what)


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
        for rec in _hash_records(paths, workers, "hashing"):
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


# -- lists ------------------------------------------------------------------------------------
@lists_app.command("create")
def lists_create(
    name: str,
    source: Annotated[str, typer.Option(help="Who supplied the list.")] = "",
    jurisdiction: Annotated[str, typer.Option(help="e.g. UK, US.")] = "",
    scheme: Annotated[
        str, typer.Option("--scheme", help="Category scheme: uk, vics, ncmec, ...")
    ] = "",
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    db: DbOpt = None,
) -> None:
    """Create an empty hash list."""
    from hashwatch.store import StoreError

    with open_store(db) as store:
        try:
            info = store.create_list(
                name,
                source=source,
                jurisdiction=jurisdiction,
                category_scheme=scheme,
                description=description,
            )
        except StoreError as exc:
            raise fail(str(exc)) from None
    err.print(f"created list {info.name} (version {info.version})")


def _parse_category(text: str | None) -> Any:
    from hashwatch.categories import CategoryError, parse_category

    if not text:
        return None
    try:
        return parse_category(text)
    except CategoryError as exc:
        raise fail(str(exc)) from None


def _entry_count(store: Any, name: str) -> int:
    from hashwatch.store import ListNotFound

    try:
        return int(store.get_list(name).entry_count)
    except ListNotFound:
        return 0


@lists_app.command("import")
def lists_import(
    name: str,
    file: Annotated[Path, typer.Argument(help="The file to import.")],
    fmt: Annotated[str, typer.Option("--format", help="csv, hashlines, vics or icse.")] = "csv",
    signal: Annotated[
        str | None, typer.Option(help="Signal type when the file doesn't say (hashlines).")
    ] = None,
    category: Annotated[str | None, typer.Option(help="Default category SCHEME:CODE.")] = None,
    create: Annotated[bool, typer.Option("--create", help="Create the list if missing.")] = False,
    show_errors: Annotated[int, typer.Option(help="Bad rows to print.")] = 20,
    method: Annotated[str, typer.Option(
        help="rows: batches commit as they go, a re-run resumes; bulk: staged, then applied "
        "set-based, several times faster (PostgreSQL: one transaction, all or nothing; "
        "SQLite: chunks, a re-run resumes); auto: bulk from 16 MiB."
    )] = "auto",
    db: DbOpt = None,
) -> None:
    """Stream a list file in: good rows are kept, bad rows reported with their line numbers."""
    from hashwatch.formats import FORMATS, FormatError, RowError
    from hashwatch.lists import choose_method, import_stream
    from hashwatch.store import ListNotFound

    if fmt not in FORMATS:
        raise fail(f"unknown format {fmt!r} (choose one of {', '.join(FORMATS)})")
    if not file.is_file():
        raise fail(f"{file} is not a readable file")
    default_cat = _parse_category(category)
    if method not in ("auto", "rows", "bulk"):
        raise fail(f"unknown method {method!r} (auto, rows or bulk)")
    chosen = choose_method(file.stat().st_size) if method == "auto" else method
    shown = 0

    def on_error(e: RowError) -> None:
        nonlocal shown
        if shown < show_errors:
            err.print(styled("skipped", "yellow", str(e)))
        shown += 1

    missing = False
    before = 0
    with open_store(db) as store:
        try:
            before = store.get_list(name).entry_count
        except ListNotFound as exc:
            if not create:
                raise fail(f"{exc} (or pass --create)") from None
            missing = True  # made by the import once the file gives a good row
        raw = open(file, "rb")  # noqa: SIM115 - closed in finally
        try:
            with progress(file.stat().st_size, "importing") as prog:
                task = prog.add_task("importing", total=file.stat().st_size, rate="")
                res = import_stream(
                    store,
                    name,
                    raw,
                    fmt,
                    signal=signal,
                    category=default_cat,
                    source_name=file.name,
                    on_error=on_error,
                    on_batch=lambda _n: prog.update(task, completed=raw.tell()),
                    method=chosen,
                    on_apply=lambda: err.print("read and staged; applying"),
                    create=create,
                )
        except FormatError as exc:
            raise fail(f"{file}: {exc}") from None
        except KeyboardInterrupt:
            # Say what an interrupted import left behind: the operator decides whether to re-run.
            now = _entry_count(store, name)
            if chosen == "bulk" and store.dialect == "postgresql":
                kept = "nothing was imported (the bulk import is one transaction)"
            elif now == before:
                kept = "nothing was imported yet; run the same command again"
            else:
                kept = (f"{now - before:,} entries committed before the interrupt are kept; run "
                        "the same command again to finish (entries already present are "
                        "skipped)")
            err.print(styled("interrupted", "red", f"importing {file} into {name}: {kept}"))
            raise typer.Exit(130) from None
        finally:
            raw.close()
    if res.bad_rows > show_errors:
        err.print(styled(f"... and {res.bad_rows - show_errors} more bad rows", "yellow"))
    if missing and not res.created and res.added == res.duplicates == res.restored == 0:
        err.print(styled("nothing imported", "red",
                         f"{file} has no good row: list {name} was not created"))
        raise typer.Exit(1)
    err.print(
        f"imported into {name}: {res.added} added, {res.duplicates} already present, "
        f"{res.restored} restored, {res.bad_rows} bad rows skipped"
    )
    for line in res.lines():
        err.print(f"  {line}", markup=False, highlight=False)
    if res.bad_rows and res.added == res.duplicates == res.restored == 0:
        raise typer.Exit(1)


@lists_app.command("add")
def lists_add(
    name: str,
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    category: Annotated[str | None, typer.Option(help="Category SCHEME:CODE, e.g. uk:A.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1)] = 1,
    db: DbOpt = None,
) -> None:
    """Hash image files and add them (source reference = the file name), with the extra
    views and keypoints the robust matcher needs."""
    from hashwatch import ListNotFound, lists

    cat = _parse_category(category)
    with open_store(db) as store:
        try:
            store.get_list(name)
        except ListNotFound as exc:
            raise fail(str(exc)) from None
        files = _files(paths)
        with progress(len(files), "adding") as prog:
            tick = _Rate(prog, prog.add_task("adding", total=len(files), rate=""))

            def note(rec: Any) -> None:
                tick()
                if rec.error:
                    what = "skipped" if not rec.sha256 else "note (crypto hashes only)"
                    err.print(styled(what, "yellow", f"{rec.path}: {rec.error}"))

            res = lists.add_files(store, name, files, category=cat, workers=workers,
                                  actor="cli", on_record=note)
    err.print(
        f"added {res.files} file(s) to {name}: {res.added} entries "
        f"({res.duplicates} already present), {len(res.failed)} file(s) could not be read"
    )


@lists_app.command("export")
def lists_export(
    name: str,
    fmt: Annotated[str, typer.Option("--format", help="csv, hashlines, vics or icse.")] = "csv",
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Write here (0600).")] = None,
    signal: Annotated[str | None, typer.Option(help="Only this signal type.")] = None,
    db: DbOpt = None,
) -> None:
    """Export a list (hashes and metadata only, never images)."""
    from hashwatch.formats import FORMATS
    from hashwatch.lists import export_list
    from hashwatch.store import ListNotFound

    if fmt not in FORMATS:
        raise fail(f"unknown format {fmt!r} (choose one of {', '.join(FORMATS)})")
    with open_store(db, must_exist=True) as store:
        try:
            info = store.get_list(name)
        except ListNotFound as exc:
            raise fail(str(exc)) from None
        with output(out_path) as fh:
            n = export_list(store, name, fh, fmt, signal=signal)
    err.print(f"exported {n} record(s) of {info.name} version {info.version}")


@lists_app.command("show")
def lists_show(
    name: Annotated[str | None, typer.Argument(help="One list (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    db: DbOpt = None,
) -> None:
    """Show lists with their versions and entry counts."""
    from hashwatch.store import ListNotFound

    with open_store(db, must_exist=True) as store:
        try:
            infos = [store.get_list(name)] if name else store.lists()
        except ListNotFound as exc:
            raise fail(str(exc)) from None
        kept = _not_matchable(store.stats())
    if as_json:
        print(json.dumps([dict(i.as_dict(), not_matchable=kept.get(i.name, {}))
                          for i in infos], indent=2))
        return
    table = Table(title="hash lists")
    for col in (
        "name",
        "entries",
        "version",
        "source",
        "jurisdiction",
        "scheme",
        "enabled",
        "updated",
    ):
        table.add_column(col)
    for i in infos:
        table.add_row(
            i.name,
            f"{i.entry_count:,}",
            str(i.version),
            i.source,
            i.jurisdiction,
            i.category_scheme,
            "yes" if i.enabled else "no",
            i.updated_at[:19],
        )
    out.print(table)
    for i in infos:
        for sig, n in kept.get(i.name, {}).items():
            out.print(f"{i.name}: {n:,} {sig} values kept but not matched (needs the {sig} "
                      "signal plug-in)", markup=False, highlight=False)


def _not_matchable(stats: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """list -> {signal type: live entries} for signal types that cannot be matched here."""
    from hashwatch.signals import get_signal_type

    out: dict[str, dict[str, int]] = {}
    for r in stats:
        if not get_signal_type(r["signal_type"]).matchable:
            out.setdefault(r["list"], {})[r["signal_type"]] = r["entries"]
    return out


@lists_app.command("remove")
def lists_remove(
    name: str,
    entry_ids: Annotated[list[int], typer.Argument(help="Entry ids to remove.")],
    db: DbOpt = None,
) -> None:
    """Remove entries from a list (kept in history, audited)."""
    from hashwatch.store import ListNotFound

    with open_store(db, must_exist=True) as store:
        try:
            n = store.remove_entries(name, entry_ids)
        except ListNotFound as exc:
            raise fail(str(exc)) from None
    err.print(f"removed {n} entr{'y' if n == 1 else 'ies'} from {name}")


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
        files = _files(paths)
        results = _progressed(match_paths(spec, files, workers=workers), len(files), "matching")
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
    kept = _not_matchable(rows)
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
