"""Model registry: a recipe names a network (`wrn-28-2`, ...) and gets a callable model with its input spec.

Each entry is a name pattern, a builder and the network's input spec: the image shape, the raw value
range fed to the exported graph, the per-channel mean/std it normalises with, channel order and layout.
`train` records the spec in the manifest and eval, freeze and convert build their inference graphs from
that record, so no stage assumes 32x32 CIFAR images (timm's habit: the input spec travels with the model).

Adding a network: a module with its class, and one `register_model(...)` call below.
"""

import collections
import re

import numpy as np

from mpltool.errors import UsageError

InputSpec = collections.namedtuple("InputSpec", ["shape", "value_range", "mean", "std", "channel_order", "layout"])
ModelEntry = collections.namedtuple("ModelEntry", ["pattern", "example", "parse", "build", "input_spec",
                                                   "classifier_bias"])

_REGISTRY = []  # type: list


def register_model(pattern, example, parse, build, input_spec, classifier_bias):
    """`parse(match) -> kwargs` (raising UsageError for a bad name), `build(num_classes, dropout_rate,
    dropout_fn, **kwargs)`, `input_spec`: an InputSpec, or `input_spec(kwargs) -> InputSpec` when the spec
    depends on the name (an input size in it), `classifier_bias`: the variable under `<scope>/<name>/`
    whose length is the class count (read from a checkpoint nobody recorded)."""
    _REGISTRY.append(ModelEntry(re.compile(pattern), example, parse, build, input_spec, classifier_bias))


def _entry(name):
    for entry in _REGISTRY:
        match = entry.pattern.match(str(name))
        if match:
            return entry, entry.parse(match)
    raise UsageError("unknown model {!r}: expected {}".format(name, " or ".join(e.example for e in _REGISTRY)))


def parse_model_name(name):
    """The builder arguments of a registered model name (UsageError naming the expected forms otherwise)."""
    return _entry(name)[1]


def is_model_name(name) -> bool:
    return any(entry.pattern.match(str(name)) for entry in _REGISTRY)


def _resolve_spec(entry, kwargs) -> InputSpec:
    return entry.input_spec(kwargs) if callable(entry.input_spec) else entry.input_spec


def input_spec(name) -> InputSpec:
    return _resolve_spec(*_entry(name))


def classifier_bias(name) -> str:
    return _entry(name)[0].classifier_bias


def build_model(name, num_classes=10, dropout_rate=0.2, dropout_fn=None, bn_momentum=0.0):
    """`bn_momentum` > 0 replaces the network's own batch-norm momentum (it only changes how the moving
    statistics follow training, never the inference graph)."""
    entry, kwargs = _entry(name)
    model = entry.build(num_classes=num_classes, dropout_rate=dropout_rate, dropout_fn=dropout_fn, **kwargs)
    model.input_spec = _resolve_spec(entry, kwargs)
    if bn_momentum:
        model.bn_momentum = bn_momentum
    return model


def is_batch_norm_variable(variable):
    """Weight decay skips these. Every registered network names its batch-norm scopes `bn...`, as the
    reference does (it skips names containing 'batch_norm' or 'bn')."""
    return any(part.startswith("bn") for part in variable.op.name.split("/"))


def spec_record(spec: InputSpec):
    """The spec as the manifest stores it (plain lists and numbers)."""
    return {"shape": list(spec.shape), "value_range": list(spec.value_range), "mean": list(spec.mean),
            "std": list(spec.std), "channel_order": spec.channel_order, "layout": spec.layout}


def spec_from_record(record) -> InputSpec:
    return InputSpec(tuple(record["shape"]), tuple(record["value_range"]), tuple(record["mean"]),
                     tuple(record["std"]), record["channel_order"], record["layout"])


CHANNEL_ORDERS = ("RGB", "BGR")


