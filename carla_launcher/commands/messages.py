"""The one shape of an error or warning line, for every command and for click's usage errors.

`error: ...` and `warning: ...`, as git, cargo and the daemon's journal lines have them: the
word a script greps for comes first, and the program's name is left to what already shows it
(pre-commit's hook header, the journal's unit, the shell that ran it).
"""

from __future__ import annotations

import click

ERROR = "error: "
WARNING = "warning: "


def error_line(message: str) -> str:
    """`error: MESSAGE`, once, even when the message already starts with it."""
    return message if message.startswith(ERROR) else ERROR + message


def error(message: str) -> None:
    """An error line on stderr (the command decides the exit code)."""
    click.echo(error_line(message), err=True)


def warning(message: str) -> None:
    """A warning line on stderr: something to know, not a failure."""
    click.echo(message if message.startswith(WARNING) else WARNING + message, err=True)
