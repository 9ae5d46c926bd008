"""Caffe's AlexNet as MASF builds it (mpltool/models/alexnet.py): grouped convs against block-diagonal ones,
the LRN against its formula, the layout, the size, a forward pass against a reference written another way,
dropout, the initialisers, the registry entries and the BGR input normalisation."""

import math

import numpy as np
import pytest

from mpltool.models.verify import ATC_TF_SUPPORTED_OPS
from mpltool.errors import UsageError
from mpltool.models import (InputSpec, build_model, classifier_bias, input_spec, is_model_name, normalize_input,
                            parse_model_name, spec_from_record, spec_record)
from mpltool.models.alexnet import CaffeAlexNet, grouped_conv2d, local_response_normalization
from mpltool.models.inference import network_in_checkpoint
from mpltool.tfv1 import tf

SMALL = "caffe-alexnet-67-64"
CAFFE_MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)  # MASF data_generator.py's IMAGENET_MEAN
# (name, k, c_in, c_out, groups) of Caffe's AlexNet, from the paper's layout, not from the model module.
CONVS = (("conv1", 11, 3, 96, 1), ("conv2", 5, 96, 256, 2), ("conv3", 3, 256, 384, 1), ("conv4", 3, 384, 384, 2),
         ("conv5", 3, 384, 256, 2))


def _session(graph):
    return tf.Session(graph=graph, config=tf.ConfigProto(intra_op_parallelism_threads=2,
                                                         inter_op_parallelism_threads=2))


def _count(variables):
    return sum(int(np.prod(v.shape.as_list())) for v in variables)


def block_diagonal(kernel, groups):
    """[k, k, c_in/g, c_out] -> [k, k, c_in, c_out] with zeros across groups: group i's outputs read only
    group i's inputs."""
    k1, k2, group_in, out = kernel.shape
    group_out = out // groups
    full = np.zeros((k1, k2, group_in * groups, out), kernel.dtype)
    for i in range(groups):
        full[:, :, i * group_in:(i + 1) * group_in, i * group_out:(i + 1) * group_out] = \
            kernel[:, :, :, i * group_out:(i + 1) * group_out]
    return full


def numpy_lrn(x, radius=2, alpha=1e-5, beta=0.75, bias=1.0):
    """TF's LRN over the last axis: x / (bias + alpha·sum_{|j-c|<=radius} x_j²)^beta."""
    channels = x.shape[-1]
    squares = x.astype(np.float64) ** 2
    out = np.empty(x.shape, np.float64)
    for c in range(channels):
        window = squares[..., max(0, c - radius):min(channels, c + radius + 1)].sum(axis=-1)
        out[..., c] = x[..., c] / (bias + alpha * window) ** beta
    return out