def normalize_input(images, spec: InputSpec):
    """(x - range_max·mean) / (range_max·std) in float32 over the channel axis, inside the graph; then, for
    channel_order "BGR", the channel axis reversed.

    Raw RGB pixels always enter the graph: mean and std are listed in RGB order and applied before the
    reversal, so a "BGR" network (Caffe's) sees (x - mean_rgb)[..., ::-1]. Computed as
    float32(mean)·float32(range_max), like the training input, so both are bit-identical. A mean that is
    exactly 0 or a divisor that is exactly 1 is skipped: x - 0 and x / 1 are x in float32 anyway, so this
    changes no value, only drops ops from the exported graph. The reversal is a Split and a ConcatV2, ops
    the grouped convolutions use already (ATC's list has no ReverseV2)."""
    from mpltool.tfv1 import tf

    if spec.channel_order not in CHANNEL_ORDERS:
        raise ValueError("unknown channel order {!r} (expected {})".format(spec.channel_order,
                                                                           " or ".join(CHANNEL_ORDERS)))
    scale = np.float32(spec.value_range[1])
    mean = np.array(spec.mean, np.float32) * scale
    std = np.array(spec.std, np.float32) * scale
    x = tf.cast(images, tf.float32)
    if mean.any():
        x = x - tf.constant(mean)
    if not (std == 1).all():
        x = x / tf.constant(std)
    if spec.channel_order == "BGR":
        x = tf.concat(tf.split(x, len(spec.mean), axis=-1)[::-1], axis=-1)
    return x


# -- the networks -----------------------------------------------------------------------------------

def _wrn_parse(match):
    depth, width = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
        raise UsageError("invalid model 'wrn-{}-{}': depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...) and "
                         "width >= 1".format(depth, width))
    return {"depth": depth, "width": width}


def _wrn_build(num_classes, dropout_rate, dropout_fn, depth, width):
    from mpltool.models.wrn import WideResNet

    return WideResNet(depth, width, num_classes=num_classes, dropout_rate=dropout_rate, dropout_fn=dropout_fn)


# CIFAR-10's per-channel mean and std on the [0, 1] scale, as the MPL reference normalises with them (its
# data_utils.py; float32 times 255 there too, so normalize_input is bit-identical to it).
CIFAR_MEAN = (0.491400, 0.482158, 0.4465309)
CIFAR_STD = (0.247032, 0.243485, 0.26159)


def _cifar_spec():
    return InputSpec((32, 32, 3), (0, 255), tuple(float(v) for v in CIFAR_MEAN),
                     tuple(float(v) for v in CIFAR_STD), "RGB", "NHWC")


register_model(r"^wrn-(\d+)-(\d+)$", "wrn-DEPTH-WIDTH, e.g. wrn-28-2 or wrn-10-1", _wrn_parse, _wrn_build,
               _cifar_spec(), "head/dense/bias")


_MIXMATCH_RESNET_LIMITS = (("filters", 1024), ("scales", 8), ("repeat", 100))


def _mixmatch_resnet_parse(match):
    sizes = {"filters": int(match.group(1)), "scales": int(match.group(2)), "repeat": int(match.group(3))}
    bad = ["{} must be between 1 and {} (got {})".format(key, high, sizes[key])
           for key, high in _MIXMATCH_RESNET_LIMITS if not 1 <= sizes[key] <= high]
    if bad:
        raise UsageError("invalid model 'mixmatch-resnet-{}-{}-{}': {}".format(
            sizes["filters"], sizes["scales"], sizes["repeat"], "; ".join(bad)))
    return sizes


def _mixmatch_resnet_build(num_classes, dropout_rate, dropout_fn, filters, scales, repeat):
    from mpltool.models.mixmatch_resnet import MixMatchResNet

    return MixMatchResNet(filters, scales, repeat, num_classes=num_classes, dropout_rate=dropout_rate,
                          dropout_fn=dropout_fn)


def _minus_one_to_one_spec():
    # The reference feeds x·2/255 − 1: (x − 255·0.5) / (255·0.5) in normalize_input's terms.
    return InputSpec((32, 32, 3), (0, 255), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "RGB", "NHWC")


register_model(r"^mixmatch-resnet-(\d+)-(\d+)-(\d+)$",
               "mixmatch-resnet-FILTERS-SCALES-REPEAT, e.g. mixmatch-resnet-32-3-4", _mixmatch_resnet_parse,
               _mixmatch_resnet_build, _minus_one_to_one_spec(), "head/dense/bias")


# Caffe's AlexNet as MASF builds it (models/alexnet.py): raw RGB 0..255 pixels, the ImageNet mean
# subtracted in RGB order, then reversed to BGR, no scaling (std·255 is exactly 1 in float32).
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
_ALEXNET_FC_MAX = 16384
_ALEXNET_SIZE_MAX = 1024


