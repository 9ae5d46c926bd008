"""`mpltool train` as a user runs it: records, checkpoints, logs, resume, kill -9, Ctrl-C, bad input."""

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import manifest, mpltool, sets

pytestmark = pytest.mark.slow  # trains or runs mpltool in subprocesses: `make test-fast` skips it



def test_train_records_checkpoints_logs_and_resumes(prepared_copy, tmp_path):
    project = prepared_copy
    first = mpltool(project, "--json", "train", "--device", "cpu",
                    *sets("num_train_steps=6", "save_every=3", "eval_every=3", "log_every=2"))
    assert first.returncode == 0, first.stderr.decode()[-3000:]
    result = json.loads(first.stdout.decode())
    assert result["steps_done"] == 6
    record = manifest(project)["stages"]["train"]
    assert record["status"] == "done" and record["steps_done"] == 6
    assert record["params"]["model"] == "wrn-10-1" and record["params"]["num_train_steps"] == 6
    latest = record["checkpoints"]["latest"]
    assert latest["prefix"] == "checkpoints/model.ckpt-6" and latest["step"] == 6
    assert sorted(Path(f["path"]).name for f in latest["files"]) == ["model.ckpt-6.data-00000-of-00001",
                                                                      "model.ckpt-6.index"]
    for target in ("ema", "student", "teacher"):
        best = record["checkpoints"]["best"][target]
        assert best["step"] in (3, 6) and 0.0 <= best["top1"] <= 1.0
        assert (project / (best["prefix"] + ".index")).is_file()
        # 37 test images, each counted exactly once: top-1 is k/37.
        assert abs(record["metrics"]["{}_top1".format(target)] * 37 - round(record["metrics"][
            "{}_top1".format(target)] * 37)) < 1e-6
    # inputs are the data stage's outputs, hash for hash
    assert record["inputs"]["test_batch"] == manifest(project)["stages"]["data"]["outputs"]["test_batch"]
    with open(str(project / "logs/metrics.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == (
        "step", "time", "steps_per_second", "teacher_loss", "labelled_ce", "uda_loss", "uda_mask_rate", "uda_weight",
        "student_loss", "student_ce_old", "student_ce_new", "h", "h_baseline", "teacher_lr", "student_lr",
        "teacher_top1", "teacher_top5", "teacher_loss_eval", "student_top1", "student_top5", "student_loss_eval",
        "ema_top1", "ema_top5", "ema_loss_eval", "teacher_valid_top1", "student_valid_top1", "ema_valid_top1")
    # MPL's columns as first written, extended only at the end (validation accuracy, empty without a split
    # that has validation records), so positional parsers of the old columns keep working.
    assert [int(r["step"]) for r in rows if r["teacher_loss"]] == [2, 4, 6]
    assert [int(r["step"]) for r in rows if r["ema_top1"]] == [3, 6]
    assert list((project / "logs/tensorboard").glob("events.out.tfevents.*"))
    text = first.stdout.decode() + first.stderr.decode()
    assert "Eval end in global step:6, teacher_top1=" in text

    again = mpltool(project, "train")
    assert again.returncode == 0 and b"already finished at step 6" in again.stdout + again.stderr

    extended = mpltool(project, "train", "--extend-steps", "3")
    assert extended.returncode == 0, extended.stderr.decode()[-2000:]
    assert b"resuming from checkpoints/model.ckpt-6" in extended.stdout
    record = manifest(project)["stages"]["train"]
    assert record["steps_done"] == 9 and record["num_train_steps"] == 9
    assert record["checkpoints"]["latest"]["prefix"] == "checkpoints/model.ckpt-9"

    changed = mpltool(project, "train", "--set", "model=wrn-16-1")
    assert changed.returncode == 2 and b"model: wrn-10-1 -> wrn-16-1" in changed.stderr
    assert manifest(project)["stages"]["train"]["steps_done"] == 9


def _wait_for(predicate, timeout=300, interval=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in {} s".format(timeout))


def _steps_done(project):
    try:
        return manifest(project)["stages"]["train"].get("steps_done", 0)
    except Exception:
        return 0


def test_kill_9_then_rerun_loses_at_most_save_every(prepared, tmp_path):
    project = tmp_path / "kill"
    shutil.copytree(str(prepared), str(project))
    args = [sys.executable, "-m", "mpltool", "--project", str(project), "train", "--device", "cpu"] + sets(
        "num_train_steps=400", "save_every=4", "eval_every=1000", "log_every=1000")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _steps_done(project) >= 8)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    recorded = _steps_done(project)
    assert manifest(project)["stages"]["train"]["status"] == "running"  # died without a word
    from mpltool.tfv1 import tf
    latest = tf.train.latest_checkpoint(str(project / "checkpoints"))
    saved = int(latest.rsplit("-", 1)[1])
    assert saved >= recorded >= 8 and saved % 4 == 0
    resumed = mpltool(project, "train", "--set", "num_train_steps={}".format(saved + 2))
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert "resuming from checkpoints/model.ckpt-{} (step {} of {})".format(saved, saved, saved + 2).encode() \
        in resumed.stdout
    record = manifest(project)["stages"]["train"]
    assert record["status"] == "done" and record["steps_done"] == saved + 2


def test_ctrl_c_saves_and_exits_130(prepared_copy, tmp_path):
    project = prepared_copy
    args = [sys.executable, "-m", "mpltool", "--project", str(project), "train", "--device", "cpu"] + sets(
        "num_train_steps=400", "save_every=1000", "eval_every=1000", "log_every=1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # wait until it trains (a step line), then interrupt
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, "train ended early: " + proc.stderr.read().decode()[-2000:]
            lines.append(line)
            if line.startswith(b"step 3/"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert err.decode().strip().splitlines()[-1].startswith("error: interrupted at step")
    record = manifest(project)["stages"]["train"]
    assert record["status"] == "interrupted" and record["error"].startswith("interrupted at step")
    step = record["steps_done"]
    assert step >= 3 and record["checkpoints"]["latest"]["prefix"] == "checkpoints/model.ckpt-{}".format(step)


def test_no_data_stage_says_what_to_run(tmp_path):
    result = mpltool(tmp_path / "empty", "train", "--set", "model=wrn-10-1")
    assert result.returncode == 4
    assert b"mpltool data prepare --cifar PATH" in result.stderr and b"Traceback" not in result.stderr


@pytest.mark.parametrize("pair, code, text", [
    ("num_train_steps=-5", 2, b"must be >= 1"),
    ("uda_threshold=1.5", 2, b"between 0 and 1"),
    ("model=resnet-50", 2, b"unknown model"),
    ("num_train_step=5", 2, b"did you mean num_train_steps"),
])
def test_bad_recipe_values(prepared, pair, code, text):
    result = mpltool(prepared, "train", "--set", pair)
    assert result.returncode == code and text in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_value_in_recipe_file_is_exit_3(prepared, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: wrn-10-1\nnum_train_steps: lots\n")
    result = mpltool(prepared, "train", "--recipe", recipe)
    assert result.returncode == 3 and b"num_train_steps='lots' is not a valid int" in result.stderr


def test_device_npu_without_npu_bridge_is_exit_5(prepared):
    result = mpltool(prepared, "train", "--device", "npu", *sets("num_train_steps=1"))
    assert result.returncode == 5 and b"npu_bridge" in result.stderr
