"""MASF's building blocks (mpltool.algorithms.masf) against numpy computed independently.

Each test builds its own graph: several count variables or look at names.
"""

import collections
import itertools

import numpy as np
import pytest

from mpltool.algorithms import masf
from mpltool.tfv1 import tf

ModelOutput = collections.namedtuple("ModelOutput", ["logits", "bn_updates", "features"])


def session_run(graph, fetches, feed_dict=None, init=True):
    with tf.Session(graph=graph, config=tf.ConfigProto(intra_op_parallelism_threads=2,
                                                       inter_op_parallelism_threads=2)) as session:
        if init:
            session.run(tf.global_variables_initializer())
        return session.run(fetches, feed_dict)


# ----------------------------------------------------------------------------------------------- numpy

def np_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def np_class_alignment(logits_a, labels_a, logits_b, labels_b, num_classes, temperature=2.0):
    """The reference's kd(), class by class with loops, and main.py's bool_indicator."""
    loss, mask = 0.0, np.zeros(num_classes)
    for c in range(num_classes):
        in_a, in_b = labels_a == c, labels_b == c
        mean_a = logits_a[in_a].sum(axis=0) / (in_a.sum() + 1e-16)
        mean_b = logits_b[in_b].sum(axis=0) / (in_b.sum() + 1e-16)
        p = np.clip(np_softmax(mean_b / temperature), 1e-8, 1.0)
        q = np.clip(np_softmax(mean_a / temperature), 1e-8, 1.0)
        l_c = 0.5 * (np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p)))
        mask[c] = float(in_a.any() and in_b.any())
        loss += mask[c] * l_c
    return loss / num_classes, mask


def np_triplet_semihard(labels, embeddings, margin):
    """Semi-hard mining as tf.contrib defines it; also returns how many pairs had no semi-hard negative."""
    e = embeddings.astype(np.float64)
    d = ((e[:, None, :] - e[None, :, :]) ** 2).sum(axis=-1)
    terms, fallbacks = [], 0
    for a, p in itertools.permutations(range(len(labels)), 2):
        if labels[a] != labels[p]:
            continue
        negatives = d[a][labels != labels[a]]
        semi_hard = negatives[negatives > d[a, p]]
        if semi_hard.size:
            d_an = semi_hard.min()
        else:
            d_an = negatives.max()
            fallbacks += 1
        terms.append(max(d[a, p] - d_an + margin, 0.0))
    return float(np.mean(terms)), fallbacks


def np_leaky(x, slope=0.2):
    return np.where(x > 0, x, slope * x)


# ------------------------------------------------------------------------------------ a tiny model

TINY_IN, TINY_HIDDEN, TINY_CLASSES = 5, 6, 3
TINY_SLOPE = 0.25  # exact in binary: the LeakyRelu op keeps its slope as a float32 attribute


def tiny_weights(seed=0):
    rng = np.random.RandomState(seed)
    return collections.OrderedDict([
        ("hidden/kernel", rng.randn(TINY_IN, TINY_HIDDEN) * 0.7),
        ("hidden/bias", rng.randn(TINY_HIDDEN) * 0.3),
        ("logits/kernel", rng.randn(TINY_HIDDEN, TINY_CLASSES) * 0.7),
        ("logits/bias", rng.randn(TINY_CLASSES) * 0.3),
    ])


class TinyModel:
    """Two float64 dense layers under the model's own string scope, the calling contract of mpltool's models."""

    def __init__(self, initial):
        self.initial = initial

    def __call__(self, images, training, scope):
        with tf.variable_scope(scope, reuse=tf.AUTO_REUSE):
            params = {}
            for name, value in self.initial.items():
                layer, kind = name.split("/")
                with tf.variable_scope(layer):
                    params[name] = tf.get_variable(kind, value.shape, tf.float64,
                                                   initializer=tf.constant_initializer(value))
            hidden = tf.nn.leaky_relu(tf.matmul(images, params["hidden/kernel"]) + params["hidden/bias"],
                                      TINY_SLOPE)
            logits = tf.matmul(hidden, params["logits/kernel"]) + params["logits/bias"]
        return ModelOutput(logits=logits, bn_updates=[], features=hidden)


