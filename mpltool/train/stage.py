"""The `train` stage: resolve the recipe, verify the data, resume or start, record every checkpoint.

Resume order (big_vision's): the project's own latest checkpoint first, else scratch; a run with
different structural settings is refused rather than silently mixed, and a failed restore is an error.
"""

import contextlib
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from mpltool import npu
from mpltool.data import cifar
from mpltool.data.stage import file_key, load_prepared, read_labelled_indices
from mpltool.errors import Interrupted, PrerequisiteError, UsageError
from mpltool.manifest import Project
from mpltool.recipes import load_recipe, recipe_from_record, with_overrides
from mpltool.train.checkpoints import CHECKPOINT_DIR, TARGETS, checkpoint_record, step_of

# Keys that may change between sessions of one run without making the checkpoints meaningless.
RESUMABLE_CHANGES = frozenset(["num_train_steps", "save_every", "eval_every", "log_every", "keep_checkpoints",
                               "eval_batch_size"])


def _changed_keys(old: Dict[str, Any], new: Dict[str, Any]):
    return sorted(k for k in new if old.get(k) != new[k] and k not in RESUMABLE_CHANGES)


def resolve_run(project: Project, recipe: Optional[str], overrides: Sequence[str], extend_steps: Optional[int],
                force: bool):
    """(recipe, previous record or None) for this invocation, enforcing the resume rules."""
    previous = None if force else project.stage("train")
    if previous is not None and not previous.get("checkpoints", {}).get("latest"):
        previous = None  # it never saved a checkpoint: nothing to resume
    if previous is None:
        if extend_steps is not None:
            raise UsageError("--extend-steps needs an earlier training run in this project",
                             hint="run `mpltool train --recipe NAME` first")
        return load_recipe(recipe or "mpl-wrn28-2", overrides), None
    recorded = recipe_from_record(previous.get("params") or {})
    object.__setattr__(recorded, "recipe_name", previous.get("recipe") or "recorded")
    object.__setattr__(recorded, "overrides", previous.get("overrides") or {})
    # --set alone applies on top of the recorded run; --recipe names a whole new configuration.
    resolved = load_recipe(recipe, overrides) if recipe is not None else with_overrides(recorded, overrides)
    changed = _changed_keys(recorded.values, resolved.values)
    if changed:
        raise UsageError("this project already trains with other settings ({}); re-run `mpltool train` "
                         "to resume it, or start over with --force".format(
                             ", ".join("{}: {} -> {}".format(k, recorded[k], resolved[k]) for k in changed)))
    if extend_steps is not None:
        if extend_steps < 1:
            raise UsageError("--extend-steps must be >= 1")
        resolved["num_train_steps"] = max(recorded.num_train_steps, int(previous.get("steps_done") or 0)) + extend_steps
    return resolved, previous


def _check_split(recipe, data_record: Dict[str, Any]) -> None:
    split = data_record.get("split") or {}
    wanted = {"num_labelled": recipe.num_labelled, "method": recipe.split}
    if recipe.split == "balanced":
        wanted["seed"] = recipe.split_seed
    have = {k: split.get(k) for k in wanted}
    if have != wanted:
        raise PrerequisiteError(
            "the prepared labelled split ({}) differs from the recipe's ({})".format(
                ", ".join("{}={}".format(k, v) for k, v in have.items()),
                ", ".join("{}={}".format(k, v) for k, v in wanted.items())),
            hint="run `mpltool data prepare --cifar PATH --labelled {} --split {}{}`".format(
                recipe.num_labelled, recipe.split,
                " --seed {}".format(recipe.split_seed) if recipe.split == "balanced" else ""))


def _load_data(prepared: Dict[str, Any]) -> Dict[str, Any]:
    paths = prepared["paths"]
    train_images, train_labels = cifar.read_images([paths[file_key(n)] for n in cifar.TRAIN_FILES])
    test_images, test_labels = cifar.read_images([paths[file_key(cifar.TEST_FILE)]])
    return {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
            "test_labels": test_labels, "labelled_indices": read_labelled_indices(paths["labelled_indices"])}