@pytest.mark.parametrize("groups, stride, size", [(2, 1, 7), (2, 2, 9), (3, 3, 10)])
def test_grouped_conv_equals_a_block_diagonal_conv(groups, stride, size):
    rng = np.random.RandomState(groups)
    x = rng.normal(size=(2, size, size, 4 * groups)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 4, 5 * groups)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        grouped = grouped_conv2d(tf.constant(x), tf.constant(kernel), stride, groups)
        plain = tf.nn.conv2d(tf.constant(x), tf.constant(block_diagonal(kernel, groups)),
                             strides=[1, stride, stride, 1], padding="SAME")
        ops = {op.type for op in graph.get_operations()}
    with _session(graph) as session:
        ours, reference = session.run([grouped, plain])
    assert ours.shape == (2, -(-size // stride), -(-size // stride), 5 * groups)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5)
    assert {"Split", "ConcatV2"} <= ops  # the grouped form ATC converts (no block-diagonal weights)


def test_lrn_equals_its_formula_with_the_reference_constants():
    # Values of ~±100: alpha·Σx² is then ~0.5, so the normalisation visibly matters.
    x = np.random.RandomState(1).normal(0, 100, (2, 3, 3, 9)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        y = local_response_normalization(tf.constant(x))
    with _session(graph) as session:
        ours = session.run(y)
    expected = numpy_lrn(x)
    assert np.abs(expected / x - 1).max() > 0.1
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    # alpha 2e-5 (Caffe's 1e-4 / local_size 5) would be a different layer: the test can tell them apart.
    assert np.abs(numpy_lrn(x, alpha=2e-5) - expected).max() > 1e-2 * np.abs(expected).max()


def test_layout_at_227_and_the_parameter_count():
    with tf.Graph().as_default() as graph:
        model = build_model("caffe-alexnet", num_classes=7)
        output = model(tf.zeros([3, 227, 227, 3]), training=True, scope="model")
        assert output.logits.shape.as_list() == [3, 7]
        assert output.features.shape.as_list() == [3, 4096]
        assert output.bn_updates == []
        flatten = graph.get_tensor_by_name("model/caffe-alexnet/flatten:0")
        assert flatten.shape.as_list() == [3, 9216]  # 6 x 6 x 256
        convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
        # conv1 is 'SAME' in the reference (conv_block): ceil(227 / 4) = 57, not Caffe's unpadded 55.
        conv1 = [op for op in convs if op.name.startswith("model/caffe-alexnet/conv1/")]
        assert len(conv1) == 1 and conv1[0].get_attr("padding") == b"SAME"
        assert conv1[0].outputs[0].shape.as_list() == [3, 57, 57, 96]
        assert all(op.get_attr("padding") == b"SAME" for op in convs)
        assert len(convs) == 1 + 2 + 1 + 2 + 2  # one per group
        pools = [op for op in graph.get_operations() if op.type == "MaxPool"]
        assert [p.outputs[0].shape.as_list()[1] for p in pools] == [28, 13, 6]
        assert all(p.get_attr("padding") == b"VALID" and p.get_attr("ksize") == [1, 3, 3, 1]
                   and p.get_attr("strides") == [1, 2, 2, 1] for p in pools)
        lrns = [op for op in graph.get_operations() if op.type == "LRN"]
        assert len(lrns) == 2
        for op in lrns:  # exactly what MASF's lrn(x, 2, 1e-05, 0.75) passes (bias 1.0)
            assert op.get_attr("depth_radius") == 2 and op.get_attr("bias") == 1.0
            assert op.get_attr("alpha") == pytest.approx(1e-5, rel=1e-6) and op.get_attr("beta") == 0.75
        shapes = {v.op.name.split("/", 2)[2]: v.shape.as_list() for v in tf.trainable_variables()}
        trainable = _count(tf.trainable_variables())
        assert tf.global_variables() == tf.trainable_variables()  # no batch norm, nothing else

    # Independently: a conv k x k, c_in -> c_out in g groups has k·k·(c_in/g)·c_out + c_out weights.
    expected_shapes = {}
    expected = 0
    for name, k, c_in, c_out, groups in CONVS:
        expected_shapes[name + "/kernel"] = [k, k, c_in // groups, c_out]
        expected_shapes[name + "/bias"] = [c_out]
        expected += k * k * (c_in // groups) * c_out + c_out
    for name, fan_in, units in (("fc6", 6 * 6 * 256, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 7)):
        expected_shapes[name + "/kernel"] = [fan_in, units]
        expected_shapes[name + "/bias"] = [units]
        expected += fan_in * units + units
    assert shapes == expected_shapes  # the bvlc_alexnet.npy layout (grouped in-channels 48 / 192)
    assert trainable == expected == 56896903
    # The well-known AlexNet (1000 classes) count, 60,965,224, with fc8 cut to 7 classes.
    assert trainable == 60965224 - (4096 * 1000 + 1000) + (4096 * 7 + 7)


def reference_forward(pixels, values):
    """MASF's forward_alexnet in inference (keep_prob 1), built another way: each grouped conv as one
    ungrouped conv with a block-diagonal kernel, and the input normalised in numpy."""
    def conv(x, name, stride, groups):
        kernel = block_diagonal(values[name + "/kernel"], groups)
        y = tf.nn.conv2d(x, tf.constant(kernel), strides=[1, stride, stride, 1], padding="SAME")
        return tf.nn.relu(y + values[name + "/bias"])

    def lrn(x):
        return tf.nn.lrn(x, depth_radius=2, bias=1.0, alpha=1e-5, beta=0.75)

    def pool(x):
        return tf.nn.max_pool(x, [1, 3, 3, 1], [1, 2, 2, 1], "VALID")

    def fc(x, name):
        return tf.nn.xw_plus_b(x, values[name + "/kernel"], values[name + "/bias"])

    x = tf.constant(((pixels - CAFFE_MEAN_RGB)[..., ::-1]).copy())
    x = pool(lrn(conv(x, "conv1", 4, 1)))
    x = pool(lrn(conv(x, "conv2", 1, 2)))
    x = pool(conv(conv(conv(x, "conv3", 1, 1), "conv4", 1, 2), "conv5", 1, 2))
    x = tf.reshape(x, [-1, int(np.prod(x.shape.as_list()[1:]))])
    fc7 = tf.nn.relu(fc(tf.nn.relu(fc(x, "fc6")), "fc7"))
    return fc7, fc(fc7, "fc8")


def test_forward_matches_a_reference_built_another_way():
    size, units = parse_model_name(SMALL)["input_size"], parse_model_name(SMALL)["fc_units"]
    pixels = np.random.RandomState(0).randint(0, 256, (3, size, size, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        model = build_model(SMALL, num_classes=7)
        images = tf.placeholder(tf.float32, [None, size, size, 3])
        output = model(normalize_input(images, input_spec(SMALL)), training=False, scope="model")
        variables = tf.global_variables()
    with _session(graph) as session:
        session.run(tf.variables_initializer(variables))
        logits, features, weights = session.run([output.logits, output.features, variables], {images: pixels})
    values = {v.op.name.split("/", 2)[2]: w for v, w in zip(variables, weights)}

    with tf.Graph().as_default() as reference_graph:
        ref_fc7, ref_logits = reference_forward(pixels, values)
    with _session(reference_graph) as session:
        expected_features, expected_logits = session.run([ref_fc7, ref_logits])
    assert features.shape == (3, units) and logits.shape == (3, 7)
    assert np.abs(logits).max() > 0.1 and (features > 0).mean() > 0.1  # not a comparison of zeros
    np.testing.assert_allclose(features, expected_features, rtol=1e-4, atol=1e-4 * np.abs(expected_features).max())
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4 * np.abs(expected_logits).max())


def test_dropout_only_in_training_and_features_are_fc7_before_dropout():
    calls = []

    def spy(x, rate):
        calls.append((x, rate))
        return tf.nn.dropout(x, rate=rate)

    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(1)
        model = build_model(SMALL, num_classes=7, dropout_rate=0.5, dropout_fn=spy)
        images = tf.constant(np.random.RandomState(2).normal(0, 50, (2, 67, 67, 3)).astype(np.float32))
        evaluate = model(images, training=False, scope="model")
        assert calls == []
        train = model(images, training=True, scope="model")
        assert [rate for _, rate in calls] == [0.5, 0.5]  # after fc6 and after fc7
        assert calls[1][0] is train.features  # fc7 is dropped after it is taken as the features
        assert "fc7" in train.features.op.name and train.features.op.type == "Relu"
        assert "fc7" in evaluate.features.op.name and evaluate.features.op.type == "Relu"
        no_rate = build_model(SMALL, num_classes=7, dropout_rate=0.0, dropout_fn=spy)
        no_rate(images, training=True, scope="model")
        assert len(calls) == 2  # rate 0: no dropout op at all
        init = tf.global_variables_initializer()
    with _session(graph) as session:
        session.run(init)
        eval_1, train_1 = session.run([evaluate.logits, train.logits])
        eval_2, train_2 = session.run([evaluate.logits, train.logits])
    np.testing.assert_array_equal(eval_1, eval_2)
    assert not np.allclose(train_1, train_2)  # a new mask per run


def test_calling_contract():
    with tf.Graph().as_default():
        model = build_model(SMALL, num_classes=7, bn_momentum=0.9)
        assert model.bn_momentum == 0.9  # accepted and unused: the network has no batch norm
        images = tf.zeros([2, 67, 67, 3])
        model(images, training=True, scope="net")
        count = len(tf.global_variables())
        evaluate = model(images, training=False, scope="net")
        assert len(tf.global_variables()) == count == 16
        model(images, training=False, scope="other")
        assert len(tf.global_variables()) == 2 * count
        assert evaluate.bn_updates == [] and tf.get_collection(tf.GraphKeys.UPDATE_OPS) == []
        for bad in (1, 0, None, "True", tf.constant(True)):
            with pytest.raises(TypeError):
                model(images, training=bad, scope="net")
    with pytest.raises(ValueError, match="minimum 57"):
        CaffeAlexNet(input_size=56)


def test_initialisers_are_the_references_glorot_uniform():
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(3)
        build_model(SMALL, num_classes=7)(tf.zeros([1, 67, 67, 3]), training=False, scope="net")
        variables = tf.global_variables()
    with _session(graph) as session:
        session.run(tf.global_variables_initializer())
        values = dict(zip([v.op.name.split("/", 2)[2] for v in variables], session.run(variables)))
    for name, value in values.items():
        shape = value.shape
        if name.endswith("kernel"):  # xavier: U(±sqrt(6 / (fan_in + fan_out))), receptive field in both fans
            field = int(np.prod(shape[:-2]))
            fan_in, fan_out = field * shape[-2], field * shape[-1]
        else:  # tf.get_variable's default glorot uniform on a 1-D shape [n]: fan_in = fan_out = n
            fan_in = fan_out = shape[0]
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(value).max() <= limit * (1 + 1e-6), name
        if value.size >= 1000:  # a uniform's std is limit / sqrt(3); 10% is many standard errors here
            assert abs(value.std() / (limit / math.sqrt(3)) - 1) < 0.1, name
            kurtosis = np.mean(value ** 4) / np.mean(value ** 2) ** 2
            assert 1.6 < kurtosis < 2.0, (name, kurtosis)  # 1.8: uniform, not normal (3) or truncated (2.37)
        else:
            assert np.abs(value).max() > 0.3 * limit, name  # not zeros
    assert values["fc8/bias"].shape == (7,)


def test_registry_entries():
    assert parse_model_name("caffe-alexnet") == {"input_size": 227, "fc_units": 4096}
    assert parse_model_name("caffe-alexnet-64-512") == {"input_size": 64, "fc_units": 512}
    assert parse_model_name("caffe-alexnet-57-1") == {"input_size": 57, "fc_units": 1}  # the minimum size
    assert classifier_bias("caffe-alexnet") == classifier_bias(SMALL) == "fc8/bias"
    model = build_model(SMALL, num_classes=7)
    assert isinstance(model, CaffeAlexNet) and model.name == SMALL
    assert (model.input_size, model.fc_units, model.num_classes) == (67, 64, 7)
    assert build_model("caffe-alexnet").name == "caffe-alexnet"

    mean = (123.68 / 255, 116.779 / 255, 103.939 / 255)
    assert input_spec("caffe-alexnet") == InputSpec((227, 227, 3), (0, 255), mean, (1 / 255,) * 3, "BGR", "NHWC")
    assert input_spec(SMALL) == InputSpec((67, 67, 3), (0, 255), mean, (1 / 255,) * 3, "BGR", "NHWC")
    assert model.input_spec == input_spec(SMALL)
    assert spec_from_record(spec_record(input_spec(SMALL))) == input_spec(SMALL)

    with tf.Graph().as_default():  # the scope name leads a checkpoint back to the same network
        model(tf.zeros([1, 67, 67, 3]), training=False, scope="model")
        shapes = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    assert network_in_checkpoint(shapes, "model", "ckpt") == (SMALL, 7)


@pytest.mark.parametrize("name, complaint", [
    ("caffe-alexnet-56-64", "SIZE must be between 57 and 1024 (got 56; below 57 the last max-pool has no output)"),
    ("caffe-alexnet-0-64", "SIZE must be between 57 and 1024 (got 0; below 57 the last max-pool has no output)"),
    ("caffe-alexnet-1025-64", "SIZE must be between 57 and 1024 (got 1025; below 57 the last max-pool has no "
                              "output)"),
    ("caffe-alexnet-64-0", "FC must be between 1 and 16384 (got 0)"),
    ("caffe-alexnet-64-16385", "FC must be between 1 and 16384 (got 16385)"),
])
def test_bad_sizes_are_usage_errors(name, complaint):
    with pytest.raises(UsageError) as caught:
        parse_model_name(name)
    assert caught.value.message == "invalid model '{}': {}".format(name, complaint)
    with pytest.raises(UsageError):
        build_model(name)
    with pytest.raises(UsageError):
        input_spec(name)


def test_the_minimum_size_is_the_smallest_with_a_pooled_map():
    with tf.Graph().as_default() as graph:
        CaffeAlexNet(57, 8)(tf.zeros([1, 57, 57, 3]), training=False, scope="net")
        pools = [op.outputs[0].shape.as_list()[1:3] for op in graph.get_operations() if op.type == "MaxPool"]
    assert pools[-1] == [1, 1]
    # At 56: conv1 14, pool1 6, pool2 2, and a 3x3 VALID pool of a 2x2 map is empty.
    with tf.Graph().as_default():
        with pytest.raises(ValueError):
            tf.nn.max_pool(tf.zeros([1, 2, 2, 256]), [1, 3, 3, 1], [1, 2, 2, 1], "VALID")


@pytest.mark.parametrize("name", ["caffe-alexnet-227", "caffe-alexnet-227-4096-1", "caffe-alexnet-", "alexnet",
                                  "caffe-alexnet-a-64", "caffe-alexnet "])
def test_malformed_names_list_the_expected_forms(name):
    assert not is_model_name(name)
    with pytest.raises(UsageError) as caught:
        parse_model_name(name)
    message = caught.value.message
    assert message.startswith("unknown model {!r}: expected ".format(name))
    assert "caffe-alexnet-SIZE-FC, e.g. caffe-alexnet-64-512" in message and "wrn-DEPTH-WIDTH" in message


def test_bgr_normalisation_is_exactly_the_references():
    pixels = np.random.RandomState(5).randint(0, 256, (2, 4, 5, 3)).astype(np.float32)
    pixels[0, 0, 0] = [0, 0, 0]
    pixels[0, 0, 1] = [255, 255, 255]
    pixels[0, 0, 2] = [255, 0, 128]
    graph = tf.Graph()
    with graph.as_default():
        normalised = normalize_input(tf.constant(pixels), input_spec(SMALL))
        ops = {op.type for op in graph.get_operations()}
    with _session(graph) as session:
        ours = session.run(normalised)
    # MASF's data_generator: subtract the RGB mean, then reverse the channels; nothing else.
    expected = (pixels - CAFFE_MEAN_RGB)[..., ::-1]
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)
    assert ours[0, 0, 2].tolist() == [np.float32(128) - np.float32(103.939), -np.float32(116.779),
                                      np.float32(255) - np.float32(123.68)]
    assert "RealDiv" not in ops  # std·255 == 1: no division at all
    assert "ReverseV2" not in ops and ops <= ATC_TF_SUPPORTED_OPS  # the exported graph stays convertible


def test_rgb_specs_normalise_as_before(run):
    """The RGB specs keep their exact numbers: (x - float32(mean)·255) / (float32(std)·255)."""
    pixels = np.random.RandomState(6).randint(0, 256, (2, 3, 3, 3)).astype(np.float32)
    for name in ("wrn-28-2", "mixmatch-resnet-32-3-4"):
        spec = input_spec(name)
        scale = np.float32(255)
        mean = np.array(spec.mean, np.float32) * scale
        std = np.array(spec.std, np.float32) * scale
        before = lambda: (tf.constant(pixels) - tf.constant(mean)) / tf.constant(std)  # noqa: E731
        now = lambda: normalize_input(tf.constant(pixels), spec)  # noqa: E731
        np.testing.assert_array_equal(run(now), run(before))
    with tf.Graph().as_default(), pytest.raises(ValueError, match="channel order"):
        normalize_input(tf.zeros([1, 2, 2, 3]), spec._replace(channel_order="GBR"))
