"""``hashwatch scan ...``: build a manifest, run (or resume) a batch scan, show its summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hashwatch.cliviews import HashViewsOpt, parse_hash_views
from hashwatch.console import literal_console, styled

app = typer.Typer(help="Batch scans beyond one machine: manifest, then run (resumable; local "
                  "process pool or Ray).", no_args_is_help=True)
# user data (paths, names) printed literally: no markup, no emoji codes (issue 15)
err = literal_console(stderr=True, soft_wrap=True)
out = literal_console()


def _fail(msg: str) -> typer.Exit:
    err.print(styled("error:", "bold red", msg))
    return typer.Exit(2)


@app.command("manifest")
def manifest_cmd(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files and folders (recursive).")
                     ] = None,
    from_lists: Annotated[list[Path] | None, typer.Option(
        "--from", help="List file: .parquet/.csv with a path or uri column, or one path per "
        "line (relative paths: from the list's folder). Repeatable.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="New manifest folder.")] = ...,
    shard_size: Annotated[int, typer.Option(min=1, help="Files per shard (unit of resume).")
                          ] = 1000,
) -> None:
    """Write the manifest of a scan: every file once, in fixed shards, with stable file ids."""
    from .manifest import ManifestError, build_manifest

    if not paths and not from_lists:
        raise _fail("give files/folders and/or --from list files")
    for lf in from_lists or []:
        if not lf.is_file():
            raise _fail(f"list file {lf} does not exist")
    for p in paths or []:
        if not p.exists():
            err.print(styled("warning:", "yellow", f"{p} does not exist (listed; the scan "
                             "reports it)"))
    try:
        with err.status("listing files") as status:
            m = build_manifest(out_dir, paths or [], from_lists or [], shard_size=shard_size,
                               progress=lambda f, b: status.update(
                                   f"listing files: {f:,} ({b / 2**20:,.0f} MiB)"))
    except ManifestError as exc:
        raise _fail(str(exc)) from None
    err.print(f"manifest {m.id}: {m.files:,} files, {m.bytes / 2**20:,.1f} MiB, "
              f"{m.shards} shard(s) of up to {m.shard_size} -> {m.root}")


def _progress_bar() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("[bold]scanning"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=err, disable=not err.is_terminal)


@app.command("run")
def run_cmd(
    manifest_dir: Annotated[Path, typer.Argument(help="Folder made by `hashwatch scan "
                                                 "manifest`.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (per-shard "
                                          "Parquet, summary.json); re-run to resume.")] = ...,
    engine_name: Annotated[str, typer.Option("--engine", help="local (process pool) or ray.")
                           ] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster address (ray engine); default: start Ray on this machine.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1, help=(
        "Processes (local) or CPUs of a new local Ray cluster; default: all cores."))] = None,
    list_names: Annotated[list[str] | None, typer.Option("--list", help="Only these lists.")
                          ] = None,
    robust: Annotated[bool, typer.Option(help="Query views (flips, crops, borders, keypoints)"
                                         ", as `hashwatch match`.")] = True,
    index_path: Annotated[Path | None, typer.Option(help=(
        "Saved PDQ index every worker maps (shared storage on a cluster); default: beside a "
        "SQLite database, else OUT/pdq.idx."))] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Files per task.")] = 16,
    results_db: Annotated[str | None, typer.Option(help=(
        "Also write rows to this database (SQLAlchemy URL, e.g. postgresql+psycopg://...), "
        "idempotently per shard."))] = None,
    restart: Annotated[bool, typer.Option(help="Discard OUT's shards and start over.")
                       ] = False,
    hash_views: HashViewsOpt = None,
    db: Annotated[Path | None, typer.Option("--db", help="Database (default as elsewhere).")
                  ] = None,
) -> None:
    """Scan every file of a manifest against the lists; resumes where it stopped."""
    from hashwatch.clikit import open_store
    from hashwatch.matcher import index_path_for
    from hashwatch.store import ListNotFound

    from .engines import LocalEngine, RayEngine
    from .manifest import Manifest, ManifestError
    from .run import ScanError, ScanProgress, run_scan, scan_id
    from .work import ScanConfig

    if engine_name not in ("local", "ray"):
        raise _fail("--engine must be local or ray")
    views = parse_hash_views(hash_views)
    try:
        manifest = Manifest.open(manifest_dir)
    except ManifestError as exc:
        raise _fail(str(exc)) from None
    with open_store(db, need_lists=True) as store:
        for n in list_names or []:
            try:
                store.get_list(n)
            except ListNotFound as exc:
                raise _fail(str(exc)) from None
        url = store.engine.url
        if url.get_backend_name() == "sqlite" and url.database:
            # workers (Ray's especially) do not share this process's working folder
            url = url.set(database=os.path.abspath(url.database))
        db_url = url.render_as_string(hide_password=False)
        default_index = index_path_for(store, views)
    idx = index_path or default_index or (out_dir / "pdq.idx")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = ScanConfig(db=db_url, index_path=str(Path(idx).resolve()),
                        lists=tuple(list_names) if list_names else None, robust=robust,
                        hash_views=views)
    sink = None
    if results_db:
        from .sqltable import ResultsTable

        sink = ResultsTable(results_db, scan_id(manifest, config))
    try:
        engine = LocalEngine(workers) if engine_name == "local" else RayEngine(address, workers)
    except ImportError as exc:
        raise _fail(str(exc)) from None
    err.print(f"scan of {manifest.files:,} files ({manifest.shards} shards) on engine "
              f"{engine.name} with {engine.workers} worker(s)")
    with _progress_bar() as bar:
        task = bar.add_task("scan", total=manifest.files, info="")
        quiet_every = max(1, manifest.shards // 20)
        last = [-1]

        def show(p: ScanProgress) -> None:
            import time

            el = max(time.monotonic() - p.started, 1e-9)
            run = p.files_done - p.skipped
            mib_s = (p.bytes_done - p.bytes_skipped) / 2**20 / el
            info = (f"{p.bytes_done / 2**20:,.0f}/{p.bytes_total / 2**20:,.0f} MiB "
                    f"{run / el:,.1f} files/s {mib_s:,.1f} MiB/s "
                    f"failures {p.failures}")
            bar.update(task, completed=p.files_done, info=info)
            if not err.is_terminal and p.shards_done != last[0] and (
                    p.shards_done % quiet_every == 0 or p.shards_done == p.shards_total):
                last[0] = p.shards_done
                eta = (p.files_total - p.files_done) / (run / el) if run else 0
                err.print(f"shards {p.shards_done}/{p.shards_total} files {p.files_done:,}/"
                          f"{p.files_total:,} {info} ETA {eta:,.0f} s")

        try:
            result = run_scan(manifest, out_dir, config, engine, batch_size=batch_size,
                              restart=restart, sink=sink, progress=show)
        except ScanError as exc:
            raise _fail(str(exc)) from None
        finally:
            engine.close()
            if sink is not None:
                sink.close()
    _print_summary(result.summary)
    err.print(f"{result.files_run:,} files scanned in this run ({result.shards_run} shards), "
              f"{result.wall:,.1f} s; outputs in {out_dir}")
    raise typer.Exit(0 if result.summary["complete"] else 1)


def _print_summary(s: dict[str, Any]) -> None:
    t = Table(title=f"scan {s['scan_id']}: {s['files']:,} files")
    t.add_column("state")
    t.add_column("files", justify="right")
    for k, v in s["states"].items():
        t.add_row(k, f"{v:,}")
    for k, v in s["categories"].items():
        t.add_row(f"  category {k}", f"{v:,}")
    out.print(t)


@app.command("summary")
def summary_cmd(
    out_dir: Annotated[Path, typer.Argument(help="A scan's output folder.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a finished scan's summary (counts per state and category, per-shard status)."""
    p = out_dir / "summary.json"
    if not p.exists():
        raise _fail(f"{p} not found (the scan has not finished; run it again to resume)")
    s = json.loads(p.read_text())
    if as_json:
        print(json.dumps(s, indent=1))
        return
    _print_summary(s)
    missing = [x["shard"] for x in s["shards"] if x["status"] != "done"]
    err.print(f"{len(s['shards']) - len(missing)}/{len(s['shards'])} shards done"
              + (f"; missing {missing[:20]}" if missing else ""))

