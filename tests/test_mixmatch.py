"""The MixMatch step (mpltool/algorithms/mixmatch.py) and its ops against independent numpy computations.

Reference: google-research/mixmatch `mixmatch.py` (guess, MixUp over the pooled batch, interleave, L2
consistency, ramp in images, Adam + EMA + decoupled decay) and `libml/layers.py` (`interleave_offsets`,
`interleave`, `MixMode.augment_pair`). Every expected value is computed here in numpy, never by the code
under test.
"""

import collections
import math

import numpy as np
import pytest
from _pytest.monkeypatch import MonkeyPatch

from mpltool.algorithms import algorithm_names, get_algorithm
from mpltool.algorithms import mixmatch
from mpltool.algorithms.common import EMA_SCOPE, MODEL_SCOPE
from mpltool.algorithms.mixmatch import (MixMatch, beta_sample, decoupled_decay, guess_labels, interleave,
                                         interleave_offsets, is_kernel, l2_consistency, match_weight, mixup,
                                         sharpen)
from mpltool.errors import UsageError
from mpltool.models.wrn import ModelOutput
from mpltool.recipes import load_recipe
from mpltool.tfv1 import tf

GRAPH_SEED = 5  # the `run` fixture (conftest.py) seeds its graph with this


# ----------------------------------------------------------------------------------------------- numpy

def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_sharpen(p, temperature):
    powered = np.asarray(p, np.float64) ** (1.0 / temperature)
    return powered / powered.sum(axis=-1, keepdims=True)


def np_offsets(batch, groups):
    """libml/layers.py `interleave_offsets(batch, nu)` with groups = nu + 1, in numpy: equal chunks of
    batch // groups, the remainder added one each to the last chunks."""
    sizes = np.full(groups, batch // groups, dtype=np.int64)
    remainder = batch - int(sizes.sum())
    if remainder:
        sizes[groups - remainder:] += 1
    return [0] + np.cumsum(sizes).tolist()


def np_interleave(arrays, batch):
    """Chunk i of arrays[0] swapped with chunk i of arrays[i], by index assignment on copies."""
    offsets = np_offsets(batch, len(arrays))
    out = [np.array(a, copy=True) for a in arrays]
    for i in range(1, len(arrays)):
        chunk = slice(offsets[i], offsets[i + 1])
        out[0][chunk] = arrays[i][chunk]
        out[i][chunk] = arrays[0][chunk]
    return out


def np_mixup(images, targets, lam, permutation):
    lam = np.maximum(lam, 1.0 - lam).astype(np.float64)
    li = lam.reshape([-1] + [1] * (images.ndim - 1))
    lt = lam.reshape([-1, 1])
    return (li * images + (1 - li) * images[permutation], lt * targets + (1 - lt) * targets[permutation], lam)


def beta_max_moments(alpha, points=200001):
    """(E[m], E[m²]) of m = max(λ, 1 − λ), λ ~ Beta(α, α), by the trapezoid rule.

    E[m^k] = 2∫_{1/2}^{1} x^k f(x) dx; with u = (1 − x)^α the pdf's (1 − x)^(α−1) singularity at 1 goes
    (dx·(1 − x)^(α−1) = −du/α), leaving the smooth (2/(α·B(α, α)))·∫_0^{2^−α} x^(α+k−1) du, x = 1 − u^(1/α).
    """
    log_beta = 2 * math.lgamma(alpha) - math.lgamma(2 * alpha)
    u = np.linspace(0.0, 0.5 ** alpha, points)
    x = 1.0 - u ** (1.0 / alpha)
    scale = 2.0 / (alpha * math.exp(log_beta))
    moments = []
    for k in (1, 2):
        y = x ** (alpha + k - 1)
        moments.append(scale * float(np.sum((y[1:] + y[:-1]) * np.diff(u)) / 2.0))
    return moments[0], moments[1]


# ----------------------------------------------------------------------------------------------- 1. sharpen

@pytest.mark.parametrize("temperature", [0.5, 1.0, 0.25])
def test_sharpen_is_p_to_the_one_over_t_normalised(run, temperature):
    """The guessed targets are p^(1/T)/Σp^(1/T) (reference guess_label); a wrong power or axis changes every
    unlabelled target."""
    rng = np.random.RandomState(int(temperature * 100))
    p = rng.dirichlet(np.ones(6), size=8).astype(np.float32)
    got = run(lambda: sharpen(tf.constant(p), temperature))
    np.testing.assert_allclose(got, np_sharpen(p, temperature), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=-1), np.ones(8), atol=1e-6)
    if temperature == 1.0:
        np.testing.assert_allclose(got, p, atol=1e-6)
    else:  # sharpening raises the largest probability of every row
        assert np.all(got.max(axis=-1) > p.max(axis=-1))


