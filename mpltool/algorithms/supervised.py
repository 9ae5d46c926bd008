"""Supervised training on the labelled split alone: the reference's `Supervised` baseline."""

from mpltool.algorithms import SingleNetwork, register_algorithm
from mpltool.algorithms.uda import STRONG_VIEW_TRAINING


@register_algorithm
class Supervised(SingleNetwork):
    name = "supervised"
    description = "labelled cross-entropy only (the teacher's schedule), evaluated through its EMA"
    metric_names = ("loss", "labelled_ce", "learning_rate", "grad_norm", "accuracy", "ema_decay")
    progress_metrics = ("loss", "accuracy", "learning_rate")
    # No unlabelled stream; the training crop's keys (seed 003's random-resized crop) are its own to read.
    reads = tuple(key for key in STRONG_VIEW_TRAINING if key not in ("unlabelled_ratio", "autoaugment_pair")) + (
        "train_crop", "crop_min_area", "crop_max_aspect")
    reference_recipe = "supervised-wrn28-2"
    demo_recipe = "supervised-demo"

    def streams(self, recipe):
        from mpltool.data import views
        from mpltool.data.pipeline import Stream

        # With a policy (`augment: autoaugment`, as the AutoAugment paper trains), the labelled images get
        # it; `augment: none` (the supervised recipes) keeps flip/pad/crop. `train_crop: random-resized`
        # (ImageNet's) crops each image from its own size first, then applies the policy.
        if recipe.train_crop == "random-resized":
            view = views.resized_crop(recipe)
        else:
            view = views.strong(recipe) if recipe.augment != "none" else views.flip_crop()
        return [Stream("labelled", recipe.batch_size, view, labels=views.LABELS)]

    def forward_equivalents(self, recipe):
        return {"train": 3 * recipe.batch_size}  # one fwd+bwd pass over B labelled images

    def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None):
        from mpltool.algorithms.common import single_network_step

        return single_network_step(model, recipe, batch, global_step, None, optimizer_wrapper)
