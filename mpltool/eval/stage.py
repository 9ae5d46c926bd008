"""The `eval` stage: top-1/top-5/loss of a checkpoint or a frozen .pb on every test image, once.

By default it scores the checkpoint the train stage recorded as best for the target network (the
latest one before any best exists), after proving by sha256 that its files are the recorded ones.
A `.pb` or `.onnx` is scored through the same metric code, so `eval --model frozen.pb` and the
checkpoint's eval are directly comparable (timm's habit: validate the export through the very same
pipeline). Which file to open is mpltool/models/artifacts.py's answer, as for every stage.
"""

import collections
from typing import Any, Callable, Dict, Optional

from mpltool.checkpoints import resolve_target
from mpltool.data.records import at_input_size
from mpltool.data.stage import load_test_set
from mpltool.errors import InvalidInputError, UsageError
from mpltool.eval.metrics import MEDIAN_WINDOWS, evaluate_logits_fn, median_key
from mpltool.manifest import Project
from mpltool.models import artifacts
from mpltool.recipes import recipe_from_record


def train_recipe(project: Project):
    """The recipe training recorded, or the defaults when a model was given without any training here."""
    params = project.record("train").params
    # lenient: a train record may carry bookkeeping params (recipe name, overrides) besides the recipe's.
    return recipe_from_record(params, lenient=True)


def evaluate(project_dir, target: Optional[str] = None, model=None, batch_size: Optional[int] = None,
             progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Score `target` (or the given checkpoint / .pb / .onnx) on all test images; recorded as stage `eval`.

    `progress(done, total)` receives image counts after every batch.
    """
    project = Project(project_dir)
    if model is None or artifacts.kind_of(model) == "checkpoint":
        resolve_target(project, target)  # a wrong --target is the first thing to say
    if batch_size is not None and int(batch_size) < 1:
        raise UsageError("batch size must be >= 1, got {}".format(batch_size))
    images, labels, test_files = load_test_set(project)
    artifact = artifacts.resolve(project, model, target, what="eval --model")
    recipe = train_recipe(project)
    batch_size = int(batch_size or recipe.eval_batch_size)
    target = artifact.target or resolve_target(project, target)
    params = {"target": target, "model": None if model is None else str(model), "batch_size": batch_size,
              "label_smoothing": recipe.label_smoothing}

    with project.stage_run("eval", params) as run:
        run.inputs.update(test_files)
        run.inputs[artifact.kind if artifact.kind != "checkpoint" else "checkpoint"] = artifacts.input_record(
            project, artifact)
        described = artifacts.describe(project, artifact)
        with artifacts.open_model(artifact) as network:
            if network.num_classes is not None and int(labels.max()) >= network.num_classes:
                raise InvalidInputError("the model has {} classes but the test data has label {}".format(
                    network.num_classes, int(labels.max())))
            result = evaluate_logits_fn(network.predict, at_input_size(images, network.image_shape), labels,
                                        batch_size, recipe.label_smoothing, progress)
        run.metrics.update(result)
        run.record["source"] = described
    result = dict(result, source=described, batch_size=batch_size, project=str(project.dir))
    if model is None:
        result["training_medians"] = training_medians(project, target)
    return result


def training_medians(project: Project, target: str) -> Dict[str, float]:
    """{"last1": ..., "last20": ...}: the median test top-1 of the target's last N evaluations during
    training (how some references report accuracy), as the train record holds them."""
    metrics = project.record("train").metrics
    return collections.OrderedDict(("last{}".format(window), metrics[median_key(target, window)])
                                   for window in MEDIAN_WINDOWS if median_key(target, window) in metrics)