# ----------------------------------------------------------------------------------------------- 2. guess

def test_guess_labels_is_the_sharpened_mean_of_the_views_softmaxes(run):
    """q = sharpen(mean_k softmax(z_k), T): the mean is over probabilities (not logits), as the reference."""
    rng = np.random.RandomState(1)
    z1, z2 = (rng.normal(0, 2, (5, 4)).astype(np.float32) for _ in range(2))
    got = run(lambda: guess_labels([tf.constant(z1), tf.constant(z2)], 0.5))
    expected = np_sharpen((np_softmax(z1) + np_softmax(z2)) / 2.0, 0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_guess_labels_passes_no_gradient_to_the_logits():
    """The guess is a target (reference: tf.stop_gradient(p_target)); a gradient through it would train the
    network to make its guesses agree with the mixed predictions."""
    with tf.Graph().as_default():
        z1 = tf.constant(np.ones((3, 4), np.float32))
        z2 = tf.constant(np.zeros((3, 4), np.float32))
        guess = guess_labels([z1, z2], 0.5)
        weights = tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4))
        gradients = tf.gradients(tf.reduce_sum(guess * weights), [z1, z2])
    assert gradients == [None, None]


# ----------------------------------------------------------------------------------------------- 3. mixup

def test_mixup_mixes_images_and_targets_with_lambda_prime_and_the_given_permutation(run):
    """W' = λ'W + (1 − λ')W[π] with λ' = max(λ, 1 − λ) per item (reference augment_pair): λ below 1/2 must
    be folded, so every mixed item stays closer to its own image and target."""
    rng = np.random.RandomState(2)
    images = rng.normal(0, 1, (6, 2, 3, 2)).astype(np.float32)
    targets = rng.dirichlet(np.ones(4), size=6).astype(np.float32)
    lam = np.array([0.1, 0.5, 0.9, 0.3, 0.0, 1.0], np.float32)
    permutation = np.array([3, 0, 5, 1, 4, 2], np.int32)
    got_images, got_targets, got_lam = run(lambda: mixup(tf.constant(images), tf.constant(targets),
                                                         tf.constant(lam), tf.constant(permutation)))
    expected_images, expected_targets, expected_lam = np_mixup(images, targets, lam, permutation)
    np.testing.assert_allclose(got_lam, [0.9, 0.5, 0.9, 0.7, 1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(got_lam, expected_lam, atol=1e-7)
    np.testing.assert_allclose(got_images, expected_images, atol=1e-6)
    np.testing.assert_allclose(got_targets, expected_targets, atol=1e-6)
    np.testing.assert_allclose(got_targets.sum(axis=-1), np.ones(6), atol=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 0.75])
def test_beta_sample_matches_the_exact_mean_of_max_lambda(run, alpha):
    """λ ~ Beta(α, α): the mean of max(λ, 1 − λ) over 20,000 draws is the exact expectation within 4
    standard errors (a wrong α, a Beta(α, 1) or a uniform draw misses by many)."""
    mean, second = beta_max_moments(alpha)
    # The integration itself against the closed form E[m] = 1/2 + 4^−α / (α·B(α, α)).
    closed = 0.5 + 4.0 ** -alpha / (alpha * math.exp(2 * math.lgamma(alpha) - math.lgamma(2 * alpha)))
    assert abs(mean - closed) < 1e-7
    n = 20000
    lam = run(lambda: beta_sample([n], alpha, seed=17))
    assert lam.shape == (n,)
    assert np.all(np.isfinite(lam)) and np.all(lam >= 0.0) and np.all(lam <= 1.0)
    folded = np.maximum(lam, 1.0 - lam).astype(np.float64)
    standard_error = math.sqrt((second - mean ** 2) / n)
    assert abs(folded.mean() - mean) < 4 * standard_error, (folded.mean(), mean, standard_error)
    # Symmetric about 1/2 (Beta(α, α)): the raw mean is 1/2 within 4 standard errors of sd 1/(2√(2α+1)).
    assert abs(lam.mean() - 0.5) < 4 * 0.5 / math.sqrt(2 * alpha + 1) / math.sqrt(n)


# ----------------------------------------------------------------------------------------------- 4. interleave

@pytest.mark.parametrize("batch, groups", [(64, 3), (10, 3), (16, 3), (5, 4), (4, 4), (7, 2), (3, 4)])
def test_interleave_offsets_match_the_reference_algorithm(batch, groups):
    """Chunk boundaries as libml/layers.py cuts them (the remainder on the last chunks): other boundaries
    change which items each batch-norm call normalises together."""
    if (batch, groups) == (64, 3):
        assert interleave_offsets(64, 3) == [0, 21, 42, 64]
    assert interleave_offsets(batch, groups) == np_offsets(batch, groups)


def test_interleave_offsets_known_values():
    """Hand-written boundaries, so np_offsets itself is checked too."""
    assert np_offsets(64, 3) == [0, 21, 42, 64]
    assert interleave_offsets(10, 3) == [0, 3, 6, 10]
    assert interleave_offsets(16, 3) == [0, 5, 10, 16]
    assert interleave_offsets(5, 4) == [0, 1, 2, 3, 5]


@pytest.mark.parametrize("batch", [10, 16, 6])
def test_interleave_swaps_chunk_i_of_the_first_with_batch_i_and_is_its_own_inverse(run, batch):
    """Each of the K + 1 calls sees a share of labelled and unlabelled items, and the same swap applied to
    the logits puts every row back in its place (otherwise the losses pair logits with wrong targets)."""
    arrays = [np.arange(batch * 2, dtype=np.float32).reshape(batch, 2) + 1000 * k for k in range(3)]

    def build():
        once = interleave([tf.constant(a) for a in arrays], batch)
        return once, interleave(once, batch)

    once, twice = run(build)
    expected = np_interleave(arrays, batch)
    for got, want in zip(once, expected):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(twice, arrays):
        np.testing.assert_array_equal(got, want)
    # not the identity: chunk 1 of the first batch came from the second
    assert not np.array_equal(once[0], arrays[0])


# ----------------------------------------------------------------------------------------------- 5. L2

def test_l2_consistency_is_the_squared_distance_over_classes_averaged_over_rows(run):
    """The unlabelled loss is mean over rows and classes of (t − softmax(z))², i.e. ‖t − p‖² / C per row
    (reference loss_l2u); a sum over classes would scale w_match by C."""
    rng = np.random.RandomState(3)
    targets = rng.dirichlet(np.ones(5), size=7).astype(np.float32)
    logits = rng.normal(0, 2, (7, 5)).astype(np.float32)
    got = run(lambda: l2_consistency(tf.constant(targets), tf.constant(logits)))
    per_row = np.sum((targets - np_softmax(logits)) ** 2, axis=-1) / 5.0
    np.testing.assert_allclose(got, per_row.mean(), rtol=1e-5)
    np.testing.assert_allclose(got, np.mean((targets - np_softmax(logits)) ** 2), rtol=1e-5)


# ----------------------------------------------------------------------------------------------- 6. ramp

def _np_weight(step, batch, weight, kimg):
    return weight * min(max(step * batch / (kimg * 1024.0), 0.0), 1.0)


@pytest.mark.parametrize("step, expected", [(0, 0.0), (1000, 6.103515625), (8192, 50.0), (16384, 100.0),
                                            (16385, 100.0), (1000000, 100.0)])
def test_match_weight_ramps_over_1024_kimg_at_batch_64(run, step, expected):
    """w(t) = w_match·clip(t·B/(1024·1024)): 50 at 512 kimg (step 8192), full at 1024 kimg, clipped after."""
    recipe = load_recipe("mixmatch-demo", ["batch_size=64", "mixmatch_weight=100", "mixmatch_rampup_kimg=1024"])
    got = run(lambda: match_weight(tf.constant(step, tf.int64), recipe))
    assert _np_weight(step, 64, 100.0, 1024) == pytest.approx(expected)
    assert float(got) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_match_weight_counts_images_not_steps(run):
    """The reference's step is in images: at B = 16 the ramp lasts 4x the steps it lasts at B = 64."""
    recipe = load_recipe("mixmatch-demo", ["batch_size=16", "mixmatch_weight=100", "mixmatch_rampup_kimg=1024"])
    steps = [16384, 32768, 65535, 65536, 70000]
    got = run(lambda: [match_weight(tf.constant(s, tf.int64), recipe) for s in steps])
    expected = [_np_weight(s, 16, 100.0, 1024) for s in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[0] == pytest.approx(25.0) and got[1] == pytest.approx(50.0) and got[3] == pytest.approx(100.0)
    assert got[2] < 100.0


def test_match_weight_without_rampup_is_full_at_once(run):
    """mixmatch_rampup_kimg = 0: the full weight from step 0 (no 0/0)."""
    recipe = load_recipe("mixmatch-demo", ["mixmatch_weight=75", "mixmatch_rampup_kimg=0"])
    got = run(lambda: [match_weight(tf.constant(s, tf.int64), recipe) for s in (0, 1, 5000)])
    np.testing.assert_array_equal(got, [75.0, 75.0, 75.0])


# ----------------------------------------------------------------------------------------------- 7. decay

def test_decoupled_decay_shrinks_kernels_only():
    """Kernels (conv and dense weights, reference: 'kernel' in the name) shrink by (1 − wd·lr); biases and
    every batch-norm variable stay as they are."""
    rng = np.random.RandomState(4)
    names = ["net/conv/kernel", "net/conv/bias", "net/dense/kernel", "net/dense/bias", "net/bn/gamma",
             "net/bn/beta", "net/bn/moving_mean", "net/bn/moving_variance"]
    values = {name: rng.normal(0, 1, (3, 2)).astype(np.float32) for name in names}
    factor = 0.1
    graph = tf.Graph()
    with graph.as_default():
        variables = {}
        for name in names:
            scope, last = name.rsplit("/", 1)
            with tf.variable_scope(scope, reuse=tf.AUTO_REUSE):
                variables[name] = tf.get_variable(last, initializer=tf.constant(values[name]),
                                                  trainable=not last.startswith("moving"))
        kernels = [v for v in variables.values() if is_kernel(v)]
        op = decoupled_decay(kernels, factor)
        init = tf.global_variables_initializer()
    assert sorted(v.op.name for v in kernels) == ["net/conv/kernel", "net/dense/kernel"]
    with tf.Session(graph=graph) as session:
        session.run(init)
        session.run(op)
        after = session.run(variables)
    for name in names:
        if name.endswith("/kernel"):
            np.testing.assert_array_equal(after[name], values[name] * np.float32(1.0 - factor))
        else:
            np.testing.assert_array_equal(after[name], values[name])


# ----------------------------------------------------------------------------------------------- 8. the step

TINY_B, TINY_C, TINY_D, TINY_K = 5, 3, 4, 2  # B = 5: chunks of 1, 2, 2 (the remainder path of interleave)
TINY_MOMENTUM = 0.9


class TinyBnNet:
    """A linear classifier on flattened 2x2x1 images behind a mean-only batch norm: training mode subtracts
    the batch mean and returns two updates in bn_updates, the moving mean's (momentum 0.9) and a count of
    the updates run (`bn/updates_run`, += 1: concurrent moving-mean assigns that all read the old value
    would look like one, the count does not); inference subtracts the moving mean. Variables: bn/beta,
    bn/moving_mean and bn/updates_run (not trainable), dense/kernel, dense/bias. The model scope starts from
    fixed values, any other scope (the EMA) from zeros, so the EMA's copy is visible."""

    def __init__(self):
        rng = np.random.RandomState(11)
        self.initial = collections.OrderedDict([
            ("bn/beta", rng.normal(0, 0.5, TINY_D)),
            ("bn/moving_mean", rng.normal(0, 1.0, TINY_D)),
            ("bn/updates_run", np.zeros([])),
            ("dense/kernel", rng.normal(0, 1.0, (TINY_D, TINY_C))),
            ("dense/bias", rng.normal(0, 0.5, TINY_C)),
        ])
        self.initial = collections.OrderedDict((k, v.astype(np.float32)) for k, v in self.initial.items())

    def __call__(self, images, training, scope):
        updates = []

        def variable(name, trainable=True):
            value = self.initial[name] if scope == MODEL_SCOPE else np.zeros_like(self.initial[name])
            group, last = name.split("/")
            with tf.variable_scope(group):
                return tf.get_variable(last, value.shape, tf.float32, initializer=tf.constant_initializer(value),
                                       trainable=trainable)

        with tf.variable_scope(scope, reuse=tf.AUTO_REUSE):
            beta = variable("bn/beta")
            moving_mean = variable("bn/moving_mean", trainable=False)
            updates_run = variable("bn/updates_run", trainable=False)
            kernel = variable("dense/kernel")
            bias = variable("dense/bias")
            x = tf.reshape(images, [-1, TINY_D])
            if training:
                mean = tf.reduce_mean(x, axis=0)
                updates.append(tf.assign(moving_mean, TINY_MOMENTUM * moving_mean + (1.0 - TINY_MOMENTUM) * mean))
                updates.append(tf.assign_add(updates_run, 1.0, use_locking=True))
            else:
                mean = moving_mean
            logits = tf.matmul(x - mean + beta, kernel) + bias
        return ModelOutput(logits=logits, bn_updates=updates)

    def np_train_logits(self, images):
        x = np.asarray(images, np.float64).reshape(len(images), -1)
        p = self.initial
        return (x - x.mean(axis=0) + p["bn/beta"]) @ p["dense/kernel"].astype(np.float64) + p["dense/bias"]


STEP_OVERRIDES = ["batch_size=5", "num_classes=3", "mixmatch_rampup_kimg=0", "mixmatch_weight=100",
                  "mixmatch_lr=0.002", "decoupled_weight_decay=10", "ema_decay=0.9", "mixmatch_temperature=0.5",
                  "mixup_beta=0.5", "mixmatch_views=2"]


@pytest.fixture(scope="module")
def one_step():
    """One MixMatch step of TinyBnNet on a hand-fed batch: the values before and after, the step's metrics,
    and the λ and π its MixUp drew (recorded at the `mixup` call, fetched in the same run)."""
    recipe = load_recipe("mixmatch-demo", STEP_OVERRIDES)
    rng = np.random.RandomState(12)
    images = rng.normal(0, 1, (TINY_B, 2, 2, 1)).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 0], np.int64)
    views = [rng.normal(0.5 * k, 1, (TINY_B, 2, 2, 1)).astype(np.float32) for k in range(1, TINY_K + 1)]
    model = TinyBnNet()
    recorded = {}
    original_mixup = mixmatch.mixup

    def recording_mixup(images_, targets_, lam_, permutation_):
        recorded.update(lam=lam_, permutation=permutation_)
        return original_mixup(images_, targets_, lam_, permutation_)

    graph = tf.Graph()
    patch = MonkeyPatch()  # module scope: the function-scoped `monkeypatch` fixture is not available
    patch.setattr(mixmatch, "mixup", recording_mixup)
    try:
        with graph.as_default():
            tf.set_random_seed(3)
            global_step = tf.train.get_or_create_global_step()
            batch = {"labelled": tf.constant(images), "labels": tf.constant(labels),
                     "views": tuple(tf.constant(v) for v in views)}
            step = MixMatch().build_step(model, recipe, batch, global_step)
            model_vars = collections.OrderedDict(
                (name, graph.get_tensor_by_name("{}/{}:0".format(MODEL_SCOPE, name))) for name in model.initial)
            ema_vars = collections.OrderedDict(
                (name, graph.get_tensor_by_name("{}/{}:0".format(EMA_SCOPE, name))) for name in model.initial)
            trainable = sorted(v.op.name for v in tf.trainable_variables())
            init = tf.global_variables_initializer()
    finally:
        patch.undo()
    config = tf.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=2)
    with tf.Session(graph=graph, config=config) as session:
        session.run(init)
        ema_before_init = session.run(ema_vars)
        session.run(step.init_ops)
        before = session.run({"model": model_vars, "ema": ema_vars, "step": global_step})
        _, metrics, lam, permutation = session.run([step.train_op, step.metrics, recorded["lam"],
                                                    recorded["permutation"]])
        after = session.run({"model": model_vars, "ema": ema_vars, "step": global_step})
    return dict(recipe=recipe, model=model, images=images, labels=labels, views=views, metrics=metrics,
                lam=lam, permutation=permutation, before=before, after=after, trainable=trainable,
                ema_before_init=ema_before_init, step=step)


