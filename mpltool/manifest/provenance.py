"""Provenance of a stage record: when (UTC), which tool versions, which git commit, which parameters."""

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from mpltool import __version__


def utc_now() -> str:
    return datetime.datetime.utcnow().replace(microsecond=0).isoformat() + "Z"


def params_hash(params: Dict[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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
