"""The `train` stage: resolve the recipe, verify the data, resume or start, record every checkpoint.

Resume order (big_vision's): the project's own latest checkpoint first, else scratch; a run with
different structural settings is refused rather than silently mixed, and a failed restore is an error.
"""

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from mpltool import npu, parallel, tuning
from mpltool.data.stage import check_recipe, load_prepared, training_data
from mpltool.errors import Interrupted, MpltoolError, PrerequisiteError, UsageError
from mpltool.manifest import Project
from mpltool.manifest.records import typed
from mpltool.recipes import load_recipe, recipe_from_record, with_overrides
from mpltool.algorithms import get_algorithm
from mpltool.models import input_spec, spec_record
from mpltool.checkpoints import CHECKPOINT_DIR, checkpoint_record, step_of

# Keys that may change between sessions of one run without making the checkpoints meaningless.
MAX_EXTEND_STEPS = 2 ** 31 - 1
RESUMABLE_CHANGES = frozenset(["num_train_steps", "save_every", "eval_every", "log_every", "keep_checkpoints",
                               "eval_batch_size"])


def _changed_keys(old: Dict[str, Any], new: Dict[str, Any]):
    return sorted(k for k in new if old.get(k) != new[k] and k not in RESUMABLE_CHANGES)


def resolve_run(project: Project, recipe: Optional[str], overrides: Sequence[str], extend_steps: Optional[int],
                force: bool, prepared: Optional[Dict[str, Any]] = None, log: Callable[[str], None] = print,
                replicas: int = 1):
    """(recipe, previous record or None) for this invocation, enforcing the resume rules.

    With `prepared` data, the recipe is first fitted to it (`_adopt_data`). `replicas` is
    how many data-parallel processes train (a resumed run must keep its count: the global batch)."""
    if _overridden(overrides, "replicas"):
        raise UsageError("replicas is set by `mpltool train --nproc N` (or --devices), not by --set",
                         hint="use --nproc {}".format(replicas if replicas > 1 else "N"))
    previous = None if force else project.stage("train")
    if previous is not None and not previous.get("checkpoints", {}).get("latest"):
        previous = None  # it never saved a checkpoint: nothing to resume
    if previous is None:
        if extend_steps is not None:
            raise UsageError("--extend-steps needs an earlier training run in this project",
                             hint="run `mpltool train --recipe NAME` first")
        resolved = load_recipe(recipe, overrides)
        resolved["replicas"] = replicas
        if prepared is not None:
            _adopt_data(resolved, prepared, log)
        return resolved, None
    recorded = recipe_from_record(previous.get("params") or {})
    object.__setattr__(recorded, "recipe_name", previous.get("recipe") or "recorded")
    object.__setattr__(recorded, "overrides", previous.get("overrides") or {})
    # --set alone applies on top of the recorded run; --recipe names a whole new configuration.
    resolved = load_recipe(recipe, overrides) if recipe is not None else with_overrides(recorded, overrides)
    resolved["replicas"] = replicas
    if prepared is not None:
        _adopt_data(resolved, prepared, log)
    changed = _changed_keys(recorded.values, resolved.values)
    if changed:
        raise UsageError("this project already trains with other settings ({})".format(
                             ", ".join("{}: {} -> {}".format(k, recorded[k], resolved[k]) for k in changed)),
                         hint="re-run `mpltool train` without them to resume, train the new settings in another "
                              "project (`mpltool --project NEW data prepare ...`), or start over here with "
                              "--force (deletes this project's checkpoints)")
    done = int(previous.get("steps_done") or 0)
    if extend_steps is not None:
        if _overridden(overrides, "num_train_steps"):
            raise UsageError("--extend-steps and --set num_train_steps both set the length of the run",
                             hint="give one of them")
        if not 1 <= extend_steps <= MAX_EXTEND_STEPS:
            raise UsageError("--extend-steps must be between 1 and {}, got {}".format(MAX_EXTEND_STEPS, extend_steps))
        resolved["num_train_steps"] = max(recorded.num_train_steps, done) + extend_steps
    elif resolved.num_train_steps < done:
        raise UsageError("num_train_steps={} is below the {} steps this project has already trained".format(
            resolved.num_train_steps, done), hint="set it to {} or more, or train further with "
                                                  "`mpltool train --extend-steps N`".format(done))
    return resolved, previous


