"""Freezing a restored inference graph, and the checks a frozen graph must pass before anyone deploys it.

The checks answer the failures peers' users hit (reference/peers.md §5): training state frozen in
(Variable/Assign/Ref ops: "expected float_ref"), an is_training placeholder leaving Switch/Merge that
converters reject, dropout or other randomness left in, input pipelines (iterators) baked in. And the
Ascend port's bug -- a .pb holding the initial weights -- is checked directly: every constant that was
a variable must equal that variable's value in the checkpoint.
"""

from typing import Iterable, List

import numpy as np

from mpltool.errors import VerificationError
from mpltool.models.inference import INPUT_NAME, OUTPUT_NAMES
from mpltool.tfv1 import tf

PLACEHOLDER_OPS = ("Placeholder", "PlaceholderV2", "PlaceholderWithDefault")
FORBIDDEN_OP_PREFIXES = ("Variable", "VarHandle", "ReadVariable", "Assign", "Random", "StatelessRandom")
FORBIDDEN_OP_PARTS = ("Ref", "Iterator")
FORBIDDEN_OPS = ("Switch", "Merge", "TruncatedNormal", "ParameterizedTruncatedNormal", "Multinomial")


def freeze_graph_def(session, graph) -> "tf.GraphDef":
    """Variables -> constants, keeping only what `logits` and `probs` need (`input` and the weights)."""
    constant = tf.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), list(OUTPUT_NAMES))
    return tf.graph_util.extract_sub_graph(constant, list(OUTPUT_NAMES))


def _all_nodes(graph_def) -> Iterable:
    for node in graph_def.node:
        yield node
    for function in graph_def.library.function:
        for node in function.node_def:
            yield node


def is_forbidden_op(op: str) -> bool:
    return (op in FORBIDDEN_OPS or op.startswith(FORBIDDEN_OP_PREFIXES)
            or any(part in op for part in FORBIDDEN_OP_PARTS))


def forbidden_ops(graph_def) -> List[str]:
    """`op (node name)` for every node a deployable inference graph must not contain."""
    found = []
    for node in _all_nodes(graph_def):
        if is_forbidden_op(node.op) or (node.op in PLACEHOLDER_OPS and node.name != INPUT_NAME):
            found.append("{} ({})".format(node.op, node.name))
    return found


def check_frozen_graph(graph_def, what: str) -> None:
    """Exit 7 unless the graph is pure inference: only `input` as placeholder, both outputs present."""
    problems = forbidden_ops(graph_def)
    if problems:
        shown = ", ".join(problems[:6]) + (", ... ({} more)".format(len(problems) - 6) if len(problems) > 6 else "")
        raise VerificationError("frozen graph {} contains {} op(s) a deployable graph must not have: {}".format(
            what, len(problems), shown), hint="freeze from an inference graph built with training=False")
    nodes = {node.name: node for node in graph_def.node}
    if INPUT_NAME not in nodes or nodes[INPUT_NAME].op not in PLACEHOLDER_OPS:
        raise VerificationError("frozen graph {} has no placeholder named '{}'".format(what, INPUT_NAME))
    absent = [name for name in OUTPUT_NAMES if name not in nodes]
    if absent:
        raise VerificationError("frozen graph {} lacks output node(s) {}".format(what, ", ".join(absent)))


def check_weights_match_checkpoint(graph_def, prefix: str, variable_names: Iterable[str], what: str) -> int:
    """Prove the frozen constants are the checkpoint's values (not initial ones); returns how many were checked."""
    names = list(variable_names)
    reader = tf.train.NewCheckpointReader(str(prefix))
    constants = {node.name: node for node in graph_def.node if node.op == "Const"}
    missing, differing = [], []
    for name in names:
        node = constants.get(name)
        if node is None:
            missing.append(name)
            continue
        if not np.array_equal(tf.make_ndarray(node.attr["value"].tensor), reader.get_tensor(name)):
            differing.append(name)
    if missing or differing:
        detail = "missing as constants: {}".format(", ".join(missing[:3])) if missing else \
            "different from the checkpoint: {}".format(", ".join(differing[:3]))
        raise VerificationError("frozen graph {} does not carry the checkpoint's weights ({} of {} variables {})"
                                .format(what, len(missing) + len(differing), len(names), detail))
    return len(names)
