"""Verification shared by freeze, export and convert: what ATC accepts (its op tables, opsets and input
dtypes), and the parity check that proves an exported model computes what it came from.

freeze compares the frozen graph with the checkpoint, export the .onnx with the .pb; both record the same
parity fields and fail the same way (exit 7, the file kept as `<name>.rejected<suffix>`). convert's
pre-checks (convert/precheck.py, convert/onnx_check.py) judge a graph by the tables here.
"""

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from mpltool.errors import UsageError, VerificationError

PARITY_REFERENCE_BATCH = 100

# The TensorFlow ops a CNN classifier needs that ATC converts: a curated subset of Huawei's "Supported
# TensorFlow Operators" list for TF 1.15 (hiascend.com canncommercial/800 apiref/aolapi/operatorlist_00096,
# docs/atc.md §3). Extend it only from that list.
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

# ONNX op types a CNN classifier exported by tf2onnx uses that ATC converts: a curated subset of Huawei's
# "Supported ONNX Operators" list (hiascend.com CANN 8.0 operator list, ai.onnx domain, opset 11-15).
# It covers what tf2onnx emits for every registered network (WRN, the CIFAR ResNet of mixmatch-resnet, Caffe AlexNet with LRN
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
# Input dtypes ATC takes from a TensorFlow graph or an ONNX model (docs/atc.md §3).
ATC_INPUT_DTYPES = ("float16", "float32", "uint8", "int32", "int64", "bool")


def parity_count(available: int, parity_images: int) -> int:
    """How many test images a parity check runs: `parity_images` of them, 0 meaning all."""
    return available if parity_images == 0 else min(parity_images, available)


def parity_set(images, count: int, image_shape):
    """The first `count` test images, decoded at the checked model's input size (lazy sets are read here)."""
    from mpltool.data.records import at_input_size, subset

    return at_input_size(subset(images, np.arange(count)), image_shape)


def rejected_path(output: Path) -> Path:
    """Where a file that failed its parity check is kept: `<name>.rejected<suffix>` beside the output."""
    return output.with_name(output.stem + ".rejected" + output.suffix)


def parity_check(frozen, reference_predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                 tolerance: float, progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Exported model vs the model it came from: logits on the same images (raw pixels)."""
    from mpltool.models.inference import batched_logits  # (TensorFlow: only when a check runs)

    def as_float(predict):  # both models see the very same float32 pixels
        return lambda batch: predict(np.asarray(batch).astype(np.float32))

    expected = batched_logits(as_float(reference_predict), images, PARITY_REFERENCE_BATCH)
    actual = batched_logits(as_float(frozen.predict), images, frozen.static_batch or PARITY_REFERENCE_BATCH,
                            progress)
    max_diff = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    agreement = float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)))
    return {"images": int(images.shape[0]), "max_abs_logit_diff": max_diff, "top1_agreement": agreement,
            "tolerance": float(tolerance), "passed": bool(max_diff <= tolerance)}


def record_parity(run, parity: Dict[str, Any], started: float, staged: Path, output: Path, differs: str) -> None:
    """Parity into the stage's record and metrics; a failed check (exit 7) keeps the staged file beside the
    output as `<name>.rejected<suffix>` and leaves the output as it was. `differs`: "the X differs from Y"."""
    run.record["parity"] = parity
    run.metrics.update({"max_abs_logit_diff": parity["max_abs_logit_diff"], "top1_agreement": parity["top1_agreement"],
                        "parity_images": parity["images"], "seconds": time.perf_counter() - started})
    if not parity["passed"]:
        rejected = rejected_path(output)
        rejected.parent.mkdir(parents=True, exist_ok=True)  # the first freeze or export has no folder yet
        staged.replace(rejected)
        raise VerificationError(
            "parity check failed: {} by up to {:.3g} in logits (tolerance {:g}) on {} test images, top-1 agreement "
            "{:.4f}".format(differs, parity["max_abs_logit_diff"], parity["tolerance"], parity["images"],
                            parity["top1_agreement"]),
            hint="kept for inspection as {}; {} was not replaced".format(rejected, output))


def parity_tolerance(value) -> float:
    """--tolerance as a finite float >= 0 (anything else is a usage error, exit 2)."""
    try:
        tolerance = float(value)
    except (TypeError, ValueError):
        raise UsageError("tolerance must be a number, got {!r}".format(value))
    if not np.isfinite(tolerance) or tolerance < 0:
        raise UsageError("--tolerance must be a finite number >= 0, got {!r}".format(value))
    return tolerance


def whole_number(value, what: str, minimum: int) -> int:
    """An option's value as an int >= minimum (a bool, a fraction or text is a usage error, exit 2)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError("{} must be a whole number, got {!r}".format(what, value))
    if number < minimum or isinstance(value, bool) or number != float(value):
        raise UsageError("{} must be a whole number >= {}, got {!r}".format(what, minimum, value))
    return number