def np_tiny_forward(w, x):
    pre = x @ w["hidden/kernel"] + w["hidden/bias"]
    hidden = np_leaky(pre, TINY_SLOPE)
    return pre, hidden, hidden @ w["logits/kernel"] + w["logits/bias"]


def np_tiny_inner_gradient(w, batches):
    """∂/∂w of Σ_i ½·(CE_A,i + CE_A',i), backpropagated by hand."""
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    for x, y in batches:
        pre, hidden, logits = np_tiny_forward(w, x)
        dz = 0.5 * (np_softmax(logits) - np.eye(TINY_CLASSES)[y])
        grads["logits/kernel"] += hidden.T @ dz
        grads["logits/bias"] += dz.sum(axis=0)
        dpre = (dz @ w["logits/kernel"].T) * np.where(pre > 0, 1.0, TINY_SLOPE)
        grads["hidden/kernel"] += x.T @ dpre
        grads["hidden/bias"] += dpre.sum(axis=0)
    return grads


def np_clip_by_norm(g, clip_norm):
    return g * clip_norm / max(np.sqrt((g ** 2).sum()), clip_norm)


def tiny_batches(seed=1, n=4):
    rng = np.random.RandomState(seed)
    return [(rng.randn(n, TINY_IN), rng.randint(0, TINY_CLASSES, size=n)) for _ in range(2)]


def build_inner_step(weights, batches, inner_lr, clip_norm):
    """The model at θ on A and A', the inner objective, θ'; returns (model, variables, fast mapping)."""
    model = TinyModel(weights)
    ces = []
    for x, y in batches:
        logits = model(tf.constant(x), training=True, scope="model").logits
        ces.append(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(y), logits=logits))
    variables = [v for v in tf.trainable_variables() if v.op.name.startswith("model/")]
    fast = masf.fast_weights(masf.inner_objective(*ces), variables, inner_lr, clip_norm)
    return model, variables, fast


# --------------------------------------------------------------------------------- class alignment

CLASSES = 4


def alignment_case(seed, labels_a, labels_b):
    rng = np.random.RandomState(seed)
    return (rng.randn(len(labels_a), CLASSES).astype(np.float32) * 2.0, np.array(labels_a, np.int32),
            rng.randn(len(labels_b), CLASSES).astype(np.float32) * 2.0, np.array(labels_b, np.int32))


@pytest.mark.parametrize("labels_a, labels_b, expected_mask", [
    ([0, 1, 1, 3, 3, 3], [1, 2, 3, 3, 1], [0, 1, 0, 1]),   # 0 only in A, 2 only in B
    ([0, 1, 2, 3, 2, 0], [3, 2, 1, 0, 0], [1, 1, 1, 1]),   # every class on both sides
])
def test_class_alignment_loss_and_mask(labels_a, labels_b, expected_mask):
    logits_a, labels_a, logits_b, labels_b = alignment_case(3, labels_a, labels_b)
    graph = tf.Graph()
    with graph.as_default():
        loss, mask = masf.class_alignment_loss(tf.constant(logits_a), tf.constant(labels_a),
                                               tf.constant(logits_b), tf.constant(labels_b), CLASSES)
        swapped, _ = masf.class_alignment_loss(tf.constant(logits_b), tf.constant(labels_b),
                                               tf.constant(logits_a), tf.constant(labels_a), CLASSES)
    got_loss, got_mask, got_swapped = session_run(graph, [loss, mask, swapped], init=False)
    want_loss, want_mask = np_class_alignment(logits_a.astype(np.float64), labels_a,
                                              logits_b.astype(np.float64), labels_b, CLASSES)
    np.testing.assert_array_equal(got_mask, expected_mask)
    np.testing.assert_array_equal(want_mask, expected_mask)
    assert want_loss > 1e-3
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(got_swapped, want_loss, rtol=1e-5)  # symmetric
    if want_mask.sum() < CLASSES:  # divided by the class count, not by the mask's sum
        assert abs(want_loss * CLASSES / want_mask.sum() - got_loss) > 1e-3


