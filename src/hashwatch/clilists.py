"""``hashwatch lists``: create, import, add, export, show and remove hash lists (a thin layer
over :mod:`hashwatch.lists` and the store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hashwatch.clikit import (
    DbOpt,
    RateTick,
    err,
    fail,
    files_under,
    open_store,
    out,
    output,
    progress,
)
from hashwatch.console import styled

lists_app = typer.Typer(help="Hash lists: create, import, add, export, show.", no_args_is_help=True)


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


def category_option(text: str | None) -> Any:
    """A ``--category`` value as a Category (None when not given); a clear error otherwise."""
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
    default_cat = category_option(category)
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

    cat = category_option(category)
    with open_store(db) as store:
        try:
            store.get_list(name)
        except ListNotFound as exc:
            raise fail(str(exc)) from None
        files = files_under(paths)
        with progress(len(files), "adding") as prog:
            tick = RateTick(prog, prog.add_task("adding", total=len(files), rate=""))

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
        kept = not_matchable(store.stats())
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


def not_matchable(stats: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
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
