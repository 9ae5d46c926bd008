"""The MixMatch ResNet (mpltool/models/mixmatch_resnet.py): its size, its parity with the tf.layers reference
(google-research/mixmatch libml/models.py `ResNet.classifier`), its initialisers, the calling contract it
shares with WideResNet, and its registry entry."""

import functools
import math

import numpy as np
import pytest

from mpltool.algorithms import common
from mpltool.errors import UsageError
from mpltool.models import (InputSpec, build_model, classifier_bias, input_spec, is_batch_norm_variable,
                            is_model_name, normalize_input, parse_model_name)
from mpltool.models.mixmatch_resnet import MixMatchResNet
from mpltool.recipes import load_recipe
from mpltool.tfv1 import tf

NAME = "mixmatch-resnet-32-3-4"
SMALL = "mixmatch-resnet-4-2-2"  # every code path (first block's pre-activated shortcut, stride 2) in 9 BN layers
BN_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")
FORMS = "mixmatch-resnet-FILTERS-SCALES-REPEAT, e.g. mixmatch-resnet-32-3-4"


def _session(graph):
    return tf.Session(graph=graph, config=tf.ConfigProto(intra_op_parallelism_threads=2,
                                                         inter_op_parallelism_threads=2))


def _last(variable):
    return variable.op.name.split("/")[-1]


def expected_counts(filters, scales, repeat, num_classes, stem=16):
    """(trainable, moving statistics) from the architecture, independently of the model code.

    A k x k conv c -> f with bias has k·k·c·f + f weights; a BN over c channels has 2c trainable
    (gamma, beta) and 2c moving (mean, variance); a block c -> f is bn(c), conv3x3 c->f, bn(f),
    conv3x3 f->f and, when c != f, a 1x1 shortcut c->f; the head is bn(c) and a dense c->K with bias.
    """
    trainable = 3 * 3 * 3 * stem + stem  # stem: 3x3 conv RGB -> 16 with bias
    moving = 0
    channels = stem
    for scale in range(scales):
        width = filters << scale
        for _ in range(repeat):
            trainable += 2 * channels + 2 * width  # bn_1 over the input, bn_2 over the block width
            moving += 2 * channels + 2 * width
            trainable += (9 * channels * width + width) + (9 * width * width + width)  # conv_1, conv_2
            if channels != width:
                trainable += channels * width + width  # 1x1 projection shortcut
            channels = width
    trainable += 2 * channels + channels * num_classes + num_classes  # head bn and dense
    moving += 2 * channels
    return trainable, moving


def _count(variables):
    return sum(int(np.prod(v.shape.as_list())) for v in variables)


def test_parameter_count_matches_the_architecture_and_the_paper():
    with tf.Graph().as_default():
        build_model(NAME, num_classes=10)(tf.zeros([1, 32, 32, 3]), training=True, scope="net")
        trainable = _count(tf.trainable_variables())
        moving = _count([v for v in tf.global_variables() if not v.trainable])
        assert {_last(v) for v in tf.global_variables() if not v.trainable} == {"moving_mean", "moving_variance"}
    assert (trainable, moving) == expected_counts(32, 3, 4, 10)
    # The numbers, as a cross-check of the loop: 448 (stem) + 1,467,648 (blocks) + 256 + 1,290 (head BN,
    # dense); BN covers 1,808 channels in all (16+32 + 6·32, 32+64 + 6·64, 64+128 + 6·128, 128), 2 stats each.
    assert trainable == 448 + 1467648 + 256 + 1290 == 1469642 and moving == 2 * 1808 == 3616
    # The MixMatch paper: "1.5M parameters" for its WRN-28-2.
    assert round(trainable / 1e6, 1) == 1.5


