"""Import of bvlc_alexnet.npy-style weights (mpltool/models/pretrained.py), on a tiny synthetic file laid out as
the real one (a pickled dict layer -> [W, b], bytes keys as Python 2 wrote them, grouped conv in-channels)."""

import numpy as np
import pytest

from mpltool.errors import ExitCode, InvalidInputError, PrerequisiteError
from mpltool.models import build_model
from mpltool.models.pretrained import load_npy_weights, read_npy_weights
from mpltool.tfv1 import tf

NAME = "caffe-alexnet-67-64"  # pool5 is 1 x 1 x 256, fc 64
SCOPE = "model/" + NAME
LAYOUT = {  # the bvlc_alexnet.npy shapes for this variant; fc8 has ImageNet's 1000 classes, as the real file
    "conv1": ([11, 11, 3, 96], [96]),
    "conv2": ([5, 5, 48, 256], [256]),
    "conv3": ([3, 3, 256, 384], [384]),
    "conv4": ([3, 3, 192, 384], [384]),
    "conv5": ([3, 3, 192, 256], [256]),
    "fc6": ([256, 64], [64]),
    "fc7": ([64, 64], [64]),
    "fc8": ([64, 1000], [1000]),
}


def _session(graph):
    return tf.Session(graph=graph, config=tf.ConfigProto(intra_op_parallelism_threads=2,
                                                         inter_op_parallelism_threads=2))


def synthetic_weights(seed=0, layout=None):
    rng = np.random.RandomState(seed)
    return {name: [rng.normal(0, 0.1, w).astype(np.float32), rng.normal(0, 0.1, b).astype(np.float32)]
            for name, (w, b) in (layout or LAYOUT).items()}


def write_npy(path, weights, bytes_keys=True):
    content = {(name.encode() if bytes_keys else name): value for name, value in weights.items()}
    np.save(str(path), np.array(content, dtype=object), allow_pickle=True)
    return path


def _graph():
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        build_model(NAME, num_classes=7)(tf.zeros([1, 67, 67, 3]), training=False, scope="model")
    return graph


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_every_layer_but_fc8_is_loaded(tmp_path, bytes_keys):
    weights = synthetic_weights()
    path = write_npy(tmp_path / "bvlc_alexnet.npy", weights, bytes_keys)
    graph = _graph()
    with graph.as_default():
        variables = tf.global_variables()
        init = tf.global_variables_initializer()
    graph.finalize()  # the import adds nothing to the graph: a finalized training graph can import
    loaded = load_npy_weights(path, SCOPE, variables)
    assert loaded.layers == ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
    assert len(loaded.ops) == len(loaded.feed_dict) == 14
    with _session(graph) as session:
        session.run(init)
        before = dict(zip([v.op.name for v in variables], session.run(variables)))
        loaded.run(session)
        after = dict(zip([v.op.name for v in variables], session.run(variables)))
    assert len(after) == 16
    for name, value in after.items():
        layer, kind = name.split("/")[-2:]
        if layer == "fc8":  # skipped: keeps its own (Xavier) initial value
            np.testing.assert_array_equal(value, before[name])
            assert value.shape == ((64, 7) if kind == "kernel" else (7,))
        else:
            np.testing.assert_array_equal(value, weights[layer][0 if kind == "kernel" else 1], err_msg=name)
            assert not np.array_equal(value, before[name]), name


def test_default_variables_and_an_empty_skip_list(tmp_path):
    weights = synthetic_weights(1, dict(LAYOUT, fc8=([64, 7], [7])))
    path = write_npy(tmp_path / "w.npy", weights)
    graph = _graph()
    with graph.as_default():
        loaded = load_npy_weights(path, SCOPE + "/", skip=())  # the default graph's variables
        init = tf.global_variables_initializer()
        fc8 = graph.get_tensor_by_name(SCOPE + "/fc8/kernel:0")
    assert loaded.layers[-1] == "fc8"
    with _session(graph) as session:
        session.run(init)
        loaded.run(session)
        np.testing.assert_array_equal(session.run(fc8), weights["fc8"][0])


def _error(path, cls, **kwargs):
    graph = _graph()
    with graph.as_default():
        with pytest.raises(cls) as caught:
            load_npy_weights(path, SCOPE, **kwargs)
    text = str(caught.value)
    assert "\n" not in text  # the CLI prints one line
    return text


