"""BYOL's CIFAR ResNet-18 (mpltool/models/resnet_cifar.py): its size, its parity with the Keras layers of the
reference (garder14/byol-tensorflow2 models.py), batch-norm updates, initialisers, registry entries and the
x/255 input normalisation."""

import math

import numpy as np
import pytest

from mpltool.errors import UsageError
from mpltool.models import (InputSpec, build_model, classifier_bias, input_spec, is_batch_norm_variable,
                            is_model_name, normalize_input, parse_model_name)
from mpltool.models.resnet_cifar import CifarResNet18
from mpltool.tfv1 import tf

SMALL = "resnet18-cifar-4"
BN_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")


def _session(graph):
    return tf.Session(graph=graph, config=tf.ConfigProto(intra_op_parallelism_threads=2,
                                                         inter_op_parallelism_threads=2))


def _last(variable):
    return variable.op.name.split("/")[-1]


def _count(variables):
    return sum(int(np.prod(v.shape.as_list())) for v in variables)


def encoder_parameters(width):
    """Trainable parameters of the encoder (no head), from the layout alone.

    A k x k conv c -> f with bias has k·k·c·f + f; a BN over f channels has 2f trainable (gamma, beta). The
    stem is conv3x3 3 -> w + BN; a block c -> f is conv3x3 c->f, BN, conv3x3 f->f, BN, and in the first
    block of stages 2-4 a 1x1 conv c->f + BN shortcut."""
    def conv(k, c, f):
        return k * k * c * f + f

    total = conv(3, 3, width) + 2 * width
    channels = width
    for stage in range(4):
        f = width * 2 ** stage
        for block in range(2):
            total += conv(3, channels, f) + 2 * f + conv(3, f, f) + 2 * f
            if stage > 0 and block == 0:
                total += conv(1, channels, f) + 2 * f
            channels = f
    return total


def test_encoder_parameter_count_is_the_references():
    with tf.Graph().as_default():
        model = build_model("resnet18-cifar", num_classes=10)
        output = model(tf.zeros([2, 32, 32, 3]), training=True, scope="net")
        encoder = [v for v in tf.trainable_variables() if "/head/" not in v.op.name]
        head = [v for v in tf.trainable_variables() if "/head/" in v.op.name]
        assert output.features.shape.as_list() == [2, 512] and output.logits.shape.as_list() == [2, 10]
        assert _count(encoder) == encoder_parameters(64) == 11173632  # the AB README's log, as the spec notes
        assert _count(head) == 512 * 10 + 10
        assert [v.op.name for v in head] == ["net/resnet18-cifar/head/dense/" + n for n in ("kernel", "bias")]
        moving = [v for v in tf.global_variables() if not v.trainable]
        assert {_last(v) for v in moving} == {"moving_mean", "moving_variance"}


@pytest.mark.parametrize("width", [4, 16])
def test_shapes(width):
    with tf.Graph().as_default() as graph:
        output = CifarResNet18(width, num_classes=7)(tf.zeros([3, 32, 32, 3]), training=False, scope="net")
        assert output.logits.shape.as_list() == [3, 7]
        assert output.features.shape.as_list() == [3, 8 * width]
        assert _count([v for v in tf.trainable_variables() if "/head/" not in v.op.name]) == encoder_parameters(width)
        # No max-pool; the resolution halves only at stages 2-4: 32, 16, 8, 4.
        assert not [op for op in graph.get_operations() if op.type in ("MaxPool", "AvgPool")]
        adds = [op.outputs[0].shape.as_list()[1:] for op in graph.get_operations()
                if op.type in ("Add", "AddV2") and op.name.endswith("/add")]
        assert adds == [[32, 32, w] for w in [width] * 2] + [[16, 16, 2 * width]] * 2 + \
            [[8, 8, 4 * width]] * 2 + [[4, 4, 8 * width]] * 2


