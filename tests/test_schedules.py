"""Schedules vs the reference formulas (docs/mpl-reference.md §3), re-derived in plain Python."""

import math

import pytest

from mpltool.recipes import load_recipe
from mpltool.tfv1 import tf
from mpltool.algorithms import schedules
from mpltool.algorithms.mpl import student_learning_rate
from mpltool.algorithms.uda import uda_weight

N, T_WARMUP, S_WAIT, S_WARMUP, BATCH, LR_T, LR_S = 1000, 100, 50, 80, 64, 0.2, 0.4


def python_lr(t, base, warmup, decay_steps, decay="cosine"):
    if t < warmup:
        return base * (t + 1) / warmup
    if decay == "constant":
        return base
    progress = min(t - warmup, decay_steps) / decay_steps
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def python_student_lr(t, base, wait, warmup, n, decay="cosine"):
    t = t - wait
    return 0.0 if t < 0 else python_lr(t, base, warmup, n - warmup - wait, decay)


def make_recipe(*extra):
    return load_recipe("mpl-wrn28-2", [
        "num_train_steps={}".format(N), "lr_warmup_steps={}".format(T_WARMUP),
        "student_lr_wait_steps={}".format(S_WAIT), "student_lr_warmup_steps={}".format(S_WARMUP),
        "batch_size={}".format(BATCH), "lr={}".format(LR_T), "student_lr={}".format(LR_S),
        "uda_steps=40", "uda_weight=8", "ema_decay=0.995"] + list(extra))


@pytest.fixture(scope="module")
def evaluate():
    """evaluate(fn, recipe, steps) -> [value of fn(global_step, recipe) at each step]."""
    graph = tf.Graph()
    with graph.as_default():
        step = tf.placeholder(tf.int64, [])
    session = tf.Session(graph=graph)

    def run(fn, recipe, steps):
        with graph.as_default():
            tensor = fn(step, recipe)
        assert tensor.dtype == tf.float32 and tensor.shape.ndims == 0
        return [session.run(tensor, {step: s}) for s in steps]

    yield run
    session.close()


TEACHER_STEPS = [0, 1, T_WARMUP // 2, T_WARMUP - 1, T_WARMUP, (N + T_WARMUP) // 2, N - 1, N, N + 10]
STUDENT_STEPS = [0, S_WAIT - 1, S_WAIT, S_WAIT + S_WARMUP // 2, S_WAIT + S_WARMUP - 1, S_WAIT + S_WARMUP,
                 (N + S_WAIT + S_WARMUP) // 2, N - 1, N, N + 10]


@pytest.mark.parametrize("decay", ["cosine", "constant"])
@pytest.mark.parametrize("scale_by_batch", [False, True])
def test_teacher_lr_matches_reference_formula(evaluate, decay, scale_by_batch):
    recipe = make_recipe("lr_decay=" + decay, "lr_scale_by_batch={}".format(scale_by_batch))
    base = LR_T * (BATCH / 256.0 if scale_by_batch else 1.0)
    got = evaluate(schedules.learning_rate, recipe, TEACHER_STEPS)
    want = [python_lr(t, base, T_WARMUP, N - T_WARMUP, decay) for t in TEACHER_STEPS]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_teacher_lr_landmarks(evaluate):
    got = dict(zip(TEACHER_STEPS, evaluate(schedules.learning_rate, make_recipe(), TEACHER_STEPS)))
    assert got[0] == pytest.approx(LR_T / T_WARMUP)          # (t+1)/warmup: not 0 at the first step
    assert got[T_WARMUP - 1] == pytest.approx(LR_T)          # warmup ends at the full rate
    assert got[T_WARMUP] == pytest.approx(LR_T)              # cosine starts at the full rate
    assert got[(N + T_WARMUP) // 2] == pytest.approx(LR_T / 2)
    assert got[N] == 0.0 and got[N + 10] == 0.0              # clamped at 0 past the end


@pytest.mark.parametrize("decay", ["cosine", "constant"])
def test_student_lr_matches_reference_formula(evaluate, decay):
    recipe = make_recipe("lr_decay=" + decay)
    got = evaluate(student_learning_rate, recipe, STUDENT_STEPS)
    want = [python_student_lr(t, LR_S, S_WAIT, S_WARMUP, N, decay) for t in STUDENT_STEPS]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_student_lr_wait_boundary_and_end(evaluate):
    got = dict(zip(STUDENT_STEPS, evaluate(student_learning_rate, make_recipe(), STUDENT_STEPS)))
    assert got[0] == 0.0 and got[S_WAIT - 1] == 0.0
    assert got[S_WAIT] == pytest.approx(LR_S / S_WARMUP)
    assert got[S_WAIT + S_WARMUP] == pytest.approx(LR_S)
    assert got[(N + S_WAIT + S_WARMUP) // 2] == pytest.approx(LR_S / 2)
    assert got[N] == 0.0 and got[N + 10] == 0.0


def test_zero_warmup_starts_at_the_full_rate(evaluate):
    recipe = make_recipe("lr_warmup_steps=0", "student_lr_warmup_steps=0", "student_lr_wait_steps=0")
    assert evaluate(schedules.learning_rate, recipe, [0, N // 2, N]) == pytest.approx(
        [LR_T, LR_T / 2, 0.0], abs=1e-7)
    assert evaluate(student_learning_rate, recipe, [0, N // 2, N]) == pytest.approx(
        [LR_S, LR_S / 2, 0.0], abs=1e-7)


def test_run_shorter_than_its_warmup_stays_finite(evaluate):
    recipe = make_recipe("num_train_steps=30")  # warmups 100 / wait 50 + 80: decay never reached
    got = evaluate(student_learning_rate, recipe, [0, 29, 60, 200])
    assert got[:3] == pytest.approx([0.0, 0.0, LR_S * 11 / S_WARMUP])
    assert all(math.isfinite(v) for v in got)


def test_uda_weight_ramp(evaluate):
    got = evaluate(uda_weight, make_recipe(), [0, 10, 20, 39, 40, 41, 5000])
    assert got == pytest.approx([0.0, 2.0, 4.0, 7.8, 8.0, 8.0, 8.0])


def test_ema_decay_is_capped_by_the_step_ramp(evaluate):
    steps = [0, 1, 10, 100, 1790, 1791, 100000]
    got = evaluate(schedules.ema_decay, make_recipe(), steps)
    assert got == pytest.approx([min(0.995, (t + 1.0) / (t + 10.0)) for t in steps], rel=1e-6)
    assert got[0] == pytest.approx(0.1) and got[-1] == pytest.approx(0.995)


def test_unknown_decay_is_refused():
    with tf.Graph().as_default(), pytest.raises(ValueError, match="lr_decay"):
        schedules.warmup_then_decay(tf.constant(0), 0.1, 10, 100, "linear")
