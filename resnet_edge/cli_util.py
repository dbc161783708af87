"""Helpers shared by every stage's CLI: errors become one red line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from resnet_edge.errors import ToolkitError

err_console = Console(stderr=True)
TRAIN_STACK = ("torch", "onnx", "onnxscript", "matplotlib")  # the [train] extra: absent on an edge install
_signalled = False  # set once SIGTERM/SIGINT arrived: whatever breaks afterwards is the interruption


def interrupt_on_signal(signum: int, frame: Any) -> None:
    """A signal handler that makes SIGTERM behave like Ctrl-C (finally blocks clean up)."""
    global _signalled
    _signalled = True
    raise KeyboardInterrupt


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
            _report_interrupt()
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in TRAIN_STACK:
                raise
            sentence = (f"This command needs {exc.name.split('.')[0]}, which this install (the edge runtime) lacks: "
                        "pip install 'resnet-edge[train]'.")
            err_console.print(f"[bold red]error:[/] {escape(sentence)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception:
            # An interrupt that lands inside a library (an import, a C extension) can surface as
            # that library's own error; it is still the interruption, not a bug.
            if _signalled:
                _report_interrupt()
            raise

    return wrapper


def _report_interrupt() -> None:
    err_console.print("[yellow]interrupted; files already written are complete[/]")
    sys.exit(130)