def test_class_alignment_gradient_is_finite_with_absent_class():
    logits_a, labels_a, logits_b, labels_b = alignment_case(5, [0, 0, 1], [1, 1, 3])
    graph = tf.Graph()
    with graph.as_default():
        za, zb = tf.constant(logits_a), tf.constant(logits_b)
        loss, _ = masf.class_alignment_loss(za, tf.constant(labels_a), zb, tf.constant(labels_b), CLASSES)
        grads = tf.gradients(loss, [za, zb])
    got = session_run(graph, grads, init=False)
    assert all(np.isfinite(g).all() for g in got)
    np.testing.assert_array_equal(got[0][:2], 0.0)  # class 0 is masked: its rows get no gradient


def test_global_alignment_averages_both_meta_train_domains():
    logits_a, labels_a, logits_b, labels_b = alignment_case(7, [0, 1, 2, 2], [0, 2, 3, 3, 1])
    rng = np.random.RandomState(8)
    logits_a1, labels_a1 = rng.randn(5, CLASSES).astype(np.float32), np.array([3, 3, 1, 0, 0], np.int32)
    graph = tf.Graph()
    with graph.as_default():
        c = tf.constant
        loss, mask_ba, mask_ba1 = masf.global_alignment_loss(c(logits_b), c(labels_b), c(logits_a), c(labels_a),
                                                             c(logits_a1), c(labels_a1), CLASSES)
    got, got_ba, got_ba1 = session_run(graph, [loss, mask_ba, mask_ba1], init=False)
    l_ba, m_ba = np_class_alignment(logits_a, labels_a, logits_b, labels_b, CLASSES)
    l_ba1, m_ba1 = np_class_alignment(logits_a1, labels_a1, logits_b, labels_b, CLASSES)
    np.testing.assert_allclose(got, 0.5 * (l_ba + l_ba1), rtol=1e-5)
    np.testing.assert_array_equal(got_ba, m_ba)
    np.testing.assert_array_equal(got_ba1, m_ba1)
    np.testing.assert_array_equal(m_ba, [1, 1, 1, 0])
    np.testing.assert_array_equal(m_ba1, [1, 1, 0, 1])


# ------------------------------------------------------------------------------------ triplet loss

def test_triplet_semihard_loss_matches_numpy_mining():
    # Anchor 0 (class 0) at the origin; its positive 1 far away (d = 25) and every negative closer:
    # (0, 1) has no semi-hard negative and falls back to the largest negative distance.
    embeddings = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 1.0], [1.5, 0.5], [0.0, -2.2],
                           [2.0, 2.0], [-1.0, 0.3], [0.4, -0.7], [3.0, -1.0]], np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2], np.int32)
    margin = 1.5
    graph = tf.Graph()
    with graph.as_default():
        loss = masf.triplet_semihard_loss(tf.constant(labels), tf.constant(embeddings), margin)
    got = session_run(graph, loss, init=False)
    want, fallbacks = np_triplet_semihard(labels, embeddings, margin)
    assert fallbacks >= 1
    d = ((embeddings[0] - embeddings) ** 2).sum(axis=-1)
    assert d[1] > d[labels != 0].max()  # the constructed anchor-positive pair without semi-hard negative
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_triplet_semihard_loss_random_batch():
    rng = np.random.RandomState(11)
    embeddings = (rng.randn(15, 4) * 2.0).astype(np.float32)
    labels = np.repeat(np.arange(3), 5).astype(np.int32)
    graph = tf.Graph()
    with graph.as_default():
        losses = [masf.triplet_semihard_loss(tf.constant(labels), tf.constant(embeddings), m) for m in (10.0, 0.5)]
    got = session_run(graph, losses, init=False)
    for value, margin in zip(got, (10.0, 0.5)):
        np.testing.assert_allclose(value, np_triplet_semihard(labels, embeddings, margin)[0], rtol=1e-5)


