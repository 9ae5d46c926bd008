"""The MPL step against independent computations.

Three kinds of networks:
- `TinyNet`, a float64 two-layer net on flattened images with no batch norm and no dropout, so every
  number of a step (losses, h, both gradient updates, the EMA) is recomputed in numpy here, gradients
  by central finite differences;
- `BnNet`, TinyNet with a batch-norm layer, whose batch statistics and moving statistics are recomputed
  in numpy: which images each call normalises together, and which calls update the moving statistics;
- wrn-10-1, the real model at B=2, uda_data=2, for what depends on dropout, scopes and the real BN.
"""

import collections

import numpy as np
import pytest

from mpltool.models import build_model
from mpltool.models import is_batch_norm_variable
from mpltool.models.wrn import ModelOutput
from mpltool.recipes import load_recipe
from mpltool.tfv1 import tf
from mpltool.algorithms import common, mpl

B, UDA_DATA, CLASSES = 2, 2, 3
U = B * UDA_DATA
REQUIRED_METRICS = {"teacher_loss", "labelled_ce", "uda_loss", "uda_mask_rate", "uda_weight", "student_loss",
                    "student_ce_old", "student_ce_new", "h", "h_baseline", "teacher_lr", "student_lr"}


# ----------------------------------------------------------------------------------------------- numpy

def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_ce(targets, logits):
    return -(targets * np_log_softmax(logits)).sum(axis=-1)


def np_smooth(p, ls):
    return p * (1.0 - ls) + ls / p.shape[-1]


def np_onehot(indices, depth):
    return np.eye(depth)[indices]


def central_differences(fn, weights, eps=1e-5):
    """d fn / d weights for a list of arrays, one parameter at a time."""
    grads = []
    for index, array in enumerate(weights):
        grad = np.zeros_like(array)
        for position in np.ndindex(array.shape):
            shifted = [w.copy() for w in weights]
            shifted[index][position] += eps
            plus = fn(shifted)
            shifted[index][position] -= 2 * eps
            grad[position] = (plus - fn(shifted)) / (2 * eps)
        grads.append(grad)
    return grads


# ------------------------------------------------------------------------------------------ tiny model

class TinyNet:
    """logits = tanh(x·W1)·W2 + b in float64; each scope starts from its own fixed weights."""

    HIDDEN = 5

    def __init__(self, in_dim, num_classes):
        self.in_dim, self.num_classes = in_dim, num_classes

    def initial_weights(self, scope):
        rng = np.random.RandomState({"teacher": 1, "student": 2, "ema": 3}[scope])
        return [rng.randn(self.in_dim, self.HIDDEN) * 2.0 / np.sqrt(self.in_dim),
                rng.randn(self.HIDDEN, self.num_classes) * 1.5,
                rng.randn(self.num_classes) * 0.5]

    def __call__(self, images, training, scope):
        names = ["hidden/kernel", "dense/kernel", "dense/bias"]
        with tf.variable_scope(scope, reuse=tf.AUTO_REUSE), tf.variable_scope("tiny"):
            w1, w2, b = [tf.get_variable(name, dtype=tf.float64, initializer=tf.constant(value))
                         for name, value in zip(names, self.initial_weights(scope))]
        x = tf.cast(tf.reshape(images, [-1, self.in_dim]), tf.float64)
        return ModelOutput(logits=tf.matmul(tf.tanh(tf.matmul(x, w1)), w2) + b, bn_updates=[])

    @staticmethod
    def numpy(weights, images):
        w1, w2, b = weights
        return np.tanh(images.reshape(len(images), -1).astype(np.float64) @ w1) @ w2 + b


def tiny_recipe(feedback="reference", grad_bound=1e9, overflow_check=False, wait=0, extra=()):
    return load_recipe("mpl-wrn28-2", [
        "num_classes={}".format(CLASSES), "batch_size={}".format(B), "uda_data={}".format(UDA_DATA),
        "mpl_feedback=" + feedback, "grad_bound={}".format(grad_bound),
        "loss_scale_overflow_check={}".format(overflow_check), "student_lr_wait_steps={}".format(wait),
        "lr=0.5", "student_lr=0.3", "lr_warmup_steps=0", "student_lr_warmup_steps=0",
        "num_train_steps=100", "uda_steps=2", "uda_threshold=0.9", "weight_decay=0.01", "seed=7"] + list(extra))


def tiny_batch(seed=0, size=4):
    rng = np.random.RandomState(seed)
    images = [rng.randn(n, size, size, 3).astype(np.float32) for n in (B, U, U)]
    return images[0], np.array([0, 2], np.int32), images[1], images[2]


def named(variables):
    """{name below the network scope: variable}, e.g. 'bnnet/bn/moving_mean'."""
    return {v.op.name.split("/", 1)[1]: v for v in variables}


