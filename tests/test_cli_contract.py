"""The CLI contract: one-line errors with documented exit codes, the JSON error object, signals as Ctrl-C,
global options anywhere, readable plain output, and options passed through to the library.

Library functions are replaced by stubs here: these tests are about the CLI layer only.
"""

import errno
import inspect
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpltool import __version__
from helpers import invoke
from mpltool.console import Output
from mpltool.errors import PrerequisiteError

REPO = Path(__file__).resolve().parents[1]




def error_line(result, code):
    """The single stderr line of a failed run, after checking the exit code and that nothing leaked."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def json_error(result):
    payload = json.loads(result.stdout)  # the whole of stdout is one object
    assert isinstance(payload, dict)
    return payload


@pytest.fixture()
def status_raises(monkeypatch):
    """Make `mpltool status` raise the given exception inside the command body."""
    import mpltool.status

    def install(exc):
        def project_status(project_dir):
            raise exc
        monkeypatch.setattr(mpltool.status, "project_status", project_status)
    return install


def status_result(project, ok=True, problems=()):
    return {"project": str(project), "manifest": str(project) + "/mpltool.yaml",
            "stages": [{"stage": "data", "status": "done", "status_text": "done", "ended": "2024-01-01T00:00:00", "outputs_text": "6 files",
                        "metrics_text": "train_records=150"}],
            "notes": ["a note"], "ok": ok, "problems": list(problems)}


# -- 1. the command wrapper: classify, one line, exit code ------------------------------------------------
def test_mpltool_error_is_one_line_with_hint_and_its_exit_code(status_raises):
    status_raises(PrerequisiteError("no data stage", hint="run `mpltool data prepare --cifar PATH` first"))
    result = invoke("status")
    assert error_line(result, 4) == "error: no data stage (run `mpltool data prepare --cifar PATH` first)"
    assert result.stdout == ""


def test_raw_os_errors_are_classified(status_raises, tmp_path):
    status_raises(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f")))
    line = error_line(invoke("status"), 8)
    assert line.startswith("error: out of disk space writing {} (".format(tmp_path / "f"))
    status_raises(PermissionError(errno.EACCES, "Permission denied", "/root/x"))
    assert error_line(invoke("status"), 3) == "error: cannot use /root/x: Permission denied"


def test_internal_error_is_one_line_and_the_traceback_needs_debug(status_raises):
    status_raises(ValueError("boom\n  with a second line"))
    line = error_line(invoke("status"), 1)
    assert line == "error: internal error: ValueError: boom (run with --debug for the traceback)"
    debug = invoke("--debug", "status")
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr and "ValueError: boom" in debug.stderr
    assert debug.stderr.splitlines()[-1] == "error: internal error: ValueError: boom"


def test_keyboard_interrupt_is_exit_130_one_line(status_raises):
    status_raises(KeyboardInterrupt())
    assert error_line(invoke("status"), 130) == "error: interrupted"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_are_ctrl_c(monkeypatch, signum):
    import mpltool.status

    def project_status(project_dir):
        os.kill(os.getpid(), signum)
        time.sleep(10)  # the handler interrupts this
        raise AssertionError("signal not delivered")

    monkeypatch.setattr(mpltool.status, "project_status", project_status)
    before = signal.getsignal(signum)
    started = time.time()
    line = error_line(invoke("status"), 130)
    assert line in ("error: interrupted", "error: interrupted by " + signal.Signals(signum).name)
    assert time.time() - started < 5
    assert signal.getsignal(signum) == before  # restored after the command


def test_sigterm_in_a_real_process_exits_130(tmp_path):
    code = ("import sys, time\n"
            "import mpltool.status\n"
            "def slow(project_dir):\n"
            "    sys.stderr.write('ready\\n'); sys.stderr.flush(); time.sleep(60)\n"
            "mpltool.status.project_status = slow\n"
            "from mpltool.cli import run\n"
            "sys.argv = ['mpltool', '--project', sys.argv[1], 'status']\n"
            "run()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=str(REPO))
    try:
        assert proc.stderr.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.decode() in ("error: interrupted\n", "error: interrupted by SIGTERM\n") and out == b""


# -- 2. click's usage errors are one line, exit 2 -------------------------------------------------------
@pytest.mark.parametrize("args, line", [
    (["train", "--bogus"], "error: no such option: --bogus (see `mpltool train --help`)"),
    (["train", "--forc"], "error: no such option: --forc; did you mean --force or --nproc? (see `mpltool train --help`)"),
    (["data", "prepare"], "error: give exactly one of --cifar PATH, --images DIR and --tfrecord DIR (see `mpltool data prepare "
                          "--help`)"),
    # no train record: the default algorithm's networks, as its registry entry lists them
    (["eval", "--target", "best"], "error: unknown target 'best': this project's training built teacher, student, "
                                   "ema"),
    (["data", "prepare", "--cifar", "x", "--labelled", "many"],
     "error: invalid value for '--labelled': 'many' is not a valid integer (see `mpltool data prepare --help`)"),
    (["bogus"], "error: no such command 'bogus' (see `mpltool --help`)"),
    (["--bogus", "status"], "error: no such option: --bogus (see `mpltool --help`)"),
    (["freeze", "--batch"], "error: option '--batch' requires an argument (see `mpltool freeze --help`)"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, args, line):
    result = invoke("--project", str(tmp_path), *args)
    assert error_line(result, 2) == line
    assert result.stdout == ""


def test_usage_error_through_the_console_script_entry_point(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mpltool", "--project", str(tmp_path), "train", "--bogus"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO), timeout=120)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode() == "error: no such option: --bogus (see `mpltool train --help`)\n"


def test_help_and_version_still_exit_0():
    top = invoke("--help")
    assert top.exit_code == 0 and "Exit codes:" in top.stdout and top.stderr == ""
    sub = invoke("data", "prepare", "-h")
    assert sub.exit_code == 0 and "--force" in sub.stdout and "never overwritten" in " ".join(sub.stdout.split())
    after = invoke("train", "--help", "--json")  # a global option after the command does not break --help
    assert after.exit_code == 0 and "--extend-steps" in after.stdout
    version = invoke("--version")
    assert version.exit_code == 0 and __version__ in version.stdout


# -- 3. --json: one error object on stdout ----------------------------------------------------------------
def test_json_error_object_for_a_command_error(status_raises):
    status_raises(PrerequisiteError("no data stage", hint="run data prepare"))
    result = invoke("--json", "status")
    assert error_line(result, 4) == "error: no data stage (run data prepare)"
    assert json_error(result) == {"ok": False, "exit_code": 4, "error": "no data stage", "hint": "run data prepare"}


def test_json_error_object_for_an_internal_error_and_no_hint(status_raises):
    status_raises(RuntimeError("bad"))
    assert json_error(invoke("status", "--json")) == {
        "ok": False, "exit_code": 1, "error": "internal error: RuntimeError: bad",
        "hint": "run with --debug for the traceback"}
    status_raises(PrerequisiteError("locked"))
    assert json_error(invoke("status", "--json")) == {"ok": False, "exit_code": 4, "error": "locked", "hint": None}


@pytest.mark.parametrize("args", [
    ["--json", "train", "--bogus"],
    ["train", "--bogus", "--json"],
    ["bogus", "--json"],
    ["data", "prepare", "--json"],
])
def test_json_error_object_for_usage_errors_even_when_parsing_failed(tmp_path, args):
    result = invoke("--project", str(tmp_path), *args)
    line = error_line(result, 2)
    payload = json_error(result)
    assert payload["ok"] is False and payload["exit_code"] == 2
    assert line == "error: {} ({})".format(payload["error"], payload["hint"])
    assert payload["hint"].startswith("see `mpltool")


def test_json_success_results_are_unchanged(monkeypatch, tmp_path):
    import mpltool.status

    monkeypatch.setattr(mpltool.status, "project_status", lambda project_dir: status_result(project_dir))
    result = invoke("--project", str(tmp_path), "--json", "status")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == status_result(str(tmp_path))


# -- 4. global options before or after the command -------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["--project", "{p}", "--json", "status"],
    ["status", "--json", "--project", "{p}"],
    ["status", "--project={p}", "--json"],
    ["--json", "status", "--project", "{p}", "--debug"],
])
def test_global_options_anywhere(monkeypatch, tmp_path, args):
    import mpltool.status

    seen = []
    monkeypatch.setattr(mpltool.status, "project_status",
                        lambda project_dir: seen.append(project_dir) or status_result(project_dir))
    result = invoke(*[a.format(p=tmp_path) for a in args])
    assert result.exit_code == 0, result.stderr
    assert seen == [str(tmp_path)] and json.loads(result.stdout)["project"] == str(tmp_path)


def test_global_options_after_a_subcommand_and_its_options(monkeypatch, tmp_path):
    import mpltool.data.stage

    seen = {}

    def prepare(project_dir, source, **kwargs):
        seen.update(project=project_dir, source=source, **kwargs)
        return prepared_result()

    monkeypatch.setattr(mpltool.data.stage, "prepare", prepare)
    result = invoke("data", "prepare", "--cifar", "X", "--project", str(tmp_path), "--labelled", "20", "--json")
    assert result.exit_code == 0, result.stderr
    assert seen["project"] == str(tmp_path) and seen["source"] == "X" and seen["options"]["num_labelled"] == 20
    assert json.loads(result.stdout) == prepared_result()


def test_a_literal_double_dash_stops_the_hoisting(monkeypatch):
    import mpltool.recipes

    seen = []

    def load_recipe(name, overrides=()):
        seen.append(name)
        raise PrerequisiteError("stub")

    monkeypatch.setattr(mpltool.recipes, "load_recipe", load_recipe)
    result = invoke("recipes", "show", "--", "--json")
    assert error_line(result, 4) == "error: stub"
    assert seen == ["--json"] and result.stdout == ""  # --json was the NAME, not the global option


# -- 5. console ----------------------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_warn_is_one_stderr_line():
    out, err = io.StringIO(), io.StringIO()
    Output(stdout=out, stderr=err).warn("input pipeline is slow\n(2 cores)")
    assert err.getvalue() == "warning: input pipeline is slow (2 cores)\n" and out.getvalue() == ""


def test_plain_table_and_fields_are_aligned_with_a_header():
    out = io.StringIO()
    output = Output(stdout=out, stderr=io.StringIO())
    output.table("CIFAR files", ["file", "records", "sha256"],
                 [["data_batch_1", 10, "abcdef"], ["test_batch", 12345, None]])
    output.fields("eval", {"top-1": 0.5, "images per second": 12.25, "model": "ckpt"})
    assert out.getvalue() == (
        "CIFAR files:\n"
        "  file          records  sha256\n"
        "  data_batch_1  10       abcdef\n"
        "  test_batch    12345    -\n"
        "eval:\n"
        "  top-1              0.5\n"
        "  images per second  12.25\n"
        "  model              ckpt\n")


def test_long_info_lines_are_not_wrapped_on_a_terminal():
    terminal = _Terminal()
    output = Output(stdout=terminal, stderr=io.StringIO())
    assert output.interactive
    command = "next: mpltool --project /a/long/project/dir " + " ".join("--set key{}=value".format(i)
                                                                        for i in range(20))
    output.info(command)
    assert terminal.getvalue().count("\n") == 1 and command in terminal.getvalue()


def test_plain_status_table_through_the_cli(monkeypatch, tmp_path):
    import mpltool.status

    monkeypatch.setattr(mpltool.status, "project_status", lambda project_dir: status_result(project_dir))
    result = invoke("--project", str(tmp_path), "status")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["stage", "status", "ended", "outputs", "metrics"]
    assert lines[2].split()[:2] == ["data", "done"] and "=" not in lines[1]
    assert lines[1].index("status") == lines[2].index("done")


# -- 6 / 7. options passed to the library, next: hints -------------------------------------------------
def prepared_result():
    return {"files": [{"name": "test_batch.bin", "records": 5, "size": 15365, "sha256": "ab" * 32}],
            "labelled_records": 10, "unlabelled_records": 50, "test_records": 5,
            "split": {"method": "first", "seed": 0}, "recipe": "mpl-demo", "source": "cifar"}


@pytest.mark.parametrize("extra, force", [([], False), (["--force"], True)])
def test_data_prepare_passes_force_and_names_the_recipe_next(monkeypatch, tmp_path, extra, force):
    import mpltool.data.stage

    seen = {}
    monkeypatch.setattr(mpltool.data.stage, "prepare",
                        lambda project_dir, source, **kw: seen.update(kw) or dict(prepared_result(), recipe=kw["recipe"]))
    result = invoke("--project", str(tmp_path), "data", "prepare", "--cifar", "X", "--recipe", "mpl-demo", *extra)
    assert result.exit_code == 0, result.stderr
    assert seen["force"] is force
    assert "next: mpltool --project {} train --recipe mpl-demo".format(tmp_path) in result.stdout.splitlines()


@pytest.mark.parametrize("extra, force", [([], False), (["--force"], True)])
def test_data_demo_passes_force_and_prints_the_library_next(monkeypatch, tmp_path, extra, force):
    import mpltool.data.stage

    seen = []
    nxt = "mpltool --project {} data prepare --cifar {}/demo-cifar --recipe mpl-demo".format(tmp_path, tmp_path)

    def demo(out_dir, project_dir, force=False, domains=False):
        seen.append((out_dir, project_dir, force, domains))
        return {"out": "{}/demo-cifar".format(tmp_path), "files": ["a", "b"], "classes": [], "next": nxt}

    monkeypatch.setattr(mpltool.data.stage, "demo", demo)
    result = invoke("--project", str(tmp_path), "data", "demo", *extra)
    assert result.exit_code == 0, result.stderr
    assert seen == [(None, str(tmp_path), force, False)]
    assert result.stdout.splitlines()[-1] == "next: " + nxt


def test_train_passes_warn_and_prints_next_eval(monkeypatch, tmp_path):
    import mpltool.train.stage

    seen = {}

    def train(project_dir, **kwargs):
        seen.update(kwargs)
        kwargs["warn"]("the input pipeline is the bottleneck")
        return {"steps_done": 6, "num_train_steps": 6, "metrics": {"ema_top1": 0.5},
                "checkpoints": {"latest": {"prefix": "checkpoints/model.ckpt-6"}}}

    monkeypatch.setattr(mpltool.train.stage, "train", train)
    result = invoke("--project", str(tmp_path), "train", "--force")
    assert result.exit_code == 0, result.stderr
    assert seen["force"] is True
    assert result.stderr == "warning: the input pipeline is the bottleneck\n"
    assert result.stdout.splitlines()[-1] == "next: mpltool --project {} eval".format(tmp_path)


def test_eval_prints_next_freeze(monkeypatch, tmp_path):
    import mpltool.eval.stage

    monkeypatch.setattr(mpltool.eval.stage, "evaluate", lambda project_dir, **kw: {
        "source": {"kind": "pb", "path": "frozen/x.pb"}, "top1": 0.5, "top5": 0.9, "loss": 1.2, "images": 10,
        "images_per_second": 100.0})
    result = invoke("eval", "--project", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "next: mpltool --project {} freeze".format(tmp_path)


@pytest.mark.parametrize("extra, force", [([], False), (["--force"], True)])
def test_freeze_passes_force(monkeypatch, tmp_path, extra, force):
    import mpltool.freeze.stage

    seen = {}
    monkeypatch.setattr(mpltool.freeze.stage, "freeze", lambda project_dir, **kw: seen.update(kw) or {
        "pb": "frozen/x.pb", "sha256": "ab" * 32,
        "io": {"input_name": "images", "input_shape": [1, 32, 32, 3], "input_dtype": "float32",
               "input_range": "0..255", "output_names": ["logits"], "output_shapes": [[1, 10]]},
        "parity": {"max_abs_logit_diff": 0.0, "tolerance": 1e-4, "images": 5, "top1_agreement": 1.0},
        "folded_batch_norms": 3})
    result = invoke("--project", str(tmp_path), "freeze", *extra)
    assert result.exit_code == 0, result.stderr
    assert seen["force"] is force and seen["fold"] is True
    assert "3 batch norm(s) into their convolutions" in result.stdout
    assert "next" in result.stdout and "mpltool --project {} convert".format(tmp_path) in result.stdout


@pytest.mark.parametrize("extra, force", [([], False), (["--force"], True)])
def test_convert_passes_force(monkeypatch, tmp_path, extra, force):
    import mpltool.convert.stage

    seen = {}
    monkeypatch.setattr(mpltool.convert.stage, "convert",
                        lambda project_dir, **kw: seen.update(kw) or {"om": "om/x.om", "mode": "convert"})
    result = invoke("--project", str(tmp_path), "convert", *extra)
    assert result.exit_code == 0, result.stderr
    assert seen["force"] is force


@pytest.mark.parametrize("module, function, parameter", [
    ("mpltool.data.stage", "prepare", "force"),
    ("mpltool.data.stage", "demo", "force"),
    ("mpltool.freeze.stage", "freeze", "force"),
    ("mpltool.convert.stage", "convert", "force"),
    ("mpltool.train.stage", "train", "warn"),
])
def test_the_library_takes_what_the_cli_passes(module, function, parameter):
    import importlib

    assert parameter in inspect.signature(getattr(importlib.import_module(module), function)).parameters


# -- 8. status as a CI gate --------------------------------------------------------------------------------------
PROBLEMS = ["data: test_batch changed", "data: labelled_indices missing", "train: not done (running)",
            "eval: not done"]


def test_status_with_problems_exits_4_after_the_table(monkeypatch, tmp_path):
    import mpltool.status

    monkeypatch.setattr(mpltool.status, "project_status",
                        lambda project_dir: status_result(project_dir, ok=False, problems=PROBLEMS[:2]))
    result = invoke("--project", str(tmp_path), "status")
    assert error_line(result, 4) == ("error: 2 problem(s): data: test_batch changed; data: labelled_indices "
                                     "missing (re-run the stage that made them)")
    assert "a note" in result.stdout and "data" in result.stdout  # the table and notes came first
    monkeypatch.setattr(mpltool.status, "project_status",
                        lambda project_dir: status_result(project_dir, ok=False, problems=PROBLEMS))
    assert error_line(invoke("--project", str(tmp_path), "status"), 4).startswith(
        "error: 4 problem(s): data: test_batch changed; data: labelled_indices missing; train: not done "
        "(running); ...")


def test_status_json_with_problems_prints_the_result_not_an_error_object(monkeypatch, tmp_path):
    import mpltool.status

    expected = status_result(str(tmp_path), ok=False, problems=PROBLEMS[:1])
    monkeypatch.setattr(mpltool.status, "project_status", lambda project_dir: expected)
    result = invoke("--project", str(tmp_path), "status", "--json")
    assert result.exit_code == 4 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == ["a note",  # with --json, log lines go to stderr
                                          "error: 1 problem(s): data: test_batch changed (re-run the stage that "
                                          "made them)"]
    assert json.loads(result.stdout) == expected  # one object: the status, ok false


def test_status_gate_on_a_real_project(tmp_path):
    from cifar_fixtures import make_cifar_dir

    src = Path(make_cifar_dir(tmp_path / "src", train_records=(10,) * 5, test_records=5))
    project = tmp_path / "p"
    assert invoke("--project", str(project), "data", "prepare", "--cifar", str(src), "--labelled", "10").exit_code == 0
    healthy = invoke("--project", str(project), "--json", "status")
    assert healthy.exit_code == 0, healthy.stderr
    assert json.loads(healthy.stdout)["ok"] is True
    (project / "data/labelled_indices.txt").unlink()
    broken = invoke("--project", str(project), "status")
    line = error_line(broken, 4)
    assert line.startswith("error: 1 problem(s): ") and "labelled_indices" in line
    assert line.endswith(" (re-run the stage that made them)")


def test_an_interrupt_inside_a_c_call_is_still_an_interrupt():
    """A SIGTERM that lands inside one of TensorFlow's C functions surfaces as a SystemError caused by the
    KeyboardInterrupt: it must exit 130 and record `interrupted`, not be an internal error (exit 1)."""
    from mpltool.errors import Interrupted, classify

    try:
        try:
            raise KeyboardInterrupt("SIGTERM")
        except KeyboardInterrupt as interrupt:
            raise SystemError("<built-in function GetOperationInputs> returned a result with an error set") \
                from interrupt
    except SystemError as exc:
        error = classify(exc)
    assert isinstance(error, Interrupted) and error.message == "interrupted by SIGTERM"
    assert classify(SystemError("unrelated")) is None