# ---------------------------------------------------------------------------------- metric network

def test_metric_network_shapes_names_reuse_and_forward():
    rng = np.random.RandomState(2)
    features = rng.randn(3, 16).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        out = masf.metric_network(tf.constant(features))
        count = len(tf.global_variables())
        again = masf.metric_network(tf.constant(features[:2]))
        assert len(tf.global_variables()) == count
        variables = {v.op.name: v for v in tf.global_variables()}
        assert {name: v.shape.as_list() for name, v in variables.items()} == {
            "metric/fc1/kernel": [16, 1024], "metric/fc1/bias": [1024],
            "metric/fc2/kernel": [1024, 256], "metric/fc2/bias": [256]}
        assert set(variables) == set(v.op.name for v in tf.trainable_variables())
        fetched = session_run(graph, [out, again, variables])
    got, got_again, w = fetched
    assert got.shape == (3, 256) and got_again.shape == (2, 256)
    hidden = np_leaky(features @ w["metric/fc1/kernel"] + w["metric/fc1/bias"])
    want = np_leaky(hidden @ w["metric/fc2/kernel"] + w["metric/fc2/bias"])
    assert (want < 0).any()  # the last layer is leaky too
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_again, want[:2], rtol=1e-4, atol=1e-5)
    # Glorot-uniform biases, as tf.get_variable's default in the reference: U(±sqrt(6 / (n + n))).
    for name, n in (("metric/fc1/bias", 1024), ("metric/fc2/bias", 256)):
        limit = np.sqrt(6.0 / (2 * n))
        assert np.abs(w[name]).max() <= limit and np.abs(w[name]).max() > 0.5 * limit


# ------------------------------------------------------------------------------------ inner update

def test_fast_weights_are_clipped_first_order_sgd_step():
    weights, batches, inner_lr = tiny_weights(), tiny_batches(), 0.1
    grads = np_tiny_inner_gradient(weights, batches)
    norms = sorted(np.sqrt((g ** 2).sum()) for g in grads.values())
    clip_norm = 0.5 * (norms[1] + norms[2])  # two tensors clipped, two not
    graph = tf.Graph()
    with graph.as_default():
        _, variables, fast = build_inner_step(weights, batches, inner_lr, clip_norm)
        assert list(fast) == variables
        names = [v.op.name[len("model/"):] for v in variables]
    got = session_run(graph, list(fast.values()))
    for name, value in zip(names, got):
        want = weights[name] - inner_lr * np_clip_by_norm(grads[name], clip_norm)
        np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-12)
        assert np.abs(value - weights[name]).max() > 1e-3


