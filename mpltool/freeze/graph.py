"""Freezing a restored inference graph, and the checks a frozen graph must pass before anyone deploys it.

The checks answer the failures peers' users hit (docs/atc.md §4): training state frozen in
(Variable/Assign/Ref ops: "expected float_ref"), an is_training placeholder leaving Switch/Merge that
converters reject, dropout or other randomness left in, input pipelines (iterators) baked in -- by the
rules of mpltool/graphdef.py, which convert's pre-check applies too. And the
Ascend port's bug -- a .pb holding the initial weights -- is checked directly: every constant that was
a variable must equal that variable's value in the checkpoint.
"""

from typing import Iterable

import numpy as np

from mpltool import graphdef
from mpltool.errors import VerificationError
from mpltool.models.inference import INPUT_NAME, OUTPUT_NAMES
from mpltool.tfv1 import tf

MAX_OPS_SHOWN = 4
GRADIENT_ATTR = "_gradient_op_type"


def freeze_graph_def(session, graph) -> "tf.GraphDef":
    """Variables -> constants, keeping only what `logits` and `probs` need (`input` and the weights)."""
    constant = tf.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), list(OUTPUT_NAMES))
    frozen = tf.graph_util.extract_sub_graph(constant, list(OUTPUT_NAMES))
    for node in frozen.node:  # training-only metadata (layers.leaky_relu's gradient): no converter needs it
        if GRADIENT_ATTR in node.attr:
            del node.attr[GRADIENT_ATTR]
    return frozen


def check_frozen_graph(graph_def, what: str) -> None:
    """Exit 7 unless the graph is pure inference by mpltool.graphdef's rules (the ones convert's pre-check
    applies), `input` is its only placeholder and both outputs are present."""
    offences = graphdef.forbidden_ops(graph_def) + graphdef.extra_placeholders(graph_def, INPUT_NAME)
    if offences:
        shown = "; ".join(graphdef.offence_message(o) for o in offences[:MAX_OPS_SHOWN])
        if len(offences) > MAX_OPS_SHOWN:
            shown += "; ... (+{} more op types)".format(len(offences) - MAX_OPS_SHOWN)
        raise VerificationError("frozen graph {} contains {} node(s) a deployable graph must not have: {}".format(
            what, sum(len(o.nodes) for o in offences), shown),
            hint="freeze from an inference graph built with training=False")
    nodes = {node.name: node for node in graph_def.node}
    if INPUT_NAME not in nodes or nodes[INPUT_NAME].op != "Placeholder":
        found = " ({!r} is a {})".format(INPUT_NAME, nodes[INPUT_NAME].op) if INPUT_NAME in nodes else ""
        raise VerificationError("frozen graph {} has no placeholder named '{}'{}".format(what, INPUT_NAME, found))
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
