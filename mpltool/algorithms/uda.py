"""Unsupervised Data Augmentation: the MPL teacher's own loss alone, as the reference's UDA mode.

L = CE_l + uda_weight·min(1, t/uda_steps)·CE_u over ONE training-mode pass on [l, u_ori, u_aug]
(CE_u: sharpened, confidence-masked consistency of u_aug with u_ori; algorithms/mpl.py step 2).
"""

from mpltool.algorithms import SingleNetwork, register_algorithm
from mpltool.recipes.schema import NON_NEGATIVE, UNIT, Field, counts

# The UDA loss's keys (MPL's teacher reads them too).
UDA_FIELDS = (
    Field("uda_temp", "float", 0.7, "temperature of the teacher's sharpened distribution", low=0.0, low_open=True),
    Field("uda_threshold", "float", 0.6, "confidence mask threshold of the UDA loss", **UNIT),
    Field("uda_weight", "float", 8.0, "final weight of the UDA loss", **NON_NEGATIVE),
    Field("uda_steps", "int", 5000, "steps over which the UDA weight ramps up linearly", **counts()),
)
# The shared keys a teacher-style single network reads: its optimiser, EMA, augmentation, unlabelled ratio.
STRONG_VIEW_TRAINING = ("unlabelled_ratio", "lr", "lr_warmup_steps", "lr_scale_by_batch", "lr_decay", "momentum",
                        "nesterov", "weight_decay", "grad_bound", "ema_decay", "augment", "augment_magnitude",
                        "augment_layers", "augment_overflow", "autoaugment_policy", "autoaugment_pair",
                        "augment_fill")


def labelled_and_pair_streams(recipe):
    """B flip/pad/crop labelled images and U = unlabelled_ratio·B unlabelled ones as the reference's
    (ori, aug) pair: what a UDA-style teacher reads."""
    from mpltool.data import views
    from mpltool.data.pipeline import Stream

    return [Stream("labelled", recipe.batch_size, views.flip_crop(), labels=views.LABELS),
            Stream("unlabelled", recipe.batch_size * recipe.unlabelled_ratio, views.ori_aug(recipe))]


def uda_weight(global_step, recipe):
    """`uda_weight * min(1, t / uda_steps)`: the unlabelled loss ramps in over `uda_steps`."""
    from mpltool.tfv1 import tf

    t = tf.cast(global_step, tf.float32)
    return tf.multiply(float(recipe.uda_weight), tf.minimum(1.0, t / float(recipe.uda_steps)), name="uda_weight")


@register_algorithm
class Uda(SingleNetwork):
    name = "uda"
    description = "labelled cross-entropy + UDA consistency on unlabelled images (MPL's teacher alone)"
    metric_names = ("loss", "labelled_ce", "uda_loss", "uda_mask_rate", "uda_weight", "learning_rate",
                    "grad_norm", "accuracy", "ema_decay")
    progress_metrics = ("loss", "uda_mask_rate", "learning_rate")
    fields = UDA_FIELDS
    reads = STRONG_VIEW_TRAINING
    reference_recipe = "uda-wrn28-2"
    demo_recipe = "uda-demo"

    def streams(self, recipe):
        return labelled_and_pair_streams(recipe)

    def forward_equivalents(self, recipe):
        b = recipe.batch_size
        return {"train": 3 * (b + 2 * b * recipe.unlabelled_ratio)}  # one fwd+bwd pass on [l, u_ori, u_aug]

    def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None):
        from mpltool.algorithms.common import single_network_step, uda_loss
        from mpltool.tfv1 import tf

        def consistency(logits, step):
            z_ori, z_aug = tf.split(logits, 2, axis=0)
            unlabelled_ce, mask = uda_loss(z_ori, z_aug, recipe.uda_temp, recipe.uda_threshold)
            weight = uda_weight(step, recipe)
            return tf.cast(weight, unlabelled_ce.dtype) * unlabelled_ce, [
                ("uda_loss", unlabelled_ce), ("uda_mask_rate", tf.reduce_mean(mask)), ("uda_weight", weight)]

        images = tf.concat([batch["ori"], batch["aug"]], axis=0)
        return single_network_step(model, recipe, batch, global_step, (images, consistency), optimizer_wrapper)