def test_use_weights_forward_equals_model_with_updated_weights_assigned():
    weights, batches = tiny_weights(), tiny_batches()
    x = np.random.RandomState(4).randn(3, TINY_IN)
    graph = tf.Graph()
    with graph.as_default():
        model, variables, fast = build_inner_step(weights, batches, 0.1, 1.0)
        count = len(tf.global_variables())
        seen = []

        def spy(getter, name, *args, **kwargs):  # a getter of the model's own, inside ours
            seen.append(name)
            return getter(name, *args, **kwargs)

        with tf.name_scope("outer"):
            with masf.use_weights(fast):
                at_fast = model(tf.constant(x), training=True, scope="model")
                with tf.variable_scope("model", reuse=True, custom_getter=spy):
                    inner_kernel = tf.get_variable("hidden/kernel", dtype=tf.float64)
        assert len(tf.global_variables()) == count  # no variable made
        assert seen == ["model/hidden/kernel"] and inner_kernel is fast[variables[0]]
        assert at_fast.logits.op.name.startswith("outer/model/")  # name scopes as without the block
        at_theta = model(tf.constant(x), training=True, scope="model")
        assert tf.get_variable_scope().custom_getter is None  # the block is left
        # A copy of the model whose variables hold θ', for the plain forward pass.
        copy = model(tf.constant(x), training=True, scope="copy")
        copies = [v for v in tf.global_variables() if v.op.name.startswith("copy/")]
        assign = [tf.assign(c, fast[v]) for c, v in zip(copies, variables)]
        init = tf.global_variables_initializer()
    with tf.Session(graph=graph) as session:
        session.run(init)
        logits_fast, logits_theta, fast_values = session.run([at_fast.logits, at_theta.logits, list(fast.values())])
        session.run(assign)
        logits_copy = session.run(copy.logits)
    np.testing.assert_allclose(logits_fast, logits_copy, rtol=1e-12)
    np.testing.assert_allclose(logits_fast, np_tiny_forward(
        dict(zip(weights, fast_values)), x)[2], rtol=1e-10)
    np.testing.assert_allclose(logits_theta, np_tiny_forward(weights, x)[2], rtol=1e-10)
    assert np.abs(logits_fast - logits_theta).max() > 1e-3


def test_gradient_through_fast_weights_is_first_order():
    """∂L(θ')/∂θ = (∂L/∂θ)(θ'): the Jacobian ∂θ'/∂θ is the identity, no second-order terms."""
    weights, batches = tiny_weights(), tiny_batches()
    rng = np.random.RandomState(6)
    x, y = rng.randn(4, TINY_IN), rng.randint(0, TINY_CLASSES, size=4)

    def ce(output):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(y),
                                                                             logits=output.logits))

    graph = tf.Graph()
    with graph.as_default():
        model, variables, fast = build_inner_step(weights, batches, 0.1, 1.0)
        with masf.use_weights(fast):
            outer = ce(model(tf.constant(x), training=True, scope="model"))
        through_theta = tf.gradients(outer, variables)
        copy_loss = ce(model(tf.constant(x), training=True, scope="copy"))
        copies = [v for v in tf.global_variables() if v.op.name.startswith("copy/")]
        at_copy = tf.gradients(copy_loss, copies)
        assign = [tf.assign(c, fast[v]) for c, v in zip(copies, variables)]
        init = tf.global_variables_initializer()
    with tf.Session(graph=graph) as session:
        session.run(init)
        session.run(assign)
        got, want = session.run([through_theta, at_copy])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
        assert np.abs(w).max() > 1e-4


def test_fast_weights_unreached_variable_keeps_its_value():
    graph = tf.Graph()
    with graph.as_default():
        used = tf.get_variable("used", initializer=tf.constant([3.0, 4.0]))
        unused = tf.get_variable("unused", initializer=tf.constant([1.0, 2.0]))
        fast = masf.fast_weights(tf.reduce_sum(used ** 2), [used, unused], inner_lr=0.5, clip_norm=1.0)
    got_used, got_unused = session_run(graph, [fast[used], fast[unused]])
    np.testing.assert_allclose(got_used, [3.0 - 0.5 * 0.6, 4.0 - 0.5 * 0.8], rtol=1e-6)  # g=(6,8), |g|=10
    np.testing.assert_allclose(got_unused, [1.0, 2.0])


# -------------------------------------------------------------------------------------- episodes

def test_episode_domains_draws_every_order():
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        permutation = masf.episode_domains(3, seed=1)
    draws = 600
    with tf.Session(graph=graph) as session:
        got = [tuple(session.run(permutation)) for _ in range(draws)]
    counts = collections.Counter(got)
    assert set(counts) == set(itertools.permutations(range(3)))
    assert min(counts.values()) > draws / 6 * 0.6  # roughly uniform


