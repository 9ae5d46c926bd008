"""A small trained-looking project for eval/freeze tests: real wrn-10-1 checkpoints plus data/train records.

Every variable gets values that differ from its initializer's -- BN moving statistics included, so a
restore that misses them (or freezes initial weights, the Ascend port's bug) changes the logits.
Two checkpoints hold different weights: `checkpoints/best-ema/model.ckpt-3` (the recorded best EMA) and
`checkpoints/model.ckpt-5` (latest), so tests can tell which one a stage picked.
"""

from pathlib import Path

import numpy as np

from mpltool.models import CIFAR_MEAN, CIFAR_STD
from mpltool.data.cifar import write_cifar_file
from mpltool.manifest import Project
from mpltool.models import build_model
from mpltool.recipes import recipe_from_record
from mpltool.tfv1 import tf
from mpltool.checkpoints import checkpoint_record

TARGETS = ("ema", "student", "teacher")  # the networks of an MPL run, as its checkpoints hold them

MODEL = "wrn-10-1"
NUM_TEST_IMAGES = 37  # not a multiple of any batch size the tests use
LABEL_SMOOTHING = 0.15
EVAL_BATCH_SIZE = 16
GRAPH_SEED = 1234


def _trained_value(name, initial, rng):
    if name.endswith("moving_mean"):
        return rng.normal(0.0, 0.3, initial.shape)
    if name.endswith("moving_variance"):
        return rng.uniform(0.5, 2.0, initial.shape)
    if name.endswith("gamma"):
        return rng.uniform(0.7, 1.3, initial.shape)
    if name.endswith(("beta", "bias")):
        return rng.normal(0.0, 0.2, initial.shape)
    if name.endswith("global_step"):
        return initial
    return initial * rng.uniform(0.5, 1.5, initial.shape) + rng.normal(0.0, 0.02, initial.shape)


def build_networks():
    """Variables of all three networks (+ global_step) in the current graph, as training creates them."""
    tf.set_random_seed(GRAPH_SEED)
    model = build_model(MODEL, num_classes=10, dropout_rate=0.0)
    images = tf.placeholder(tf.float32, [None, 32, 32, 3])
    for scope in TARGETS:
        model(images, training=False, scope=scope)
    tf.train.get_or_create_global_step()
    return tf.global_variables()


def load_values(session, variables, values):
    """Set every variable in one run by feeding its initializer's input (variable.load is a run each)."""
    session.run([v.initializer for v in variables], {
        v.initial_value: np.asarray(values[v.op.name]).astype(v.dtype.base_dtype.as_numpy_dtype) for v in variables})


def initial_values():
    """What the initializers give under the fixture's graph seed: the 'untrained' weights."""
    with tf.Graph().as_default():
        variables = build_networks()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            return {v.op.name: value for v, value in zip(variables, session.run(variables))}


def make_trained_project(directory):
    directory = Path(str(directory))
    project = Project(directory)
    rng = np.random.RandomState(7)
    images = rng.randint(0, 256, size=(NUM_TEST_IMAGES, 32, 32, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, size=NUM_TEST_IMAGES).astype(np.int64)
    test_path = directory / "data" / "cifar" / "test_batch.bin"
    test_path.parent.mkdir(parents=True)
    write_cifar_file(test_path, images, labels)
    with project.stage_run("data", {"source": "fixture"}) as run:
        run.outputs["test_batch"] = project.file_record(test_path)
    test_record = project.stage("data")["outputs"]["test_batch"]

    initial = initial_values()
    prefixes = {"best_ema": directory / "checkpoints" / "best-ema" / "model.ckpt", "latest":
                directory / "checkpoints" / "model.ckpt"}
    steps = {"best_ema": 3, "latest": 5}
    with tf.Graph().as_default():
        variables = build_networks()
        saver = tf.train.Saver(variables)
        with tf.Session() as session:
            for key in ("best_ema", "latest"):
                values = {name: steps[key] if name == "global_step" else _trained_value(name, value, rng)
                          for name, value in initial.items()}
                load_values(session, variables, values)
                prefixes[key].parent.mkdir(parents=True, exist_ok=True)
                prefixes[key] = Path(saver.save(session, str(prefixes[key]), global_step=steps[key],
                                                write_meta_graph=False))

    records = {key: checkpoint_record(project, prefixes[key], steps[key]) for key in prefixes}
    params = recipe_from_record({"model": MODEL, "eval_batch_size": EVAL_BATCH_SIZE,
                                 "label_smoothing": LABEL_SMOOTHING}).values
    with project.stage_run("train", params) as run:
        run.record["checkpoints"] = {"latest": records["latest"],
                                     "best": {"ema": dict(records["best_ema"], top1=0.1)}}
        run.record["steps_done"] = 5
    return {
        "dir": directory, "images": images, "labels": labels, "test_record": test_record, "initial": initial,
        "best_ema": {"prefix": str(prefixes["best_ema"]), "record": records["best_ema"]},
        "latest": {"prefix": str(prefixes["latest"]), "record": records["latest"]},
    }


def normalise(images):
    mean = np.array(CIFAR_MEAN, np.float32) * np.float32(255.0)
    std = np.array(CIFAR_STD, np.float32) * np.float32(255.0)
    return (images.astype(np.float32) - mean) / std


def logits_from_values(values, scope, images):
    """Logits of `scope`'s network with the given variable values, normalising in numpy (not in-graph)."""
    with tf.Graph().as_default():
        model = build_model(MODEL, num_classes=10, dropout_rate=0.0)
        x = tf.placeholder(tf.float32, [None, 32, 32, 3])
        logits = model(x, training=False, scope=scope).logits
        with tf.Session() as session:
            load_values(session, tf.global_variables(), values)
            return session.run(logits, {x: normalise(images)})


def reference_logits(prefix, scope, images):
    """Logits computed by loading each variable by name with NewCheckpointReader: no Saver involved."""
    reader = tf.train.NewCheckpointReader(str(prefix))
    values = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    return logits_from_values(values, scope, images)
