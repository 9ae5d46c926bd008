"""BYOL building blocks (mpltool/algorithms/byol.py, mpltool/data/byol_views.py) against numpy."""

import math

import numpy as np
import pytest

from helpers import dataset_samples
from mpltool.algorithms import byol
from mpltool.data import byol_views as V
from mpltool.tfv1 import tf

GRAPH_SEED = 20240611  # of the `run` fixture's graph (conftest.py)

pytestmark = pytest.mark.filterwarnings("ignore:Seed .* from outer graph:UserWarning")


def _image(size=32, seed=3):
    """Random colours with a left-right gradient, so flips and channel mixing are visible."""
    rng = np.random.RandomState(seed)
    x = np.arange(size)[None, :, None] * (200 // size)
    return (rng.randint(0, 55, (size, size, 3)) + x).astype(np.uint8)


def _np_regression(p, z):
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-6)
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-6)
    return 2.0 - 2.0 * np.sum(p * z, axis=1)


# ---------------------------------------------------------------------------------------------- loss


def test_regression_loss_matches_numpy_and_zero_row_gives_two(run):
    rng = np.random.RandomState(0)
    p, z = rng.randn(5, 7).astype(np.float32), rng.randn(5, 7).astype(np.float32)
    p[3] = 0.0  # zero row: l2_normalize leaves it zero, cosine 0, loss 2
    got = run(lambda: byol.regression_loss(tf.constant(p), tf.constant(z)))
    np.testing.assert_allclose(got, _np_regression(p.astype(np.float64), z.astype(np.float64)), atol=1e-5)
    assert got[3] == pytest.approx(2.0)
    # scale invariance and the extremes: same direction 0, opposite 4
    same = run(lambda: byol.regression_loss(tf.constant(p[:1]), tf.constant(3.0 * p[:1])))
    opposite = run(lambda: byol.regression_loss(tf.constant(p[:1]), tf.constant(-p[:1])))
    assert same[0] == pytest.approx(0.0, abs=1e-6) and opposite[0] == pytest.approx(4.0, abs=1e-6)


def test_byol_loss_symmetrised_mean_and_no_gradient_to_targets(run):
    rng = np.random.RandomState(1)
    p1, p2, z1, z2 = (rng.randn(4, 6).astype(np.float32) for _ in range(4))

    is_none = []

    def build():
        tensors = [tf.constant(a) for a in (p1, p2, z1, z2)]
        loss = byol.byol_loss(*tensors)
        grads = tf.gradients(loss, tensors)
        is_none.extend(g is None for g in grads)
        return loss, [tf.zeros([]) if g is None else g for g in grads]

    loss, grads = run(build)
    # [p1; p2] against [z2; z1], averaged over the 2B rows
    expected = np.mean(np.concatenate([_np_regression(p1, z2), _np_regression(p2, z1)]))
    assert loss == pytest.approx(expected, abs=1e-5)
    wrong_pairing = np.mean(np.concatenate([_np_regression(p1, z1), _np_regression(p2, z2)]))
    assert abs(expected - wrong_pairing) > 1e-2
    assert not is_none[0] and not is_none[1] and np.abs(grads[0]).sum() > 0
    for none, grad in zip(is_none[2:], grads[2:]):
        assert none or not np.any(grad)


# --------------------------------------------------------------------------------------------- heads


def test_mlp_head_shapes_names_and_bn_updates():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.random.normal([6, 512], seed=1)
        train_updates, eval_updates = [], []
        z = byol.mlp_head(x, 256, 128, True, train_updates, "online/projector")
        z_eval = byol.mlp_head(x, 256, 128, False, eval_updates, "online/projector")  # reuses the variables
        p = byol.mlp_head(z, 256, 128, True, train_updates, "online/predictor")
        assert z.shape.as_list() == [6, 128] and p.shape.as_list() == [6, 128] and z_eval.shape.as_list() == [6, 128]
        assert len(train_updates) == 4 and eval_updates == []
        shapes = {v.op.name: v.shape.as_list() for v in tf.global_variables()
                  if v.op.name.startswith("online/projector/")}
        assert shapes == {
            "online/projector/fc1/dense/kernel": [512, 256], "online/projector/fc1/dense/bias": [256],
            "online/projector/bn/gamma": [256], "online/projector/bn/beta": [256],
            "online/projector/bn/moving_mean": [256], "online/projector/bn/moving_variance": [256],
            "online/projector/fc2/dense/kernel": [256, 128], "online/projector/fc2/dense/bias": [128]}
        trainable = {v.op.name for v in tf.trainable_variables()}
        assert "online/projector/bn/moving_mean" not in trainable and "online/projector/bn/gamma" in trainable
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            kernel = session.run(graph.get_tensor_by_name("online/projector/fc1/dense/kernel:0"))
    limit = math.sqrt(6.0 / (512 + 256))  # Glorot uniform, as Keras' Dense
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit


