"""Unsupervised Data Augmentation: the MPL teacher's own loss alone, as the reference's UDA mode.

L = CE_l + uda_weight·min(1, t/uda_steps)·CE_u over ONE training-mode pass on [l, u_ori, u_aug]
(CE_u: sharpened, confidence-masked consistency of u_aug with u_ori; algorithms/mpl.py step 2).
"""

from mpltool.algorithms import SingleNetwork, Streams, register_algorithm


@register_algorithm
class Uda(SingleNetwork):
    name = "uda"
    description = "labelled cross-entropy + UDA consistency on unlabelled images (MPL's teacher alone)"
    metric_names = ("loss", "labelled_ce", "uda_loss", "uda_mask_rate", "uda_weight", "learning_rate",
                    "grad_norm", "accuracy", "ema_decay")
    progress_metrics = ("loss", "uda_mask_rate", "learning_rate")

    def streams(self, recipe):
        return Streams(unlabelled=recipe.uda_data)

    def forward_equivalents(self, recipe):
        b = recipe.batch_size
        return {"train": 3 * (b + 2 * b * recipe.uda_data)}  # one fwd+bwd pass on [l, u_ori, u_aug]

    def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None):
        from mpltool.algorithms import schedules
        from mpltool.algorithms.common import single_network_step, uda_loss
        from mpltool.tfv1 import tf

        def consistency(logits, step):
            z_ori, z_aug = tf.split(logits, 2, axis=0)
            unlabelled_ce, mask = uda_loss(z_ori, z_aug, recipe.uda_temp, recipe.uda_threshold)
            weight = schedules.uda_weight(step, recipe)
            return tf.cast(weight, unlabelled_ce.dtype) * unlabelled_ce, [
                ("uda_loss", unlabelled_ce), ("uda_mask_rate", tf.reduce_mean(mask)), ("uda_weight", weight)]

        images = tf.concat([batch.ori_images, batch.aug_images], axis=0)
        return single_network_step(model, recipe, batch, global_step, (images, consistency), optimizer_wrapper)
