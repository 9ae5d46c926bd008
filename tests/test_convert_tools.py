"""atc discovery, soc_version rules, the atc command line and output parsing, and the fakes themselves."""

import subprocess
from pathlib import Path

import pytest

from mpltool.convert import atc as atc_tool
from mpltool.convert import soc as soc_tool
from mpltool.errors import ExitCode, PrerequisiteError, ToolFailedError, ToolMissingError, UsageError

from test_convert import FAKES, make_bin, write_pb

TOOLKIT_LAYOUTS = {  # where atc and the platform_config inis live in each CANN generation
    "cann5": ("atc/bin/atc", "atc/data/platform_config"),
    "cann8": ("x86_64-linux/bin/atc", "x86_64-linux/data/platform_config"),
    "cann8-atc-dir": ("aarch64-linux/atc/bin/atc", "aarch64-linux/data/platform_config"),
    "flat": ("bin/atc", "data/platform_config"),
}


def make_toolkit(root, layout="cann8", socs=("Ascend910B3",), with_atc=True):
    atc_rel, ini_rel = TOOLKIT_LAYOUTS[layout]
    root = Path(str(root))
    if with_atc:
        (root / atc_rel).parent.mkdir(parents=True)
        (root / atc_rel).symlink_to(FAKES / "atc")
    (root / ini_rel).mkdir(parents=True, exist_ok=True)
    for soc in socs:
        (root / ini_rel / (soc + ".ini")).write_text("[version]\nSoC_version={}\nShort_SoC_version={}\n".format(
            soc, soc[:-1]))
    return root


def npu_smi_output(layout):
    return subprocess.run([str(FAKES / "npu-smi"), "info"], stdout=subprocess.PIPE, check=True,
                          env={"FAKE_NPU_SMI_LAYOUT": layout, "PATH": "/usr/bin:/bin"}).stdout.decode()


def run_fake_atc(args, cwd, **env):
    done = subprocess.run([str(FAKES / "atc")] + list(args), cwd=str(cwd), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=dict({"PATH": "/usr/bin:/bin"}, **env))
    return done.returncode, done.stdout.decode().splitlines()


# -- discovery --------------------------------------------------------------------------------------
def test_find_atc_rules_in_precedence(tmp_path):
    explicit = make_bin(tmp_path, "atc") / "atc"
    on_path = make_bin(tmp_path, "atc", "npu-smi")
    home = make_toolkit(tmp_path / "home", "cann5", socs=("Ascend910A",))
    default = make_toolkit(tmp_path / "default", "cann8", socs=("Ascend910B3", "Ascend310P3"))
    environ = {"PATH": str(on_path), "ASCEND_TOOLKIT_HOME": str(home)}

    found = atc_tool.find_atc(str(explicit), default_root=default, environ=environ)
    assert (found.path, found.rule, found.toolkit_root) == (explicit, "--atc", None)
    found = atc_tool.find_atc(None, default_root=default, environ=environ)
    assert (found.path, found.rule) == (on_path / "atc", "PATH")
    environ["PATH"] = str(make_bin(tmp_path))
    found = atc_tool.find_atc(None, default_root=default, environ=environ)
    assert (found.path, found.rule, found.toolkit_root) == (home / "atc/bin/atc", "ASCEND_TOOLKIT_HOME", home / "atc")
    del environ["ASCEND_TOOLKIT_HOME"]
    found = atc_tool.find_atc(None, default_root=default, environ=environ)
    assert (found.path, found.rule) == (default / "x86_64-linux/bin/atc", "default toolkit")
    assert found.toolkit_root == default / "x86_64-linux"
    with pytest.raises(ToolMissingError) as info:
        atc_tool.find_atc(None, default_root=tmp_path / "nowhere", environ=environ)
    assert info.value.exit_code == ExitCode.TOOL_MISSING
    assert str(info.value) == ("atc not found (not on PATH, not under $ASCEND_TOOLKIT_HOME or {}) "
                               "(`source /usr/local/Ascend/ascend-toolkit/set_env.sh` or pass --atc PATH)".format(
                                   tmp_path / "nowhere"))


