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
        self.result_written = False
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr
        self.interactive = bool(getattr(self._stdout, "isatty", lambda: False)()) and not json_mode
        log_stream = self._stderr if json_mode else self._stdout
        # Plain lines off a terminal: no colour codes, no wrapping of long commands or paths.
        self.console = Console(file=log_stream, highlight=False, emoji=False, soft_wrap=not self.interactive,
                               force_terminal=self.interactive if self.interactive else None,
                               no_color=not self.interactive)
        self.err_console = Console(file=self._stderr, highlight=False, emoji=False, soft_wrap=True,
                                   no_color=not bool(getattr(self._stderr, "isatty", lambda: False)()))

    # -- lines ---------------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        # soft_wrap: a long command or path stays one line on a terminal too, so it copy-pastes
        self.console.print(message, markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.err_console.print("warning: " + _one_line(message), markup=False, style="yellow")

    def error(self, message: str) -> None:
        self.err_console.print("error: " + _one_line(message), markup=False, style="bold red")

    def failure(self, exit_code: int, message: str, hint: Optional[str] = None) -> None:
        """A failed command: one `error: message (hint)` line on stderr; with --json also the error object.

        A command that already wrote its result object (status with problems) writes no second object.
        """
        self.error(message + (" ({})".format(hint) if hint else ""))
        if self.json_mode and not self.result_written:
            self._write_json({"ok": False, "exit_code": int(exit_code), "error": _one_line(message),
                              "hint": _one_line(hint) if hint else None})

    # -- structured ------------------------------------------------------------------------------------
    def table(self, title: str, columns: Sequence[str], rows: List[Sequence[Any]]) -> None:
        if self.json_mode:
            return
        if not self.interactive:
            self._plain_block(title, [list(columns)] + [list(row) for row in rows])
            return
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[_escape(_cell(v)) for v in row])
        self.console.print(table)

    def fields(self, title: str, values: Dict[str, Any]) -> None:
        """Key/value pairs: a two-column table on a terminal, aligned `key   value` lines elsewhere."""
        if self.json_mode:
            return
        if not self.interactive:
            self._plain_block(title, [[k, v] for k, v in values.items()])
            return
        self.table(title, ["key", "value"], [[k, v] for k, v in values.items()])

    def result(self, payload: Dict[str, Any]) -> None:
        """The command's result: JSON on stdout with --json (nothing else is printed there)."""
        if self.json_mode:
            self._write_json(payload)

    def _write_json(self, payload: Dict[str, Any]) -> None:
        self._stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
        self._stdout.flush()
        self.result_written = True

    def _plain_block(self, title: str, rows: List[Sequence[Any]]) -> None:
        """`title:` then rows indented, each column padded to its widest cell (no trailing blanks)."""
        cells = [[_cell(v) for v in row] for row in rows]
        widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(max(map(len, cells), default=0))]
        self.console.print(title + ":", markup=False)
        for row in cells:
            line = "  ".join(text.ljust(widths[i]) for i, text in enumerate(row))
            self.console.print("  " + line.rstrip(), markup=False)

    def progress(self, description: str, total: Optional[int]):
        return Progress(self, description, total)


class Progress:
    """A rich progress bar with rate and ETA, for a terminal (off one, the caller logs plain lines itself)."""

    def __init__(self, output: Output, description: str, total: Optional[int]):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.done = 0
        self._first = 0  # where this session started counting (a resumed run starts mid-way)
        self._started = time.time()
        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                                 console=output.console, transient=False)
        self._task = self._bar.add_task(description, total=total, rate="", note="")

    def __enter__(self):
        self._bar.__enter__()
        return self

    def start_at(self, done: int) -> None:
        self.done = self._first = done
        self._started = time.time()
        self._bar.update(self._task, completed=done)

    def advance(self, count: int = 1, note: str = "") -> None:
        self.done += count
        rate = (self.done - self._first) / max(time.time() - self._started, 1e-9)
        self._bar.update(self._task, completed=self.done, rate="{:.2f}/s".format(rate), note=note)

    def __exit__(self, *exc):
        self._bar.__exit__(*exc)
        return False


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "{:.6g}".format(value)
    if value is None:
        return "-"
    return str(value)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))
