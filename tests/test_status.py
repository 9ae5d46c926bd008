"""`mpltool status`: stages in lifecycle order, every recorded file re-verified, problems and ok, JSON and plain."""

import collections
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cifar_fixtures import make_cifar_dir
from mpltool.cli import main
from mpltool.manifest import Project
from mpltool.status import project_status
from mpltool.checkpoints import checkpoint_record


def invoke(project, *args):
    return CliRunner(mix_stderr=False).invoke(main, ["--project", str(project)] + list(args), catch_exceptions=False)


def test_status_of_an_empty_project_says_how_to_start(tmp_path):
    result = invoke(tmp_path, "--json", "status")
    assert result.exit_code == 4  # nothing recorded is not a healthy project
    payload = json.loads(result.stdout)
    assert payload["stages"] == [] and "mpltool data prepare" in payload["notes"][0]
    assert payload["ok"] is False
    assert payload["problems"] == [
        "no stages yet: start with `mpltool data prepare --cifar PATH` (or `mpltool data demo`)"]


@pytest.mark.parametrize("convert_stage", ["convert", "convert-check"])
def test_status_rehashes_outputs_and_orders_stages(tmp_path, convert_stage):
    src = Path(make_cifar_dir(tmp_path / "src", train_records=(10,) * 5, test_records=5))
    project = tmp_path / "p"
    assert invoke(project, "data", "prepare", "--cifar", str(src), "--labelled", "10").exit_code == 0
    with Project(project).stage_run(convert_stage, {}) as run:  # a check-only run: the same command note
        run.record["command"] = "atc --model=x.pb --framework=3"
    payload = json.loads(invoke(project, "--json", "status").stdout)
    assert [s["stage"] for s in payload["stages"]] == ["data", convert_stage]
    data = payload["stages"][0]
    assert data["status"] == "done" and data["outputs_state"] == "ok" and payload["ok"] is True
    assert data["metrics"]["labelled_records"] == 10
    assert "to make the .om on a CANN host: atc --model=x.pb --framework=3" in payload["notes"]
    with open(str(project / "data/cifar/test_batch.bin"), "r+b") as handle:
        handle.write(b"\x09")
    (project / "data/labelled_indices.txt").unlink()
    plain = invoke(project, "status")
    assert plain.exit_code == 4
    assert plain.stderr.count("\n") == 1 and "error: 2 problem(s): data: labelled_indices " in plain.stderr
    assert "test_batch changed" in plain.stdout and "labelled_indices missing" in plain.stdout
    assert re.search(r"^  data +done +\S+Z .*test_batch changed", plain.stdout, re.M), plain.stdout
    assert "\x1b[" not in plain.stdout


