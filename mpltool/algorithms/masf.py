"""The building blocks of MASF (Dou et al., NeurIPS 2019, "Domain Generalization via Model-Agnostic
Learning of Semantic Features"), as the reference code (biomedia-mira/masf) does them, in TF1 graph mode.

One reference iteration, and the function here for each piece:
1. Draw an episode: two meta-train domains A, A' and one meta-test domain B out of the three sources
   (`episode_domains`, `select_episode`).
2. Task loss at θ: the mean cross-entropy on A and on A', averaged (Adam update (a)).
3. A first-order inner step θ' = θ − α·clip(stop_gradient(∇θ ℓ_inner)) per tensor, where ℓ_inner is
   the per-example loss the reference differentiates (`inner_objective`, `fast_weights`); the model is
   then called at θ' without new variables (`use_weights`).
4. Global class alignment at θ': symmetric KL between the per-class softened mean logits of B and A,
   and of B and A' (`class_alignment_loss`, `global_alignment_loss`).
5. Local alignment at θ': semi-hard triplet loss on a metric network's embeddings of the first third of
   each batch (`metric_batch`, `metric_network`, `triplet_semihard_loss`).
6. Three Adam updates in one session.run, over the variable lists of `update_variable_lists`.

Reference line numbers below are those of the stored copies of masf_func.py, utils.py and main.py
(biomedia-mira/masf); the Ascend port (Ascend/ModelZoo-TensorFlow, MASF_ID1191_for_TensorFlow) is the
same code in these respects.
"""

import collections
import contextlib

from mpltool.algorithms import Algorithm, Step, register_algorithm
from mpltool.models.layers import leaky_relu
from mpltool.recipes.schema import LEARNING_RATE, NON_NEGATIVE, Field
from mpltool.tfv1 import tf

# The reference's flag defaults (main.py ~l.24-31).
INNER_LR = 1e-5          # `inner_lr`: α of the inner step
OUTER_LR = 1e-5          # `outer_lr`: Adam (a) and (b)
METRIC_LR = 1e-5         # `metric_lr`: Adam (c)
CLIP_NORM = 2.0          # `gradients_clip_value`: per-tensor norm clip of the inner step and of (b)
MARGIN = 10.0            # `margin` of the triplet loss (the README's example command passes 20)
TEMPERATURE = 2.0        # `kd(..., temperature=2.0)` in utils.py
GLOBAL_WEIGHT = 1.0      # masf_func.py: self.global_loss = global_loss * 1.0
LOCAL_WEIGHT = 0.005     # masf_func.py: self.metric_loss = metric_loss * 0.005

# The metric network M_φ (masf_func.py forward_metric_net): fc 1024 and fc 256, both leaky ReLU with
# tf.nn.leaky_relu's default slope.
METRIC_UNITS = (1024, 256)
METRIC_LEAKY_SLOPE = 0.2

MEAN_EPSILON = 1e-16     # per-class mean = sum / (count + 1e-16): an absent class gets mean 0, not NaN
PROB_FLOOR = 1e-8        # softened probabilities are clipped to [1e-8, 1] before the logs of the KL

DomainBatch = collections.namedtuple("DomainBatch", ["images", "labels"])
Episode = collections.namedtuple("Episode", [
    "meta_train_a",    # DomainBatch of domain permutation[0] (the reference's inputa/labela)
    "meta_train_a1",   # DomainBatch of domain permutation[1] (inputa1/labela1)
    "meta_test_b",     # DomainBatch of domain permutation[2] (inputb/labelb)
])
UpdateLists = collections.namedtuple("UpdateLists", [
    "task",    # Adam (a) on the task loss at θ
    "meta",    # Adam (b) on global + weighted local loss at θ', gradients clipped per tensor
    "metric",  # Adam (c) on the weighted local loss
])


# ------------------------------------------------------------------------------------------ episodes

def episode_domains(num_domains=3, seed=None):
    """An int32 permutation of range(num_domains), drawn anew at every session.run of the step.

    The reference draws np.random.permutation(3) per iteration in Python (main.py train(), ~l.92):
    the first two entries are the meta-train domains A, A', the last one the meta-test domain B. Drawing
    it in-graph keeps the whole step one session.run. The reference has exactly three source domains
    (PACS leave-one-out) and raises otherwise; with more, `select_episode` uses the first three entries.
    """
    if num_domains < 3:
        raise ValueError("an episode needs at least 3 source domains, got {}".format(num_domains))
    return tf.random.shuffle(tf.range(num_domains, dtype=tf.int32), seed=seed, name="episode_domains")


