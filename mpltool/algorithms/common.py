"""What the algorithms share: losses, weight decay, the optimizer, one gradient step, the EMA copy, and
the whole step of a single-network algorithm (supervised, UDA)."""

import collections

from mpltool.algorithms import Step, schedules
from mpltool.models import is_batch_norm_variable
from mpltool.tfv1 import tf

def smooth_labels(onehot, label_smoothing):
    """(1 − ls)·p + ls/K, as tf.losses.softmax_cross_entropy smooths."""
    num_classes = tf.cast(tf.shape(onehot)[-1], onehot.dtype)
    return onehot * (1.0 - label_smoothing) + label_smoothing / num_classes


def soft_cross_entropy(targets, logits):
    """Per-example −Σ targets·log softmax(logits); targets are labels, so no gradient flows into them."""
    return tf.nn.softmax_cross_entropy_with_logits_v2(labels=tf.stop_gradient(targets), logits=logits)


def uda_loss(z_ori, z_aug, temp, threshold):
    """(CE_u, mask): the sharpened, confidence-masked consistency loss, summed and divided by all of U."""
    targets = tf.stop_gradient(tf.nn.softmax(z_ori / temp, axis=-1))
    mask = tf.cast(tf.reduce_max(targets, axis=-1) >= threshold, z_aug.dtype)
    return tf.reduce_mean(mask * soft_cross_entropy(targets, z_aug)), mask


def add_weight_decay(variables, gradients, weight_decay):
    """g + wd·w for every variable but batch norm's (the reference skips names with 'bn')."""
    decayed = []
    for variable, gradient in zip(variables, gradients):
        if gradient is None:
            gradient = tf.zeros_like(variable)
        if weight_decay and not is_batch_norm_variable(variable):
            gradient = gradient + weight_decay * tf.stop_gradient(variable)
        decayed.append(gradient)
    return decayed


def make_optimizer(learning_rate, recipe):
    """The one place optimizers are made (a distributed wrapper wraps this): momentum, Nesterov's unless
    the recipe says `nesterov: false` (seed 003's PyTorch SGD)."""
    return tf.train.MomentumOptimizer(learning_rate, momentum=recipe.momentum,
                                      use_nesterov=bool(getattr(recipe, "nesterov", True)), use_locking=True)


Gradients = collections.namedtuple("Gradients", ["values", "norm"])  # clipped, weight-decayed; global norm


def network_gradients(loss, variables, optimizer, recipe, loss_scale=1.0):
    """One network's gradients as its update applies them: (loss·scale)′ / scale + weight decay, clipped.

    With a loss scale the gradients come from loss·scale (fp16 backward passes keep small gradients)
    and are unscaled before weight decay and clipping. Separate from `apply_gradients` so that a step can
    finish a backward pass (and free its activations) long before the update it feeds may run.
    """
    scaled = loss * loss_scale if loss_scale != 1.0 else loss
    gradients = [g for g, _ in optimizer.compute_gradients(scaled, var_list=variables)]
    if loss_scale != 1.0:
        gradients = [None if g is None else g / loss_scale for g in gradients]
    gradients = add_weight_decay(variables, gradients, recipe.weight_decay)
    values, norm = tf.clip_by_global_norm(gradients, recipe.grad_bound)
    return Gradients(values, norm)


def apply_gradients(gradients, variables, optimizer, check_overflow, dependencies):
    """(update op, overflow flag or None): the update, run after `dependencies`.

    The dependencies gate the gradients themselves, so they hold whatever a (wrapped) optimizer's
    apply_gradients builds, inside the overflow cond or not. With the overflow check, a step whose
    gradients are not finite applies nothing to this network: no weight and no momentum change. (The BN
    statistics in `dependencies` still update: an overflow happens in the scaled backward pass, after a
    finite forward pass.)
    """
    with tf.control_dependencies(dependencies):
        values = [tf.identity(g) for g in gradients.values]

    def apply():
        return optimizer.apply_gradients(list(zip(values, variables)))

    if not check_overflow:
        return apply(), None
    finite = tf.is_finite(gradients.norm)
    return tf.cond(finite, apply, tf.no_op), 1.0 - tf.cast(finite, tf.float32)


def gradient_step(loss, variables, optimizer, recipe, loss_scale, check_overflow, dependencies):
    """(update op, global gradient norm, overflow flag or None) of one network."""
    gradients = network_gradients(loss, variables, optimizer, recipe, loss_scale)
    update, overflow = apply_gradients(gradients, variables, optimizer, check_overflow, dependencies)
    return update, gradients.norm, overflow


