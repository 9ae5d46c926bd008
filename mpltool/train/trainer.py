"""The training session: graph, savers, the step loop, periodic evaluation, logs and checkpoints.

One `session.run` per step (an algorithm's whole step is one op). Checkpoints are written before the manifest
names them, so a kill -9 at any moment leaves a manifest that points only at complete files, and
re-running `train` resumes from the newest checkpoint the Saver finished (losing < save_every steps).
"""

import csv
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from mpltool import npu
from mpltool.errors import InvalidInputError, NonFiniteError, first_line
from mpltool.eval.metrics import MEDIAN_WINDOWS, median_key
from mpltool.parallel import Replicas
from mpltool.manifest.files import atomic_write_bytes
from mpltool.signals import check_interrupted, critical_section
from mpltool.tfv1 import tf
from mpltool.checkpoints import step_of
from mpltool.data.records import data_error, rank_share, reader_of

EVAL_METRICS = ("top1", "top5", "loss")


def csv_columns(algorithm):
    """The metrics CSV's columns: fixed per algorithm, so parsers never break across versions (a
    `<target>_valid_top1` cell is empty when the split has no validation records)."""
    return (("step", "time", "steps_per_second") + tuple(algorithm.metric_names)
            + tuple("{}_{}".format(t, "loss_eval" if m == "loss" else m)
                    for t in algorithm.eval_targets for m in EVAL_METRICS)
            + tuple("{}_valid_top1".format(t) for t in algorithm.eval_targets))


def accuracy_medians(csv_path: Path, targets) -> Dict[str, float]:
    """`median_key(target, N)`: the median test top-1 of the last N evaluations (fewer when the run
    evaluated fewer times), as some references report their accuracy (docs/mixmatch.md); read from the metrics CSV,
    so a resumed run counts the evaluations of its earlier sessions."""
    history = {t: [] for t in targets}
    if csv_path.is_file():
        with open(str(csv_path), newline="") as handle:
            for row in csv.DictReader(handle):
                for target in targets:
                    value = row.get("{}_top1".format(target))
                    if value not in (None, ""):
                        history[target].append(float(value))
    medians = {}
    for target, values in history.items():
        for window in MEDIAN_WINDOWS if values else ():
            medians[median_key(target, window)] = float(np.median(values[-window:]))
    return medians


