"""`export --format onnx`: the frozen .pb through tf2onnx, checked and parity-checked in onnxruntime against the
.pb; `convert --model X.onnx` (atc --framework=5) with its ONNX pre-check; every registered network family."""

import json
import shutil
import sys

import numpy as np
import pytest

from mpltool.convert import onnx_check
from mpltool.models import onnx_file, verify
from mpltool.convert.stage import convert
from mpltool.errors import ExitCode, MpltoolError
from mpltool.models import onnx_runtime as runtime
from mpltool.export.stage import export
from mpltool.freeze.graph import freeze_graph_def
from mpltool.freeze.stage import freeze
from mpltool.manifest import Project
from mpltool.manifest.files import sha256_file
from mpltool.models import build_model
from mpltool.models.inference import FrozenModel, build_inference_graph, read_graph_def
from mpltool.tfv1 import tf

from checkpoint_fixtures import make_trained_project
from helpers import invoke, manifest
from test_convert import argv_calls, clean_env, make_bin, use_path  # noqa: F401  (clean_env is a fixture)

onnxruntime = pytest.importorskip("onnxruntime")  # the `onnx` extra; make test installs it


@pytest.fixture(scope="module")
def frozen_project(tmp_path_factory):
    """A trained-looking wrn-10-1 project (checkpoint_fixtures) frozen at batch 1 with its parity check."""
    trained = make_trained_project(tmp_path_factory.mktemp("export-project"))
    freeze(trained["dir"], parity_images=8)
    return trained


@pytest.fixture(scope="module")
def exported(frozen_project):
    """`mpltool --json export --format onnx --parity-images 0` on it: all 37 test images."""
    result = invoke("--project", frozen_project["dir"], "--json", "export", "--format", "onnx", "--parity-images", 0)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def project_copy(frozen_project, exported, tmp_path):
    target = tmp_path / "project"
    shutil.copytree(str(frozen_project["dir"]), str(target))
    return target


