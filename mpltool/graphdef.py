"""What an inference GraphDef must not contain, and the one reader of GraphDef files.

freeze's check (exit 7) and convert's pre-check both judge a graph by RULES, so a .pb that one refuses
the other refuses for the same reason. TensorFlow is imported only to parse a file: the rules are plain
data, usable on a host without it.
"""

import warnings
from collections import OrderedDict
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from mpltool.errors import InvalidInputError


class Rule(NamedTuple):
    """Op types a deployable inference graph must not contain, and why (`reason` is shown to the user)."""

    name: str
    reason: str
    exact: Tuple[str, ...] = ()
    prefixes: Tuple[str, ...] = ()
    parts: Tuple[str, ...] = ()

    def matches(self, op: str) -> bool:
        return op in self.exact or op.startswith(self.prefixes) or any(part in op for part in self.parts)


# First match wins: RefSwitch is a reference op before a control-flow one, RandomShuffleQueueV2 and
# RandomDataset are input pipelines before random ops.
RULES = (
    Rule("reference", "reference (training-state) op", parts=("Ref",)),
    Rule("control_flow", "control-flow op (freeze with training=False as a Python bool)",
         exact=("Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond",
                "If", "StatelessIf", "While", "StatelessWhile", "Case", "StatelessCase")),
    Rule("input_pipeline", "input-pipeline op (feed a Placeholder instead)",
         parts=("Iterator", "Dataset", "Queue", "Reader")),
    Rule("random", "random op (dropout or noise left in the graph)",
         exact=("TruncatedNormal", "ParameterizedTruncatedNormal", "Multinomial"),
         prefixes=("Random", "StatelessRandom", "StatelessTruncatedNormal", "StatelessParameterizedTruncatedNormal",
                   "StatelessMultinomial")),
    Rule("placeholder_default", "placeholder with a default (a training switch left in the graph)",
         exact=("PlaceholderWithDefault",)),
    Rule("checkpoint", "checkpoint op (freeze keeps only the inference subgraph)",
         exact=("SaveV2", "RestoreV2", "Save", "Restore", "SaveSlices", "RestoreSlice", "MergeV2Checkpoints",
                "ShardedFilename", "ShardedFilespec")),
    Rule("state", "variable or training-state op (variables must be constants)",
         exact=("IsVariableInitialized", "TemporaryVariable", "DestroyTemporaryVariable", "DestroyResourceOp",
                "CountUpTo"),
         prefixes=("Variable", "VarHandle", "VarIsInitialized", "ReadVariable", "Assign", "Apply", "SparseApply",
                   "Resource")),
)

# The placeholder ops; only the graph's input may be one (any other is an unfed input or a training flag).
PLACEHOLDER_OPS = ("Placeholder", "PlaceholderV2")

MAX_NODES_SHOWN = 3


class Offence(NamedTuple):
    """Nodes of one op type a deployable graph must not have (names in graph order)."""

    op: str
    reason: str
    nodes: Tuple[str, ...]


def rule_for(op: str) -> Optional[Rule]:
    for rule in RULES:
        if rule.matches(op):
            return rule
    return None


def _all_nodes(graph_def) -> Iterable[Tuple[str, str]]:
    """(op, name) of every node, function bodies included (`<function>/<node>`): a forbidden op hidden in
    a function is still executed."""
    for node in graph_def.node:
        yield node.op, node.name
    for function in graph_def.library.function:
        for node in function.node_def:
            yield node.op, "{}/{}".format(function.signature.name, node.name)


def forbidden_ops(graph_def) -> List[Offence]:
    """Every op type of `graph_def` that RULES forbid, sorted by op."""
    found = OrderedDict()  # type: OrderedDict
    for op, name in _all_nodes(graph_def):
        if rule_for(op) is not None:
            found.setdefault(op, []).append(name)
    return [Offence(op, rule_for(op).reason, tuple(found[op])) for op in sorted(found)]


def extra_placeholders(graph_def, input_name: str) -> List[Offence]:
    """Placeholders other than the input, sorted by op: each is an input nobody will feed."""
    found = OrderedDict()  # type: OrderedDict
    for node in graph_def.node:
        if node.op in PLACEHOLDER_OPS and node.name != input_name:
            found.setdefault(node.op, []).append(node.name)
    reason = "placeholder other than the input {!r} (a training flag or an input nobody feeds)".format(input_name)
    return [Offence(op, reason, tuple(found[op])) for op in sorted(found)]


def names_text(names: Sequence[str], shown: int = MAX_NODES_SHOWN) -> str:
    text = ", ".join(names[:shown])
    if len(names) > shown:
        text += " (+{} more)".format(len(names) - shown)
    return text


def offence_message(offence: Offence) -> str:
    """The one wording of an offence, so freeze and convert say the same thing."""
    return "{} is a {}: {}".format(offence.op, offence.reason, names_text(offence.nodes))


# -- the reader ---------------------------------------------------------------------------------------

_HINT = "pass a frozen .pb such as the one `mpltool freeze` wrote"


def read_graph_def(path, required_nodes: Sequence[str] = ()) -> "tf.GraphDef":  # noqa: F821
    """The GraphDef in the file at `path`; every way it is not one is exit 3 naming the file."""
    try:
        with open(str(path), "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidInputError("frozen graph {} not found".format(path))
    except IsADirectoryError:
        raise InvalidInputError("frozen graph {} is a directory, not a .pb file".format(path))
    except OSError as exc:
        raise InvalidInputError("cannot read frozen graph {}: {}".format(path, exc.strerror or exc))
    return parse_graph_def(data, str(path), required_nodes)


def parse_graph_def(data: bytes, what: str, required_nodes: Sequence[str] = ()) -> "tf.GraphDef":  # noqa: F821
    """`data` as a GraphDef with nodes (and the `required_nodes`), or exit 3 naming `what`."""
    from mpltool.tfv1 import tf

    if not data:
        raise InvalidInputError("{} is empty, not a TensorFlow GraphDef (.pb)".format(what), hint=_HINT)
    graph_def = tf.GraphDef()
    with warnings.catch_warnings(record=True) as caught:
        # The C++ protobuf stops early on garbage with only a RuntimeWarning ("Not all data was converted"):
        # a partial parse is as invalid as a failed one.
        warnings.simplefilter("always")
        try:
            consumed = graph_def.ParseFromString(data)
        except Exception:  # DecodeError and others on garbage
            consumed = -1
    if caught or (consumed is not None and consumed != len(data)):
        raise InvalidInputError("{} is not a TensorFlow GraphDef (.pb): protobuf cannot parse it".format(what),
                                hint=_HINT)
    if not graph_def.node:
        raise InvalidInputError("{} is not a TensorFlow GraphDef (.pb): it holds no nodes".format(what), hint=_HINT)
    opless = sum(1 for node in graph_def.node if not node.op)
    if opless:  # a few stray bytes can parse as a node: a real one always has an op
        raise InvalidInputError("{} is not a TensorFlow GraphDef (.pb): {} of its {} node(s) have no op".format(
            what, opless, len(graph_def.node)), hint=_HINT)
    names = {node.name for node in graph_def.node}
    lacking = [name for name in required_nodes if name not in names]
    if lacking:
        raise InvalidInputError("{} has no node named {} (expected a graph frozen by `mpltool freeze`)".format(
            what, " or ".join(repr(n) for n in lacking)))
    return graph_def