class KerasReference:
    """garder14/byol-tensorflow2 models.py (BasicBlock, BasicResNet([2, 2, 2, 2]), ClassificationHead) with the
    stem width as a parameter, from the same Keras layers: created once (`layers`, in creation order once
    called), called in training and in inference mode."""

    def __init__(self, width, num_classes):
        K = tf.keras.layers
        self.layers = []

        def layer(instance):
            self.layers.append(instance)
            return instance

        self.conv1 = layer(K.Conv2D(filters=width, kernel_size=(3, 3), strides=1, padding='same'))
        self.bn1 = layer(K.BatchNormalization())
        self.blocks = []
        for stage in range(4):
            for index in range(2):
                filters, strides = width << stage, 2 if (stage > 0 and index == 0) else 1
                block = {"conv1": layer(K.Conv2D(filters=filters, kernel_size=(3, 3), strides=strides, padding='same')),
                         "bn1": layer(K.BatchNormalization()),
                         "conv2": layer(K.Conv2D(filters=filters, kernel_size=(3, 3), strides=1, padding='same')),
                         "bn2": layer(K.BatchNormalization()), "strides": strides}
                if strides != 1:
                    block["convdown"] = layer(K.Conv2D(filters=filters, kernel_size=(1, 1), strides=strides))
                    block["bndown"] = layer(K.BatchNormalization())
                self.blocks.append(block)
        self.avgpool = K.GlobalAveragePooling2D()
        self.fc = layer(K.Dense(units=num_classes))

    def __call__(self, inp, training):
        """(logits, features)."""
        with tf.variable_scope("reference"):
            x = tf.nn.relu(self.bn1(self.conv1(inp), training=training))
            for block in self.blocks:
                x1 = tf.nn.relu(block["bn1"](block["conv1"](x), training=training))
                x1 = block["bn2"](block["conv2"](x1), training=training)
                if block["strides"] != 1:
                    x2 = block["bndown"](block["convdown"](x), training=training)
                else:
                    x2 = x
                x = tf.nn.relu(tf.keras.layers.add([x1, x2]))
            features = self.avgpool(x)
            return self.fc(features), features


def test_forward_and_batch_norm_updates_match_the_keras_reference():
    width = parse_model_name(SMALL)["width"]
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, (4, 16, 16, 3)).astype(np.float32)  # fully convolutional: 16x16 is enough
    graph = tf.Graph()
    with graph.as_default():
        model = build_model(SMALL, num_classes=10)
        normalised = normalize_input(tf.constant(pixels), input_spec(SMALL))
        ours_train = model(normalised, training=True, scope="ours")
        ours_eval = model(normalised, training=False, scope="ours")
        ours = tf.global_variables("ours/")

        reference_input = tf.constant(pixels / np.float32(255))  # the reference's floats in [0, 1]
        keras_model = KerasReference(width, 10)
        ref_train, ref_train_features = keras_model(reference_input, training=True)
        ref_updates = [u for l in keras_model.layers if isinstance(l, tf.keras.layers.BatchNormalization)
                       for u in l.updates]
        ref_eval, _ = keras_model(reference_input, training=False)
        reference = [w for l in keras_model.layers for w in l.weights]
        assert len(ours) == len(reference) == 2 + 4 + 8 * (4 + 8) + 3 * (2 + 4) + 2
        for mine, theirs in zip(ours, reference):
            assert _last(mine) == theirs.op.name.split("/")[-1], (mine.op.name, theirs.op.name)
            assert mine.shape.as_list() == theirs.shape.as_list(), (mine.op.name, theirs.op.name)

        feeds, loads = {}, []
        for mine, theirs in zip(ours, reference):
            shape, kind = mine.shape.as_list(), _last(mine)
            if kind == "kernel":
                value = rng.normal(0.0, math.sqrt(2.0 / np.prod(shape[:-1])), shape)
            elif kind in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0.0, 0.1, shape)
            placeholder = tf.placeholder(tf.float32, shape)
            feeds[placeholder] = value.astype(np.float32)
            loads += [mine.assign(placeholder), theirs.assign(placeholder)]
        moving = [(m, t) for m, t in zip(ours, reference) if not m.trainable]
        moving_ours, moving_ref = [m for m, _ in moving], [t for _, t in moving]
        assert len(ref_updates) == len(ours_train.bn_updates) == 2 * 20

    with _session(graph) as session:
        session.run(loads, feeds)
        before = session.run(moving_ours)
        mine_train, mine_features, mine_eval, theirs_train, theirs_features, theirs_eval = session.run(
            [ours_train.logits, ours_train.features, ours_eval.logits, ref_train, ref_train_features, ref_eval])
        session.run([ours_train.bn_updates, ref_updates])
        after_ours, after_ref = session.run([moving_ours, moving_ref])
    assert np.abs(mine_train).max() > 0.1
    np.testing.assert_allclose(mine_train, theirs_train, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mine_features, theirs_features, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mine_eval, theirs_eval, rtol=1e-4, atol=1e-4, err_msg="inference mode")
    assert not np.allclose(mine_train, mine_eval, atol=1e-3)
    for (mine, _), old, new, expected in zip(moving, before, after_ours, after_ref):
        np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-5, err_msg=mine.op.name)
        assert np.abs(new - old).max() > 1e-5, mine.op.name