@pytest.mark.parametrize("layout", sorted(TOOLKIT_LAYOUTS))
def test_atc_is_found_in_every_toolkit_layout(tmp_path, layout):
    root = make_toolkit(tmp_path / "tk", layout, socs=("Ascend310P3",))
    found = atc_tool.find_atc(None, default_root=root, environ={"PATH": str(make_bin(tmp_path))})
    assert found.path == root / TOOLKIT_LAYOUTS[layout][0]
    assert list(soc_tool.platform_config_socs(found.toolkit_root)) == ["Ascend310P3"]


def test_explicit_atc_may_name_a_directory_and_must_exist(tmp_path):
    root = make_toolkit(tmp_path / "tk", "flat")
    assert atc_tool.find_atc(str(root), environ={}).path == root / "bin/atc"
    with pytest.raises(ToolMissingError, match=r"--atc .*nope: no executable atc there"):
        atc_tool.find_atc(str(tmp_path / "nope"), environ={})


def test_toolkit_root_for_ini_files_without_atc(tmp_path):
    home = make_toolkit(tmp_path / "home", "cann8", socs=("Ascend910B4",), with_atc=False)
    default = make_toolkit(tmp_path / "default", "cann5", socs=("Ascend910A",), with_atc=False)
    assert atc_tool.default_toolkit_root(default, environ={"ASCEND_TOOLKIT_HOME": str(home)}) == home
    assert atc_tool.default_toolkit_root(default, environ={}) == default
    assert atc_tool.default_toolkit_root(tmp_path / "none", environ={}) is None


# -- soc_version ------------------------------------------------------------------------------------
def test_platform_config_names_per_cann_generation(tmp_path):
    make_toolkit(tmp_path, "cann5", socs=("Ascend910A", "Ascend310"), with_atc=False)
    make_toolkit(tmp_path, "cann8", socs=("Ascend910B3",), with_atc=False)
    cann9 = tmp_path / "aarch64-linux" / "data" / "platform_config"
    cann9.mkdir(parents=True)
    (cann9 / "Ascend910B4-1.ini").write_text("[SoCInfo]\nai_core_cnt=20\n[version]\nSoC_version=Ascend910B4\n")
    (cann9 / "Ascend310B1.ini").write_text("[SoCInfo]\nai_core_cnt=1\n")  # no [version]: the stem
    socs = soc_tool.platform_config_socs(tmp_path)
    assert list(socs) == ["Ascend310", "Ascend310B1", "Ascend910A", "Ascend910B3", "Ascend910B4"]
    assert socs["Ascend910B4"].name == "Ascend910B4-1.ini"


@pytest.mark.parametrize("layout, names", [
    ("910B", ["910B3", "910B3"]), ("910A", ["910A", "910A"]), ("310P", ["310P3"]), ("mixed", ["910B3", "910B4"]),
])
def test_npu_smi_names_from_each_layout(layout, names):
    assert soc_tool.parse_npu_smi(npu_smi_output(layout)) == names


def test_npu_smi_short_310p_rows_from_the_docs():
    text = ("| NPU     Name | Health | Power(W) |\n| Chip    Device | Bus-Id | AICore(%) Memory-Usage(MB) |\n"
            "| 0       310P3 | OK | NA |\n| 0       0 | 0000:01:00.0 | 0 |\n| 1       310P3 | OK | NA |\n")
    assert soc_tool.parse_npu_smi(text) == ["310P3", "310P3"]


@pytest.fixture
def npu_smi(tmp_path, monkeypatch):
    """Point PATH at the fake npu-smi; the test picks the layout."""
    monkeypatch.setenv("PATH", "{}:/usr/bin:/bin".format(make_bin(tmp_path, "npu-smi")))

    def layout(name):
        monkeypatch.setenv("FAKE_NPU_SMI_LAYOUT", name)
    return layout


def test_soc_argument_beats_npu_smi_and_is_validated(npu_smi, tmp_path):
    npu_smi("mixed")
    assert soc_tool.resolve_soc("Ascend910A") == ("Ascend910A", "--soc")
    toolkit = make_toolkit(tmp_path / "tk", "cann8", socs=("Ascend910B3", "Ascend310P3"), with_atc=False)
    with pytest.raises(UsageError) as info:
        soc_tool.resolve_soc("Ascend910A", toolkit_root=toolkit)  # known to ATC, but not to this toolkit
    assert str(info.value) == ("unknown soc_version 'Ascend910A' for the toolkit at {}; did you mean --soc "
                               "Ascend910B3? valid: Ascend310P3, Ascend910B3".format(toolkit))
    with pytest.raises(UsageError, match=r"did you mean --soc Ascend910B3\?"):
        soc_tool.resolve_soc("910B3")


