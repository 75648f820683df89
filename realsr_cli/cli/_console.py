"""The stderr console every command prints to, and what the commands print alike: notices, warnings and progress.

Messages and progress go to stderr, so stdout stays clean for --json. No torch here.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings as py_warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import click
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

# wider than any line realsr prints: a log or a pipe gets each line whole, never wrapped or cut with an ellipsis
UNWRAPPED_WIDTH = 10_000


class _Console(Console):
    """A rich console that draws for the terminal it writes to, and writes plain, unwrapped lines to anything else
    (rich would otherwise take 80 columns, or the width of whichever standard stream is a terminal)."""

    @property
    def size(self) -> ConsoleDimensions:
        if self.is_terminal:
            return super().size
        return ConsoleDimensions(UNWRAPPED_WIDTH, 25)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


console = _Console(stderr=True, highlight=False)


def print_data(line: str) -> None:
    """Print one line of data (a JSON record) on stdout. When stdout and stderr are the same terminal, the line goes
    through the console instead, so the live progress display is redrawn below it rather than over it."""
    if _same_terminal():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        click.echo(line)


def _same_terminal() -> bool:
    try:
        out, err = sys.stdout.fileno(), sys.stderr.fileno()
        if not (os.isatty(out) and os.isatty(err)):
            return False
        return os.fstat(out).st_rdev == os.fstat(err).st_rdev
    except (AttributeError, OSError, ValueError):  # replaced streams (CliRunner, pytest capture) have no descriptor
        return False


def notice(message: str) -> None:
    """Tell the user about a choice made for them (a CPU fallback, a sibling model file); the run goes on."""
    console.print(f"[yellow]notice:[/] {escape(message)}")


def warning(message: str) -> None:
    """Warn about something the user may want to fix; one line, however long, so logs can be searched."""
    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def route_warnings() -> None:
    """Python warnings (torch's, Pillow's) print as one-line warnings through this console instead of Python's two
    raw lines; those raised while an image is decoded reach the user as that file's warnings instead. tifffile's
    log lines about a malformed layout are dropped: realsr's own layout check names the file and the fault."""
    py_warnings.showwarning = _show_warning
    tifffile_log = logging.getLogger("tifffile")
    if not tifffile_log.handlers:
        tifffile_log.addHandler(logging.NullHandler())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    warning(f"{' '.join(str(message).split())} ({category.__name__})")


def progress_bar(quiet: bool = False) -> Progress:
    """A transient progress display: each task's description, bar, done/total, elapsed and remaining time.

    It draws nothing when `quiet` or when stderr is not a terminal (a log gets the commands' own lines instead).
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        refresh_per_second=6,
        disable=quiet or not console.is_terminal,
    )


def tracker(description: str, quiet: bool = False) -> Callable[[Iterable[T]], Iterator[T]]:
    """`progress_bar` as a wrapper of an iterable, for the jobs that take a `progress` callable."""

    def track(items: Iterable[T]) -> Iterator[T]:
        items = list(items)  # a total for the bar
        with progress_bar(quiet) as progress:
            yield from progress.track(items, description=description)

    return track
