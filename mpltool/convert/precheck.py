"""Offline pre-check of a frozen GraphDef against what ATC accepts, for hosts without a CANN toolkit.

It catches, in seconds and on a laptop, what ATC would reject after minutes on a CANN host: training or
state ops left in by a bad freeze, ops outside ATC's TensorFlow list, an input without a static shape,
output names that are not in the graph. It only reports; the convert stage decides what fails.
"""

from collections import Counter, OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mpltool import graphdef
from mpltool.errors import InvalidInputError
from mpltool.models.verify import ATC_INPUT_DTYPES, ATC_TF_SUPPORTED_OPS


# The one GraphDef reader (convert/stage.py reads the .pb through this name).
load_graph_def = graphdef.read_graph_def


def node_name(tensor: str) -> str:
    """`probs:0` -> `probs`."""
    name = tensor.lstrip("^")
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name


def placeholder_info(node) -> Dict[str, Any]:
    """name, dtype and shape (None for unknown rank, -1 for unknown dims) of a Placeholder node."""
    from mpltool.tfv1 import tf

    dtype = tf.as_dtype(node.attr["dtype"].type).name if "dtype" in node.attr else None
    shape = None
    if "shape" in node.attr and not node.attr["shape"].shape.unknown_rank:
        shape = [int(d.size) for d in node.attr["shape"].shape.dim]
    return {"name": node.name, "dtype": dtype, "shape": shape}


def graph_input(graph_def) -> Dict[str, Any]:
    """The one Placeholder of a frozen graph, for a .pb given without a freeze record."""
    found = [placeholder_info(n) for n in graph_def.node if n.op == "Placeholder"]
    if len(found) != 1:
        raise InvalidInputError("the graph has {} Placeholder nodes ({}); a frozen classifier has exactly one input"
                                .format(len(found), ", ".join(p["name"] for p in found) or "none"))
    return found[0]


def _problem(kind: str, message: str, op: Optional[str] = None, nodes: Sequence[str] = ()) -> Dict[str, Any]:
    return {"kind": kind, "op": op, "nodes": list(nodes), "message": message}


def _input_problems(graph_def, input_name: str, input_shape) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    nodes = {n.name: n for n in graph_def.node}
    node = nodes.get(input_name)
    info = {"name": input_name, "dtype": None, "shape": None, "input_shape": None}
    if node is None:
        return [_problem("input", "input node {!r} is not in the graph".format(input_name))], info
    if node.op != "Placeholder":
        return [_problem("input", "input node {!r} is a {}, not a Placeholder".format(input_name, node.op),
                         op=node.op, nodes=[input_name])], info
    info.update(placeholder_info(node))
    problems = []
    if info["dtype"] not in ATC_INPUT_DTYPES:
        problems.append(_problem("input", "input {!r} has dtype {}; ATC takes {}".format(
            input_name, info["dtype"], ", ".join(ATC_INPUT_DTYPES)), op="Placeholder", nodes=[input_name]))
    graph_shape = info["shape"]
    if input_shape is not None:
        wanted = [int(d) for d in input_shape]
        if any(d <= 0 for d in wanted):
            problems.append(_problem("input", "input_shape {} for {!r} is not fully static".format(wanted, input_name)))
        elif graph_shape is not None and (len(graph_shape) != len(wanted) or any(
                g not in (-1, w) for g, w in zip(graph_shape, wanted))):
            problems.append(_problem("input", "input_shape {} does not fit the graph's {} shape {}".format(
                wanted, input_name, graph_shape), op="Placeholder", nodes=[input_name]))
        else:
            info["input_shape"] = wanted
    elif graph_shape is None or any(d < 0 for d in graph_shape):
        problems.append(_problem("input", "input {!r} has no static shape ({}) and no input_shape was given".format(
            input_name, "unknown rank" if graph_shape is None else graph_shape), op="Placeholder", nodes=[input_name]))
    else:
        info["input_shape"] = list(graph_shape)
    return problems, info


def precheck_graph(graph_def, input_name: str, input_shape=None, output_names=None) -> Dict[str, Any]:
    """Every node's op checked against mpltool.graphdef's rules (function bodies too, as freeze does) and
    against ATC, the input's shape and the outputs' names; problems grouped by op."""
    input_name = node_name(input_name)
    op_counts = Counter(n.op for n in graph_def.node)
    by_op = OrderedDict()  # type: Dict[str, List[str]]
    for node in graph_def.node:
        by_op.setdefault(node.op, []).append(node.name)
    extra = {o.op: o for o in graphdef.extra_placeholders(graph_def, input_name)}
    forbidden = {o.op: o for o in graphdef.forbidden_ops(graph_def)}
    problems = []  # type: List[Dict[str, Any]]
    for op in sorted(set(by_op) | set(forbidden)):
        if op in extra:
            problems.append(_problem("extra_placeholder", graphdef.offence_message(extra[op]), op=op,
                                     nodes=extra[op].nodes))
        if op == "Placeholder":
            continue
        if op in forbidden:
            problems.append(_problem("training_op", graphdef.offence_message(forbidden[op]), op=op,
                                     nodes=forbidden[op].nodes))
        elif op not in ATC_TF_SUPPORTED_OPS:
            problems.append(_problem("unsupported_op", "{} is not in the ATC TensorFlow op list: {}".format(
                op, graphdef.names_text(by_op[op])), op=op, nodes=by_op[op]))
    input_problems, input_info = _input_problems(graph_def, input_name, input_shape)
    problems.extend(input_problems)
    outputs = list(OrderedDict.fromkeys(node_name(n) for n in (output_names or [])))
    names = set(n.name for n in graph_def.node)
    missing = [n for n in outputs if n not in names]
    if missing:
        problems.append(_problem("output", "output node(s) not in the graph: {}".format(graphdef.names_text(missing)),
                                 nodes=missing))
    return {
        "ok": not problems,
        "nodes": len(graph_def.node),
        "op_counts": OrderedDict(sorted(op_counts.items())),
        "input": input_info,
        "outputs": outputs,
        "problems": problems,
    }


def problems_line(problems: Sequence[Dict[str, Any]]) -> str:
    return "; ".join(p["message"] for p in problems)
