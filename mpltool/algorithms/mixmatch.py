"""MixMatch (Berthelot et al. 2019) as google-research/mixmatch `mixmatch.py` trains it (docs/mixmatch.md).

One step, B labelled images x (one weak view each) and B unlabelled images u (K weak views each):

1. Guess: the network in training mode on each of the K views of u, separately (K calls, so batch norm
   normalises each view's batch alone, as the reference's list of calls does); p = mean over views of
   softmax; q = sharpen(p, T) = p^(1/T) / Σ p^(1/T). q is a target: no gradient, and those K calls'
   batch-norm updates are discarded.
2. MixUp over the pooled 3B (K = 2) batch W = [x, u_1, u_2] with targets [onehot(y), q, q]: one
   permutation π of all of W, per item λ ~ Beta(α, α) and λ' = max(λ, 1 − λ), so every mixed item stays
   closer to its own image: W' = λ'·W + (1 − λ')·W[π], targets alike. X' = W'[:B], U' = W'[B:].
3. Interleave: the K+1 batches are cut into K+1 chunks and chunk i of X' swapped with chunk i of U'_i
   (`interleave`), so each of the K+1 training-mode calls sees a sample of the labelled and unlabelled
   mix; only the first call's batch-norm updates run. The same swap on the logits undoes it.
4. Loss = CE(X' targets, logits_x) + w(t)·mean((U' targets − softmax(logits_u))²). The mean runs over
   KB rows and C classes: squared L2 distance / C, as the reference.
5. w(t) = w_match·clip(images seen / (rampup_kimg·1024), 0, 1): the ramp counts images, not steps
   (the reference's global step is in images), so it lasts 1024 kimg = 16,384 steps at B = 64.
6. Adam at a constant rate; after it, the EMA of the trainable weights (fixed decay; the EMA network
   takes the model's batch-norm statistics as they are, as the reference's EMA getter does) and the
   decoupled decay of every conv/dense kernel: v ← v·(1 − wd·lr).
"""

import collections

from mpltool.algorithms import SingleNetwork, Step, register_algorithm
from mpltool.recipes.schema import LEARNING_RATE, NON_NEGATIVE, Field, counts

MIXMATCH_FIELDS = (
    Field("mixmatch_views", "int", 2, "weak views per unlabelled image whose predictions are averaged (K)",
              low=1, high=16),
    Field("mixmatch_temperature", "float", 0.5, "sharpening temperature of the guessed labels (T)",
              low=0.0, high=10.0, low_open=True),
    Field("mixup_beta", "float", 0.5, "MixUp coefficients λ ~ Beta(α, α) (α)", low=0.0, high=100.0,
              low_open=True),
    Field("mixmatch_weight", "float", 100.0, "final weight of the unlabelled L2 loss (w_match)",
              low=0.0, high=1e6),
    Field("mixmatch_rampup_kimg", "int", 1024, "thousands of labelled images (x1024) over which the "
              "L2 weight ramps up linearly", **counts(low=0, high=2 ** 20)),
    Field("mixmatch_lr", "float", 0.002, "Adam's constant learning rate", **LEARNING_RATE),
    Field("decoupled_weight_decay", "float", 0.02, "kernels shrink by (1 - wd * mixmatch_lr) after each "
              "step", **NON_NEGATIVE),
)


def sharpen(p, temperature):
    """p^(1/T) normalised over the last axis (T → 0: one-hot of the argmax; T = 1: p itself)."""
    from mpltool.tfv1 import tf

    powered = tf.pow(p, 1.0 / temperature)
    return powered / tf.reduce_sum(powered, axis=-1, keepdims=True)


def guess_labels(view_logits, temperature):
    """The sharpened mean softmax over the K views' logits (a list of [B, C]), as a constant target."""
    from mpltool.tfv1 import tf

    p = tf.reduce_mean(tf.stack([tf.nn.softmax(z) for z in view_logits]), axis=0)
    return tf.stop_gradient(sharpen(p, temperature))


def beta_sample(shape, alpha, seed=None):
    """λ ~ Beta(α, α) as G1/(G1 + G2), G ~ Gamma(α, 1) (what tf.distributions.Beta samples)."""
    from mpltool.data.augment.ops import derived_seed
    from mpltool.tfv1 import tf

    g1 = tf.random.gamma(shape, alpha, seed=seed)
    g2 = tf.random.gamma(shape, alpha, seed=derived_seed(seed, 1))
    return g1 / (g1 + g2)


