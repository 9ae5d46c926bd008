"""Which model file to open, and opening it: the one answer eval, freeze, export, convert, predict and the
report share.

A model is named as a user names it: nothing (the stage's default), `ckpt` (the best checkpoint train
recorded for the target, else its latest), `latest`, `frozen` (the .pb freeze recorded), `exported` (the
.onnx export recorded), `converted` (the .om convert recorded), or a path: a checkpoint (prefix, .index, or
directory), a frozen `.pb`, an `.onnx`, an `.om` (run on Ascend device $ASCEND_DEVICE_ID, default 0,
through CANN's runtime: models/om_runtime.py).
Recorded ones are proven to be the recorded files (sha256; changed is exit 4); a path is read as it is.
`open_model` gives the model behind an Artifact with one interface (models/inference.InferenceModel).
"""

import collections
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from mpltool.errors import InvalidInputError, PrerequisiteError, UsageError
from mpltool.manifest.stages import command

KINDS = ("checkpoint", "pb", "onnx", "om")
RECORDED_CHECKPOINTS = {"ckpt": "best", "best": "best", "latest": "latest"}
# Recorded model files: name -> (stage, output key, kind).
RECORDED_FILES = {"frozen": ("freeze", "pb", "pb"), "exported": ("export", "onnx", "onnx"),
                  "converted": ("convert", "om", "om")}
SUFFIXES = {".pb": "pb", ".onnx": "onnx", ".om": "om"}
FILE_WORDS = {"pb": "frozen graph", "onnx": "ONNX model", "om": "offline model"}
DEVICE_VARIABLE = "ASCEND_DEVICE_ID"  # the Ascend scripts' variable: which device runs an .om

Artifact = collections.namedtuple("Artifact", [
    "kind",       # checkpoint | pb | onnx
    "path",       # the checkpoint prefix, or the file
    "target",     # the network of a checkpoint (None for a file: it holds one)
    "step",       # a checkpoint's step (None when unknown)
    "chosen",     # best | latest | path | the stage whose record named it
    "record",     # the manifest's record of it (a checkpoint record or a file record), None for a path
    "network",    # {model, num_classes, input_spec} as training recorded it, None when read from the file
    "variables",  # a checkpoint's name -> shape map
])


def kind_of(path) -> str:
    """The kind a path names by its suffix (anything else is a checkpoint)."""
    return SUFFIXES.get(Path(str(path)).suffix.lower(), "checkpoint")


def resolve(project, model=None, target: Optional[str] = None, kinds: Sequence[str] = KINDS,
            default: str = "ckpt", what: str = "the model") -> Artifact:
    """The Artifact `model` names (None: `default`), of one of `kinds`; `target` picks a checkpoint's
    network (checked against what training built)."""
    from mpltool.checkpoints import checkpoint_variables, recorded_checkpoint, resolve_target, user_checkpoint

    name = default if model is None else str(model)
    if name in RECORDED_FILES:
        stage, key, kind = RECORDED_FILES[name]
        _check_kind(kind, kinds, what)
        record = project.require_stage(stage, command(stage))
        file_record = (record.get("outputs") or {}).get(key)
        if not file_record:
            raise PrerequisiteError("the {} record lacks its {}".format(stage, key),
                                    hint="re-run `{}`".format(command(stage)))
        path = project.verify_file(file_record, FILE_WORDS[kind])
        return Artifact(kind, path, None, None, "{} record".format(stage), file_record, None, None)
    if name in RECORDED_CHECKPOINTS:
        _check_kind("checkpoint", kinds, what)
        target = resolve_target(project, target)
        source = recorded_checkpoint(project, target, RECORDED_CHECKPOINTS[name])
        return Artifact("checkpoint", source["prefix"], target, source["step"], source["chosen"], source["record"],
                        source["network"], checkpoint_variables(source["prefix"]))
    kind = kind_of(name)
    _check_kind(kind, kinds, what)
    if kind != "checkpoint":
        if target is not None:
            raise UsageError("--target chooses a network of a checkpoint; {} holds one network".format(name))
        path = Path(name).expanduser().absolute()
        if not path.is_file():
            raise InvalidInputError("no {} at {}".format(FILE_WORDS[kind], name))
        return Artifact(kind, path, None, None, "path", None, None, None)
    target = resolve_target(project, target)
    source = user_checkpoint(name)
    return Artifact("checkpoint", source["prefix"], target, source["step"], "path", None, None, source["variables"])


