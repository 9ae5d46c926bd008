"""Offline pre-check of an ONNX model for `convert --model X.onnx` (atc --framework=5), in pure Python.

The file is read with a small protobuf reader of its own (the handful of ModelProto fields the check
needs), so a CANN host converts an .onnx without the `onnx` extra installed. The check mirrors the
GraphDef one (precheck.py) and returns a report of the same shape:
- every node's op type must be in ATC_ONNX_SUPPORTED_OPS, in the default (ai.onnx) domain;
- the ai.onnx opset must be one ATC reads (ATC_ONNX_OPSETS);
- exactly one graph input that is not an initializer, float32/float16/uint8/int32/int64/bool, with a
  static shape (or one given), and the requested outputs among the graph's outputs.
"""

from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mpltool.errors import InvalidInputError

# ONNX op types a CNN classifier exported by tf2onnx uses that ATC converts: a curated subset of Huawei's
# "Supported ONNX Operators" list (hiascend.com CANN 8.0 operator list, ai.onnx domain, opset 11-15).
# It covers what tf2onnx emits for every registered network (WRN, MixMatch ResNet, Caffe AlexNet with LRN
# and grouped convolutions, CIFAR ResNet-18) and common CNN plumbing. Extend it only from that list.
ATC_ONNX_SUPPORTED_OPS = frozenset((
    # graph plumbing
    "Constant", "Identity", "Cast", "Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
    "Concat", "Split", "Slice", "Gather", "Tile", "Expand", "Pad", "ConstantOfShape", "DepthToSpace",
    "SpaceToDepth",
    # convolution, normalisation, dense
    "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "LRN", "MatMul", "Gemm",
    # element-wise math
    "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Neg", "Abs", "Sqrt", "Reciprocal", "Pow", "Exp", "Log",
    "Floor", "Ceil", "Round", "Sign", "Erf", "Clip",
    # activations
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "Tanh", "Softplus", "Softsign",
    "Softmax", "LogSoftmax",
    # pooling and reductions
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax",
    "ReduceMin", "ReduceProd", "ArgMax", "ArgMin", "TopK", "Resize",
    # comparisons and selection
    "Equal", "Greater", "Less", "And", "Or", "Not", "Where",
))
# The ai.onnx opsets ATC reads (CANN 8.0 `--framework` documentation: opset v11 to v15).
ATC_ONNX_OPSETS = (11, 15)
DEFAULT_DOMAINS = ("", "ai.onnx")
# TensorProto.DataType numbers -> names (the ones a classifier input may have, and a few more for messages).
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 8: "string", 9: "bool",
              10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}
ATC_INPUT_DTYPES = ("float16", "float32", "uint8", "int32", "int64", "bool")


def is_onnx_path(path) -> bool:
    return str(path).lower().endswith(".onnx")


# -- a minimal protobuf reader ----------------------------------------------------------------------
def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) of one message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type {}".format(wire))
        if pos > len(data):
            raise ValueError("truncated message")
        yield number, wire, value


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else ""


def _value_info(data: bytes) -> Dict[str, Any]:
    """ValueInfoProto: name (1), type (2) -> TypeProto.tensor_type (1) -> elem_type (1), shape (2) -> dim (1)
    -> dim_value (1) | dim_param (2). Unknown dims are -1; a missing shape is None (unknown rank)."""
    info = {"name": "", "dtype": None, "shape": None}
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            info["name"] = _text(value)
        elif number == 2 and wire == 2:
            for t_number, t_wire, tensor in _fields(value):
                if t_number != 1 or t_wire != 2:
                    continue
                for f_number, f_wire, f_value in _fields(tensor):
                    if f_number == 1 and f_wire == 0:
                        info["dtype"] = ELEM_TYPES.get(f_value, "type {}".format(f_value))
                    elif f_number == 2 and f_wire == 2:
                        dims = []
                        for d_number, d_wire, dim in _fields(f_value):
                            if d_number != 1 or d_wire != 2:
                                continue
                            size = -1
                            for v_number, v_wire, v_value in _fields(dim):
                                if v_number == 1 and v_wire == 0:
                                    size = v_value - (1 << 64) if v_value >= 1 << 63 else v_value
                            dims.append(size if size > 0 else -1)
                        info["shape"] = dims
    return info


def parse_onnx(data: bytes, what: str) -> Dict[str, Any]:
    """{ir_version, opsets {domain: version}, producer, nodes [{name, op, domain}], inputs, outputs,
    initializers} of a serialized ModelProto; anything unreadable is invalid input (exit 3)."""
    model = {"ir_version": None, "opsets": OrderedDict(), "producer": None, "nodes": [], "inputs": [],
             "outputs": [], "initializers": []}
    graph = None
    try:
        for number, wire, value in _fields(data):
            if number == 1 and wire == 0:
                model["ir_version"] = value
            elif number == 2 and wire == 2:
                model["producer"] = _text(value)
            elif number == 3 and wire == 2 and model["producer"]:
                model["producer"] += " " + _text(value)
            elif number == 7 and wire == 2:
                graph = value
            elif number == 8 and wire == 2:
                opset = dict((n, v) for n, _, v in _fields(value))
                model["opsets"][_text(opset.get(1, b""))] = int(opset.get(2, 0))
        if graph is None:
            raise ValueError("no graph")
        for number, wire, value in _fields(graph):
            if wire != 2:
                continue
            if number == 1:
                node = {"name": "", "op": "", "domain": ""}
                for n_number, n_wire, n_value in _fields(value):
                    if n_wire != 2:
                        continue
                    if n_number == 3:
                        node["name"] = _text(n_value)
                    elif n_number == 4:
                        node["op"] = _text(n_value)
                    elif n_number == 7:
                        node["domain"] = _text(n_value)
                model["nodes"].append(node)
            elif number == 5:
                name = dict((n, v) for n, w, v in _fields(value) if w == 2).get(8, b"")
                model["initializers"].append(_text(name))
            elif number == 11:
                model["inputs"].append(_value_info(value))
            elif number == 12:
                model["outputs"].append(_value_info(value))
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise InvalidInputError("{} is not an ONNX model: {}".format(what, exc))
    if not model["nodes"] or model["ir_version"] is None:
        raise InvalidInputError("{} is not an ONNX model: it has no {}".format(
            what, "nodes" if model["ir_version"] is not None else "IR version"))
    return model


def read_onnx(path) -> Dict[str, Any]:
    path = Path(str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError("cannot read ONNX model {}: {}".format(path, exc.strerror or exc))
    if not data:
        raise InvalidInputError("ONNX model {} is empty (0 bytes)".format(path))
    return parse_onnx(data, str(path))


def graph_inputs(model: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The inputs a caller feeds: graph inputs that are not initializers (IR < 4 lists weights as inputs)."""
    weights = set(model["initializers"])
    return [i for i in model["inputs"] if i["name"] not in weights]


def graph_input(model: Dict[str, Any], what: str) -> Dict[str, Any]:
    found = graph_inputs(model)
    if len(found) != 1:
        raise InvalidInputError("{} has {} inputs ({}); a classifier has exactly one".format(
            what, len(found), ", ".join(i["name"] for i in found) or "none"))
    return found[0]


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
