"""`mpltool train --nproc N`: one manifest, rank 0 the only writer, resume, a killed rank ending the job with
its name recorded, and the bad input refused before anything starts."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import command, invoke, manifest, mpltool, sets
from mpltool import parallel

HOROVOD_MISSING = parallel.horovod_available()
needs_horovod = pytest.mark.skipif(HOROVOD_MISSING is not None, reason="Horovod is not installed: {} (install "
                                   "with `make venv EXTRAS=cpu,test,dist`)".format(HOROVOD_MISSING))

RUN = ["model=wrn-10-1", "batch_size=4", "eval_batch_size=16", "shuffle_buffer=64", "teacher_lr_warmup_steps=2",
       "num_train_steps=4", "save_every=2", "eval_every=2", "log_every=2"]


def _train(project, *args):
    return mpltool(project, "--json", "train", "--device", "cpu", *args)


@pytest.mark.slow
@needs_horovod
def test_two_processes_write_one_manifest_from_rank_0_and_resume(prepared_copy):
    project = prepared_copy
    done = _train(project, "--recipe", "supervised-demo", "--nproc", "2", *sets(base=RUN))
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout.decode())
    assert (result["replicas"], result["backend"], result["global_batch_size"]) == (2, "horovod", 8)
    record = manifest(project)["stages"]["train"]
    assert record["status"] == "done" and record["steps_done"] == 4
    assert (record["replicas"], record["global_batch_size"], record["params"]["replicas"]) == (2, 8, 2)
    assert record["parallel"] == {"backend": "horovod", "replicas": 2}
    # Rank 0 wrote the checkpoints, the CSV and the manifest; rank 1 only its log.
    assert sorted(p.name for p in (project / "checkpoints").glob("model.ckpt-*.index")) == [
        "model.ckpt-2.index", "model.ckpt-4.index"]
    assert "step 4/4" in (project / "logs" / "rank-1.log").read_text()
    assert not (project / "logs" / "rank-0.log").exists()
    with open(str(project / "logs" / "metrics.csv")) as handle:
        steps = [line.split(",")[0] for line in handle.read().splitlines()[1:]]
    assert steps == ["2", "2", "4", "4"]  # one writer: each step's metrics row and eval row once

    resumed = _train(project, "--nproc", "2", "--extend-steps", "2")
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert manifest(project)["stages"]["train"]["steps_done"] == 6
    # One process cannot continue a two-replica run: its global batch would halve.
    alone = _train(project, "--extend-steps", "2")
    assert alone.returncode == 2
    assert "replicas: 2 -> 1" in alone.stderr.decode()


def _rank_pid(project: Path, rank: int):
    """The pid of the process horovodrun started as `rank` for this project (its environment says so)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if "HOROVOD_RANK={}".format(rank).encode() in environ and str(project).encode() in cmdline:
            return int(entry.name)
    return None


@pytest.mark.slow
@needs_horovod
def test_killing_rank_1_ends_the_job_names_it_in_the_manifest_and_a_rerun_resumes(prepared_copy):
    project = prepared_copy
    long_run = sets("num_train_steps=100000", base=[p for p in RUN if not p.startswith("num_train_steps")])
    launcher = subprocess.Popen(command(project, "train", "--recipe", "supervised-demo", "--device", "cpu",
                                        "--nproc", "2", *long_run), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # until rank 0 has saved a checkpoint and rank 1 is training
            latest = ((manifest(project)["stages"].get("train") or {}).get("checkpoints") or {}).get("latest")
            if latest and (project / "logs" / "rank-1.log").is_file() and _rank_pid(project, 1):
                break
            time.sleep(0.5)
        pid = _rank_pid(project, 1)
        assert pid is not None, "rank 1 never started"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert time.time() - killed_at < 60  # horovodrun stops rank 0 (SIGTERM, SIGKILL after 5 s)
    assert launcher.returncode == 6, err.decode()
    error_lines = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "rank 1 of 2 failed" in error_lines[0], err.decode()
    record = manifest(project)["stages"]["train"]
    assert record["status"] == "failed" and record["error"].startswith("rank 1 of 2 failed")
    done = record["steps_done"]
    assert done >= 2

    rerun = _train(project, "--nproc", "2", *sets("num_train_steps={}".format(done + 2),
                                                   base=[p for p in RUN if not p.startswith("num_train_steps")]))
    assert rerun.returncode == 0, rerun.stderr.decode()
    record = manifest(project)["stages"]["train"]
    assert record["status"] == "done" and record["steps_done"] == done + 2


@pytest.mark.parametrize("args, code, message", [
    (["--nproc", "0"], 2, "error: --nproc must be at least 1, got 0"),
    (["--nproc", str((os.cpu_count() or 1) + 1)], 2,
     "error: --nproc {} is more processes than this host's {} cores".format((os.cpu_count() or 1) + 1,
                                                                           os.cpu_count() or 1)),
    (["--nproc", "2", "--devices", "0-1"], 2, "error: --nproc and --devices both choose the processes"),
    (["--rank-table", "table.json"], 2, "error: --rank-table needs --devices (the devices of this server)"),
    (["--devices", "0-2"], 2, "error: --devices '0-2': 3 devices; one server trains on 1, 2, 4 or 8"),
])
def test_bad_parallel_options_are_one_line_errors_and_start_nothing(prepared_copy, args, code, message):
    before = manifest(prepared_copy)
    result = invoke("--project", prepared_copy, "train", "--recipe", "supervised-demo", *args)
    assert result.exit_code == code
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message)
    assert manifest(prepared_copy) == before and not (prepared_copy / "logs").exists()


