"""Fault injection: kill -9, SIGTERM/SIGINT, stale locks and full disks never leave the manifest lying.

Every scenario checks the same contract: the exit code, ONE `error:` line on stderr and no traceback,
and a project whose manifest either is byte-identical to before or is exactly consistent (no pending
renames, every file it records has the recorded sha256, nothing staged left once the lock was taken).
"""

import errno
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from cifar_fixtures import make_cifar_dir
from mpltool.data.cifar import TEST_FILE, TRAIN_FILES
from mpltool.errors import PrerequisiteError
from mpltool.manifest import LOCK_NAME, MANIFEST_NAME, Project, STAGING_DIR
from mpltool.manifest.files import recorded_files, sha256_file
from mpltool.signals import critical_section, terminate_as_interrupt
from helpers import TINY, command
from helpers import mpltool as run_mpltool

pytestmark = pytest.mark.slow  # trains or runs mpltool in subprocesses: `make test-fast` skips it

TESTS_DIR = Path(__file__).resolve().parent


# -- helpers -----------------------------------------------------------------------------------------
def mpltool(project, *args, timeout=120):
    return run_mpltool(project, *args, timeout=timeout)


def train_args(*pairs):
    out = ["train", "--device", "cpu"]
    for pair in list(TINY) + list(pairs):
        out += ["--set", pair]
    return out


class Background:
    """A command in the background with stdout/stderr in files (no pipe can fill up and stall it)."""

    def __init__(self, project, args, log_dir, name):
        log_dir = Path(str(log_dir))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out_path = log_dir / (name + ".out")
        self.err_path = log_dir / (name + ".err")
        self._out = open(str(self.out_path), "wb")
        self._err = open(str(self.err_path), "wb")
        self.proc = subprocess.Popen(command(project, *args), stdout=self._out, stderr=self._err)

    def signal(self, signum):
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for handle in (self._out, self._err):
            if not handle.closed:
                handle.close()

    @property
    def stdout(self):
        return self.out_path.read_bytes().decode("utf-8", "replace")

    @property
    def stderr(self):
        return self.err_path.read_bytes().decode("utf-8", "replace")


def wait_for(predicate, timeout, what, interval=0.05, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError("the command ended (exit {}) before {}".format(proc.returncode, what))
        time.sleep(interval)
    raise AssertionError("timed out after {} s waiting for {}".format(timeout, what))


def read_manifest(project):
    """The manifest as YAML, or None while it is absent or unreadable (a poll helper)."""
    try:
        return yaml.safe_load((Path(str(project)) / MANIFEST_NAME).read_text())
    except (OSError, yaml.YAMLError):
        return None


def stage_of(project, name):
    data = read_manifest(project)
    if not isinstance(data, dict):
        return None
    return (data.get("stages") or {}).get(name)


def one_error_line(stderr, stdout="", contains=()):
    """stderr is exactly one `error:` line (returned), and neither stream holds a traceback."""
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), "stderr is not one error line:\n" + stderr[-3000:]
    for text in contains:
        assert text in lines[0], "{!r} not in {!r}".format(text, lines[0])
    return lines[0]


def snapshot(project):
    """Manifest bytes plus the bytes of every file it records, keyed by path."""
    project = Project(project)
    files = {}
    data = project.load()
    for record in (data.get("stages") or {}).values():
        for entry in recorded_files(record):
            path = project.path(entry["path"])
            files[entry["path"]] = path.read_bytes() if path.is_file() else None
    return {"manifest": project.manifest_path.read_bytes(), "files": files}


