"""The convert stage end to end through the fake `atc` and `npu-smi` (tests/fakes/), and the pre-check.

Helpers here (tiny frozen graphs, a bin dir holding chosen fakes) are imported by test_convert_tools.py.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from mpltool import graphdef
from mpltool.convert import atc as atc_tool
from mpltool.convert import precheck
from mpltool.models import verify
from mpltool.convert.stage import convert
from mpltool.errors import (ExitCode, InvalidInputError, PrerequisiteError, ToolFailedError, ToolMissingError,
                            UsageError, VerificationError)
from mpltool.manifest import Project
from mpltool.manifest.files import sha256_file
from mpltool.tfv1 import tf

FAKES = Path(__file__).resolve().parent / "fakes"
IO = {"input_name": "input", "input_shape": [1, 32, 32, 3], "output_names": ["logits", "probs"]}


def tiny_graph_def(bad_op=None, batch=1):
    """Placeholder `input` -> Conv2D (Const kernel) -> Mean -> `logits` -> Softmax `probs`, optionally with a
    training-time op (VariableV2 or RandomUniform) mixed into the logits."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [batch, 32, 32, 3], name="input")
        kernel = tf.constant(np.random.RandomState(0).randn(3, 3, 3, 4).astype(np.float32), name="kernel")
        features = tf.nn.conv2d(images, kernel, strides=[1, 1, 1, 1], padding="SAME", name="conv")
        logits = tf.reduce_mean(features, axis=[1, 2], name="pool")
        if bad_op == "VariableV2":
            logits = logits + tf.Variable(tf.zeros([4]), name="bias")
        elif bad_op == "RandomUniform":
            logits = logits + tf.random_uniform([4], name="noise")
        logits = tf.identity(logits, name="logits")
        tf.nn.softmax(logits, name="probs")
    return graph.as_graph_def()


def write_pb(path, bad_op=None, batch=1):
    path = Path(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiny_graph_def(bad_op, batch).SerializeToString())
    return path


def make_bin(tmp_path, *tools):
    """A directory holding only the named fakes, so PATH decides exactly which tools exist."""
    bin_dir = tmp_path / "bin-{}".format("-".join(tools) or "empty")
    bin_dir.mkdir()
    for tool in tools:
        (bin_dir / tool).symlink_to(FAKES / tool)
    return bin_dir