def _np_step(s):
    """The step's forward in numpy: guess, MixUp with the drawn λ and π, interleave, losses, and the
    batch the first interleaved call normalised."""
    model, recipe = s["model"], s["recipe"]
    views = s["views"]
    guess = np_sharpen(np.mean([np_softmax(model.np_train_logits(v)) for v in views], axis=0),
                       recipe.mixmatch_temperature)
    pooled = np.concatenate([s["images"]] + views).astype(np.float64)
    targets = np.concatenate([np.eye(TINY_C)[s["labels"]]] + [guess] * TINY_K)
    mixed, mixed_targets, _ = np_mixup(pooled, targets, s["lam"], s["permutation"])
    parts = np_interleave(np.split(mixed, TINY_K + 1), TINY_B)
    logits = np_interleave([model.np_train_logits(p) for p in parts], TINY_B)
    logits_x, logits_u = logits[0], np.concatenate(logits[1:])
    ce = np.mean(-np.sum(mixed_targets[:TINY_B] * np_log_softmax(logits_x), axis=-1))
    l2u = np.mean((mixed_targets[TINY_B:] - np_softmax(logits_u)) ** 2)
    return dict(guess=guess, parts=parts, labelled_ce=ce, l2u=l2u)


def test_step_runs_once_and_reports_exactly_its_metrics(one_step):
    """One train op run is one step (global step 0 -> 1) and the metrics are the declared CSV columns."""
    assert one_step["before"]["step"] == 0
    assert one_step["after"]["step"] == 1
    assert tuple(one_step["metrics"]) == MixMatch.metric_names
    assert one_step["trainable"] == ["model/bn/beta", "model/dense/bias", "model/dense/kernel"]
    assert all(np.isfinite(v) for v in one_step["metrics"].values())


