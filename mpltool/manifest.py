"""The project manifest, `<project>/mpltool.yaml`: the one record every stage reads and writes.

Schema (version 1)::

    schema: 1
    created: 2026-11-24T01:44:00Z          # UTC, ISO 8601
    stages:
      <stage>:                             # data | train | eval | freeze | convert
        status: running | done | failed | interrupted
        started: <UTC>            ended: <UTC>
        host: <hostname>          pid: <int>
        argv: [mpltool, ...]      error: <one line, when failed>
        versions: {mpltool, python, tensorflow, numpy, npu_bridge, cann}
        git: {commit, dirty}      # of the project directory, when it is a git work tree
        params: {...}             # the resolved parameters of the stage
        params_hash: <sha256 of the canonical JSON of params>
        inputs:  {<name>: {path, size, sha256}}   # paths relative to the project directory
        outputs: {<name>: {path, size, sha256}}
        metrics: {...}
        ...                       # stage-specific keys (split, checkpoints, io, parity, command, ...)

    pending:                      # only between a commit's manifest write and its renames (see below)
      - {from: <staged file>, to: <final path>, sha256}

Why it is built this way: a crash must never leave half a manifest (atomic temp + fsync + rename), two
stages of one project must never write at once (an exclusive lock file naming its holder), and a stage
must refuse inputs that changed since the stage before recorded them (sha256 on every file).

How a stage's outputs land (the commit): every output is written under a staging name, verified there,
then committed in one step -- the manifest is written naming the final paths and listing the pending
renames, the renames are done, and the list is cleared -- with SIGINT/SIGTERM held back throughout.
A kill -9 before the manifest write leaves the old verified state (staged files are swept on the next
run); after it, the next command that takes the lock completes the renames (roll forward), so the
manifest and the files it names are never out of step.

Which files a stage may write (`Project.check_writable`): never the manifest or its lock, never a file
that another stage recorded as an input or output, and an existing file that no stage recorded only
with --force.
"""

import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from mpltool import __version__
from mpltool.errors import (Interrupted, InvalidInputError, MpltoolError, NoSpaceError, PrerequisiteError,
                            UsageError, classify, first_line, os_error)
from mpltool.signals import critical_section, terminate_as_interrupt

MANIFEST_NAME = "mpltool.yaml"
LOCK_NAME = "mpltool.yaml.lock"
SCHEMA_VERSION = 1
STATUSES = ("running", "done", "failed", "interrupted")
STAGING_DIR = ".mpltool-staging"
LOCK_GRACE_SECONDS = 5.0
_UNREAD = object()  # `previous` before the manifest was read  # an unreadable lock older than this was left by a process that died creating it


