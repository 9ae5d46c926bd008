"""Folding batch norms into convolutions at freeze time (mpltool/freeze/fold.py): the folded constants equal
the formula computed in numpy, the outputs equal the unfolded graph's, only foldable patterns fold, and
the freeze stage records the fold (and `--no-fold` keeps the batch norms)."""

import collections
import json

import numpy as np
import pytest
from helpers import invoke, manifest, sets
from mpltool.freeze.fold import bypass_constant_identities, fold_batch_norms, simplify_for_inference
from mpltool.tfv1 import tf

EPSILON = 1e-3


def _graph(with_bias, shared_conv=False):
    """input [2, 6, 6, 3] -> conv 3x3 (x4) [+ bias] -> fused BN (inference) -> relu -> `logits`, `probs`;
    with `shared_conv` the conv's output also feeds `logits` directly (so it must not fold). Returns the
    frozen GraphDef and the numpy parameters."""
    rng = np.random.RandomState(0)
    params = {"kernel": rng.normal(size=(3, 3, 3, 4)), "bias": rng.normal(size=4), "gamma": rng.uniform(.5, 2, 4),
              "beta": rng.normal(size=4), "mean": rng.normal(size=4), "variance": rng.uniform(.2, 3, 4)}
    params = {k: v.astype(np.float32) for k, v in params.items()}
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [2, 6, 6, 3], name="input")
        variables = {k: tf.Variable(v, name=k) for k, v in params.items()}
        y = tf.nn.conv2d(x, variables["kernel"], [1, 1, 1, 1], "SAME")
        if with_bias:
            y = tf.nn.bias_add(y, variables["bias"])
        z, _, _ = tf.nn.fused_batch_norm(y, variables["gamma"], variables["beta"], mean=variables["mean"],
                                         variance=variables["variance"], epsilon=EPSILON, is_training=False)
        out = tf.nn.relu(z)
        if shared_conv:
            out = out + y
        logits = tf.identity(tf.reduce_mean(out, axis=[1, 2]), name="logits")
        tf.identity(tf.nn.softmax(logits), name="probs")
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            frozen = tf.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["logits", "probs"])
    return frozen, params


def _run(graph_def, images):
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.Session(graph=graph) as session:
        return session.run("logits:0", {"input:0": images})


def _ops(graph_def):
    return collections.Counter(node.op for node in graph_def.node)


@pytest.mark.parametrize("with_bias", [False, True])
def test_the_folded_conv_equals_the_formula_and_the_graph_its_original(with_bias):
    frozen, p = _graph(with_bias)
    folded, names = simplify_for_inference(frozen, ["logits", "probs"])
    assert len(names) == 1 and _ops(folded)["FusedBatchNormV3"] == 0 and _ops(frozen)["FusedBatchNormV3"] == 1
    assert _ops(folded)["Conv2D"] == 1 and _ops(folded)["BiasAdd"] == 1  # no op added: BN became the BiasAdd
    constants = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in folded.node if n.op == "Const"}
    scale = p["gamma"].astype(np.float64) / np.sqrt(p["variance"].astype(np.float64) + EPSILON)
    bias = p["bias"] if with_bias else np.zeros(4)
    kernel = [v for k, v in constants.items() if k.endswith("folded_kernel")][0]
    folded_bias = [v for k, v in constants.items() if k.endswith("folded_bias")][0]
    np.testing.assert_allclose(kernel, p["kernel"] * scale, rtol=1e-6)
    np.testing.assert_allclose(folded_bias, scale * (bias - p["mean"]) + p["beta"], rtol=1e-6, atol=1e-6)
    images = np.random.RandomState(1).uniform(-1, 1, (2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(folded, images), _run(frozen, images), atol=1e-5)
    assert not any(n.op == "Identity" for n in folded.node if n.name not in ("logits", "probs"))


def test_a_conv_whose_output_is_read_elsewhere_is_not_folded():
    frozen, _ = _graph(with_bias=True, shared_conv=True)
    folded, names = fold_batch_norms(frozen)
    assert names == [] and _ops(folded) == _ops(frozen)


def test_identity_bypass_keeps_the_named_outputs():
    frozen, _ = _graph(with_bias=False)
    bypassed = bypass_constant_identities(frozen, keep=["logits", "probs"])
    readers = [i for n in bypassed.node for i in n.input]
    assert not any(i.endswith("/read") for i in readers)  # variable reads now come from the constants
    assert {"logits", "probs"} <= {n.name for n in bypassed.node}


@pytest.mark.slow
def test_freeze_folds_by_default_records_it_and_no_fold_keeps_the_batch_norms(prepared_copy):
    project = prepared_copy
    trained = invoke("--project", project, "train", "--recipe", "supervised-demo", "--device", "cpu",
                     *sets("num_train_steps=2", "save_every=2", "eval_every=2", "model=wrn-10-1", "batch_size=4",
                           "eval_batch_size=16", "shuffle_buffer=64", base=()))
    assert trained.exit_code == 0, trained.stderr
    folded = invoke("--project", project, "--json", "freeze", "--parity-images", 16)
    assert folded.exit_code == 0, folded.stderr
    result = json.loads(folded.stdout)
    # WRN-10-1 is pre-activation: the batch norm after each block's first conv folds (3 blocks); those
    # after an addition (each block's first, the head's) stay.
    assert result["folded_batch_norms"] == 3 and result["parity"]["passed"]
    record = manifest(project)["stages"]["freeze"]
    assert record["folded_batch_norms"] == 3 and record["params"]["fold"] is True
    plain = invoke("--project", project, "--json", "freeze", "--parity-images", 16, "--no-fold", "--force")
    assert plain.exit_code == 0, plain.stderr
    assert json.loads(plain.stdout)["folded_batch_norms"] == 0
    assert manifest(project)["stages"]["freeze"]["params"]["fold"] is False