def use_path(monkeypatch, bin_dir):
    monkeypatch.setenv("PATH", "{}:/usr/bin:/bin".format(bin_dir))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No real toolkit, no knobs left over: only what a test puts there is found."""
    for name in ("ASCEND_TOOLKIT_HOME", "FAKE_NPU_SMI_LAYOUT", "FAKE_ATC_SLEEP", "FAKE_ATC_FAIL", "FAKE_ATC_NO_OM",
                 "FAKE_ATC_CANN8", "FAKE_ATC_PID_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(atc_tool, "DEFAULT_TOOLKIT_ROOT", tmp_path / "no-toolkit")
    argv_log = tmp_path / "atc-argv.jsonl"
    monkeypatch.setenv("FAKE_ATC_ARGV_LOG", str(argv_log))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return argv_log


@pytest.fixture
def frozen_project(tmp_path):
    """A project whose manifest has a done freeze stage for a tiny good graph."""
    project_dir = tmp_path / "proj"
    project_dir.mkdir()
    pb = write_pb(project_dir / "frozen" / "tiny.pb")
    project = Project(project_dir)
    with project.stage_run("freeze", {}) as run:
        run.outputs["pb"] = project.file_record(pb)
        run.record["io"] = dict(IO)
    return project_dir, pb


@pytest.fixture
def with_atc(clean_env, monkeypatch, tmp_path):
    use_path(monkeypatch, make_bin(tmp_path, "atc", "npu-smi"))
    return clean_env


def argv_calls(argv_log):
    """The conversions the fake atc saw (its `--version` queries left out)."""
    if not argv_log.exists():
        return []
    return [call for call in map(json.loads, argv_log.read_text().splitlines()) if call != ["--version"]]


# -- pre-check --------------------------------------------------------------------------------------
def test_precheck_accepts_tiny_graph_and_counts_ops():
    report = precheck.precheck_graph(tiny_graph_def(), "input", [1, 32, 32, 3], ["logits", "probs:0"])
    assert report["ok"] is True
    assert report["problems"] == []
    assert dict(report["op_counts"]) == {"Const": 2, "Conv2D": 1, "Identity": 1, "Mean": 1, "Placeholder": 1,
                                         "Softmax": 1}
    assert report["nodes"] == 7
    assert report["input"] == {"name": "input", "dtype": "float32", "shape": [1, 32, 32, 3],
                               "input_shape": [1, 32, 32, 3]}
    assert report["outputs"] == ["logits", "probs"]


@pytest.mark.parametrize("bad_op, kind", [("VariableV2", "training_op"), ("RandomUniform", "training_op")])
def test_precheck_rejects_training_ops_by_name(bad_op, kind):
    report = precheck.precheck_graph(tiny_graph_def(bad_op), "input", [1, 32, 32, 3], ["probs"])
    assert report["ok"] is False
    flagged = {p["op"]: p for p in report["problems"]}
    assert bad_op in flagged and flagged[bad_op]["kind"] == kind
    expected_node = "bias" if bad_op == "VariableV2" else "noise/RandomUniform"
    assert flagged[bad_op]["nodes"] == [expected_node]
    assert expected_node in flagged[bad_op]["message"]
    if bad_op == "VariableV2":
        assert flagged["Assign"]["nodes"] == ["bias/Assign"]


def test_precheck_flags_unknown_ops_extra_placeholders_and_missing_outputs():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [1, 4], name="input")
        flag = tf.placeholder(tf.bool, [], name="is_training")
        y = tf.math.cumsum(x, axis=1, name="running")
        tf.identity(tf.where(flag, y, x), name="out")
    report = precheck.precheck_graph(graph.as_graph_def(), "input", None, ["out", "probs"])
    by_kind = {(p["kind"], p["op"]): p for p in report["problems"]}
    assert by_kind[("unsupported_op", "Cumsum")]["nodes"] == ["running"]
    assert by_kind[("extra_placeholder", "Placeholder")]["nodes"] == ["is_training"]
    assert by_kind[("output", None)]["nodes"] == ["probs"]
    assert report["input"]["input_shape"] == [1, 4]


def test_precheck_needs_static_input_shape_or_one_given():
    dynamic = tiny_graph_def(batch=None)
    report = precheck.precheck_graph(dynamic, "input", None, ["probs"])
    assert [p["kind"] for p in report["problems"]] == ["input"]
    assert "no static shape ([-1, 32, 32, 3])" in report["problems"][0]["message"]
    given = precheck.precheck_graph(dynamic, "input", [8, 32, 32, 3], ["probs"])
    assert given["ok"] is True and given["input"]["input_shape"] == [8, 32, 32, 3]
    mismatch = precheck.precheck_graph(tiny_graph_def(), "input", [1, 28, 28, 3], ["probs"])
    assert "does not fit the graph's input shape [1, 32, 32, 3]" in mismatch["problems"][0]["message"]
    absent = precheck.precheck_graph(tiny_graph_def(), "image", [1, 32, 32, 3], ["probs"])
    assert absent["problems"][-1]["message"] == "input node 'image' is not in the graph"


def test_load_graph_def_refuses_files_that_are_not_graphs(tmp_path):
    text = tmp_path / "notes.pb"
    text.write_text("this is not a protobuf\n")
    with pytest.raises(InvalidInputError) as info:
        precheck.load_graph_def(text)
    assert info.value.exit_code == ExitCode.INVALID_INPUT
    assert info.value.message == "{} is not a TensorFlow GraphDef (.pb): protobuf cannot parse it".format(text)
    with pytest.raises(InvalidInputError, match="not found"):
        precheck.load_graph_def(tmp_path / "missing.pb")
    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="is empty, not a TensorFlow GraphDef"):
        precheck.load_graph_def(empty)


# -- the stage: success -----------------------------------------------------------------------------
def test_convert_success_records_om_hash_and_exact_argv(frozen_project, with_atc, tmp_path):
    project_dir, pb = frozen_project
    lines = []
    result = convert(project_dir, soc="Ascend910A", progress=lines.append)

    om = project_dir / "om" / "tiny.om"
    header = b"FAKE-OM\x00Ascend910A\x00" + hashlib.sha256(pb.read_bytes()).hexdigest().encode() + b"\x00"
    assert om.read_bytes().startswith(header) and om.read_bytes().endswith(b"\x00" + pb.read_bytes())
    calls = argv_calls(with_atc)
    # atc writes into the staging folder; the verified .om is renamed to om/tiny.om by the commit.
    assert calls[0] == ["--model={}".format(pb), "--framework=3",
                        "--output={}".format(project_dir / ".mpltool-staging" / "om-tiny"),
                        "--soc_version=Ascend910A", "--input_shape=input:1,32,32,3"]
    assert not (project_dir / ".mpltool-staging" / "om-tiny.om").exists()
    assert result["command"] == "{} --model={} --framework=3 --output={} --soc_version=Ascend910A " \
                                "--input_shape=\"input:1,32,32,3\"".format(
                                    tmp_path / "bin-atc-npu-smi" / "atc", pb, project_dir / "om" / "tiny")
    assert result["om_sha256"] == sha256_file(om)
    assert (result["soc_version"], result["soc_rule"], result["atc_rule"]) == ("Ascend910A", "--soc", "PATH")
    assert result["exit_status"] == 0 and result["atc_version"] is None and result["skipped"] is False
    assert lines[0] == "ATC start working now, please wait for a moment."
    assert lines[-1] == atc_tool.SUCCESS_LINE

    record = Project(project_dir).stage("convert")
    assert record["status"] == "done"
    assert record["outputs"]["om"] == {"path": "om/tiny.om", "size": om.stat().st_size, "sha256": sha256_file(om)}
    assert record["inputs"]["pb"]["sha256"] == sha256_file(pb)
    assert record["argv"][1:] == calls[0][:2] + ["--output={}".format(project_dir / "om" / "tiny")] + calls[0][3:]
    assert record["command"] == result["command"]
    assert record["soc_version"] == "Ascend910A" and record["soc_rule"] == "--soc"
    assert record["exit_status"] == 0 and record["atc_version"] is None
    assert record["precheck"]["ok"] is True and record["precheck"]["op_counts"]["Conv2D"] == 1
    log = project_dir / record["log"]
    assert record["log"].startswith("logs/atc-") and log.read_text().splitlines()[-1] == atc_tool.SUCCESS_LINE
    # atc's droppings land in the project's work dir, not in the user's cwd
    assert (project_dir / "atc-work" / "fusion_result.json").is_file()
    assert (project_dir / "atc-work" / "kernel_meta").is_dir()
    assert not (Path.cwd() / "fusion_result.json").exists() and not (Path.cwd() / "kernel_meta").exists()


def test_convert_skips_unchanged_work_and_force_redoes_it(frozen_project, with_atc):
    project_dir, _ = frozen_project
    first = convert(project_dir, soc="Ascend910A")
    calls_after_first = len(argv_calls(with_atc))
    again = convert(project_dir, soc="Ascend910A")
    assert again["skipped"] is True and again["om_sha256"] == first["om_sha256"]
    assert len(argv_calls(with_atc)) == calls_after_first
    other_soc = convert(project_dir, soc="Ascend310P3")
    assert other_soc["skipped"] is False and other_soc["om_sha256"] != first["om_sha256"]
    forced = convert(project_dir, soc="Ascend310P3", force=True)
    assert forced["skipped"] is False
    assert argv_calls(with_atc)[-1][3] == "--soc_version=Ascend310P3"


def test_convert_passes_optional_flags_in_order(frozen_project, with_atc):
    project_dir, _ = frozen_project
    result = convert(project_dir, soc="Ascend910A", precision_mode="allow_mix_precision", log_level="error",
                     out_nodes=["logits", "probs:0"], output_type="FP32")
    assert argv_calls(with_atc)[-1][5:] == ["--precision_mode=allow_mix_precision", "--log=error",
                                            "--out_nodes=logits:0;probs:0", "--output_type=FP32"]
    assert result["command"].endswith('--log=error --out_nodes="logits:0;probs:0" --output_type="FP32"')


def test_convert_detects_soc_from_npu_smi(frozen_project, with_atc, monkeypatch):
    project_dir, _ = frozen_project
    monkeypatch.setenv("FAKE_NPU_SMI_LAYOUT", "310P")
    result = convert(project_dir)
    assert (result["soc_version"], result["soc_rule"]) == ("Ascend310P3", "npu-smi")
    assert argv_calls(with_atc)[-1][3] == "--soc_version=Ascend310P3"


# -- the stage: atc failures ------------------------------------------------------------------------
def test_convert_forced_failure_is_one_line_with_code_and_log(frozen_project, with_atc, monkeypatch):
    project_dir, _ = frozen_project
    monkeypatch.setenv("FAKE_ATC_FAIL", "E10016")
    monkeypatch.setenv("FAKE_ATC_CANN8", "1")
    with pytest.raises(ToolFailedError) as info:
        convert(project_dir, soc="Ascend910A")
    record = Project(project_dir).stage("convert")
    assert info.value.exit_code == ExitCode.TOOL_FAILED
    assert str(info.value) == "atc failed (exit 255): E10016: Forced failure (FAKE_ATC_FAIL=E10016); see {}".format(
        record["log"])
    assert "\n" not in str(info.value)
    assert record["status"] == "failed" and record["error"] == str(info.value)
    assert record["exit_status"] == 255 and record["outputs"] == {}
    assert "[PID: " in (project_dir / record["log"]).read_text()


def test_convert_without_om_fails_even_after_success_line(frozen_project, with_atc, monkeypatch):
    project_dir, _ = frozen_project
    stale = project_dir / "om" / "tiny.om"
    stale.parent.mkdir()
    stale.write_bytes(b"an old model")  # must not pass for this run's output
    monkeypatch.setenv("FAKE_ATC_NO_OM", "1")
    with pytest.raises(UsageError, match=r"refusing to overwrite .*tiny\.om: it exists and no stage"):
        convert(project_dir, soc="Ascend910A")  # not mpltool's file: only with force
    with pytest.raises(ToolFailedError, match=r"atc reported success but wrote no .*om-tiny\.om; see logs/atc-"):
        convert(project_dir, soc="Ascend910A", force=True)
    assert stale.read_bytes() == b"an old model"  # nothing committed: the old file is neither passed off nor lost
    record = Project(project_dir).stage("convert")
    assert record["status"] == "failed" and record["outputs"] == {}


def test_convert_kills_a_hanging_atc_and_keeps_its_log(frozen_project, with_atc, monkeypatch, tmp_path):
    project_dir, _ = frozen_project
    pid_file = tmp_path / "atc.pid"
    monkeypatch.setenv("FAKE_ATC_SLEEP", "60")
    monkeypatch.setenv("FAKE_ATC_PID_FILE", str(pid_file))
    with pytest.raises(ToolFailedError) as info:
        convert(project_dir, soc="Ascend910A", timeout=2)
    record = Project(project_dir).stage("convert")
    assert str(info.value).startswith("atc timed out after 2 s and was killed; its output so far is in logs/atc-")
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    log = (project_dir / record["log"]).read_text().splitlines()
    assert log[1] == "ATC start working now, please wait for a moment."
    assert log[-1] == "# mpltool: killed after 2 s (timeout)"
    assert record["status"] == "failed"


# -- the stage: no atc, check-only ------------------------------------------------------------------
def test_convert_without_atc_prechecks_records_and_prints_the_command(frozen_project, clean_env, monkeypatch,
                                                                      tmp_path):
    project_dir, pb = frozen_project
    use_path(monkeypatch, make_bin(tmp_path, "npu-smi"))
    with pytest.raises(ToolMissingError) as info:
        convert(project_dir, soc="Ascend910A")
    command = "atc --model={} --framework=3 --output={} --soc_version=Ascend910A " \
              "--input_shape=\"input:1,32,32,3\"".format(pb, project_dir / "om" / "tiny")
    message = str(info.value)
    assert info.value.exit_code == ExitCode.TOOL_MISSING
    assert command in message and "source /usr/local/Ascend/ascend-toolkit/set_env.sh" in message
    assert "--atc PATH" in message
    record = Project(project_dir).stage("convert")
    assert record["status"] == "failed" and record["command"] == command
    assert record["precheck"]["ok"] is True and record["atc_path"] is None


def test_check_only_returns_and_records_the_command_without_an_om(frozen_project, clean_env, monkeypatch,
                                                                   tmp_path):
    project_dir, pb = frozen_project
    use_path(monkeypatch, make_bin(tmp_path))
    result = convert(project_dir, soc="Ascend910B3", check_only=True)
    command = "atc --model={} --framework=3 --output={} --soc_version=Ascend910B3 " \
              "--input_shape=\"input:1,32,32,3\"".format(pb, project_dir / "om" / "tiny")
    assert result["command"] == command
    assert result["precheck"]["ok"] is True and result["mode"] == "check-only"
    assert Project(project_dir).stage("convert") is None  # a check is never recorded as a conversion
    record = Project(project_dir).stage("convert-check")
    assert record["status"] == "done" and record["mode"] == "check-only" and record["command"] == command
    assert record["outputs"] == {} and record["inputs"]["pb"]["sha256"] == sha256_file(pb)
    assert not (project_dir / "om" / "tiny.om").exists()


def test_check_only_without_a_soc_prints_the_command_with_a_placeholder(frozen_project, clean_env, monkeypatch,
                                                                         tmp_path):
    project_dir, pb = frozen_project
    use_path(monkeypatch, make_bin(tmp_path, "npu-smi"))  # layout none: a host without a driver
    result = convert(project_dir, check_only=True)
    assert result["soc_version"] == "<SOC>" and result["soc_rule"].startswith("not given")
    assert result["command"] == "atc --model={} --framework=3 --output={} '--soc_version=<SOC>' " \
                                "--input_shape=\"input:1,32,32,3\"".format(pb, project_dir / "om" / "tiny")


def test_without_atc_and_soc_the_missing_toolkit_is_the_error(frozen_project, clean_env, monkeypatch, tmp_path):
    project_dir, _ = frozen_project
    use_path(monkeypatch, make_bin(tmp_path, "npu-smi"))
    with pytest.raises(ToolMissingError) as info:
        convert(project_dir)
    assert info.value.exit_code == ExitCode.TOOL_MISSING and "<SOC>" in str(info.value)


def test_with_atc_but_no_soc_the_soc_is_the_error(frozen_project, with_atc, monkeypatch):
    project_dir, _ = frozen_project
    monkeypatch.setenv("FAKE_NPU_SMI_LAYOUT", "none")
    with pytest.raises(PrerequisiteError) as info:
        convert(project_dir, toolkit_root=project_dir / "no-toolkit")
    assert info.value.exit_code == ExitCode.PREREQUISITE and "--soc" in str(info.value)


# -- the stage: prerequisites and bad input ---------------------------------------------------------
def test_convert_refuses_a_stale_pb_unless_given_explicitly(frozen_project, with_atc):
    project_dir, pb = frozen_project
    write_pb(pb, batch=2)  # re-written after the freeze record: the hash no longer matches
    with pytest.raises(PrerequisiteError) as info:
        convert(project_dir, soc="Ascend910A")
    assert info.value.exit_code == ExitCode.PREREQUISITE and "sha256 mismatch" in str(info.value)
    assert Project(project_dir).stage("convert") is None
    result = convert(project_dir, soc="Ascend910A", model=str(pb))
    assert result["io_source"] == "Placeholder in tiny.pb"
    assert argv_calls(with_atc)[-1][4] == "--input_shape=input:2,32,32,3"
    assert result["om_sha256"] == sha256_file(project_dir / "om" / "tiny.om")


def test_convert_without_freeze_stage_says_to_run_freeze(tmp_path, with_atc):
    with pytest.raises(PrerequisiteError, match="mpltool freeze"):
        convert(tmp_path / "empty-project", soc="Ascend910A")


def test_convert_rejects_a_graph_with_training_ops_before_atc(frozen_project, with_atc, tmp_path):
    project_dir, _ = frozen_project
    bad = write_pb(tmp_path / "bad.pb", bad_op="VariableV2")
    with pytest.raises(VerificationError) as info:
        convert(project_dir, soc="Ascend910A", model=str(bad))
    assert info.value.exit_code == ExitCode.VERIFICATION
    assert "VariableV2 is a variable or training-state op" in str(info.value) and "bias" in str(info.value)
    assert argv_calls(with_atc) == []
    record = Project(project_dir).stage("convert")
    assert record["status"] == "failed"
    assert "VariableV2" in [p["op"] for p in record["precheck"]["problems"]]


def test_convert_rejects_unknown_out_nodes_before_atc(frozen_project, with_atc):
    project_dir, _ = frozen_project
    with pytest.raises(VerificationError, match="output node.* not in the graph: nope"):
        convert(project_dir, soc="Ascend910A", out_nodes="nope:0")
    assert argv_calls(with_atc) == []


@pytest.mark.parametrize("kwargs, text", [
    ({"precision_mode": "fp16"}, "invalid --precision-mode 'fp16'; valid: force_fp16, force_fp32"),
    ({"log_level": "verbose"}, "invalid --log 'verbose'; valid: debug, info, warning, error, null"),
    ({"output_type": "FP64"}, "invalid --output-type 'FP64'"),
    ({"timeout": 0}, "--timeout must be a positive number"),
    ({"soc": "Ascend910b3"}, "did you mean --soc Ascend910B3?"),
])
def test_convert_usage_errors(frozen_project, with_atc, kwargs, text):
    project_dir, _ = frozen_project
    kwargs.setdefault("soc", "Ascend910A")
    with pytest.raises(UsageError) as info:
        convert(project_dir, **kwargs)
    assert text in str(info.value) and info.value.exit_code == ExitCode.USAGE
    assert argv_calls(with_atc) == []


def test_convert_refuses_a_file_that_is_not_a_graph(frozen_project, with_atc, tmp_path):
    project_dir, _ = frozen_project
    junk = tmp_path / "junk.pb"
    junk.write_text("hello\n")
    with pytest.raises(InvalidInputError):
        convert(project_dir, soc="Ascend910A", model=str(junk))


@pytest.mark.parametrize("how", ["toolkit_root", "atc"])
def test_convert_uses_a_toolkit_for_atc_and_soc(frozen_project, clean_env, monkeypatch, tmp_path, how):
    """A toolkit holding atc and one platform_config ini decides both, with no --soc and no NPU."""
    project_dir, _ = frozen_project
    use_path(monkeypatch, make_bin(tmp_path, "npu-smi"))
    toolkit = tmp_path / "ascend-toolkit" / "8.0.0"
    (toolkit / "x86_64-linux" / "bin").mkdir(parents=True)
    (toolkit / "x86_64-linux" / "bin" / "atc").symlink_to(FAKES / "atc")
    (toolkit / "x86_64-linux" / "data" / "platform_config").mkdir(parents=True)
    (toolkit / "x86_64-linux" / "data" / "platform_config" / "Ascend310P3.ini").write_text(
        "[version]\nSoC_version=Ascend310P3\n")
    kwargs = {"toolkit_root": str(toolkit)} if how == "toolkit_root" else {"atc": str(toolkit)}
    result = convert(project_dir, **kwargs)
    assert result["atc_path"] == str(toolkit / "x86_64-linux" / "bin" / "atc")
    assert result["atc_rule"] == ("default toolkit" if how == "toolkit_root" else "--atc")
    assert (result["soc_version"], result["soc_rule"]) == ("Ascend310P3", "platform_config")
    assert argv_calls(clean_env)[-1][3] == "--soc_version=Ascend310P3"


def test_supported_ops_are_never_forbidden_by_the_graphdef_rules():
    assert [op for op in sorted(verify.ATC_TF_SUPPORTED_OPS) if graphdef.rule_for(op)] == []