def select_episode(stacked_images, stacked_labels, permutation):
    """Episode(A, A', B) from per-domain batches stacked on axis 0 ([D, N, ...] and [D, N]):
    A = domain permutation[0], A' = permutation[1], B = permutation[2]."""
    def batch(position):
        index = permutation[position]
        return DomainBatch(tf.gather(stacked_images, index), tf.gather(stacked_labels, index))

    return Episode(batch(0), batch(1), batch(2))


def metric_batch(episode, per_domain):
    """(images, labels) of the local loss: the first `per_domain` samples of A, A' and B, concatenated.

    The reference (main.py, `part = meta_batch_size / 3`, ~l.134-138) takes the first mbs/3 of each batch,
    Python 2 integer division; the Ascend port writes int(mbs/3). Pass meta_batch_size // 3. The
    reference feeds these through a separate forward pass at θ' (its own dropout draw), not a slice of
    the global-loss logits.
    """
    parts = [episode.meta_train_a, episode.meta_train_a1, episode.meta_test_b]
    images = tf.concat([p.images[:per_domain] for p in parts], axis=0)
    labels = tf.concat([p.labels[:per_domain] for p in parts], axis=0)
    return images, labels


# ------------------------------------------------------------------------------ global class alignment

def class_mean_logits(logits, labels, num_classes):
    """([C, K] per-class mean logits, [C] per-class counts) of one batch.

    mean_c = Σ_i [y_i = c]·z_i / (n_c + 1e-16), as utils.py kd(): the epsilon only matters for an
    absent class (n_c = 0, sum 0), whose mean becomes 0 instead of 0/0.
    """
    onehot = tf.one_hot(labels, num_classes, dtype=logits.dtype)        # [N, C]
    sums = tf.matmul(onehot, logits, transpose_a=True)                  # [C, K] = Σ_i onehot_ic · z_i
    counts = tf.reduce_sum(onehot, axis=0)                              # [C]
    return sums / (counts[:, None] + MEAN_EPSILON), counts


def _soft_class_probabilities(mean_logits, temperature):
    # s_c = softmax(mean_c / T), clipped to [1e-8, 1] (not renormalised) so the logs stay finite.
    return tf.clip_by_value(tf.nn.softmax(mean_logits / temperature, axis=-1), PROB_FLOOR, 1.0)


def class_alignment_loss(logits_a, labels_a, logits_b, labels_b, num_classes, temperature=TEMPERATURE):
    """(loss, mask): the reference's `kd` between two domains' batches (utils.py kd, ~l.86-117).

    For each class c: s_a, s_b = clip(softmax(mean logits / T), 1e-8, 1) and
    l_c = ½·[KL(s_b‖s_a) + KL(s_a‖s_b)] (symmetric, so the argument order does not matter; the reference
    calls kd(B, A)). mask[c] = 1 iff class c occurs in both batches (main.py builds this
    `bool_indicator` from the labels, ~l.117-132), so a class missing from one side does not pull the
    other side's soft labels towards a uniform distribution. The reference divides by the class
    count, not by the mask sum: loss = (1/num_classes)·Σ_c mask[c]·l_c (kd_loss / n_class, ~l.115).
    Labels are integer class ids.
    """
    mean_a, count_a = class_mean_logits(logits_a, labels_a, num_classes)
    mean_b, count_b = class_mean_logits(logits_b, labels_b, num_classes)
    s_a = _soft_class_probabilities(mean_a, temperature)
    s_b = _soft_class_probabilities(mean_b, temperature)
    # KL(p‖q) = Σ_k p_k·log(p_k / q_k), one value per class row.
    kl_b_a = tf.reduce_sum(s_b * tf.log(s_b / s_a), axis=-1)
    kl_a_b = tf.reduce_sum(s_a * tf.log(s_a / s_b), axis=-1)
    per_class = 0.5 * (kl_b_a + kl_a_b)
    mask = tf.cast(tf.logical_and(count_a > 0, count_b > 0), per_class.dtype)
    loss = tf.reduce_sum(mask * per_class) / float(num_classes)
    return loss, mask