def utc_now() -> str:
    return datetime.datetime.utcnow().replace(microsecond=0).isoformat() + "Z"


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(str(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def params_hash(params: Dict[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path) -> None:
    """mkstemp creates 0600 files; project files get the user's umask like any other file they make."""
    os.chmod(str(path), 0o666 & ~current_umask())


def fsync_dir(directory) -> None:
    with contextlib.suppress(OSError):
        dir_fd = os.open(str(directory), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        apply_umask(tmp)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, str(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def recorded_files(record: Any):
    """Every {path, sha256, ...} file record inside a stage record (outputs, inputs, checkpoints...)."""
    if isinstance(record, dict):
        if isinstance(record.get("path"), str) and "sha256" in record:
            yield record
            return
        for value in record.values():
            for found in recorded_files(value):
                yield found
    elif isinstance(record, list):
        for value in record:
            for found in recorded_files(value):
                yield found


def tool_versions() -> Dict[str, Optional[str]]:
    """Versions that decide whether a result can be reproduced; TF is read without importing it when possible."""
    versions = {
        "mpltool": __version__,
        "python": platform.python_version(),
        "tensorflow": _distribution_version(
            "tensorflow", ("intel-tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow")),
        "numpy": _distribution_version("numpy", ("numpy",)),
        "npu_bridge": _distribution_version("npu_bridge", ("npu-bridge", "npu_bridge")),
        "cann": _cann_version(),
    }
    return versions


def _distribution_version(module: str, distributions) -> Optional[str]:
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    try:
        import pkg_resources
    except ImportError:  # pragma: no cover - setuptools is always in a venv
        return None
    for name in distributions:
        try:
            return pkg_resources.get_distribution(name).version
        except Exception:
            continue
    return None


def _cann_version() -> Optional[str]:
    home = os.environ.get("ASCEND_TOOLKIT_HOME")
    candidates = [Path(home)] if home else []
    candidates.append(Path("/usr/local/Ascend/ascend-toolkit/latest"))
    for root in candidates:
        for info in (root / "version.cfg", root / "version.info"):
            if info.is_file():
                for line in info.read_text(errors="replace").splitlines():
                    if "version" in line.lower() and "=" in line:
                        return line.split("=", 1)[1].strip().strip("[]")
        if root.is_dir():
            return root.resolve().name
    return None


def git_state(directory: Path) -> Optional[Dict[str, Any]]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=str(directory), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, timeout=10, check=True).stdout.decode().strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=str(directory),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.stdout.strip())}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        if _is_within(final, self.project.dir):
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
        return _plain(fields)

    def save_progress(self) -> None:
        """Write the record as it stands, still `running` (long stages: a kill -9 loses little)."""
        record = dict(self.base)
        record.update(self.fields())
        self.project._put_stage(self.name, record)


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
        if not path.is_file():
            raise PrerequisiteError("{} {} is missing".format(what, path), hint="re-run the stage that makes it")
        if path.stat().st_size != record.get("size") or sha256_file(path) != record.get("sha256"):
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
            for key in ("outputs", "inputs", "checkpoints"):
                for entry in recorded_files(record.get(key)):
                    if os.path.realpath(str(self.path(entry["path"]))) == real:
                        owners.append((name, "input" if key == "inputs" else "output"))
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
        """An exclusive lock file, created atomically with its content (write a temp file, hard-link it).

        A lock left by a dead process on this host is taken over; so is an unreadable one (a process
        that died in between on a file system without hard links) once it is LOCK_GRACE_SECONDS old.
        Taking the lock also finishes any interrupted commit and sweeps staged leftovers.
        """
        self.ensure_dir()
        holder = {"stage": stage, "pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}
        try:
            for _ in range(3):
                if self._try_lock(holder):
                    break
                other = self._read_lock()
                if not other and self._lock_age() > LOCK_GRACE_SECONDS:
                    with contextlib.suppress(OSError):
                        os.unlink(str(self.lock_path))
                    continue
                if (other.get("host") == holder["host"] and isinstance(other.get("pid"), int)
                        and not pid_alive(other["pid"])):
                    with contextlib.suppress(OSError):
                        os.unlink(str(self.lock_path))
                    continue
                raise PrerequisiteError(
                    "project {} is locked by stage '{}' (pid {} on {}, since {})".format(
                        self.dir, other.get("stage", "?"), other.get("pid", "?"), other.get("host", "?"),
                        other.get("since", "?")),
                    hint="wait for it to finish, or remove {} if that process is gone".format(self.lock_path))
            else:
                raise PrerequisiteError("cannot take the lock {}".format(self.lock_path),
                                        hint="remove it if no mpltool process is running on this project")
            if recover:
                self._recover()
            yield
        finally:
            # Decided by the lock's content, not by how far this code got: an interrupt may land anywhere.
            with critical_section():
                if self._read_lock() == holder:
                    self._sweep_staging()
                    with contextlib.suppress(OSError):
                        os.unlink(str(self.lock_path))

    def _try_lock(self, holder: Dict[str, Any]) -> bool:
        text = json.dumps(holder).encode("utf-8")
        with critical_section():
            try:
                fd, tmp = tempfile.mkstemp(prefix="." + LOCK_NAME + ".", dir=str(self.dir))
            except OSError as exc:
                raise os_error(exc, "cannot write in project directory {}".format(self.dir))
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(text)
                apply_umask(tmp)
                try:
                    os.link(tmp, str(self.lock_path))
                    return True
                except FileExistsError:
                    return False
                except OSError:  # no hard links here: exclusive create, content written at once
                    try:
                        lock_fd = os.open(str(self.lock_path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    except FileExistsError:
                        return False
                    with os.fdopen(lock_fd, "wb") as handle:
                        handle.write(text)
                    return True
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _lock_age(self) -> float:
        try:
            return time.time() - self.lock_path.stat().st_mtime
        except OSError:
            return 0.0

    def _read_lock(self) -> Dict[str, Any]:
        try:
            data = json.loads(self.lock_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _recover(self) -> None:
        """Under the lock: roll forward a commit that a crash interrupted, then sweep staged leftovers."""
        data = self.load()
        pending = data.get("pending") or []
        if pending:
            with critical_section():
                for item in pending:
                    source, target = self.path(item["from"]), self.path(item["to"])
                    if source.is_file():
                        os.replace(str(source), str(target))
                data.pop("pending", None)
                self.write(data)
        self._sweep_staging()

    def _sweep_staging(self) -> None:
        """Remove staged files, unless a commit still needs them (its renames are pending)."""
        staging = self.dir / STAGING_DIR
        if not staging.is_dir():
            return
        try:
            if self.load().get("pending"):
                return
        except MpltoolError:
            return
        shutil.rmtree(str(staging), ignore_errors=True)

    def write(self, data: Dict[str, Any]) -> None:
        if not data.get("created"):
            data["created"] = utc_now()
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
        try:
            with critical_section():
                atomic_write_bytes(self.manifest_path, text.encode("utf-8"))
        except OSError as exc:
            raise os_error(exc, "cannot write {}".format(self.manifest_path))

    @contextlib.contextmanager
    def stage_run(self, name: str, params: Dict[str, Any], running_record: bool = False, force: bool = False):
        """Run a stage under the lock and record it: done on success, failed or interrupted otherwise.

        Usage, invalid-input and prerequisite errors mean the stage never really ran: the manifest is
        left exactly as it was, so bad input never costs the user an earlier good record.
        The manifest is read once up front so a corrupt one fails before any work; with
        `running_record` the stage is written as `running` first (long stages: train). Outputs staged
        with `run.stage_output` are committed (see the module docstring) only when the block succeeds;
        a failed or interrupted run keeps recording the earlier outputs, which are still on disk.
        """
        run = StageRun(self, name, params)
        run.force = force
        base = {"status": "running", "started": utc_now(), "ended": None, "host": socket.gethostname(),
                "pid": os.getpid(), "argv": ["mpltool"] + sys.argv[1:]}
        run.base = base
        previous = _UNREAD
        with terminate_as_interrupt(), self.lock(name, recover=False):
            try:
                # Everything after the lock is inside this `try`, so an interrupt at any point is recorded.
                self._recover()
                previous = self.load()["stages"].get(name)
                base.update({"versions": tool_versions(), "git": git_state(self.dir), "params": _plain(params),
                             "params_hash": params_hash(_plain(params))})
                if running_record:
                    self._put_stage(name, dict(base))
                yield run
            except BaseException as exc:
                error = classify(exc)
                self._discard_staged(run)
                if previous is _UNREAD:
                    with contextlib.suppress(Exception):
                        previous = self.load()["stages"].get(name)
                if previous is _UNREAD:
                    raise  # the manifest itself is unreadable: nothing can be recorded
                did_not_run = isinstance(error, (UsageError, InvalidInputError, PrerequisiteError)) or (
                    isinstance(error, NoSpaceError) and not running_record)
                if did_not_run:
                    # Bad input found before any output (or no room to write it): the stage did not run and
                    # the manifest stays as it was.
                    if running_record and previous:
                        self._put_stage(name, previous)
                    elif running_record:
                        self._drop_stage(name)
                    raise
                status = "interrupted" if isinstance(error, Interrupted) else "failed"
                record = dict(base, status=status, ended=utc_now(), error=_error_line(exc, error))
                record.update(run.fields())
                if not run.outputs and isinstance(previous, dict) and previous.get("outputs"):
                    record["outputs"] = previous["outputs"]  # still on disk, untouched by this run
                with contextlib.suppress(OSError, MpltoolError):  # a full disk must not hide the original error
                    self._put_stage(name, record)
                raise
            try:
                self._commit(run, dict(base, status="done", ended=utc_now()))
            except KeyboardInterrupt as exc:  # held back during the commit, delivered as it ended
                raise Interrupted("{} as the '{}' stage finished; its result is recorded".format(
                    classify(exc).message, name))

    def _commit(self, run: StageRun, record: Dict[str, Any]) -> None:
        """Manifest naming the final paths (with the renames pending), renames, manifest without them."""
        with critical_section():
            pending = []
            for item in run.staged:
                file_record = self.file_record(item["from"])
                file_record["path"] = self.relative(item["to"])
                run.outputs[item["key"]] = file_record
                pending.append({"from": self.relative(item["from"]), "to": file_record["path"],
                                "sha256": file_record["sha256"]})
            record.update(run.fields())
            data = self.load()
            data["stages"][run.name] = record
            if pending:
                data["pending"] = pending
            self.write(data)
            if pending:
                for item in run.staged:
                    item["to"].parent.mkdir(parents=True, exist_ok=True)
                    os.replace(str(item["from"]), str(item["to"]))
                    fsync_dir(item["to"].parent)
                data.pop("pending", None)
                self.write(data)
            run.committed = True

    @staticmethod
    def _discard_staged(run: StageRun) -> None:
        for item in run.staged:
            with contextlib.suppress(OSError):
                if Path(str(item["from"])).is_file():
                    os.unlink(str(item["from"]))

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
            self._put_stage(name, dict(record, status="failed", ended=record.get("ended") or utc_now(), error=error))
            return True

    def _drop_stage(self, name: str) -> None:
        data = self.load()
        data["stages"].pop(name, None)
        self.write(data)

    def _put_stage(self, name: str, record: Dict[str, Any]) -> None:
        data = self.load()
        data["stages"][name] = record
        self.write(data)


def _error_line(exc: BaseException, error: Optional[MpltoolError]) -> str:
    """One line for the manifest: never a stack trace (TensorFlow appends whole ones to its messages)."""
    if error is not None:
        return first_line(error) if not error.hint else "{} ({})".format(first_line(error.message), error.hint)
    return "{}: {}".format(type(exc).__name__, first_line(exc))


def _is_within(path: Path, directory: Path) -> bool:
    try:
        Path(os.path.realpath(str(path.parent))).joinpath(path.name).relative_to(os.path.realpath(str(directory)))
        return True
    except ValueError:
        return False


def _plain(value):
    """YAML-safe copy: numpy scalars/arrays, tuples and Paths become plain Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):
        return _plain(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