def test_select_episode_and_metric_batch_pick_the_right_rows():
    domains, n = 3, 6
    images = np.arange(domains * n * 2, dtype=np.float32).reshape(domains, n, 2)
    labels = (np.arange(domains * n) % 7).reshape(domains, n).astype(np.int32)
    graph = tf.Graph()
    with graph.as_default():
        permutation = tf.placeholder(tf.int32, [domains])
        episode = masf.select_episode(tf.constant(images), tf.constant(labels), permutation)
        group = masf.metric_batch(episode, per_domain=n // 3)
    with tf.Session(graph=graph) as session:
        for order in itertools.permutations(range(domains)):
            got, got_group = session.run([episode, group], {permutation: order})
            for batch, domain in zip(got, order):
                np.testing.assert_array_equal(batch.images, images[domain])
                np.testing.assert_array_equal(batch.labels, labels[domain])
            np.testing.assert_array_equal(got_group[0], np.concatenate([images[d][:2] for d in order]))
            np.testing.assert_array_equal(got_group[1], np.concatenate([labels[d][:2] for d in order]))


def test_update_variable_lists():
    graph = tf.Graph()
    with graph.as_default():
        model_vars = [tf.get_variable("model/w", [2]), tf.get_variable("model/fc8/w", [2])]
        metric_vars = [tf.get_variable("metric/fc1/kernel", [2])]
        lists = masf.update_variable_lists(model_vars, metric_vars)
        assert lists.task == model_vars
        assert lists.meta == model_vars + metric_vars
        assert lists.metric == metric_vars
        with pytest.raises(ValueError):
            masf.update_variable_lists(model_vars, metric_vars + model_vars[:1])


def test_use_weights_with_a_registered_network():
    """WRN-10-1: batch-norm statistics pass through the getter, no variable is made, and θ' = θ (lr 0)
    gives the θ forward pass back."""
    from mpltool.algorithms import common
    from mpltool.models import build_model

    graph = tf.Graph()
    with graph.as_default():
        model = build_model("wrn-10-1", num_classes=3)
        x = tf.constant(np.random.RandomState(0).rand(2, 32, 32, 3).astype(np.float32))
        at_theta = model(x, training=False, scope="model").logits
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant([0, 2]), logits=at_theta)
        variables = common.trainable(common.network_variables("model"))
        count = len(tf.global_variables())
        logits = []
        for inner_lr in (0.0, 0.1):
            with masf.use_weights(masf.fast_weights(masf.inner_objective(ce, ce), variables, inner_lr, 2.0)):
                logits.append(model(x, training=False, scope="model").logits)
        assert len(tf.global_variables()) == count
        fetched = session_run(graph, [at_theta] + logits)
    theta, same, moved = fetched
    np.testing.assert_allclose(same, theta, rtol=1e-6, atol=1e-6)
    assert np.abs(moved - theta).max() > 1e-3


def test_a_batch_without_positive_pairs_has_zero_triplet_loss_and_finite_gradients():
    from mpltool.algorithms.masf import triplet_semihard_loss

    graph = tf.Graph()
    with graph.as_default():
        embeddings = tf.constant(np.random.RandomState(0).normal(size=(6, 4)).astype(np.float32))
        distinct = triplet_semihard_loss(tf.constant([0, 1, 2, 3, 4, 5]), embeddings)
        paired = triplet_semihard_loss(tf.constant([0, 0, 2, 3, 4, 5]), embeddings)
        gradient = tf.gradients(distinct, embeddings)[0]
        with tf.Session(graph=graph) as session:
            loss, grad, with_pair = session.run([distinct, gradient, paired])
    assert loss == 0.0 and np.all(grad == 0.0)
    assert np.isfinite(with_pair) and with_pair > 0.0  # one pair, margin 10 over unit-scale distances
