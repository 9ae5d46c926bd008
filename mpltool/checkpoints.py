"""Checkpoints as the manifest knows them, for every stage: which network, which checkpoint, its files.

A checkpoint record: a TF Saver prefix plus the hash of every file behind it.

Layout inside a project: `checkpoints/model.ckpt-<step>` (latest: every network the algorithm builds and
the optimizer state), `checkpoints/best-<network>/model.ckpt-<step>` (the best top-1 so far of each
evaluated network, as the seed's ckpts/ and ema_ckpts/), `checkpoints/phase-<name>/` (the end of each
phase of a multi-phase algorithm). Variables are named `<network>/<model>/...`, so any network restores
from any checkpoint that holds it.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional

from mpltool.errors import InvalidInputError, PrerequisiteError, UsageError

TRAIN_COMMAND = "mpltool train"
CHECKPOINT_DIR = "checkpoints"


def checkpoint_files(prefix) -> List[Path]:
    """The .index and .data-* files of a Saver prefix (the .meta graph is optional and not hashed)."""
    prefix = Path(str(prefix))
    index = Path(str(prefix) + ".index")
    data = sorted(prefix.parent.glob(prefix.name + ".data-*"))
    return ([index] if index.is_file() else []) + data


def checkpoint_record(project, prefix, step: int, **extra) -> Dict[str, Any]:
    record = {"prefix": project.relative(prefix), "step": int(step),
              "files": [project.file_record(path) for path in checkpoint_files(prefix)]}
    record.update(extra)
    return record


def verify_checkpoint(project, record: Dict[str, Any], what: str) -> str:
    """The prefix of a recorded checkpoint after proving its files are the ones recorded (else exit 4)."""
    prefix = project.path(record["prefix"])
    files = record.get("files") or []
    if not files:
        raise PrerequisiteError("{} {} has no recorded files".format(what, prefix), hint="re-run `mpltool train`")
    for file_record in files:
        project.verify_file(file_record, what)
    return str(prefix)


def resolve_user_checkpoint(path) -> str:
    """A checkpoint prefix from what a user typed: a prefix, its .index/.data/.meta file, or a directory."""
    from mpltool.tfv1 import tf

    given = Path(str(path))
    if given.is_dir():
        latest = tf.train.latest_checkpoint(str(given))
        if latest is None:
            raise InvalidInputError("no checkpoint in directory {}".format(given))
        given = Path(latest)
    text = str(given)
    for suffix in (".index", ".meta"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    if ".data-" in Path(text).name:
        text = text[: text.rindex(".data-")]
    if not checkpoint_files(text) or not Path(text + ".index").is_file():
        raise InvalidInputError("no checkpoint at {}".format(path), hint="give a prefix like checkpoints/model.ckpt-300")
    return text


def checkpoint_variables(prefix) -> Dict[str, List[int]]:
    """Variable names and shapes stored in a checkpoint; a corrupt checkpoint is invalid input (exit 3)."""
    from mpltool.tfv1 import tf

    try:
        reader = tf.train.NewCheckpointReader(str(prefix))
        return dict(reader.get_variable_to_shape_map())
    except Exception as exc:  # TF raises DataLossError, NotFoundError, OpError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError("unreadable checkpoint {}: {}".format(prefix, first))


def step_of(prefix) -> int:
    name = Path(str(prefix)).name
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def trained_networks(project) -> Dict[str, Any]:
    """The networks the project's training built, as its record describes them: eval_targets, default_target.

    Read from the train record (the algorithm wrote it), so no stage needs to know any algorithm. A record
    from before algorithms were recorded, or no train record at all (checkpoints given explicitly): the
    networks the recorded (else the default) algorithm builds, as its registry entry says.
    """
    from mpltool.algorithms import DEFAULT_ALGORITHM, get_algorithm

    train = project.record("train")
    described = train.algorithm
    if not described.eval_targets:
        described = get_algorithm(train.params.get("algorithm") or DEFAULT_ALGORITHM).describe()
        return {"eval_targets": list(described["eval_targets"]), "default_target": described["default_target"]}
    return {"eval_targets": described.eval_targets, "default_target": described.default_target}


def trained_network(project) -> Optional[Dict[str, Any]]:
    """{model, num_classes, input_spec} of the project's training: its record, else the recipe it recorded
    (a record from before networks were recorded), else None (no training here)."""
    from mpltool.models import input_spec, spec_record

    train = project.stage("train") or {}
    if train.get("network"):
        return train["network"]
    params = train.get("params") or {}
    if not params.get("model"):
        return None
    return {"model": params["model"], "num_classes": int(params.get("num_classes", 10)),
            "input_spec": spec_record(input_spec(params["model"]))}


def resolve_target(project, target: Optional[str]) -> str:
    """The network to evaluate or export: the one named (checked against what training built), else the default."""
    networks = trained_networks(project)
    if target is None:
        return networks["default_target"]
    if target not in networks["eval_targets"]:
        raise UsageError("unknown target {!r}: this project's training built {}".format(
            target, ", ".join(networks["eval_targets"])))
    return target


def recorded_checkpoint(project, target: str, which: str = "best") -> Dict[str, Any]:
    """The train record's checkpoint for `target` (best, else latest), its files verified (exit 4 if changed).

    A train stage that was interrupted or is still running counts too: its recorded checkpoints are
    complete files, and the hash check proves they are the ones recorded.
    """
    train = project.stage("train")
    if train is None:
        raise PrerequisiteError("no 'train' stage in {}".format(project.manifest_path),
                                hint="run `{}` first, or pass a checkpoint or .pb explicitly".format(TRAIN_COMMAND))
    checkpoints = project.record("train").checkpoints
    record, chosen = None, which
    if which == "best":
        record = checkpoints.best.get(target)
    if not record:
        record, chosen = checkpoints.latest, "latest"
    if not record:
        raise PrerequisiteError("the train stage ({}) recorded no checkpoint yet".format(train.get("status")),
                                hint="run `{}` until it saves one".format(TRAIN_COMMAND))
    prefix = verify_checkpoint(project, record, "checkpoint")
    return {"prefix": prefix, "step": int(record["step"]), "chosen": chosen, "record": record,
            "network": trained_network(project)}


def user_checkpoint(path) -> Dict[str, Any]:
    """A checkpoint the user named: missing is exit 3, unreadable is exit 3."""
    prefix = resolve_user_checkpoint(path)
    variables = checkpoint_variables(prefix)
    step = step_of(prefix)
    return {"prefix": prefix, "step": step if step >= 0 else None, "chosen": "path", "variables": variables,
            "network": None}  # found in the checkpoint itself: it may come from anywhere