def test_npu_smi_beats_platform_config(npu_smi, tmp_path):
    toolkit = make_toolkit(tmp_path / "tk", "cann8", socs=("Ascend910B3", "Ascend310P3"), with_atc=False)
    npu_smi("910B")
    assert soc_tool.resolve_soc(toolkit_root=toolkit) == ("Ascend910B3", "npu-smi")
    npu_smi("310P")
    assert soc_tool.resolve_soc(toolkit_root=toolkit) == ("Ascend310P3", "npu-smi")
    npu_smi("910A")
    assert soc_tool.resolve_soc() == ("Ascend910A", "npu-smi")
    with pytest.raises(PrerequisiteError, match="npu-smi reports Ascend910A but the toolkit at .* does not know"):
        soc_tool.resolve_soc(toolkit_root=toolkit)


def test_platform_config_decides_only_when_one_chip_fits(npu_smi, tmp_path):
    npu_smi("none")
    single = make_toolkit(tmp_path / "one", "cann5", socs=("Ascend310P3",), with_atc=False)
    assert soc_tool.resolve_soc(toolkit_root=single) == ("Ascend310P3", "platform_config")
    several = make_toolkit(tmp_path / "two", "cann8", socs=("Ascend910B3", "Ascend310P3"), with_atc=False)
    with pytest.raises(PrerequisiteError) as info:
        soc_tool.resolve_soc(toolkit_root=several)
    assert info.value.exit_code == ExitCode.PREREQUISITE
    assert "supports 2 chips: Ascend310P3, Ascend910B3" in str(info.value) and "pass --soc" in str(info.value)


def test_different_chips_on_one_host_are_ambiguous(npu_smi):
    npu_smi("mixed")
    with pytest.raises(PrerequisiteError) as info:
        soc_tool.resolve_soc()
    assert str(info.value) == ("cannot choose a soc_version: npu-smi reports different chips on this host: "
                               "Ascend910B3, Ascend910B4 (pass --soc with the target chip, e.g. --soc Ascend910B3)")


def test_no_npu_and_no_toolkit_lists_candidates(tmp_path):
    with pytest.raises(PrerequisiteError) as info:
        soc_tool.resolve_soc(npu_smi=str(tmp_path / "absent-npu-smi"))
    assert "candidates: Ascend910PremiumA, Ascend910ProA, Ascend910A" in str(info.value)
    assert "pass --soc" in str(info.value)


# -- the command line -------------------------------------------------------------------------------
def test_build_command_matches_the_seed_shape():
    command = atc_tool.build_command("atc", "/p/frozen/wrn.pb", "/p/om/wrn", "Ascend910A", "input", [1, 32, 32, 3])
    assert command.argv == ["atc", "--model=/p/frozen/wrn.pb", "--framework=3", "--output=/p/om/wrn",
                            "--soc_version=Ascend910A", "--input_shape=input:1,32,32,3"]
    assert command.display == ('atc --model=/p/frozen/wrn.pb --framework=3 --output=/p/om/wrn '
                               '--soc_version=Ascend910A --input_shape="input:1,32,32,3"')


def test_build_command_optional_flags_and_quoting():
    command = atc_tool.build_command("/opt/tk/bin/atc", "/p/m.pb", "/p/om/m", "Ascend310P3", "input", [4, 32, 32, 3],
                                     precision_mode="force_fp32", log_level="info", out_nodes="logits;probs:0",
                                     output_type="probs:0:FP16;logits:0:FP32")
    assert command.argv[6:] == ["--precision_mode=force_fp32", "--log=info", "--out_nodes=logits:0;probs:0",
                                "--output_type=probs:0:FP16;logits:0:FP32"]
    assert command.display.endswith('--out_nodes="logits:0;probs:0" --output_type="probs:0:FP16;logits:0:FP32"')
    assert subprocess.run(["sh", "-c", 'printf "%s\\n" ' + command.display], stdout=subprocess.PIPE,
                          check=True).stdout.decode().splitlines() == command.argv