class TinyGraph:
    """A built step on TinyNet with its own graph and session, fed through placeholders."""

    def __init__(self, recipe, loss_scale=1.0, size=4, optimizer_wrapper=None, net=None):
        self.recipe, self.net = recipe, net or TinyNet(size * size * 3, CLASSES)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.inputs = [tf.placeholder(tf.float32, [B, size, size, 3]), tf.placeholder(tf.int32, [B]),
                           tf.placeholder(tf.float32, [U, size, size, 3]),
                           tf.placeholder(tf.float32, [U, size, size, 3])]
            self.global_step = tf.train.get_or_create_global_step()
            self.step = mpl.build_mpl_step(self.net, recipe, *self.inputs, global_step=self.global_step,
                                           loss_scale=loss_scale, optimizer_wrapper=optimizer_wrapper)
            self.teacher = common.trainable(self.step.teacher_variables)
            self.student = common.trainable(self.step.student_variables)
            self.slots = {name: [optimizer.get_slot(v, "momentum") for v in variables] for name, optimizer, variables
                          in (("teacher", self.step.teacher_optimizer, self.teacher),
                              ("student", self.step.student_optimizer, self.student))}
            init = tf.global_variables_initializer()
        self.session = tf.Session(graph=self.graph)
        self.session.run(init)
        self.session.run(self.step.ema_init_op)

    def state(self):
        return self.session.run({"teacher": self.teacher, "student": self.student, "slots": self.slots,
                                 "ema": self.step.ema_variables, "m": self.step.h_baseline,
                                 "global_step": self.global_step,
                                 "teacher_all": named(self.step.teacher_variables),
                                 "student_all": named(self.step.student_variables),
                                 "ema_all": named(self.step.ema_variables)})

    def run(self, batch):
        _, metrics = self.session.run([self.step.train_op, self.step.metrics], dict(zip(self.inputs, batch)))
        return metrics

    def op_types(self):
        return {op.type for op in self.graph.get_operations()}


@pytest.fixture(scope="module")
def tiny_graphs():
    built = {}

    def get(feedback="reference", loss_scale=1.0, grad_bound=1e9, overflow_check=False):
        key = (feedback, loss_scale, grad_bound, overflow_check)
        if key not in built:
            built[key] = TinyGraph(tiny_recipe(feedback, grad_bound, overflow_check), loss_scale)
        return built[key]

    yield get
    for graph in built.values():
        graph.session.close()


def numpy_step(recipe, before, student_after, batch):
    """Every quantity of one MPL step recomputed from the state before it (and the student after it)."""
    l, labels, ori, aug = batch
    paper = recipe.mpl_feedback == "paper"
    ls, t = recipe.label_smoothing, before["global_step"]
    y = np_onehot(labels, CLASSES)
    z = TinyNet.numpy(before["teacher"], np.concatenate([l, ori, aug]))
    z_l, z_ori, z_aug = z[:B], z[B:B + U], z[B + U:]
    q = np_softmax(z_ori / recipe.uda_temp)
    mask = (q.max(axis=-1) >= recipe.uda_threshold).astype(np.float64)
    pseudo = np_onehot(z_aug.argmax(axis=-1), CLASSES) if paper else np_softmax(z_aug)
    s = TinyNet.numpy(before["student"], np.concatenate([aug, l]))
    out = {"labelled_ce": np_ce(np_smooth(y, ls), z_l).mean(),
           "uda_loss": (mask * np_ce(q, z_aug)).sum() / U,
           "uda_mask_rate": mask.mean(),
           "uda_weight": recipe.uda_weight * min(1.0, t / recipe.uda_steps),
           "mpl_ce": np_ce(pseudo, z_aug).mean(),
           "student_loss": np_ce(np_smooth(pseudo, ls), s[:U]).mean(),
           "student_ce_old": np_ce(y, s[U:]).mean(),
           "student_ce_new": np_ce(y, TinyNet.numpy(student_after, l)).mean()}
    out["h"] = (out["student_ce_old"] - out["student_ce_new"] if paper
                else out["student_ce_new"] - out["student_ce_old"])
    out["h_baseline"] = before["m"] - recipe.mpl_baseline_decay * (before["m"] - out["h"])
    out["h_prime"] = out["h"] - out["h_baseline"]
    out["teacher_loss"] = out["uda_weight"] * out["uda_loss"] + out["labelled_ce"] + out["h_prime"] * out["mpl_ce"]

    def teacher_objective(weights):  # q, mask, pseudo labels and h′ held fixed (they are stop-gradients)
        zz = TinyNet.numpy(weights, np.concatenate([l, ori, aug]))
        objective = out["uda_weight"] * (mask * np_ce(q, zz[B + U:])).sum() / U + np_ce(np_smooth(y, ls), zz[:B]).mean()
        if paper:  # the reference's MPL term has zero gradient
            objective += out["h_prime"] * np_ce(pseudo, zz[B + U:]).mean()
        return objective

    def student_objective(weights):
        return np_ce(np_smooth(pseudo, ls), TinyNet.numpy(weights, np.concatenate([aug, l]))[:U]).mean()

    out["teacher_gradients"] = central_differences(teacher_objective, before["teacher"])
    out["student_gradients"] = central_differences(student_objective, before["student"])
    return out


def numpy_update(recipe, weights, slots, gradients, lr):
    """Weight decay, global-norm clip, TF's Nesterov momentum: (new weights, new slots, gradient norm)."""
    momentum, lr = np.float64(np.float32(recipe.momentum)), np.float64(np.float32(lr))
    gradients = [g + recipe.weight_decay * w for g, w in zip(gradients, weights)]
    norm = np.sqrt(sum((g ** 2).sum() for g in gradients))
    gradients = [g * recipe.grad_bound / max(norm, recipe.grad_bound) for g in gradients]
    slots = [momentum * a + g for a, g in zip(slots, gradients)]
    weights = [w - lr * g - lr * momentum * a for w, g, a in zip(weights, gradients, slots)]
    return weights, slots, norm


# ------------------------------------------------------------------------------------------ loss helpers

def evaluate(tensor):
    with tf.Session() as session:
        return session.run(tensor)


