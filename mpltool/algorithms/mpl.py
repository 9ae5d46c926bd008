"""Meta Pseudo Labels: one training step, built as ONE graph op (docs/mpl-reference.md §3).

Notation: l = B labelled images with labels y; u_ori, u_aug = two views of U = uda_data·B unlabelled
images; t = the global step before this step; K classes; CE(p, z) = −Σ p·log softmax(z);
smooth(p) = (1 − ls)·p + ls/K with ls = label_smoothing. Every loss is a mean over its batch.

 1. Teacher forward: ONE training-mode call on concat[l, u_ori, u_aug], so batch norm normalises over
    all B + 2U images together → logits z_l, z_ori, z_aug.
 2. Teacher's own losses: CE_l = mean CE(smooth(y), z_l). UDA: q = stopgrad(softmax(z_ori / uda_temp)),
    mask = [max q ≥ uda_threshold], CE_u = Σ mask·CE(q, z_aug) / U (divided by all of U, not by the
    number of confident images).
 3. Pseudo labels from z_aug: `reference` (the released code) uses the soft p = stopgrad(softmax(z_aug));
    `paper` uses hard labels ŷ = argmax z_aug, p = onehot(ŷ).
 4. Student forward: ONE training-mode call on concat[u_aug, l] → s_u, s_l_old.
    L_S = mean CE(smooth(p), s_u): the student learns only from pseudo labels, never from y.
    CE_old = mean CE(y, s_l_old), unsmoothed: how good the student is on labels BEFORE its update.
 5. Student update: g = ∇L_S + weight_decay·w (non-BN variables, the dense bias included), clipped to
    global norm grad_bound, Nesterov momentum at the student's rate. The rate is 0 for the first
    student_lr_wait_steps steps (the momentum accumulates all the same). The BN moving statistics of
    the call in 4 are updated first.
 6. EMA: d = min(ema_decay, (t+1)/(t+10)); ema ← ema − (1−d)(ema − w) for EVERY student variable, the
    BN moving statistics included, using the weights just updated.
 7. Second student forward, AFTER the update and the EMA: training mode on l alone (its own batch
    statistics over the B labelled images) → CE_new = mean CE(y, ·). With
    recipe.student_second_pass_bn_update (the seed, Ascend run) this call's BN moving statistics are
    updated too, after the EMA read them and before the teacher's update (the seed makes them
    dependencies of the teacher's apply); without it they are dropped (google-research).
 8. Feedback h: `reference` h = CE_new − CE_old; `paper` h = CE_old − CE_new (see below). A moving
    baseline m ← m − mpl_baseline_decay·(m − h), updated BEFORE use, centres it: h′ = stopgrad(h − m).
    m starts at 0 in `paper` mode; in `reference` mode it starts where the reference's (and the seed's)
    un-initialised variable does: glorot-uniform on ±√3 (seeded). With decay 0.01 such a start still
    contributes 0.99^t·m₀ (±0.1 from ±1.7 after ~280 steps), so in the first hundreds of steps h′ is
    mostly −m₀, of random sign, rather than the feedback h.
 9. Teacher loss: L_T = uda_weight·min(1, t/uda_steps)·CE_u + CE_l + h′·CE_mpl, with
    `reference` CE_mpl = mean CE(stopgrad(softmax(z_aug)), z_aug): its gradient is softmax − softmax = 0,
    so the released code's teacher learns from UDA and labels only (reference issues #534, #541, #584);
    `paper` CE_mpl = mean CE(onehot(ŷ), z_aug): the h-term really moves the teacher.
10. Teacher update: the same weight decay, clip and optimizer at the teacher's rate; the teacher's BN
    moving statistics from 1 are updated with it; then global_step += 1 (always: it is the run's clock).

Loss scale (NPU mixed precision): with loss_scale ≠ 1 both gradients come from loss·scale and are divided
by the scale before weight decay and clipping; with recipe.loss_scale_overflow_check a network whose
gradients are not finite skips its update that step (metric `overflow`). With loss_scale = 1 none of
this is in the graph.

Why `paper` uses h = CE_old − CE_new. The teacher φ wants the student after its step,
θ′ = θ − η_S·∇_θ CE(ŷ, S(u_aug; θ)), to do well on labelled data: minimise f(ŷ) = CE(y, S(l; θ′)).
ŷ is drawn from the teacher, so the score-function identity gives
∇_φ E_ŷ[f] = E[f·∇_φ log P_T(ŷ)] = −E[f·∇_φ CE(onehot ŷ, z_aug)], i.e. the teacher should minimise
−(f − b)·CE_mpl for any baseline b independent of ŷ. Taking b = CE_old = CE(y, S(l; θ)) and f = CE_new:
−(CE_new − CE_old)·CE_mpl = h·CE_mpl with h = CE_old − CE_new ≈ η_S·∇_θ CE_lᵀ·∇_θ L_S (first-order
Taylor: the paper's dot product). h > 0 when the pseudo labels lowered the student's labelled loss, and
minimising h′·CE_mpl then raises the teacher's probability of those labels. The reference's opposite sign
would push the teacher away from helpful labels; it is harmless only because its CE_mpl is inert.

The whole step is one op (`train_op`): fetch the metrics in the same `session.run` as `train_op`, never
alone (fetching a late metric such as `h` alone would run the student update without the teacher's).
"""