def reference_classifier(x, scales, filters, repeat, training, nclass):
    """libml/models.py ResNet.classifier verbatim but for the scope name and the input normalisation
    (the reference's dataset mean/std are 0/1 on its x·2/255 − 1 pixels: the caller does that)."""
    leaky_relu = functools.partial(tf.nn.leaky_relu, alpha=0.1)
    bn_args = dict(training=training, momentum=0.999)

    def conv_args(k, f):
        return dict(padding='same',
                    kernel_initializer=tf.random_normal_initializer(stddev=tf.rsqrt(0.5 * k * k * f)))

    def residual(x0, filters, stride=1, activate_before_residual=False):
        x = leaky_relu(tf.layers.batch_normalization(x0, **bn_args))
        if activate_before_residual:
            x0 = x

        x = tf.layers.conv2d(x, filters, 3, strides=stride, **conv_args(3, filters))
        x = leaky_relu(tf.layers.batch_normalization(x, **bn_args))
        x = tf.layers.conv2d(x, filters, 3, **conv_args(3, filters))

        if x0.get_shape()[3] != filters:
            x0 = tf.layers.conv2d(x0, filters, 1, strides=stride, **conv_args(1, filters))

        return x0 + x

    with tf.variable_scope('reference', reuse=tf.AUTO_REUSE):
        y = tf.layers.conv2d(x, 16, 3, **conv_args(3, 16))
        for scale in range(scales):
            y = residual(y, filters << scale, stride=2 if scale else 1, activate_before_residual=scale == 0)
            for i in range(repeat - 1):
                y = residual(y, filters << scale)

        y = leaky_relu(tf.layers.batch_normalization(y, **bn_args))
        y = tf.reduce_mean(y, [1, 2])
        logits = tf.layers.dense(y, nclass, kernel_initializer=tf.glorot_normal_initializer())
    return logits


