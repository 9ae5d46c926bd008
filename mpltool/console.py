"""How mpltool talks: rich on a terminal, plain lines when stdout is not one, one JSON object with --json.

With --json the result object is the only thing on stdout; every log line goes to stderr so a pipeline
can `| jq`. Progress bars appear only on a terminal; in CI the same events are periodic plain lines.
"""

import json
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from rich.console import Console
from rich.table import Table


class Output:
    def __init__(self, json_mode: bool = False, stdout=None, stderr=None):
        self.json_mode = json_mode
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr
        self.interactive = bool(getattr(self._stdout, "isatty", lambda: False)()) and not json_mode
        log_stream = self._stderr if json_mode else self._stdout
        # Plain lines off a terminal: no colour codes, no wrapping of long commands or paths.
        self.console = Console(file=log_stream, highlight=False, soft_wrap=not self.interactive,
                               force_terminal=self.interactive if self.interactive else None,
                               no_color=not self.interactive)
        self.err_console = Console(file=self._stderr, highlight=False, soft_wrap=True,
                                   no_color=not bool(getattr(self._stderr, "isatty", lambda: False)()))

    # -- lines ---------------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        self.console.print(message, markup=False)

    def step(self, message: str) -> None:
        """A stage milestone: bold on a terminal, a plain line elsewhere."""
        if self.interactive:
            self.console.print("[bold]==>[/bold] " + _escape(message))
        else:
            self.console.print("==> " + message, markup=False)

    def warn(self, message: str) -> None:
        self.err_console.print("warning: " + message, markup=False, style="yellow")

    def error(self, message: str) -> None:
        self.err_console.print("error: " + message, markup=False, style="bold red")

    # -- structured ------------------------------------------------------------------------------------
    def table(self, title: str, columns: Sequence[str], rows: List[Sequence[Any]]) -> None:
        if self.json_mode:
            return
        if not self.interactive:
            self.console.print(title + ":", markup=False)
            for row in rows:
                self.console.print("  " + "  ".join("{}={}".format(c, _cell(v)) for c, v in zip(columns, row)),
                                   markup=False)
            return
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[_escape(_cell(v)) for v in row])
        self.console.print(table)

    def fields(self, title: str, values: Dict[str, Any]) -> None:
        """Key/value pairs: a two-column table on a terminal, `key: value` lines elsewhere."""
        if self.json_mode:
            return
        if not self.interactive:
            self.console.print(title + ":", markup=False)
            for key, value in values.items():
                self.console.print("  {}: {}".format(key, _cell(value)), markup=False)
            return
        self.table(title, ["key", "value"], [[k, v] for k, v in values.items()])

    def result(self, payload: Dict[str, Any]) -> None:
        """The command's result: JSON on stdout with --json (nothing else is printed there)."""
        if self.json_mode:
            self._stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
            self._stdout.flush()

    def progress(self, description: str, total: Optional[int], every: int = 1):
        return Progress(self, description, total, every)


class Progress:
    """A rich progress bar on a terminal, a plain line every `every` updates elsewhere."""

    def __init__(self, output: Output, description: str, total: Optional[int], every: int):
        self.output = output
        self.description = description
        self.total = total
        self.every = max(1, every)
        self.done = 0
        self._bar = None
        self._task = None
        self._started = time.time()

    def __enter__(self):
        if self.output.interactive:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                                     console=self.output.console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, rate="", note="")
        return self

    def start_at(self, done: int) -> None:
        self.done = done
        self._started = time.time()
        self._base = done
        if self._bar is not None:
            self._bar.update(self._task, completed=done)

    def advance(self, count: int = 1, note: str = "") -> None:
        self.done += count
        elapsed = max(time.time() - self._started, 1e-9)
        rate = (self.done - getattr(self, "_base", 0)) / elapsed
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate="{:.2f}/s".format(rate), note=note)
        elif self.done % self.every == 0 or (self.total is not None and self.done >= self.total):
            eta = ""
            if self.total is not None and rate > 0:
                eta = " eta={:.0f}s".format((self.total - self.done) / rate)
            line = "{} {}{} rate={:.2f}/s{}".format(
                self.description, self.done, "/{}".format(self.total) if self.total else "", rate, eta)
            self.output.info(line + (" " + note if note else ""))

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message, markup=False)
        else:
            self.output.info(message)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "{:.6g}".format(value)
    if value is None:
        return "-"
    return str(value)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))
