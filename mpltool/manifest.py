"""The project manifest, `<project>/mpltool.yaml`: the one record every stage reads and writes.

Schema (version 1)::

    schema: 1
    created: 2026-11-24T01:44:00Z          # UTC, ISO 8601
    stages:
      <stage>:                             # data | train | eval | freeze | convert
        status: running | done | failed
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

Why it is built this way: a crash must never leave half a manifest (atomic temp + fsync + rename), two
stages of one project must never write at once (an exclusive lock file naming its holder), and a stage
must refuse inputs that changed since the stage before recorded them (sha256 on every file).
"""

import contextlib
import datetime
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from mpltool import __version__
from mpltool.errors import InvalidInputError, MpltoolError, PrerequisiteError, UsageError

MANIFEST_NAME = "mpltool.yaml"
LOCK_NAME = "mpltool.yaml.lock"
SCHEMA_VERSION = 1
STATUSES = ("running", "done", "failed")


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


def atomic_write_bytes(path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, str(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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


def _pid_alive(pid: int) -> bool:
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
        if not self.manifest_path.exists():
            return {"schema": SCHEMA_VERSION, "created": None, "stages": {}}
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError("cannot read {}: {}".format(self.manifest_path, exc.strerror))
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
    def ensure_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError("cannot create project directory {}: {}".format(self.dir, exc.strerror))
        if not os.access(str(self.dir), os.W_OK | os.X_OK):
            raise InvalidInputError("project directory {} is not writable".format(self.dir))

    @contextlib.contextmanager
    def lock(self, stage: str):
        """An exclusive lock file; a lock left by a dead process on this host is taken over."""
        self.ensure_dir()
        holder = {"stage": stage, "pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}
        for _ in range(2):
            try:
                fd = os.open(str(self.lock_path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self._read_lock()
                if (other.get("host") == holder["host"] and isinstance(other.get("pid"), int)
                        and not _pid_alive(other["pid"])):
                    with contextlib.suppress(OSError):
                        os.unlink(str(self.lock_path))
                    continue
                raise PrerequisiteError(
                    "project {} is locked by stage '{}' (pid {} on {}, since {})".format(
                        self.dir, other.get("stage", "?"), other.get("pid", "?"), other.get("host", "?"),
                        other.get("since", "?")),
                    hint="wait for it, or remove {} if that process is gone".format(self.lock_path))
            except OSError as exc:
                raise InvalidInputError("cannot write in project directory {}: {}".format(self.dir, exc.strerror))
            with os.fdopen(fd, "w") as handle:
                json.dump(holder, handle)
            break
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(str(self.lock_path))

    def _read_lock(self) -> Dict[str, Any]:
        try:
            data = json.loads(self.lock_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def write(self, data: Dict[str, Any]) -> None:
        if not data.get("created"):
            data["created"] = utc_now()
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
        try:
            atomic_write_bytes(self.manifest_path, text.encode("utf-8"))
        except OSError as exc:
            raise InvalidInputError("cannot write {}: {}".format(self.manifest_path, exc.strerror))

    @contextlib.contextmanager
    def stage_run(self, name: str, params: Dict[str, Any], running_record: bool = False):
        """Run a stage under the lock and record it: done on success, failed (with the error) otherwise.

        Usage, invalid-input and prerequisite errors mean the stage never really ran: the manifest is
        left exactly as it was, so bad input never costs the user an earlier good record.
        The manifest is read once up front so a corrupt one fails before any work; with
        `running_record` the stage is written as `running` first (long stages: train).
        """
        with self.lock(name):
            self.load()
            run = StageRun(self, name, params)
            started = utc_now()
            base = {
                "status": "running",
                "started": started,
                "ended": None,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "argv": ["mpltool"] + sys.argv[1:],
                "versions": tool_versions(),
                "git": git_state(self.dir),
                "params": _plain(params),
                "params_hash": params_hash(_plain(params)),
            }
            run.base = base
            previous = self.load()["stages"].get(name)
            if running_record:
                self._put_stage(name, dict(base))
            try:
                yield run
            except (UsageError, InvalidInputError, PrerequisiteError):
                # Bad input found before any output: the stage did not run, the manifest stays as it was.
                if running_record and previous:
                    self._put_stage(name, previous)
                elif running_record:
                    self._drop_stage(name)
                raise
            except BaseException as exc:
                record = dict(base, status="failed", ended=utc_now(), error=_error_line(exc))
                record.update(run.fields())
                self._put_stage(name, record)
                raise
            record = dict(base, status="done", ended=utc_now())
            record.update(run.fields())
            self._put_stage(name, record)

    def _drop_stage(self, name: str) -> None:
        data = self.load()
        data["stages"].pop(name, None)
        self.write(data)

    def _put_stage(self, name: str, record: Dict[str, Any]) -> None:
        data = self.load()
        data["stages"][name] = record
        self.write(data)


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, MpltoolError):
        return str(exc)
    return "{}: {}".format(type(exc).__name__, exc)


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
