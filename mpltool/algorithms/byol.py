"""BYOL's building blocks (Grill et al. 2020) as TF1 graph functions, after garder14/byol-tensorflow2.

Reference files (/work/shared/reference/byol-masf.md, section 1): losses.py (the loss), models.py (the
heads), pretraining.py (symmetrised loss, target EMA), linearevaluation.py (the probe's learning rate).

One step, as the reference runs it: p1 = q(g(f(x1))), p2 = q(g(f(x2))) from the online networks;
z1t = g_t(f_t(x1)), z2t = g_t(f_t(x2)) from the target (batch norm in training mode, no gradient);
loss = byol_loss(p1, p2, z1t, z2t); Adam on f, g, q; then target_update with decay 0.99 (constant in
the reference; the paper's cosine schedule is target_decay's "cosine").
"""

import math

from mpltool.models import layers
from mpltool.tfv1 import tf

# Reference head widths (models.py ProjectionHead, used for both g and q): 512 -> 256 -> 128 and
# 128 -> 256 -> 128.
PROJECTOR_HIDDEN = 256
PROJECTOR_OUT = 128
PREDICTOR_HIDDEN = 256
PREDICTOR_OUT = 128

REFERENCE_TARGET_DECAY = 0.99  # pretraining.py: beta = 0.99, every step
PAPER_TARGET_DECAY_BASE = 0.996  # arXiv 2006.07733, with the cosine schedule
L2_EPSILON = 1e-12  # tf.math.l2_normalize's default, which the reference uses


# ------------------------------------------------------------------------------------------------ loss


def regression_loss(p, z):
    """Per-row 2 − 2·cos(p, z) = ||p/|p| − z/|z|||², the normalised MSE of the paper (eq. 2).

    For unit vectors u, v: ||u − v||² = |u|² + |v|² − 2 u·v = 2 − 2 u·v. Both sides are normalised with
    tf.math.l2_normalize: x / sqrt(max(Σx², 1e-12)), so a row of norm below 1e-6 is divided by 1e-6
    instead of its norm; a zero row stays zero, its cosine is 0 and its loss exactly 2 (finite, and its
    gradient finite too). Values lie in [0, 4].
    """
    p_unit = tf.math.l2_normalize(p, axis=-1, epsilon=L2_EPSILON)
    z_unit = tf.math.l2_normalize(z, axis=-1, epsilon=L2_EPSILON)
    return 2.0 - 2.0 * tf.reduce_sum(p_unit * z_unit, axis=-1)


def byol_loss(p1, p2, z1_target, z2_target):
    """The symmetrised BYOL loss: mean of regression_loss over the 2B rows [p1; p2] vs [z2t; z1t].

    Each view's prediction regresses the target projection of the OTHER view (pretraining.py concatenates
    [p_online_1, p_online_2] against [z_target_2, z_target_1]). losses.py returns
    2 − 2·mean(cos) over the 2B rows, which equals mean(2 − 2·cos): averaged, not summed (the paper sums
    the two directions; that only scales the loss by 2). The targets sit behind stop_gradient: no
    gradient reaches the target networks (the reference computes them outside its GradientTape).
    """
    p = tf.concat([p1, p2], axis=0)
    z = tf.stop_gradient(tf.concat([z2_target, z1_target], axis=0))
    return tf.reduce_mean(regression_loss(p, z))


# ----------------------------------------------------------------------------------------------- heads


def mlp_head(x, hidden_units, out_units, training, updates, scope, bn_momentum=0.99):
    """Dense -> batch norm -> ReLU -> Dense: the reference's ProjectionHead (projector g: 512 -> 256 -> 128;
    predictor q: 128 -> 256 -> 128).

    As Keras' Dense and BatchNormalization defaults there: kernels Glorot-uniform
    (U(±sqrt(6 / (fan_in + fan_out)))), biases 0; BN gamma 1, beta 0, epsilon 1e-3, momentum 0.99.
    Variables: `scope`/fc1/dense/{kernel,bias}, `scope`/bn/{gamma,beta,moving_mean,moving_variance},
    `scope`/fc2/dense/{kernel,bias}, under tf.AUTO_REUSE so the head can be called once per view.
    Training appends BN's two moving-average updates to `updates`; inference appends none.

    BN runs as layers.batch_norm (fused, on [B, 1, 1, C]): it normalises with the biased batch variance
    like Keras, but its moving variance takes the unbiased (n/(n−1)) estimate where Keras' non-fused
    2-D BN takes the biased one. No BYOL output depends on it: heads only ever run in training mode.
    """
    with tf.variable_scope(scope, reuse=tf.AUTO_REUSE):
        with tf.variable_scope("fc1"):
            h = layers.dense(x, hidden_units, tf.glorot_uniform_initializer())
        # fused_batch_norm wants NHWC: a [B, C] batch is B images of 1 x 1 pixels, the same statistics.
        h = tf.reshape(h, [-1, 1, 1, hidden_units])
        h = layers.batch_norm(h, training, updates, "bn", bn_momentum)
        h = tf.nn.relu(tf.reshape(h, [-1, hidden_units]))
        with tf.variable_scope("fc2"):
            return layers.dense(h, out_units, tf.glorot_uniform_initializer())


