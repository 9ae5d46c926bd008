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
    dropout_fn, **kwargs)`, `classifier_bias`: the variable under `<scope>/<name>/` whose length is the
    class count (read from a checkpoint nobody recorded)."""
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


def input_spec(name) -> InputSpec:
    return _entry(name)[0].input_spec


def classifier_bias(name) -> str:
    return _entry(name)[0].classifier_bias


def build_model(name, num_classes=10, dropout_rate=0.2, dropout_fn=None, bn_momentum=0.0):
    """`bn_momentum` > 0 replaces the network's own batch-norm momentum (it only changes how the moving
    statistics follow training, never the inference graph)."""
    entry, kwargs = _entry(name)
    model = entry.build(num_classes=num_classes, dropout_rate=dropout_rate, dropout_fn=dropout_fn, **kwargs)
    model.input_spec = entry.input_spec
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


def normalize_input(images, spec: InputSpec):
    """(x - range_max·mean) / (range_max·std) in float32 over the channel axis, inside the graph.

    Computed as float32(mean)·float32(range_max), like the training input, so both are bit-identical."""
    from mpltool.tfv1 import tf

    scale = np.float32(spec.value_range[1])
    mean = np.array(spec.mean, np.float32) * scale
    std = np.array(spec.std, np.float32) * scale
    return (tf.cast(images, tf.float32) - tf.constant(mean)) / tf.constant(std)


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


def _cifar_spec():
    from mpltool.data.augment import CIFAR_MEAN, CIFAR_STD

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