# The registered size, and one whose first block keeps the stem's 16 channels: its shortcut is then
# lrelu(bn(x)) itself, with no projection (a path 32-3-4 never takes).
@pytest.mark.parametrize("name", [NAME, "mixmatch-resnet-16-2-2"])
def test_forward_and_batch_norm_updates_match_the_tf_layers_reference(name):
    size = parse_model_name(name)
    filters, scales, repeat = size["filters"], size["scales"], size["repeat"]
    graph = tf.Graph()
    with graph.as_default():
        # 16x16 rather than 32x32: the network is fully convolutional, and a run's cost here is set up, not
        # arithmetic.
        pixels = tf.constant(np.random.RandomState(0).randint(0, 256, (4, 16, 16, 3)).astype(np.float32))
        model = build_model(name, num_classes=10)
        ours_train = model(normalize_input(pixels, input_spec(name)), training=True, scope="ours")
        ours_eval = model(normalize_input(pixels, input_spec(name)), training=False, scope="ours")
        assert tf.get_collection(tf.GraphKeys.UPDATE_OPS) == []

        reference_input = pixels * (2.0 / 255) - 1.0  # libml/data.py's pixel scaling
        ref_train = reference_classifier(reference_input, scales, filters, repeat, training=True, nclass=10)
        ref_updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        ref_eval = reference_classifier(reference_input, scales, filters, repeat, training=False, nclass=10)
        assert len(tf.get_collection(tf.GraphKeys.UPDATE_OPS)) == len(ref_updates)  # inference adds none

        ours = tf.global_variables("ours/")
        reference = tf.global_variables("reference/")
        # Both create variables in the same order (bn, conv, bn, conv, shortcut per block): pair them by
        # creation order, and check each pair has the same role and shape so a mis-ordering cannot pass.
        # Stem 2; 2 BN x 4 and 2 convs x 2 per block; 2 per width-changing shortcut (the first block's only
        # if filters != 16); head BN 4 and dense 2.
        blocks, shortcuts = scales * repeat, scales - 1 + (filters != 16)
        assert len(ours) == len(reference) == 2 + blocks * (8 + 4) + 2 * shortcuts + 4 + 2
        for mine, theirs in zip(ours, reference):
            assert _last(mine) == _last(theirs), (mine.op.name, theirs.op.name)
            assert mine.shape.as_list() == theirs.shape.as_list(), (mine.op.name, theirs.op.name)

        # The same random values into both (not the initial 1/0 BN values or zero biases, which would hide a
        # swap), fed through placeholders in one run: on this MKL build each new set of fetches costs ~1 s of
        # graph rewriting, so the test makes as few runs as it can.
        rng = np.random.RandomState(2)
        feeds, loads = {}, []
        for mine, theirs in zip(ours, reference):
            shape, kind = mine.shape.as_list(), _last(mine)
            if kind == "kernel":  # He over the fan-out, k·k·c_out (the dense kernel as a 1x1 conv)
                fan_out = int(np.prod(shape[:-2])) * shape[-1]
                value = rng.normal(0.0, math.sqrt(2.0 / fan_out), shape)
            elif kind in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            else:  # beta, moving_mean, bias
                value = rng.normal(0.0, 0.1, shape)
            placeholder = tf.placeholder(tf.float32, shape)
            feeds[placeholder] = value.astype(np.float32)
            loads += [mine.assign(placeholder), theirs.assign(placeholder)]
        moving = [(m, t) for m, t in zip(ours, reference) if not m.trainable]
        moving_ours, moving_ref = [m for m, _ in moving], [t for _, t in moving]

    with _session(graph) as session:
        session.run(loads, feeds)
        ours_train_logits, ours_eval_logits, ref_train_logits, ref_eval_logits, before = session.run(
            [ours_train.logits, ours_eval.logits, ref_train, ref_eval, moving_ours])
        session.run([ours_train.bn_updates, ref_updates])
        after_ours, after_ref = session.run([moving_ours, moving_ref])
    assert np.abs(ours_eval_logits).max() > 0.1  # the comparison is not between two near-zero vectors
    # With random moving statistics the inference logits reach ~100, hence a relative tolerance as well.
    np.testing.assert_allclose(ours_train_logits, ref_train_logits, rtol=1e-5, atol=1e-5, err_msg="training mode")
    np.testing.assert_allclose(ours_eval_logits, ref_eval_logits, rtol=1e-5, atol=1e-5, err_msg="inference mode")
    assert not np.allclose(ours_train_logits, ours_eval_logits, atol=1e-3)  # batch vs moving stats differ
    for (mine, _), old, new, expected in zip(moving, before, after_ours, after_ref):
        np.testing.assert_allclose(new, expected, rtol=0, atol=1e-6, err_msg=mine.op.name)
        assert np.abs(new - old).max() > 1e-5, mine.op.name  # the update did move the statistics


def test_initialisers_match_the_reference():
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(3)
        build_model(NAME, num_classes=10)(tf.zeros([1, 32, 32, 3]), training=False, scope="net")
        variables = tf.global_variables()
    with _session(graph) as session:
        session.run(tf.global_variables_initializer())
        values = dict(zip([v.op.name for v in variables], session.run(variables)))

    kernels = {n: v for n, v in values.items() if n.endswith("kernel") and v.ndim == 4}
    assert len(kernels) == 1 + 12 * 2 + 3  # stem, two per block, the three width-changing shortcuts
    checked = set()
    for name, kernel in kernels.items():
        k, _, _, f_out = kernel.shape
        # The reference: stddev = rsqrt(0.5·k·k·f) = sqrt(2 / (k·k·f_out)), He over the fan-out.
        expected = math.sqrt(2.0 / (k * k * f_out))
        if kernel.size >= 2048:  # the sample std is within ~1.6% of the true one: 10% is > 6 standard errors
            assert abs(kernel.std() / expected - 1) < 0.1, (name, kernel.std(), expected)
            assert abs(kernel.mean()) < 0.1 * expected, name
            checked.add((k, kernel.shape[2], f_out))
    assert {(3, 64, 64), (3, 128, 128), (1, 32, 64), (1, 64, 128)} <= checked

    dense = values["net/{}/head/dense/kernel".format(NAME)]
    assert dense.shape == (128, 10)
    # glorot normal = truncated normal at 2 sigma with sigma = sqrt(2 / (fan_in + fan_out)) / 0.8796, so the
    # sample std is sqrt(2 / (fan_in + fan_out)) and nothing lies beyond 2 sigma.
    glorot = math.sqrt(2.0 / (128 + 10))
    assert abs(dense.std() / glorot - 1) < 0.1
    assert np.abs(dense).max() <= 2 * glorot / 0.87962566103423978 + 1e-6
    # Same std and bound as glorot uniform: the shape tells them apart. Kurtosis E[z^4]/E[z^2]^2 is 2.37 for
    # a normal truncated at 2 sigma, 1.8 for a uniform, 3 for a normal (standard error here ~0.05).
    kurtosis = np.mean(dense ** 4) / np.mean(dense ** 2) ** 2
    assert 2.1 < kurtosis < 2.65, kurtosis

    biases = [n for n in values if n.endswith("/bias")]
    assert len(biases) == 1 + 12 * 2 + 3 + 1
    for name in biases:
        assert not values[name].any(), name
    for kind, initial in (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0), ("moving_variance", 1.0)):
        names = [n for n in values if n.endswith("/" + kind)]
        assert len(names) == 25
        for name in names:
            assert (values[name] == initial).all(), name