def test_missing_file_is_a_prerequisite_with_where_to_get_it(tmp_path):
    path = tmp_path / "bvlc_alexnet.npy"
    text = _error(path, PrerequisiteError)
    assert text.startswith("pretrained weights file {} not found".format(path))
    assert "mpltool does not download it" in text and "cs.toronto.edu/~guerzhoy/tf_alexnet/" in text
    assert PrerequisiteError.exit_code == ExitCode.PREREQUISITE


def test_shape_mismatch_names_the_layer_and_both_shapes(tmp_path):
    # conv2 ungrouped (96 in-channels): the layout a grouped-conv model must refuse.
    weights = synthetic_weights(layout=dict(LAYOUT, conv2=([5, 5, 96, 256], [256])))
    text = _error(write_npy(tmp_path / "w.npy", weights), InvalidInputError)
    assert "layer conv2 kernel has shape [5, 5, 96, 256] but {}/conv2/kernel is [5, 5, 48, 256]".format(SCOPE) in text
    weights = synthetic_weights(layout=dict(LAYOUT, fc7=([64, 64], [65])))
    text = _error(write_npy(tmp_path / "w.npy", weights), InvalidInputError)
    assert "layer fc7 bias has shape [65] but {}/fc7/bias is [64]".format(SCOPE) in text
    assert InvalidInputError.exit_code == ExitCode.INVALID_INPUT


def test_missing_and_unknown_layers(tmp_path):
    weights = synthetic_weights()
    del weights["conv3"]
    text = _error(write_npy(tmp_path / "w.npy", weights), InvalidInputError)
    assert "lack layer conv3" in text and "the file has: conv1, conv2, conv4, conv5, fc6, fc7, fc8" in text
    weights = synthetic_weights()
    del weights["fc8"]  # fine: skipped
    graph = _graph()
    with graph.as_default():
        assert load_npy_weights(write_npy(tmp_path / "w.npy", weights), SCOPE).layers[-1] == "fc7"
    weights = dict(synthetic_weights(), fc9=[np.zeros((2, 2), np.float32), np.zeros(2, np.float32)])
    text = _error(write_npy(tmp_path / "w.npy", weights), InvalidInputError)
    assert "hold layer fc9, which the graph lacks" in text
    text = _error(write_npy(tmp_path / "w.npy", synthetic_weights()), InvalidInputError, variables=[])
    assert "no layer variables under '{}/'".format(SCOPE) in text


def test_unreadable_and_non_dict_files(tmp_path):
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"this is not a numpy file\n" * 10)
    assert _error(garbage, InvalidInputError).startswith("cannot read pretrained weights {}: ".format(garbage))
    truncated = tmp_path / "truncated.npy"
    write_npy(truncated, synthetic_weights())
    truncated.write_bytes(truncated.read_bytes()[:5000])
    assert _error(truncated, InvalidInputError).startswith("cannot read pretrained weights")
    assert _error(tmp_path, InvalidInputError).startswith("cannot read pretrained weights")  # a directory
    plain = tmp_path / "plain.npy"
    np.save(str(plain), np.zeros((3, 4), np.float32))
    assert "hold a ndarray, not a dict" in _error(plain, InvalidInputError)
    listed = tmp_path / "listed.npy"
    np.save(str(listed), np.array([1, 2], dtype=object), allow_pickle=True)
    assert "not a dict" in _error(listed, InvalidInputError)
    bad_layer = dict(synthetic_weights(), conv1=[np.zeros((11, 11, 3, 96), np.float32)])
    text = _error(write_npy(tmp_path / "w.npy", bad_layer), InvalidInputError)
    assert "layer conv1 is not [weights, biases] (got float32 [11, 11, 3, 96])" in text


def test_read_npy_weights_decodes_bytes_keys(tmp_path):
    weights = synthetic_weights()
    read = read_npy_weights(write_npy(tmp_path / "w.npy", weights, bytes_keys=True))
    assert sorted(read) == sorted(LAYOUT)
    for name, (kernel, bias) in read.items():
        np.testing.assert_array_equal(kernel, weights[name][0])
        np.testing.assert_array_equal(bias, weights[name][1])
