"""Offline pre-check of a frozen GraphDef against what ATC accepts, for hosts without a CANN toolkit.

It catches, in seconds and on a laptop, what ATC would reject after minutes on a CANN host: training or
state ops left in by a bad freeze, ops outside ATC's TensorFlow list, an input without a static shape,
output names that are not in the graph. It only reports; the convert stage decides what fails.
"""

import warnings
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mpltool.errors import InvalidInputError

# The TensorFlow ops a CNN classifier needs that ATC converts: a curated subset of Huawei's "Supported
# TensorFlow Operators" list for TF 1.15 (hiascend.com canncommercial/800 apiref/aolapi/operatorlist_00096,
# ascend.md §3). Extend it only from that list.
ATC_TF_SUPPORTED_OPS = frozenset((
    # graph plumbing
    "Const", "Placeholder", "Identity", "IdentityN", "NoOp", "StopGradient", "Snapshot",
    # convolution, normalisation, dense
    "Conv2D", "Conv2DBackpropInput", "Conv3D", "DepthwiseConv2dNative", "BiasAdd",
    "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "MatMul", "BatchMatMul", "BatchMatMulV2",
    "LRN",
    # element-wise math
    "Add", "AddV2", "AddN", "Sub", "Mul", "RealDiv", "Div", "FloorDiv", "FloorMod", "Maximum", "Minimum",
    "SquaredDifference", "Square", "Sqrt", "Rsqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Pow",
    "Floor", "Ceil", "Round", "Sign", "Erf", "ClipByValue",
    # activations
    "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus", "Softsign",
    "Softmax", "LogSoftmax",
    # pooling and reductions
    "AvgPool", "MaxPool", "Mean", "Sum", "Max", "Min", "Prod", "ArgMax", "ArgMin", "TopKV2",
    # padding and shape manipulation
    "Pad", "PadV2", "MirrorPad", "Reshape", "Squeeze", "ExpandDims", "Shape", "Fill", "Tile", "Slice",
    "StridedSlice", "Split", "SplitV", "Pack", "Unpack", "ConcatV2", "Transpose", "Cast", "GatherV2",
    "Range", "ZerosLike", "OnesLike", "BroadcastTo", "SpaceToDepth", "DepthToSpace",
    "ResizeBilinear", "ResizeNearestNeighbor",
    # comparisons and selection
    "Equal", "NotEqual", "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd", "LogicalOr",
    "LogicalNot", "Select", "OneHot",
))

# Input dtypes ATC takes from a TensorFlow graph (ascend.md §3).
ATC_INPUT_DTYPES = ("float16", "float32", "uint8", "int32", "int64", "bool")

# Op types that mean the graph was not frozen for inference (design §7), each with the reason shown to the user.
_CONTROL_FLOW_OPS = ("Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond")
_CHECKPOINT_OPS = ("SaveV2", "RestoreV2", "Save", "Restore", "MergeV2Checkpoints")
_STATE_PREFIXES = ("Variable", "VarHandle", "ReadVariable", "Assign", "Apply", "ResourceApply", "SparseApply")

MAX_NODES_SHOWN = 3


def training_op_reason(op_type: str) -> Optional[str]:
    """Why an op type marks a graph as not frozen for inference, or None."""
    if "Ref" in op_type:
        return "reference (training-state) op"
    if op_type in _CONTROL_FLOW_OPS:
        return "control-flow op (freeze with training=False as a Python bool)"
    if op_type.startswith(("Random", "Stateless")) or op_type in ("TruncatedNormal", "Multinomial"):
        return "random op (dropout or noise left in the graph)"
    if op_type.startswith(("Iterator", "MakeIterator", "OneShotIterator", "QueueDequeue")):
        return "input-pipeline op (feed a Placeholder instead)"
    if op_type == "PlaceholderWithDefault":
        return "placeholder with a default (a training switch left in the graph)"
    if op_type in _CHECKPOINT_OPS:
        return "checkpoint op (freeze keeps only the inference subgraph)"
    if op_type.startswith(_STATE_PREFIXES):
        return "variable or training-state op (variables must be constants)"
    return None


def load_graph_def(path):
    """The GraphDef in a .pb file; anything else is invalid input."""
    path = Path(str(path))
    if not path.is_file():
        raise InvalidInputError("frozen graph {} not found".format(path))
    from mpltool.tfv1 import tf

    graph_def = tf.GraphDef()
    try:
        with warnings.catch_warnings():
            # the pure-Python protobuf only warns "Not all data was converted" on garbage: make it an error
            warnings.simplefilter("error", RuntimeWarning)
            graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError, or that warning
        raise InvalidInputError("{} is not a TensorFlow GraphDef: {}".format(path, exc),
                                hint="pass the frozen .pb that `mpltool freeze` wrote")
    if not graph_def.node:
        raise InvalidInputError("{} holds no graph nodes; it is not a frozen TensorFlow GraphDef".format(path),
                                hint="pass the frozen .pb that `mpltool freeze` wrote")
    return graph_def


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


def _nodes_text(nodes: Sequence[str]) -> str:
    shown = ", ".join(nodes[:MAX_NODES_SHOWN])
    if len(nodes) > MAX_NODES_SHOWN:
        shown += " (+{} more)".format(len(nodes) - MAX_NODES_SHOWN)
    return shown


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
    """Every node's op checked against ATC, the input's shape and the outputs' names; problems grouped by op."""
    input_name = node_name(input_name)
    op_counts = Counter(n.op for n in graph_def.node)
    by_op = OrderedDict()  # type: Dict[str, List[str]]
    for node in graph_def.node:
        by_op.setdefault(node.op, []).append(node.name)
    problems = []  # type: List[Dict[str, Any]]
    for op in sorted(by_op):
        names = by_op[op]
        if op == "Placeholder":
            names = [n for n in names if n != input_name]
            if names:
                problems.append(_problem("extra_placeholder", "Placeholder other than the input {!r}: {}".format(
                    input_name, _nodes_text(names)), op=op, nodes=names))
            continue
        reason = training_op_reason(op)
        if reason:
            problems.append(_problem("training_op", "{} is a {}: {}".format(op, reason, _nodes_text(names)),
                                     op=op, nodes=names))
        elif op not in ATC_TF_SUPPORTED_OPS:
            problems.append(_problem("unsupported_op", "{} is not in the ATC TensorFlow op list: {}".format(
                op, _nodes_text(names)), op=op, nodes=names))
    input_problems, input_info = _input_problems(graph_def, input_name, input_shape)
    problems.extend(input_problems)
    outputs = list(OrderedDict.fromkeys(node_name(n) for n in (output_names or [])))
    names = set(n.name for n in graph_def.node)
    missing = [n for n in outputs if n not in names]
    if missing:
        problems.append(_problem("output", "output node(s) not in the graph: {}".format(_nodes_text(missing)),
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