def global_alignment_loss(logits_b, labels_b, logits_a, labels_a, logits_a1, labels_a1, num_classes,
                          temperature=TEMPERATURE):
    """(loss, mask_ba, mask_ba1): L_global = ½·[L(B, A) + L(B, A')], all logits at θ'.

    masf_func.py task_metalearn (~l.75-80): A, A' and B are each forwarded at the fast weights (fresh
    forward passes, not the θ logits of the task loss), the same B logits serve both terms, and the
    two alignment losses are averaged; the result is weighted by 1.0 (GLOBAL_WEIGHT).
    """
    loss_ba, mask_ba = class_alignment_loss(logits_a, labels_a, logits_b, labels_b, num_classes, temperature)
    loss_ba1, mask_ba1 = class_alignment_loss(logits_a1, labels_a1, logits_b, labels_b, num_classes,
                                              temperature)
    return 0.5 * (loss_ba + loss_ba1), mask_ba, mask_ba1


# ------------------------------------------------------------------------------- local (metric) loss

def triplet_semihard_loss(labels, embeddings, margin=MARGIN):
    """tf.contrib.losses.metric_learning.triplet_semihard_loss, the reference's local loss
    (masf_func.py ~l.85).

    Squared L2 distances between the embeddings as they are (contrib's docstring asks for normalised
    embeddings; the reference does not normalise). For every ordered positive pair (a, p), a ≠ p: the
    negative n with the smallest d(a, n) > d(a, p) (semi-hard), else the largest d(a, n) of a's
    negatives; loss = mean over the pairs of max(d(a, p) − d(a, n) + margin, 0). (An anchor with no
    negative at all gets its row minimum, 0, as contrib's masked maximum does.) The contrib module is
    imported directly: tf.compat.v1 does not expose `contrib`, and importing the one module is quick
    and silent.

    A batch without any positive pair (no two samples of one class: small batches over many classes)
    has no triplet, and contrib divides 0 by 0 there: NaN. Its loss is 0 here, through tf.cond, so
    neither the value nor the gradient (which tf.where would still take through the NaN) is NaN. The
    reference's batches (42 samples over 7 classes) always hold pairs.
    """
    from tensorflow.contrib.losses.python.metric_learning import metric_loss_ops

    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    pairs = tf.reduce_sum(tf.cast(same, tf.int32)) - tf.size(labels)  # ordered pairs a != p of one class
    return tf.cond(pairs > 0,
                   lambda: metric_loss_ops.triplet_semihard_loss(labels=labels, embeddings=embeddings, margin=margin),
                   lambda: tf.zeros([], embeddings.dtype))


def metric_network(features, scope="metric"):
    """M_φ: [N, F] features -> [N, 256] embeddings (fc 1024, leaky ReLU, fc 256, leaky ReLU).

    As masf_func.py forward_metric_net: both layers leaky (slope 0.2, tf.nn.leaky_relu's default) and
    every variable, the biases too, initialised glorot-uniform (the reference passes no initializer to
    tf.get_variable, whose default for floats is glorot_uniform; a 1-D bias of n has fan_in = fan_out =
    n, so U(±sqrt(3/n))). The reference's input is fc7 (4096, before dropout); here F is read from the
    features. Variables `<scope>/fc1/{kernel,bias}`, `<scope>/fc2/{kernel,bias}`, shared between calls
    (AUTO_REUSE). The reference builds them under its `model` scope; keep `scope` outside the model's
    so the model's variable list does not pick them up (see update_variable_lists).
    """
    x = features
    with tf.variable_scope(scope, reuse=tf.AUTO_REUSE):
        for layer, units in enumerate(METRIC_UNITS, start=1):
            in_units = int(x.shape[-1])
            with tf.variable_scope("fc{}".format(layer)):
                kernel = tf.get_variable("kernel", [in_units, units], tf.float32,
                                         initializer=tf.glorot_uniform_initializer())
                bias = tf.get_variable("bias", [units], tf.float32, initializer=tf.glorot_uniform_initializer())
                x = leaky_relu(tf.nn.bias_add(tf.matmul(x, kernel), bias), METRIC_LEAKY_SLOPE)
    return x


# ---------------------------------------------------------------------------------- the inner step

def inner_objective(per_example_loss_a, per_example_loss_a1):
    """The scalar whose gradient the reference's inner step takes: Σ_i ½·(ℓ_A,i + ℓ_A',i).

    masf_func.py ~l.69 calls tf.gradients((task_lossa + task_lossa1) / 2.0, weights) on the
    per-example cross-entropy vectors, and tf.gradients of a non-scalar differentiates its sum. So the
    inner gradient is meta_batch_size times the gradient of the task loss (the mean), which matters
    because each tensor's gradient is then norm-clipped at 2.0. (Both batches hold meta_batch_size
    samples, so the sum of the halves is the half of the sums.)
    """
    return 0.5 * (tf.reduce_sum(per_example_loss_a) + tf.reduce_sum(per_example_loss_a1))