def test_more_processes_than_cores_need_oversubscribe(prepared_copy):
    result = invoke("--project", prepared_copy, "train", "--nproc", str((os.cpu_count() or 1) + 1))
    assert "add --oversubscribe" in result.stderr


def test_horovod_missing_is_exit_5_with_the_install_command(prepared_copy, monkeypatch):
    monkeypatch.setattr(parallel, "horovod_available", lambda: "Horovod is not installed in this environment "
                                                               "(ImportError: No module named 'horovod')")
    result = invoke("--project", prepared_copy, "train", "--nproc", "2")
    assert result.exit_code == 5
    assert result.stderr.startswith("error: Horovod is not installed in this environment")
    assert "pip install --no-build-isolation horovod==0.28.1" in result.stderr


def test_replicas_cannot_be_set_by_hand(prepared_copy):
    result = invoke("--project", prepared_copy, "train", "--recipe", "supervised-demo", "--set", "replicas=2")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: replicas is set by `mpltool train --nproc N` (or --devices), not by --set")


@pytest.mark.slow
@needs_horovod
def test_a_job_started_by_your_own_horovodrun_trains_rank_0s_configuration(prepared_copy):
    """No mpltool launcher: horovodrun starts `mpltool train` twice; rank 0 hands its resolved recipe over."""
    import sys

    project = prepared_copy
    done = subprocess.run([sys.executable, "-m", "horovod.runner.launch", "-np", "2", "--gloo", "-H", "localhost:2"]
                          + command(project, "train", "--recipe", "supervised-demo", "--device", "cpu",
                                    *sets(base=RUN)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert done.returncode == 0, done.stdout.decode()[-3000:]
    record = manifest(project)["stages"]["train"]
    assert (record["status"], record["steps_done"], record["replicas"]) == ("done", 4, 2)
    assert "rank 1 of 2 finished at step 4" in done.stdout.decode()
    assert "step 4/4" in (project / "logs" / "rank-1.log").read_text()


ALGORITHM_RUNS = {
    "mpl-demo": ["model=wrn-10-1", "batch_size=4", "uda_data=2", "teacher_lr_warmup_steps=2",
                 "student_lr_wait_steps=1", "student_lr_warmup_steps=2", "uda_steps=4"],
    "uda-demo": ["model=wrn-10-1", "batch_size=4", "uda_data=2", "teacher_lr_warmup_steps=2", "uda_steps=4"],
    "mixmatch-demo": ["model=mixmatch-resnet-8-2-1", "batch_size=4", "mixmatch_rampup_kimg=1"],
}


@pytest.mark.slow
@needs_horovod
@pytest.mark.parametrize("recipe", sorted(ALGORITHM_RUNS))
def test_every_algorithm_trains_on_two_processes(prepared_copy, recipe):
    """No algorithm-specific code in the launcher: MPL's two optimizers and its h-term, UDA and MixMatch
    run data-parallel through the same seam (their optimizers wrapped, h averaged over the replicas)."""
    steps = ["eval_batch_size=16", "shuffle_buffer=64", "num_train_steps=2", "save_every=2", "eval_every=2",
             "log_every=1"]
    done = _train(prepared_copy, "--recipe", recipe, "--nproc", "2", *sets(base=ALGORITHM_RUNS[recipe] + steps))
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    record = manifest(prepared_copy)["stages"]["train"]
    assert (record["status"], record["steps_done"], record["replicas"]) == ("done", 2, 2)
    assert record["global_batch_size"] == 8
