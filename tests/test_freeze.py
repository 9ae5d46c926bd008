"""freeze: the .pb holds the checkpoint's weights (not initial ones), no training ops, and matches the checkpoint."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpltool.errors import ExitCode, MpltoolError, VerificationError
from mpltool.eval.stage import evaluate
from mpltool.freeze import stage as freeze_stage
from mpltool.freeze.graph import check_frozen_graph
from mpltool.freeze.stage import freeze
from mpltool.graphdef import forbidden_ops
from mpltool.manifest import Project
from mpltool.manifest.files import sha256_file
from mpltool.models import build_model
from mpltool.models.inference import build_inference_graph, read_graph_def
from mpltool.tfv1 import tf

from checkpoint_fixtures import (CIFAR_MEAN, CIFAR_STD, MODEL, logits_from_values, make_trained_project,
                                 reference_logits)

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_project(tmp_path_factory.mktemp("freeze-project"))


@pytest.fixture(scope="module")
def frozen(trained):
    """The default freeze (best EMA, batch 1, all 37 test images in the parity check)."""
    result = freeze(trained["dir"], parity_images=0)
    return dict(result, record=Project(trained["dir"]).stage("freeze"))


@pytest.fixture
def project_copy(trained, tmp_path):
    target = tmp_path / "project"
    shutil.copytree(str(trained["dir"]), str(target))
    return target


def run_graph_def(graph_def, images):
    """Plain import_graph_def + session, one image at a time (the .pb's static batch is 1)."""
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        with tf.Session() as session:
            return np.concatenate([session.run("logits:0", {"input:0": images[i:i + 1].astype(np.float32)})
                                   for i in range(len(images))])


def exit_code_of(excinfo):
    assert isinstance(excinfo.value, MpltoolError)
    return excinfo.value.exit_code


# -- the written graph -------------------------------------------------------------------------------

def test_freeze_writes_a_clean_pb_and_records_it(trained, frozen):
    pb = trained["dir"] / "frozen" / "{}-ema-step3.pb".format(MODEL)
    assert frozen["pb"] == str(pb) and pb.is_file()
    graph_def = read_graph_def(pb)
    ops = {node.op for node in graph_def.node}
    placeholders = [node.name for node in graph_def.node if node.op.startswith("Placeholder")]
    assert placeholders == ["input"]
    assert not [op for op in ops if op.startswith(("Variable", "Assign", "Random")) or "Ref" in op
                or op in ("Switch", "Merge", "IteratorGetNext")]
    assert forbidden_ops(graph_def) == []
    # training-only attributes (layers.leaky_relu's gradient override) never reach a deployable graph
    assert not [node.name for node in graph_def.node if any(key.startswith("_") for key in node.attr)]
    record = frozen["record"]
    assert record["status"] == "done"
    assert record["outputs"]["pb"] == {"path": "frozen/{}-ema-step3.pb".format(MODEL), "size": pb.stat().st_size,
                                       "sha256": sha256_file(pb)}
    assert record["source"]["prefix"] == "checkpoints/best-ema/model.ckpt-3"
    assert record["source"]["step"] == 3 and record["source"]["target"] == "ema"
    assert [f["sha256"] for f in record["inputs"]["checkpoint"]["files"]] == [
        f["sha256"] for f in trained["best_ema"]["record"]["files"]]
    io = record["io"]
    assert io["input_name"] == "input" and io["input_shape"] == [1, 32, 32, 3] and io["input_dtype"] == "float32"
    assert io["output_names"] == ["logits", "probs"]
    assert io["output_shapes"] == [[1, 10], [1, 10]] and io["output_dtypes"] == ["float32", "float32"]
    assert io["normalisation"]["inside_graph"] is True
    assert io["normalisation"]["mean"] == pytest.approx(list(CIFAR_MEAN))
    assert io["normalisation"]["std"] == pytest.approx(list(CIFAR_STD))
    assert record["parity"]["images"] == 37
    assert record["parity"]["max_abs_logit_diff"] <= 1e-4
    assert record["parity"]["top1_agreement"] == 1.0
    assert record["weights_checked"] == len([n for n in trained["initial"] if n.startswith("ema/")])


def test_pb_carries_the_checkpoints_weights_not_the_initial_ones(trained, frozen):
    graph_def = read_graph_def(frozen["pb"])
    pb_logits = run_graph_def(graph_def, trained["images"])
    checkpoint_logits = reference_logits(trained["best_ema"]["prefix"], "ema", trained["images"])
    initial_logits = logits_from_values(trained["initial"], "ema", trained["images"])
    latest_logits = reference_logits(trained["latest"]["prefix"], "ema", trained["images"])
    assert np.max(np.abs(pb_logits - checkpoint_logits)) < 1e-4
    assert np.max(np.abs(pb_logits - initial_logits)) > 0.1
    assert np.max(np.abs(pb_logits - latest_logits)) > 0.1  # and it is the recorded best, not the latest
    reader = tf.train.NewCheckpointReader(trained["best_ema"]["prefix"])
    constants = {node.name: tf.make_ndarray(node.attr["value"].tensor) for node in graph_def.node if node.op == "Const"}
    moving = [name for name in constants if name.startswith("ema/") and name.endswith("moving_variance")]
    assert moving
    for name in moving:
        assert np.array_equal(constants[name], reader.get_tensor(name))
        assert not np.array_equal(constants[name], trained["initial"][name])


def test_plain_tensorflow_script_reproduces_the_checkpoint(trained, frozen, tmp_path):
    images_path = tmp_path / "images.npy"
    np.save(str(images_path), trained["images"])
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(
        [sys.executable, str(TESTS_DIR / "load_pb_plain.py"), frozen["pb"], str(images_path), str(tmp_path / "out.npz")],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert completed.returncode == 0, completed.stderr.decode()[-2000:]
    report = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    assert report["mpltool_loaded"] is False
    assert report["images"] == 37 and report["batch"] == 1
    checkpoint_logits = reference_logits(trained["best_ema"]["prefix"], "ema", trained["images"])
    assert report["predictions"] == checkpoint_logits.argmax(axis=1).tolist()
    out = np.load(str(tmp_path / "out.npz"))
    assert np.max(np.abs(out["logits"] - checkpoint_logits)) < 1e-4
    assert np.allclose(out["probs"].sum(axis=1), 1.0, atol=1e-5)


def test_eval_of_the_pb_matches_eval_of_the_checkpoint(trained, frozen):
    from_checkpoint = evaluate(trained["dir"], target="ema", batch_size=10)
    from_pb = evaluate(trained["dir"], model=frozen["pb"], batch_size=10)  # a batch-1 graph, run at batch 10
    assert from_pb["images"] == from_checkpoint["images"] == 37
    assert from_pb["correct_top1"] == from_checkpoint["correct_top1"]
    assert from_pb["correct_top5"] == from_checkpoint["correct_top5"]
    assert from_pb["loss"] == pytest.approx(from_checkpoint["loss"], abs=1e-5)
    assert from_pb["source"] == {"kind": "pb", "path": "frozen/{}-ema-step3.pb".format(MODEL),
                                 "sha256": sha256_file(frozen["pb"]), "chosen": "path"}
    assert Project(trained["dir"]).stage("eval")["inputs"]["pb"]["sha256"] == sha256_file(frozen["pb"])


def test_static_batch_4_latest_student_with_partial_last_batch(trained, tmp_path):
    output = tmp_path / "student.pb"
    result = freeze(trained["dir"], checkpoint="latest", target="student", batch=4, output=str(output),
                    parity_images=0)
    assert result["io"]["input_shape"] == [4, 32, 32, 3]
    assert result["io"]["output_shapes"] == [[4, 10], [4, 10]]
    assert result["source"]["step"] == 5 and result["parity"]["images"] == 37  # 9 full batches + 1 padded
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(read_graph_def(output), name="")
        with tf.Session() as session:
            logits = session.run("logits:0", {"input:0": trained["images"][:4].astype(np.float32)})
    expected = reference_logits(trained["latest"]["prefix"], "student", trained["images"][:4])
    assert np.max(np.abs(logits - expected)) < 1e-4


def test_parity_images_limits_the_check(trained, tmp_path):
    result = freeze(trained["dir"], target="teacher", checkpoint=str(trained["dir"] / "checkpoints"),
                    output=str(tmp_path / "t.pb"), parity_images=5)
    assert result["parity"]["images"] == 5
    assert result["source"]["chosen"] == "path" and result["source"]["step"] == 5


# -- the op check ------------------------------------------------------------------------------------

def _graph_def_with(build):
    with tf.Graph().as_default() as graph:
        build()
        return graph.as_graph_def()


def test_op_check_rejects_switch_and_variables():
    def with_switch():
        x = tf.placeholder(tf.float32, [1, 3], name="input")
        flag = tf.constant(True)
        y = tf.cond(flag, lambda: x * 2.0, lambda: x)
        tf.identity(y, name="logits")
        tf.identity(y, name="probs")

    def with_variable():
        x = tf.placeholder(tf.float32, [1, 3], name="input")
        w = tf.Variable(tf.ones([3]), name="w")
        tf.identity(x * w, name="logits")
        tf.identity(x, name="probs")

    def with_training_flag():
        x = tf.placeholder(tf.float32, [1, 3], name="input")
        tf.placeholder(tf.bool, [], name="is_training")
        tf.identity(x, name="logits")
        tf.identity(x, name="probs")

    for build, named in ((with_switch, "Switch"), (with_variable, "VariableV2"), (with_training_flag, "is_training")):
        with pytest.raises(VerificationError) as excinfo:
            check_frozen_graph(_graph_def_with(build), "test.pb")
        assert excinfo.value.exit_code == ExitCode.VERIFICATION == 7
        assert named in str(excinfo.value)


def test_op_check_rejects_an_unfrozen_graph_and_one_without_input():
    def unfrozen():
        build_inference_graph(build_model(MODEL, 10, 0.0), "ema", batch_size=1)

    found_ops = {offence.op for offence in forbidden_ops(_graph_def_with(unfrozen))}
    assert {"VariableV2", "Assign", "RandomStandardNormal", "RandomUniform"} <= found_ops  # variables + initializers
    with pytest.raises(VerificationError, match="no placeholder named 'input'"):
        check_frozen_graph(_graph_def_with(lambda: tf.identity(tf.constant(1.0), name="logits")), "x.pb")


# -- verification failures ---------------------------------------------------------------------------

@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf")])
def test_tolerance_outside_its_range_is_a_usage_error(project_copy, tolerance):
    before = (project_copy / "mpltool.yaml").read_bytes()
    with pytest.raises(MpltoolError, match="--tolerance must be a finite number >= 0") as excinfo:
        freeze(project_copy, tolerance=tolerance, parity_images=3)
    assert exit_code_of(excinfo) == ExitCode.USAGE
    assert (project_copy / "mpltool.yaml").read_bytes() == before


@pytest.mark.parametrize("batch,images", [(100000, 1000), (38, 0), (5, 4)])
def test_batch_larger_than_the_parity_images_is_a_usage_error(project_copy, batch, images):
    before = (project_copy / "mpltool.yaml").read_bytes()
    with pytest.raises(MpltoolError, match="--batch") as excinfo:
        freeze(project_copy, batch=batch, parity_images=images)
    assert exit_code_of(excinfo) == ExitCode.USAGE
    assert (project_copy / "mpltool.yaml").read_bytes() == before


def _tampering(change):
    real = freeze_stage.freeze_graph_def

    def tampered(session, graph):
        graph_def = real(session, graph)
        change(graph_def)
        return graph_def
    return tampered


def test_graph_that_computes_something_else_fails_parity(frozen, project_copy, monkeypatch):
    # `frozen` first: the copy must hold a good freeze record for the failed run to leave in place
    def add_offset_to_logits(graph_def):
        logits = next(node for node in graph_def.node if node.name == "logits")
        offset = graph_def.node.add()
        offset.name, offset.op = "tamper/offset", "Const"
        offset.attr["dtype"].type = tf.float32.as_datatype_enum
        offset.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.float32(0.01)))
        add = graph_def.node.add()
        add.name, add.op = "tamper/add", "Add"
        add.attr["T"].type = tf.float32.as_datatype_enum
        add.input.extend([logits.input[0], "tamper/offset"])
        logits.input[0] = "tamper/add"

    monkeypatch.setattr(freeze_stage, "freeze_graph_def", _tampering(add_offset_to_logits))
    project = Project(project_copy)
    good = project.stage("freeze")["outputs"]["pb"]
    good_bytes = project.path(good["path"]).read_bytes()
    with pytest.raises(VerificationError, match="parity check failed") as excinfo:
        freeze(project_copy, parity_images=4, output=project.path(good["path"]))
    assert excinfo.value.exit_code == 7
    record = project.stage("freeze")
    assert record["status"] == "failed" and "parity" in record["error"]
    assert record["parity"]["passed"] is False and record["parity"]["images"] == 4
    assert record["parity"]["max_abs_logit_diff"] == pytest.approx(0.01, abs=1e-4)
    # The verified .pb stays in place and recorded; the rejected one is kept beside it for inspection.
    assert record["outputs"]["pb"] == good and project.path(good["path"]).read_bytes() == good_bytes
    rejected = project.path(good["path"][:-len(".pb")] + ".rejected.pb")
    assert rejected.is_file() and rejected.read_bytes() != good_bytes
    assert str(rejected) in str(excinfo.value)


