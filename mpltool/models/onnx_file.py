"""The .onnx reader: the handful of ModelProto fields the checks need, read by a small protobuf reader of
its own, so a CANN host pre-checks and converts an .onnx without the `onnx` extra installed."""

from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Tuple

from mpltool.errors import InvalidInputError

# TensorProto.DataType numbers -> names (the ones a classifier input may have, and a few more for messages).
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 8: "string", 9: "bool",
              10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


def is_onnx_path(path) -> bool:
    return str(path).lower().endswith(".onnx")


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