import collections

from mpltool.algorithms import Algorithm, Step, register_algorithm, schedules
from mpltool.algorithms.common import (accuracy, apply_gradients, batch_size_of, build_ema, gradient_step,
                                       make_optimizer, network_gradients, network_variables, smooth_labels,
                                       soft_cross_entropy, trainable, uda_loss, wrapped)
from mpltool.algorithms.uda import STRONG_VIEW_TRAINING, UDA_FIELDS, labelled_and_pair_streams, uda_weight
from mpltool.recipes.schema import LEARNING_RATE, UNIT, Field, counts
from mpltool.tfv1 import tf

FEEDBACK_MODES = ("reference", "paper")
TEACHER_SCOPE = "teacher"
STUDENT_SCOPE = "student"
EMA_SCOPE = "ema"
H_BASELINE_NAME = "mpl/h_baseline"

# MPL's own keys; the teacher also reads UDA's (UDA_FIELDS) and the shared training keys (its `lr`...).
MPL_FIELDS = (
    Field("student_lr", "float", 0.05, "student base learning rate", **LEARNING_RATE),
    Field("student_lr_wait_steps", "int", 1000, "steps the student's learning rate stays 0 (W)", **counts(low=0)),
    Field("student_lr_warmup_steps", "int", 5000, "student linear warmup steps after the wait", **counts(low=0)),
    Field("mpl_feedback", "str", "reference", "teacher MPL term: reference (the released code: zero gradient) "
              "or paper (hard pseudo labels: the h-term moves the teacher)", choices=("reference", "paper")),
    Field("mpl_baseline_decay", "float", 0.01, "rate of the moving baseline of the h-term", **UNIT),
    Field("student_second_pass_bn_update", "bool", False, "also update the student's BN moving statistics from its "
              "second (labelled-only, after-update) pass, after the EMA: true as the seed (Ascend run), false as "
              "google-research"),
)


def student_learning_rate(global_step, recipe):
    """The teacher's schedule (schedules.warmup_then_decay) started `student_lr_wait_steps` late, 0 until
    then; its cosine spans N - warmup - wait steps, so it also ends at step N."""
    wait = recipe.student_lr_wait_steps
    warmup = recipe.student_lr_warmup_steps
    t = tf.cast(global_step, tf.float32) - float(wait)
    rate = schedules.warmup_then_decay(t, schedules.base_learning_rate(recipe.student_lr, recipe), warmup,
                                       recipe.num_train_steps - warmup - wait, recipe.lr_decay)
    return tf.where(t < 0.0, tf.zeros_like(rate), rate, name="student_lr")

MplStep = collections.namedtuple("MplStep", [
    "train_op",            # the whole step; run once per session.run
    "metrics",             # name -> float32 scalar, computed by this step
    "teacher_variables",   # every teacher variable (trainable + BN moving statistics)
    "student_variables",   # every student variable (trainable + BN moving statistics)
    "ema_variables",       # the EMA copy of student_variables, same order
    "ema_init_op",         # copies the student into the EMA (fresh runs, after initialisation)
    "h_baseline",          # the moving baseline m of the feedback h (a global variable)
    "mpl_term",            # h′·CE_mpl, the term of the teacher loss that carries the MPL feedback
    "teacher_optimizer",
    "student_optimizer",
])