@pytest.mark.parametrize("kwargs, text", [
    ({"model": "/my models/m.pb"}, "the model path /my models/m.pb contains ' '"),
    ({"input_shape": [-1, 32, 32, 3]}, "is not fully static"),
    ({"out_nodes": ";"}, "--out-nodes is empty"),
    ({"output_type": "probs:x:FP16"}, "invalid --output-type 'probs:x:FP16'"),
    ({"precision_mode": "mixed"}, "invalid --precision-mode 'mixed'"),
])
def test_build_command_refuses_what_atc_would(kwargs, text):
    args = dict({"atc": "atc", "model": "/p/m.pb", "output": "/p/om/m", "soc_version": "Ascend910A",
                 "input_name": "input", "input_shape": [1, 32, 32, 3]}, **kwargs)
    with pytest.raises(UsageError) as info:
        atc_tool.build_command(**args)
    assert text in str(info.value)


# -- reading atc's output ---------------------------------------------------------------------------
ATC_FAILURE = """ATC start working now, please wait for a moment.
ATC run failed, Please check the detail log, Try 'atc --help' for more information
E10016: Opname [nope] specified in [--out_nodes] is not found in the model. Confirm whether this node name exists.
EZ3003: [PID: 1] 2025-03-18-09:02:18.501.341 No supported Ops kernel and engine are found for [rnd], optype [RandomUniform].
        Possible Cause: The operator is not supported by the system.
        TraceBack (most recent call last):
EZ3003: [PID: 1] 2025-03-18-09:02:18.501.341 No supported Ops kernel and engine are found for [rnd], optype [RandomUniform].
E19999: Inner Error!
W11001: a warning, not an error
""".splitlines()


def test_parse_errors_reads_plain_and_cann8_forms_once_each():
    assert atc_tool.parse_errors(ATC_FAILURE) == [
        ("E10016", "Opname [nope] specified in [--out_nodes] is not found in the model. Confirm whether this node "
                   "name exists."),
        ("EZ3003", "No supported Ops kernel and engine are found for [rnd], optype [RandomUniform]."),
        ("E19999", "Inner Error!"),
    ]
    assert atc_tool.parse_errors(["E10007: [PID: 7] 2025-03-18-09:02:18.501.341 [--framework] is required."]) == [
        ("E10007", "[--framework] is required.")]


def test_failure_summary_is_one_line_with_first_code_and_count():
    run = atc_tool.AtcRun(255, ATC_FAILURE, False, 1.0, 900, Path("logs/atc.log"))
    assert atc_tool.failure_summary(run, "logs/atc.log") == (
        "atc failed (exit 255): E10016: Opname [nope] specified in [--out_nodes] is not found in the model. Confirm "
        "whether this node name exists (+2 more); see logs/atc.log")
    silent = atc_tool.AtcRun(1, ["ATC start working now, please wait for a moment.", "..", "Segmentation fault"],
                             False, 1.0, 900, Path("x.log"))
    assert atc_tool.failure_summary(silent, "x.log") == (
        "atc failed (exit 1): no error code in its output; last line: Segmentation fault; see x.log")


def test_check_run_needs_exit_zero_and_the_success_line_and_the_om(tmp_path):
    om = tmp_path / "m.om"
    quiet = atc_tool.AtcRun(0, ["ATC start working now, please wait for a moment."], False, 1.0, 900, None)
    with pytest.raises(ToolFailedError, match="atc exited 0 without printing 'ATC run success"):
        atc_tool.check_run(quiet, om, "x.log")
    ok = atc_tool.AtcRun(0, [atc_tool.SUCCESS_LINE], False, 1.0, 900, None)
    with pytest.raises(ToolFailedError, match="wrote no"):
        atc_tool.check_run(ok, om, "x.log")
    om.write_bytes(b"om")
    atc_tool.check_run(ok, om, "x.log")


def test_version_is_read_only_when_atc_reports_it():
    assert atc_tool.parse_version(["ATC start working now", "ATC version: 7.0.RC1"]) == "7.0.RC1"
    assert atc_tool.parse_version(["CANN version=8.0.0"]) == "8.0.0"
    assert atc_tool.parse_version(ATC_FAILURE) is None
    assert atc_tool.query_version(FAKES / "atc") is None  # the fake, like old builds, has no --version