class TrainingGraph:
    """Everything one training session needs, built once in its own tf.Graph."""

    def __init__(self, recipe, device: str, image_shape=(32, 32, 3), replicas=None, num_domains=0, reader=None):
        from mpltool.algorithms import get_algorithm, phases_of
        from mpltool.data.pipeline import TrainInput
        from mpltool.models import build_model, input_spec, normalize_input

        self.algorithm = get_algorithm(recipe.algorithm)
        self.targets = tuple(self.algorithm.eval_targets)
        self.replicas = replicas or Replicas()
        rank = self.replicas.rank
        self.graph = tf.Graph()
        with self.graph.as_default():
            # Each replica draws its own dropout masks, augmentations and MixUp coefficients; the weights
            # start equal all the same (rank 0's are broadcast before the first step).
            tf.set_random_seed(recipe.seed + rank)
            self.global_step = tf.train.get_or_create_global_step()
            spec = input_spec(recipe.model)  # what the exported graph does to raw pixels, training included
            self.input = TrainInput(self.algorithm.streams(recipe), lambda images: normalize_input(images, spec),
                                    shuffle_buffer=recipe.shuffle_buffer, seed=recipe.seed + 7919 * rank,
                                    image_shape=image_shape, num_domains=num_domains, reader=reader,
                                    cap_shuffle_buffer=recipe.shuffle_buffer_cap == "records")
            self.model = build_model(recipe.model, recipe.num_classes, recipe.dropout_rate,
                                     dropout_fn=npu.dropout_fn(device), bn_momentum=recipe.bn_momentum)
            self.step = self.algorithm.build_step(self.model, recipe, self.input.batch, self.global_step,
                                                  optimizer_wrapper=self._optimizer_wrapper(device, recipe),
                                                  replicas=self.replicas)
            self.phases = phases_of(self.step)
            produced = set(name for phase in self.phases for name in phase.metrics)
            missing = [name for name in self.algorithm.metric_names if name not in produced]
            if missing:
                raise RuntimeError("the {} step lacks its declared metrics {}".format(self.algorithm.name, missing))
            # Evaluation towers: raw pixels in, normalised inside, training=False (moving BN statistics).
            self.eval_images = tf.placeholder(tf.float32, (None,) + tuple(image_shape), name="eval_images")
            normalised = normalize_input(self.eval_images, spec)
            self.eval_logits = {target: self.model(normalised, False, target).logits for target in self.targets}
            self.eval_summary_values = {name: tf.placeholder(tf.float32, (), name="eval_" + name)
                                        for name in ["{}_{}".format(t, m) for t in self.targets
                                                     for m in EVAL_METRICS]}
            self.eval_summaries = tf.summary.merge([tf.summary.scalar("eval/" + n, p)
                                                    for n, p in self.eval_summary_values.items()])
            self.broadcast = self.replicas.broadcast_op()  # every variable exists by now (optimizer slots too)
            self.saver = tf.train.Saver(max_to_keep=recipe.keep_checkpoints, save_relative_paths=True)
            # Best-by-accuracy checkpoints live in their own folders; old ones are removed explicitly.
            self.best_saver = tf.train.Saver(max_to_keep=None, save_relative_paths=True)
            self.init = tf.global_variables_initializer()
            # Checked before every save, so no checkpoint ever holds NaN/inf weights.
            self.weights_finite = tf.reduce_all([tf.reduce_all(tf.is_finite(v)) for v in tf.global_variables()
                                                 if v.dtype.base_dtype.is_floating])
        self.graph.finalize()

    def _optimizer_wrapper(self, device, recipe):
        """The data-parallel all-reduce inside, the NPU loss scale outside (it scales the loss, unscales the
        reduced gradients)."""
        loss_scale = npu.optimizer_wrapper(device, recipe, distributed=self.replicas.size > 1)
        distribute = self.replicas.wrap_optimizer

        def wrap(optimizer):
            optimizer = distribute(optimizer)
            return loss_scale(optimizer) if loss_scale else optimizer

        return wrap


