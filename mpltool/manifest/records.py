"""Typed views of the stage records: what each stage writes beside the common fields, read by name
instead of by string keys.

The manifest's dicts stay the truth (they are what is written and hashed); a record class wraps one and
answers with the right type, or an empty one, for whatever an earlier mpltool left out, so no reader
needs `(record.get("x") or {}).get("y")`. `Project.record(name)` gives the typed record of a stage.
"""

from typing import Any, Dict, List, Optional


def _dict(value) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value) -> List[Any]:
    return value if isinstance(value, list) else []


class StageRecord:
    """The fields every stage records (manifest/__init__.py lists them)."""

    def __init__(self, name: str, raw: Optional[Dict[str, Any]]):
        self.name = name
        self.raw = _dict(raw)

    def __bool__(self) -> bool:
        return bool(self.raw)

    status = property(lambda self: self.raw.get("status"))
    started = property(lambda self: self.raw.get("started"))
    ended = property(lambda self: self.raw.get("ended"))
    error = property(lambda self: self.raw.get("error"))
    params = property(lambda self: _dict(self.raw.get("params")))
    inputs = property(lambda self: _dict(self.raw.get("inputs")))
    outputs = property(lambda self: _dict(self.raw.get("outputs")))
    metrics = property(lambda self: _dict(self.raw.get("metrics")))

    @property
    def done(self) -> bool:
        return self.status == "done"

    def output(self, key: str) -> Dict[str, Any]:
        """The file record of output `key` ({} when there is none)."""
        return _dict(self.outputs.get(key))

    def input(self, key: str) -> Dict[str, Any]:
        return _dict(self.inputs.get(key))

    def section(self, key: str) -> Dict[str, Any]:
        """A stage-specific mapping of the record ({} when absent)."""
        return _dict(self.raw.get(key))


class DataRecord(StageRecord):
    source = property(lambda self: self.raw.get("source"))  # None: a record from before sources were named
    files = property(lambda self: [f for f in _list(self.raw.get("files")) if isinstance(f, dict)])
    split = property(lambda self: _dict(self.raw.get("split")))


class AlgorithmRecord:
    """What training recorded of its algorithm: the networks it built, which are evaluated, the default."""

    def __init__(self, raw):
        self.raw = _dict(raw)

    name = property(lambda self: self.raw.get("name"))
    networks = property(lambda self: list(_list(self.raw.get("networks"))))
    eval_targets = property(lambda self: list(_list(self.raw.get("eval_targets"))))
    default_target = property(lambda self: self.raw.get("default_target"))


class Checkpoints:
    def __init__(self, raw):
        self.raw = _dict(raw)

    latest = property(lambda self: _dict(self.raw.get("latest")))
    best = property(lambda self: {k: v for k, v in _dict(self.raw.get("best")).items() if isinstance(v, dict)})
    phases = property(lambda self: {k: v for k, v in _dict(self.raw.get("phases")).items() if isinstance(v, dict)})


class TrainRecord(StageRecord):
    recipe = property(lambda self: self.raw.get("recipe"))
    overrides = property(lambda self: _dict(self.raw.get("overrides")))
    model = property(lambda self: self.raw.get("model"))
    device = property(lambda self: self.raw.get("device"))
    replicas = property(lambda self: self.raw.get("replicas"))
    steps_done = property(lambda self: int(self.raw.get("steps_done") or 0))
    num_train_steps = property(lambda self: self.raw.get("num_train_steps"))
    algorithm = property(lambda self: AlgorithmRecord(self.raw.get("algorithm")))
    network = property(lambda self: _dict(self.raw.get("network")))
    checkpoints = property(lambda self: Checkpoints(self.raw.get("checkpoints")))

    @property
    def algorithm_name(self) -> Optional[str]:
        """The algorithm as described, else as the params name it (None: the default algorithm's)."""
        return self.algorithm.name or self.params.get("algorithm")


class EvalRecord(StageRecord):
    source = property(lambda self: _dict(self.raw.get("source")))  # kind, path | target, prefix, step, chosen


class ExportedRecord(StageRecord):
    """freeze and export: a model file checked against what it came from."""

    source = property(lambda self: _dict(self.raw.get("source")))
    io = property(lambda self: _dict(self.raw.get("io")))
    parity = property(lambda self: _dict(self.raw.get("parity")))


class ConvertRecord(StageRecord):
    precheck = property(lambda self: _dict(self.raw.get("precheck")))
    io = property(lambda self: _dict(self.raw.get("io")))
    command = property(lambda self: self.raw.get("command"))


RECORD_TYPES = {"data": DataRecord, "train": TrainRecord, "eval": EvalRecord, "freeze": ExportedRecord,
                "export": ExportedRecord, "convert": ConvertRecord, "convert-check": ConvertRecord}


def typed(name: str, raw: Optional[Dict[str, Any]]) -> StageRecord:
    """The typed record of stage `name` (an empty one, false in a test, when there is none)."""
    return RECORD_TYPES.get(name, StageRecord)(name, raw)
