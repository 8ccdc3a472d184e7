"""``hashwatch private ...``: set up a table, make vouchers (client), ingest them (server), demo."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import typer

from hashwatch.console import literal_console, styled

app = typer.Typer(help="Private matching with threshold vouchers (after Apple's PSI design).",
                  no_args_is_help=True)
console = literal_console()
err = literal_console(stderr=True, soft_wrap=True)
VFILE_MAGIC = b"HWVF1\x00"


def _read_hash_lines(path: Path) -> Iterator[tuple[str, str]]:
    """``hex`` or ``id,hex`` per line, streamed; blank lines and # comments skipped."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            eid, _, hx = line.rpartition(",")
            hx = hx.strip().lower()
            if len(hx) != 64:
                raise typer.BadParameter(f"line {n}: not a 64-hex-digit PDQ hash")
            yield eid.strip() or f"line-{n}", hx


def write_vouchers(path: Path, vouchers: list[bytes]) -> None:
    size = len(vouchers[0]) if vouchers else 0
    with open(path, "wb") as f:
        f.write(VFILE_MAGIC + struct.pack("<II", len(vouchers), size))
        for v in vouchers:
            f.write(v)


def read_vouchers(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    if raw[:6] != VFILE_MAGIC:
        raise typer.BadParameter("not a hashwatch vouchers file")
    n, size = struct.unpack("<II", raw[6:14])
    body = raw[14:]
    if len(body) != n * size:
        raise typer.BadParameter("truncated vouchers file")
    return [body[i * size : (i + 1) * size] for i in range(n)]


@app.command()
def setup(
    hashes: Path = typer.Argument(..., exists=True, help="file: one PDQ hex (or id,hex) per line"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for table, commitment, secret"),
    threshold: int = typer.Option(30, help="matches needed before anything is decrypted"),
    label: str = typer.Option("", help="list label recorded in the public parameters"),
    workers: int = typer.Option(os.cpu_count() or 1, help="processes for keys and blinding"),
    restart: bool = typer.Option(False, help="discard an unfinished build in OUT and start over"),
    force: bool = typer.Option(False, help="replace a finished table in OUT (new secrets: every "
                               "client must fetch the new table and pin the new key)"),
    engine: str = typer.Option("local", help="local (process pool) or ray (keys and blinding "
                               "as Ray tasks; placement and signing here)"),
    address: str = typer.Option(None, help="Ray cluster address (default: start Ray here)"),
    allow_insecure_cluster: bool = typer.Option(
        False, help="run on a Ray cluster without token authentication (the blinding secret "
        "reaches its workers)"),
) -> None:
    """Server set-up: build the blinded table and its signed commitment.

    Streams the list and resumes an interrupted build when run again with the same arguments."""
    import shutil

    from hashwatch.cli import progress

    from .build import WORK, BuildError, build_table_files

    if engine not in ("local", "ray"):
        err.print(styled("error:", "bold red", f"--engine must be local or ray, not {engine!r}"))
        raise typer.Exit(2)
    mapper = None
    if engine == "ray":
        from hashwatch.distributed import ray_connect, ray_cpus, ray_ordered_map, ray_token_auth

        try:
            ray_connect(address, workers if address is None else None)
        except ImportError as e:
            err.print(styled("error:", "bold red", str(e)))
            raise typer.Exit(2) from e
        if ray_token_auth() is not True and not allow_insecure_cluster:
            err.print(styled("refused:", "bold red", "the Ray cluster does not use token "
                             "authentication, and the blinding secret would reach its workers "
                             "(start it with RAY_AUTH_MODE=token, or pass "
                             "--allow-insecure-cluster)"))
            raise typer.Exit(2)
        mapper = ray_ordered_map
        console.print(f"Ray: {ray_cpus()} CPU(s), token authentication "
                      f"{'on' if ray_token_auth() else 'OFF'}")
    work = out / WORK
    if restart and work.exists():
        shutil.rmtree(work)
    if (out / "table.bin").exists() and not work.exists() and not force:
        console.print(styled(f"{out / 'table.bin'} exists:", "red", "a table is already built "
                             "there (--force replaces it, with new secrets)"))
        raise typer.Exit(2)
    st = hashes.stat()
    fingerprint = f"{hashes.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    with progress(None, "building") as prog:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total, rate="")
            task = prog.tasks[tasks[stage]]
            rate = f"{done / task.elapsed:,.1f}/s" if task.elapsed else ""
            prog.update(tasks[stage], completed=done, total=total, rate=rate)

        try:
            summary = build_table_files(lambda: _read_hash_lines(hashes), out,
                                        fingerprint=fingerprint, threshold=threshold,
                                        list_label=label, workers=workers, progress=report,
                                        mapper=mapper)
        except BuildError as e:
            console.print(styled("build failed:", "red", str(e)))
            raise typer.Exit(2) from e
    console.print(f"table: {summary.entries:,} distinct hashes, {summary.keys:,} keys -> "
                  f"{summary.slots:,} slots ({summary.table_bytes / 2**20:.1f} MiB) in {out}")
    console.print(f"commitment digest: {summary.digest}")
    console.print(f"server public key (pin this in clients): {summary.sign_pk}")
    console.print(f"server secret (keep private, mode 0600): {out / 'server-secret.npz'}")


@app.command()
def voucher(
    table_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    images: list[Path] = typer.Argument(..., exists=True),
    pubkey: str = typer.Option(..., help="pinned server public key (hex)"),
    state: Path = typer.Option(..., help="client secret state file (created if missing)"),
    out: Path = typer.Option(..., "--out", "-o", help="vouchers file to write"),
) -> None:
    """Client side: images -> one voucher each (verifies the table commitment first)."""
    import numpy as np
    from PIL import Image

    from .client import ClientState, VoucherClient
    from .table import PublicTable, TableRejected

    try:
        table = PublicTable.load(table_dir, bytes.fromhex(pubkey))
        st = ClientState.load(state) if state.exists() else ClientState.new()
        client = VoucherClient(table, st, bytes.fromhex(pubkey))
    except (TableRejected, ValueError) as e:
        console.print(styled("table rejected:", "red", str(e)))
        raise typer.Exit(2) from e
    vouchers = [client.voucher_for_pixels(np.asarray(Image.open(p).convert("RGB")))
                for p in images]
    st.save(state)
    write_vouchers(out, vouchers)
    console.print(f"{len(vouchers)} vouchers ({len(vouchers[0]) if vouchers else 0} bytes each) "
                  f"-> {out}")


@app.command()
def ingest(
    table_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    vouchers: Path = typer.Argument(..., exists=True),
    account: str = typer.Option(..., help="account the vouchers came from"),
    secret: Path = typer.Option(None, help="server secret (default TABLE_DIR/server-secret.npz)"),
    state: Path = typer.Option(..., help="server state JSON (created if missing, mode 0600)"),
) -> None:
    """Server side: take vouchers for an account; report if the threshold is crossed."""
    from .server import PsiServer

    server = PsiServer.open(table_dir, secret, state_path=state)
    table_threshold = server.params.threshold
    counts: dict[str, int] = {}
    for v in read_vouchers(vouchers):
        r = server.ingest(account, v)
        counts[r.status] = counts.get(r.status, 0) + 1
    server.save()
    view = server.account_view(account)
    console.print(f"account {account}: {json.dumps(counts)}; opened so far "
                  f"{len(view['opened'])}/{table_threshold}; "
                  f"recovered={view['recovered']}; report={'yes' if view['report'] else 'no'}")


@app.command()
def demo(
    threshold: int = typer.Option(5),
    corpus: Path = typer.Option(None, help="benign corpus (uses kodak24); default: generated"),
    in_process: bool = typer.Option(
        False, "--in-process", help="Skip the HTTP service: call the server directly."),
) -> None:
    """End to end through the HTTP service: one account crosses the threshold, one does not."""
    from .demo import make_setup, run_demo

    if corpus is None and os.environ.get("HASHWATCH_CORPUS"):
        corpus = Path(os.environ["HASHWATCH_CORPUS"])
    if in_process:
        summary = run_demo(threshold=threshold, corpus=corpus, out=console.print)
    else:
        summary = _demo_through_service(make_setup(threshold, corpus))
    ok = summary["alice"]["report_raised"] and not summary["bob"]["threshold_crossed"]
    raise typer.Exit(0 if ok else 1)


def _demo_through_service(setup) -> dict:  # type: ignore[no-untyped-def]
    """A throw-away service (SQLite, loopback) with the demo table; devices and a reviewer
    talk to it over HTTP with their own keys."""
    import tempfile

    from hashwatch.service.auth import create_key
    from hashwatch.service.private_api import http_transport, serve_in_thread
    from hashwatch.service.settings import Settings
    from hashwatch.store import Store

    from .demo import run_demo

    with tempfile.TemporaryDirectory(prefix="hashwatch-private-demo-") as tmp:
        folder = Path(tmp) / "private"
        setup.table.save(folder)
        setup.secret.save(folder / "server-secret.npz")
        db = str(Path(tmp) / "service.db")
        with Store.open(db) as store:
            device = create_key(store, "device", "match", actor="demo")
            reviewer = create_key(store, "reviewer", "review", actor="demo")
        url, stop = serve_in_thread(Settings(db=db, private_dir=str(folder),
                                             run_webhook_worker=False))
        console.print(f"service: {url} (private matching endpoints under /v1/private/)")
        try:
            summary = run_demo(http_transport(url, device, reviewer), setup, out=console.print)
        finally:
            stop()
    return summary


if __name__ == "__main__":
    app()