def consistency_problems(project, stages=None):
    """What is wrong with the project's manifest vs its files ([] when consistent)."""
    project = Project(project)
    problems = []
    try:
        data = project.load()
    except Exception as exc:  # the manifest must always parse
        return ["manifest does not load: {}".format(exc)]
    if data.get("pending"):
        problems.append("manifest still lists pending renames: {}".format(data["pending"]))
    for name, record in (data.get("stages") or {}).items():
        if stages is not None and name not in stages:
            continue
        for entry in recorded_files(record):
            path = project.path(entry["path"])
            if not path.is_file():
                problems.append("stage {}: recorded file {} is missing".format(name, entry["path"]))
            elif sha256_file(path) != entry["sha256"]:
                problems.append("stage {}: recorded file {} has another sha256 than recorded".format(
                    name, entry["path"]))
    return problems


def assert_consistent(project, stages=None):
    problems = consistency_problems(project, stages)
    assert not problems, "\n".join(problems)


def leftovers(project):
    """Staging folders a crash may leave: the commit's staging folder and mpltool 0.1's `.import-*`."""
    project = Path(str(project))
    found = [p.name for p in project.glob(".import-*")]
    if (project / STAGING_DIR).exists():
        found.append(STAGING_DIR)
    return found


def take_and_release_lock(project):
    """What the next command does first: take the lock (rolling a commit forward, sweeping staging)."""
    with Project(project).lock("check"):
        assert not leftovers(project), leftovers(project)
    assert not (Path(str(project)) / LOCK_NAME).exists()


def sources_of(project):
    """{sha256 of a data output: key} for the CIFAR files of the source the data record names."""
    record = stage_of(project, "data")
    source = Path(record["params"]["source"])
    return {sha256_file(source / name): name for name in TRAIN_FILES + (TEST_FILE,)}


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_sources(tmp_path_factory):
    """Two CIFAR sets that differ in every file, big enough that `data prepare` takes ~0.5 s."""
    root = tmp_path_factory.mktemp("sources")
    first = make_cifar_dir(root / "a", train_records=(2000,) * 5, test_records=1000, seed=11)
    second = make_cifar_dir(root / "b", train_records=(1500,) * 5, test_records=800, seed=12)
    return [(Path(first), 400), (Path(second), 250)]


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    return Path(make_cifar_dir(tmp_path_factory.mktemp("tiny") / "src", train_records=(20,) * 5,
                               test_records=37, seed=4))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_source):
    project = tmp_path_factory.mktemp("prepared") / "template"
    result = mpltool(project, "data", "prepare", "--cifar", tiny_source, "--labelled", "20")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return project


@pytest.fixture(scope="module")
def frozen_project(tmp_path_factory):
    """make_trained_project + one verified freeze (in-process): a done freeze record and its .pb."""
    from checkpoint_fixtures import make_trained_project
    from mpltool.freeze.stage import freeze

    directory = tmp_path_factory.mktemp("frozen") / "template"
    make_trained_project(directory)
    freeze(directory, parity_images=20)
    record = Project(directory).stage("freeze")
    assert record["status"] == "done"
    return directory


