"""What every ``hashwatch`` command shares: the consoles (user data printed literally), the
``--db`` option and opening the store, owner-only output files, and progress bars with counts
and rates."""

from __future__ import annotations

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

from hashwatch.console import literal_console, styled

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


class RateTick:
    """Updates a progress task and shows its rate per second."""

    def __init__(self, prog: Progress, task: Any) -> None:
        self.prog, self.task = prog, task

    def __call__(self, n: int = 1) -> None:
        self.prog.advance(self.task, n)
        t = self.prog.tasks[self.task]
        if t.elapsed:
            self.prog.update(self.task, rate=f"{t.completed / t.elapsed:,.0f}/s")


def files_under(paths: list[Path]) -> list[Any]:
    """The files under ``paths`` (folders walked), missing paths warned about and kept (each
    is reported with its error)."""
    from hashwatch import iter_files

    missing = [p for p in paths if not p.exists()]
    for p in missing:
        err.print(styled("warning:", "yellow", f"{p} does not exist"))
    return list(iter_files([p for p in paths if p.exists()])) + missing


def progressed(items: Iterator[Any], total: int, what: str) -> Iterator[Any]:
    """``items`` as they come, with a progress bar (count and rate) on a terminal."""
    with progress(total, what) as prog:
        task = prog.add_task(what, total=total, rate="")
        tick = RateTick(prog, task)
        for item in items:
            tick()
            yield item


def hash_records(paths: list[Path], workers: int, what: str) -> Iterator[Any]:
    from hashwatch import hash_many

    files = files_under(paths)
    yield from progressed(hash_many(files, workers=workers), len(files), what)