# -------------------------------------------------------------------------------------------- target


def target_decay(step, total_steps, base, schedule):
    """The target network's EMA decay τ at `step` (float32 scalar tensor).

    "constant": τ = base (the reference: 0.99 at every step).
    "cosine" (the paper): τ_k = 1 − (1 − base)·(cos(π·k/K) + 1)/2, from base at k = 0 to 1 at k = K.
    k/K is clamped to [0, 1] (past K, τ stays 1). Written with (cos(πr) + 1)/2 = cos²(πr/2), which
    keeps float32 precision near k = K, where 1 + cos cancels.
    """
    if schedule == "constant":
        return tf.constant(float(base), tf.float32, name="target_decay")
    if schedule != "cosine":
        raise ValueError("unknown target decay schedule {!r} (constant or cosine)".format(schedule))
    k = tf.cast(step, tf.float32)
    ratio = tf.clip_by_value(k / float(max(total_steps, 1)), 0.0, 1.0)
    return tf.subtract(1.0, (1.0 - float(base)) * tf.square(tf.cos(0.5 * math.pi * ratio)), name="target_decay")


def _check_pairs(target_variables, online_variables):
    target_variables, online_variables = list(target_variables), list(online_variables)
    if len(target_variables) != len(online_variables):
        raise ValueError("{} target variables but {} online ones".format(len(target_variables), len(online_variables)))
    for t, o in zip(target_variables, online_variables):
        if not t.shape.is_compatible_with(o.shape) or t.dtype.base_dtype != o.dtype.base_dtype:
            raise ValueError("target {} {} {} does not match online {} {} {}".format(
                t.op.name, t.dtype.base_dtype.name, t.shape, o.op.name, o.dtype.base_dtype.name, o.shape))
    return target_variables, online_variables


def target_update(target_variables, online_variables, decay):
    """One op: target ← τ·target + (1 − τ)·online for every pair (pass BN moving statistics too).

    The reference (pretraining.py) does this after each optimiser step over every weight of f and g,
    get_weights() included the BN moving means and variances; run it after the online update (control
    dependency) so it reads the new online weights.
    """
    target_variables, online_variables = _check_pairs(target_variables, online_variables)
    assigns = []
    for t, o in zip(target_variables, online_variables):
        tau = tf.cast(decay, t.dtype.base_dtype)
        assigns.append(tf.assign(t, tau * t + (1.0 - tau) * o))
    return tf.group(*assigns, name="target_update")


def target_init(target_variables, online_variables):
    """One op copying every online variable into its target: the paper's start (target = online at step 0).

    The reference (pretraining.py) does NOT copy: its target networks are separate Keras models built on
    a random batch, i.e. initialised randomly and independently, and only the EMA pulls them together.
    """
    target_variables, online_variables = _check_pairs(target_variables, online_variables)
    return tf.group(*[tf.assign(t, o) for t, o in zip(target_variables, online_variables)], name="target_init")


def pair_variables(online_scope, target_scope, variables):
    """(target_variables, online_variables): every variable in `variables` under `target_scope`/, in the
    given order, with the online variable of the same name under `online_scope`/.

    A target variable without an online twin (or with another shape/dtype) is an error naming it; an
    online variable without a target twin is ignored on purpose: the predictor and the optimiser's slot
    variables (…/kernel/Adam) live only online. Pass tf.global_variables() to include BN moving stats.
    """
    online_scope, target_scope = online_scope.rstrip("/"), target_scope.rstrip("/")
    variables = list(variables)
    by_name = {v.op.name: v for v in variables}
    targets, onlines, missing = [], [], []
    for variable in variables:
        name = variable.op.name
        if not name.startswith(target_scope + "/"):
            continue
        online_name = online_scope + name[len(target_scope):]
        if online_name not in by_name:
            missing.append("{} (no {})".format(name, online_name))
            continue
        targets.append(variable)
        onlines.append(by_name[online_name])
    if missing:
        raise ValueError("target variables without an online twin: {}".format(", ".join(missing)))
    if not targets:
        raise ValueError("no variables under target scope {!r}".format(target_scope))
    _check_pairs(targets, onlines)
    return targets, onlines


# ------------------------------------------------------------------------------------ linear evaluation


def linear_eval_learning_rate(step, decay_steps, start=5e-2, end=5e-4, power=2.0):
    """The linear probe's rate: tf.keras PolynomialDecay(start, decay_steps, end, power) with cycle=False.

    lr(k) = (start − end)·(1 − min(k, K)/K)^power + end, K = decay_steps: start at k = 0, end at k = K
    and after it (clamped, no cycling). The reference uses K = 50 epochs x 97 steps and Keras' Adam,
    which evaluates the schedule at its iteration count: 0 for the first update, so pass the global step
    before its increment.
    """
    k = tf.cast(step, tf.float32)
    decay_steps = float(decay_steps)
    if decay_steps <= 0:
        raise ValueError("decay_steps must be positive, got {}".format(decay_steps))
    remaining = 1.0 - tf.minimum(k, decay_steps) / decay_steps
    return tf.add((float(start) - float(end)) * tf.pow(remaining, float(power)), float(end),
                  name="linear_eval_learning_rate")