def plan_run(project: Project, recipe: Optional[str], overrides: Sequence[str], extend_steps: Optional[int],
             force: bool, log: Callable[[str], None] = print, replicas: int = 1):
    """(prepared data, resolved recipe, previous record or None): every check a run makes before it
    starts, without writing anything. `train` runs it, and so does a data-parallel launcher before it
    starts any process."""
    prepared = load_prepared(project)
    resolved, previous = resolve_run(project, recipe, overrides, extend_steps, force, prepared, log,
                                     replicas=replicas)
    if previous is not None:
        _check_same_data(previous, prepared["record"])
    check_recipe(prepared, resolved)
    if resolved.pretrained:
        path = Path(resolved.pretrained).expanduser().absolute()
        if not path.is_file():
            raise PrerequisiteError("pretrained weights {} not found".format(path),
                                    hint="mpltool never downloads them: get bvlc_alexnet.npy from "
                                         "cs.toronto.edu/~guerzhoy/tf_alexnet/, or drop --set pretrained")
        resolved["pretrained"] = str(path)
    return prepared, resolved, previous


def _overridden(overrides: Sequence[str], key: str) -> bool:
    """Whether a `--set key=value` names `key`."""
    return any(o.split("=", 1)[0].strip().lstrip("-") == key for o in overrides)


def _adopt_data(recipe, prepared: Dict[str, Any], log: Callable[[str], None]) -> None:
    """Fit the recipe to the prepared data before any graph is built: what its source fixed at import (a
    labelled split) is adopted where the user did not set it, and the class count must cover every label."""
    data_record = prepared["record"]
    prepared["source"].adopt(recipe, data_record, log)
    highest = highest_label(data_record)
    if highest is not None and highest >= recipe.num_classes:
        raise UsageError("num_classes={} but the prepared data has labels up to {}".format(
            recipe.num_classes, highest), hint="set num_classes to {} or more".format(highest + 1))


def highest_label(data_record: Dict[str, Any]) -> Optional[int]:
    """The highest label in the prepared files, from the per-file label counts the data stage recorded."""
    highest = None
    for info in data_record.get("files") or []:
        present = [label for label, count in enumerate(info.get("label_counts") or []) if count]
        if present:
            highest = present[-1] if highest is None else max(highest, present[-1])
    return highest


def _check_same_data(previous: Dict[str, Any], data_record: Dict[str, Any]) -> None:
    """A resumed or extended run must continue on the very data its checkpoints were trained on."""
    trained_on, now = typed("train", previous), typed("data", data_record)
    changed = sorted(key for key, record in trained_on.inputs.items()
                     if isinstance(record, dict) and now.output(key).get("sha256") != record.get("sha256"))
    if changed:
        raise PrerequisiteError(
            "the prepared data changed since this run's checkpoints were trained ({} differ)".format(
                ", ".join(changed)),
            hint="re-run `mpltool data prepare` with the original files and split to continue, or start a new "
                 "run on the new data with `mpltool train --force` (deletes this project's checkpoints)")


def _load_data(prepared: Dict[str, Any], recipe) -> Dict[str, Any]:
    return training_data(prepared, recipe)


def _stderr_warning(message: str) -> None:
    sys.stderr.write("warning: {}\n".format(message))