def test_smooth_labels_exact_values():
    with tf.Graph().as_default():
        onehot = tf.constant([[0.0, 1.0, 0.0, 0.0]], tf.float64)
        smoothed, unchanged = evaluate([common.smooth_labels(onehot, 0.2), common.smooth_labels(onehot, 0.0)])
    assert smoothed[0].tolist() == pytest.approx([0.05, 0.85, 0.05, 0.05], abs=1e-15)
    assert unchanged.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_soft_cross_entropy_matches_numpy_and_does_not_train_its_targets():
    rng = np.random.RandomState(3)
    logits, targets = rng.randn(5, 4) * 3, np_softmax(rng.randn(5, 4))
    with tf.Graph().as_default():
        t = tf.constant(targets)
        ce = common.soft_cross_entropy(t, tf.constant(logits))
        assert tf.gradients(tf.reduce_sum(ce), t) == [None]
        assert evaluate(ce) == pytest.approx(np_ce(targets, logits), rel=1e-12)


def test_uda_loss_masks_unconfident_rows_and_divides_by_all_of_u():
    z_ori = np.array([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.9]])
    z_aug = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 4.0], [2.0, -1.0, 0.5], [0.3, 0.2, 0.1]])
    q = np_softmax(z_ori / 0.7)
    expected_mask = np.array([1.0, 0.0, 1.0, 0.0])
    assert ((q.max(axis=-1) >= 0.6) == expected_mask.astype(bool)).all()
    with tf.Graph().as_default():
        loss, mask = evaluate(common.uda_loss(tf.constant(z_ori), tf.constant(z_aug), 0.7, 0.6))
    assert mask.tolist() == expected_mask.tolist()
    assert loss == pytest.approx((expected_mask * np_ce(q, z_aug)).sum() / 4, rel=1e-12)


def test_weight_decay_skips_batch_norm_and_hits_the_dense_bias():
    with tf.Graph().as_default():
        build_model("wrn-10-1")(tf.zeros([1, 8, 8, 3]), training=False, scope="net")
        variables = tf.trainable_variables()
        bias = [v for v in variables if v.op.name.endswith("dense/bias")][0]
        kernel = [v for v in variables if v.op.name.endswith("dense/kernel")][0]
        gamma = [v for v in variables if v.op.name.endswith("bn_1/gamma")][0]
        gradients = [None if v is gamma else tf.ones_like(v) for v in variables]  # a missing gradient too
        decayed = common.add_weight_decay(variables, gradients, 0.1)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            session.run(tf.assign(bias, tf.fill(bias.shape, 2.0)))
            values = dict(zip([v.op.name for v in variables], session.run(list(zip(variables, decayed)))))
    bn = [name for name in values if "/bn" in name]
    assert len(bn) == 2 * (2 * 3 + 1) and all(is_batch_norm_variable(v) == ("/bn" in v.op.name) for v in variables)
    for name, (weight, gradient) in values.items():
        if name in bn:
            expected = np.zeros_like(weight) if name == gamma.op.name else np.ones_like(weight)
        else:
            expected = 1.0 + 0.1 * weight
        np.testing.assert_allclose(gradient, expected, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(values[bias.op.name][1], 1.2, rtol=1e-6)
    assert np.abs(values[kernel.op.name][1] - 1.0).max() > 0


def test_make_optimizer_is_nesterov_momentum_from_the_recipe():
    recipe = load_recipe("mpl-wrn28-2", ["momentum=0.8"])
    gradient = np.array([0.5, -1.0])
    with tf.Graph().as_default():
        variable = tf.Variable([1.0, 2.0], dtype=tf.float64)
        update = common.make_optimizer(0.1, recipe).apply_gradients([(tf.constant(gradient), variable)])
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            got = [session.run([update, variable])[1] for _ in range(2)]
    weights, accum, momentum = np.array([1.0, 2.0]), np.zeros(2), np.float64(np.float32(0.8))
    for value in got:
        accum = momentum * accum + gradient
        weights = weights - np.float32(0.1) * gradient - np.float32(0.1) * momentum * accum
        np.testing.assert_allclose(value, weights, rtol=1e-12)


# ------------------------------------------------------------------------- the full step, in numpy

STEP_CASES = [("reference", 1.0, 1e9), ("paper", 1.0, 1e9), ("paper", 4.0, 1e9), ("reference", 1.0, 0.05)]


@pytest.mark.parametrize("feedback,loss_scale,grad_bound", STEP_CASES)
def test_tiny_steps_match_numpy(tiny_graphs, feedback, loss_scale, grad_bound):
    graph = tiny_graphs(feedback, loss_scale, grad_bound)
    recipe = graph.recipe
    for seed in range(3):  # t = 0, 1, 2: the UDA weight is 0, 4, 8
        batch = tiny_batch(seed)
        before = graph.state()
        metrics = graph.run(batch)
        after = graph.state()
        want = numpy_step(recipe, before, after["student"], batch)
        assert after["global_step"] == before["global_step"] + 1
        for name in ["labelled_ce", "uda_loss", "uda_mask_rate", "uda_weight", "mpl_ce", "student_loss",
                     "student_ce_old", "student_ce_new", "h", "h_baseline", "h_prime", "teacher_loss"]:
            assert metrics[name] == pytest.approx(want[name], rel=2e-6, abs=1e-6), name
        for network, lr_name in (("teacher", "teacher_lr"), ("student", "student_lr")):
            weights, slots, norm = numpy_update(recipe, before[network], before["slots"][network],
                                                want[network + "_gradients"], metrics[lr_name])
            assert metrics[network + "_grad_norm"] == pytest.approx(norm, rel=1e-5)
            for got, expected in zip(after[network], weights):
                np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9, err_msg=network)
            for got, expected in zip(after["slots"][network], slots):
                np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9, err_msg=network + " slot")
        decay = min(recipe.ema_decay, (before["global_step"] + 1.0) / (before["global_step"] + 10.0))
        for got, ema, weight in zip(after["ema"], before["ema"], after["student"]):
            np.testing.assert_allclose(got, ema - (1 - np.float32(decay)) * (ema - weight), rtol=1e-6)