def build_mpl_step(model, recipe, labelled_images, labels, ori_images, aug_images, global_step,
                   loss_scale=1.0, optimizer_wrapper=None, replicas=None):
    """The MPL step of the module docstring; `model(images, training, scope)` is called 4 times.

    `optimizer_wrapper(optimizer) -> optimizer` wraps both optimizers (NPU loss scale, distributed
    all-reduce). Gradients go through the optimizer's own `compute_gradients`, so a wrapper that works
    there is not bypassed (the seed's loss scale was). Use it or `loss_scale`, not both.
    """
    if recipe.mpl_feedback not in FEEDBACK_MODES:
        raise ValueError("mpl_feedback must be one of {}, got {!r}".format(FEEDBACK_MODES, recipe.mpl_feedback))
    loss_scale = float(loss_scale)
    check_overflow = loss_scale != 1.0 and bool(recipe.loss_scale_overflow_check)
    paper = recipe.mpl_feedback == "paper"
    num_labelled, num_unlabelled = batch_size_of(labelled_images), batch_size_of(ori_images)

    # Read the step once: every schedule of this step sees t, and the increment waits for the read.
    step = tf.cast(global_step, tf.float32, name="step")
    teacher_lr = schedules.learning_rate(step, recipe, name="teacher_lr")
    student_lr = student_learning_rate(step, recipe)
    # The reference gives m no initialiser, so TF's default glorot-uniform draws it from ±√3 (fan 1):
    # kept in `reference` mode, seeded, so runs reproduce. `paper` starts at 0, the baseline's neutral
    # value, so that h′ follows h from the first step. Created first, outside any control dependency.
    h_initializer = tf.zeros_initializer() if paper else tf.glorot_uniform_initializer(seed=recipe.seed)
    h_baseline = tf.get_variable(H_BASELINE_NAME, [], tf.float32, trainable=False, initializer=h_initializer)

    # 1-2. Teacher forward and its own losses.
    teacher = model(tf.concat([labelled_images, ori_images, aug_images], axis=0), training=True,
                    scope=TEACHER_SCOPE)
    teacher_variables = network_variables(TEACHER_SCOPE)
    z_l, z_ori, z_aug = tf.split(teacher.logits, [num_labelled, num_unlabelled, num_unlabelled], axis=0)
    dtype = z_l.dtype
    y = tf.one_hot(labels, recipe.num_classes, dtype=dtype)
    labelled_ce = tf.reduce_mean(soft_cross_entropy(smooth_labels(y, recipe.label_smoothing), z_l))
    unlabelled_ce, uda_mask = uda_loss(z_ori, z_aug, recipe.uda_temp, recipe.uda_threshold)

    # 3. Pseudo labels, and the teacher's CE on them (its MPL term, used in 9).
    if paper:
        pseudo = tf.one_hot(tf.argmax(z_aug, axis=-1), recipe.num_classes, dtype=dtype)
        mpl_ce = tf.reduce_mean(soft_cross_entropy(pseudo, z_aug))
    else:
        pseudo = tf.stop_gradient(tf.nn.softmax(z_aug, axis=-1))
        # CE(stopgrad(softmax(z)), z) has gradient softmax − softmax, but TF 1.15's fused kernel computes
        # its own softmax and leaves ~1e-9 residues (measured on CPU; NPU/GPU kernels differ again).
        # Stopping the gradient at z keeps the value and makes the reference's zero gradient exact.
        mpl_ce = tf.reduce_mean(soft_cross_entropy(pseudo, tf.stop_gradient(z_aug)))

    # The teacher's backward pass, first when it can be: in `reference` mode ∇L_T = ∇(uda·CE_u + CE_l),
    # exactly (h′·CE_mpl has no gradient path: both its factors stop it), and the teacher's weights do
    # not change before its update, so its gradients can be computed before the student exists. The
    # student's forward then waits for them: the teacher's activations of all B + 2U images are freed
    # before the student's B + U are made, instead of both being held until the end of the step (the
    # peak RSS, docs/performance.md). Only the update (10) waits for the student. In `paper` mode the
    # gradient needs h′, known only after the student's update, so the backward pass stays in 10.
    unlabelled_weight = uda_weight(step, recipe)
    teacher_own_loss = tf.cast(unlabelled_weight, dtype) * unlabelled_ce + labelled_ce
    teacher_optimizer = wrapped(make_optimizer(teacher_lr, recipe), optimizer_wrapper)
    teacher_weights = trainable(teacher_variables)
    teacher_gradients = None if paper else network_gradients(
        teacher_own_loss, teacher_weights, teacher_optimizer, recipe, loss_scale)

    # 4. Student forward on [u_aug, l]: pseudo-label loss and the labelled CE before the update.
    with tf.control_dependencies([] if paper else teacher_gradients.values):
        student_images = tf.concat([aug_images, labelled_images], axis=0)
    student = model(student_images, training=True, scope=STUDENT_SCOPE)
    student_variables = network_variables(STUDENT_SCOPE)
    s_u, s_l_old = tf.split(student.logits, [num_unlabelled, num_labelled], axis=0)
    student_loss = tf.reduce_mean(soft_cross_entropy(smooth_labels(pseudo, recipe.label_smoothing), s_u))
    student_ce_old = tf.reduce_mean(soft_cross_entropy(y, s_l_old))

    ema_variables, ema_init_op = build_ema(model, labelled_images, student_variables, source_scope=STUDENT_SCOPE,
                                           ema_scope=EMA_SCOPE)

    # 5. Student update, after this call's BN statistics.
    student_optimizer = wrapped(make_optimizer(student_lr, recipe), optimizer_wrapper)
    student_update, student_grad_norm, student_overflow = gradient_step(
        student_loss, trainable(student_variables), student_optimizer, recipe, loss_scale, check_overflow,
        dependencies=student.bn_updates)

    # 6. EMA of the updated student.
    decay = schedules.ema_decay(step, recipe)
    with tf.control_dependencies([student_update]):
        ema_update = tf.group(*[tf.assign_sub(e, (1.0 - tf.cast(decay, e.dtype)) * (e - w))
                                for e, w in zip(ema_variables, student_variables)], name="ema_update")

    # 7. Second student forward, after the update and the EMA. Its BN updates, built inside the same
    # control dependency, run after the EMA when the recipe keeps them (the seed) and are dropped otherwise.
    with tf.control_dependencies([ema_update]):
        second = model(labelled_images, training=True, scope=STUDENT_SCOPE)
    second_pass_bn_updates = list(second.bn_updates) if recipe.student_second_pass_bn_update else []
    student_ce_new = tf.reduce_mean(soft_cross_entropy(y, second.logits))

    # 8. Feedback and its baseline (updated before use).
    h = student_ce_old - student_ce_new if paper else student_ce_new - student_ce_old
    if replicas is not None:
        # Data-parallel: each replica's CE is a mean over its equal share of the labelled batch, so the mean
        # over replicas of their h is the h of the global batch, and every replica uses that one value.
        h = replicas.mean(h)
    baseline = tf.identity(tf.assign_sub(
        h_baseline, recipe.mpl_baseline_decay * (h_baseline - tf.cast(h, tf.float32))), name="h_baseline")
    h_prime = tf.stop_gradient(h - tf.cast(baseline, dtype))

    # 9-10. Teacher loss and update. The reference leaves the teacher's BN statistics stale (it never
    # evaluates the teacher); mpltool evaluates it every eval, so they are updated here, as the Ascend
    # port does (and with them the student's second-pass statistics when kept, as the port does). h′ is a
    # dependency even where the MPL gradient is structurally zero, so the student half above always runs
    # first and within this one op.
    mpl_term = h_prime * mpl_ce
    teacher_loss = teacher_own_loss + mpl_term
    if paper:
        teacher_gradients = network_gradients(teacher_loss, teacher_weights, teacher_optimizer, recipe,
                                              loss_scale)
    teacher_update, teacher_overflow = apply_gradients(
        teacher_gradients, teacher_weights, teacher_optimizer, check_overflow,
        dependencies=list(teacher.bn_updates) + second_pass_bn_updates + [h_prime])
    teacher_grad_norm = teacher_gradients.norm
    with tf.control_dependencies([teacher_update, step]):
        train_op = tf.group(tf.assign_add(global_step, 1), name="mpl_train_op")

    metrics = collections.OrderedDict([
        ("teacher_loss", teacher_loss),
        ("labelled_ce", labelled_ce),
        ("uda_loss", unlabelled_ce),
        ("uda_mask_rate", tf.reduce_mean(uda_mask)),
        ("uda_weight", unlabelled_weight),
        ("mpl_ce", mpl_ce),
        ("student_loss", student_loss),
        ("student_ce_old", student_ce_old),
        ("student_ce_new", student_ce_new),
        ("h", h),
        ("h_baseline", baseline),
        ("h_prime", h_prime),
        ("teacher_lr", teacher_lr),
        ("student_lr", student_lr),
        ("ema_decay", decay),
        ("teacher_grad_norm", teacher_grad_norm),
        ("student_grad_norm", student_grad_norm),
        ("teacher_accuracy", accuracy(labels, z_l)),
        ("student_accuracy", accuracy(labels, s_l_old)),
    ])
    if check_overflow:
        metrics["student_overflow"] = student_overflow
        metrics["teacher_overflow"] = teacher_overflow
        metrics["overflow"] = tf.maximum(student_overflow, teacher_overflow)
    metrics = collections.OrderedDict((name, tf.cast(value, tf.float32)) for name, value in metrics.items())
    return MplStep(train_op=train_op, metrics=metrics, teacher_variables=teacher_variables,
                   student_variables=student_variables, ema_variables=ema_variables, ema_init_op=ema_init_op,
                   h_baseline=h_baseline, mpl_term=mpl_term, teacher_optimizer=teacher_optimizer,
                   student_optimizer=student_optimizer)