def test_pb_with_a_changed_weight_is_refused(project_copy, monkeypatch):
    def change_a_moving_mean(graph_def):
        node = next(n for n in graph_def.node if n.op == "Const" and n.name.endswith("moving_mean"))
        value = tf.make_ndarray(node.attr["value"].tensor) + 0.5
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))

    monkeypatch.setattr(freeze_stage, "freeze_graph_def", _tampering(change_a_moving_mean))
    with pytest.raises(VerificationError, match="does not carry the checkpoint's weights") as excinfo:
        freeze(project_copy, parity_images=4, output=project_copy / "changed.pb")
    assert not (project_copy / "changed.pb").exists()  # never renamed into place
    assert not list((project_copy / ".mpltool-staging").glob("*"))  # nor left staged
    assert "moving_mean" in str(excinfo.value)


# -- bad input ---------------------------------------------------------------------------------------

def test_missing_checkpoint_path_is_exit_3(trained, tmp_path):
    with pytest.raises(MpltoolError) as excinfo:
        freeze(trained["dir"], checkpoint=str(tmp_path / "no" / "model.ckpt-1"))
    assert exit_code_of(excinfo) == ExitCode.INVALID_INPUT


def _copy_checkpoint(trained, directory):
    directory.mkdir()
    for path in Path(trained["latest"]["prefix"]).parent.glob("model.ckpt-5.*"):
        shutil.copy(str(path), str(directory / path.name))
    return directory / "model.ckpt-5"


