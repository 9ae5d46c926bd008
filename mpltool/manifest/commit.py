"""How a stage's run becomes a record, and its outputs land (the commit).

Every output is written under a staging name, verified there, then committed in one step: the manifest is
written naming the final paths and listing the pending renames, the renames are done, and the list is
cleared, with SIGINT/SIGTERM held back throughout. A kill -9 before the manifest write leaves the old
verified state (staged files are swept on the next run); after it, the next command that takes the lock
completes the renames (roll forward, `recover`), so the manifest and the files it names are never out of
step.
"""

import contextlib
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from mpltool.errors import (Interrupted, InvalidInputError, MpltoolError, NoSpaceError, PrerequisiteError,
                            UsageError, classify, first_line)
from mpltool.manifest.files import fsync_dir
from mpltool.manifest.provenance import git_state, params_hash, tool_versions, utc_now
from mpltool.signals import critical_section, terminate_as_interrupt

if TYPE_CHECKING:  # pragma: no cover
    from mpltool.manifest.project import Project

STAGING_DIR = ".mpltool-staging"
_UNREAD = object()  # `previous` before the manifest was read


class StageRun:
    """The record of one stage while it runs; the manifest is written when the `with` block ends."""

    def __init__(self, project: "Project", name: str, params: Dict[str, Any]):
        self.project = project
        self.name = name
        self.params = params
        self.inputs = {}  # type: Dict[str, Dict[str, Any]]
        self.outputs = {}  # type: Dict[str, Dict[str, Any]]
        self.metrics = {}  # type: Dict[str, Any]
        self.record = {}  # type: Dict[str, Any]
        self.base = {}  # type: Dict[str, Any]
        self.force = False
        self.staged = []  # type: List[Dict[str, Any]]
        self.committed = False

    def stage_output(self, key: str, final) -> Path:
        """A staging path for output `key`, to be renamed to `final` when the stage commits.

        `final` is checked first (check_writable). The staging file sits in the project's staging folder,
        or beside `final` when that is outside the project (a rename never crosses file systems).
        """
        final = Path(str(final)).absolute()
        self.project.check_writable(final, self.name, self.force)
        if is_within(final, self.project.dir):
            folder = self.project.staging_dir()
            staged = folder / "{}-{}".format(key, final.name)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            staged = final.parent / ".{}.mpltool-{}.partial".format(final.name, os.getpid())
        if staged.exists():
            staged.unlink()
        self.staged.append({"key": key, "from": staged, "to": final})
        return staged

    def staged_path(self, key: str) -> Path:
        return next(item["from"] for item in self.staged if item["key"] == key)

    def fields(self) -> Dict[str, Any]:
        fields = {"inputs": self.inputs, "outputs": self.outputs, "metrics": self.metrics}
        fields.update(self.record)
        return plain(fields)

    def save_progress(self) -> None:
        """Write the record as it stands, still `running` (long stages: a kill -9 loses little)."""
        record = dict(self.base)
        record.update(self.fields())
        self.project.put_stage(self.name, record)


