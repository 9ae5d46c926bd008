"""MixMatch through the same seams as every algorithm: a round-robin split with validation records,
train -> resume -> eval -> freeze (parity) -> convert --check-only, and the reference's report (median of
the last N test accuracies) kept across sessions."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cifar_fixtures import make_cifar_dir
from helpers import freeze_and_check_conversion, invoke, manifest, sets
from mpltool.algorithms import get_algorithm
from mpltool.data.splits import round_robin
from mpltool.data.cifar import read_indices as read_labelled_indices
from mpltool.train.trainer import csv_columns

pytestmark = pytest.mark.slow  # trains: `make test-fast` skips it

# mixmatch-demo shrunk to seconds: a two-scale MixMatch ResNet, 4 labelled + 4 unlabelled (x2 views) a step.
RUN = ["model=mixmatch-resnet-8-2-1", "batch_size=4", "eval_batch_size=16", "shuffle_buffer=64",
       "num_train_steps=4", "save_every=2", "eval_every=2", "log_every=2", "mixmatch_rampup_kimg=1"]


@pytest.fixture(scope="module")
def round_robin_project(tmp_path_factory):
    """5 x 20 training records split as cifar10.1@20-10: 20 labelled, 10 validation, 70 unlabelled."""
    root = tmp_path_factory.mktemp("mixmatch")
    source = make_cifar_dir(root / "src", test_records=37, seed=6)
    project = root / "p"
    prepared = invoke("--project", project, "--json", "data", "prepare", "--cifar", source, "--recipe",
                      "mixmatch-demo", "--split", "cifar10.1@20-10")
    assert prepared.exit_code == 0, prepared.stderr
    return project


def _ema_top1_history(project):
    with open(str(project / "logs" / "metrics.csv")) as handle:
        return [float(r["ema_top1"]) for r in csv.DictReader(handle) if r["ema_top1"]]


def test_mixmatch_demo_trains_resumes_evaluates_freezes_and_converts(round_robin_project):
    project = round_robin_project
    split = manifest(project)["stages"]["data"]["split"]
    assert (split["method"], split["name"], split["num_valid"]) == ("round-robin", "cifar10.1@20-10", 10)

    trained = invoke("--project", project, "--json", "train", "--recipe", "mixmatch-demo", "--device", "cpu",
                     *sets(base=RUN))
    assert trained.exit_code == 0, trained.stderr
    record = manifest(project)["stages"]["train"]
    # The prepared split was adopted, and the unlabelled stream is the recorded one.
    assert (record["params"]["split"], record["params"]["num_labelled"], record["params"]["num_valid"],
            record["params"]["split_seed"]) == ("round-robin", 20, 10, 1)
    assert record["inputs"]["unlabelled_indices"]["sha256"] == \
        manifest(project)["stages"]["data"]["outputs"]["unlabelled_indices"]["sha256"]
    assert record["network"]["input_spec"]["mean"] == [0.5, 0.5, 0.5]
    with open(str(project / "logs" / "metrics.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == csv_columns(get_algorithm("mixmatch"))
    evals = [r for r in rows if r["ema_top1"]]
    assert [int(r["step"]) for r in evals] == [2, 4]
    # Validation accuracy is a count over the 10 validation records.
    assert all(float(r["ema_valid_top1"]) * 10 == pytest.approx(round(float(r["ema_valid_top1"]) * 10))
               for r in evals)
    assert record["metrics"]["ema_valid_top1"] == float(evals[-1]["ema_valid_top1"])
    # The L2 weight ramps over 1 kimg = 256 steps of 4 labelled images, from the images seen before the
    # step: the 2nd step has seen 4, the 4th 12.
    assert [float(r["match_weight"]) for r in rows if r["loss"]] == pytest.approx([100 * 4 / 1024, 100 * 12 / 1024])

    resumed = invoke("--project", project, "--json", "train", "--extend-steps", "2", "--device", "cpu")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps_done"] == 6
    history = _ema_top1_history(project)
    assert len(history) == 3  # both sessions' evaluations count
    metrics = manifest(project)["stages"]["train"]["metrics"]
    for window in (1, 10, 20, 50):
        assert metrics["ema_top1_median{}".format(window)] == pytest.approx(float(np.median(history[-window:])))

    evaluated = invoke("--project", project, "--json", "eval")
    assert evaluated.exit_code == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["source"]["target"] == "ema"
    assert result["training_medians"]["last20"] == pytest.approx(float(np.median(history)))
    plain = invoke("--project", project, "eval")
    assert "median test top-1 of the last N evaluations" in plain.stdout

    freeze_and_check_conversion(project)


def test_the_seed_recipe_runs_and_resumes_on_a_cifar_directory(tmp_path):
    """mixmatch-cifar10-250 itself (the 1.47M-parameter network, B = 64, K = 2) on CIFAR-format files:
    the split is the recipe's round-robin with 250 labels (validation shrunk to fit 1,000 records)."""
    source = make_cifar_dir(tmp_path / "src", train_records=(200,) * 5, test_records=20, seed=8)
    project = tmp_path / "p"
    prepared = invoke("--project", project, "data", "prepare", "--cifar", source, "--recipe", "mixmatch-cifar10-250",
                      "--valid", "100")
    assert prepared.exit_code == 0, prepared.stderr
    _, labels = _train_labels(source)
    expected = round_robin(labels, 250, 100, seed=3)
    np.testing.assert_array_equal(read_labelled_indices(project / "data" / "labelled_indices.txt"), expected.labelled)
    steps = ["num_train_steps=1", "save_every=1", "eval_every=1", "eval_batch_size=20"]
    trained = invoke("--project", project, "--json", "train", "--recipe", "mixmatch-cifar10-250", "--device", "cpu",
                     *sets(base=steps))
    assert trained.exit_code == 0, trained.stderr
    resumed = invoke("--project", project, "--json", "train", "--extend-steps", "1", "--device", "cpu")
    assert resumed.exit_code == 0, resumed.stderr
    record = manifest(project)["stages"]["train"]
    assert record["steps_done"] == 2 and record["recipe"] == "mixmatch-cifar10-250"
    assert record["params"]["model"] == "mixmatch-resnet-32-3-4" and record["params"]["num_valid"] == 100


def _train_labels(source):
    from mpltool.data.cifar import TRAIN_FILES, read_images

    return read_images([Path(source) / name for name in TRAIN_FILES])