def test_batch_norm_updates_in_training_only():
    with tf.Graph().as_default():
        model = build_model(SMALL, num_classes=10, bn_momentum=0.9)
        assert model.bn_momentum == 0.9
        images = tf.zeros([2, 32, 32, 3])
        train = model(images, training=True, scope="net")
        count = len(tf.global_variables())
        evaluate = model(images, training=False, scope="net")
        assert len(tf.global_variables()) == count  # reused
        bn_layers = {v.op.name.rsplit("/", 1)[0] for v in tf.global_variables() if _last(v) == "gamma"}
        assert len(bn_layers) == 1 + 8 * 2 + 3  # stem, two per block, three shortcuts
        assert all(layer.split("/")[-1].startswith("bn") for layer in bn_layers)
        assert len(train.bn_updates) == 2 * len(bn_layers) == 40
        targets = sorted(u.op.inputs[0].op.name for u in train.bn_updates)
        assert targets == sorted(l + "/" + s for l in bn_layers for s in ("moving_mean", "moving_variance"))
        assert evaluate.bn_updates == [] and tf.get_collection(tf.GraphKeys.UPDATE_OPS) == []
        # Weight decay skips exactly the four BN variables of each BN layer.
        for variable in tf.global_variables():
            assert is_batch_norm_variable(variable) == (_last(variable) in BN_NAMES), variable.op.name
        for bad in (1, None, tf.constant(True)):
            with pytest.raises(TypeError):
                model(images, training=bad, scope="net")


def test_initialisers_are_keras_defaults():
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(4)
        build_model("resnet18-cifar-16", num_classes=10)(tf.zeros([1, 32, 32, 3]), training=False, scope="net")
        variables = tf.global_variables()
    with _session(graph) as session:
        session.run(tf.global_variables_initializer())
        values = dict(zip([v.op.name for v in variables], session.run(variables)))
    kernels = {n: v for n, v in values.items() if n.endswith("/kernel")}
    assert len(kernels) == 1 + 16 + 3 + 1
    for name, kernel in kernels.items():
        field = int(np.prod(kernel.shape[:-2]))
        limit = math.sqrt(6.0 / (field * (kernel.shape[-2] + kernel.shape[-1])))  # glorot uniform
        assert np.abs(kernel).max() <= limit * (1 + 1e-6), name
        if kernel.size >= 2000:
            assert abs(kernel.std() / (limit / math.sqrt(3)) - 1) < 0.1, name
    for name, value in values.items():
        kind = name.split("/")[-1]
        if kind in ("bias", "beta", "moving_mean"):
            assert not value.any(), name
        elif kind in ("gamma", "moving_variance"):
            assert (value == 1).all(), name


def test_registry_entries_and_normalisation():
    assert parse_model_name("resnet18-cifar") == {"width": 64}
    assert parse_model_name("resnet18-cifar-16") == {"width": 16}
    assert is_model_name(SMALL) and not is_model_name("resnet18-cifar-") and not is_model_name("resnet18")
    assert classifier_bias("resnet18-cifar") == classifier_bias(SMALL) == "head/dense/bias"
    model = build_model("resnet18-cifar-16", num_classes=10)
    assert isinstance(model, CifarResNet18) and model.name == "resnet18-cifar-16" and model.width == 16
    assert build_model("resnet18-cifar").name == "resnet18-cifar"
    spec = InputSpec((32, 32, 3), (0, 255), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "RGB", "NHWC")
    assert input_spec("resnet18-cifar") == input_spec(SMALL) == model.input_spec == spec
    for name, complaint in (("resnet18-cifar-0", "WIDTH must be between 1 and 1024 (got 0)"),
                            ("resnet18-cifar-1025", "WIDTH must be between 1 and 1024 (got 1025)")):
        with pytest.raises(UsageError) as caught:
            parse_model_name(name)
        assert caught.value.message == "invalid model '{}': {}".format(name, complaint)
    with pytest.raises(UsageError) as caught:
        parse_model_name("resnet18-cifar-x")
    assert "resnet18-cifar (width 64) or resnet18-cifar-WIDTH, e.g. resnet18-cifar-16" in caught.value.message

    pixels = np.arange(256, dtype=np.float32).reshape(1, 16, 16, 1) * np.ones((1, 1, 1, 3), np.float32)
    graph = tf.Graph()
    with graph.as_default():
        normalised = normalize_input(tf.constant(pixels), spec)
        ops = {op.type for op in graph.get_operations()}
    with _session(graph) as session:
        ours = session.run(normalised)
    np.testing.assert_array_equal(ours, pixels / np.float32(255))  # exactly x/255, as the reference's floats
    assert ours.min() == 0.0 and ours.max() == 1.0 and "Sub" not in ops  # mean 0: no subtraction