class MetricsCsv:
    """Append-only CSV with a fixed column order (parsers never break across versions).

    `resume_step`: rows past it were written after the checkpoint a resumed run starts from (a kill -9
    lost those steps); they are dropped so the re-trained steps are not listed twice.
    """

    def __init__(self, path: Path, columns, resume_step: Optional[int] = None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and path.is_file():
            _drop_rows_after(path, resume_step)
        if path.is_file():
            _adopt_columns(path, list(columns))
        new = not path.exists() or path.stat().st_size == 0
        self.handle = open(str(path), "a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=list(columns), extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self.handle.flush()

    def write(self, row: Dict[str, Any]) -> None:
        self.writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _drop_rows_after(path: Path, step: int) -> None:
    with open(str(path), newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if not (row and row[0].isdigit() and int(row[0]) > step)]
    if len(kept) != len(rows):
        text = "".join(",".join(_csv_cell(c) for c in row) + "\r\n" for row in kept)
        atomic_write_bytes(path, text.encode("utf-8"))


def _adopt_columns(path: Path, columns) -> None:
    """A CSV written by an earlier mpltool with other columns is rewritten under today's header (cells
    kept by column name), so a resumed run never appends rows that do not match the header."""
    with open(str(path), newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0] == columns:
        return
    header = rows[0]
    kept = [columns] + [[dict(zip(header, row)).get(c, "") for c in columns] for row in rows[1:]]
    text = "".join(",".join(_csv_cell(c) for c in row) + "\r\n" for row in kept)
    atomic_write_bytes(path, text.encode("utf-8"))


def _csv_cell(value: str) -> str:
    return '"{}"'.format(value.replace('"', '""')) if any(c in value for c in ',"\r\n') else value




class TrainingSession:
    """One session of training: restore or initialise, then steps, periodic evaluation and checkpoints.

    `on_checkpoint(kind, step, info)` is called after every checkpoint is complete on disk (kind: "latest"
    or "best-<target>"), so the caller can record it in the manifest. The algorithm only supplied the
    graph (TrainingGraph); nothing here depends on which one it is.
    """

    def __init__(self, recipe, device: str, data: Dict[str, np.ndarray], workdir: Path,
                 restore_from: Optional[str], on_checkpoint: Callable[[str, int, Dict[str, Any]], None],
                 log: Callable[[str], None], progress=None, replicas=None):
        self.recipe, self.data, self.log, self.progress = recipe, data, log, progress
        self.on_checkpoint = on_checkpoint
        # A KeyboardInterrupt raised inside TF's C++ while the graph and session are built can crash the
        # process (SIGSEGV, seen about once in twenty SIGTERMs then): signals wait until both exist.
        with critical_section():
            self.graph = TrainingGraph(recipe, device, image_shape=data["train_images"].shape[1:],
                                       replicas=replicas, num_domains=len(data.get("source_domains") or ()),
                                       reader=reader_of(data["train_images"]))
            self.session = tf.Session(graph=self.graph.graph, config=npu.session_config(device, recipe))
        self.chief = self.graph.replicas.is_chief  # only rank 0 evaluates and writes
        self.ckpt_dir = workdir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        _sweep_saver_leftovers(self.ckpt_dir)
        self.best = {target: -1.0 for target in self.graph.targets}
        self.best.update(data.get("best") or {})
        self.last_eval = {}  # type: Dict[str, Any]
        self._finite_at = (-1, True)  # (step, weights finite at it)
        self.csv = self.summaries = None
        if self.chief:
            self.csv = MetricsCsv(workdir / "logs" / "metrics.csv", csv_columns(self.graph.algorithm),
                                  resume_step=step_of(restore_from) if restore_from else 0)
            self.summaries = tf.summary.FileWriter(str(workdir / "logs" / "tensorboard"), graph=None)
        try:
            check_interrupted()
            self._start(restore_from)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for writer in (self.summaries, self.csv):
            if writer is not None:
                writer.close()
        self.session.close()

    def _start(self, restore_from: Optional[str]) -> None:
        graph, session = self.graph, self.session
        if restore_from and self.chief:
            try:
                graph.saver.restore(session, restore_from)
            except Exception as exc:  # a failed restore is an error, never a silent restart
                raise InvalidInputError("cannot resume from {}: {}".format(restore_from, first_line(exc)),
                                        hint="restore the checkpoint files, or start over with `mpltool train "
                                             "--force` (deletes this project's checkpoints)")
            _recover_saver_history(graph.saver, self.ckpt_dir)
        else:
            session.run(graph.init)
            if graph.step.init_ops:
                session.run(graph.step.init_ops, feed_dict=graph.step.init_feed)
        if graph.broadcast is not None:
            session.run(graph.broadcast)
        labelled, unlabelled = self._shard()
        graph.input.initialize(session, self.data["train_images"], self.data["train_labels"], labelled, unlabelled,
                               domains=self.data.get("train_domains"))
        self.step = self.start_step = int(session.run(graph.global_step))

    def _shard(self):
        """This replica's share of the labelled and unlabelled records, taken before any shuffling."""
        rank, size = self.graph.replicas.rank, self.graph.replicas.size
        labelled, unlabelled = self.data["labelled_indices"], self.data["unlabelled_indices"]
        if size == 1:
            return labelled, unlabelled
        if len(labelled) < size:
            raise InvalidInputError("{} labelled records cannot be shared by {} replicas".format(len(labelled), size),
                                    hint="use fewer processes or more labelled records")
        images = self.data["train_images"]
        return rank_share(images, labelled, rank, size), rank_share(images, unlabelled, rank, size)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        """Train to recipe.num_train_steps; Ctrl-C/SIGTERM saves the step reached, then re-raises."""
        recipe, total = self.recipe, self.recipe.num_train_steps
        self._window = (time.time(), self.step)
        if self.progress is not None:
            self.progress.start_at(self.step)
        try:
            while self.step < total:
                check_interrupted()
                phase = self._phase()
                fetches = {"train": phase.train_op, "metrics": phase.metrics}
                metrics = {k: float(v) for k, v in self._run_step(fetches)["metrics"].items()}
                self.step += 1
                self._check_finite(metrics)
                self._report(metrics, self.step % recipe.log_every == 0 or self.step == total)
                phase_ends = phase.until is not None and self.step == phase.until
                if (self.chief and phase.evaluate
                        and (self.step % recipe.eval_every == 0 or self.step == total or phase_ends)):
                    self.last_eval = self.evaluate()
                    self.save_best(self.last_eval)
                if self.chief and (self.step % recipe.save_every == 0 or self.step == total or phase_ends):
                    self.save_latest()
                if self.chief and phase_ends:
                    self.save_phase_end(phase.name)
        except KeyboardInterrupt:
            if self.chief and self.step > self.start_step:  # keep the work done so far; the caller exits 130
                self.save_latest()
            raise
        medians = {}
        if self.chief:
            self.summaries.flush()
            medians = accuracy_medians(self.csv.path, self.graph.targets)
        return {"steps_done": self.step, "start_step": self.start_step, "last_eval": self.last_eval,
                "best": self.best, "medians": medians}

    def _run_step(self, fetches):
        """One step; a failure reading the data (a file changed or lost since `data prepare`) is exit 3
        naming the file, and nothing of this step is kept."""
        try:
            return self.session.run(fetches)
        except tf.errors.OpError as exc:
            error = data_error(exc)
            if error is not None:
                raise error
            raise

    def _phase(self):
        """The phase the next step belongs to."""
        for phase in self.graph.phases:
            if phase.until is None or self.step < phase.until:
                return phase
        return self.graph.phases[-1]

    def _check_finite(self, metrics: Dict[str, float]) -> None:
        bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
        if bad:  # nothing of this step or later is saved: the last checkpoint is the last finite one
            raise NonFiniteError("training diverged at step {}: {} became {}".format(
                self.step, ", ".join(bad), metrics[bad[0]]), hint=self.graph.algorithm.divergence_hint(self.recipe))

    def _report(self, metrics: Dict[str, float], log_now: bool) -> None:
        """Progress bar every step; CSV, TensorBoard and (off a terminal) a log line every log_every."""
        shown = [name for name in self.graph.algorithm.progress_metrics if name in metrics]
        if log_now:
            started, first = self._window
            rate = (self.step - first) / max(time.time() - started, 1e-9)
            self._window = (time.time(), self.step)
            if self.chief:
                for name, value in metrics.items():
                    self.summaries.add_summary(_scalar_summary(name, value), self.step)
                self.csv.write(dict(metrics, step=self.step, time=time.time(), steps_per_second=rate))
            if self.progress is None:
                self.log("step {}/{}: {:.2f} steps/s {}".format(self.step, self.recipe.num_train_steps, rate,
                                                                 " ".join("{}={:.5g}".format(k, metrics[k])
                                                                          for k in shown)))
        if self.progress is not None:
            self.progress.advance(1, note=" ".join("{} {:.3f}".format(k, metrics[k]) for k in shown[:2]))

    # -- evaluation and checkpoints --------------------------------------------------------------------
    def evaluate(self) -> Dict[str, Dict[str, Any]]:
        """Every evaluated network over every test image once: log line, TensorBoard, CSV row."""
        from mpltool.eval.metrics import evaluate_logits_fn

        graph, session = self.graph, self.session
        results, valid = {}, {}
        has_valid = len(self.data["valid_labels"]) > 0
        for target in graph.targets:
            logits = graph.eval_logits[target]

            def over(images, labels):
                return evaluate_logits_fn(lambda batch: session.run(logits, feed_dict={graph.eval_images: batch}),
                                          images, labels, self.recipe.eval_batch_size, self.recipe.label_smoothing)

            results[target] = over(self.data["test_images"], self.data["test_labels"])
            if has_valid:
                valid[target] = over(self.data["valid_images"], self.data["valid_labels"])["top1"]
        self.log("Eval end in global step:{}, ".format(self.step) + ", ".join(
            "{t}_top1={top1:.6f}, {t}_top5={top5:.6f}, {t}_loss={loss:.6f}".format(t=t, **results[t])
            for t in graph.targets) + "".join(", {}_valid_top1={:.6f}".format(t, v) for t, v in valid.items()))
        feed = {graph.eval_summary_values["{}_{}".format(t, m)]: results[t][m]
                for t in graph.targets for m in EVAL_METRICS}
        self.summaries.add_summary(session.run(graph.eval_summaries, feed_dict=feed), self.step)
        row = {"step": self.step, "time": time.time()}
        for target, values in results.items():
            row.update({"{}_{}".format(target, "loss_eval" if m == "loss" else m): values[m] for m in EVAL_METRICS})
        row.update({"{}_valid_top1".format(t): v for t, v in valid.items()})
        self.csv.write(row)
        for target, value in valid.items():
            results[target]["valid_top1"] = value
        return results

    def _weights_finite(self) -> bool:
        """Checked once per step that saves (best and latest checkpoints at one step share the answer)."""
        if self._finite_at[0] != self.step:
            self._finite_at = (self.step, bool(self.session.run(self.graph.weights_finite)))
        return self._finite_at[1]

    def save_latest(self) -> None:
        if not self._weights_finite():
            raise NonFiniteError("training diverged: the weights hold NaN or inf after step {}".format(self.step),
                                 hint=self.graph.algorithm.divergence_hint(self.recipe))
        prefix = self.graph.saver.save(self.session, str(self.ckpt_dir / "model.ckpt"), global_step=self.step,
                                       write_meta_graph=False)
        self.on_checkpoint("latest", self.step, {"prefix": prefix})

    def save_phase_end(self, name: str) -> None:
        """The weights a phase ended with (a pre-trained encoder, say), kept in `phase-<name>/` whatever
        the latest checkpoints' pruning later removes."""
        phase_dir = self.ckpt_dir / "phase-{}".format(name)
        phase_dir.mkdir(parents=True, exist_ok=True)
        prefix = self.graph.best_saver.save(self.session, str(phase_dir / "model.ckpt"), global_step=self.step,
                                            write_meta_graph=False)
        self.on_checkpoint("phase-" + name, self.step, {"prefix": prefix})

    def save_best(self, results: Dict[str, Dict[str, Any]]) -> None:
        if not self._weights_finite():
            return  # save_latest refuses the same step with the error
        on = self.recipe.select_best_on  # valid: the held-out training records, never the test set
        for target in self.graph.targets:
            top1 = results[target]["top1"]
            score = results[target]["valid_top1"] if on == "valid" else top1
            if score <= self.best[target]:
                continue
            self.best[target] = score
            target_dir = self.ckpt_dir / "best-{}".format(target)
            target_dir.mkdir(parents=True, exist_ok=True)
            prefix = self.graph.best_saver.save(self.session, str(target_dir / "model.ckpt"), global_step=self.step,
                                                write_meta_graph=False)
            info = {"prefix": prefix, "top1": top1, "top5": results[target]["top5"], "selected_on": on}
            if on == "valid":
                info["valid_top1"] = score
            self.on_checkpoint("best-" + target, self.step, info)
            # Only once the manifest names the new best: a full disk can fail that record, and the files
            # it still names must then be there (seen: the old best deleted first, the record failed).
            for old in target_dir.glob("model.ckpt-*"):
                if not old.name.startswith(Path(prefix).name + "."):
                    old.unlink()


def run_training(recipe, device: str, data: Dict[str, np.ndarray], workdir: Path, restore_from: Optional[str],
                 on_checkpoint: Callable[[str, int, Dict[str, Any]], None], log: Callable[[str], None],
                 progress=None, replicas=None) -> Dict[str, Any]:
    """Train from `restore_from` (or from scratch) to recipe.num_train_steps (see TrainingSession)."""
    session = TrainingSession(recipe, device, data, workdir, restore_from, on_checkpoint, log, progress,
                              replicas=replicas)
    try:
        return session.run()
    finally:
        session.close()


def _sweep_saver_leftovers(ckpt_dir: Path) -> None:
    """The Saver writes `<prefix>_temp_<uuid>/` then renames; a crash or a full disk leaves that folder."""
    for leftover in ckpt_dir.rglob("*_temp_*"):
        if leftover.is_dir():
            shutil.rmtree(str(leftover), ignore_errors=True)


def _recover_saver_history(saver, ckpt_dir: Path) -> None:
    """Let the Saver keep pruning earlier sessions' checkpoints; an unreadable index only loses that."""
    try:
        state = tf.train.get_checkpoint_state(str(ckpt_dir))
    except Exception:
        return
    if state is not None:
        saver.recover_last_checkpoints([p for p in state.all_model_checkpoint_paths
                                        if Path(p + ".index").is_file() or (ckpt_dir / (p + ".index")).is_file()])


def _scalar_summary(name, value):
    return tf.Summary(value=[tf.Summary.Value(tag=name, simple_value=float(value))])