def mixup(images, targets, lam, permutation):
    """λ'·(W, T) + (1 − λ')·(W[π], T[π]) with λ' = max(λ, 1 − λ) per item; returns (W', T', λ')."""
    from mpltool.tfv1 import tf

    lam = tf.maximum(lam, 1.0 - lam)
    image_lam = tf.reshape(lam, [-1] + [1] * (images.shape.ndims - 1))
    target_lam = tf.reshape(lam, [-1, 1])
    mixed_images = image_lam * images + (1.0 - image_lam) * tf.gather(images, permutation)
    mixed_targets = target_lam * targets + (1.0 - target_lam) * tf.gather(targets, permutation)
    return mixed_images, mixed_targets, lam


def interleave_offsets(batch, groups):
    """Chunk boundaries of a batch cut into `groups` chunks of batch // groups, the remainder on the last
    chunks one each (B = 64, 3 groups: 21, 21, 22)."""
    sizes = [batch // groups] * groups
    for extra in range(batch - sum(sizes)):
        sizes[-extra - 1] += 1
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return offsets


def interleave(batches, batch):
    """Swap chunk i of batches[0] with chunk i of batches[i] (i ≥ 1): its own inverse."""
    from mpltool.tfv1 import tf

    offsets = interleave_offsets(batch, len(batches))
    chunks = [[b[offsets[i]:offsets[i + 1]] for i in range(len(batches))] for b in batches]
    for i in range(1, len(batches)):
        chunks[0][i], chunks[i][i] = chunks[i][i], chunks[0][i]
    return [tf.concat(c, axis=0) for c in chunks]


def l2_consistency(targets, logits):
    """mean over rows and classes of (targets − softmax(logits))²: the squared L2 distance / C."""
    from mpltool.tfv1 import tf

    return tf.reduce_mean(tf.square(targets - tf.nn.softmax(logits)))


def match_weight(global_step, recipe):
    """w_match·clip(t·B / (rampup_kimg·1024), 0, 1): the ramp in images seen (t steps of B labelled)."""
    from mpltool.tfv1 import tf

    images = tf.cast(global_step, tf.float32) * float(recipe.batch_size)
    if recipe.mixmatch_rampup_kimg == 0:
        return tf.constant(float(recipe.mixmatch_weight), name="match_weight")
    ramp = tf.clip_by_value(images / float(recipe.mixmatch_rampup_kimg * 1024), 0.0, 1.0)
    return tf.multiply(float(recipe.mixmatch_weight), ramp, name="match_weight")


def decoupled_decay(kernels, factor):
    """v ← v·(1 − factor) for each kernel (factor = wd·lr): weight decay outside the gradient, so Adam's
    per-coordinate scaling does not weaken it."""
    from mpltool.tfv1 import tf

    return tf.group(*[tf.assign(v, v * (1.0 - factor)) for v in kernels], name="decoupled_decay")


def is_kernel(variable):
    """The reference decays variables named `kernel` (conv and dense weights): not biases, not BN."""
    return variable.op.name.rsplit("/", 1)[-1] == "kernel"


@register_algorithm
class MixMatch(SingleNetwork):
    name = "mixmatch"
    description = "MixMatch: sharpened guesses over K weak views, MixUp over labelled + unlabelled, L2 consistency"
    fields = MIXMATCH_FIELDS
    # Adam at mixmatch_lr, weak views only, no L2 in the gradient, no clipping: of the shared training keys
    # only the EMA's decay (fixed, not capped early).
    reads = ("ema_decay",)
    reference_recipe = "mixmatch-cifar10-250"
    demo_recipe = "mixmatch-demo"
    metric_names = ("loss", "labelled_ce", "l2u_loss", "match_weight", "guess_confidence", "learning_rate",
                    "grad_norm")
    progress_metrics = ("loss", "l2u_loss", "match_weight")

    def check_recipe(self, recipe):
        shrink = recipe.decoupled_weight_decay * recipe.mixmatch_lr
        if shrink >= 1.0:
            return ["decoupled_weight_decay * mixmatch_lr = {} must be < 1 (kernels shrink by that fraction each "
                    "step)".format(shrink)]
        return []

    def streams(self, recipe):
        from mpltool.data import views
        from mpltool.data.pipeline import Stream

        # B labelled images in one weak view, B unlabelled ones in K weak views each.
        return [Stream("labelled", recipe.batch_size, views.weak(), labels=views.LABELS),
                Stream("unlabelled", recipe.batch_size, views.weak_views(recipe.mixmatch_views))]

    def forward_equivalents(self, recipe):
        # K guessing forwards of B images (no gradient), then K + 1 fwd+bwd calls of B mixed images.
        b, k = recipe.batch_size, recipe.mixmatch_views
        return {"train": k * b + 3 * (k + 1) * b}

    def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None):
        from mpltool.algorithms.common import (MODEL_SCOPE, build_ema, network_variables, soft_cross_entropy,
                                               trainable, wrapped)
        from mpltool.algorithms.schedules import replica_scale
        from mpltool.tfv1 import tf

        size = recipe.batch_size
        views = list(batch["views"])
        num_classes = recipe.num_classes

        def forward(images):
            return model(images, training=True, scope=MODEL_SCOPE)

        # 1. Guess (K calls; their BN updates are dropped).
        guess = guess_labels([forward(v).logits for v in views], recipe.mixmatch_temperature)
        # 2. MixUp over the pooled batch.
        pooled = tf.concat([batch["labelled"]] + views, axis=0)
        targets = tf.concat([tf.one_hot(batch["labels"], num_classes)] + [guess] * len(views), axis=0)
        total = size * (1 + len(views))
        seed = recipe.seed + 303  # op seeds of their own (the graph seed alone could repeat another op's draws)
        lam = beta_sample([total], recipe.mixup_beta, seed=seed)
        permutation = tf.random.shuffle(tf.range(total), seed=seed + 2)
        mixed, mixed_targets, _ = mixup(pooled, targets, lam, permutation)
        # 3. Interleave, K + 1 calls, only the first call's BN updates, de-interleave.
        parts = interleave(tf.split(mixed, 1 + len(views)), size)
        outputs = [forward(part) for part in parts]
        logits = interleave([o.logits for o in outputs], size)
        logits_x, logits_u = logits[0], tf.concat(logits[1:], axis=0)
        # 4. Loss.
        labelled_ce = tf.reduce_mean(soft_cross_entropy(mixed_targets[:size], logits_x))
        l2u = l2_consistency(mixed_targets[size:], logits_u)
        weight = match_weight(global_step, recipe)
        loss = labelled_ce + weight * l2u
        # 6. Adam, then the EMA, then the decoupled decay.
        variables = network_variables(MODEL_SCOPE)
        weights = trainable(variables)
        ema_variables, ema_init = build_ema(model, batch["labelled"], variables)
        rate = float(recipe.mixmatch_lr) * replica_scale(recipe)
        learning_rate = tf.constant(rate, name="learning_rate")
        optimizer = wrapped(tf.train.AdamOptimizer(learning_rate), optimizer_wrapper)
        gradients = [g for g, _ in optimizer.compute_gradients(loss, var_list=weights)]
        gradients = [tf.zeros_like(v) if g is None else g for g, v in zip(gradients, weights)]
        # tf.tuple: no variable is updated before every gradient is computed (with per-variable
        # dependencies, Adam could write a kernel while another gradient still reads it).
        gradients = tf.tuple(gradients, control_inputs=outputs[0].bn_updates)
        update = optimizer.apply_gradients(list(zip(gradients, weights)))
        with tf.control_dependencies([update]):
            ema_update = _ema_update(variables, ema_variables, set(v.op.name for v in weights), recipe.ema_decay)
        # The reference runs the EMA and the decay in parallel after Adam, so its EMA reads either value;
        # here the EMA reads the weights before the decay, always.
        with tf.control_dependencies([ema_update]):
            decay = decoupled_decay([v for v in weights if is_kernel(v)], recipe.decoupled_weight_decay * rate)
        with tf.control_dependencies([decay]):
            train_op = tf.group(tf.assign_add(global_step, 1), name="train_op")
        metrics = collections.OrderedDict([
            ("loss", loss), ("labelled_ce", labelled_ce), ("l2u_loss", l2u), ("match_weight", weight),
            ("guess_confidence", tf.reduce_mean(tf.reduce_max(guess, axis=-1))),
            ("learning_rate", learning_rate), ("grad_norm", tf.global_norm(gradients))])
        metrics = collections.OrderedDict((k, tf.cast(v, tf.float32)) for k, v in metrics.items())
        return Step(train_op=train_op, metrics=metrics, init_ops=[ema_init])


def _ema_update(variables, ema_variables, trainable_names, decay):
    """Trainable weights: e ← e − (1 − d)(e − w) (tf.train.ExponentialMovingAverage without num_updates);
    batch-norm moving statistics: copied, since the reference's EMA model reads the model's own."""
    from mpltool.tfv1 import tf

    ops = []
    for variable, ema in zip(variables, ema_variables):
        if variable.op.name in trainable_names:
            ops.append(tf.assign_sub(ema, (1.0 - decay) * (ema - variable)))
        else:
            ops.append(tf.assign(ema, variable))
    return tf.group(*ops, name="ema_update")