def ort_logits(onnx_path, images):
    """onnxruntime on its own, one image a run (the .onnx keeps the .pb's static batch of 1)."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    rows = [session.run(["logits", "probs"], {"input": images[i:i + 1].astype(np.float32)}) for i in range(len(images))]
    return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])


def pb_logits(pb_path, images):
    with FrozenModel(read_graph_def(pb_path), str(pb_path), any_batch=True) as model:
        return model.predict(images.astype(np.float32))


# -- the stage on a frozen project ------------------------------------------------------------------
def test_export_records_the_onnx_and_parity_numbers_a_numpy_comparison_reproduces(frozen_project, exported):
    project_dir = frozen_project["dir"]
    record = manifest(project_dir)["stages"]["export"]
    freeze_record = manifest(project_dir)["stages"]["freeze"]
    onnx_path = project_dir / record["outputs"]["onnx"]["path"]
    assert record["status"] == "done" and exported["onnx"] == str(onnx_path)
    assert onnx_path.name == freeze_record["outputs"]["pb"]["path"].split("/")[-1][:-3] + ".onnx"
    assert record["outputs"]["onnx"]["sha256"] == sha256_file(onnx_path) == exported["sha256"]
    assert record["inputs"]["pb"] == freeze_record["outputs"]["pb"]  # the recorded .pb, hash-checked
    assert "test_batch" in record["inputs"]
    assert record["io"]["input_name"] == "input" and record["io"]["input_shape"] == [1, 32, 32, 3]
    assert record["io"]["output_names"] == ["logits", "probs"] and record["io"]["input_dtype"] == "float32"
    assert record["onnx"]["opset"] == 11 and record["onnx"]["opsets"][""] == 11
    assert set(record["onnx_stack"]) == {"tf2onnx", "onnx", "onnxruntime"}

    images = frozen_project["images"]
    onnx_out, probs = ort_logits(onnx_path, images)
    expected = pb_logits(project_dir / freeze_record["outputs"]["pb"]["path"], images)
    max_diff = float(np.max(np.abs(onnx_out.astype(np.float64) - expected)))
    agreement = float(np.mean(onnx_out.argmax(1) == expected.argmax(1)))
    parity = record["parity"]
    assert parity["images"] == 37 and parity["passed"] is True and parity["tolerance"] == 1e-3
    assert parity["max_abs_logit_diff"] == pytest.approx(max_diff, abs=1e-9)
    assert parity["top1_agreement"] == agreement == 1.0
    assert record["metrics"]["max_abs_logit_diff"] == parity["max_abs_logit_diff"] and max_diff < 1e-4
    shifted = np.exp(onnx_out - onnx_out.max(1, keepdims=True))
    np.testing.assert_allclose(probs, shifted / shifted.sum(1, keepdims=True), atol=1e-6)
    # onnx's own reader and mpltool's protobuf reader agree on the file
    import onnx

    model = onnx.load(str(onnx_path))
    mine = onnx_file.read_onnx(onnx_path)
    assert [n.op_type for n in model.graph.node] == [n["op"] for n in mine["nodes"]]
    assert mine["opsets"] == {o.domain: o.version for o in model.opset_import}
    assert mine["ir_version"] == model.ir_version
    assert [(i["name"], i["shape"]) for i in onnx_file.graph_inputs(mine)] == [("input", [1, 32, 32, 3])]


def test_convert_check_only_of_the_onnx_prints_framework_5(frozen_project, exported, clean_env):
    project_dir = frozen_project["dir"]
    result = invoke("--project", project_dir, "convert", "--model", exported["onnx"], "--check-only",
                    "--soc", "Ascend910A")
    assert result.exit_code == 0, result.stderr
    command = "atc --model={} --framework=5 --output={} --soc_version=Ascend910A --input_shape=\"input:1,32,32,3\"" \
        .format(exported["onnx"], project_dir / "om" / "wrn-10-1-ema-step3")
    assert command in result.stdout
    checked = json.loads(invoke("--project", project_dir, "--json", "convert", "--model", exported["onnx"],
                                "--check-only", "--soc", "Ascend910A").stdout)
    assert checked["framework"] == 5 and checked["onnx_sha256"] == exported["sha256"] and "pb" not in checked
    assert checked["precheck"]["ok"] is True and checked["precheck"]["input"]["input_shape"] == [1, 32, 32, 3]
    assert set(checked["precheck"]["op_counts"]) <= verify.ATC_ONNX_SUPPORTED_OPS
    record = manifest(project_dir)["stages"]["convert-check"]
    assert record["framework"] == 5 and record["inputs"]["onnx"]["sha256"] == exported["sha256"]


def test_convert_of_the_frozen_pb_is_still_framework_3(project_copy, clean_env):
    result = convert(project_copy, soc="Ascend910A", check_only=True)
    pb = manifest(project_copy)["stages"]["freeze"]["outputs"]["pb"]
    assert result["framework"] == 3 and "--framework=3" in result["command"] and "onnx" not in result
    assert result["pb"] == pb["path"] and result["pb_sha256"] == pb["sha256"]
    assert manifest(project_copy)["stages"]["convert-check"]["inputs"]["pb"]["sha256"] == pb["sha256"]


def test_convert_of_the_onnx_through_the_fake_atc_records_the_om(project_copy, clean_env, monkeypatch, tmp_path):
    use_path(monkeypatch, make_bin(tmp_path, "atc", "npu-smi"))
    onnx_path = project_copy / manifest(project_copy)["stages"]["export"]["outputs"]["onnx"]["path"]
    result = convert(project_copy, model=onnx_path, soc="Ascend910A")
    assert argv_calls(clean_env)[0][:2] == ["--model={}".format(onnx_path), "--framework=5"]
    record = manifest(project_copy)["stages"]["convert"]
    assert record["status"] == "done" and record["framework"] == 5
    assert record["inputs"]["onnx"]["sha256"] == sha256_file(onnx_path) == result["onnx_sha256"]
    om = project_copy / record["outputs"]["om"]["path"]
    assert om.read_bytes().startswith(b"FAKE-OM\x00Ascend910A\x00")


def test_parity_over_tolerance_is_exit_7_and_records_no_passing_stage(project_copy, monkeypatch):
    before = manifest(project_copy)["stages"]["export"]
    onnx_path = project_copy / before["outputs"]["onnx"]["path"]
    original = onnx_path.read_bytes()
    real_run = runtime.OnnxModel._run
    monkeypatch.setattr(runtime.OnnxModel, "_run", lambda self, images: real_run(self, images) + 0.01)
    result = invoke("--project", project_copy, "export", "--format", "onnx", "--parity-images", 5)
    assert result.exit_code == ExitCode.VERIFICATION == 7
    assert result.stderr.startswith("error: parity check failed: the ONNX model differs from frozen/")
    assert "tolerance 0.001) on 5 test images" in result.stderr and len(result.stderr.splitlines()) == 1
    record = manifest(project_copy)["stages"]["export"]
    assert record["status"] == "failed" and record["parity"]["passed"] is False
    assert record["parity"]["max_abs_logit_diff"] == pytest.approx(0.01, abs=1e-4)
    assert onnx_path.read_bytes() == original  # the earlier passing file was not replaced
    assert onnx_path.with_name(onnx_path.stem + ".rejected.onnx").is_file()
    # a tolerance no cross-runtime comparison can meet, with the runtime's real output: exit 7 as well
    monkeypatch.setattr(runtime.OnnxModel, "_run", lambda self, images: real_run(self, images) + 1e-6)
    impossible = invoke("--project", project_copy, "export", "--format", "onnx", "--tolerance", 0,
                        "--parity-images", 3)
    assert impossible.exit_code == 7 and "tolerance 0)" in impossible.stderr


def test_missing_stack_is_exit_5_naming_the_extra(project_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # `import tf2onnx` now raises ImportError
    result = invoke("--project", project_copy, "--json", "export", "--format", "onnx")
    assert result.exit_code == ExitCode.TOOL_MISSING == 5
    error = json.loads(result.stdout)
    assert error["error"] == "export --format onnx needs tf2onnx, not installed"
    assert "install the extra `onnx`" in error["hint"] and "'.[onnx]'" in error["hint"]
    assert manifest(project_copy)["stages"]["export"]["status"] == "done"  # the earlier record stands
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    onnx_path = project_copy / manifest(project_copy)["stages"]["export"]["outputs"]["onnx"]["path"]
    png = project_copy / "x.png"
    with tf.Graph().as_default(), tf.Session() as session:
        png.write_bytes(session.run(tf.image.encode_png(np.zeros((4, 4, 3), np.uint8))))
    predicted = invoke("--project", project_copy, "predict", png, "--model", onnx_path)
    assert predicted.exit_code == 5 and "running an .onnx model needs onnxruntime, not installed" in predicted.stderr


@pytest.mark.parametrize("args, complaint", [
    (["--output", "model.txt"], "is not a file name ending in .onnx"),
    (["--opset", "9"], "--opset 9 is outside 11..15"),
    (["--tolerance", "-1"], "--tolerance must be a finite number >= 0"),
    (["--model", "nothere.pb"], "no frozen graph at"),
    (["--model", "frozen.onnx"], "export --model must be a frozen graph (.pb), not an ONNX model"),
])
def test_bad_options_are_usage_or_input_errors(project_copy, args, complaint):
    result = invoke("--project", project_copy, "export", "--format", "onnx", *args)
    assert result.exit_code in (2, 3) and complaint in result.stderr, result.stderr


def test_a_changed_pb_is_exit_4_and_a_project_without_freeze_names_it(project_copy, prepared_copy):
    pb = project_copy / manifest(project_copy)["stages"]["freeze"]["outputs"]["pb"]["path"]
    pb.write_bytes(pb.read_bytes() + b"\x00")
    changed = invoke("--project", project_copy, "export", "--format", "onnx")
    assert changed.exit_code == 4 and "changed since the manifest recorded it" in changed.stderr
    missing = invoke("--project", prepared_copy, "export", "--format", "onnx")
    assert missing.exit_code == 4 and "run `mpltool freeze` first" in missing.stderr


def test_onnx_precheck_flags_ops_outside_the_list_and_a_foreign_opset(tmp_path, clean_env):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["input"], ["r"], name="relu"),
             helper.make_node("NonMaxSuppression", ["r", "r"], ["logits"], name="nms")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.INT64, None)])
    path = tmp_path / "odd.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]).SerializeToString())
    report = onnx_check.precheck_onnx(onnx_file.read_onnx(path), "input", None, ["logits", "probs"])
    assert [p["kind"] for p in report["problems"]] == ["unsupported_op", "opset", "output"]
    assert report["problems"][0]["message"] == "NonMaxSuppression is not in the ATC ONNX op list: nms"
    assert report["input"]["input_shape"] == [1, 4] and report["op_counts"] == {"NonMaxSuppression": 1, "Relu": 1}
    result = invoke("--project", tmp_path / "p", "convert", "--model", path, "--check-only")
    assert result.exit_code == 7 and "fails the ATC pre-check: NonMaxSuppression" in result.stderr
    assert "re-run `mpltool export --format onnx`" in result.stderr
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xff\xff\xff not protobuf")
    unreadable = invoke("--project", tmp_path / "p", "convert", "--model", garbage, "--check-only")
    assert unreadable.exit_code == 3 and "is not an ONNX model" in unreadable.stderr


# -- every network family ---------------------------------------------------------------------------
def family_pb(path, name, num_classes=10):
    """A frozen graph of a freshly initialised `name` (batch 1), its batch norms given non-trivial statistics."""
    rng = np.random.RandomState(3)
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(5)
        build_inference_graph(build_model(name, num_classes=num_classes, dropout_rate=0.0), "ema", 1)
        variables = tf.global_variables()
        with tf.Session(graph=graph) as session:
            session.run(tf.variables_initializer(variables))
            for variable in variables:
                shape = variable.shape.as_list()
                if variable.op.name.endswith("moving_variance"):
                    variable.load(rng.uniform(0.5, 2.0, shape).astype(np.float32), session)
                elif variable.op.name.endswith(("moving_mean", "beta", "bias")):
                    variable.load(rng.normal(0.0, 0.2, shape).astype(np.float32), session)
            graph_def = freeze_graph_def(session, graph)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph_def.SerializeToString())
    return path


@pytest.fixture(scope="module")
def alexnet_project(tmp_path_factory):
    """Image folders prepared at 57x57 (Caffe AlexNet's smallest input), `cartoon` held out by a train record."""
    from mpltool.data.domains import write_domain_demo

    root = tmp_path_factory.mktemp("alexnet")
    write_domain_demo(root / "src", per_domain=10)
    recipe = root / "tiny.yaml"
    recipe.write_text("algorithm: masf\nmodel: caffe-alexnet-57-16\nnum_classes: 10\ntarget_domain: cartoon\n")
    prepared = invoke("--project", root / "p", "data", "prepare", "--images", root / "src", "--recipe", recipe)
    assert prepared.exit_code == 0, prepared.stderr
    with Project(root / "p").stage_run("train", {"target_domain": "cartoon"}):
        pass
    return root / "p"


@pytest.mark.parametrize("name, ops", [
    ("wrn-10-1", {"Conv", "BatchNormalization", "LeakyRelu", "GlobalAveragePool"}),
    ("mixmatch-resnet-8-2-1", {"Conv", "LeakyRelu"}),
    ("resnet18-cifar-2", {"Conv", "Relu", "GlobalAveragePool"}),
    ("caffe-alexnet-57-16", {"LRN", "Split", "Concat", "MaxPool"}),  # grouped convs and the BGR reversal
])
def test_every_family_exports_with_parity(name, ops, frozen_project, alexnet_project, tmp_path):
    project_dir = alexnet_project
    if not name.startswith("caffe"):  # 32x32 networks: the CIFAR-format test set of a copy
        project_dir = tmp_path / "project"
        shutil.copytree(str(frozen_project["dir"]), str(project_dir))
    pb = family_pb(tmp_path / "{}.pb".format(name), name)
    result = export(project_dir, model=pb, output=tmp_path / "{}.onnx".format(name), parity_images=0)
    parity = result["parity"]
    assert parity["passed"] is True and parity["top1_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 1e-4
    assert ops <= set(result["model"]["op_counts"]), result["model"]["op_counts"]
    assert set(result["model"]["op_counts"]) <= verify.ATC_ONNX_SUPPORTED_OPS
    from mpltool.data.records import at_input_size
    from mpltool.data.stage import load_test_set
    from mpltool.models import input_spec

    # Image folders are decoded at the network's input size (57x57 here), as export's check reads them.
    images = np.asarray(at_input_size(load_test_set(Project(project_dir))[0], input_spec(name).shape))
    onnx_out, _ = ort_logits(result["onnx"], images)
    assert parity["images"] == len(images)
    assert parity["max_abs_logit_diff"] == pytest.approx(
        float(np.max(np.abs(onnx_out.astype(np.float64) - pb_logits(pb, images)))), abs=1e-9)
    assert manifest(project_dir)["stages"]["export"]["source"]["chosen"] == "path"


def test_export_function_is_the_library_entry(frozen_project):
    with pytest.raises(MpltoolError) as info:
        export(frozen_project["dir"], format="tflite")
    assert info.value.exit_code == 2 and "unknown export format 'tflite'" in str(info.value)


def test_eval_and_the_report_open_the_exported_onnx_through_the_one_resolver(project_copy):
    """`eval --model X.onnx` scores the exported file (the same resolver and model interface as a
    checkpoint or a .pb): the same top-1 as the .pb's eval; and the report shows the export stage."""
    from helpers import invoke

    record = manifest(project_copy)["stages"]
    onnx_path = project_copy / record["export"]["outputs"]["onnx"]["path"]
    pb_path = project_copy / record["freeze"]["outputs"]["pb"]["path"]
    scores = {}
    for name, path in (("onnx", onnx_path), ("pb", pb_path)):
        result = invoke("--project", project_copy, "--json", "eval", "--model", path)
        assert result.exit_code == 0, result.stderr
        scores[name] = json.loads(result.stdout)
    assert scores["onnx"]["source"]["kind"] == "onnx" and scores["onnx"]["images"] == scores["pb"]["images"] == 37
    assert scores["onnx"]["correct_top1"] == scores["pb"]["correct_top1"]
    assert abs(scores["onnx"]["loss"] - scores["pb"]["loss"]) < 1e-5
    assert manifest(project_copy)["stages"]["eval"]["inputs"]["pb"]["sha256"] == sha256_file(pb_path)
    reported = invoke("--project", project_copy, "--json", "report", "--samples", "0")
    assert reported.exit_code == 0, reported.stderr
    page = (project_copy / "report" / "index.html").read_text()
    assert '<section id="export"><h2>Export</h2>' in page and "Parity: ONNX model vs frozen graph" in page
    assert '<a href="#export">Export</a>' in page
