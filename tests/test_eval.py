"""eval: every test image counted once; metrics equal a numpy recomputation; sources chosen and hash-checked."""

import shutil

import numpy as np
import pytest

from mpltool.data.cifar import write_cifar_file
from mpltool.errors import ExitCode, MpltoolError
from mpltool.eval.metrics import evaluate_logits_fn, metrics_from_logits
from mpltool.eval.stage import evaluate
from mpltool.manifest import Project

from checkpoint_fixtures import LABEL_SMOOTHING, make_trained_project, reference_logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_project(tmp_path_factory.mktemp("eval-project"))


@pytest.fixture
def project_copy(trained, tmp_path):
    """A private copy for tests that damage files (manifest paths are project-relative)."""
    target = tmp_path / "project"
    shutil.copytree(str(trained["dir"]), str(target))
    return target


def exit_code_of(excinfo):
    assert isinstance(excinfo.value, MpltoolError)
    return excinfo.value.exit_code


def numpy_metrics(logits, labels, smoothing):
    """Independent formulas: sorted top-k membership and explicit smoothed targets."""
    logits = logits.astype(np.float64)
    count, classes = logits.shape
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    log_probs = logits - logits.max(axis=1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    targets = np.full((count, classes), smoothing / classes)
    targets[np.arange(count), labels] += 1.0 - smoothing
    return {
        "correct_top1": int((logits.argmax(axis=1) == labels).sum()),
        "correct_top5": int(sum(labels[i] in top5[i] for i in range(count))),
        "loss": float(-(targets * log_probs).sum(axis=1).mean()),
        "nll": float(-log_probs[np.arange(count), labels].mean()),
    }


# -- metric code -------------------------------------------------------------------------------------

def test_every_image_is_scored_once_with_a_short_last_batch():
    images = np.arange(37, dtype=np.float32).reshape(37, 1)
    labels = np.arange(37) % 10
    seen_batches = []

    def predict(batch):
        seen_batches.append(batch[:, 0].astype(int).tolist())
        logits = np.zeros((len(batch), 10), np.float32)
        # image i predicts class i % 10 for even i, (i + 1) % 10 for odd i: exactly 19 of 37 right
        ids = batch[:, 0].astype(int)
        logits[np.arange(len(batch)), (ids + ids % 2) % 10] = 5.0
        return logits

    progress = []
    result = evaluate_logits_fn(predict, images, labels, batch_size=10, progress=lambda d, t: progress.append((d, t)))
    assert [len(b) for b in seen_batches] == [10, 10, 10, 7]
    assert sum(seen_batches, []) == list(range(37))
    assert result["images"] == 37
    assert result["correct_top1"] == 19
    assert result["top1"] == pytest.approx(19 / 37)
    assert progress == [(10, 37), (20, 37), (30, 37), (37, 37)]


def test_metrics_from_logits_exact_values():
    logits = np.array([[3.0, 2, 1, 0, -1, -2],      # label 0: top-1
                       [3.0, 2, 1, 0, -1, -2],      # label 4: 5th -> top-5 only
                       [3.0, 2, 1, 0, -1, -2]])     # label 5: 6th -> neither
    labels = np.array([0, 4, 5])
    result = metrics_from_logits(logits, labels, label_smoothing=0.3)
    assert (result["correct_top1"], result["correct_top5"]) == (1, 2)
    assert result["top1"] == pytest.approx(1 / 3)
    assert result["top5"] == pytest.approx(2 / 3)
    expected = numpy_metrics(logits, labels, 0.3)
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-12)
    assert result["nll"] == pytest.approx(expected["nll"], rel=1e-12)
    log_z = np.log(np.exp(logits[0]).sum())
    assert result["nll"] == pytest.approx(np.mean([log_z - 3.0, log_z + 1.0, log_z + 2.0]), rel=1e-12)


def test_predictor_returning_wrong_row_count_is_refused():
    with pytest.raises(ValueError, match="3 images"):
        evaluate_logits_fn(lambda b: np.zeros((len(b) + 1, 10)), np.zeros((3, 1)), np.zeros(3, int), 5)


# -- the stage ---------------------------------------------------------------------------------------

