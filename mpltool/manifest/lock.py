"""The project lock: one stage of a project writes at a time.

An exclusive lock file, created atomically with its content (write a temp file, hard-link it), naming its
holder (stage, pid, host, since). A lock left by a dead process on this host is taken over; so is an
unreadable one (a process that died in between on a file system without hard links) once it is
LOCK_GRACE_SECONDS old.
"""

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict

from mpltool.errors import PrerequisiteError, os_error
from mpltool.manifest.files import apply_umask
from mpltool.manifest.provenance import utc_now
from mpltool.signals import critical_section

# An unreadable lock older than this was left by a process that died creating it.
LOCK_GRACE_SECONDS = 5.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockFile:
    """The lock file of one project directory."""

    def __init__(self, path: Path, project_dir: Path):
        self.path = Path(path)
        self.project_dir = Path(project_dir)

    @staticmethod
    def holder(stage: str) -> Dict[str, Any]:
        return {"stage": stage, "pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}

    def take(self, holder: Dict[str, Any]) -> None:
        """Hold the lock as `holder`, or raise (exit 4) naming who holds it."""
        for _ in range(3):
            if self._try_create(holder):
                return
            other = self.read()
            if not other and self._age() > LOCK_GRACE_SECONDS:
                self._remove()
                continue
            if (other.get("host") == holder["host"] and isinstance(other.get("pid"), int)
                    and not pid_alive(other["pid"])):
                self._remove()
                continue
            raise PrerequisiteError(
                "project {} is locked by stage '{}' (pid {} on {}, since {})".format(
                    self.project_dir, other.get("stage", "?"), other.get("pid", "?"), other.get("host", "?"),
                    other.get("since", "?")),
                hint="wait for it to finish, or remove {} if that process is gone".format(self.path))
        raise PrerequisiteError("cannot take the lock {}".format(self.path),
                                hint="remove it if no mpltool process is running on this project")

    def release(self, holder: Dict[str, Any], before: Callable[[], None] = lambda: None) -> None:
        """Remove the lock if `holder` holds it, after `before()`. Decided by the lock's content, not by how
        far the caller got: an interrupt may land anywhere, so signals wait meanwhile."""
        with critical_section():
            if self.read() == holder:
                before()
                self._remove()

    def read(self) -> Dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(str(self.path))

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _try_create(self, holder: Dict[str, Any]) -> bool:
        text = json.dumps(holder).encode("utf-8")
        with critical_section():
            try:
                fd, tmp = tempfile.mkstemp(prefix="." + self.path.name + ".", dir=str(self.project_dir))
            except OSError as exc:
                raise os_error(exc, "cannot write in project directory {}".format(self.project_dir))
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(text)
                apply_umask(tmp)
                try:
                    os.link(tmp, str(self.path))
                    return True
                except FileExistsError:
                    return False
                except OSError:  # no hard links here: exclusive create, content written at once
                    try:
                        lock_fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    except FileExistsError:
                        return False
                    with os.fdopen(lock_fd, "wb") as handle:
                        handle.write(text)
                    return True
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