@register_algorithm
class MetaPseudoLabels(Algorithm):
    name = "mpl"
    description = "Meta Pseudo Labels: a teacher (labelled CE + UDA + the student's feedback) teaches a student"
    networks = ("teacher", "student", "ema")
    eval_targets = ("teacher", "student", "ema")
    default_target = "ema"
    metric_names = ("teacher_loss", "labelled_ce", "uda_loss", "uda_mask_rate", "uda_weight", "student_loss",
                    "student_ce_old", "student_ce_new", "h", "h_baseline", "teacher_lr", "student_lr")
    progress_metrics = ("teacher_loss", "student_loss", "uda_mask_rate", "teacher_lr", "student_lr")
    fields = UDA_FIELDS + MPL_FIELDS
    reads = STRONG_VIEW_TRAINING
    # The seed's flag names (npu_train.sh) for MPL's own keys.
    aliases = {"mpl_student_lr": "student_lr", "mpl_student_lr_wait_steps": "student_lr_wait_steps",
               "mpl_student_lr_warmup_steps": "student_lr_warmup_steps"}
    reference_recipe = "mpl-wrn28-2"
    demo_recipe = "mpl-demo"

    def warnings(self, recipe):
        late = recipe.student_lr_wait_steps + recipe.student_lr_warmup_steps
        if late < recipe.num_train_steps:
            return []
        return ["student_lr_wait_steps + student_lr_warmup_steps ({}) >= num_train_steps ({}): the student barely "
                "trains; shorten them with --set student_lr_wait_steps=... --set student_lr_warmup_steps=...{}".format(
                    late, recipe.num_train_steps, "" if getattr(recipe, "recipe_name", None) == self.demo_recipe
                    else ", or use --recipe {} for a short demo run".format(self.demo_recipe))]

    def divergence_hint(self, recipe):
        return ("the last finite checkpoint is kept; lower the learning rates (--set lr=... --set student_lr=...) "
                "and start over with `mpltool train --force`")

    def streams(self, recipe):
        return labelled_and_pair_streams(recipe)

    def forward_equivalents(self, recipe):
        # Teacher fwd+bwd on [l, u_ori, u_aug], student fwd+bwd on [u_aug, l], the second student
        # forward on l (docs/mpl-reference.md §5): 4,480 at B = 64, U = 7B.
        b, u = recipe.batch_size, recipe.batch_size * recipe.unlabelled_ratio
        return {"train": 3 * (b + 2 * u) + 3 * (u + b) + b}

    def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None):
        step = build_mpl_step(model, recipe, batch["labelled"], batch["labels"], batch["ori"], batch["aug"],
                              global_step, optimizer_wrapper=optimizer_wrapper,
                              replicas=replicas)
        return Step(train_op=step.train_op, metrics=step.metrics, init_ops=[step.ema_init_op])
