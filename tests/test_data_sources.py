"""The data-source seam: a source added by one module and its registration (tests/toy_source.py) is
prepared, trained on, evaluated, frozen and converted, and shown by status, predict and the report, with no
line of data/stage.py, train/, eval/, freeze/, convert/, predict.py or report/ knowing it."""

import json

import numpy as np
import pytest
import yaml

import toy_source  # noqa: F401  (registers the source)
from helpers import TINY, freeze_and_check_conversion, invoke
from mpltool.data import stage as data_stage
from mpltool.data.sources import get_source, source_names
from mpltool.errors import InvalidInputError, UsageError
from mpltool.manifest import MANIFEST_NAME, Project

pytestmark = pytest.mark.slow  # trains


def write_npz(folder, seed=0, train=24, test=12):
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True)
    for name, count in (("train", train), ("test", test)):
        labels = np.arange(count) % 3
        images = rng.randint(0, 256, (count, 32, 32, 3)).astype(np.uint8)
        images[..., 0] = (80 * labels)[:, None, None]  # the red channel says the class
        np.savez(str(folder / "{}.npz".format(name)), images=images, labels=labels)
    (folder / "classes.txt").write_text("red0 red80 red160\n")
    return folder


def test_the_registered_source_is_found_and_bad_input_is_refused_before_anything_is_written(tmp_path):
    assert "toy-npz" in source_names() and get_source("toy-npz").name == "toy-npz"
    with pytest.raises(UsageError, match="unknown data source 'nope'"):
        data_stage.prepare(tmp_path / "p", tmp_path, kind="nope")
    with pytest.raises(UsageError, match="num_labelled do not apply to npz folders"):
        data_stage.prepare(tmp_path / "p", tmp_path, kind="toy-npz", options={"num_labelled": 3})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.npz").write_bytes(b"not an npz")
    with pytest.raises(InvalidInputError, match="train.npz is not an npz"):
        data_stage.prepare(tmp_path / "p", tmp_path / "bad", kind="toy-npz", recipe="supervised-demo")
    assert Project(tmp_path / "p").stage("data") is None


def test_a_new_source_runs_the_whole_lifecycle(tmp_path):
    source = write_npz(tmp_path / "npz")
    project = tmp_path / "p"
    result = data_stage.prepare(project, source, kind="toy-npz", recipe="supervised-demo")
    assert result["source"] == "toy-npz" and result["train_records"] == 24 and result["test_records"] == 12
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["data"]
    assert record["source"] == "toy-npz" and set(record["outputs"]) == {"train_npz", "test_npz", "classes_txt"}

    run = ["num_classes=3", "num_train_steps=4", "save_every=2", "eval_every=2", "log_every=2", "batch_size=4"]
    settings = [t for pair in [p for p in TINY if p.split("=")[0] in ("model", "eval_batch_size", "lr_warmup_steps",
                                                                       "shuffle_buffer")] + run
                for t in ("--set", pair)]
    trained = invoke("--project", project, "--json", "train", "--recipe", "supervised-demo", "--device", "cpu",
                     *settings)
    assert trained.exit_code == 0, trained.stderr
    train_record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["train"]
    assert set(train_record["inputs"]) == {"train_npz", "test_npz", "classes_txt"}
    assert train_record["steps_done"] == 4

    evaluated = invoke("--project", project, "--json", "eval")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["images"] == 12
    freeze_and_check_conversion(project, parity_images=6)
    status = invoke("--project", project, "--json", "status")
    assert status.exit_code == 0 and json.loads(status.stdout)["ok"] is True

    png = tmp_path / "one.png"
    from mpltool.tfv1 import tf

    with tf.Session(graph=tf.Graph()) as session:
        png.write_bytes(session.run(tf.image.encode_png(np.full((32, 32, 3), 80, np.uint8))))
    predicted = invoke("--project", project, "--json", "predict", png, "--top-k", "3")
    assert predicted.exit_code == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    assert answer["class_names"] == "classes.txt"
    assert sorted(t["name"] for t in answer["predictions"][0]["top"]) == ["red0", "red160", "red80"]

    reported = invoke("--project", project, "--json", "report", "--samples", "0")
    assert reported.exit_code == 0, reported.stderr
    page = (project / "report" / "index.html").read_text()
    assert "<th>format</th><td>npz</td>" in page and "red0, red80, red160" in page
    assert json.loads(reported.stdout)["predictions"]["top1"] == json.loads(evaluated.stdout)["top1"]
