"""The training session: graph, savers, the step loop, periodic evaluation, logs and checkpoints.

One `session.run` per step (the whole MPL step is one op). Checkpoints are written before the manifest
names them, so a kill -9 at any moment leaves a manifest that points only at complete files, and
re-running `train` resumes from the newest checkpoint the Saver finished (losing < save_every steps).
"""

import csv
import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from mpltool import npu
from mpltool.errors import InvalidInputError
from mpltool.tfv1 import tf

CSV_COLUMNS = ("step", "time", "steps_per_second", "teacher_loss", "labelled_ce", "uda_loss", "uda_mask_rate",
               "uda_weight", "student_loss", "student_ce_old", "student_ce_new", "h", "h_baseline", "teacher_lr",
               "student_lr", "teacher_top1", "teacher_top5", "teacher_loss_eval", "student_top1", "student_top5",
               "student_loss_eval", "ema_top1", "ema_top5", "ema_loss_eval")
EVAL_TARGETS = ("teacher", "student", "ema")


class TrainingGraph:
    """Everything one training session needs, built once in its own tf.Graph."""

    def __init__(self, recipe, device: str, image_shape=(32, 32, 3)):
        from mpltool.data.augment import normalize
        from mpltool.data.pipeline import MplInput
        from mpltool.models import build_model
        from mpltool.train.mpl import build_mpl_step

        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.set_random_seed(recipe.seed)
            self.global_step = tf.train.get_or_create_global_step()
            self.input = MplInput(recipe.batch_size, recipe.uda_data, magnitude=recipe.augment_magnitude,
                                  num_layers=recipe.augment_layers,
                                  shuffle_buffer=recipe.shuffle_buffer, seed=recipe.seed, image_shape=image_shape)
            self.model = build_model(recipe.model, recipe.num_classes, recipe.dropout_rate,
                                     dropout_fn=npu.dropout_fn(device))
            batch = self.input.batch
            self.step = build_mpl_step(self.model, recipe, batch.labelled_images, batch.labels, batch.ori_images,
                                       batch.aug_images, self.global_step,
                                       optimizer_wrapper=npu.optimizer_wrapper(device, recipe))
            # Evaluation towers: raw pixels in, normalised inside, training=False (moving BN statistics).
            self.eval_images = tf.placeholder(tf.float32, (None,) + tuple(image_shape), name="eval_images")
            normalised = normalize(self.eval_images)
            self.eval_logits = {target: self.model(normalised, False, target).logits for target in EVAL_TARGETS}
            self.eval_summary_values = {name: tf.placeholder(tf.float32, (), name="eval_" + name)
                                        for name in ["{}_{}".format(t, m) for t in EVAL_TARGETS
                                                     for m in ("top1", "top5", "loss")]}
            self.eval_summaries = tf.summary.merge([tf.summary.scalar("eval/" + n, p)
                                                    for n, p in self.eval_summary_values.items()])
            self.saver = tf.train.Saver(max_to_keep=recipe.keep_checkpoints, save_relative_paths=True)
            # Best-by-accuracy checkpoints live in their own folders; old ones are removed explicitly.
            self.best_saver = tf.train.Saver(max_to_keep=None, save_relative_paths=True)
            self.init = tf.global_variables_initializer()
        self.graph.finalize()


