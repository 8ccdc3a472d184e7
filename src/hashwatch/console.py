"""Rich consoles that print user data literally.

Categories (``uk:B``), paths, list names and notes are user data: Rich would otherwise read
``:B:``-like runs as emoji codes and ``[...]`` as markup, so a category or a file name could
be shown as something it is not. Every console of the CLI is made here with markup, emoji and
highlighting off; styled words (``error:``, ``warning:``) are added as :class:`rich.text.Text`
spans, never by markup.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.text import Text

__all__ = ["literal_console", "styled"]


# width of a console that writes to a file or pipe: Rich would assume 80 columns and cut
# table cells (paths, hashes) to "…", so `hashwatch match ... > out.txt` lost what it found
PIPE_WIDTH = 10_000


def literal_console(*, stderr: bool = False, **kwargs: Any) -> Console:
    """A Console whose strings (printed, or in Table cells and titles) are shown as given.
    Writing to a file or a pipe (and ``COLUMNS`` unset), it is ``PIPE_WIDTH`` wide, so a
    table is as wide as its content instead of cut to 80 columns."""
    console = Console(stderr=stderr, markup=False, emoji=False, highlight=False, **kwargs)
    if "width" not in kwargs and not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPE_WIDTH
    return console


def styled(label: str, style: str, message: str = "") -> Text:
    """``label`` in ``style`` followed by ``message`` as plain text (never parsed)."""
    return Text.assemble((label, style), (" " + message) if message else "")
