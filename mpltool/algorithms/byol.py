"""BYOL's building blocks (Grill et al. 2020) as TF1 graph functions, after garder14/byol-tensorflow2.

Reference files of garder14/byol-tensorflow2 (facts and derivations: docs/byol.md): losses.py (the loss),
models.py (the heads), pretraining.py (symmetrised loss, target EMA), linearevaluation.py (the probe's rate).

One step, as the reference runs it: p1 = q(g(f(x1))), p2 = q(g(f(x2))) from the online networks;
z1t = g_t(f_t(x1)), z2t = g_t(f_t(x2)) from the target (batch norm in training mode, no gradient);
loss = byol_loss(p1, p2, z1t, z2t); Adam on f, g, q; then target_update with decay 0.99 (constant in
the reference; the paper's cosine schedule is target_decay's "cosine").
"""

import collections
import math

from mpltool.algorithms import Algorithm, Phase, Step, register_algorithm
from mpltool.models import layers
from mpltool.recipes.schema import LEARNING_RATE, UNIT, Field, counts
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


# -------------------------------------------------------------------------------------------- the step

ONLINE = "online"                      # encoder f + the linear classifier (what eval and freeze take)
TARGET = "target"                      # encoder f_t, an EMA of f
PROJECTOR = "projector"                # g
TARGET_PROJECTOR = "target_projector"  # g_t, an EMA of g
PREDICTOR = "predictor"                # q (online only)

BYOL_FIELDS = (
    Field("byol_pretrain_steps", "int", 19400, "steps of self-supervised pre-training; the rest of "
              "num_train_steps is the linear evaluation (0: a random encoder's linear evaluation)", **counts(low=0)),
    Field("byol_lr", "float", 1e-3, "Adam's constant rate in pre-training (the reference: 1e-3·B/512)",
              **LEARNING_RATE),
    Field("byol_target_decay", "float", 0.99, "target EMA decay τ (cosine: its base τ_0)", **UNIT),
    Field("byol_target_schedule", "str", "constant", "τ constant (the reference) or cosine from τ_0 to 1 "
              "over pre-training (the paper)", choices=("constant", "cosine")),
    Field("byol_min_crop", "float", 0.40625, "shortest side of a view's random crop, as a fraction of the "
              "image side (the reference: 13/32 = 0.40625)", low=0.0, high=1.0, low_open=True),
    Field("byol_grayscale", "float", 0.2, "probability that a pre-training view is made grayscale (the "
              "reference: 0.2; 1 removes colour from every view)", **UNIT),
    Field("byol_hidden_units", "int", 256, "hidden width of the projector and predictor", low=1, high=65536),
    Field("byol_projection_units", "int", 128, "output width of the projector and predictor", low=1,
              high=65536),
    Field("linear_lr", "float", 5e-2, "linear evaluation: Adam's rate at its first step (polynomial decay, "
              "power 2)", **LEARNING_RATE),
    Field("linear_lr_end", "float", 5e-4, "linear evaluation: Adam's rate at its last step", **LEARNING_RATE),
)


