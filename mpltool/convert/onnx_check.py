"""Offline pre-check of an ONNX model for `convert --model X.onnx` (atc --framework=5), in pure Python.

The file is read by mpltool/models/onnx_file.py (no `onnx` extra needed); the op table, opsets and input
dtypes are mpltool/models/verify.py's. The check mirrors the
GraphDef one (precheck.py) and returns a report of the same shape:
- every node's op type must be in ATC_ONNX_SUPPORTED_OPS, in the default (ai.onnx) domain;
- the ai.onnx opset must be one ATC reads (ATC_ONNX_OPSETS);
- exactly one graph input that is not an initializer, float32/float16/uint8/int32/int64/bool, with a
  static shape (or one given), and the requested outputs among the graph's outputs.
"""

from collections import Counter, OrderedDict
from typing import Any, Dict, List, Optional

from mpltool.models.onnx_file import graph_inputs
from mpltool.models.verify import ATC_INPUT_DTYPES, ATC_ONNX_OPSETS, ATC_ONNX_SUPPORTED_OPS, DEFAULT_DOMAINS


def _problem(kind: str, message: str, op: Optional[str] = None, nodes=()) -> Dict[str, Any]:
    return {"kind": kind, "op": op, "nodes": list(nodes), "message": message}


def _names(items, count: int = 3) -> str:
    items = list(items)
    shown = ", ".join(items[:count])
    return shown + (", ... ({} more)".format(len(items) - count) if len(items) > count else "")


def precheck_onnx(model: Dict[str, Any], input_name: str, input_shape=None, output_names=None) -> Dict[str, Any]:
    """The ONNX counterpart of precheck.precheck_graph: same report keys (ok, nodes, op_counts, input,
    outputs, problems) plus the opsets."""
    problems = []  # type: List[Dict[str, Any]]
    by_op = OrderedDict()  # type: Dict[str, List[str]]
    for node in model["nodes"]:
        key = node["op"] if node["domain"] in DEFAULT_DOMAINS else "{}:{}".format(node["domain"], node["op"])
        by_op.setdefault(key, []).append(node["name"] or "({})".format(node["op"]))
    for op in sorted(by_op):
        if op not in ATC_ONNX_SUPPORTED_OPS:
            problems.append(_problem("unsupported_op", "{} is not in the ATC ONNX op list: {}".format(
                op, _names(by_op[op])), op=op, nodes=by_op[op]))
    low, high = ATC_ONNX_OPSETS
    default_opset = next((v for d, v in model["opsets"].items() if d in DEFAULT_DOMAINS), None)
    if default_opset is None or not low <= default_opset <= high:
        problems.append(_problem("opset", "the model's ai.onnx opset is {}; ATC reads opsets {} to {}".format(
            default_opset, low, high)))
    inputs = {i["name"]: i for i in graph_inputs(model)}
    info = {"name": input_name, "dtype": None, "shape": None, "input_shape": None}
    extra = [name for name in inputs if name != input_name]
    if extra:
        problems.append(_problem("extra_input", "inputs other than {!r}: {}".format(input_name, _names(extra)),
                                 nodes=extra))
    if input_name not in inputs:
        problems.append(_problem("input", "input {!r} is not an input of the model".format(input_name)))
    else:
        info.update(dtype=inputs[input_name]["dtype"], shape=inputs[input_name]["shape"])
        if info["dtype"] not in ATC_INPUT_DTYPES:
            problems.append(_problem("input", "input {!r} has dtype {}; ATC takes {}".format(
                input_name, info["dtype"], ", ".join(ATC_INPUT_DTYPES)), nodes=[input_name]))
        graph_shape = info["shape"]
        if input_shape is not None:
            wanted = [int(d) for d in input_shape]
            if any(d <= 0 for d in wanted):
                problems.append(_problem("input", "input_shape {} for {!r} is not fully static".format(
                    wanted, input_name)))
            elif graph_shape is not None and (len(graph_shape) != len(wanted) or any(
                    g not in (-1, w) for g, w in zip(graph_shape, wanted))):
                problems.append(_problem("input", "input_shape {} does not fit the model's {} shape {}".format(
                    wanted, input_name, graph_shape), nodes=[input_name]))
            else:
                info["input_shape"] = wanted
        elif graph_shape is None or any(d < 0 for d in graph_shape):
            problems.append(_problem("input", "input {!r} has no static shape ({}) and no input_shape was given"
                                     .format(input_name, "unknown rank" if graph_shape is None else graph_shape),
                                     nodes=[input_name]))
        else:
            info["input_shape"] = list(graph_shape)
    outputs = list(OrderedDict.fromkeys(_tensor_base(n) for n in (output_names or [])))
    available = set(o["name"] for o in model["outputs"]) | set(n["name"] for n in model["nodes"])
    missing = [n for n in outputs if n not in available]
    if missing:
        problems.append(_problem("output", "output(s) not in the model: {}".format(_names(missing)), nodes=missing))
    return {
        "ok": not problems,
        "nodes": len(model["nodes"]),
        "op_counts": OrderedDict(sorted(Counter(n["op"] for n in model["nodes"]).items())),
        "opsets": dict(model["opsets"]),
        "input": info,
        "outputs": outputs,
        "problems": problems,
    }


def _tensor_base(name: str) -> str:
    """`probs:0` -> `probs` (the exported model's outputs are named without the index)."""
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name