def _check_kind(kind: str, kinds: Sequence[str], what: str) -> None:
    if kind not in kinds:
        names = {"checkpoint": "a checkpoint", "pb": "a frozen graph (.pb)", "onnx": "an ONNX model (.onnx)",
                 "om": "an Ascend offline model (.om)"}
        raise UsageError("{} must be {}, not {}".format(what, " or ".join(names[k] for k in kinds), names[kind]))


def from_record(project, source: Dict[str, Any], inputs: Dict[str, Any]) -> Artifact:
    """The Artifact a stage record describes having read (eval's `source` and `inputs`): what the
    report opens again to show eval's predictions."""
    from mpltool.checkpoints import trained_network

    kind = source.get("kind")
    if kind in ("pb", "onnx", "om"):
        record = inputs.get(kind) if isinstance(inputs.get(kind), dict) else None
        return Artifact(kind, project.path(source["path"]), None, None, source.get("chosen") or "path", record, None,
                        None)
    record = inputs.get("checkpoint") if isinstance(inputs.get("checkpoint"), dict) else None
    network = None if source.get("chosen") == "path" else trained_network(project)
    return Artifact("checkpoint", str(project.path(source["prefix"])), source.get("target"), source.get("step"),
                    source.get("chosen"), record, network, None)


def describe(project, artifact: Artifact) -> Dict[str, Any]:
    """What a stage records of the model it read: kind and path (+ sha256), or target, prefix, step, chosen."""
    if artifact.kind == "checkpoint":
        return {"kind": "checkpoint", "target": artifact.target, "prefix": project.relative(artifact.path),
                "step": artifact.step, "chosen": artifact.chosen}
    record = artifact.record or project.file_record(artifact.path)
    return {"kind": artifact.kind, "path": record["path"], "sha256": record["sha256"], "chosen": artifact.chosen}


def input_record(project, artifact: Artifact) -> Dict[str, Any]:
    """The stage input that pins it: the recorded checkpoint or file record, else one made now."""
    from mpltool.checkpoints import checkpoint_record

    if artifact.record:
        return artifact.record
    if artifact.kind == "checkpoint":
        return checkpoint_record(project, artifact.path, -1 if artifact.step is None else artifact.step)
    return project.file_record(artifact.path)


def open_model(artifact: Artifact, batch_size: Optional[int] = None, any_batch: bool = True):
    """The InferenceModel behind the artifact: a checkpoint's inference graph (at `batch_size`, None: any),
    a frozen graph (`any_batch`: fed at any batch, else as written), an .onnx in onnxruntime."""
    from mpltool.checkpoints import checkpoint_variables
    from mpltool.models.inference import CheckpointModel, FrozenModel, read_graph_def

    if artifact.kind == "pb":
        return FrozenModel(read_graph_def(artifact.path), str(artifact.path), any_batch=any_batch)
    if artifact.kind == "onnx":
        from mpltool.models.onnx_runtime import OnnxModel

        return OnnxModel(artifact.path, str(artifact.path))
    if artifact.kind == "om":
        from mpltool.models.om_runtime import OmModel

        return OmModel(artifact.path, device_id())
    variables = artifact.variables if artifact.variables is not None else checkpoint_variables(artifact.path)
    return CheckpointModel(artifact.path, artifact.target, variables, batch_size=batch_size, network=artifact.network)


def device_id() -> int:
    """The Ascend device an .om runs on: $ASCEND_DEVICE_ID, else 0."""
    import os

    text = os.environ.get(DEVICE_VARIABLE, "0").strip() or "0"
    if not text.isdigit():
        raise UsageError("{}={!r} is not a device number".format(DEVICE_VARIABLE, text))
    return int(text)
