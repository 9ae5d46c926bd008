"""mpltool/tuning.py: the allocator and thread settings `train` re-executes itself with, and their switch."""

import os

import pytest

from mpltool import tuning
from helpers import manifest, mpltool, sets

JEMALLOC = ("jemalloc", "/opt/lib/libjemalloc.so.2", {"MALLOC_CONF": tuning.JEMALLOC_CONF})


def test_threads_split_the_cores_among_local_processes_and_run_one_op_at_a_time():
    env = tuning.tuned_environment({}, processes=2, cores=8, allocator=False)
    assert env == {"TF_NUM_INTRAOP_THREADS": "4", "OMP_NUM_THREADS": "4", "KMP_BLOCKTIME": "1"}
    assert tuning.tuned_environment({}, processes=3, cores=2, allocator=False)["OMP_NUM_THREADS"] == "1"


def test_the_allocator_is_preloaded_with_its_settings():
    env = tuning.tuned_environment({}, cores=2, allocator=JEMALLOC)
    assert env["LD_PRELOAD"] == "/opt/lib/libjemalloc.so.2"
    assert env["MALLOC_CONF"] == "dirty_decay_ms:-1,muzzy_decay_ms:-1,thp:always"


def test_nothing_the_user_set_is_changed():
    user = {"OMP_NUM_THREADS": "7", "MALLOC_CONF": "narenas:1", "KMP_BLOCKTIME": "0"}
    env = tuning.tuned_environment(user, cores=2, allocator=JEMALLOC)
    assert not set(user) & set(env)
    assert env["LD_PRELOAD"] == "/opt/lib/libjemalloc.so.2"


def test_a_user_preload_is_kept_after_the_allocator_and_an_allocator_already_preloaded_is_left_alone():
    env = tuning.tuned_environment({"LD_PRELOAD": "/x/libfoo.so"}, cores=2, allocator=JEMALLOC)
    assert env["LD_PRELOAD"] == "/opt/lib/libjemalloc.so.2:/x/libfoo.so"
    for already in ("/usr/lib/libtcmalloc_minimal.so.4", "/elsewhere/libjemalloc.so.2"):
        env = tuning.tuned_environment({"LD_PRELOAD": already}, cores=2, allocator=JEMALLOC)
        assert "LD_PRELOAD" not in env and "MALLOC_CONF" not in env


def test_no_allocator_installed_means_threads_only(tmp_path):
    assert tuning.find_allocator([str(tmp_path)]) is None
    assert "LD_PRELOAD" not in tuning.tuned_environment({}, cores=2, allocator=False)


def test_jemalloc_is_preferred_to_tcmalloc_wherever_each_is(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert tuning.find_allocator([str(tmp_path / "a"), str(tmp_path / "b")])[:2] == (
        "tcmalloc", str(tmp_path / "a" / "libtcmalloc_minimal.so.4"))
    (tmp_path / "b" / "libjemalloc.so.2").write_bytes(b"")
    name, path, settings = tuning.find_allocator([str(tmp_path / "a"), str(tmp_path / "b")])
    assert (name, path) == ("jemalloc", str(tmp_path / "b" / "libjemalloc.so.2"))
    assert settings == {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1,thp:always"}


@pytest.mark.parametrize("argv,command", [
    (["train"], "train"), (["--project", "train", "eval"], "eval"), (["--json", "--project", "p", "train"], "train"),
    (["--project=p", "train", "--json"], "train"), (["--help"], None), ([], None)])
def test_the_subcommand_is_found_after_global_options(argv, command):
    assert tuning.command_of(argv) == command


@pytest.mark.parametrize("argv,processes", [
    (["train"], 1), (["train", "--nproc", "2"], 2), (["train", "--nproc=4"], 4), (["train", "--nproc", "x"], 1)])
def test_processes_of_command_from_nproc(argv, processes):
    assert tuning.processes_of_command(argv) == processes


@pytest.fixture
def execs(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append((path, args, env)))
    monkeypatch.setattr(tuning, "find_allocator", lambda dirs=None: JEMALLOC)
    return calls


def test_train_reexecutes_once_with_the_settings(execs):
    tuning.reexec_tuned(["--project", "p", "train", "--nproc", "2"], environ={"PATH": "/bin"})
    (path, args, env), = execs
    assert args[1:] == ["-m", "mpltool", "--project", "p", "train", "--nproc", "2"]
    assert env["PATH"] == "/bin" and env["LD_PRELOAD"] == "/opt/lib/libjemalloc.so.2"
    assert env["OMP_NUM_THREADS"] == str(max(1, tuning.available_cores() // 2))
    assert env[tuning.APPLIED_ENV].split(",") == sorted(k for k in env if k not in ("PATH", tuning.APPLIED_ENV))
    tuning.reexec_tuned(["train"], environ=env)  # the re-executed process
    assert len(execs) == 1


@pytest.mark.parametrize("argv,environ", [
    (["eval"], {}), (["train", "--no-tuning"], {}), (["train"], {"MPLTOOL_TUNING": "off"}),
    (["train"], {"MPLTOOL_TUNING": "0"}), (["data", "prepare", "--cifar", "train"], {})])
def test_no_reexec_off_train_or_when_switched_off(execs, argv, environ):
    tuning.reexec_tuned(argv, environ=environ)
    assert execs == []


def test_loaded_allocator_reads_the_process_map(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert tuning.loaded_allocator(str(maps)) == "jemalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert tuning.loaded_allocator(str(maps)) is None
    assert tuning.loaded_allocator(str(tmp_path / "absent")) is None


@pytest.mark.slow
def test_train_records_the_runtime_it_ran_with_and_no_tuning_turns_it_off(prepared_copy):
    """A real `mpltool train`: the re-executed process says what it ran with (the allocator as the
    loader mapped it), and `--no-tuning` leaves the process as started."""
    installed = tuning.find_allocator()
    ours = ("LD_PRELOAD", "MALLOC_CONF", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
            "KMP_BLOCKTIME", tuning.APPLIED_ENV, tuning.TUNING_ENV)
    environ = {k: v for k, v in os.environ.items() if k not in ours}  # as a user's shell starts it
    args = ["train", "--device", "cpu", "--recipe", "mpl-demo"] + sets("num_train_steps=1", "eval_every=1",
                                                                       "save_every=1")
    done = mpltool(prepared_copy, *args, env=environ)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    runtime = manifest(prepared_copy)["stages"]["train"]["runtime"]
    assert runtime["tuning"] == "applied"
    assert runtime["allocator"] == (installed[0] if installed else "system malloc")
    assert runtime["omp_threads"] == runtime["intra_op_threads"] == str(tuning.available_cores())
    done = mpltool(prepared_copy, *(args + ["--no-tuning", "--set", "num_train_steps=2"]), env=environ)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    runtime = manifest(prepared_copy)["stages"]["train"]["runtime"]
    assert runtime == {"tuning": "not applied", "allocator": "system malloc", "intra_op_threads": "default",
                       "inter_op_threads": "default", "omp_threads": "default"}


def test_a_failed_reexec_trains_as_started(monkeypatch):
    def refuse(path, args, env):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "execve", refuse)
    monkeypatch.setattr(tuning, "find_allocator", lambda dirs=None: JEMALLOC)
    assert tuning.reexec_tuned(["train"], environ={}) is None  # no traceback: the command runs untuned
