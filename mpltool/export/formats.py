"""The export formats: each an entry of `FORMATS`, which the export stage runs the same way (convert the
frozen graph, check the file as written, open it to compare with the .pb).

Adding one: a function set like ONNX's below and one `FORMATS` line; the stage, its record, the parity
check and the report's export section need no edit (docs/architecture.md).
"""

import collections
from typing import Any, Dict

from mpltool.errors import UsageError
from mpltool.models.verify import ATC_ONNX_OPSETS, whole_number

ExportFormat = collections.namedtuple("ExportFormat", [
    "name",               # `export --format NAME`
    "suffix",             # of the file written
    "folder",             # where it lands in the project: <folder>/<pb name><suffix>
    "default_tolerance",  # max |Δlogit| against the .pb, by default
    "options",            # options(given: dict) -> the checked options recorded in the params
    "require",            # require(): the stack it needs, exit 5 naming what to install
    "convert",            # convert(graph_def, options, what) -> the file's bytes
    "check",              # check(data, what, options) -> a summary of the file as written (exit 7 when bad)
    "open",               # open(data, what) -> an InferenceModel of the file
    "versions",           # versions() -> the stack's versions, recorded
])


# -- ONNX (extra `onnx`: tf2onnx, onnx, onnxruntime) ----------------------------------------------------

# atc reads ai.onnx opsets 11 to 15 (models/verify.py); 11 is the one every CANN release takes.
DEFAULT_OPSET = 11


def _onnx_options(given: Dict[str, Any]) -> Dict[str, Any]:
    opset = whole_number(DEFAULT_OPSET if given.get("opset") is None else given["opset"], "opset", 1)
    if not ATC_ONNX_OPSETS[0] <= opset <= ATC_ONNX_OPSETS[1]:
        raise UsageError("--opset {} is outside {}..{}, the ONNX opsets atc reads".format(opset, *ATC_ONNX_OPSETS))
    return {"opset": opset}


def _onnx_require():
    from mpltool.models import onnx_runtime

    onnx_runtime.require(purpose="export --format onnx")


def _onnx_convert(graph_def, options, what) -> bytes:
    from mpltool.models import onnx_runtime

    return onnx_runtime.convert_graph_def(graph_def, options["opset"], what).SerializeToString(deterministic=True)


def _onnx_check(data, what, options) -> Dict[str, Any]:
    from mpltool.models import onnx_runtime

    return dict(onnx_runtime.check_model(data, what), opset=options["opset"])


def _onnx_open(data, what):
    from mpltool.models.onnx_runtime import OnnxModel

    return OnnxModel(data, what)


def _onnx_versions():
    from mpltool.models import onnx_runtime

    return onnx_runtime.versions()


# onnxruntime and TensorFlow sum in different orders (MLAS vs Eigen/oneDNN kernels): logits agree to ~1e-6
# relative, so the default allows 1e-3 absolute where freeze (TF against TF) allows 1e-4.
FORMATS = collections.OrderedDict([
    ("onnx", ExportFormat("onnx", ".onnx", "onnx", 1e-3, _onnx_options, _onnx_require, _onnx_convert, _onnx_check,
                          _onnx_open, _onnx_versions)),
])


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise UsageError("unknown export format {!r}; mpltool exports {}".format(name, ", ".join(FORMATS)))
    return FORMATS[name]