# -- running the fake through run_atc ---------------------------------------------------------------
def test_run_atc_streams_lines_and_parses_e10016(tmp_path):
    pb = write_pb(tmp_path / "m.pb")
    command = atc_tool.build_command(FAKES / "atc", pb, tmp_path / "om" / "m", "Ascend910A", "input", [1, 32, 32, 3],
                                     out_nodes="nope:0")
    seen = []
    run = atc_tool.run_atc(command.argv, tmp_path / "work", tmp_path / "logs" / "a.log", 30, progress=seen.append)
    assert run.exit_status == 255 and not run.timed_out
    assert seen == run.lines == (tmp_path / "logs" / "a.log").read_text().splitlines()[1:]
    with pytest.raises(ToolFailedError) as info:
        atc_tool.check_run(run, tmp_path / "om" / "m.om", "logs/a.log")
    assert str(info.value) == (
        "atc failed (exit 255): E10016: Opname [nope] specified in [--out_nodes] is not found in the model. Confirm "
        "whether this node name exists, or the node is not split with the specified delimiter ';'; see logs/a.log")


def test_run_atc_reports_unsupported_ops_as_ez3003(tmp_path):
    pb = write_pb(tmp_path / "bad.pb", bad_op="RandomUniform")
    command = atc_tool.build_command(FAKES / "atc", pb, tmp_path / "bad", "Ascend910A", "input", [1, 32, 32, 3])
    run = atc_tool.run_atc(command.argv, tmp_path, tmp_path / "b.log", 30)
    assert run.lines[1] == "ATC run failed, Please check the detail log, Try 'atc --help' for more information"
    with pytest.raises(ToolFailedError) as info:
        atc_tool.check_run(run, tmp_path / "bad.om", "b.log")
    assert str(info.value) == ("atc failed (exit 255): EZ3003: No supported Ops kernel and engine are found for "
                               "[noise/RandomUniform], optype [RandomUniform]; see b.log")


# -- the fake atc follows the real check order ------------------------------------------------------
def test_fake_atc_checks_required_arguments_in_atc_order(tmp_path):
    pb = write_pb(tmp_path / "m.pb")
    code, out = run_fake_atc([], tmp_path)
    assert (code, out[0], out[2][:7]) == (255, "ATC start working now, please wait for a moment.", "E10007:")
    code, out = run_fake_atc(["--framework=3", "--model={}".format(pb)], tmp_path)
    assert out[2].startswith("E10054: The requied parameter [--soc_version] for ATC is empty.")
    code, out = run_fake_atc(["--framework=3", "--soc_version=Ascend910A", "--output=x"], tmp_path)
    assert out[2].startswith("E10054: The requied parameter [--model]")
    code, out = run_fake_atc(["--framework=3", "--soc_version=Ascend910A", "--output=x", "--model=gone.pb"], tmp_path)
    assert out[2].endswith("realpath error, errmsg:No such file or directory") and out[2].startswith("E10001:")
    base = ["--framework=3", "--model={}".format(pb), "--output=out"]
    assert run_fake_atc(base + ["--soc_version=Ascend999"], tmp_path)[1][2].startswith(
        "E10001: Value [Ascend999] for parameter [--soc_version] is invalid.")
    assert run_fake_atc(base + ["--soc_version=Ascend910A", "--input_shape=1,32,32,3"], tmp_path)[1][2].startswith(
        "E10002:")
    assert run_fake_atc(base + ["--soc_version=Ascend910A", "--log=loud"], tmp_path)[1][2].startswith("E10010:")


def test_fake_atc_accepts_space_separated_values_and_needs_static_inputs(tmp_path):
    pb = write_pb(tmp_path / "m.pb")
    code, out = run_fake_atc(["--framework", "3", "--model", str(pb), "--output", "out", "--soc_version",
                              "Ascend910A", "--input_shape", "input:1,32,32,3"], tmp_path)
    assert (code, out[-1]) == (0, atc_tool.SUCCESS_LINE)
    assert (tmp_path / "out.om").is_file() and (tmp_path / "fusion_result.json").is_file()
    dynamic = write_pb(tmp_path / "d.pb", batch=None)
    code, out = run_fake_atc(["--framework=3", "--model={}".format(dynamic), "--output=d",
                              "--soc_version=Ascend910A"], tmp_path)
    assert (code, out[2]) == (255, "E10001: Value [-1] for parameter [Inputs] is invalid. Reason: maybe you should "
                                   "set input_shape to specify its shape")