def test_calling_contract():
    with tf.Graph().as_default():
        model = build_model(SMALL, num_classes=7)
        images = tf.zeros([2, 32, 32, 3])
        train = model(images, training=True, scope="net")
        count = len(tf.global_variables())
        evaluate = model(images, training=False, scope="net")
        again = model(images, training=True, scope="net")
        assert len(tf.global_variables()) == count  # the later calls reuse every variable
        model(images, training=False, scope="other")
        assert len(tf.global_variables()) == 2 * count  # another scope is another network

        assert train.logits.shape.as_list() == [2, 7] == evaluate.logits.shape.as_list()
        assert evaluate.bn_updates == []
        assert tf.get_collection(tf.GraphKeys.UPDATE_OPS) == []
        bn_layers = {v.op.name.rsplit("/", 1)[0] for v in tf.global_variables("net/") if _last(v) == "gamma"}
        assert len(bn_layers) == 2 * 2 * 2 + 1  # two per block (2 scales x 2 repeats) and the head's
        for output in (train, again):
            assert len(output.bn_updates) == 2 * len(bn_layers)
            ops = [update.op for update in output.bn_updates]
            assert all(op.type == "AssignSub" for op in ops)
            targets = sorted(op.inputs[0].op.name for op in ops)
            assert targets == sorted(layer + "/" + stat for layer in bn_layers
                                     for stat in ("moving_mean", "moving_variance"))

        for bad in (1, 0, None, "True", tf.constant(True)):
            with pytest.raises(TypeError):
                model(images, training=bad, scope="net")


def test_registry_entry_and_input_spec(run):
    model = build_model(NAME)
    assert isinstance(model, MixMatchResNet)
    assert (model.name, model.num_classes, (model.filters, model.scales, model.repeat)) == (NAME, 10, (32, 3, 4))
    spec = InputSpec((32, 32, 3), (0, 255), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "RGB", "NHWC")
    assert input_spec(NAME) == spec == model.input_spec
    assert is_model_name(NAME) and parse_model_name(NAME) == {"filters": 32, "scales": 3, "repeat": 4}
    assert classifier_bias(NAME) == "head/dense/bias"

    pixels = np.array([0.0, 127.5, 255.0], np.float32).reshape(1, 3, 1, 1) * np.ones((1, 1, 1, 3), np.float32)
    normalised = run(lambda: normalize_input(tf.constant(pixels), spec))
    assert normalised.dtype == np.float32
    assert normalised[0, :, 0, :].tolist() == [[-1.0] * 3, [0.0] * 3, [1.0] * 3]  # exactly

    # The recipe validator asks the registry; a model name it accepts loads.
    assert load_recipe("mpl-demo", ["model=" + NAME]).model == NAME
    with pytest.raises(UsageError):
        load_recipe("mpl-demo", ["model=mixmatch-resnet-0-3-4"])