def fast_weights(loss, variables, inner_lr=INNER_LR, clip_norm=CLIP_NORM):
    """OrderedDict variable -> θ' = θ − inner_lr·clip_by_norm(stop_gradient(∂loss/∂θ), clip_norm).

    As masf_func.py ~l.69-72: the gradients are stop_gradient'ed (first-order MAML: ∂θ'/∂θ = I, so a
    loss at θ' back-propagates to θ as its gradient at θ', no second-order terms) and clipped per
    tensor: g·clip_norm / max(‖g‖₂, clip_norm). All model weights get the step, the classifier too. A
    variable the loss does not reach keeps θ' = θ. Use `inner_objective` for the reference's loss.
    """
    variables = list(variables)
    gradients = tf.gradients(loss, variables)
    updated = collections.OrderedDict()
    with tf.name_scope("fast_weights"):
        for variable, gradient in zip(variables, gradients):
            if gradient is None:
                updated[variable] = tf.identity(variable)
                continue
            if isinstance(gradient, tf.IndexedSlices):
                gradient = tf.convert_to_tensor(gradient)
            step = tf.clip_by_norm(tf.stop_gradient(gradient), clip_norm)
            # A Python number becomes a constant of the step's dtype (no float32 detour); a tensor is cast.
            lr = inner_lr if isinstance(inner_lr, (int, float)) else tf.cast(inner_lr, step.dtype)
            updated[variable] = variable - lr * step
    return updated


@contextlib.contextmanager
def use_weights(mapping):
    """Within this block, a model called as usual computes with the tensors of `mapping`
    ({variable: tensor}, e.g. from `fast_weights`) in place of those variables; no variable is created.

    The reference passes a weight dict to its forward function; mpltool's models fetch their weights
    with tf.get_variable instead, so the substitution is a custom getter on the current variable scope.
    A string-named tf.variable_scope opened inside (the model's own `tf.variable_scope(scope,
    reuse=AUTO_REUSE)`) inherits the custom getter, and a getter the model sets itself wraps this one.
    The getter first fetches the real variable (build the model at θ before), then returns its
    replacement by name; variables not in the mapping (batch-norm moving statistics, the metric
    network) come back unchanged.
    """
    by_name = {variable.op.name: tensor for variable, tensor in mapping.items()}

    def substitute(getter, name, *args, **kwargs):  # TF passes the next getter as `getter=`
        variable = getter(name, *args, **kwargs)
        return by_name.get(variable.op.name, variable)

    # Re-enter the current variable scope (and, auxiliary_name_scope=False, the current name scope) with
    # the getter added: names of variables and ops are as without the block.
    with tf.variable_scope(tf.get_variable_scope(), custom_getter=substitute, auxiliary_name_scope=False):
        yield


# ------------------------------------------------------------------------------------ the updates

def update_variable_lists(model_vars, metric_vars):
    """UpdateLists(task, meta, metric): what each of the reference's three Adam optimizers updates.

    masf_func.py ~l.109-137, every trainable living under `model/` there (the metric net included):
    - (a) task_train_op = Adam(outer_lr).minimize(source_loss) with no var_list: all trainables, but
      the metric variables get no gradient from the task loss and minimize skips them: model vars.
    - (b) meta_train_op: gradients of global_loss + 0.005·metric_loss over var_list_feature_extractor
      + var_list_classifier. The feature-extractor filter keeps names whose second part is not 'fc8'
      and that have no path component equal to 'meta'; `'meta' not in v.name.split('/')` is a list
      membership test, so it does NOT exclude 'metric' (model/metric/w1): with the classifier (fc8)
      the list is every trainable, the metric net included. Clipped per tensor at 2.0.
    - (c) metric_train_op = Adam(metric_lr).minimize(metric_loss) over names with a 'metric' part.
    So the metric network gets two Adam steps per iteration (b and c) and the model two (a and b),
    each optimizer with its own slots. Pass trainable lists; the two must not overlap.
    """
    model_vars, metric_vars = list(model_vars), list(metric_vars)
    overlap = set(v.op.name for v in model_vars) & set(v.op.name for v in metric_vars)
    if overlap:
        raise ValueError("variables in both the model and the metric list: {}".format(sorted(overlap)))
    return UpdateLists(task=model_vars, meta=model_vars + metric_vars, metric=metric_vars)


