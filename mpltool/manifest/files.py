"""Files as the manifest knows them: atomic writes with the user's umask, sha256, and the one walk over the
files a stage record names (with the checker that verifies them, each distinct file hashed once)."""

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(str(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def stage_files(record: Any) -> List[Tuple[str, str, Any]]:
    """(label, shown path, file record or None) of every file a stage record names: its outputs, its
    inputs and its checkpoints (latest, each best, each phase's end). The one walk over a record's files:
    status verifies them, check_writable protects them.

    A file record is `{path, size, sha256}`; a checkpoint record (`{prefix, step, files}`, as train's
    checkpoints and the checkpoint input of eval/freeze) stands for each of its files. A checkpoint record
    without files gives one entry with record None: it cannot be verified, which is a problem in itself.
    """
    entries = []  # type: List[Tuple[str, str, Any]]
    if not isinstance(record, dict):
        return entries

    def add(label: str, item: Any) -> None:
        if isinstance(item, dict) and "prefix" in item and "path" not in item:
            files = item.get("files") or []
            if not files:
                entries.append((label, str(item.get("prefix")), None))
            for file_record in files:
                entries.append((label, str(file_record.get("path") if isinstance(file_record, dict) else "?"),
                                file_record))
        else:
            entries.append((label, str(item.get("path") if isinstance(item, dict) else "?"), item))

    for name, item in sorted((record.get("outputs") or {}).items()):
        add(str(name), item)
    for name, item in sorted((record.get("inputs") or {}).items()):
        add("input {}".format(name), item)
    checkpoints = record.get("checkpoints") or {}
    if checkpoints.get("latest"):
        add("checkpoint", checkpoints["latest"])
    for target, item in sorted((checkpoints.get("best") or {}).items()):
        if item:
            add("best {} checkpoint".format(target), item)
    for phase, item in sorted((checkpoints.get("phases") or {}).items()):
        if item:
            add("end of {} checkpoint".format(phase), item)
    return entries


def recorded_files(record: Any) -> List[Dict[str, Any]]:
    """The file records (`{path, size, sha256}`) of `stage_files(record)`."""
    return [item for _, _, item in stage_files(record) if isinstance(item, dict)]


class FileChecker:
    """Compares files with their manifest records; stats and hashes each distinct path at most once.

    `pending`: the manifest's pending renames (a commit a crash interrupted: manifest written, renames not
    done; the next command that takes the lock completes them): a recorded file still at its staged path
    is not missing.
    """

    def __init__(self, resolve: Callable[[str], Path], pending: Any = None):
        self.resolve = resolve  # a recorded (project-relative) path -> the file
        self._size = {}  # type: Dict[str, Any]   # path -> size, or None when not a readable regular file
        self._sha = {}  # type: Dict[str, str]    # path -> sha256, or "!<reason>" when reading failed
        self._staged = {}  # type: Dict[str, str]  # final path -> staged path
        for item in pending if isinstance(pending, list) else []:
            if isinstance(item, dict) and item.get("from") and item.get("to"):
                self._staged[str(resolve(str(item["to"])))] = str(resolve(str(item["from"])))
        self.staged_in_use = set()  # type: set

    def problem(self, record: Any) -> Optional[str]:
        """None when the file is the one recorded, else what is wrong (`missing`, `changed (...)`,
        `unreadable (...)`)."""
        if not isinstance(record, dict) or not record.get("path"):
            return "has no recorded path"
        key = str(self.resolve(str(record["path"])))
        if key in self._staged and self._stat_size(key) is None and self._stat_size(self._staged[key]) is not None:
            self.staged_in_use.add(key)
            key = self._staged[key]
        size = self._stat_size(key)
        if size is None:
            return "missing"
        if size != record.get("size"):
            return "changed (size {} bytes, recorded {})".format(size, record.get("size"))
        if key not in self._sha:
            try:
                self._sha[key] = sha256_file(key)
            except OSError as exc:
                self._sha[key] = "!" + (exc.strerror or type(exc).__name__)
        digest = self._sha[key]
        if digest.startswith("!"):
            return "unreadable ({})".format(digest[1:])
        if digest != record.get("sha256"):
            return "changed (sha256 mismatch)"
        return None

    def _stat_size(self, key: str) -> Any:
        if key not in self._size:
            try:
                info = os.stat(key)
                self._size[key] = info.st_size if stat.S_ISREG(info.st_mode) else None
            except OSError:
                self._size[key] = None
        return self._size[key]
