"""``hashwatch private ...``: the custodian's table (setup, update, remove, rotate, cosign),
the device (sync, voucher), the server's intake (ingest) and the demo."""

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



def _progress_report(prog):  # type: ignore[no-untyped-def]
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total, rate="")
        task = prog.tasks[tasks[stage]]
        rate = f"{done / task.elapsed:,.1f}/s" if task.elapsed else ""
        prog.update(tasks[stage], completed=done, total=total, rate=rate)

    return report


def _mapper(engine: str, address: str | None, workers: int, allow_insecure: bool):  # type: ignore[no-untyped-def]
    if engine not in ("local", "ray"):
        err.print(styled("error:", "bold red", f"--engine must be local or ray, not {engine!r}"))
        raise typer.Exit(2)
    if engine == "local":
        return None
    from hashwatch.distributed import ray_connect, ray_cpus, ray_ordered_map, ray_token_auth

    try:
        ray_connect(address, workers if address is None else None)
    except ImportError as e:
        err.print(styled("error:", "bold red", str(e)))
        raise typer.Exit(2) from e
    if ray_token_auth() is not True and not allow_insecure:
        err.print(styled("refused:", "bold red", "the Ray cluster does not use token "
                         "authentication, and the blinding secret would reach its workers "
                         "(start it with RAY_AUTH_MODE=token, or pass "
                         "--allow-insecure-cluster)"))
        raise typer.Exit(2)
    console.print(f"Ray: {ray_cpus()} CPU(s), token authentication "
                  f"{'on' if ray_token_auth() else 'OFF'}")
    return ray_ordered_map


def _published(pub, res=None) -> None:  # type: ignore[no-untyped-def]
    head = pub.links[-1]
    link = head.link
    console.print(f"version {link.version} ({link.kind}, epoch {link.epoch}): "
                  + (f"{res.entries:,} new entries, {res.keys:,} keys, chunk "
                     f"{res.chunk_bytes / 2**20:.1f} MiB; " if res is not None else "")
                  + f"live chunks {list(link.live)}")
    console.print(f"chain head: {link.head.hex()}")
    console.print(f"server public key (pin this in clients): {pub.sign_pk.hex()}")


def _publish_step(table_dir: Path, what: str, step) -> None:  # type: ignore[no-untyped-def]
    """Run one publication step (``step(publisher, progress)``) with a progress bar; a
    BuildError is a clear message and exit 2."""
    from hashwatch.clikit import progress

    from .build import BuildError
    from .publish import Publisher

    try:
        pub = Publisher(table_dir)
        with progress(None, "building") as prog:
            res = step(pub, prog)
    except BuildError as e:
        console.print(styled(f"{what} failed:", "red", str(e)))
        raise typer.Exit(2) from e
    _published(pub, res)