def train(project_dir, recipe: Optional[str] = None, overrides: Sequence[str] = (), device: str = "auto",
          extend_steps: Optional[int] = None, force: bool = False, log: Callable[[str], None] = print,
          progress_factory: Optional[Callable] = None,
          warn: Callable[[str], None] = _stderr_warning, replicas=None) -> Dict[str, Any]:
    """Train (or resume) in this project. In a data-parallel job this runs in every process: rank 0
    records and writes as a single process does, the other ranks only train (`_train_replica`)."""
    project = Project(project_dir)
    project.load()
    replicas = replicas or parallel.detect(device)
    if not replicas.is_chief:
        return _train_replica(project, npu.resolve_device(device), replicas)
    prepared, resolved, previous = plan_run(project, recipe, overrides, extend_steps, force, log, replicas.size)
    device = npu.resolve_device(device)
    replicas.share_params(dict(resolved.values), project.dir)  # the other ranks train exactly this
    algorithm = get_algorithm(resolved.algorithm)
    for line in algorithm.warnings(resolved):
        warn(line)
    restore_from = None
    if previous is not None:
        restore_from = resume_point(project, previous, warn)
        done = step_of(restore_from)
        if done >= resolved.num_train_steps:
            log("training already finished at step {} of {}; nothing to do (train further with "
                "`mpltool train --extend-steps N`)".format(done, resolved.num_train_steps))
            return {"status": "finished", "steps_done": done, "num_train_steps": resolved.num_train_steps,
                    "checkpoints": previous.get("checkpoints"), "metrics": previous.get("metrics")}
        log("resuming from {} (step {} of {})".format(project.relative(restore_from), done,
                                                       resolved.num_train_steps))
    data = _load_data(prepared, resolved)
    checkpoints = dict(typed("train", previous).checkpoints.raw)
    checkpoints.setdefault("best", {})
    score = "valid_top1" if resolved.select_best_on == "valid" else "top1"
    data["best"] = {t: float(v.get(score, -1.0)) for t, v in checkpoints["best"].items()}
    params = dict(resolved.values)
    with project.stage_run("train", params, running_record=True) as run:
        if force:  # under the lock: no other stage of this project can be reading these checkpoints
            _start_over(project)
        for key, record in prepared["record"]["outputs"].items():
            run.inputs[key] = record
        if resolved.pretrained:  # not an input: inputs are the data a resumed run must train on
            run.record["pretrained"] = project.file_record(resolved.pretrained)
        run.record.update({"recipe": getattr(resolved, "recipe_name", None),
                           "overrides": getattr(resolved, "overrides", {}), "device": device,
                           "model": resolved.model, "algorithm": algorithm.describe(),
                           "network": {"model": resolved.model, "num_classes": resolved.num_classes,
                                       "input_spec": spec_record(input_spec(resolved.model))},
                           "replicas": replicas.size, "global_batch_size": resolved.batch_size * replicas.size,
                           "parallel": replicas.describe(), "runtime": tuning.describe(),
                           "num_train_steps": resolved.num_train_steps,
                           "steps_done": step_of(restore_from) if restore_from else 0, "checkpoints": checkpoints})
        run.record.update(data["train_record"])  # what the data source keeps of this run (held-out domains)
        run.save_progress()

        def on_checkpoint(kind, step, info):
            extra = {k: v for k, v in info.items() if k != "prefix"}
            record = checkpoint_record(project, info["prefix"], step, **extra)
            if kind == "latest":
                checkpoints["latest"] = record
                run.record["steps_done"] = step
            elif kind.startswith("phase-"):  # the weights a phase of a multi-phase algorithm ended with
                checkpoints.setdefault("phases", {})[kind[len("phase-"):]] = record
            else:
                checkpoints["best"][kind[len("best-"):]] = record
            run.save_progress()

        from mpltool.train.trainer import run_training

        progress = progress_factory(resolved.num_train_steps) if progress_factory else None
        try:
            with progress if progress is not None else contextlib.nullcontext():
                outcome = run_training(resolved, device, data, project.dir, restore_from, on_checkpoint, log,
                                       progress=progress, replicas=replicas)
        except KeyboardInterrupt:
            latest = checkpoints.get("latest") or {}
            raise Interrupted("interrupted at step {}; checkpoint {} saved".format(
                run.record.get("steps_done"), latest.get("prefix", "-")), hint="re-run `mpltool train` to resume")
        last = outcome["last_eval"]
        for target in algorithm.eval_targets:
            run.metrics.update({"{}_{}".format(target, m): last[target][m] for m in ("top1", "top5", "loss",
                                                                                   "valid_top1")
                                if m in last.get(target, {})})
        run.metrics.update({"best_{}_{}".format(t, score): v for t, v in outcome["best"].items() if v >= 0})
        run.metrics.update(outcome["medians"])
        run.metrics["steps_done"] = outcome["steps_done"]
        run.metrics["top1"] = last.get(algorithm.default_target, {}).get("top1")
        result = {"status": "done", "steps_done": outcome["steps_done"], "num_train_steps": resolved.num_train_steps,
                  "device": device, "checkpoints": checkpoints, "metrics": dict(run.metrics),
                  "project": str(project.dir)}
        if replicas.size > 1:  # rank 0 of a data-parallel job: the launcher reports
            result.update(rank=0, replicas=replicas.size)
    return result


