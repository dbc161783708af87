"""Helpers shared by every stage's CLI: errors become one red line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from train.errors import ToolkitError

err_console = Console(stderr=True)


def make_console(stderr: bool = False) -> Console:
    """A console that keeps tables readable when output is piped to a file or CI log."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 150)


def cli_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ToolkitError into one red sentence on stderr and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ToolkitError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted; files already written are complete[/]")
            sys.exit(130)

    return wrapper