def test_truncated_checkpoint_data_is_exit_3(trained, tmp_path):
    prefix = _copy_checkpoint(trained, tmp_path / "ckpt")
    data = next(prefix.parent.glob("model.ckpt-5.data-*"))
    data.write_bytes(data.read_bytes()[:100])  # ema/ sorts first: cut inside the variables freeze needs
    manifest_before = (trained["dir"] / "mpltool.yaml").read_bytes()
    with pytest.raises(MpltoolError) as excinfo:
        freeze(trained["dir"], checkpoint=str(prefix), output=str(tmp_path / "x.pb"))
    assert exit_code_of(excinfo) == ExitCode.INVALID_INPUT
    assert (trained["dir"] / "mpltool.yaml").read_bytes() == manifest_before


def test_garbage_checkpoint_index_is_exit_3(trained, tmp_path):
    prefix = _copy_checkpoint(trained, tmp_path / "ckpt")
    Path(str(prefix) + ".index").write_bytes(os.urandom(200))
    with pytest.raises(MpltoolError) as excinfo:
        freeze(trained["dir"], checkpoint=str(prefix), output=str(tmp_path / "x.pb"))
    assert exit_code_of(excinfo) == ExitCode.INVALID_INPUT


def test_checkpoint_missing_a_variable_is_exit_3_naming_it(trained, tmp_path):
    prefix = tmp_path / "partial" / "model.ckpt"
    with tf.Graph().as_default():
        build_model(MODEL, 10, 0.0)(tf.placeholder(tf.float32, [None, 32, 32, 3]), training=False, scope="ema")
        left_out = "ema/{}/head/bn/moving_variance".format(MODEL)
        kept = [v for v in tf.global_variables() if v.op.name != left_out]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            saved = tf.train.Saver(kept).save(session, str(prefix), global_step=1, write_meta_graph=False)
    with pytest.raises(MpltoolError) as excinfo:
        freeze(trained["dir"], checkpoint=saved, output=str(tmp_path / "x.pb"))
    assert exit_code_of(excinfo) == ExitCode.INVALID_INPUT
    assert left_out in str(excinfo.value)
    with pytest.raises(MpltoolError) as excinfo:
        freeze(trained["dir"], checkpoint=saved, target="teacher", output=str(tmp_path / "x.pb"))
    assert exit_code_of(excinfo) == ExitCode.INVALID_INPUT
    assert "no network under 'teacher/'" in str(excinfo.value)


def test_recorded_checkpoint_changed_is_exit_4(project_copy):
    index = project_copy / "checkpoints" / "model.ckpt-5.index"
    index.write_bytes(index.read_bytes() + b"\0")
    with pytest.raises(MpltoolError) as excinfo:
        freeze(project_copy, checkpoint="latest")
    assert exit_code_of(excinfo) == ExitCode.PREREQUISITE


def test_no_train_stage_is_exit_4_naming_train(project_copy):
    project = Project(project_copy)
    data = project.load()
    del data["stages"]["train"]
    project.write(data)
    with pytest.raises(MpltoolError) as excinfo:
        freeze(project_copy)
    assert exit_code_of(excinfo) == ExitCode.PREREQUISITE
    assert "mpltool train" in str(excinfo.value)


@pytest.mark.parametrize("kwargs", [{"batch": 0}, {"parity_images": -1}, {"target": "best"}, {"tolerance": "x"}])
def test_bad_options_are_usage_errors(trained, kwargs):
    with pytest.raises(MpltoolError) as excinfo:
        freeze(trained["dir"], **kwargs)
    assert exit_code_of(excinfo) == ExitCode.USAGE