def mount_tmpfs(directory, size, request):
    """A tmpfs of `size` at `directory`, unmounted at the end of the test (skip when mounting is not allowed)."""
    directory = Path(str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size={}".format(size), "tmpfs", str(directory)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip("cannot mount a tmpfs: {}".format(exc))
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs: {}".format(result.stderr.decode().strip() or result.returncode))

    def unmount():
        done = subprocess.run(["umount", str(directory)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], timeout=30)

    request.addfinalizer(unmount)
    return directory


def fill_disk(path):
    """Write `path` until the file system is full (ENOSPC); returns the bytes written."""
    written = 0
    with open(str(path), "wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += handle.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


class Soft:
    """Collect failed checks so one run of a long scenario reports every broken guarantee."""

    def __init__(self):
        self.failures = []

    def check(self, condition, message):
        if not condition:
            self.failures.append(message)
        return condition

    def verify(self):
        assert not self.failures, "\n".join("- " + f for f in self.failures)


# -- 1. kill -9 during data prepare ----------------------------------------------------------------
KILL_DELAYS = (0.05, 0.15, 0.3, 0.45, 0.6, 0.8, 1.2, 2.0)


def test_kill_9_during_data_prepare_leaves_old_or_new_import(big_sources, tmp_path):
    project = tmp_path / "p"
    killed = 0
    for iteration, delay in enumerate(KILL_DELAYS):
        source, labelled = big_sources[iteration % 2]
        run = Background(project, ["data", "prepare", "--cifar", source, "--labelled", labelled], tmp_path / "logs",
                         "prepare{}".format(iteration))
        try:
            time.sleep(delay)
            run.signal(signal.SIGKILL)
            code = run.wait(timeout=60)
        finally:
            run.close()
        if code == -signal.SIGKILL:
            killed += 1
        else:
            assert code == 0, run.stderr[-2000:]
        where = "after kill at {} s (iteration {}, exit {})".format(delay, iteration, code)

        take_and_release_lock(project)  # rolls an interrupted commit forward, sweeps staging
        assert not leftovers(project), where
        data = Project(project).load()  # parses
        assert not data.get("pending"), where
        record = data["stages"].get("data")
        if record is None:
            continue  # killed before the first import committed: nothing recorded, nothing to check
        assert record["status"] == "done", where
        assert_consistent(project)
        # All files come from the source the record names: never half of one import, half of another.
        from_source = sources_of(project)
        for name in TRAIN_FILES + (TEST_FILE,):
            key = name[:-len(".bin")]
            assert from_source.get(record["outputs"][key]["sha256"]) == name, "{}: {} is not {}'s".format(
                where, key, record["params"]["source"])
        indices = Project(project).path(record["outputs"]["labelled_indices"]["path"])
        lines = indices.read_text().splitlines()
        assert len(lines) == record["split"]["num_labelled"] == record["params"]["num_labelled"], where
    assert killed >= 3, "only {} of {} runs were killed mid-way: prepare is too fast for this test".format(
        killed, len(KILL_DELAYS))
    # and the project still works
    final = mpltool(project, "data", "prepare", "--cifar", big_sources[0][0], "--labelled", big_sources[0][1])
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    assert_consistent(project)


# -- 2. SIGTERM / SIGINT during freeze -------------------------------------------------------------
@pytest.mark.parametrize("signum, when", [
    (signal.SIGTERM, "at_lock"),    # as soon as the lock file appears (the stage is setting up its record)
    (signal.SIGINT, "at_lock"),
    (signal.SIGTERM, "in_body"),    # once the stage staged its output (freezing / parity check)
], ids=["SIGTERM-at-lock", "SIGINT-at-lock", "SIGTERM-in-body"])
def test_signal_during_freeze_keeps_the_verified_pb(frozen_project, tmp_path, signum, when):
    project = tmp_path / "p"
    shutil.copytree(str(frozen_project), str(project))
    before = Project(project).stage("freeze")
    pb = Project(project).path(before["outputs"]["pb"]["path"])
    pb_bytes = pb.read_bytes()
    assert sha256_file(pb) == before["outputs"]["pb"]["sha256"]
    lock = project / LOCK_NAME
    marker = lock if when == "at_lock" else project / STAGING_DIR

    run = Background(project, ["freeze", "--parity-images", "20"], tmp_path / "logs", "freeze")
    try:
        wait_for(marker.exists, 120, "{} to appear".format(marker.name), interval=0.005, proc=run.proc)
        run.signal(signum)
        code = run.wait(timeout=60)
    finally:
        run.close()
    assert code == 130, run.stderr[-3000:]
    line = one_error_line(run.stderr, run.stdout, contains=("interrupted",))
    assert not lock.exists(), "the lock file outlived the interrupted command ({})".format(line)
    record = Project(project).stage("freeze")
    assert record["outputs"]["pb"]["sha256"] == before["outputs"]["pb"]["sha256"] == sha256_file(pb)
    assert pb.read_bytes() == pb_bytes
    take_and_release_lock(project)
    assert_consistent(project)
    assert record["status"] == "interrupted", "freeze record is still {!r} after {} ({}): the interrupt was " \
        "not recorded".format(record["status"], signal.Signals(signum).name, line)


# -- 3. SIGTERM while train builds its graph -------------------------------------------------------
def _tensorflow_loaded(pid):
    try:
        with open("/proc/{}/maps".format(pid)) as handle:
            return "_pywrap_tensorflow_internal" in handle.read()
    except OSError:
        return False


INTERRUPT_BOUND = 25  # seconds from SIGTERM to exit; an interrupted train exits in ~2 s, 2000 steps take minutes


@pytest.mark.parametrize("when", ["at_running", "during_tf_import", "after_tf_import"])
def test_sigterm_while_train_builds_graph_records_interrupted(prepared, tmp_path, when):
    """`at_running`: SIGTERM as soon as the manifest says `running`; `during_tf_import`: as soon as
    TensorFlow's native library is mapped (its module init is running); `after_tf_import`: 1.5 s later
    (the graph is being built)."""
    project = tmp_path / "p"
    shutil.copytree(str(prepared), str(project))
    data_before = snapshot(project)["files"]
    run = Background(project, train_args("num_train_steps=2000", "log_every=1"), tmp_path / "logs", "train")
    try:
        wait_for(lambda: (stage_of(project, "train") or {}).get("status") == "running", 120,
                 "the train stage to be recorded running", proc=run.proc)
        if when != "at_running":
            wait_for(lambda: _tensorflow_loaded(run.proc.pid), 120, "TensorFlow to load", interval=0.002,
                     proc=run.proc)
        if when == "after_tf_import":
            time.sleep(1.5)
        run.signal(signal.SIGTERM)
        try:
            code = run.wait(timeout=INTERRUPT_BOUND)
        except subprocess.TimeoutExpired:
            code = "none: still running {} s after SIGTERM (killed)".format(INTERRUPT_BOUND)
    finally:
        run.close()
    steps = len([line for line in run.stdout.splitlines() if line.startswith("step ")])
    assert code == 130, "exit {} ({} step lines: the SIGTERM was lost); stderr: {}".format(
        code, steps, run.stderr[-2000:])
    one_error_line(run.stderr, run.stdout, contains=("interrupted",))
    assert not (project / LOCK_NAME).exists()
    record = stage_of(project, "train")
    assert record["status"] == "interrupted", record
    assert snapshot(project)["files"] == data_before
    take_and_release_lock(project)
    assert_consistent(project)


# -- 4. an empty lock file -------------------------------------------------------------------------
def test_empty_lock_refused_when_fresh_taken_over_when_stale(prepared, tiny_source, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(str(prepared), str(project))
    before = snapshot(project)
    lock = project / LOCK_NAME
    lock.touch()
    # Fresh for the whole first half however slowly the commands start on a loaded machine: a lock's age is
    # now minus its mtime, and this one's is in the future.
    fresh = time.time() + 600
    os.utime(str(lock), (fresh, fresh))

    refused = mpltool(project, "data", "prepare", "--cifar", tiny_source, "--labelled", "20")
    assert refused.returncode == 4, refused.stderr.decode()[-2000:]
    one_error_line(refused.stderr.decode(), refused.stdout.decode(), contains=(LOCK_NAME,))
    with pytest.raises(PrerequisiteError, match="lock"):
        with Project(project).lock("x"):
            pass
    assert lock.exists() and lock.stat().st_size == 0, "a fresh lock of another process was removed"
    assert snapshot(project) == before

    stale = time.time() - 60
    os.utime(str(lock), (stale, stale))
    taken = mpltool(project, "data", "prepare", "--cifar", tiny_source, "--labelled", "20")
    assert taken.returncode == 0, taken.stderr.decode()[-2000:]
    assert not lock.exists()
    assert stage_of(project, "data")["status"] == "done"
    assert_consistent(project)

    lock.touch()
    os.utime(str(lock), (stale, stale))
    with Project(project).lock("x"):
        assert lock.read_text()  # ours now, with its holder written in it
    assert not lock.exists()


# -- 5. out of disk space --------------------------------------------------------------------------
def test_data_prepare_out_of_space_keeps_previous_import(request, big_sources, tmp_path):
    small = make_cifar_dir(tmp_path / "small", train_records=(200,) * 5, test_records=100, seed=21)
    disk = mount_tmpfs(tmp_path / "disk", "8m", request)
    project = disk / "p"
    good = mpltool(project, "data", "prepare", "--cifar", small, "--labelled", "100")
    assert good.returncode == 0, good.stderr.decode()[-2000:]
    before = snapshot(project)

    big, labelled = big_sources[0]  # ~33 MB: does not fit in what is left of 8 MB
    full = mpltool(project, "data", "prepare", "--cifar", big, "--labelled", labelled)
    soft = Soft()
    soft.check(full.returncode == 8, "exit {} instead of 8: {}".format(full.returncode, full.stderr.decode()[-500:]))
    try:
        one_error_line(full.stderr.decode(), full.stdout.decode(), contains=("out of disk space",))
    except AssertionError as exc:
        soft.failures.append(str(exc))
    after = snapshot(project)
    soft.check(after["files"] == before["files"], "the previous import's files changed")
    take_and_release_lock(project)
    soft.check(not leftovers(project), "staging left: {}".format(leftovers(project)))
    soft.check(not consistency_problems(project), "inconsistent: {}".format(consistency_problems(project)))
    if after["manifest"] != before["manifest"]:
        record = stage_of(project, "data")
        soft.failures.append(
            "the manifest changed: data stage is now {!r} (error {!r}), split recorded: {}, metrics: {}".format(
                record.get("status"), record.get("error"), "split" in record, record.get("metrics")))
    soft.verify()


def test_train_out_of_space_exits_8_and_resumes(request, prepared, tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", "64m", request)
    project = disk / "p"
    shutil.copytree(str(prepared), str(project))
    args = train_args("num_train_steps=400", "save_every=2", "eval_every=2")
    filler = disk / "filler"
    soft = Soft()

    run = Background(project, args, tmp_path / "logs", "train")
    try:
        wait_for(lambda: ((stage_of(project, "train") or {}).get("checkpoints") or {}).get("latest"), 180,
                 "a recorded latest checkpoint", interval=0.1, proc=run.proc)
        fill_disk(filler)
        started = time.time()
        code = run.wait(timeout=120)  # bounded: a process that never notices the full disk fails here
    finally:
        run.close()
    seconds = time.time() - started
    stdout, stderr = run.stdout, run.stderr
    soft.check(code == 8, "exit {} instead of 8 after {:.1f} s: {}".format(code, seconds, stderr.strip()[-500:]))
    try:
        one_error_line(stderr, stdout, contains=("out of disk space",))
    except AssertionError as exc:
        soft.failures.append(str(exc))
    soft.check("ERROR:tensorflow" not in stdout + stderr, "TensorFlow logged errors")
    soft.check(not (project / LOCK_NAME).exists(), "the lock file was left")

    record = stage_of(project, "train")  # parses
    assert record is not None, "no train record"
    latest = (record.get("checkpoints") or {}).get("latest")
    assert latest and latest.get("files"), record
    for entry in latest["files"]:
        path = Project(project).path(entry["path"])
        soft.check(path.is_file() and sha256_file(path) == entry["sha256"],
                   "recorded latest checkpoint file {} does not verify".format(entry["path"]))

    filler.unlink()
    take_and_release_lock(project)
    soft.check(not consistency_problems(project), "inconsistent: {}".format(consistency_problems(project)))
    again = Background(project, args, tmp_path / "logs", "train2")
    try:
        resumed = wait_for(lambda: "resuming from" in again.stdout, 120, "the second run to log `resuming from`",
                           interval=0.1, proc=again.proc)
        # Interrupt once it trains (an eval line): not while TensorFlow loads, where an interrupt is lost.
        wait_for(lambda: "Eval end in global step" in again.stdout.split("resuming from", 1)[1], 120,
                 "the resumed run to evaluate", interval=0.1, proc=again.proc)
        again.signal(signal.SIGINT)
        second = again.wait(timeout=120)
    except AssertionError as exc:
        resumed, second = False, None
        soft.failures.append("second run: {}; stderr: {}".format(exc, again.stderr.strip()[-500:]))
    finally:
        again.close()
    if resumed:
        soft.check(second in (0, 130), "second run exit {}: {}".format(second, again.stderr.strip()[-500:]))
    soft.check(not consistency_problems(project), "inconsistent after resume: {}".format(
        consistency_problems(project)))
    soft.verify()


# -- races inside one process: a signal in the few instructions around the lock and the running record --
@pytest.fixture(params=["as-is", "with-another-thread"])
def threads(request):
    """With another thread alive that does not block signals (TensorFlow's pools in a real run, any
    earlier test's threads in a suite), the kernel delivers a process-directed SIGTERM to that thread
    while the main thread blocks it, and Python still runs the handler in the main thread: the case a
    thread-local signal mask alone let through (seen once in CI: the lock's temp file was left)."""
    if request.param == "as-is":
        yield
        return
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)
    worker.start()
    yield
    stop.set()
    worker.join()


def test_signal_in_a_critical_section_is_raised_when_it_ends(threads):
    done = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with terminate_as_interrupt():
            with critical_section():
                os.kill(os.getpid(), signal.SIGTERM)
                for step in range(200):  # many bytecode boundaries, where Python runs pending handlers
                    time.sleep(0.001)
                    done.append(step)
            done.append("after")
    assert done == list(range(200)), "the signal cut the critical section short, or was not raised at its end"


def test_sigterm_while_the_lock_is_created_leaves_no_lock(tmp_path, monkeypatch, threads):
    """A SIGTERM that arrives while the lock file is being linked into place is held back by the
    critical section and raised the moment it ends: the lock must still be released."""
    project = Project(tmp_path / "p")
    project.ensure_dir()
    real_link = os.link

    def link_then_sigterm(source, target, *args, **kwargs):
        real_link(source, target, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # blocked here; delivered when the critical section ends

    monkeypatch.setattr(os, "link", link_then_sigterm)
    entered = []
    with pytest.raises(KeyboardInterrupt):
        with terminate_as_interrupt():
            with project.lock("x"):
                entered.append(True)
    monkeypatch.undo()
    assert not project.lock_path.exists(), "the lock file outlived the interrupted command"
    assert not list(project.dir.glob("." + LOCK_NAME + ".*")), "the lock's temp file was left"


def test_sigterm_right_after_the_running_record_is_not_left_running(prepared, tmp_path, monkeypatch):
    """SIGTERM just after the `running` record was renamed into place (during the directory fsync that
    follows): the record must end `interrupted` (or as before), never `running` with no process."""
    import mpltool.manifest.files as manifest_module

    project = Project(tmp_path / "p")
    shutil.copytree(str(prepared), str(project.dir))
    real_fsync_dir = manifest_module.fsync_dir
    state = {"armed": False}

    def fsync_then_sigterm(directory):
        real_fsync_dir(directory)
        if state["armed"] and (read_manifest(project.dir) or {}).get("stages", {}).get("slow", {}).get(
                "status") == "running":
            state["armed"] = False
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(manifest_module, "fsync_dir", fsync_then_sigterm)
    state["armed"] = True
    with pytest.raises(KeyboardInterrupt):
        with terminate_as_interrupt():
            with project.stage_run("slow", {"x": 1}, running_record=True):
                time.sleep(5)  # the graph build; never reached when the signal lands first
    monkeypatch.undo()
    assert not project.lock_path.exists()
    record = project.stage("slow")
    assert record is None or record["status"] != "running", \
        "stage recorded `running` although its process ended: {}".format(record)