@app.command()
def setup(
    hashes: Path = typer.Argument(..., exists=True, help="file: one PDQ hex (or id,hex) per line"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the table and its secrets"),
    threshold: int = typer.Option(30, help="matches needed before anything is decrypted"),
    label: str = typer.Option("", help="list label recorded in the public parameters"),
    chunk_slots: int = typer.Option(2, help="chunks a device may hold (base + deltas) before "
                                    "deltas are merged; each slot costs 16 voucher bytes per key"),
    keys_per_image: int = typer.Option(
        128, min=8, max=1024, help="match keys (voucher key blocks) per device image: 128 is the "
        "default (recall within 3 points of the 8-key design); 96 saves ~6 ms of client CPU "
        "and 2 KB per voucher for ~2 points of recall (docs/private-matching.md, frontier)"),
    delta_openings: int = typer.Option(
        64, min=0, help="keys (best-ranked first) a device also opens against the live deltas: "
        "~0.1 ms of client CPU each; an entry still in a delta is probed with this many keys"),
    workers: int = typer.Option(os.cpu_count() or 1, help="processes for keys and blinding"),
    restart: bool = typer.Option(False, help="discard an unfinished build in OUT and start over"),
    engine: str = typer.Option("local", help="local (process pool) or ray (keys and blinding "
                               "as Ray tasks; layout and signing here)"),
    address: str = typer.Option(None, help="Ray cluster address (default: start Ray here)"),
    allow_insecure_cluster: bool = typer.Option(
        False, help="run on a Ray cluster without token authentication (the blinding secret "
        "reaches its workers)"),
) -> None:
    """Server set-up: version 0 of the table (the base chunk) and its signed chain.

    Streams the list and resumes an interrupted build when run again with the same arguments.
    A finished table is never replaced: publish deltas (update) or a new epoch (rotate)."""
    import shutil

    from hashwatch.clikit import progress

    from .build import BuildError
    from .keys import DEFAULT_DESIGN, KeyDesign
    from .publish import WORK, Publisher

    mapper = _mapper(engine, address, workers, allow_insecure_cluster)
    if restart and (out / WORK).exists():
        shutil.rmtree(out / WORK)
    if (out / "chain.json").exists():
        console.print(styled(f"{out / 'chain.json'} exists:", "red", "a table is already "
                             "published there (update adds entries, rotate starts a new "
                             "epoch)"))
        raise typer.Exit(2)
    st = hashes.stat()
    fingerprint = f"{hashes.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    with progress(None, "building") as prog:
        try:
            design = DEFAULT_DESIGN
            if keys_per_image != design.keys_per_image:
                design = KeyDesign.from_dict({**design.to_dict(),
                                              "keys_per_image": keys_per_image})
            pub = Publisher.create(out, lambda: _read_hash_lines(hashes), design=design,
                                   threshold=threshold, chunk_slots=chunk_slots,
                                   delta_openings=delta_openings,
                                   list_label=label, fingerprint=fingerprint, mapper=mapper,
                                   workers=workers, progress=_progress_report(prog))
        except BuildError as e:
            console.print(styled("build failed:", "red", str(e)))
            raise typer.Exit(2) from e
    _published(pub)
    console.print(f"server secrets (keep private, mode 0600): {out / 'secret'}")


@app.command()
def update(
    table_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    hashes: Path = typer.Argument(..., exists=True, help="new entries: PDQ hex or id,hex"),
    workers: int = typer.Option(os.cpu_count() or 1, help="processes for keys and blinding"),
) -> None:
    """Publish new entries as the next version: a delta chunk devices fetch on their own (or,
    when the epoch's chunk slots are full, one chunk merging every delta)."""
    _publish_step(table_dir, "update", lambda pub, prog: pub.add_delta(
        _read_hash_lines(hashes), workers=workers, progress=_progress_report(prog)))


@app.command()
def remove(
    table_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    ids: list[str] = typer.Argument(..., help="entry ids to remove"),
) -> None:
    """Remove entries: they stop counting towards reports at once, and leave the table at the
    next rotate (until then they can still open vouchers)."""
    from .build import BuildError
    from .publish import Publisher

    try:
        n = Publisher(table_dir).remove(ids)
    except BuildError as e:
        console.print(styled("remove failed:", "red", str(e)))
        raise typer.Exit(2) from e
    console.print(f"{n} of {len(ids)} entries removed; run 'hashwatch private rotate' to take "
                  "them out of the published table")


@app.command()
def rotate(
    table_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    workers: int = typer.Option(os.cpu_count() or 1, help="processes for keys and blinding"),
) -> None:
    """Start a new epoch: new blinding key, one base chunk of every entry not removed."""
    _publish_step(table_dir, "rotate", lambda pub, prog: pub.rotate(
        workers=workers, progress=_progress_report(prog)))


@app.command()
def cosign(
    table_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    witness: Path = typer.Option(..., help="this witness's state file (created with new keys "
                                 "if missing, mode 0600)"),
) -> None:
    """Act as a witness: cosign the table's head if it extends the last head this witness
    cosigned; refuse (exit 3) a second head for a version it already cosigned (a fork)."""
    import json as _json

    from . import sodium
    from .chain import ChainRejected, ForkDetected, Witness
    from .publish import Publisher

    pub = Publisher(table_dir)
    keys = witness.with_suffix(witness.suffix + ".key")
    if keys.exists():
        k = _json.loads(keys.read_text())
        w = Witness(bytes.fromhex(k["sk"]), bytes.fromhex(k["pk"]), witness, pub.sign_pk)
    else:
        pk, sk = sodium.sign_keypair()
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            _json.dump({"sk": sk.hex(), "pk": pk.hex()}, f)
        w = Witness(sk, pk, witness, pub.sign_pk)
    try:
        pub.cosign([w])
    except ForkDetected as e:
        console.print(styled("FORK:", "red", f"{e}; heads {e.heads[0].hex()} and "
                             f"{e.heads[1].hex()}"))
        raise typer.Exit(3) from e
    except ChainRejected as e:
        console.print(styled("refused:", "red", str(e)))
        raise typer.Exit(2) from e
    console.print(f"cosigned version {pub.head.version}; witness public key {w.pk.hex()}")


def _policy(witness_keys: list[str], quorum: int):  # type: ignore[no-untyped-def]
    from .chain import WitnessPolicy

    try:
        return WitnessPolicy(tuple(bytes.fromhex(k) for k in witness_keys),
                             quorum if witness_keys else 0)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


@app.command()
def sync(
    local: Path = typer.Argument(..., help="the device's table folder (created if missing)"),
    source: Path = typer.Option(..., "--from", exists=True, file_okay=False,
                                help="the server's published files (a folder)"),
    pubkey: str = typer.Option(..., help="pinned server public key (hex)"),
    witness_key: list[str] = typer.Option([], help="pinned witness public key (repeatable)"),
    quorum: int = typer.Option(1, help="witness cosignatures required on the head"),
) -> None:
    """Device side: fetch only the versions after the one held, verify them, use them."""
    from .device import folder_fetch
    from .device import sync as do_sync
    from .table import CHAIN_FILE, PublicTable, TableRejected

    pk = bytes.fromhex(pubkey)
    policy = _policy(witness_key, quorum)
    try:
        held = PublicTable.open(local, pk, policy) if (local / CHAIN_FILE).exists() else None
        table, rep = do_sync(local, folder_fetch(source), pk, policy, held)
    except TableRejected as e:
        console.print(styled("rejected:", "red", f"{e} (the device keeps its version)"))
        raise typer.Exit(2) from e
    console.print(f"version {rep.from_version} -> {rep.to_version}: fetched "
                  f"{len(rep.fetched)} file(s), {rep.bytes_fetched / 2**20:.2f} MiB; verified "
                  f"in {rep.verify_cpu_s:.2f} s CPU; live chunks "
                  f"{[c.index for c in table.chunks]}, {table.entries:,} keys")


@app.command()
def voucher(
    table_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    images: list[Path] = typer.Argument(..., exists=True),
    pubkey: str = typer.Option(..., help="pinned server public key (hex)"),
    state: Path = typer.Option(..., help="client secret state file (created if missing)"),
    out: Path = typer.Option(..., "--out", "-o", help="vouchers file to write"),
    witness_key: list[str] = typer.Option([], help="pinned witness public key (repeatable)"),
    quorum: int = typer.Option(1, help="witness cosignatures required on the head"),
) -> None:
    """Client side: images -> one voucher each (verifies the table's chain first)."""
    from .client import ClientState, VoucherClient
    from .table import PublicTable, TableRejected

    try:
        table = PublicTable.open(table_dir, bytes.fromhex(pubkey),
                                 _policy(witness_key, quorum))
        st = ClientState.load(state) if state.exists() else ClientState.new()
        client = VoucherClient(table, st)
    except (TableRejected, ValueError) as e:
        console.print(styled("table rejected:", "red", str(e)))
        raise typer.Exit(2) from e
    from hashwatch.decode import DecodeError, decode_image

    pixels, bad = [], []
    for p in images:  # the project's bounded decoder: limits, EXIF orientation, clear errors
        try:
            pixels.append(decode_image(p, max_side=None).pixels)
        except (DecodeError, OSError) as e:
            bad.append(f"{p}: {e}")
    if bad:  # nothing is written and the client state does not move
        for line in bad:
            console.print(styled("cannot read:", "red", line))
        raise typer.Exit(2)
    vouchers = [client.voucher_for_pixels(px) for px in pixels]
    st.save(state)
    write_vouchers(out, vouchers)
    console.print(f"{len(vouchers)} vouchers ({len(vouchers[0]) if vouchers else 0} bytes each) "
                  f"against version {table.version} -> {out}")


@app.command()
def ingest(
    table_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    vouchers: Path = typer.Argument(..., exists=True),
    account: str = typer.Option(..., help="account the vouchers came from"),
    state: Path = typer.Option(..., help="server state JSON (created if missing, mode 0600)"),
) -> None:
    """Server side: take vouchers for an account; report if the threshold is crossed."""
    from .build import BuildError
    from .server import PsiServer

    try:
        server = PsiServer.open(table_dir, state_path=state)
    except BuildError as e:
        console.print(styled("no table:", "red", str(e)))
        raise typer.Exit(2) from e
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
    """End to end: a device updates from version N to N+1 (fetching only the delta), an
    account crosses the threshold with edited copies (among them a mirrored and a bordered
    one), another does not. Through the HTTP service unless --in-process."""
    import tempfile

    from .demo import run_demo

    if corpus is None and os.environ.get("HASHWATCH_CORPUS"):
        corpus = Path(os.environ["HASHWATCH_CORPUS"])
    with tempfile.TemporaryDirectory(prefix="hashwatch-private-demo-") as tmp:
        if in_process:
            summary = run_demo(Path(tmp), threshold=threshold, corpus=corpus, out=console.print)
        else:
            summary = _demo_through_service(Path(tmp), threshold, corpus)
    ok = summary["alice"]["report_raised"] and not summary["bob"]["threshold_crossed"] \
        and summary["device"]["updated"]
    raise typer.Exit(0 if ok else 1)


def _demo_through_service(tmp: Path, threshold: int, corpus: Path | None) -> dict:
    """A throw-away service (SQLite, loopback) serving the demo table; devices fetch the
    chain and chunks and post vouchers over HTTP with their own keys, a reviewer reads."""
    from hashwatch.service.auth import create_key
    from hashwatch.service.private_api import http_fetch, http_transport, serve_in_thread
    from hashwatch.service.settings import Settings
    from hashwatch.store import Store

    from .demo import make_setup, run_demo

    setup = make_setup(tmp / "private", threshold, corpus)
    db = str(tmp / "service.db")
    with Store.open(db) as store:
        device = create_key(store, "device", "match", actor="demo")
        reviewer = create_key(store, "reviewer", "review", actor="demo")
    url, stop = serve_in_thread(Settings(db=db, private_dir=str(setup.folder),
                                         run_webhook_worker=False))
    console.print(f"service: {url} (private matching endpoints under /v1/private/)")
    try:
        summary = run_demo(tmp, setup=setup, transport=http_transport(url, device, reviewer),
                           fetch=http_fetch(url, device), out=console.print)
    finally:
        stop()
    return summary


if __name__ == "__main__":
    app()
