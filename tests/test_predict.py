"""`predict IMAGE...`: image files of any size through the project's model (checkpoint, .pb or .onnx), decoded
and resized as `data prepare --images` does, top-k class names and probabilities; bad files are exit 3."""

import json
import shutil

import numpy as np
import pytest

from mpltool.data.stage import load_test_set
from mpltool.errors import ExitCode
from mpltool.manifest import Project
from mpltool.models.inference import CheckpointModel
from mpltool.predict import class_names, predict, softmax
from mpltool.tfv1 import tf

from cifar_fixtures import CLASS_NAMES
from helpers import TINY, invoke, manifest, sets

# test_algorithms.py's tiny run: supervised wrn-10-1, four steps.
RUN = [p for p in TINY if p.split("=")[0] not in ("num_labelled", "student_lr_wait_steps", "student_lr_warmup_steps")
       ] + ["num_train_steps=4", "save_every=2", "eval_every=2", "log_every=2"]


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """The prepared CIFAR-format project (its batches.meta.txt names the classes) after a tiny training."""
    project = tmp_path_factory.mktemp("predict") / "p"
    shutil.copytree(str(prepared), str(project))
    result = invoke("--project", project, "train", "--recipe", "supervised-demo", "--device", "cpu",
                    *sets(base=RUN, algorithm="supervised"))
    assert result.exit_code == 0, result.stderr
    return project


@pytest.fixture(scope="module")
def fixture_project(tmp_path_factory):
    """checkpoint_fixtures' trained-looking wrn-10-1 project: made in seconds, no training, no class names."""
    from checkpoint_fixtures import make_trained_project

    return make_trained_project(tmp_path_factory.mktemp("predict-fixture"))["dir"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


def encode(image, kind="png"):
    with tf.Graph().as_default(), tf.Session() as session:
        encoder = tf.image.encode_png if kind == "png" else tf.image.encode_jpeg
        return session.run(encoder(tf.constant(np.asarray(image, np.uint8))))


def best_ema_probabilities(project, images):
    """The recorded best EMA checkpoint run directly on raw uint8 images (what eval scores)."""
    train = manifest(project)["stages"]["train"]
    prefix = str(project / train["checkpoints"]["best"]["ema"]["prefix"])
    from mpltool.checkpoints import checkpoint_variables

    with CheckpointModel(prefix, "ema", checkpoint_variables(prefix), network=train["network"]) as model:
        return softmax(model.predict(images.astype(np.float32)))


@pytest.mark.slow  # the `trained` fixture trains
def test_a_png_of_a_test_image_gives_the_probabilities_of_the_prepared_record(trained, files):
    images = load_test_set(Project(trained))[0][:3]
    paths = []
    for index, image in enumerate(images):
        paths.append(files / "test{}.png".format(index))
        paths[-1].write_bytes(encode(image))
    result = predict(trained, paths, top_k=10)
    expected = best_ema_probabilities(trained, images)
    assert result["model"]["kind"] == "checkpoint" and result["model"]["target"] == "ema"
    assert result["model"]["chosen"] == "best" and result["input_size"] == [32, 32]
    assert result["class_names"] == "batches.meta.txt" and result["classes"] == 10 and result["top_k"] == 10
    for row, item, path in zip(expected, result["predictions"], paths):
        assert item["image"] == str(path) and (item["height"], item["width"]) == (32, 32)
        got = np.zeros(10)
        for top in item["top"]:
            got[top["class"]] = top["probability"]
            assert top["name"] == CLASS_NAMES[top["class"]]
        np.testing.assert_allclose(got, row, atol=1e-5)
        assert [t["class"] for t in item["top"]] == list(np.argsort(-row, kind="stable"))


@pytest.mark.slow  # the `trained` fixture trains
def test_a_100x60_jpeg_is_resized_as_data_prepare_does_and_predicted(trained, files):
    rng = np.random.RandomState(2)
    smooth = np.kron(rng.randint(0, 256, (6, 10, 3)), np.ones((10, 10, 1)))  # 60 high, 100 wide
    jpeg = files / "wide.jpg"
    jpeg.write_bytes(encode(smooth, "jpeg"))
    result = predict(trained, [jpeg], top_k=5)
    item = result["predictions"][0]
    assert (item["width"], item["height"]) == (100, 60) and len(item["top"]) == 5
    # the expected input: TensorFlow's JPEG decoder, TF2's antialiased bilinear resize to 32x32, rounded
    from tensorflow.compat import v2 as tf2

    with tf.Graph().as_default(), tf.Session() as session:
        decoded = tf.image.decode_jpeg(jpeg.read_bytes(), channels=3)
        resized = tf2.image.resize(tf.cast(decoded, tf.float32), (32, 32), method="bilinear", antialias=True)
        pixels = session.run(tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8))
    expected = best_ema_probabilities(trained, pixels[None])[0]
    for top in item["top"]:
        assert top["probability"] == pytest.approx(expected[top["class"]], abs=1e-5)
    assert [t["class"] for t in item["top"]] == list(np.argsort(-expected, kind="stable")[:5])


