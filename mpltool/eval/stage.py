"""The `eval` stage: top-1/top-5/loss of a checkpoint or a frozen .pb on every test image, once.

By default it scores the checkpoint the train stage recorded as best for the target network (the
latest one before any best exists), after proving by sha256 that its files are the recorded ones.
A `.pb` is scored through the same metric code, so `eval --model frozen.pb` and the checkpoint's
eval are directly comparable (timm's habit: validate the export through the very same pipeline).
"""

import collections
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from mpltool.checkpoints import (checkpoint_record, checkpoint_variables, recorded_checkpoint, resolve_target,
                                 user_checkpoint)
from mpltool.data.stage import load_test_set
from mpltool.errors import InvalidInputError, UsageError
from mpltool.eval.metrics import MEDIAN_WINDOWS, evaluate_logits_fn, median_key
from mpltool.manifest import Project
from mpltool.recipes import recipe_from_record


def train_recipe(project: Project):
    """The recipe training recorded, or the defaults when a model was given without any training here."""
    params = (project.stage("train") or {}).get("params") or {}
    # lenient: a train record may carry bookkeeping params (recipe name, overrides) besides the recipe's.
    return recipe_from_record(params, lenient=True)


def is_frozen_graph_path(model) -> bool:
    return str(model).lower().endswith(".pb")


def evaluate(project_dir, target: Optional[str] = None, model=None, batch_size: Optional[int] = None,
             progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Score `target` (or the given checkpoint / .pb) on all test images; recorded as stage `eval`.

    `progress(done, total)` receives image counts after every batch.
    """
    from mpltool.models.inference import CheckpointModel, FrozenModel, read_graph_def

    project = Project(project_dir)
    target = resolve_target(project, target)
    if batch_size is not None and int(batch_size) < 1:
        raise UsageError("batch size must be >= 1, got {}".format(batch_size))
    images, labels, test_files = load_test_set(project)
    if model is None:
        source = recorded_checkpoint(project, target)
        source["variables"] = checkpoint_variables(source["prefix"])
    elif is_frozen_graph_path(model):
        source = {"pb": Path(str(model)).absolute(), "chosen": "path"}
        source["graph_def"] = read_graph_def(source["pb"])
    else:
        source = user_checkpoint(model)
    recipe = train_recipe(project)
    batch_size = int(batch_size or recipe.eval_batch_size)
    params = {"target": target, "model": None if model is None else str(model), "batch_size": batch_size,
              "label_smoothing": recipe.label_smoothing}

    with project.stage_run("eval", params) as run:
        run.inputs.update(test_files)
        if "pb" in source:
            run.inputs["pb"] = project.file_record(source["pb"])
            described = {"kind": "pb", "path": run.inputs["pb"]["path"], "sha256": run.inputs["pb"]["sha256"]}
            network = FrozenModel(source["graph_def"], str(source["pb"]), any_batch=True)
        else:
            run.inputs["checkpoint"] = source.get("record") or checkpoint_record(
                project, source["prefix"], -1 if source["step"] is None else source["step"])
            described = {"kind": "checkpoint", "target": target, "prefix": project.relative(source["prefix"]),
                         "step": source["step"], "chosen": source["chosen"]}
            network = CheckpointModel(source["prefix"], target, source["variables"], network=source["network"])
        with network:
            if network.num_classes is not None and int(labels.max()) >= network.num_classes:
                raise InvalidInputError("the model has {} classes but the test data has label {}".format(
                    network.num_classes, int(labels.max())))
            result = evaluate_logits_fn(network.predict, images, labels, batch_size, recipe.label_smoothing,
                                        progress)
        run.metrics.update(result)
        run.record["source"] = described
    result = dict(result, source=described, batch_size=batch_size, project=str(project.dir))
    if model is None:
        result["training_medians"] = training_medians(project, target)
    return result


def training_medians(project: Project, target: str) -> Dict[str, float]:
    """{"last1": ..., "last20": ...}: the median test top-1 of the target's last N evaluations during
    training (the MixMatch reference's reported accuracy), as the train record holds them."""
    metrics = (project.stage("train") or {}).get("metrics") or {}
    return collections.OrderedDict(("last{}".format(window), metrics[median_key(target, window)])
                                   for window in MEDIAN_WINDOWS if median_key(target, window) in metrics)