def test_mlp_head_forward_matches_numpy():
    rng = np.random.RandomState(2)
    x = rng.randn(8, 5).astype(np.float32)
    with tf.Graph().as_default() as graph:
        updates = []
        out = byol.mlp_head(tf.constant(x), 4, 3, True, updates, "head")
        variables = {v.op.name[len("head/"):]: v for v in tf.global_variables()}
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            got, w = session.run([out, variables])
            session.run(updates)
            mm, mv = session.run([variables["bn/moving_mean"], variables["bn/moving_variance"]])
    h = x @ w["fc1/dense/kernel"] + w["fc1/dense/bias"]
    mean, var = h.mean(0), h.var(0)
    hn = np.maximum((h - mean) / np.sqrt(var + 1e-3) * w["bn/gamma"] + w["bn/beta"], 0.0)
    np.testing.assert_allclose(got, hn @ w["fc2/dense/kernel"] + w["fc2/dense/bias"], rtol=1e-4, atol=1e-4)
    # one momentum-0.99 step from (0, 1); the moving variance takes the unbiased batch variance
    np.testing.assert_allclose(mm, 0.01 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mv, 0.99 + 0.01 * h.var(0, ddof=1), rtol=1e-4)


# -------------------------------------------------------------------------------------------- target


def _online_target_graph():
    """Projector heads under online/ and target/ (plus an online-only predictor), trained one BN step."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.random.normal([6, 16], seed=4)
        updates = []
        z = byol.mlp_head(x, 8, 4, True, updates, "online/projector")
        byol.mlp_head(z, 8, 4, True, updates, "online/predictor")
        byol.mlp_head(x * 2.0 + 1.0, 8, 4, True, updates, "target/projector")
    return graph, updates


def test_pair_variables_by_name_and_errors():
    graph, _ = _online_target_graph()
    with graph.as_default():
        targets, onlines = byol.pair_variables("online/projector", "target/projector", tf.global_variables())
        assert len(targets) == 8  # fc1 kernel/bias, bn gamma/beta/moving_mean/moving_variance, fc2 kernel/bias
        for t, o in zip(targets, onlines):
            assert t.op.name.replace("target/", "online/", 1) == o.op.name
        assert "target/projector/bn/moving_variance" in [t.op.name for t in targets]
        # a scope whose target has variables the online network lacks: error naming it
        byol.mlp_head(tf.zeros([2, 4]), 8, 4, False, [], "target/predictor")
        with pytest.raises(ValueError, match="target/predictor/fc1/dense/kernel.*online/predictor2"):
            byol.pair_variables("online/predictor2", "target/predictor", tf.global_variables())
        with pytest.raises(ValueError, match="no variables under target scope"):
            byol.pair_variables("online", "nothing", tf.global_variables())


def test_target_update_and_init_against_numpy():
    graph, updates = _online_target_graph()
    with graph.as_default():
        targets, onlines = byol.pair_variables("online", "target", [
            v for v in tf.global_variables() if not v.op.name.startswith("online/predictor/")])
        decay = tf.placeholder(tf.float32, [])
        update = byol.target_update(targets, onlines, decay)
        init = byol.target_init(targets, onlines)
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            session.run(updates)  # moves the BN statistics of both networks, differently
            t0, o0 = session.run([targets, onlines])
            stats = [i for i, t in enumerate(targets) if "moving" in t.op.name]
            assert len(stats) == 2 and all(not np.allclose(t0[i], o0[i]) for i in stats)
            session.run(update, {decay: 0.9})
            t1, o1 = session.run([targets, onlines])
            for t_before, o_before, t_after, o_after in zip(t0, o0, t1, o1):
                np.testing.assert_allclose(t_after, 0.9 * t_before + 0.1 * o_before, rtol=1e-6, atol=1e-7)
                np.testing.assert_array_equal(o_after, o_before)  # the online side is read only
            session.run(init)
            t2 = session.run(targets)
    names = [t.op.name for t in targets]
    assert "target/projector/bn/moving_mean" in names and "target/projector/bn/moving_variance" in names
    for t_after, o_before in zip(t2, o1):
        np.testing.assert_array_equal(t_after, o_before)


def test_target_decay_schedules(run):
    total = 1000
    cosine = run(lambda: [byol.target_decay(k, total, 0.996, "cosine") for k in (0, total // 2, total, 2 * total)])
    tau = [1 - (1 - 0.996) * (math.cos(math.pi * k / total) + 1) / 2 for k in (0, total // 2, total)]
    np.testing.assert_allclose(cosine[:3], tau, atol=1e-7)
    assert cosine[0] == pytest.approx(0.996, abs=1e-7) and cosine[1] == pytest.approx(0.998, abs=1e-7)
    assert cosine[2] == 1.0 and cosine[3] == 1.0  # clamped after K
    constant = run(lambda: byol.target_decay(tf.constant(123), total, 0.99, "constant"))
    assert constant == pytest.approx(0.99)
    with pytest.raises(ValueError):
        byol.target_decay(0, total, 0.99, "linear")


def test_linear_eval_learning_rate_polynomial(run):
    decay_steps = 50 * 97
    steps = [0, 1, 97, 2425, 4000, decay_steps - 1, decay_steps, decay_steps + 500]
    got = run(lambda: [byol.linear_eval_learning_rate(tf.constant(k, tf.int64), decay_steps) for k in steps])
    expected = [(5e-2 - 5e-4) * (1 - min(k, decay_steps) / decay_steps) ** 2 + 5e-4 for k in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[0] == pytest.approx(5e-2) and got[-1] == pytest.approx(5e-4) and got[-2] == pytest.approx(5e-4)
    # the same numbers as the reference's schedule object
    keras = tf.keras.optimizers.schedules.PolynomialDecay(5e-2, decay_steps, 5e-4, power=2)
    np.testing.assert_allclose(got, run(lambda: [keras(k) for k in steps]), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- views


def test_crop_size_bounds_at_32(run):
    samples = run(lambda: dataset_samples(lambda _: V.crop_size(32, seed=11), np.zeros([1], np.uint8), 3000))
    large, small = samples.max(axis=1), samples.min(axis=1)
    assert set(large.tolist()) == set(range(13, 33))  # a ~ U{13, ..., 32}, every value reached
    assert small.min() >= math.floor(13 * 0.67) and np.all(small < large)
    assert np.all(small >= np.floor(large * 0.67) - 1)  # b = floor(a · u), u in [0.67, 1)
    swapped = np.mean(samples[:, 0] < samples[:, 1])  # (height, width) = (b, a) half of the time
    assert 0.45 < swapped < 0.55
    assert V.min_crop_side(32) == 13 and V.min_crop_side(64) == 26 and V.min_crop_side(16) == 7


@pytest.mark.parametrize("size", [32, 20])
def test_view_shape_dtype_range_and_determinism(run, size):
    img = _image(size)
    a, b, c, other = run(lambda: [V.byol_view(tf.constant(img), seed=5), V.byol_view(tf.constant(img), seed=5),
                                  V.crop_flip_resize_view(tf.constant(img), seed=5),
                                  V.byol_view(tf.constant(img), seed=6)])
    for out in (a, c):
        assert out.shape == (size, size, 3) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 255.0
    np.testing.assert_array_equal(a, b)  # same seed, same view
    assert not np.array_equal(a, other)
    # reproducible across graphs and sessions too
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(GRAPH_SEED)
        again = tf.Session(graph=graph).run(V.byol_view(tf.constant(img), seed=5))
    np.testing.assert_array_equal(a, again)


def test_pair_views_differ_and_pair_is_seeded(run):
    img = _image()
    (v1, v2), (w1, w2) = run(lambda: [V.byol_pair(tf.constant(img), seed=9), V.byol_pair(tf.constant(img), seed=9)])
    assert not np.array_equal(v1, v2)
    np.testing.assert_array_equal(v1, w1)
    np.testing.assert_array_equal(v2, w2)
    # in the input pipeline: every element's two views differ
    pairs = run(lambda: dataset_samples(lambda x: V.byol_pair(x, seed=9), img, 16))
    assert pairs[0].shape == (16, 32, 32, 3)
    assert all(not np.array_equal(x, y) for x, y in zip(*pairs))


def test_grayscale_equal_channels_and_probabilities(run):
    img = _image()
    gray = run(lambda: V.grayscale(V.to_unit_float(tf.constant(img))))
    expected = (img.astype(np.float64) / 255.0) @ np.array([0.2989, 0.5870, 0.1140])
    np.testing.assert_allclose(gray, np.repeat(expected[..., None], 3, -1), atol=1e-6)
    forced = run(lambda: V.random_grayscale(V.to_unit_float(tf.constant(img)), p=1.0, seed=1))
    assert np.array_equal(forced[..., 0], forced[..., 1]) and np.array_equal(forced[..., 0], forced[..., 2])
    # whole views: grayscale (equal channels) in about 20% of them
    views = run(lambda: dataset_samples(lambda x: V.byol_view(x, seed=21), img, 500))
    is_gray = np.all(views[..., 0] == views[..., 1], axis=(1, 2)) & np.all(views[..., 1] == views[..., 2], axis=(1, 2))
    assert 0.13 < is_gray.mean() < 0.27
    assert views.min() >= 0.0 and views.max() <= 255.0


def test_flip_and_jitter_probabilities(run):
    img = _image()
    unit = img.astype(np.float64) / 255.0
    flips = run(lambda: dataset_samples(lambda x: V.random_flip(V.to_unit_float(x), seed=31), img, 800))
    flipped = np.array([np.allclose(f, unit[:, ::-1]) for f in flips])
    kept = np.array([np.allclose(f, unit) for f in flips])
    assert np.all(flipped | kept) and 0.19 < flipped.mean() < 0.31  # net p 0.25
    jittered = run(lambda: dataset_samples(lambda x: V.random_color_jitter(V.to_unit_float(x), seed=41), img, 500))
    unchanged = np.array([np.array_equal(j, unit.astype(np.float32)) for j in jittered])
    assert 0.13 < unchanged.mean() < 0.27  # jitter with p 0.8
    assert jittered.min() >= 0.0 and jittered.max() <= 1.0


def test_resize_is_half_pixel_bilinear(run):
    rng = np.random.RandomState(5)
    src = rng.rand(13, 9, 3).astype(np.float32)
    got = run(lambda: V.resize(tf.constant(src), 32))

    def axis_weights(n_in, n_out):
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        low = np.floor(pos)
        frac = pos - low
        return np.clip(low, 0, n_in - 1).astype(int), np.clip(low + 1, 0, n_in - 1).astype(int), frac

    y0, y1, fy = axis_weights(13, 32)
    x0, x1, fx = axis_weights(9, 32)
    s = src.astype(np.float64)
    top = s[y0][:, x0] + (s[y0][:, x1] - s[y0][:, x0]) * fx[None, :, None]
    bottom = s[y1][:, x0] + (s[y1][:, x1] - s[y1][:, x0]) * fx[None, :, None]
    np.testing.assert_allclose(got, top + (bottom - top) * fy[:, None, None], atol=1e-5)
    # TF2's tf.image.resize (resize_images_v2), which the reference calls
    from tensorflow.python.ops import image_ops_impl

    np.testing.assert_allclose(got, run(lambda: image_ops_impl.resize_images_v2(tf.constant(src), [32, 32])), atol=1e-6)


def test_constant_image_crop_flip_resize_stays_constant(run):
    img = np.full((32, 32, 3), [10, 128, 250], np.uint8)
    views = run(lambda: dataset_samples(lambda x: V.crop_flip_resize_view(x, seed=2), img, 20))
    np.testing.assert_allclose(views, np.broadcast_to(img.astype(np.float32), views.shape), atol=1e-4)


def test_views_reject_bad_inputs():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="uint8"):
            V.byol_view(tf.zeros([32, 32, 3]))
        with pytest.raises(ValueError, match="square"):
            V.byol_view(tf.zeros([32, 16, 3], tf.uint8))
