"""The ONNX stack (the optional extra `onnx`: tf2onnx, onnx, onnxruntime): finding it, converting a frozen
GraphDef with it, and running an .onnx like the frozen graph runs (`predict` -> logits).

Nothing here is imported at mpltool's start: the stack is optional, and a missing (or broken) one is
exit 5 naming the extra to install.
"""

import importlib
import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mpltool.errors import InvalidInputError, ToolFailedError, ToolMissingError, VerificationError, first_line
from mpltool.models.inference import INPUT_NAME, OUTPUT_NAMES, InferenceModel

EXTRA = "onnx"
STACK = ("tf2onnx", "onnx", "onnxruntime")
INSTALL_HINT = "install the extra `{0}`: pip install -e '.[{0}]' in a checkout, `make venv` (it is in the " \
               "default EXTRAS), or pip install 'mpltool[{0}]'".format(EXTRA)
# tf2onnx's input and output tensors, and the names they get in the .onnx (atc's --input_shape and
# --out_nodes cannot take a name with a colon in it).
# The .onnx keeps the frozen graph's names (models/inference.py), without TensorFlow's ":0".
ONNX_INPUT = INPUT_NAME
ONNX_OUTPUTS = OUTPUT_NAMES
TF_INPUT = INPUT_NAME + ":0"
TF_OUTPUTS = tuple(name + ":0" for name in OUTPUT_NAMES)
ONNX_NAMES = dict(zip((TF_INPUT,) + TF_OUTPUTS, (ONNX_INPUT,) + ONNX_OUTPUTS))
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
             "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}


def require(modules: Sequence[str] = STACK, purpose: str = "ONNX export"):
    """The named modules of the stack, imported; exit 5 naming the extra when any is missing or broken."""
    found, missing = {}, []
    for name in modules:
        try:
            found[name] = importlib.import_module(name)
        except ImportError as exc:  # absent, or present but failing to import (a numpy ABI mismatch)
            text = first_line(exc)
            absent = text.startswith("No module named") or text.startswith("import of ")
            missing.append(name if absent else "{} (it fails to import: {})".format(name, text))
    if missing:
        raise ToolMissingError("{} needs {}, not installed".format(purpose, ", ".join(missing)), hint=INSTALL_HINT)
    for name in ("tf2onnx", "onnxruntime"):  # quiet: their INFO lines would bury mpltool's output
        logging.getLogger(name).setLevel(logging.ERROR)
    return found


def versions() -> Dict[str, Optional[str]]:
    """Versions of the stack's modules that are already imported (recorded with an export)."""
    import sys

    return {name: str(getattr(sys.modules.get(name), "__version__", None) or "") or None for name in STACK}


def convert_graph_def(graph_def, opset: int, what: str):
    """tf2onnx's ModelProto of a frozen classifier graph (`input` -> `logits`, `probs`), its tensors renamed
    to `input`, `logits`, `probs`. A converter failure is exit 6 with its first line."""
    tf2onnx = require(("tf2onnx",))["tf2onnx"]

    try:
        model_proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, name="mpltool", input_names=[TF_INPUT], output_names=list(TF_OUTPUTS), opset=int(opset),
            tensors_to_rename=dict(ONNX_NAMES))
    except Exception as exc:  # tf2onnx raises ValueError, KeyError, RuntimeError... with long texts
        raise ToolFailedError("tf2onnx could not convert {}: {}: {}".format(what, type(exc).__name__, first_line(exc)))
    return model_proto


def check_model(data: bytes, what: str) -> Dict[str, Any]:
    """Exit 7 unless the written .onnx passes onnx's checker and is a classifier mpltool can run: only
    standard (ai.onnx) ops, one input `input`, outputs `logits` and `probs`. Returns its summary."""
    from mpltool.models.onnx_file import graph_inputs, parse_onnx
    from mpltool.models.verify import DEFAULT_DOMAINS

    onnx = require(("onnx",))["onnx"]
    try:
        onnx.checker.check_model(onnx.load_model_from_string(data))
    except Exception as exc:
        raise VerificationError("{} fails onnx's model checker: {}".format(what, first_line(exc)))
    model = parse_onnx(data, what)
    foreign = sorted(set("{}:{}".format(n["domain"], n["op"]) for n in model["nodes"]
                         if n["domain"] not in DEFAULT_DOMAINS))
    if foreign:
        raise VerificationError("{} has ops outside the ONNX standard (ops tf2onnx left unconverted): {}".format(
            what, ", ".join(foreign[:4])))
    inputs = [i["name"] for i in graph_inputs(model)]
    outputs = [o["name"] for o in model["outputs"]]
    if inputs != [ONNX_INPUT] or not set(ONNX_OUTPUTS) <= set(outputs):
        raise VerificationError("{} has inputs {} and outputs {}; expected input '{}' and outputs {}".format(
            what, inputs, outputs, ONNX_INPUT, ", ".join(ONNX_OUTPUTS)))
    counts = {}
    for node in model["nodes"]:
        counts[node["op"]] = counts.get(node["op"], 0) + 1
    return {"ir_version": model["ir_version"], "opsets": dict(model["opsets"]), "producer": model["producer"],
            "nodes": len(model["nodes"]), "op_counts": dict(sorted(counts.items()))}


class OnnxModel(InferenceModel):
    """An .onnx (path or bytes) in an onnxruntime CPU session: `predict(images)` -> logits, run at the
    model's static batch when it has one (the last batch padded, its padding dropped)."""

    def __init__(self, model, what: str):
        ort = require(("onnxruntime",), purpose="running an .onnx model")["onnxruntime"]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        source = model if isinstance(model, (bytes, bytearray)) else str(model)
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's InvalidGraph, NoSuchFile, Fail...
            raise InvalidInputError("{} cannot be loaded by onnxruntime: {}".format(what, first_line(exc)))
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or ONNX_OUTPUTS[0] not in outputs:
            raise InvalidInputError("{} has inputs {} and outputs {}; expected one input and an output '{}'".format(
                what, [i.name for i in inputs], outputs, ONNX_OUTPUTS[0]))
        self.what = what
        self.input = inputs[0]
        self.output_names = outputs
        shape = [d if isinstance(d, int) and d > 0 else None for d in (self.input.shape or [])]
        self.static_batch = shape[0] if shape else None
        self._image_shape = shape[1:]  # type: List[Optional[int]]
        logits = next(o for o in self.session.get_outputs() if o.name == ONNX_OUTPUTS[0])
        last = (logits.shape or [None])[-1]
        self.num_classes = last if isinstance(last, int) and last > 0 else None

    @property
    def image_shape(self) -> List[Optional[int]]:
        return list(self._image_shape)

    def describe(self) -> Dict[str, Any]:
        outputs = self.session.get_outputs()
        return {"input_name": self.input.name, "input_shape": list(self.input.shape),
                "input_dtype": ORT_TYPES.get(self.input.type, self.input.type), "input_layout": "NHWC (as the frozen graph)",
                "output_names": [o.name for o in outputs], "output_shapes": [list(o.shape) for o in outputs]}

    def predict(self, images: np.ndarray) -> np.ndarray:
        from mpltool.models.inference import run_at_static_batch

        return run_at_static_batch(self._run, images, self.static_batch, self.num_classes)

    def _run(self, images: np.ndarray) -> np.ndarray:
        try:
            return self.session.run([ONNX_OUTPUTS[0]], {self.input.name: images})[0]
        except Exception as exc:
            raise InvalidInputError("{} failed to run in onnxruntime: {}".format(self.what, first_line(exc)))

    def close(self) -> None:
        self.session = None
