"""Start a data-parallel training job: N processes through Horovod (`--nproc`), or one process per Ascend
device under a rank table (`--devices`). Each process runs the ordinary `mpltool train`; mpltool/parallel.py
tells it which replica it is, and only rank 0 writes (docs/many-devices.md).

Before anything starts, the launcher resolves the run exactly as rank 0 will (bad options, a missing data
stage, a resume that does not fit: the usual exit codes, nothing spawned); rank 0 then hands its resolved
recipe to the other ranks (`Replicas.share_params`), however they were started. When a rank
dies, the job ends: Horovod's launcher (or ours, for Ascend) stops the others, and the train record
says which rank died, so `mpltool train` resumes from the last checkpoint.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from mpltool import parallel, ranktable, tuning
from mpltool.errors import ToolFailedError, ToolMissingError, UsageError
from mpltool.manifest import Project
from mpltool.manifest.files import atomic_write_bytes
from mpltool.manifest.provenance import utc_now

STOP_GRACE_SECONDS = 10  # SIGTERM, then SIGKILL: a rank blocked in an all-reduce never sees the SIGTERM


def check_nproc(nproc: int, oversubscribe: bool) -> None:
    cores = tuning.available_cores()
    if nproc < 1:
        raise UsageError("--nproc must be at least 1, got {}".format(nproc))
    if nproc > cores and not oversubscribe:
        raise UsageError("--nproc {} is more processes than this host's {} cores".format(nproc, cores),
                         hint="use --nproc {} or fewer, or add --oversubscribe (each process then runs slower)".format(
                             cores))


def horovod_command(nproc: int, worker: Sequence[str]) -> List[str]:
    """horovodrun with gloo on this host: N slots, each running `python -m mpltool <worker args>`."""
    return [sys.executable, "-m", "horovod.runner.launch", "-np", str(nproc), "--gloo", "-H",
            "localhost:{}".format(nproc), sys.executable, "-m", "mpltool"] + list(worker)


_EXIT_LINE = re.compile(r"Process (\d+) exit with status code (-?\d+)")


def first_failure(output_lines: Sequence[str]):
    """(rank, exit code) of the first process horovodrun reported as failed, or None."""
    for line in output_lines:
        match = _EXIT_LINE.search(line)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return "killed by {}".format(signal.Signals(-code).name)
        except ValueError:
            return "killed by signal {}".format(-code)
    if code > 128:
        try:
            return "exit code {} ({})".format(code, signal.Signals(code - 128).name)
        except ValueError:
            pass
    return "exit code {}".format(code)


def run_horovod(project: Project, nproc: int, worker: Sequence[str], echo: Callable[[str], None]) -> None:
    """horovodrun the workers, echoing their output; a failed rank is a ToolFailedError naming it."""
    started = utc_now()
    lines = []  # type: List[str]
    # MKL's OpenMP pool, like TF's (npu.session_config), gets this host's cores shared among the processes.
    threads = str(tuning.threads_per_process(nproc))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", threads))
    process = subprocess.Popen(horovod_command(nproc, worker), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env)
    try:
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            echo(_strip_rank_prefix(line))
        code = process.wait()
    except KeyboardInterrupt:
        _stop([process])
        raise
    if code != 0:
        failed = first_failure(lines)
        rank, rank_code = failed if failed else (None, code)
        prefix = "[{}]<stderr>:".format(rank)
        fail_job(project, rank, rank_code, nproc,
                 _last_error(line[len(prefix):] for line in lines if line.startswith(prefix)), started)


def _strip_rank_prefix(line: str) -> str:
    """horovodrun prefixes each worker line with `[rank]<stdout>:`; keep the text."""
    return re.sub(r"^\[\d+\]<std(?:out|err)>:", "", line)


def _last_error(lines) -> Optional[str]:
    """The last `error:` line (mpltool's one-line error) among a rank's output lines, if any."""
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1] if errors else None


def fail_job(project: Project, rank: Optional[int], code: int, size: int, rank_error: Optional[str],
             started: Optional[str] = None) -> None:
    """Record the failure on the train record rank 0 left (see Project.fail_abandoned_stage), then raise."""
    what = "rank {} of {}".format(rank, size) if rank is not None else "a rank"
    message = "{} failed ({}){}; the job was stopped".format(
        what, describe_exit(code), ": " + rank_error[len("error:"):].strip() if rank_error else "")
    project.fail_abandoned_stage("train", message, started_after=started)
    raise ToolFailedError(message, hint="see logs/rank-*.log; re-run the same `mpltool train` to resume from the "
                                        "last checkpoint")


def _stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.time() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- Ascend ------------------------------------------------------------------------------------------------


def ascend_ranks(project: Project, devices: Sequence[int], rank_table: Optional[str],
                 hccn_conf: str = ranktable.HCCN_CONF):
    """(rank table path, ranks of this server): the given table checked, or one written for `devices`."""
    if rank_table:
        ranks = ranktable.load_rank_table(rank_table)
        path = Path(rank_table).absolute()
        server = ranktable.this_server(ranks, path)
        host_ranks = [r for r in ranks if r["server_id"] == server]
        listed = sorted(r["device_id"] for r in host_ranks)
        if sorted(devices) != listed:
            raise UsageError("--devices {} but rank table {} lists devices {} for this server ({})".format(
                ",".join(str(d) for d in devices), path, ",".join(str(d) for d in listed), server),
                hint="pass --devices {}".format(",".join(str(d) for d in listed)))
        return path, ranks, host_ranks
    table = ranktable.build_rank_table(devices, ranktable.read_hccn_conf(hccn_conf), socket.gethostname())
    path = project.path("logs/rank_table.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(table, indent=2) + "\n").encode("utf-8"))
    ranks = ranktable.load_rank_table(path)
    return path, ranks, ranks


def run_ascend(project: Project, rank_table_path: Path, ranks, host_ranks, worker: Sequence[str],
               command: Optional[Sequence[str]] = None, poll_seconds: float = 0.5) -> None:
    """One process per device of this server with its rank's environment; the first that fails stops all."""
    job_id = uuid.uuid4().hex[:8]
    started = utc_now()
    base = list(command) if command is not None else [sys.executable, "-m", "mpltool"]
    processes = []
    logs = []
    try:
        for rank in host_ranks:
            env = dict(os.environ, **ranktable.rank_environment(rank, len(ranks), str(rank_table_path), job_id))
            log_path = project.path("logs/rank-{}.out".format(rank["rank"]))
            log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(str(log_path), "wb")
            logs.append(handle)
            processes.append((rank["rank"], subprocess.Popen(base + list(worker), env=env, stdout=handle,
                                                             stderr=subprocess.STDOUT)))
        while True:
            codes = [(rank, p.poll()) for rank, p in processes]
            failed = [(rank, code) for rank, code in codes if code not in (None, 0)]
            if failed:
                _stop([p for _, p in processes])
                rank, code = failed[0]
                output = project.path("logs/rank-{}.out".format(rank)).read_text(encoding="utf-8", errors="replace")
                fail_job(project, rank, code, len(ranks), _last_error(output.splitlines()), started)
            if all(code == 0 for _, code in codes):
                return
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        _stop([p for _, p in processes])
        raise
    finally:
        for handle in logs:
            handle.close()


# -- the entry point ---------------------------------------------------------------------------------------


def launch_training(project_dir, recipe: Optional[str] = None, overrides: Sequence[str] = (), device: str = "auto",
                    extend_steps: Optional[int] = None, force: bool = False, nproc: Optional[int] = None,
                    oversubscribe: bool = False, devices: Optional[str] = None, rank_table: Optional[str] = None,
                    echo: Callable[[str], None] = print, hccn_conf: str = ranktable.HCCN_CONF,
                    command: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """`mpltool train --nproc N` or `--devices IDS`: check everything, then run the job (see the module
    docstring). Returns what rank 0 recorded."""
    from mpltool.train.stage import plan_run

    if nproc is not None and devices is not None:
        raise UsageError("--nproc and --devices both choose the processes",
                         hint="--nproc N on CPU/GPU hosts (Horovod), --devices IDS on an Ascend server")
    project = Project(project_dir)
    project.load()
    if nproc is not None:
        check_nproc(nproc, oversubscribe)
        missing = parallel.horovod_available()
        if missing:
            raise ToolMissingError(missing, hint="install it: " + parallel.HOROVOD_INSTALL)
        size, backend = nproc, "horovod"
    else:
        table_path, ranks, host_ranks = ascend_ranks(project, ranktable.parse_devices(devices), rank_table, hccn_conf)
        size, backend, device = len(ranks), "hccl", "npu"
    plan_run(project, recipe, overrides, extend_steps, force, log=lambda line: None, replicas=size)
    worker = ["--project", str(project.dir), "train", "--device", device]
    worker += ["--recipe", recipe] if recipe else []
    worker += [token for pair in overrides for token in ("--set", pair)]
    worker += ["--extend-steps", str(extend_steps)] if extend_steps is not None else []
    worker += ["--force"] if force else []
    if backend == "horovod":
        run_horovod(project, nproc, worker, echo)
    else:
        run_ascend(project, table_path, ranks, host_ranks, worker, command=command)
    record = project.stage("train") or {}
    return {"status": record.get("status"), "backend": backend, "replicas": size,
            "global_batch_size": record.get("global_batch_size"), "steps_done": record.get("steps_done"),
            "num_train_steps": record.get("num_train_steps"), "checkpoints": record.get("checkpoints"),
            "metrics": record.get("metrics") or {}, "project": str(project.dir)}