# -- every recorded file verified; problems and ok -----------------------------------------------------
PB = "frozen/wrn-10-1-ema-step100.pb"
DATA_SUFFIX = ".data-00000-of-00001"


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _checkpoint(project, prefix, step, seed):
    """A Saver-shaped prefix: a 40-byte .index and a 64-byte .data file (status never parses them)."""
    full = project.dir / "{}-{}".format(prefix, step)
    _write(full.parent / (full.name + ".index"), bytes([seed]) * 40)
    _write(full.parent / (full.name + DATA_SUFFIX), bytes([seed + 1]) * 64)
    return checkpoint_record(project, full, step)


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A project with all five stages done, every record naming real files with their real hashes."""
    import mpltool.manifest

    # status reads neither: skip the git and package look-ups that make up most of a stage_run's time
    monkeypatch.setattr(mpltool.manifest.commit, "git_state", lambda directory: None)
    monkeypatch.setattr(mpltool.manifest.commit, "tool_versions", lambda: {"mpltool": "test"})
    project = Project(tmp_path / "p")
    with project.stage_run("data", {}) as run:
        run.outputs["test_batch"] = project.file_record(_write(project.dir / "data/cifar/test_batch.bin", b"t" * 300))
        run.outputs["labelled_indices"] = project.file_record(
            _write(project.dir / "data/labelled_indices.txt", b"0\n1\n2\n"))
    data_outputs = project.stage("data")["outputs"]
    latest = _checkpoint(project, "checkpoints/model.ckpt", 200, 1)
    best_ema = _checkpoint(project, "checkpoints/best-ema/model.ckpt", 100, 3)
    best_student = _checkpoint(project, "checkpoints/best-student/model.ckpt", 150, 5)
    with project.stage_run("train", {}) as run:
        run.inputs.update(data_outputs)
        run.record["checkpoints"] = {"latest": latest, "best": {"ema": dict(best_ema, top1=0.5),
                                                                 "student": dict(best_student, top1=0.4)}}
    with project.stage_run("eval", {}) as run:
        run.inputs["test_batch"] = data_outputs["test_batch"]
        run.inputs["checkpoint"] = best_ema
    with project.stage_run("freeze", {}) as run:
        run.inputs["checkpoint"] = best_ema
        run.inputs["test_batch"] = data_outputs["test_batch"]
        run.outputs["pb"] = project.file_record(_write(project.dir / PB, b"p" * 500))
    with project.stage_run("convert", {}) as run:
        run.inputs["pb"] = project.file_record(project.dir / PB)
        run.record["command"] = "atc --model={} --framework=3".format(PB)
    return project


def _edit_stage(project, name, **fields):
    data = yaml.safe_load(project.manifest_path.read_text())
    data["stages"][name].update(fields)
    project.manifest_path.write_text(yaml.safe_dump(data))


def _by_stage(status):
    return {s["stage"]: s for s in status["stages"]}


def test_an_intact_project_is_ok(recorded):
    status = project_status(recorded.dir)
    assert status["ok"] is True and status["problems"] == []
    stages = _by_stage(status)
    assert [s["stage"] for s in status["stages"]] == ["data", "train", "eval", "freeze", "convert"]
    assert {n: (s["status"], s["outputs_state"]) for n, s in stages.items()} == {
        n: ("done", "ok") for n in stages}
    assert stages["train"]["outputs_text"] == ("latest checkpoints/model.ckpt-200, best ema "
                                               "checkpoints/best-ema/model.ckpt-100 (top-1 0.5000), ok")
    assert stages["eval"]["outputs_text"] == "inputs ok"  # no outputs: its inputs verified
    plain = invoke(recorded.dir, "status")
    assert plain.exit_code == 0 and plain.stderr == ""


def test_a_deleted_latest_checkpoint_file_is_a_problem(recorded):
    (recorded.dir / "checkpoints/model.ckpt-200.index").unlink()
    status = project_status(recorded.dir)
    assert status["ok"] is False
    assert status["problems"] == ["train: checkpoint checkpoints/model.ckpt-200.index missing"]
    train = _by_stage(status)["train"]
    assert train["outputs_state"] == "checkpoint model.ckpt-200.index missing"
    assert train["problems"] == status["problems"]
    assert train["outputs_text"].endswith(", checkpoint model.ckpt-200.index missing")


def test_a_truncated_best_checkpoint_is_a_problem(recorded):
    path = recorded.dir / ("checkpoints/best-student/model.ckpt-150" + DATA_SUFFIX)
    path.write_bytes(path.read_bytes()[:10])
    status = project_status(recorded.dir)
    assert status["ok"] is False
    assert status["problems"] == [
        "train: best student checkpoint checkpoints/best-student/model.ckpt-150{} changed "
        "(size 10 bytes, recorded 64)".format(DATA_SUFFIX)]
    assert _by_stage(status)["train"]["outputs_state"] == \
        "best student checkpoint model.ckpt-150{} changed".format(DATA_SUFFIX)


def test_a_checkpoint_used_as_input_is_checked_for_every_stage_that_read_it(recorded):
    path = recorded.dir / "checkpoints/best-ema/model.ckpt-100.index"
    path.write_bytes(b"x" * 40)  # same size, other bytes
    status = project_status(recorded.dir)
    assert status["problems"] == [
        "train: best ema checkpoint checkpoints/best-ema/model.ckpt-100.index changed (sha256 mismatch)",
        "eval: input checkpoint checkpoints/best-ema/model.ckpt-100.index changed (sha256 mismatch)",
        "freeze: input checkpoint checkpoints/best-ema/model.ckpt-100.index changed (sha256 mismatch)"]
    assert _by_stage(status)["eval"]["outputs_state"] == "input checkpoint model.ckpt-100.index changed"
    assert status["ok"] is False


def test_a_changed_pb_is_a_problem_of_freeze_and_of_convert(recorded):
    (recorded.dir / PB).write_bytes(b"q" * 500)
    status = project_status(recorded.dir)
    assert status["problems"] == ["freeze: pb {} changed (sha256 mismatch)".format(PB),
                                  "convert: input pb {} changed (sha256 mismatch)".format(PB)]
    stages = _by_stage(status)
    assert stages["freeze"]["outputs_state"] == "pb changed"
    assert stages["convert"]["outputs_state"] == "input pb changed"


def test_a_data_file_is_reported_as_output_and_as_input(recorded):
    (recorded.dir / "data/labelled_indices.txt").unlink()
    status = project_status(recorded.dir)
    assert status["problems"] == ["data: labelled_indices data/labelled_indices.txt missing",
                                  "train: input labelled_indices data/labelled_indices.txt missing"]


def test_a_checkpoint_record_without_files_is_a_problem(recorded):
    data = yaml.safe_load(recorded.manifest_path.read_text())
    data["stages"]["train"]["checkpoints"]["latest"]["files"] = []
    recorded.manifest_path.write_text(yaml.safe_dump(data))
    assert project_status(recorded.dir)["problems"] == [
        "train: checkpoint checkpoints/model.ckpt-200 has no recorded files"]


def test_each_distinct_file_is_hashed_once(recorded, monkeypatch):
    import mpltool.manifest.files as status_module

    calls = collections.Counter()
    real = status_module.sha256_file

    def counting(path):
        calls[Path(str(path)).relative_to(recorded.dir).as_posix()] += 1
        return real(path)

    monkeypatch.setattr(status_module, "sha256_file", counting)
    assert project_status(recorded.dir)["ok"] is True
    every_file = sorted(p.relative_to(recorded.dir).as_posix() for p in recorded.dir.rglob("*")
                        if p.is_file() and p.name != "mpltool.yaml")
    assert len(every_file) == 9
    assert sorted(calls) == every_file and set(calls.values()) == {1}


def _dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_running_stage_whose_process_is_gone_is_a_problem(recorded):
    pid = _dead_pid()
    _edit_stage(recorded, "train", status="running", ended=None, pid=pid, host=socket.gethostname())
    status = project_status(recorded.dir)
    train = _by_stage(status)["train"]
    assert train["status_text"] == "running (process {} gone)".format(pid)
    assert train["status"] == "running"
    assert status["problems"] == ["train: running (process {} gone)".format(pid)]
    assert status["ok"] is False
    plain = invoke(recorded.dir, "status")
    assert plain.exit_code == 4
    assert plain.stderr.startswith("error: 1 problem(s): train: running (process {} gone)".format(pid))
    assert plain.stderr.count("\n") == 1
    assert re.search(r"^  train +running \(process {} gone\) ".format(pid), plain.stdout, re.M), plain.stdout


def test_a_running_stage_whose_process_lives_or_is_elsewhere_is_not_a_problem(recorded):
    _edit_stage(recorded, "train", status="running", pid=os.getpid(), host=socket.gethostname())
    status = project_status(recorded.dir)
    assert _by_stage(status)["train"]["status"] == "running" and status["ok"] is True
    _edit_stage(recorded, "train", status="running", pid=_dead_pid(), host=socket.gethostname() + "-other")
    status = project_status(recorded.dir)
    assert _by_stage(status)["train"]["status"] == "running" and status["ok"] is True


def test_failed_and_interrupted_stages_are_problems(recorded):
    with pytest.raises(RuntimeError):
        with recorded.stage_run("eval", {}):
            raise RuntimeError("boom")
    _edit_stage(recorded, "train", status="interrupted", error="interrupted at step 200")
    status = project_status(recorded.dir)
    assert status["problems"] == ["train: interrupted: interrupted at step 200", "eval: failed: RuntimeError: boom"]
    assert _by_stage(status)["eval"]["status"] == "failed"
    assert status["ok"] is False


def test_an_empty_project_is_not_ok(tmp_path):
    status = project_status(tmp_path)
    assert status["ok"] is False and status["stages"] == []
    assert status["problems"] == [
        "no stages yet: start with `mpltool data prepare --cifar PATH` (or `mpltool data demo`)"]


def test_a_file_still_under_its_staging_name_of_an_interrupted_commit_is_not_missing(recorded):
    staged = recorded.dir / ".mpltool-staging" / "pb-x.pb"
    staged.parent.mkdir()
    (recorded.dir / PB).replace(staged)
    data = yaml.safe_load(recorded.manifest_path.read_text())
    data["pending"] = [{"from": ".mpltool-staging/pb-x.pb", "to": PB,
                        "sha256": data["stages"]["freeze"]["outputs"]["pb"]["sha256"]}]
    recorded.manifest_path.write_text(yaml.safe_dump(data))
    status = project_status(recorded.dir)
    assert status["ok"] is True and status["problems"] == []
    assert ("1 recorded file(s) still under their staging names (an interrupted commit): the next mpltool "
            "command on this project renames them into place") in status["notes"]
    staged.write_bytes(b"p" * 499)
    assert project_status(recorded.dir)["problems"] == [
        "freeze: pb {} changed (size 499 bytes, recorded 500)".format(PB),
        "convert: input pb {} changed (size 499 bytes, recorded 500)".format(PB)]
    staged.unlink()
    assert project_status(recorded.dir)["problems"] == ["freeze: pb {} missing".format(PB),
                                                        "convert: input pb {} missing".format(PB)]