@register_algorithm
class Byol(Algorithm):
    """Two phases in one run, each with its own steps, schedule, optimizer and checkpoints:

    1. pre-training (global steps [0, P), P = byol_pretrain_steps): for each unlabelled image two
       views x1, x2; p_i = q(g(f(x_i))) and z_it = g_t(f_t(x_i)) (target BN in training mode, no
       gradient); loss = byol_loss(p1, p2, z1t, z2t); Adam at byol_lr on f, g, q; then
       target ← τ·target + (1 − τ)·online over f and g, BN moving statistics included.
    2. linear evaluation (steps [P, num_train_steps)): f frozen (inference mode: moving BN statistics,
       no gradient to it), a linear classifier on f's features trained with softmax CE by Adam at the
       reference's polynomial decay over this phase's steps, on the labelled records with crop/flip/
       resize. The classifier is the network's own head, so `online` is encoder + head: what eval
       scores and freeze exports.

    Divergences from garder14/byol-tensorflow2, on purpose: the target starts as a copy of the online
    networks (the paper; the reference starts it at random), and one Adam update covers f, g and q
    (the reference applies one Adam instance three times a step, so its bias correction counts 3 per
    step).
    """

    name = "byol"
    description = "BYOL self-supervised pre-training, then linear evaluation of the frozen encoder"
    fields = BYOL_FIELDS
    reads = ()  # Adam at its own rates, its own views, its target is its EMA
    reference_recipe = "byol-resnet18"
    demo_recipe = "byol-demo"
    networks = (ONLINE, TARGET, PROJECTOR, TARGET_PROJECTOR, PREDICTOR)
    eval_targets = (ONLINE,)
    default_target = ONLINE
    metric_names = ("byol_loss", "learning_rate", "target_decay", "grad_norm", "linear_ce", "linear_accuracy",
                    "linear_lr")
    progress_metrics = ("byol_loss", "linear_ce", "linear_accuracy")

    def check_recipe(self, recipe):
        if recipe.byol_pretrain_steps >= recipe.num_train_steps:
            return ["byol_pretrain_steps={} leaves no step of linear evaluation in num_train_steps={}".format(
                recipe.byol_pretrain_steps, recipe.num_train_steps)]
        return []

    def streams(self, recipe):
        from mpltool.data import byol_views, views
        from mpltool.data.pipeline import Stream, View

        # Each phase pulls only its own group: pre-training two views of each unlabelled image, linear
        # evaluation crop/flip/resize of the labelled ones.
        options = {"min_crop": recipe.byol_min_crop, "grayscale_p": recipe.byol_grayscale}
        pair = View(("views",), lambda image, seed: (byol_views.byol_pair(image, seed=seed, **options),))
        linear = View((views.LABELLED,), lambda image, seed: (
            byol_views.crop_flip_resize_view(image, seed=seed, **options),))
        return [Stream("labelled", recipe.batch_size, linear, labels=views.LABELS, group="linear"),
                Stream("unlabelled", recipe.batch_size, pair, group="pretrain")]

    def forward_equivalents(self, recipe):
        # Pre-training: the online encoder's fwd+bwd on both views of B images and the target's forward
        # on both (the MLP heads are negligible). Linear evaluation: one inference forward of B images.
        b = recipe.batch_size
        return {"pretrain": 3 * 2 * b + 2 * b, "linear": b}

    def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None):
        from mpltool.algorithms.common import network_variables, wrapped
        from mpltool.algorithms.schedules import replica_scale

        pretrain = int(recipe.byol_pretrain_steps)
        view1, view2 = batch["views"]
        head_scope = "{}/{}/head/".format(ONLINE, model.name)

        # -- phase 1: pre-training
        updates = []  # BN moving statistics of the online networks (both views, as Keras' calls)

        def online(x):
            output = model(x, training=True, scope=ONLINE)
            updates.extend(output.bn_updates)
            z = mlp_head(output.features, recipe.byol_hidden_units, recipe.byol_projection_units, True,
                         updates, PROJECTOR, bn_momentum=model.bn_momentum)
            return mlp_head(z, recipe.byol_hidden_units, recipe.byol_projection_units, True, updates,
                            PREDICTOR, bn_momentum=model.bn_momentum)

        def target(x):
            discarded = []  # the target's statistics come from the EMA, not from its own calls
            h = model(x, training=True, scope=TARGET).features
            return mlp_head(h, recipe.byol_hidden_units, recipe.byol_projection_units, True, discarded,
                            TARGET_PROJECTOR, bn_momentum=model.bn_momentum)

        p1, p2 = online(view1), online(view2)
        z1t, z2t = target(view1), target(view2)
        loss = byol_loss(p1, p2, z1t, z2t)
        everything = tf.global_variables()
        encoder_targets, encoder_onlines = pair_variables(ONLINE, TARGET, everything)
        projector_targets, projector_onlines = pair_variables(PROJECTOR, TARGET_PROJECTOR, everything)
        target_variables = encoder_targets + projector_targets
        online_variables = encoder_onlines + projector_onlines
        trainable_names = set(v.op.name for v in tf.trainable_variables())
        learned = [v for v in network_variables(ONLINE) + network_variables(PROJECTOR)
                   + network_variables(PREDICTOR)
                   if v.op.name in trainable_names and not v.op.name.startswith(head_scope)]
        # The target networks are never trained by an optimizer: out of the trainable collection.
        collection = tf.get_collection_ref(tf.GraphKeys.TRAINABLE_VARIABLES)
        collection[:] = [v for v in collection if not v.op.name.startswith((TARGET + "/", TARGET_PROJECTOR + "/"))]
        learning_rate = tf.constant(float(recipe.byol_lr) * replica_scale(recipe), name="byol_learning_rate")
        optimizer = wrapped(tf.train.AdamOptimizer(learning_rate), optimizer_wrapper)
        gradients = [g for g, _ in optimizer.compute_gradients(loss, var_list=learned)]
        gradients = [tf.zeros_like(v) if g is None else g for g, v in zip(gradients, learned)]
        gradients = tf.tuple(gradients, control_inputs=updates)
        update = optimizer.apply_gradients(list(zip(gradients, learned)))
        decay = target_decay(global_step, pretrain, recipe.byol_target_decay, recipe.byol_target_schedule)
        with tf.control_dependencies([update]):
            ema = target_update(target_variables, online_variables, decay)
        with tf.control_dependencies([ema]):
            pretrain_op = tf.group(tf.assign_add(global_step, 1), name="pretrain_op")
        pretrain_metrics = collections.OrderedDict([
            ("byol_loss", loss), ("learning_rate", learning_rate), ("target_decay", decay),
            ("grad_norm", tf.global_norm(gradients))])

        # -- phase 2: linear evaluation of the frozen encoder
        logits = model(batch["labelled"], training=False, scope=ONLINE).logits
        labels = tf.one_hot(batch["labels"], recipe.num_classes, dtype=logits.dtype)
        ce = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(labels=labels, logits=logits))
        head = [v for v in network_variables(ONLINE) if v.op.name.startswith(head_scope)
                and v.op.name in trainable_names]
        linear_steps = max(int(recipe.num_train_steps) - pretrain, 1)
        linear_lr = linear_eval_learning_rate(tf.maximum(global_step - pretrain, 0), linear_steps,
                                              start=recipe.linear_lr, end=recipe.linear_lr_end)
        head_optimizer = wrapped(tf.train.AdamOptimizer(linear_lr), optimizer_wrapper)
        with tf.control_dependencies([head_optimizer.minimize(ce, var_list=head)]):
            linear_op = tf.group(tf.assign_add(global_step, 1), name="linear_op")
        correct = tf.equal(tf.argmax(logits, axis=-1), tf.cast(batch["labels"], tf.int64))
        linear_metrics = collections.OrderedDict([
            ("linear_ce", ce), ("linear_accuracy", tf.reduce_mean(tf.cast(correct, tf.float32))),
            ("linear_lr", linear_lr)])

        def as_float(metrics):
            return collections.OrderedDict((k, tf.cast(v, tf.float32)) for k, v in metrics.items())

        phases = (Phase("pretrain", pretrain, pretrain_op, as_float(pretrain_metrics), False),
                  Phase("linear", None, linear_op, as_float(linear_metrics), True))
        # byol_pretrain_steps = 0: the pre-training phase is empty, the linear evaluation of a random
        # encoder runs alone (its graph is built all the same: the metrics CSV keeps its columns).
        return Step(train_op=phases[0].train_op, metrics=phases[0].metrics,
                    init_ops=[target_init(target_variables, online_variables)], phases=phases)