def _caffe_alexnet_parse(match):
    from mpltool.models.alexnet import DEFAULT_FC_UNITS, DEFAULT_INPUT_SIZE, minimum_input_size

    if match.group(1) is None:
        return {"input_size": DEFAULT_INPUT_SIZE, "fc_units": DEFAULT_FC_UNITS}
    size, units = int(match.group(1)), int(match.group(2))
    bad = []
    if not minimum_input_size() <= size <= _ALEXNET_SIZE_MAX:
        bad.append("SIZE must be between {} and {} (got {}; below {} the last max-pool has no output)".format(
            minimum_input_size(), _ALEXNET_SIZE_MAX, size, minimum_input_size()))
    if not 1 <= units <= _ALEXNET_FC_MAX:
        bad.append("FC must be between 1 and {} (got {})".format(_ALEXNET_FC_MAX, units))
    if bad:
        raise UsageError("invalid model 'caffe-alexnet-{}-{}': {}".format(size, units, "; ".join(bad)))
    return {"input_size": size, "fc_units": units}


def _caffe_alexnet_build(num_classes, dropout_rate, dropout_fn, input_size, fc_units):
    from mpltool.models.alexnet import CaffeAlexNet

    return CaffeAlexNet(input_size, fc_units, num_classes=num_classes, dropout_rate=dropout_rate,
                        dropout_fn=dropout_fn)


def _caffe_alexnet_spec(kwargs):
    size = kwargs["input_size"]
    return InputSpec((size, size, 3), (0, 255), tuple(m / 255 for m in CAFFE_MEAN_RGB), (1 / 255,) * 3, "BGR",
                     "NHWC")


register_model(r"^caffe-alexnet(?:-(\d+)-(\d+))?$",
               "caffe-alexnet (227x227, fc 4096) or caffe-alexnet-SIZE-FC, e.g. caffe-alexnet-64-512",
               _caffe_alexnet_parse, _caffe_alexnet_build, _caffe_alexnet_spec, "fc8/bias")


# The CIFAR ResNet-18 of BYOL (models/resnet_cifar.py): the reference feeds floats in [0, 1], x/255 here.
_RESNET_CIFAR_WIDTH_MAX = 1024


def _resnet_cifar_parse(match):
    from mpltool.models.resnet_cifar import DEFAULT_WIDTH

    if match.group(1) is None:
        return {"width": DEFAULT_WIDTH}
    width = int(match.group(1))
    if not 1 <= width <= _RESNET_CIFAR_WIDTH_MAX:
        raise UsageError("invalid model 'resnet18-cifar-{}': WIDTH must be between 1 and {} (got {})".format(
            width, _RESNET_CIFAR_WIDTH_MAX, width))
    return {"width": width}


def _resnet_cifar_build(num_classes, dropout_rate, dropout_fn, width):
    from mpltool.models.resnet_cifar import CifarResNet18

    return CifarResNet18(width, num_classes=num_classes, dropout_rate=dropout_rate, dropout_fn=dropout_fn)


def _unit_range_spec():
    return InputSpec((32, 32, 3), (0, 255), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "RGB", "NHWC")


register_model(r"^resnet18-cifar(?:-(\d+))?$", "resnet18-cifar (width 64) or resnet18-cifar-WIDTH, e.g. "
               "resnet18-cifar-16", _resnet_cifar_parse, _resnet_cifar_build, _unit_range_spec(),
               "head/dense/bias")


# ResNet-50 v1.5 (models/resnet50.py), seed 003's ImageNet network: raw RGB 0..255 pixels normalised with
# ImageNet's per-channel mean and std, as tensorflow/models' ImageNet preprocessing does.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_RESNET50_SIZE_MAX = 1024


def _resnet50_parse(match):
    from mpltool.models.resnet50 import DEFAULT_INPUT_SIZE, MIN_INPUT_SIZE

    size = DEFAULT_INPUT_SIZE if match.group(1) is None else int(match.group(1))
    if not MIN_INPUT_SIZE <= size <= _RESNET50_SIZE_MAX:
        raise UsageError("invalid model 'resnet50-{}': SIZE must be between {} and {}".format(
            size, MIN_INPUT_SIZE, _RESNET50_SIZE_MAX))
    return {"input_size": size}


def _resnet50_build(num_classes, dropout_rate, dropout_fn, input_size):
    from mpltool.models.resnet50 import ResNet50

    return ResNet50(num_classes=num_classes, dropout_rate=dropout_rate, dropout_fn=dropout_fn, input_size=input_size)


def _resnet50_spec(kwargs):
    size = kwargs["input_size"]
    return InputSpec((size, size, 3), (0, 255), IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, "RGB", "NHWC")


register_model(r"^resnet50(?:-(\d+))?$", "resnet50 (v1.5, 224x224) or resnet50-SIZE, e.g. resnet50-64",
               _resnet50_parse, _resnet50_build, _resnet50_spec, "head/dense/bias")