def wrapped(optimizer, wrapper):
    return optimizer if wrapper is None else wrapper(optimizer)


def network_variables(scope):
    return [v for v in tf.global_variables() if v.op.name.startswith(scope + "/")]


def trainable(variables):
    if not variables:
        return []
    trainable = set(v.op.name for v in variables[0].graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES))
    return [v for v in variables if v.op.name in trainable]


def batch_size_of(images):
    static = tf.compat.dimension_value(images.shape[0]) if images.shape.ndims else None
    return static if static is not None else tf.shape(images)[0]


def accuracy(labels, logits):
    correct = tf.equal(tf.cast(labels, tf.int64), tf.argmax(logits, axis=-1))
    return tf.reduce_mean(tf.cast(correct, tf.float32))



MODEL_SCOPE = "model"
EMA_SCOPE = "ema"


def build_ema(model, images, source_variables, source_scope=MODEL_SCOPE, ema_scope=EMA_SCOPE):
    """The EMA network's variables (a copy of the model under `ema_scope`, matched by name, kept out of
    the trainable collection) and the op that copies the source into it on a fresh start."""
    model(images, training=False, scope=ema_scope)
    by_name = {v.op.name: v for v in network_variables(ema_scope)}
    ema_variables = []
    for variable in source_variables:
        name = ema_scope + variable.op.name[len(source_scope):]
        if name not in by_name:
            raise ValueError("the EMA network has no variable {} (model built different variables)".format(name))
        ema_variables.append(by_name[name])
    trainable = tf.get_collection_ref(tf.GraphKeys.TRAINABLE_VARIABLES)
    trainable[:] = [v for v in trainable if not v.op.name.startswith(ema_scope + "/")]
    init = tf.group(*[tf.assign(e, s) for e, s in zip(ema_variables, source_variables)], name="ema_init")
    return ema_variables, init


def single_network_step(model, recipe, batch, global_step, extra_loss, optimizer_wrapper=None):
    """Labelled CE (+ `extra_loss(logits_of_extra_images)` on the rest of the joint batch), one Nesterov
    step at the teacher's schedule, then the EMA (every variable, BN statistics included).

    `extra_loss` is None (supervised) or (images, fn): the images join the labelled ones in ONE
    training-mode call, so batch norm normalises them together, as the reference's UDA teacher does.
    Returns Step with metrics loss, labelled_ce, learning_rate, grad_norm, accuracy, ema_decay + the
    extra loss's own.
    """
    step = tf.cast(global_step, tf.float32, name="step")
    learning_rate = schedules.learning_rate(step, recipe)
    labelled = batch["labelled"]
    images = labelled if extra_loss is None else tf.concat([labelled, extra_loss[0]], axis=0)
    output = model(images, training=True, scope=MODEL_SCOPE)
    variables = network_variables(MODEL_SCOPE)
    num_labelled = tf.shape(labelled)[0]
    z_l = output.logits[:num_labelled]
    y = tf.one_hot(batch["labels"], recipe.num_classes, dtype=z_l.dtype)
    labelled_ce = tf.reduce_mean(soft_cross_entropy(smooth_labels(y, recipe.label_smoothing), z_l))
    metrics = collections.OrderedDict()
    loss = labelled_ce
    if extra_loss is not None:
        extra, extra_metrics = extra_loss[1](output.logits[num_labelled:], step)
        loss = loss + extra
        metrics.update(extra_metrics)
    ema_variables, ema_init = build_ema(model, labelled, variables)
    optimizer = wrapped(make_optimizer(learning_rate, recipe), optimizer_wrapper)
    update, grad_norm, _ = gradient_step(loss, trainable(variables), optimizer, recipe, 1.0, False,
                                          dependencies=output.bn_updates)
    decay = schedules.ema_decay(step, recipe)
    with tf.control_dependencies([update]):
        ema_update = tf.group(*[tf.assign_sub(e, (1.0 - tf.cast(decay, e.dtype)) * (e - w))
                                for e, w in zip(ema_variables, variables)], name="ema_update")
    with tf.control_dependencies([ema_update, step]):
        train_op = tf.group(tf.assign_add(global_step, 1), name="train_op")
    metrics = collections.OrderedDict([("loss", loss), ("labelled_ce", labelled_ce)] + list(metrics.items()) + [
        ("learning_rate", learning_rate), ("grad_norm", grad_norm), ("accuracy", accuracy(batch["labels"], z_l)),
        ("ema_decay", decay)])
    metrics = collections.OrderedDict((k, tf.cast(v, tf.float32)) for k, v in metrics.items())
    return Step(train_op=train_op, metrics=metrics, init_ops=[ema_init])