def test_clipping_case_really_clips(tiny_graphs):
    metrics = tiny_graphs("reference", 1.0, 0.05).run(tiny_batch(5))
    assert metrics["teacher_grad_norm"] > 0.05 and metrics["student_grad_norm"] > 0.05


def test_uda_mask_is_mixed_on_the_tiny_batches(tiny_graphs):
    graph = tiny_graphs()
    before = graph.state()
    rates = [numpy_step(graph.recipe, before, before["student"], tiny_batch(seed))["uda_mask_rate"]
             for seed in range(3)]
    assert any(0 < rate < 1 for rate in rates), rates  # the UDA checks above saw both mask values


def test_paper_mpl_gradient_equals_finite_differences(tiny_graphs):
    graph = tiny_graphs("paper")
    batch = tiny_batch(11)
    aug = batch[3]
    teacher = graph.session.run(graph.teacher)
    with graph.graph.as_default():
        gradients = tf.gradients(graph.step.mpl_term, graph.teacher)
    assert all(g is not None for g in gradients)
    got, h_prime = graph.session.run([gradients, graph.step.metrics["h_prime"]], dict(zip(graph.inputs, batch)))
    pseudo = np_onehot(TinyNet.numpy(teacher, aug).argmax(axis=-1), CLASSES)

    def mpl_term(weights):  # h′ and ŷ held fixed
        return np.float64(h_prime) * np_ce(pseudo, TinyNet.numpy(weights, aug)).mean()

    expected = central_differences(mpl_term, teacher)
    assert min(np.abs(g).max() for g in got) > 1e-6
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8)


def test_loss_scale_one_adds_no_ops_and_no_overflow_metric(tiny_graphs):
    checked = tiny_graphs("reference", 1.0, 1e9, True)  # the check is asked for, but there is no scale
    plain = tiny_graphs("reference", 1.0, 1e9, False)
    assert len(checked.graph.get_operations()) == len(plain.graph.get_operations())
    assert not {"Switch", "Merge"} & checked.op_types()
    assert "overflow" not in checked.step.metrics
    assert not {"Switch", "Merge"} & tiny_graphs("paper", 4.0).op_types()  # scaled, check off: no cond
    assert {"Switch", "Merge"} <= tiny_graphs("paper", 2.0, 1e9, True).op_types()


def test_overflowing_step_updates_neither_network(tiny_graphs):
    graph = tiny_graphs("paper", 2.0, 1e9, True)
    assert {"overflow", "teacher_overflow", "student_overflow"} <= set(graph.step.metrics)
    assert graph.run(tiny_batch(1))["overflow"] == 0.0
    before = graph.state()
    l, labels, ori, aug = tiny_batch(2)
    aug[0, 0, 0, 0] = np.inf
    metrics = graph.run((l, labels, ori, aug))
    after = graph.state()
    assert (metrics["overflow"], metrics["teacher_overflow"], metrics["student_overflow"]) == (1.0, 1.0, 1.0)
    assert after["global_step"] == before["global_step"] + 1
    for network in ("teacher", "student"):
        for got, expected in zip(after[network] + after["slots"][network],
                                 before[network] + before["slots"][network]):
            np.testing.assert_array_equal(got, expected)
    assert all(np.isfinite(e).all() for e in after["ema"])
    assert graph.run(tiny_batch(3))["overflow"] == 0.0
    assert not np.array_equal(graph.state()["teacher"][0], after["teacher"][0])