# -------------------------------------------------------------------------------------------- the step

MODEL_SCOPE = "model"
METRIC_SCOPE = "metric"

MASF_FIELDS = (
    Field("masf_inner_lr", "float", 1e-5, "step size α of the inner update θ' = θ − α·clip(g)", **LEARNING_RATE),
    Field("masf_outer_lr", "float", 1e-5, "Adam rate of the task and meta updates", **LEARNING_RATE),
    Field("masf_metric_lr", "float", 1e-5, "Adam rate of the metric network's own update", **LEARNING_RATE),
    Field("masf_clip_norm", "float", 2.0, "per-tensor gradient norm clip of the inner and meta updates",
              low=0.0, low_open=True),
    Field("masf_margin", "float", 10.0, "margin of the local (triplet) loss", **NON_NEGATIVE),
    Field("masf_temperature", "float", 2.0, "softening temperature of the class-alignment loss",
              low=0.0, high=100.0, low_open=True),
    Field("masf_global_weight", "float", 1.0, "weight of the global class-alignment loss", **NON_NEGATIVE),
    Field("masf_local_weight", "float", 0.005, "weight of the local triplet loss", **NON_NEGATIVE),
)


@register_algorithm
class Masf(Algorithm):
    """One MASF iteration per step (the module docstring's steps 1-6), on B images from each source
    domain. With D > 3 source domains the episode's three are drawn from all D.

    The three Adam updates compute their gradients at the same θ and φ, none writes a variable
    before every gradient exists (tf.tuple), and they apply in turn (a, b, c): the reference runs
    them in one session.run without any order between them, so its result depends on the scheduler. The episode is drawn in the graph
    (the reference: numpy's permutation per iteration).
    """

    name = "masf"
    description = "MASF: episodic domain generalisation (task loss, global class alignment, local triplet loss)"
    fields = MASF_FIELDS
    reads = ("pretrained",)  # Adam at its own rates, flip/pad/crop only, no EMA
    reference_recipe = "masf-pacs-alexnet"
    demo_recipe = "masf-demo"
    networks = (MODEL_SCOPE, METRIC_SCOPE)
    eval_targets = (MODEL_SCOPE,)
    default_target = MODEL_SCOPE
    metric_names = ("loss", "task_ce", "global_loss", "local_loss", "accuracy", "domain_a", "domain_a1",
                    "domain_b")
    progress_metrics = ("task_ce", "global_loss", "local_loss")

    def streams(self, recipe):
        from mpltool.data import views
        from mpltool.data.pipeline import Stream

        # B flip/pad/crop images from each source domain per step; no unlabelled stream.
        return [Stream("labelled", recipe.batch_size, views.flip_crop(), labels=views.LABELS, per_domain=True)]

    def warnings(self, recipe):
        if recipe.pretrained:
            return []
        return ["no pretrained weights: {} starts from scratch (the reference starts from ImageNet's "
                "bvlc_alexnet.npy: --set pretrained=PATH/bvlc_alexnet.npy)".format(recipe.model)]

    def forward_equivalents(self, recipe):
        # At θ: a forward of A and A' (2B) and two backward passes over them (the task loss and the inner
        # step's sum: 2 × 2 × 2B). At θ': forwards of B, A, A' and the metric batch (3·(B//3)), and one
        # backward through all four.
        b = recipe.batch_size
        at_theta_prime = 3 * b + 3 * (b // 3)
        return {"train": 2 * b + 8 * b + 3 * at_theta_prime}

    def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None):
        from mpltool.algorithms.common import accuracy, network_variables, trainable, wrapped
        from mpltool.errors import UsageError

        domains = len(batch["labelled"])
        if domains < 3:
            raise UsageError("masf needs 3 or more source domains (2 meta-train + 1 meta-test per step); this "
                             "run has {}".format(domains), hint="prepare image folders with 4 or more domains "
                                                                "and hold one out with target_domain")
        permutation = episode_domains(domains, seed=recipe.seed + 505)
        episode = select_episode(tf.stack(batch["labelled"]), tf.stack(batch["labels"]), permutation)
        a, a1, b = episode.meta_train_a, episode.meta_train_a1, episode.meta_test_b
        num_classes = recipe.num_classes

        def forward(images):
            return model(images, training=True, scope=MODEL_SCOPE)

        def per_example_ce(images, labels):
            logits = forward(images).logits
            onehot = tf.one_hot(labels, num_classes, dtype=logits.dtype)
            return tf.nn.softmax_cross_entropy_with_logits_v2(labels=onehot, logits=logits), logits

        # Task loss at θ (update a) and the inner step to θ'.
        ce_a, logits_a = per_example_ce(a.images, a.labels)
        ce_a1, logits_a1 = per_example_ce(a1.images, a1.labels)
        task_ce = 0.5 * (tf.reduce_mean(ce_a) + tf.reduce_mean(ce_a1))
        model_vars = trainable(network_variables(MODEL_SCOPE))
        theta_prime = fast_weights(inner_objective(ce_a, ce_a1), model_vars, recipe.masf_inner_lr,
                                   recipe.masf_clip_norm)
        # Global and local alignment at θ' (fresh forward passes, their own dropout draws).
        with use_weights(theta_prime):
            global_loss, _, _ = global_alignment_loss(
                forward(b.images).logits, b.labels, forward(a.images).logits, a.labels,
                forward(a1.images).logits, a1.labels, num_classes, recipe.masf_temperature)
            metric_images, metric_labels = metric_batch(episode, recipe.batch_size // 3)
            embeddings = metric_network(forward(metric_images).features, scope=METRIC_SCOPE)
        local_loss = triplet_semihard_loss(metric_labels, embeddings, recipe.masf_margin)
        metric_vars = trainable(network_variables(METRIC_SCOPE))
        lists = update_variable_lists(model_vars, metric_vars)
        meta_loss = recipe.masf_global_weight * global_loss + recipe.masf_local_weight * local_loss
        weighted_local = recipe.masf_local_weight * local_loss

        def gradients_of(loss, variables):
            grads = tf.gradients(loss, variables)
            return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]

        task_grads = gradients_of(task_ce, lists.task)
        meta_grads = [tf.clip_by_norm(g, recipe.masf_clip_norm) for g in gradients_of(meta_loss, lists.meta)]
        metric_grads = gradients_of(weighted_local, lists.metric)
        everything = tf.tuple(task_grads + meta_grads + metric_grads)
        task_grads = everything[:len(task_grads)]
        meta_grads = everything[len(task_grads):len(task_grads) + len(meta_grads)]
        metric_grads = everything[len(task_grads) + len(meta_grads):]
        optimizers = [wrapped(tf.train.AdamOptimizer(rate, name=name), optimizer_wrapper)
                      for rate, name in ((recipe.masf_outer_lr, "AdamTask"), (recipe.masf_outer_lr, "AdamMeta"),
                                         (recipe.masf_metric_lr, "AdamMetric"))]
        # Applied one after another: (a) and (b) both write θ, (b) and (c) both write φ, and two Adam
        # ops writing one variable at once could lose an update. The sum is what the reference
        # intends; the order does not change it, since every gradient was taken before.
        updates = []
        for optimizer, grads, variables in zip(optimizers, (task_grads, meta_grads, metric_grads),
                                               (lists.task, lists.meta, lists.metric)):
            with tf.control_dependencies(updates[-1:]):
                updates.append(optimizer.apply_gradients(list(zip(grads, variables))))
        with tf.control_dependencies(updates):
            train_op = tf.group(tf.assign_add(global_step, 1), name="train_op")
        labels_ab = tf.concat([a.labels, a1.labels], axis=0)
        metrics = collections.OrderedDict([
            ("loss", task_ce + meta_loss), ("task_ce", task_ce), ("global_loss", global_loss),
            ("local_loss", local_loss), ("accuracy", accuracy(labels_ab, tf.concat([logits_a, logits_a1], 0))),
            ("domain_a", permutation[0]), ("domain_a1", permutation[1]), ("domain_b", permutation[2])])
        metrics = collections.OrderedDict((k, tf.cast(v, tf.float32)) for k, v in metrics.items())
        init_ops, init_feed = [], None
        if recipe.pretrained:
            from mpltool.models.pretrained import load_npy_weights

            weights = load_npy_weights(recipe.pretrained, "{}/{}".format(MODEL_SCOPE, model.name),
                                       network_variables(MODEL_SCOPE))
            init_ops, init_feed = list(weights.ops), weights.feed_dict
        return Step(train_op=train_op, metrics=metrics, init_ops=init_ops, init_feed=init_feed)