@contextlib.contextmanager
def stage_run(project: "Project", name: str, params: Dict[str, Any], running_record: bool = False, force: bool = False):
    """Run a stage under the lock and record it: done on success, failed or interrupted otherwise.

    Usage, invalid-input and prerequisite errors mean the stage never really ran: the manifest is
    left exactly as it was, so bad input never costs the user an earlier good record.
    The manifest is read once up front so a corrupt one fails before any work; with
    `running_record` the stage is written as `running` first (long stages: train). Outputs staged
    with `run.stage_output` are committed (see the module docstring) only when the block succeeds;
    a failed or interrupted run keeps recording the earlier outputs, which are still on disk.
    """
    run = StageRun(project, name, params)
    run.force = force
    base = {"status": "running", "started": utc_now(), "ended": None, "host": socket.gethostname(),
            "pid": os.getpid(), "argv": ["mpltool"] + sys.argv[1:]}
    run.base = base
    previous = _UNREAD
    with terminate_as_interrupt(), project.lock(name, recover=False):
        try:
            # Everything after the lock is inside this `try`, so an interrupt at any point is recorded.
            recover(project)
            previous = project.load()["stages"].get(name)
            base.update({"versions": tool_versions(), "git": git_state(project.dir), "params": plain(params),
                         "params_hash": params_hash(plain(params))})
            if running_record:
                project.put_stage(name, dict(base))
            yield run
        except BaseException as exc:
            error = classify(exc)
            discard_staged(run)
            if previous is _UNREAD:
                with contextlib.suppress(Exception):
                    previous = project.load()["stages"].get(name)
            if previous is _UNREAD:
                raise  # the manifest itself is unreadable: nothing can be recorded
            did_not_run = isinstance(error, (UsageError, InvalidInputError, PrerequisiteError)) or (
                isinstance(error, NoSpaceError) and not running_record)
            if did_not_run:
                # Bad input found before any output (or no room to write it): the stage did not run and
                # the manifest stays as it was.
                if running_record and previous:
                    project.put_stage(name, previous)
                elif running_record:
                    project.drop_stage(name)
                raise
            status = "interrupted" if isinstance(error, Interrupted) else "failed"
            record = dict(base, status=status, ended=utc_now(), error=error_line(exc, error))
            record.update(run.fields())
            if not run.outputs and isinstance(previous, dict) and previous.get("outputs"):
                record["outputs"] = previous["outputs"]  # still on disk, untouched by this run
            with contextlib.suppress(OSError, MpltoolError):  # a full disk must not hide the original error
                project.put_stage(name, record)
            raise
        try:
            commit(project, run, dict(base, status="done", ended=utc_now()))
        except KeyboardInterrupt as exc:  # held back during the commit, delivered as it ended
            raise Interrupted("{} as the '{}' stage finished; its result is recorded".format(
                classify(exc).message, name))

def commit(project: "Project", run: StageRun, record: Dict[str, Any]) -> None:
    """Manifest naming the final paths (with the renames pending), renames, manifest without them."""
    with critical_section():
        pending = []
        for item in run.staged:
            file_record = project.file_record(item["from"])
            file_record["path"] = project.relative(item["to"])
            run.outputs[item["key"]] = file_record
            pending.append({"from": project.relative(item["from"]), "to": file_record["path"],
                            "sha256": file_record["sha256"]})
        record.update(run.fields())
        data = project.load()
        data["stages"][run.name] = record
        if pending:
            data["pending"] = pending
        project.write(data)
        if pending:
            for item in run.staged:
                item["to"].parent.mkdir(parents=True, exist_ok=True)
                os.replace(str(item["from"]), str(item["to"]))
                fsync_dir(item["to"].parent)
            data.pop("pending", None)
            project.write(data)
        run.committed = True

def discard_staged(run: StageRun) -> None:
    for item in run.staged:
        with contextlib.suppress(OSError):
            if Path(str(item["from"])).is_file():
                os.unlink(str(item["from"]))

def recover(project: "Project") -> None:
    """Under the lock: roll forward a commit that a crash interrupted, then sweep staged leftovers."""
    data = project.load()
    pending = data.get("pending") or []
    if pending:
        with critical_section():
            for item in pending:
                source, target = project.path(item["from"]), project.path(item["to"])
                if source.is_file():
                    os.replace(str(source), str(target))
            data.pop("pending", None)
            project.write(data)
    sweep_staging(project)

def sweep_staging(project: "Project") -> None:
    """Remove staged files, unless a commit still needs them (its renames are pending)."""
    staging = project.dir / STAGING_DIR
    if not staging.is_dir():
        return
    try:
        if project.load().get("pending"):
            return
    except MpltoolError:
        return
    shutil.rmtree(str(staging), ignore_errors=True)


def error_line(exc: BaseException, error: Optional[MpltoolError]) -> str:
    """One line for the manifest: never a stack trace (TensorFlow appends whole ones to its messages)."""
    if error is not None:
        return first_line(error) if not error.hint else "{} ({})".format(first_line(error.message), error.hint)
    return "{}: {}".format(type(exc).__name__, first_line(exc))


def is_within(path: Path, directory: Path) -> bool:
    try:
        Path(os.path.realpath(str(path.parent))).joinpath(path.name).relative_to(os.path.realpath(str(directory)))
        return True
    except ValueError:
        return False


def plain(value):
    """YAML-safe copy: numpy scalars/arrays, tuples and Paths become plain Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):
        return plain(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
