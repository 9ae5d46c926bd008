"""Checkpoint files as the manifest knows them: a TF Saver prefix plus the hash of every file behind it.

Layout inside a project: `checkpoints/model.ckpt-<step>` (latest, teacher + student + EMA + optimizer
state), `checkpoints/best-ema/model.ckpt-<step>` and `checkpoints/best-student/model.ckpt-<step>`
(best top-1 so far, as the seed's ckpts/ and ema_ckpts/). Variables are named `teacher/<model>/...`,
`student/<model>/...`, `ema/<model>/...`, so any of the three networks restores from any of them.
"""

from pathlib import Path
from typing import Any, Dict, List

from mpltool.errors import InvalidInputError, PrerequisiteError

TARGETS = ("ema", "student", "teacher")
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
