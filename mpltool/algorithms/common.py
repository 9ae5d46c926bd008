"""Pieces every single-network algorithm shares: the EMA copy, the labelled loss, one gradient step."""

import collections

from mpltool.algorithms import Step
from mpltool.tfv1 import tf
from mpltool.train import schedules
from mpltool.train.mpl import (_accuracy, _gradient_step, _network_variables, _trainable, _wrapped,
                               make_optimizer, smooth_labels, soft_cross_entropy)

MODEL_SCOPE = "model"
EMA_SCOPE = "ema"


def build_ema(model, images, source_variables, source_scope=MODEL_SCOPE, ema_scope=EMA_SCOPE):
    """The EMA network's variables (a copy of the model under `ema_scope`, matched by name, kept out of
    the trainable collection) and the op that copies the source into it on a fresh start."""
    model(images, training=False, scope=ema_scope)
    by_name = {v.op.name: v for v in _network_variables(ema_scope)}
    ema_variables = [by_name[ema_scope + v.op.name[len(source_scope):]] for v in source_variables]
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
    learning_rate = schedules.teacher_learning_rate(step, recipe)
    labelled = batch.labelled_images
    images = labelled if extra_loss is None else tf.concat([labelled, extra_loss[0]], axis=0)
    output = model(images, training=True, scope=MODEL_SCOPE)
    variables = _network_variables(MODEL_SCOPE)
    num_labelled = tf.shape(labelled)[0]
    z_l = output.logits[:num_labelled]
    y = tf.one_hot(batch.labels, recipe.num_classes, dtype=z_l.dtype)
    labelled_ce = tf.reduce_mean(soft_cross_entropy(smooth_labels(y, recipe.label_smoothing), z_l))
    metrics = collections.OrderedDict()
    loss = labelled_ce
    if extra_loss is not None:
        extra, extra_metrics = extra_loss[1](output.logits[num_labelled:], step)
        loss = loss + extra
        metrics.update(extra_metrics)
    ema_variables, ema_init = build_ema(model, labelled, variables)
    optimizer = _wrapped(make_optimizer(learning_rate, recipe), optimizer_wrapper)
    update, grad_norm, _ = _gradient_step(loss, _trainable(variables), optimizer, recipe, 1.0, False,
                                          dependencies=output.bn_updates)
    decay = schedules.ema_decay(step, recipe)
    with tf.control_dependencies([update]):
        ema_update = tf.group(*[tf.assign_sub(e, (1.0 - tf.cast(decay, e.dtype)) * (e - w))
                                for e, w in zip(ema_variables, variables)], name="ema_update")
    with tf.control_dependencies([ema_update, step]):
        train_op = tf.group(tf.assign_add(global_step, 1), name="train_op")
    metrics = collections.OrderedDict([("loss", loss), ("labelled_ce", labelled_ce)] + list(metrics.items()) + [
        ("learning_rate", learning_rate), ("grad_norm", grad_norm), ("accuracy", _accuracy(batch.labels, z_l)),
        ("ema_decay", decay)])
    metrics = collections.OrderedDict((k, tf.cast(v, tf.float32)) for k, v in metrics.items())
    return Step(train_op=train_op, metrics=metrics, init_ops=[ema_init])