class MetricsCsv:
    """Append-only CSV with a fixed column order (parsers never break across versions)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self.handle = open(str(path), "a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self.handle.flush()

    def write(self, row: Dict[str, Any]) -> None:
        self.writer.writerow({k: ("{:.6g}".format(v) if isinstance(v, float) else v) for k, v in row.items()})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class SignalAsInterrupt:
    """SIGTERM (CI cancelling a job) is handled like Ctrl-C: save, record, exit 130."""

    def __enter__(self):
        self.previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            raise KeyboardInterrupt()

        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def run_training(recipe, device: str, data: Dict[str, np.ndarray], workdir: Path, restore_from: Optional[str],
                 on_checkpoint: Callable[[str, int, Dict[str, Any]], None], log: Callable[[str], None],
                 progress=None) -> Dict[str, Any]:
    """Train from `restore_from` (or from scratch) to recipe.num_train_steps.

    `on_checkpoint(kind, step, info)` is called after every checkpoint is complete on disk
    (kind: "latest" or "best-<target>"), so the caller can record it in the manifest.
    """
    from mpltool.eval.metrics import evaluate_logits_fn

    graph = TrainingGraph(recipe, device, image_shape=data["train_images"].shape[1:])
    ckpt_dir = workdir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    csv_log = MetricsCsv(workdir / "logs" / "metrics.csv")
    best = {target: -1.0 for target in EVAL_TARGETS}
    best.update(data.get("best") or {})
    summary_writer = tf.summary.FileWriter(str(workdir / "logs" / "tensorboard"), graph=None)
    session = tf.Session(graph=graph.graph, config=npu.session_config(device, recipe))
    last_eval = {}  # type: Dict[str, Any]
    try:
        if restore_from:
            try:
                graph.saver.restore(session, restore_from)
                state = tf.train.get_checkpoint_state(str(ckpt_dir))
                if state is not None:  # so the Saver keeps pruning the files of earlier sessions too
                    graph.saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
            except Exception as exc:  # a failed restore is an error, never a silent restart
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InvalidInputError("cannot resume from {}: {}".format(restore_from, first),
                                        hint="fix the checkpoint, or start over with `mpltool train --force`")
        else:
            session.run(graph.init)
            session.run(graph.step.ema_init_op)
        graph.input.initialize(session, data["train_images"], data["train_labels"], data["labelled_indices"])
        step = int(session.run(graph.global_step))
        start_step = step
        total = recipe.num_train_steps
        fetches = {"train": graph.step.train_op, "metrics": graph.step.metrics}

        def predictor(target):
            logits = graph.eval_logits[target]
            return lambda batch: session.run(logits, feed_dict={graph.eval_images: batch})

        def evaluate(at_step):
            results = {}
            for target in EVAL_TARGETS:
                results[target] = evaluate_logits_fn(predictor(target), data["test_images"], data["test_labels"],
                                                     recipe.eval_batch_size, recipe.label_smoothing)
            log("Eval end in global step:{}, ".format(at_step) + ", ".join(
                "{t}_top1={top1:.6f}, {t}_top5={top5:.6f}, {t}_loss={loss:.6f}".format(t=t, **results[t])
                for t in EVAL_TARGETS))
            feed = {graph.eval_summary_values["{}_{}".format(t, m)]: results[t][m]
                    for t in EVAL_TARGETS for m in ("top1", "top5", "loss")}
            summary_writer.add_summary(session.run(graph.eval_summaries, feed_dict=feed), at_step)
            return results

        def save_latest(at_step):
            prefix = graph.saver.save(session, str(ckpt_dir / "model.ckpt"), global_step=at_step,
                                      write_meta_graph=False)
            on_checkpoint("latest", at_step, {"prefix": prefix})

        def save_best(results, at_step):
            for target in EVAL_TARGETS:
                top1 = results[target]["top1"]
                if top1 > best[target]:
                    best[target] = top1
                    target_dir = ckpt_dir / "best-{}".format(target)
                    target_dir.mkdir(parents=True, exist_ok=True)
                    prefix = graph.best_saver.save(session, str(target_dir / "model.ckpt"), global_step=at_step,
                                                   write_meta_graph=False)
                    for old in target_dir.glob("model.ckpt-*"):  # the new best is complete: drop the old
                        if not old.name.startswith(Path(prefix).name + "."):
                            old.unlink()
                    on_checkpoint("best-" + target, at_step, {"prefix": prefix, "top1": top1,
                                                              "top5": results[target]["top5"]})

        window_start, window_step = time.time(), step
        with SignalAsInterrupt():
            try:
                if progress is not None:
                    progress.start_at(step)
                while step < total:
                    out = session.run(fetches)
                    step += 1
                    metrics = {k: float(v) for k, v in out["metrics"].items()}
                    if not np.isfinite(metrics.get("teacher_loss", 0.0)) or not np.isfinite(
                            metrics.get("student_loss", 0.0)):
                        log("warning: non-finite loss at step {}: {}".format(step, metrics))
                    if step % recipe.log_every == 0 or step == total:
                        elapsed = max(time.time() - window_start, 1e-9)
                        rate = (step - window_step) / elapsed
                        window_start, window_step = time.time(), step
                        for name, value in metrics.items():
                            summary_writer.add_summary(_scalar_summary(name, value), step)
                        csv_log.write(dict(metrics, step=step, time=round(time.time(), 3), steps_per_second=rate))
                        if progress is None:
                            log("step {}/{}: {:.2f} steps/s teacher_loss={:.4f} student_loss={:.4f} "
                                "uda_mask_rate={:.3f} teacher_lr={:.5f} student_lr={:.5f}".format(
                                    step, total, rate, metrics.get("teacher_loss", float("nan")),
                                    metrics.get("student_loss", float("nan")), metrics.get("uda_mask_rate", 0.0),
                                    metrics.get("teacher_lr", 0.0), metrics.get("student_lr", 0.0)))
                    if progress is not None:
                        progress.advance(1, note="T {:.3f} S {:.3f}".format(metrics.get("teacher_loss", 0.0),
                                                                        metrics.get("student_loss", 0.0)))
                    if step % recipe.eval_every == 0 or step == total:
                        last_eval = evaluate(step)
                        row = {"step": step, "time": round(time.time(), 3)}
                        for target, values in last_eval.items():
                            row.update({"{}_top1".format(target): values["top1"],
                                        "{}_top5".format(target): values["top5"],
                                        "{}_loss_eval".format(target): values["loss"]})
                        csv_log.write(row)
                        save_best(last_eval, step)
                    if step % recipe.save_every == 0 or step == total:
                        save_latest(step)
            except KeyboardInterrupt:
                # Ctrl-C / SIGTERM: keep the work done so far, then let the caller exit 130.
                if step > start_step:
                    save_latest(step)
                raise
        summary_writer.flush()
        return {"steps_done": step, "start_step": start_step, "last_eval": last_eval, "best": best}
    finally:
        summary_writer.close()
        csv_log.close()
        session.close()


def _scalar_summary(name, value):
    return tf.Summary(value=[tf.Summary.Value(tag=name, simple_value=float(value))])