@pytest.mark.slow  # the `trained` fixture trains
def test_top_k_3_prints_3_classes_in_descending_probability(trained, files):
    png = files / "k3.png"
    png.write_bytes(encode(load_test_set(Project(trained))[0][5]))
    result = invoke("--project", trained, "predict", png, "--top-k", 3)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "{} (32x32):".format(png) and lines[1].split() == ["rank", "class", "probability"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["1", "2", "3"] and all(r[1] in CLASS_NAMES for r in rows)
    probabilities = [float(r[2]) for r in rows]
    assert probabilities == sorted(probabilities, reverse=True) and len(rows) == 3


def test_json_output_shape(fixture_project, files):
    png = files / "json.png"
    png.write_bytes(encode(load_test_set(Project(fixture_project))[0][7]))
    result = invoke("--project", fixture_project, "--json", "predict", png, png, "--top-k", 2, "--model", "latest")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"project", "model", "input_size", "classes", "class_names", "top_k", "predictions"}
    assert data["model"]["chosen"] == "latest" and data["model"]["step"] == 5 and data["top_k"] == 2
    assert data["class_names"] == "none" and data["classes"] == 10
    first, second = data["predictions"]
    # One image twice in one batch: the same classes; probabilities equal to float32 rounding (oneDNN's
    # convolutions may block a batch's rows differently).
    assert [t["class"] for t in first["top"]] == [t["class"] for t in second["top"]]
    assert [t["probability"] for t in first["top"]] == pytest.approx([t["probability"] for t in second["top"]], abs=1e-6)
    item = data["predictions"][0]
    assert set(item) == {"image", "height", "width", "top"}
    assert [set(t) for t in item["top"]] == [{"class", "name", "probability"}] * 2
    assert item["top"][0]["name"] == "class {}".format(item["top"][0]["class"])
    assert item["top"][0]["probability"] >= item["top"][1]["probability"]


@pytest.mark.parametrize("name, content, message", [
    ("truncated.png", "half", "image {} does not decode: Invalid PNG data"),
    ("empty.png", b"", "image {} is empty (0 bytes)"),
    ("notes.png", b"not an image at all", "image {} does not decode:"),
    ("missing.png", None, "cannot read image {}: no such file"),
])
def test_bad_images_are_exit_3_naming_the_file_in_one_line(fixture_project, files, name, content, message):
    path = files / name
    if content == "half":
        data = encode(load_test_set(Project(fixture_project))[0][0])
        content = data[:len(data) // 2]
    if content is not None:
        path.write_bytes(content)
    good = files / "good.png"
    good.write_bytes(encode(np.zeros((8, 8, 3))))
    result = invoke("--project", fixture_project, "predict", good, path)
    assert result.exit_code == ExitCode.INVALID_INPUT == 3
    assert result.stderr.startswith("error: " + message.format(path)) and len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.slow  # the `trained` fixture trains
def test_frozen_and_onnx_models_give_the_checkpoints_probabilities(trained, files, tmp_path):
    pytest.importorskip("onnxruntime")
    project = tmp_path / "p"
    shutil.copytree(str(trained), str(project))
    frozen = invoke("--project", project, "--json", "freeze", "--parity-images", 4)
    assert frozen.exit_code == 0, frozen.stderr
    exported = invoke("--project", project, "--json", "export", "--format", "onnx", "--parity-images", 4)
    assert exported.exit_code == 0, exported.stderr
    image = load_test_set(Project(project))[0][11]
    png = files / "three-ways.png"
    png.write_bytes(encode(image))
    expected = best_ema_probabilities(project, image[None])[0]
    for model in (json.loads(frozen.stdout)["pb"], json.loads(exported.stdout)["onnx"]):
        result = predict(project, [png], model=model, top_k=10)
        assert result["model"]["kind"] == model.rsplit(".", 1)[1] and result["input_size"] == [32, 32]
        got = np.zeros(10)
        for top in result["predictions"][0]["top"]:
            got[top["class"]] = top["probability"]
        np.testing.assert_allclose(got, expected, atol=1e-5)
    wrong = invoke("--project", project, "predict", png, "--model", json.loads(frozen.stdout)["pb"], "--target", "ema")
    assert wrong.exit_code == 2 and "--target chooses a network of a checkpoint" in wrong.stderr


def test_class_names_come_from_the_data_record_else_class_k(tmp_path):
    project = Project(tmp_path / "folders")
    with project.stage_run("data", {}) as run:
        run.record.update(source="folders", classes=["dog", "elephant", "giraffe"])
    assert class_names(project, 3) == (["dog", "elephant", "giraffe"], "data record classes")
    assert class_names(project, 4) == (["dog", "elephant", "giraffe", "class 3"], "data record classes")
    assert class_names(project, 2) == (["dog", "elephant"], "data record classes")
    assert class_names(Project(tmp_path / "empty"), 2) == (["class 0", "class 1"], "none")


def test_no_images_and_a_bad_top_k_are_usage_errors(fixture_project, files):
    assert invoke("--project", fixture_project, "predict").exit_code == 2
    png = files / "k.png"
    png.write_bytes(encode(np.zeros((8, 8, 3))))
    zero = invoke("--project", fixture_project, "predict", png, "--top-k", 0)
    assert zero.exit_code == 2 and "--top-k must be a whole number >= 1" in zero.stderr
