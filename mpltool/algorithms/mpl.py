"""Meta Pseudo Labels as a registered algorithm; the step itself is `mpltool/train/mpl.py`."""

from mpltool.algorithms import Algorithm, Step, Streams, register_algorithm


@register_algorithm
class MetaPseudoLabels(Algorithm):
    name = "mpl"
    description = "Meta Pseudo Labels: a teacher (labelled CE + UDA + the student's feedback) teaches a student"
    fields = ("student_lr", "student_lr_wait_steps", "student_lr_warmup_steps", "mpl_feedback",
              "mpl_baseline_decay", "student_second_pass_bn_update")
    networks = ("teacher", "student", "ema")
    eval_targets = ("teacher", "student", "ema")
    default_target = "ema"
    metric_names = ("teacher_loss", "labelled_ce", "uda_loss", "uda_mask_rate", "uda_weight", "student_loss",
                    "student_ce_old", "student_ce_new", "h", "h_baseline", "teacher_lr", "student_lr")
    progress_metrics = ("teacher_loss", "student_loss", "uda_mask_rate", "teacher_lr", "student_lr")

    def streams(self, recipe):
        return Streams(unlabelled=True)

    def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None):
        from mpltool.train.mpl import build_mpl_step

        step = build_mpl_step(model, recipe, batch.labelled_images, batch.labels, batch.ori_images,
                              batch.aug_images, global_step, optimizer_wrapper=optimizer_wrapper)
        return Step(train_op=step.train_op, metrics=step.metrics, init_ops=[step.ema_init_op])
