"""The ``--hash-views`` option, shared by every command that matches (``match``, ``triage``,
``scan``, ``serve``): which views of the known images the PDQ index holds.

A thin CLI layer over :func:`hashwatch.matcher.check_views` (the library's rule)."""

from __future__ import annotations

from typing import Annotated

import typer

HashViewsOpt = Annotated[str | None, typer.Option(
    "--hash-views", envvar="HASHWATCH_HASH_VIEWS", show_envvar=False,
    help="Views of the known images the PDQ index holds, comma-separated (default: every "
    "view; also HASHWATCH_HASH_VIEWS), e.g. full,trim,crop80,crop60 for less memory on a "
    "national list (fewer edits found by the hash tier; BENCHMARKS.md). With an explicit "
    "--index-path, give it its own file.")]


def parse_hash_views(text: str | None) -> tuple[str, ...] | None:
    """``"full,trim"`` -> ``("full", "trim")``; None (option not given) -> None (every view).

    Raises typer.BadParameter for an empty list or an unknown view name."""
    if text is None:
        return None
    views = tuple(v.strip() for v in text.split(",") if v.strip())
    if not views:
        raise typer.BadParameter("no view named (leave the option out for every view)",
                                 param_hint="--hash-views / HASHWATCH_HASH_VIEWS")
    from hashwatch.matcher import check_views

    try:
        check_views(views)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--hash-views / HASHWATCH_HASH_VIEWS"
                                 ) from None
    return views