class HalvingOptimizer:
    """A stand-in for an all-reduce/loss-scale wrapper: it halves every gradient it computes."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls

    def compute_gradients(self, loss, var_list=None, **kwargs):
        self.calls.append("compute")
        return [(g * 0.5, v) for g, v in self.inner.compute_gradients(loss, var_list=var_list, **kwargs)]

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        self.calls.append("apply")
        return self.inner.apply_gradients(grads_and_vars, global_step=global_step, name=name)

    def get_slot(self, var, name):
        return self.inner.get_slot(var, name)


def test_optimizer_wrapper_computes_and_applies_both_gradients():
    calls = []
    graph = TinyGraph(tiny_recipe("paper"), optimizer_wrapper=lambda opt: HalvingOptimizer(opt, calls))
    try:
        assert calls == ["compute", "apply", "compute", "apply"]  # student, then teacher
        assert isinstance(graph.step.teacher_optimizer, HalvingOptimizer)
        batch = tiny_batch(4)
        before = graph.state()
        metrics = graph.run(batch)
        after = graph.state()
        want = numpy_step(graph.recipe, before, after["student"], batch)
        for network in ("teacher", "student"):
            halved = [0.5 * g for g in want[network + "_gradients"]]
            weights, _, _ = numpy_update(graph.recipe, before[network], before["slots"][network], halved,
                                         metrics[network + "_lr"])
            for got, expected in zip(after[network], weights):
                np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9, err_msg=network)
    finally:
        graph.session.close()


def test_unknown_feedback_mode_is_refused():
    recipe = tiny_recipe()
    recipe["mpl_feedback"] = "sampled"
    with tf.Graph().as_default(), pytest.raises(ValueError, match="mpl_feedback"):
        mpl.build_mpl_step(TinyNet(48, CLASSES), recipe, *[tf.constant(x) for x in tiny_batch()],
                           global_step=tf.train.get_or_create_global_step())


# ------------------------------------------------------------------------------- paper feedback, first order

def test_paper_h_is_the_first_order_dot_product_of_the_student_gradients():
    """h = CE_old − CE_new ≈ η_S·∇CE_lᵀ·∇L_S, with both gradients from numpy finite differences.

    Plain gradient descent (momentum 0, no weight decay) makes the student's step exactly −η_S·∇L_S, so
    the error of the first-order value is O(η_S²): 100 times smaller at a 10 times smaller rate.
    """
    batch = tiny_batch(21)
    l, labels, ori, aug = batch
    errors = {}
    for rate in (1e-2, 1e-3):
        graph = TinyGraph(tiny_recipe("paper", extra=["momentum=0", "weight_decay=0", "student_lr={}".format(rate)]))
        try:
            before = graph.state()
            metrics = graph.run(batch)
        finally:
            graph.session.close()
        assert metrics["student_lr"] == pytest.approx(rate, rel=1e-7)
        theta, ls = before["student"], graph.recipe.label_smoothing
        pseudo = np_onehot(TinyNet.numpy(before["teacher"], aug).argmax(axis=-1), CLASSES)
        y = np_onehot(labels, CLASSES)
        grad_student_loss = central_differences(
            lambda w: np_ce(np_smooth(pseudo, ls), TinyNet.numpy(w, aug)).mean(), theta)
        grad_labelled_ce = central_differences(lambda w: np_ce(y, TinyNet.numpy(w, l)).mean(), theta)
        dot = sum((a * b).sum() for a, b in zip(grad_labelled_ce, grad_student_loss))
        assert abs(dot) > 1e-2
        first_order = rate * dot
        assert metrics["h"] == pytest.approx(first_order, rel=0.05)  # the sign and the size
        errors[rate] = abs(metrics["h"] - first_order)
    assert errors[1e-3] < errors[1e-2] / 30  # second-order remainder: the paper's h is the Taylor term


def test_h_baseline_starts_at_zero_in_paper_mode_and_at_the_glorot_draw_in_reference_mode():
    batch = tiny_batch(3)
    paper, reference = TinyGraph(tiny_recipe("paper")), TinyGraph(tiny_recipe("reference"))
    try:
        start = paper.state()
        assert start["m"] == 0.0
        metrics = paper.run(batch)
        h = numpy_step(paper.recipe, start, paper.state()["student"], batch)["h"]  # independent h
        assert metrics["h_baseline"] == pytest.approx(0.01 * h, rel=1e-6)
        assert metrics["h_prime"] == pytest.approx(0.99 * h, rel=1e-6)
        with tf.Graph().as_default():  # glorot-uniform of a scalar: U(±√3), the recipe's op seed
            draw = evaluate(tf.random_uniform([], -np.sqrt(3.0), np.sqrt(3.0), seed=reference.recipe.seed))
        assert reference.state()["m"] == pytest.approx(draw, rel=1e-6) and draw != 0.0
    finally:
        paper.session.close()
        reference.session.close()


# --------------------------------------------------------------------------------------- batch norm

class BnNet:
    """logits = tanh(BN(x·W1))·W2 + b in float64, BN over the batch of each call.

    Training calls normalise with the batch mean and (biased) variance and return the updates
    moving ← moving − (1 − MOMENTUM)·(moving − batch statistic); other calls use the moving statistics.
    Everything starts from fixed, non-trivial values (moving statistics included) per scope.
    """

    HIDDEN, MOMENTUM, EPSILON = 5, 0.8, 1e-3
    NAMES = ["hidden/kernel", "bn/gamma", "bn/beta", "dense/kernel", "dense/bias", "bn/moving_mean",
             "bn/moving_variance"]

    def __init__(self, in_dim, num_classes):
        self.in_dim, self.num_classes = in_dim, num_classes

    def initial_values(self, scope):
        rng = np.random.RandomState({"teacher": 11, "student": 12, "ema": 13}[scope])
        return [rng.randn(self.in_dim, self.HIDDEN) * 2.0 / np.sqrt(self.in_dim),
                1.0 + 0.5 * rng.rand(self.HIDDEN), 0.3 * rng.randn(self.HIDDEN),
                rng.randn(self.HIDDEN, self.num_classes) * 1.5, rng.randn(self.num_classes) * 0.5,
                rng.randn(self.HIDDEN), 0.5 + rng.rand(self.HIDDEN)]

    def __call__(self, images, training, scope):
        with tf.variable_scope(scope, reuse=tf.AUTO_REUSE), tf.variable_scope("bnnet"):
            w1, gamma, beta, w2, b, moving_mean, moving_variance = [
                tf.get_variable(name, dtype=tf.float64, initializer=tf.constant(value),
                                trainable=not name.startswith("bn/moving"))
                for name, value in zip(self.NAMES, self.initial_values(scope))]
        pre = tf.matmul(tf.cast(tf.reshape(images, [-1, self.in_dim]), tf.float64), w1)
        updates = []
        if training:
            mean, variance = tf.nn.moments(pre, axes=[0])
            updates = [tf.assign_sub(moving_mean, (1.0 - self.MOMENTUM) * (moving_mean - mean)),
                       tf.assign_sub(moving_variance, (1.0 - self.MOMENTUM) * (moving_variance - variance))]
        else:
            mean, variance = moving_mean, moving_variance
        normed = (pre - mean) / tf.sqrt(variance + self.EPSILON) * gamma + beta
        return ModelOutput(logits=tf.matmul(tf.tanh(normed), w2) + b, bn_updates=updates)

    @classmethod
    def numpy(cls, values, parts):
        """(logits of each part, batch mean, batch variance): ONE training-mode call on the concatenation."""
        w1, gamma, beta, w2, b = (values["bnnet/" + name] for name in cls.NAMES[:5])
        x = np.concatenate([p.reshape(len(p), -1).astype(np.float64) for p in parts])
        pre = x @ w1
        mean, variance = pre.mean(axis=0), pre.var(axis=0)
        logits = np.tanh((pre - mean) / np.sqrt(variance + cls.EPSILON) * gamma + beta) @ w2 + b
        return np.split(logits, np.cumsum([len(p) for p in parts])[:-1]), mean, variance

    @classmethod
    def moved(cls, moving, statistic):
        return moving - (1.0 - cls.MOMENTUM) * (moving - statistic)


def bn_graph(second_pass_bn_update):
    recipe = tiny_recipe("reference", extra=["student_second_pass_bn_update={}".format(second_pass_bn_update)])
    return TinyGraph(recipe, net=BnNet(4 * 4 * 3, CLASSES))


@pytest.fixture(scope="module")
def bn_steps():
    """One step of the BnNet graph, second-pass BN update off and on: (recipe, before, metrics, after)."""
    runs = {}
    for on in (False, True):
        graph = bn_graph(on)
        try:
            before = graph.state()
            metrics = graph.run(tiny_batch(8))
            runs[on] = (graph.recipe, before, metrics, graph.state())
        finally:
            graph.session.close()
    return runs


def test_teacher_and_student_batch_norm_each_call_over_the_whole_concatenation(bn_steps):
    """The teacher normalises [l, u_ori, u_aug] in one pass and the student [u_aug, l] in one pass.

    Every loss and both networks' moving statistics are recomputed in numpy from joint batch
    statistics; normalising the parts separately would give other losses (checked, so the test can fail).
    """
    l, labels, ori, aug = tiny_batch(8)
    recipe, before, metrics, after = bn_steps[False]
    ls, y = recipe.label_smoothing, np_onehot(labels, CLASSES)
    teacher, student = before["teacher_all"], before["student_all"]

    (z_l, z_ori, z_aug), t_mean, t_var = BnNet.numpy(teacher, [l, ori, aug])
    q = np_softmax(z_ori / recipe.uda_temp)
    mask = (q.max(axis=-1) >= recipe.uda_threshold).astype(np.float64)
    (s_u, s_l), s_mean, s_var = BnNet.numpy(student, [aug, l])
    want = {"labelled_ce": np_ce(np_smooth(y, ls), z_l).mean(),
            "uda_loss": (mask * np_ce(q, z_aug)).sum() / U,
            "mpl_ce": np_ce(np_softmax(z_aug), z_aug).mean(),
            "student_loss": np_ce(np_smooth(np_softmax(z_aug), ls), s_u).mean(),
            "student_ce_old": np_ce(y, s_l).mean()}
    (s_l_new,), _, _ = BnNet.numpy(after["student_all"], [l])  # the second pass: l alone, updated weights
    h = np_ce(y, s_l_new).mean() - want["student_ce_old"]  # reference sign
    h_prime = h - (before["m"] - recipe.mpl_baseline_decay * (before["m"] - h))
    want["teacher_loss"] = want["labelled_ce"] + h_prime * want["mpl_ce"]  # t = 0: the UDA weight is 0
    for name, value in want.items():
        assert metrics[name] == pytest.approx(value, rel=1e-6), name  # float32 metrics

    # Separate passes would normalise each part with its own statistics: measurably other numbers.
    separate_l = BnNet.numpy(teacher, [l])[0][0]
    assert abs(np_ce(np_smooth(y, ls), separate_l).mean() - want["labelled_ce"]) > 1e-3
    separate_s_l = BnNet.numpy(student, [l])[0][0]
    assert abs(np_ce(y, separate_s_l).mean() - want["student_ce_old"]) > 1e-3

    # One update per network from the joint statistics (three or two updates would compound).
    for network, mean, variance in (("teacher_all", t_mean, t_var), ("student_all", s_mean, s_var)):
        np.testing.assert_allclose(after[network]["bnnet/bn/moving_mean"],
                                   BnNet.moved(before[network]["bnnet/bn/moving_mean"], mean), rtol=1e-12)
        np.testing.assert_allclose(after[network]["bnnet/bn/moving_variance"],
                                   BnNet.moved(before[network]["bnnet/bn/moving_variance"], variance), rtol=1e-12)


@pytest.mark.parametrize("on", [False, True])
def test_second_pass_bn_update_follows_the_recipe(bn_steps, on):
    """On (the seed): the moving statistics take the first pass's update, then the second pass's (on l
    alone, with the updated weights), after the EMA read them. Off (google-research): the first only."""
    l, labels, ori, aug = tiny_batch(8)
    recipe, before, metrics, after = bn_steps[on]
    assert recipe.student_second_pass_bn_update is on
    (_, _), first_mean, first_var = BnNet.numpy(before["student_all"], [aug, l])
    (s_l_new,), second_mean, second_var = BnNet.numpy(after["student_all"], [l])
    # The second pass normalises l alone with the updated weights: CE_new from numpy.
    assert metrics["student_ce_new"] == pytest.approx(np_ce(np_onehot(labels, CLASSES), s_l_new).mean(), rel=1e-6)
    decay = np.float32(min(recipe.ema_decay, 1.0 / 10.0))  # t = 0
    for name, first, second in (("moving_mean", first_mean, second_mean), ("moving_variance", first_var, second_var)):
        start = before["student_all"]["bnnet/bn/" + name]
        after_first = BnNet.moved(start, first)
        expected = BnNet.moved(after_first, second) if on else after_first
        assert not np.allclose(BnNet.moved(after_first, second), after_first, rtol=1e-6)  # the test can tell
        np.testing.assert_allclose(after["student_all"]["bnnet/bn/" + name], expected, rtol=1e-12, err_msg=name)
        # The EMA averaged the statistics before the second pass in both modes (the seed's order).
        ema = before["ema_all"]["bnnet/bn/" + name]
        np.testing.assert_allclose(after["ema_all"]["bnnet/bn/" + name], ema - (1 - decay) * (ema - after_first),
                                   rtol=1e-12, err_msg=name)


def test_second_pass_bn_update_changes_nothing_else(bn_steps):
    """Both runs start from the same values: every metric and every trainable weight agree."""
    (_, before_off, metrics_off, after_off), (_, before_on, metrics_on, after_on) = bn_steps[False], bn_steps[True]
    for name in ("teacher_all", "student_all"):
        for key in before_off[name]:
            np.testing.assert_array_equal(before_on[name][key], before_off[name][key])
    for name, value in metrics_off.items():
        assert metrics_on[name] == value, name
    for network in ("teacher", "student"):
        for on, off in zip(after_on[network], after_off[network]):
            np.testing.assert_array_equal(on, off)


# ----------------------------------------------------------------------------------- wrn-10-1 graphs

WAIT = 2
WRN_STEPS = 4
Wrn = collections.namedtuple("Wrn", "graph session step global_step recipe")


def build_wrn(feedback):
    recipe = load_recipe("mpl-wrn28-2", [
        "model=wrn-10-1", "batch_size={}".format(B), "uda_data={}".format(UDA_DATA), "mpl_feedback=" + feedback,
        "student_lr_wait_steps={}".format(WAIT), "teacher_lr_warmup_steps=2", "student_lr_warmup_steps=2",
        "num_train_steps=20", "lr=0.1", "student_lr=0.1", "seed=3"])
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        rng = np.random.RandomState(0)
        batch = [tf.constant(rng.randn(n, 32, 32, 3).astype(np.float32)) for n in (B, U, U)]
        global_step = tf.train.get_or_create_global_step()
        step = mpl.build_mpl_step(build_model(recipe.model, recipe.num_classes, recipe.dropout_rate), recipe,
                                  batch[0], tf.constant([3, 7]), batch[1], batch[2], global_step)
        init = tf.global_variables_initializer()
    session = tf.Session(graph=graph)
    session.run(init)
    return Wrn(graph, session, step, global_step, recipe)


@pytest.fixture(scope="module")
def wrn():
    built = build_wrn("reference")
    yield built
    built.session.close()


@pytest.fixture(scope="module")
def trajectory(wrn):
    """Values around each of WRN_STEPS runs of train_op, starting fresh (init + ema_init_op)."""
    session, step = wrn.session, wrn.step
    with wrn.graph.as_default():
        slots = [step.student_optimizer.get_slot(v, "momentum") for v in common.trainable(step.student_variables)]
        teacher_slots = [step.teacher_optimizer.get_slot(v, "momentum")
                         for v in common.trainable(step.teacher_variables)]
    fetch = {"teacher": step.teacher_variables, "student": step.student_variables, "ema": step.ema_variables,
             "slots": slots, "teacher_slots": teacher_slots, "global_step": wrn.global_step, "m": step.h_baseline}
    initial = session.run(fetch)
    session.run(step.ema_init_op)
    states, metrics = [session.run(fetch)], []
    for _ in range(WRN_STEPS):
        metrics.append(session.run([step.train_op, step.metrics])[1])
        states.append(session.run(fetch))
    return {"initial": initial, "states": states, "metrics": metrics}


def names(variables):
    return [v.op.name for v in variables]


def test_step_structure(wrn):
    step = wrn.step
    trainable = set(names(wrn.graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES)))
    global_names = set(names(wrn.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)))
    assert len(step.student_variables) == len(step.teacher_variables) == len(step.ema_variables)
    assert all(n.startswith("student/wrn-10-1/") for n in names(step.student_variables))
    assert all(n.startswith("teacher/wrn-10-1/") for n in names(step.teacher_variables))
    assert names(step.ema_variables) == ["ema" + n[len("student"):] for n in names(step.student_variables)]
    assert any(n.endswith("moving_variance") for n in names(step.student_variables))
    assert not any("Momentum" in n for n in names(step.student_variables + step.teacher_variables))
    assert not any(n.startswith("ema/") for n in trainable)                       # the EMA is not trained
    assert sum(n.startswith("student/") and n.endswith("/Momentum") for n in global_names) == sum(
        n.startswith("student/") for n in trainable)                                 # slots are saved
    assert step.h_baseline.op.name == "mpl/h_baseline" and step.h_baseline.op.name in global_names
    assert step.h_baseline.op.name not in trainable
    assert REQUIRED_METRICS <= set(step.metrics)
    assert all(m.dtype == tf.float32 and m.shape.ndims == 0 for m in step.metrics.values())
    assert "overflow" not in step.metrics
    assert not {"Switch", "Merge"} & {op.type for op in wrn.graph.get_operations()}


def test_reference_mpl_term_has_exactly_zero_teacher_gradient(wrn):
    teacher = common.trainable(wrn.step.teacher_variables)
    with wrn.graph.as_default():
        mpl_gradients = tf.gradients(wrn.step.mpl_term, teacher)
        loss_gradients = tf.gradients(wrn.step.metrics["teacher_loss"], teacher)
    assert mpl_gradients == [None] * len(teacher)
    assert all(g is not None for g in loss_gradients)


def test_train_op_moves_all_three_networks_by_one_step(trajectory):
    for t, (before, after) in enumerate(zip(trajectory["states"], trajectory["states"][1:])):
        assert after["global_step"] == before["global_step"] + 1 == t + 1
        assert all(not np.array_equal(a, b) for a, b in zip(after["teacher"], before["teacher"]))  # BN stats too
        assert any(not np.array_equal(a, b) for a, b in zip(after["ema"], before["ema"]))


def test_student_waits_while_its_momentum_accumulates(wrn, trajectory):
    trainable = [i for i, v in enumerate(wrn.step.student_variables)
                 if not v.op.name.split("/")[-1].startswith("moving")]
    states, metrics = trajectory["states"], trajectory["metrics"]
    assert [m["student_lr"] for m in metrics[:WAIT]] == [0.0] * WAIT and metrics[WAIT]["student_lr"] > 0
    assert all(m["teacher_lr"] > 0 for m in metrics)
    for t in range(WRN_STEPS):
        before, after = states[t], states[t + 1]
        moved = [not np.array_equal(after["student"][i], before["student"][i]) for i in trainable]
        assert all(moved) if t >= WAIT else not any(moved), t
        assert all(not np.array_equal(a, b) for a, b in zip(after["slots"], before["slots"]))
        moving = [i for i in range(len(before["student"])) if i not in trainable]
        assert all(not np.array_equal(after["student"][i], before["student"][i]) for i in moving)  # BN runs


def test_ema_init_copies_the_student(trajectory):
    first = trajectory["states"][0]
    for ema, student in zip(first["ema"], first["student"]):
        np.testing.assert_array_equal(ema, student)
    assert any(not np.array_equal(e, s) for e, s in zip(trajectory["initial"]["ema"], trajectory["initial"]["student"]))


def test_ema_after_steps_matches_numpy(wrn, trajectory):
    """The trainable weights' EMA. (mpl-wrn28-2 updates the moving statistics again after the EMA, in
    the second pass, so the state after a step is not what the EMA averaged: BnNet checks that order.)"""
    assert wrn.recipe.student_second_pass_bn_update
    trainable = [not v.op.name.split("/")[-1].startswith("moving") for v in wrn.step.student_variables]
    states = trajectory["states"]
    ema = [np.float64(v) for v in states[0]["student"]]
    for t in range(WRN_STEPS):
        decay = min(0.995, (t + 1.0) / (t + 10.0))
        ema = [e - (1 - decay) * (e - w) for e, w in zip(ema, states[t + 1]["student"])]
        assert trajectory["metrics"][t]["ema_decay"] == pytest.approx(decay, rel=1e-6)
    assert 0 < sum(trainable) < len(trainable)
    for got, expected, check in zip(states[-1]["ema"], ema, trainable):
        if check:
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_reference_h_baseline_starts_at_the_seeded_glorot_draw_and_persists_across_steps(wrn, trajectory):
    """(h itself is checked against numpy on TinyNet; here: m's start and its carry-over between steps.)"""
    m = trajectory["states"][0]["m"]
    assert 0 < abs(m) <= np.sqrt(3)
    with tf.Graph().as_default():  # glorot-uniform of a scalar is U(±√3) with the recipe's seed
        tf.set_random_seed(0)
        draw = tf.random_uniform([], -np.sqrt(3.0), np.sqrt(3.0), seed=wrn.recipe.seed)
        assert evaluate(draw) == pytest.approx(m, rel=1e-6)
    for metrics, state in zip(trajectory["metrics"], trajectory["states"][1:]):
        m = m - 0.01 * (m - metrics["h"])  # updated before use, from the value the last step left
        assert metrics["h_baseline"] == pytest.approx(m, rel=1e-5, abs=1e-6)
        assert state["m"] == pytest.approx(m, rel=1e-5, abs=1e-6)
    assert len({round(float(x["h"]), 6) for x in trajectory["metrics"]}) == WRN_STEPS


def test_paper_mode_gives_the_teacher_a_nonzero_mpl_gradient():
    built = build_wrn("paper")
    try:
        teacher = common.trainable(built.step.teacher_variables)
        with built.graph.as_default():
            gradients = tf.gradients(built.step.mpl_term, teacher)
        assert all(g is not None for g in gradients)
        values = built.session.run(gradients)
        assert all(np.isfinite(v).all() for v in values)
        assert sum(np.count_nonzero(v) for v in values) > 0.9 * sum(v.size for v in values)
    finally:
        built.session.close()
