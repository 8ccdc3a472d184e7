"""CLI: ``hashwatch serve`` and ``hashwatch keys create|revoke|list``.

``register(app)`` adds them to the main Typer app (called from ``hashwatch.cli``).
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from hashwatch.cliviews import HashViewsOpt, parse_hash_views

keys_app = typer.Typer(help="API keys for `hashwatch serve`: create, revoke, list.",
                       no_args_is_help=True)


def _store(db: str | None):  # type: ignore[no-untyped-def]
    from hashwatch.service.settings import Settings
    from hashwatch.store import Store, StoreError, upgrade_notice

    def upgrading(current: str, target: str) -> None:
        typer.echo(f"upgrading the database: {upgrade_notice(current, target)}", err=True)

    try:
        return Store.open(Settings.from_env(db=db).db, on_upgrade=upgrading)
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


DbOpt = Annotated[str | None, typer.Option("--db", help="Database path or URL "
                                           "(default: $HASHWATCH_DB or the user data dir).")]


@keys_app.command("create")
def keys_create(
    name: str,
    scopes: Annotated[str, typer.Option(help="Comma-separated: hash, match, curate, review, "
                                        "admin.")] = "match",
    rate_limit: Annotated[float | None, typer.Option(help="Requests/s for this key "
                                                     "(default: the service's).")] = None,
    queue: Annotated[str | None, typer.Option(help="Review queue: where this key's matches "
                                              "go, or which queue a review key sees "
                                              "(default: 'default').")] = None,
    db: DbOpt = None,
) -> None:
    """Create a key and print it once (it is stored only as a salted hash)."""
    from hashwatch.service.auth import KeyError_, create_key

    with _store(db) as store:
        try:
            key = create_key(store, name, scopes, actor=f"cli:{_user()}", rate_limit=rate_limit,
                             queue=queue)
        except KeyError_ as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(key)
    typer.echo("(shown once: store it now)", err=True)


@keys_app.command("revoke")
def keys_revoke(name: str, db: DbOpt = None) -> None:
    """Revoke a key (takes effect on every worker within 5 seconds)."""
    from hashwatch.service.auth import KeyError_, revoke_key

    with _store(db) as store:
        try:
            revoke_key(store, name, actor=f"cli:{_user()}")
        except KeyError_ as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(f"revoked {name}", err=True)


@keys_app.command("list")
def keys_list(db: DbOpt = None,
              as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List keys (names, ids, scopes; never the secrets)."""
    from hashwatch.service.auth import list_keys

    with _store(db) as store:
        rows = list_keys(store)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
        typer.echo(f"{r['name']}\thw_{r['key_id']}_…\t{','.join(r['scopes'])}\t{state}")


def _user() -> str:
    try:
        return os.getlogin()
    except OSError:
        return str(os.getuid())


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    db: DbOpt = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    index_path: Annotated[str | None, typer.Option(help="Persisted PDQ index file (default: "
                                                   "beside a SQLite database; none for "
                                                   "PostgreSQL).")] = None,
    log_level: Annotated[str, typer.Option(help="Uvicorn log level.")] = "info",
    hash_views: HashViewsOpt = None,
) -> None:
    """Run the HTTP matching service (API under /v1, OpenAPI at /openapi.json, review UI
    at /review)."""
    import uvicorn

    from hashwatch.service.settings import Settings
    from hashwatch.store.redact import install_log_redaction

    install_log_redaction()
    logging_cfg = log_config(log_level)  # a bad --log-level stops here, before index work

    views = parse_hash_views(hash_views)  # the option reads HASHWATCH_HASH_VIEWS too
    settings = Settings.from_env(db=db, index_path=index_path,
                                 hash_views=list(views) if views else None)
    if settings.index_path:
        _prepare_index_dir(settings.index_path)
    with _store(settings.db):
        pass  # migrate once here, before workers race to do it
    # bring the saved PDQ and keypoint indexes up to date once, here: every worker then maps
    # the same files (shared pages) instead of each building its own copy
    from hashwatch.matchwork import MatchSpec, prepare

    typer.echo("loading the saved indexes (built again when missing, or made for another "
               "database or set of --hash-views: minutes on a national list)", err=True)
    prepared = prepare(MatchSpec(settings.db, index_path=settings.index_path or None,
                                 hash_views=tuple(settings.hash_views) or None))
    if prepared is not None:
        if prepared.save_error:  # e.g. a full disk: workers build in memory and retry
            typer.echo(f"warning: cannot save the index ({prepared.save_error}); serving "
                       "from memory, retrying in each worker", err=True)
        prepared.store.close()
    # workers are separate processes: pass settings through the environment
    os.environ["HASHWATCH_DB"] = settings.db
    if settings.index_path:
        os.environ["HASHWATCH_INDEX_PATH"] = settings.index_path
    os.environ["HASHWATCH_WORKERS"] = str(workers)
    if settings.hash_views:
        os.environ["HASHWATCH_HASH_VIEWS"] = ",".join(settings.hash_views)
    uvicorn.run("hashwatch.service.app:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, log_config=logging_cfg,
                access_log=False, proxy_headers=False)


def log_config(level: str) -> dict:
    """Uvicorn's logging set-up (``uvicorn.config.LOGGING_CONFIG``) with hashwatch's own
    loggers on its console handler at ``level``: the service's warnings then carry the same
    level prefix as uvicorn's ("WARNING:  ...") and its info lines (schema upgrades, index
    rebuilds) show at ``--log-level info``. Without it they reached Python's last-resort
    handler bare, and info lines were dropped. Uvicorn applies it in every worker.

    Raises typer.BadParameter for a level uvicorn does not know."""
    import copy

    from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG

    if level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{level!r} is not one of {', '.join(LOG_LEVELS)}",
                                 param_hint="--log-level")
    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["loggers"]["hashwatch"] = {"handlers": ["default"], "level": LOG_LEVELS[level.lower()],
                                   "propagate": False}
    return cfg


def _prepare_index_dir(index_path: str) -> None:
    """The index is written at start-up by each worker: a folder that is missing is created
    owner-only (the index holds list hashes); one that cannot be created or written stops
    the service here with the reason, not later as "the index is still loading"."""
    from pathlib import Path

    folder = Path(index_path).expanduser().resolve().parent
    try:
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
            typer.echo(f"created {folder} (owner-only) for the PDQ index", err=True)
        if not folder.is_dir():
            raise OSError(f"{folder} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{folder} is not writable by this user")
    except OSError as exc:
        typer.echo(f"error: cannot keep the PDQ index at {index_path}: "
                   f"{exc.strerror or exc} (--index-path or $HASHWATCH_INDEX_PATH)", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``keys`` to the main CLI."""
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