def _train_replica(project: Project, device: str, replicas) -> Dict[str, Any]:
    """Rank > 0: train rank 0's recipe on this rank's shard; write nothing but logs/rank-K.log."""
    from mpltool.train.trainer import run_training

    recipe = recipe_from_record(replicas.share_params(None, project.dir))
    data = _load_data(load_prepared(project), recipe)
    log_path = project.path("logs/rank-{}.log".format(replicas.rank))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(log_path), "a") as handle:
        def log(line):
            handle.write(line + "\n")
            handle.flush()

        outcome = run_training(recipe, device, data, project.dir, None, lambda *args: None, log, replicas=replicas)
    return {"status": "done", "rank": replicas.rank, "replicas": replicas.size, "steps_done": outcome["steps_done"]}


def _start_over(project: Project) -> None:
    """--force: this project's checkpoints and training logs go; nothing outside the project is touched."""
    for folder in (project.path(CHECKPOINT_DIR), project.path("logs/tensorboard")):
        if folder.exists():
            shutil.rmtree(str(folder))
    metrics_csv = project.path("logs/metrics.csv")
    if metrics_csv.exists():
        metrics_csv.unlink()


def resume_point(project: Project, previous: Dict[str, Any], warn: Callable[[str], None]) -> str:
    """The checkpoint to resume from: the newest complete one, trusted by the manifest's record first.

    The manifest's `latest` is verified by sha256. TensorFlow's `checkpoints/checkpoint` index may name a
    newer one (a kill -9 between the Saver finishing it and the manifest recording it): that one is used
    when its files are all there and readable. A corrupt or missing index never hides the recorded one.
    """
    from mpltool.checkpoints import checkpoint_variables, verify_checkpoint

    recorded = typed("train", previous).checkpoints.latest
    recorded_prefix, problem = None, None
    try:
        recorded_prefix = verify_checkpoint(project, recorded, "checkpoint")
    except PrerequisiteError as exc:
        problem = exc.message
    newer = _indexed_checkpoint(project.path(CHECKPOINT_DIR))
    if newer is not None and step_of(newer) > step_of(recorded_prefix or recorded["prefix"]):
        try:
            checkpoint_variables(newer)
            return newer
        except MpltoolError:
            pass
    if recorded_prefix is not None:
        return recorded_prefix
    raise PrerequisiteError(
        "cannot resume: {}".format(problem),
        hint="restore the checkpoint files the manifest records, or start over with `mpltool train --force` "
             "(deletes this project's checkpoints)")


def _indexed_checkpoint(ckpt_dir: Path) -> Optional[str]:
    """What the Saver's index file names as newest, or None when it is missing or unreadable."""
    from mpltool.tfv1 import tf

    if not ckpt_dir.is_dir():
        return None
    try:
        return tf.train.latest_checkpoint(str(ckpt_dir))
    except Exception:  # a corrupt index is a parse error inside TF; the manifest's record still stands
        return None