def test_classifier_bias_names_the_class_count_variable():
    with tf.Graph().as_default():
        model = build_model(SMALL, num_classes=13)
        model(tf.zeros([1, 32, 32, 3]), training=False, scope="net")
        found = [v for v in tf.global_variables()
                 if v.op.name == "net/{}/{}".format(model.name, classifier_bias(SMALL))]
        assert len(found) == 1 and found[0].shape.as_list() == [13]


@pytest.mark.parametrize("name, complaint", [
    ("mixmatch-resnet-0-3-4", "filters must be between 1 and 1024 (got 0)"),
    ("mixmatch-resnet-1025-3-4", "filters must be between 1 and 1024 (got 1025)"),
    ("mixmatch-resnet-32-0-4", "scales must be between 1 and 8 (got 0)"),
    ("mixmatch-resnet-32-9-4", "scales must be between 1 and 8 (got 9)"),
    ("mixmatch-resnet-32-3-0", "repeat must be between 1 and 100 (got 0)"),
    ("mixmatch-resnet-32-3-101", "repeat must be between 1 and 100 (got 101)"),
])
def test_out_of_range_sizes_are_usage_errors(name, complaint):
    with pytest.raises(UsageError) as caught:
        parse_model_name(name)
    assert caught.value.message == "invalid model '{}': {}".format(name, complaint)
    with pytest.raises(UsageError):
        build_model(name)


def test_every_bad_size_is_named_and_the_limits_are_inclusive():
    with pytest.raises(UsageError) as caught:
        parse_model_name("mixmatch-resnet-0-9-101")
    assert caught.value.message.count("must be between") == 3
    assert parse_model_name("mixmatch-resnet-1-1-1") == {"filters": 1, "scales": 1, "repeat": 1}
    assert parse_model_name("mixmatch-resnet-1024-8-100") == {"filters": 1024, "scales": 8, "repeat": 100}


@pytest.mark.parametrize("name", ["mixmatch-resnet-32-3", "mixmatch-resnet-32-3-4-5", "mixmatch-resnet--1-3-4",
                                  "mixmatch-resnet-a-3-4", "mixmatch-resnet-32-3-4 ", "resnet-32-3-4"])
def test_malformed_names_list_the_expected_forms(name):
    assert not is_model_name(name)
    with pytest.raises(UsageError) as caught:
        parse_model_name(name)
    message = caught.value.message
    assert message.startswith("unknown model {!r}: expected ".format(name))
    assert FORMS in message and "wrn-DEPTH-WIDTH" in message


def test_weight_decay_skips_exactly_the_batch_norm_variables():
    graph = tf.Graph()
    with graph.as_default():
        build_model(SMALL)(tf.zeros([1, 32, 32, 3]), training=True, scope="net")
        everything = tf.global_variables()
        # A BN variable is one of BN's four (by its own name, not the scope rule under test).
        for variable in everything:
            assert is_batch_norm_variable(variable) == (_last(variable) in BN_NAMES), variable.op.name
        assert sum(is_batch_norm_variable(v) for v in everything) == 4 * 9
        variables = tf.trainable_variables()
        decayed = common.add_weight_decay(variables, [tf.ones_like(v) for v in variables], 0.1)
        # Non-zero weights everywhere, so "decayed" and "not decayed" differ for every variable.
        fill = [v.assign(tf.fill(tf.shape(v), 2.0)) for v in variables]
    with _session(graph) as session:
        session.run(tf.global_variables_initializer())
        session.run(fill)
        gradients = session.run(decayed)
    for variable, gradient in zip(variables, gradients):
        expected = 1.0 if _last(variable) in ("gamma", "beta") else 1.2
        np.testing.assert_allclose(gradient, expected, rtol=1e-6, err_msg=variable.op.name)
