"""The project: its directory, its manifest read and validated, the files stages record, and the stage
records written (under the lock, through the commit)."""

import contextlib
import os
import socket
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from mpltool import __version__
from mpltool.errors import InvalidInputError, PrerequisiteError, UsageError, os_error
from mpltool.manifest import commit
from mpltool.manifest.commit import STAGING_DIR
from mpltool.manifest.files import FileChecker, atomic_write_bytes, sha256_file, stage_files
from mpltool.manifest.lock import LockFile, pid_alive
from mpltool.manifest.provenance import utc_now
from mpltool.signals import critical_section

MANIFEST_NAME = "mpltool.yaml"
LOCK_NAME = "mpltool.yaml.lock"
SCHEMA_VERSION = 1
STATUSES = ("running", "done", "failed", "interrupted")


class Project:
    """A project directory and its manifest. Construction does no I/O."""

    def __init__(self, directory):
        self.dir = Path(directory).absolute()
        self.manifest_path = self.dir / MANIFEST_NAME
        self.lock_path = self.dir / LOCK_NAME

    # -- reading ------------------------------------------------------------------------------------
    def load(self) -> Dict[str, Any]:
        """The manifest as a dict; an empty schema-1 document when there is none yet."""
        self._check_dir_path()
        if not self.manifest_path.exists():
            return {"schema": SCHEMA_VERSION, "created": None, "stages": {}}
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise os_error(exc, "cannot read {}".format(self.manifest_path))
        except UnicodeDecodeError:
            raise InvalidInputError("corrupt manifest {}: not UTF-8 text".format(self.manifest_path),
                                    hint="restore it from a copy, or remove it to start the project over")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = " line {}".format(mark.line + 1) if mark is not None else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise InvalidInputError("corrupt manifest {}{}: {}".format(self.manifest_path, where, problem),
                                    hint="fix or remove the file")
        if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
            raise InvalidInputError("corrupt manifest {}: not a mapping with 'schema' and 'stages'".format(
                self.manifest_path))
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise InvalidInputError("manifest {} has schema {!r}; this mpltool {} reads schema {} only".format(
                self.manifest_path, schema, __version__, SCHEMA_VERSION))
        data.setdefault("stages", {})
        for name, record in data["stages"].items():
            if not isinstance(record, dict) or not isinstance(record.get("status"), str):
                raise InvalidInputError("corrupt manifest {}: stage {!r} is not a record with a status".format(
                    self.manifest_path, name), hint="restore it from a copy, or remove that stage's entry")
        return data

    def stage(self, name: str) -> Optional[Dict[str, Any]]:
        return self.load()["stages"].get(name)

    def record(self, name: str):
        """The typed record of stage `name` (manifest/records.py); empty, and false, when it has none."""
        from mpltool.manifest.records import typed

        return typed(name, self.stage(name))

    def require_stage(self, name: str, command: str) -> Dict[str, Any]:
        record = self.stage(name)
        if record is None:
            raise PrerequisiteError("no '{}' stage in {}".format(name, self.manifest_path),
                                    hint="run `{}` first".format(command))
        if record.get("status") != "done":
            raise PrerequisiteError("the '{}' stage in {} is {}".format(name, self.manifest_path, record.get("status")),
                                    hint="run `{}` first".format(command))
        return record

    # -- files --------------------------------------------------------------------------------------
    def path(self, rel) -> Path:
        rel = Path(rel)
        return rel if rel.is_absolute() else self.dir / rel

    def relative(self, path) -> str:
        path = Path(path).absolute()
        try:
            return path.relative_to(self.dir).as_posix()
        except ValueError:
            return str(path)

    def file_record(self, path) -> Dict[str, Any]:
        path = self.path(path)
        return {"path": self.relative(path), "size": path.stat().st_size, "sha256": sha256_file(path)}

    def verify_file(self, record: Dict[str, Any], what: str) -> Path:
        """The file's path, after proving it is the very file the manifest recorded."""
        path = self.path(record["path"])
        problem = FileChecker(self.path).problem(record)
        if problem == "missing":
            raise PrerequisiteError("{} {} is missing".format(what, path), hint="re-run the stage that makes it")
        if problem and problem.startswith("unreadable"):
            raise PrerequisiteError("{} {} is {}".format(what, path, problem), hint="check its permissions")
        if problem:
            raise PrerequisiteError(
                "{} {} changed since the manifest recorded it (sha256 mismatch)".format(what, path),
                hint="re-run the stage that makes it, or pass the file explicitly")
        return path

    # -- writing ------------------------------------------------------------------------------------
    def _check_dir_path(self) -> None:
        """The project path, or the nearest part of it that exists, must be a folder."""
        for candidate in [self.dir] + list(self.dir.parents):
            if candidate.exists():
                if not candidate.is_dir():
                    raise InvalidInputError("project path {} is not a directory{}".format(
                        self.dir, "" if candidate == self.dir else " ({} is a file)".format(candidate)))
                return

    def ensure_dir(self) -> None:
        self._check_dir_path()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, "cannot create project directory {}".format(self.dir))
        if not os.access(str(self.dir), os.W_OK | os.X_OK):
            raise InvalidInputError("project directory {} is not writable".format(self.dir))

    def staging_dir(self) -> Path:
        folder = self.dir / STAGING_DIR
        folder.mkdir(exist_ok=True)
        return folder

    def check_writable(self, path, stage: str, force: bool = False) -> None:
        """Refuse (exit 2) to write over the manifest, its lock, another stage's recorded files, a directory,
        or (without `force`) an existing file that no stage of this project recorded."""
        path = Path(str(path)).absolute()
        real = os.path.realpath(str(path))
        if real in (os.path.realpath(str(self.manifest_path)), os.path.realpath(str(self.lock_path))):
            raise UsageError("refusing to write {}: it is the project manifest{}".format(
                path, "" if real.endswith(MANIFEST_NAME) else "'s lock"), hint="choose another output path")
        if path.is_dir():
            raise UsageError("{} is a directory".format(path), hint="give a file name")
        owners = []  # (stage, "input"|"output") of every record naming this file
        for name, record in (self.load().get("stages") or {}).items():
            for label, _, entry in stage_files(record):
                if isinstance(entry, dict) and os.path.realpath(str(self.path(entry.get("path") or ""))) == real:
                    owners.append((name, "input" if label.startswith("input ") else "output"))
        # A stage rewrites its own outputs (later stages then see the new hash and refuse until re-run).
        own = (stage, "output") in owners
        if owners and not own:
            name, role = owners[0]
            raise UsageError("refusing to write {}: the '{}' stage recorded it as its {} (writing would destroy "
                             "it)".format(path, name, role), hint="choose another output path")
        if path.exists() and not own and not force:
            raise UsageError("refusing to overwrite {}: it exists and no stage of this project wrote it".format(path),
                             hint="choose another output path, or pass --force to replace it")

    @contextlib.contextmanager
    def lock(self, stage: str, recover: bool = True):
        """Hold the project lock (mpltool/manifest/lock.py) while the block runs. Taking it also finishes
        any interrupted commit and sweeps staged leftovers (commit.recover); releasing it sweeps them."""
        self.ensure_dir()
        lock = LockFile(self.lock_path, self.dir)
        holder = lock.holder(stage)
        try:
            lock.take(holder)
            if recover:
                commit.recover(self)
            yield
        finally:
            lock.release(holder, before=lambda: commit.sweep_staging(self))

    def stage_run(self, name: str, params: Dict[str, Any], running_record: bool = False, force: bool = False):
        """Run a stage under the lock and record it (mpltool/manifest/commit.py, `stage_run`)."""
        return commit.stage_run(self, name, params, running_record=running_record, force=force)

    def write(self, data: Dict[str, Any]) -> None:
        if not data.get("created"):
            data["created"] = utc_now()
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
        try:
            with critical_section():
                atomic_write_bytes(self.manifest_path, text.encode("utf-8"))
        except OSError as exc:
            raise os_error(exc, "cannot write {}".format(self.manifest_path))

    def fail_abandoned_stage(self, name: str, error: str, started_after: Optional[str] = None) -> bool:
        """Record why a multi-process job failed on the record its rank 0 left: `running` with its process
        gone (killed while blocked in an all-reduce), or `interrupted` by the job's stop signal in a run
        started after `started_after` (UTC time). True when it did; any other record is left alone."""
        with self.lock(name):
            record = self.stage(name)
            if not record:
                return False
            abandoned = record.get("status") == "running" and not (
                record.get("host") == socket.gethostname() and pid_alive(int(record.get("pid") or 0)))
            stopped = (record.get("status") == "interrupted" and started_after is not None
                       and str(record.get("started") or "") >= started_after)
            if not (abandoned or stopped):
                return False
            self.put_stage(name, dict(record, status="failed", ended=record.get("ended") or utc_now(), error=error))
            return True

    def drop_stage(self, name: str) -> None:
        data = self.load()
        data["stages"].pop(name, None)
        self.write(data)

    def put_stage(self, name: str, record: Dict[str, Any]) -> None:
        data = self.load()
        data["stages"][name] = record
        self.write(data)
