import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from mpltool.errors import ExitCode, InvalidInputError, PrerequisiteError, ToolFailedError, UsageError
from mpltool.manifest import LOCK_NAME, MANIFEST_NAME, Project
from mpltool.manifest.provenance import params_hash


def test_stage_record_has_files_hashes_params_and_times(tmp_path):
    payload = tmp_path / "out.bin"
    payload.write_bytes(b"mpltool" * 1000)
    project = Project(tmp_path)
    with project.stage_run("data", {"b": 2, "a": 1}) as run:
        run.outputs["blob"] = project.file_record(payload)
        run.metrics["count"] = 3
        run.record["extra"] = {"k": "v"}
    data = yaml.safe_load((tmp_path / MANIFEST_NAME).read_text())
    assert data["schema"] == 1
    record = data["stages"]["data"]
    assert record["status"] == "done"
    assert record["outputs"]["blob"] == {"path": "out.bin", "size": 7000,
                                         "sha256": hashlib.sha256(b"mpltool" * 1000).hexdigest()}
    assert record["params"] == {"b": 2, "a": 1}
    assert record["params_hash"] == hashlib.sha256(b'{"a":1,"b":2}').hexdigest() == params_hash({"a": 1, "b": 2})
    assert record["started"].endswith("Z") and record["ended"] >= record["started"]
    assert record["versions"]["mpltool"] and record["versions"]["python"].startswith("3.")
    assert record["metrics"] == {"count": 3} and record["extra"] == {"k": "v"}
    assert not (tmp_path / LOCK_NAME).exists()


def test_failure_is_recorded_with_error_but_bad_input_leaves_manifest_unchanged(tmp_path):
    project = Project(tmp_path)
    with project.stage_run("data", {}) as run:
        run.metrics["x"] = 1
    before = (tmp_path / MANIFEST_NAME).read_bytes()
    for error in (UsageError("bad option"), InvalidInputError("bad file"), PrerequisiteError("stale")):
        with pytest.raises(type(error)):
            with project.stage_run("data", {"new": True}, running_record=True):
                raise error
        assert (tmp_path / MANIFEST_NAME).read_bytes() == before
    with pytest.raises(ToolFailedError):
        with project.stage_run("convert", {}):
            raise ToolFailedError("atc failed (exit 255): E10016")
    record = project.stage("convert")
    assert record["status"] == "failed" and record["error"] == "atc failed (exit 255): E10016"


def test_corrupt_manifest_names_file_and_line(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("schema: 1\nstages:\n  data: [unclosed\n  x: y\n")
    with pytest.raises(InvalidInputError) as info:
        Project(tmp_path).load()
    assert info.value.exit_code == ExitCode.INVALID_INPUT
    assert str(tmp_path / MANIFEST_NAME) in str(info.value) and "line 4" in str(info.value)


def test_unknown_schema_is_refused(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("schema: 2\nstages: {}\n")
    with pytest.raises(InvalidInputError, match="schema 2"):
        Project(tmp_path).load()


def test_verify_file_detects_change_and_absence(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"123")
    project = Project(tmp_path)
    record = project.file_record(path)
    assert project.verify_file(record, "input") == path
    path.write_bytes(b"124")  # same size, other content
    with pytest.raises(PrerequisiteError, match="changed since"):
        project.verify_file(record, "input")
    path.unlink()
    with pytest.raises(PrerequisiteError, match="missing"):
        project.verify_file(record, "input")


def test_require_stage_names_the_command(tmp_path):
    with pytest.raises(PrerequisiteError) as info:
        Project(tmp_path).require_stage("freeze", "mpltool freeze")
    assert "mpltool freeze" in str(info.value) and info.value.exit_code == 4


def test_lock_names_holder_stage_and_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"stage": "train", "pid": holder.pid,
                                                      "host": os.uname().nodename, "since": "now"}))
        with pytest.raises(PrerequisiteError) as info:
            with Project(tmp_path).stage_run("freeze", {}):
                pass
        assert "locked by stage 'train'" in str(info.value) and "pid {}".format(holder.pid) in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its stale lock is taken over.
    with Project(tmp_path).stage_run("freeze", {}):
        pass
    assert Project(tmp_path).stage("freeze")["status"] == "done"


def test_write_is_atomic_no_temp_files_left(tmp_path):
    project = Project(tmp_path)
    for i in range(3):
        with project.stage_run("s{}".format(i), {"i": i}):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME]
    assert set(project.load()["stages"]) == {"s0", "s1", "s2"}


def test_unwritable_project_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InvalidInputError, match="is not a directory .*file is a file"):
        Project(blocker / "project").ensure_dir()
