"""What every command prints through: tables that never lose a number, and progress that shows in a
terminal and in a log.

rich sizes output to the terminal, and to 80 columns when stdout is a pipe or a file: a table then cuts
cells (``np-a…``, ``13,3…``) and the numbers a user piped the output for are gone. Piped, the console
here is as wide as the content needs. Progress goes to stderr, so stdout stays the command's result
(``--json`` pipes stay pure): a bar in a terminal, otherwise a plain line at most every few seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

from rich.console import Console

WIDE = 100_000  # piped: wide enough that no table column is ever cut
LINE_EVERY_S = 5.0  # piped progress: at most one line this often (and the last)
QUIET_S = 2.0  # piped progress of a job shorter than this prints nothing
TOP_ROWS = 20  # long per-unit tables show the largest rows and say how many more are in --out


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else WIDE, soft_wrap=not stream.isatty())


Advance = Callable[[float, float], None]
"""``advance(done, total)``: report how far a long job has come."""


@contextmanager
def progress(description: str, quiet: bool = False) -> Iterator[Advance]:
    """A progress reporter for a job of unknown speed; ``quiet`` silences it (nothing else is printed)."""
    if quiet:
        yield lambda done, total: None
        return
    if sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn(), console=console(stderr=True)) as bar:
            task = bar.add_task(description, total=1.0)
            yield lambda done, total: bar.update(task, completed=done / total if total else 1.0)
        return
    started = time.monotonic()
    last = [started]

    def line(done: float, total: float) -> None:
        now = time.monotonic()
        # a job done within QUIET_S prints nothing: no noise on every quick command
        if now - last[0] >= LINE_EVERY_S or (done >= total and (now - started >= QUIET_S or last[0] > started)):
            last[0] = now
            share = done / total if total else 1.0
            print(f"{description}: {share:4.0%} ({done:g}/{total:g}) after {now - started:.0f} s", file=sys.stderr, flush=True)

    yield line