def test_eval_checkpoint_metrics_equal_numpy_recomputation(trained):
    result = evaluate(trained["dir"], target="ema", batch_size=10)
    best = trained["best_ema"]
    logits = reference_logits(best["prefix"], "ema", trained["images"])
    expected = numpy_metrics(logits, trained["labels"], LABEL_SMOOTHING)
    assert result["images"] == 37
    assert result["correct_top1"] == expected["correct_top1"]
    assert result["correct_top5"] == expected["correct_top5"]
    assert result["top1"] == expected["correct_top1"] / 37
    assert result["top5"] == expected["correct_top5"] / 37
    assert result["loss"] == pytest.approx(expected["loss"], abs=1e-5)
    assert result["nll"] == pytest.approx(expected["nll"], abs=1e-5)
    assert result["loss"] != pytest.approx(result["nll"], abs=1e-3)  # the smoothing really applies
    assert result["source"] == {"kind": "checkpoint", "target": "ema", "prefix": "checkpoints/best-ema/model.ckpt-3",
                                "step": 3, "chosen": "best"}
    record = Project(trained["dir"]).stage("eval")
    assert record["status"] == "done"
    assert record["metrics"]["correct_top1"] == expected["correct_top1"]
    assert record["params"]["batch_size"] == 10
    assert [f["path"] for f in record["inputs"]["checkpoint"]["files"]] == [
        f["path"] for f in best["record"]["files"]]
    assert record["inputs"]["test_batch"]["sha256"] == trained["test_record"]["sha256"]


def test_eval_without_best_falls_back_to_latest_and_uses_recipe_batch(trained):
    result = evaluate(trained["dir"], target="student")
    assert result["source"]["prefix"] == "checkpoints/model.ckpt-5"
    assert result["source"]["chosen"] == "latest"
    assert result["batch_size"] == 16  # the recorded recipe's eval_batch_size
    logits = reference_logits(trained["latest"]["prefix"], "student", trained["images"])
    assert result["correct_top1"] == numpy_metrics(logits, trained["labels"], LABEL_SMOOTHING)["correct_top1"]


def test_eval_explicit_checkpoint_directory(trained):
    result = evaluate(trained["dir"], target="teacher", model=str(trained["dir"] / "checkpoints"), batch_size=8)
    logits = reference_logits(trained["latest"]["prefix"], "teacher", trained["images"])
    expected = numpy_metrics(logits, trained["labels"], LABEL_SMOOTHING)
    assert result["source"]["step"] == 5 and result["source"]["chosen"] == "path"
    assert result["loss"] == pytest.approx(expected["loss"], abs=1e-5)


# -- bad input ---------------------------------------------------------------------------------------

def test_recorded_checkpoint_changed_is_exit_4(project_copy):
    data_file = next((project_copy / "checkpoints" / "best-ema").glob("model.ckpt-3.data-*"))
    raw = bytearray(data_file.read_bytes())
    raw[100] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    with pytest.raises(MpltoolError) as excinfo:
        evaluate(project_copy)
    assert exit_code_of(excinfo) == ExitCode.PREREQUISITE
    assert "changed" in str(excinfo.value)


def test_no_train_stage_is_exit_4_naming_train(tmp_path):
    project = Project(tmp_path)
    path = tmp_path / "test_batch.bin"
    write_cifar_file(path, np.zeros((3, 32, 32, 3), np.uint8), np.array([0, 1, 2]))
    with project.stage_run("data", {}) as run:
        run.outputs["test_batch"] = project.file_record(path)
    with pytest.raises(MpltoolError) as excinfo:
        evaluate(tmp_path)
    assert exit_code_of(excinfo) == ExitCode.PREREQUISITE
    assert "mpltool train" in str(excinfo.value)
    assert project.stage("eval") is None


def test_no_data_stage_is_exit_4_naming_data_prepare(tmp_path):
    with pytest.raises(MpltoolError) as excinfo:
        evaluate(tmp_path)
    assert exit_code_of(excinfo) == ExitCode.PREREQUISITE
    assert "mpltool data prepare" in str(excinfo.value)


@pytest.mark.parametrize("content", [b"this is not a protobuf \xff\xfe", b""], ids=["garbage", "empty"])
def test_not_a_graphdef_is_exit_3(trained, tmp_path, content):
    bogus = tmp_path / "model.pb"
    bogus.write_bytes(content)
    with pytest.raises(MpltoolError) as excinfo:
        evaluate(trained["dir"], model=str(bogus))
    assert exit_code_of(excinfo) == ExitCode.INVALID_INPUT
    assert "GraphDef" in str(excinfo.value)


def test_missing_or_corrupt_explicit_checkpoint_is_exit_3(trained, tmp_path):
    with pytest.raises(MpltoolError) as excinfo:
        evaluate(trained["dir"], model=str(tmp_path / "nowhere" / "model.ckpt-9"))
    assert exit_code_of(excinfo) == ExitCode.INVALID_INPUT
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for path in (trained["dir"] / "checkpoints").glob("model.ckpt-5.*"):
        shutil.copy(str(path), str(copy / path.name))
    (copy / "model.ckpt-5.index").write_bytes(b"garbage" * 10)
    with pytest.raises(MpltoolError) as excinfo:
        evaluate(trained["dir"], model=str(copy / "model.ckpt-5"))
    assert exit_code_of(excinfo) == ExitCode.INVALID_INPUT


def test_unknown_target_is_usage_error(trained):
    with pytest.raises(MpltoolError) as excinfo:
        evaluate(trained["dir"], target="ema2")
    assert exit_code_of(excinfo) == ExitCode.USAGE