def train(project_dir, recipe: Optional[str] = None, overrides: Sequence[str] = (), device: str = "auto",
          extend_steps: Optional[int] = None, force: bool = False, log: Callable[[str], None] = print,
          progress_factory: Optional[Callable] = None) -> Dict[str, Any]:
    project = Project(project_dir)
    project.load()
    resolved, previous = resolve_run(project, recipe, overrides, extend_steps, force)
    prepared = load_prepared(project)
    _check_split(resolved, prepared["record"])
    device = npu.resolve_device(device)
    if resolved.student_lr_wait_steps + resolved.student_lr_warmup_steps >= resolved.num_train_steps:
        log("warning: student_lr_wait_steps + student_lr_warmup_steps ({}) >= num_train_steps ({}): the student "
            "barely trains; lower them with --set for short runs (recipe mpl-demo does)".format(
                resolved.student_lr_wait_steps + resolved.student_lr_warmup_steps, resolved.num_train_steps))
    ckpt_dir = project.path(CHECKPOINT_DIR)
    restore_from = None
    if previous is not None:
        restore_from = _latest_checkpoint(ckpt_dir)
        if restore_from is None:
            raise PrerequisiteError("the manifest records checkpoints but none is left in {}".format(ckpt_dir),
                                    hint="start over with `mpltool train --force`")
        done = step_of(restore_from)
        if done >= resolved.num_train_steps:
            log("training already finished at step {} of {}; nothing to do (train further with "
                "`mpltool train --extend-steps N`)".format(done, resolved.num_train_steps))
            return {"status": "finished", "steps_done": done, "num_train_steps": resolved.num_train_steps,
                    "checkpoints": previous.get("checkpoints"), "metrics": previous.get("metrics")}
        log("resuming from {} (step {} of {})".format(project.relative(restore_from), done,
                                                       resolved.num_train_steps))
    data = _load_data(prepared)
    checkpoints = dict((previous or {}).get("checkpoints") or {})
    checkpoints.setdefault("best", {})
    data["best"] = {t: float(v.get("top1", -1.0)) for t, v in checkpoints["best"].items()}
    params = dict(resolved.values)
    with project.stage_run("train", params, running_record=True) as run:
        if force:  # under the lock: no other stage of this project can be reading these checkpoints
            _start_over(project)
        for key, record in prepared["record"]["outputs"].items():
            run.inputs[key] = record
        run.record.update({"recipe": getattr(resolved, "recipe_name", None),
                           "overrides": getattr(resolved, "overrides", {}), "device": device,
                           "model": resolved.model, "num_train_steps": resolved.num_train_steps,
                           "steps_done": step_of(restore_from) if restore_from else 0, "checkpoints": checkpoints})
        run.save_progress()

        def on_checkpoint(kind, step, info):
            extra = {k: v for k, v in info.items() if k != "prefix"}
            record = checkpoint_record(project, info["prefix"], step, **extra)
            if kind == "latest":
                checkpoints["latest"] = record
                run.record["steps_done"] = step
            else:
                checkpoints["best"][kind[len("best-"):]] = record
            run.save_progress()

        from mpltool.train.trainer import run_training

        progress = progress_factory(resolved.num_train_steps) if progress_factory else None
        try:
            with progress if progress is not None else contextlib.nullcontext():
                outcome = run_training(resolved, device, data, project.dir, restore_from, on_checkpoint, log,
                                       progress=progress)
        except KeyboardInterrupt:
            latest = checkpoints.get("latest") or {}
            raise Interrupted("interrupted at step {}; checkpoint {} saved; re-run `mpltool train` to resume".format(
                run.record.get("steps_done"), latest.get("prefix", "-")))
        last = outcome["last_eval"]
        for target in TARGETS:
            if target in last:
                run.metrics.update({"{}_{}".format(target, m): last[target][m] for m in ("top1", "top5", "loss")})
        run.metrics.update({"best_{}_top1".format(t): v for t, v in outcome["best"].items() if v >= 0})
        run.metrics["steps_done"] = outcome["steps_done"]
        run.metrics["top1"] = last.get("ema", {}).get("top1")
        result = {"status": "done", "steps_done": outcome["steps_done"], "num_train_steps": resolved.num_train_steps,
                  "device": device, "checkpoints": checkpoints, "metrics": dict(run.metrics),
                  "project": str(project.dir)}
    return result


def _start_over(project: Project) -> None:
    """--force: this project's checkpoints and training logs go; nothing outside the project is touched."""
    for folder in (project.path(CHECKPOINT_DIR), project.path("logs/tensorboard")):
        if folder.exists():
            shutil.rmtree(str(folder))
    metrics_csv = project.path("logs/metrics.csv")
    if metrics_csv.exists():
        metrics_csv.unlink()


def _latest_checkpoint(ckpt_dir: Path) -> Optional[str]:
    from mpltool.tfv1 import tf

    if not ckpt_dir.is_dir():
        return None
    return tf.train.latest_checkpoint(str(ckpt_dir))