def test_step_losses_match_numpy(one_step):
    """labelled CE on the mixed labelled rows, L2 on the mixed unlabelled rows, after the de-interleave, and
    loss = CE + w·L2, all recomputed from the drawn λ and π."""
    expected = _np_step(one_step)
    metrics = one_step["metrics"]
    lam = one_step["lam"]
    assert lam.shape == (TINY_B * (1 + TINY_K),)
    assert sorted(one_step["permutation"].tolist()) == list(range(TINY_B * (1 + TINY_K)))
    np.testing.assert_allclose(metrics["labelled_ce"], expected["labelled_ce"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["l2u_loss"], expected["l2u"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["guess_confidence"], expected["guess"].max(axis=-1).mean(), rtol=1e-5)
    assert metrics["match_weight"] == 100.0
    np.testing.assert_allclose(metrics["learning_rate"], 0.002, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], metrics["labelled_ce"] + 100.0 * metrics["l2u_loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], expected["labelled_ce"] + 100.0 * expected["l2u"], rtol=1e-5)
    assert metrics["grad_norm"] > 0


def test_step_runs_only_the_first_interleaved_calls_bn_update(one_step):
    """Of the K guess calls and K + 1 training calls, only the first interleaved call's batch-norm update
    runs (reference post_ops): the moving mean moved by exactly one momentum update from that batch."""
    parts = _np_step(one_step)["parts"]
    start = one_step["before"]["model"]["bn/moving_mean"].astype(np.float64)
    batch_mean = parts[0].reshape(len(parts[0]), -1).mean(axis=0)
    expected = TINY_MOMENTUM * start + (1 - TINY_MOMENTUM) * batch_mean
    got = one_step["after"]["model"]["bn/moving_mean"]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert one_step["before"]["model"]["bn/updates_run"] == 0.0
    assert one_step["after"]["model"]["bn/updates_run"] == 1.0  # K + 3 = 5 if every call's update ran
    # The other calls' batches would each have moved it differently.
    for other in [parts[1], parts[2], one_step["views"][0], one_step["views"][1]]:
        wrong = TINY_MOMENTUM * start + (1 - TINY_MOMENTUM) * np.asarray(other).reshape(len(other), -1).mean(0)
        assert not np.allclose(got, wrong, atol=1e-4)


def test_step_adam_then_decay_moves_each_weight_by_the_learning_rate(one_step):
    """Adam's first step moves every weight by ±lr (m̂/√v̂ = sign g); kernels then shrink by (1 − wd·lr).
    Undoing the decay on the kernels must give exactly the ±lr move (no decay on beta and bias)."""
    recipe = one_step["recipe"]
    lr = recipe.mixmatch_lr
    shrink = 1.0 - recipe.decoupled_weight_decay * lr
    for name in ("bn/beta", "dense/kernel", "dense/bias"):
        start = one_step["before"]["model"][name].astype(np.float64)
        final = one_step["after"]["model"][name].astype(np.float64)
        adam = final / shrink if name.endswith("kernel") else final
        np.testing.assert_allclose(np.abs(adam - start), lr, rtol=5e-3, err_msg=name)


def test_step_ema_tracks_weights_after_adam_before_decay_and_copies_bn_statistics(one_step):
    """EMA = d·init + (1 − d)·(weights after Adam, before the decay); the EMA's moving statistics are the
    model's after the step (the reference's EMA getter reads the model's own)."""
    recipe = one_step["recipe"]
    decay = recipe.ema_decay
    shrink = 1.0 - recipe.decoupled_weight_decay * recipe.mixmatch_lr
    before, after = one_step["before"], one_step["after"]
    # init_ops copied the model into the EMA (which starts from zeros in TinyBnNet)
    for name, value in one_step["ema_before_init"].items():
        np.testing.assert_array_equal(value, np.zeros_like(value))
        np.testing.assert_array_equal(before["ema"][name], before["model"][name])
    for name in ("bn/beta", "dense/kernel", "dense/bias"):
        final = after["model"][name].astype(np.float64)
        adam = final / shrink if name.endswith("kernel") else final
        expected = decay * before["model"][name].astype(np.float64) + (1 - decay) * adam
        np.testing.assert_allclose(after["ema"][name], expected, atol=1e-6, err_msg=name)
    for name in ("bn/moving_mean", "bn/updates_run"):
        np.testing.assert_array_equal(after["ema"][name], after["model"][name])


# ----------------------------------------------------------------------------------------------- 9. registry

def test_mixmatch_is_registered_with_its_declaration():
    """What the trainer, the CSV and the recipe checks read from the algorithm."""
    algorithm = get_algorithm("mixmatch")
    assert isinstance(algorithm, MixMatch)
    assert "mixmatch" in algorithm_names()
    assert algorithm.name == "mixmatch"
    assert algorithm.networks == ("model", "ema")
    assert algorithm.eval_targets == ("model", "ema")
    assert algorithm.default_target == "ema"
    assert {f.name for f in algorithm.fields} == {"mixmatch_views", "mixmatch_temperature", "mixup_beta", "mixmatch_weight",
                                     "mixmatch_rampup_kimg", "mixmatch_lr", "decoupled_weight_decay"}
    assert algorithm.reads == ("ema_decay",)  # of the shared training keys: not lr, momentum, augment, ...
    assert algorithm.metric_names == ("loss", "labelled_ce", "l2u_loss", "match_weight", "guess_confidence",
                                      "learning_rate", "grad_norm")
    assert set(algorithm.progress_metrics) <= set(algorithm.metric_names)
    recipe = load_recipe("mixmatch-demo", ["mixmatch_views=3"])
    labelled, unlabelled = algorithm.streams(recipe)
    assert (labelled.records, labelled.per_step, labelled.view.names, labelled.labels) == (
        "labelled", recipe.batch_size, ("labelled",), "labels")
    assert (unlabelled.records, unlabelled.per_step, unlabelled.view.names, unlabelled.labels) == (
        "unlabelled", recipe.batch_size, ("views",), None)
    with tf.Graph().as_default():  # K = 3 weak views of one record
        made = unlabelled.view.make(tf.zeros((32, 32, 3), tf.uint8), 1)
    assert len(made) == 1 and len(made[0]) == 3
    assert algorithm.describe() == {"name": "mixmatch", "networks": ["model", "ema"],
                                    "eval_targets": ["model", "ema"], "default_target": "ema"}


def test_mixmatch_refuses_keys_it_does_not_read():
    """A key another algorithm reads, given to mixmatch, would do nothing: refused, naming the key."""
    with pytest.raises(UsageError) as info:
        load_recipe("mixmatch-demo", ["teacher_lr=0.1"])  # an earlier name of lr
    assert "mixmatch does not read lr (mpl, supervised, uda do)" in str(info.value)


def test_other_algorithms_refuse_mixmatch_keys_naming_mixmatch():
    """mixup_beta given to mpl: refused, and the message says which algorithm reads it."""
    with pytest.raises(UsageError) as info:
        load_recipe("mpl-demo", ["mixup_beta=0.3"])
    message = str(info.value)
    assert "mpl does not read mixup_beta" in message and "(mixmatch does)" in message


def test_decay_factor_of_one_or_more_is_refused():
    """wd·lr ≥ 1 would zero (or flip) every kernel each step."""
    with pytest.raises(UsageError) as info:
        load_recipe("mixmatch-demo", ["decoupled_weight_decay=600"])
    assert "decoupled_weight_decay * mixmatch_lr" in str(info.value) and "must be < 1" in str(info.value)
    with pytest.raises(UsageError):
        load_recipe("mixmatch-demo", ["decoupled_weight_decay=500"])  # exactly 1
    assert load_recipe("mixmatch-demo", ["decoupled_weight_decay=499"]).decoupled_weight_decay == 499.0


def test_the_cifar10_250_recipe_has_the_seeds_values():
    """mixmatch-cifar10-250 is the seed's run (cifar10.3@250-5000, filters 32, w_match 100, beta 0.5)."""
    recipe = load_recipe("mixmatch-cifar10-250")
    expected = dict(algorithm="mixmatch", num_labelled=250, num_valid=5000, split="round-robin",
                    model="mixmatch-resnet-32-3-4", batch_size=64, mixup_beta=0.5, ema_decay=0.999,
                    mixmatch_lr=0.002, mixmatch_weight=100.0, decoupled_weight_decay=0.02,
                    num_train_steps=1048576, eval_every=1024, mixmatch_views=2, mixmatch_temperature=0.5,
                    mixmatch_rampup_kimg=1024, num_classes=10)
    assert {key: recipe[key] for key in expected} == expected
    # 2^16 kimg of labelled images at B = 64
    assert recipe.num_train_steps * recipe.batch_size == (1 << 16) * 1024
