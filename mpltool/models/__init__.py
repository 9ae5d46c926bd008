"""Model registry: a recipe names a model (`wrn-28-2`, `wrn-10-1`, ...) and gets a callable network."""

import re

from mpltool.errors import UsageError

MODEL_PATTERN = re.compile(r"^wrn-(\d+)-(\d+)$")


def parse_model_name(name):
    """(depth, width) of a `wrn-D-W` name; D-4 must be a positive multiple of 6."""
    match = MODEL_PATTERN.match(str(name))
    if not match:
        raise UsageError("unknown model {!r}: expected wrn-DEPTH-WIDTH, e.g. wrn-28-2 or wrn-10-1".format(name))
    depth, width = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
        raise UsageError("invalid model {!r}: depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...) and width >= 1"
                         .format(name))
    return depth, width


def build_model(name, num_classes=10, dropout_rate=0.2, dropout_fn=None):
    from mpltool.models.wrn import WideResNet

    depth, width = parse_model_name(name)
    return WideResNet(depth, width, num_classes=num_classes, dropout_rate=dropout_rate, dropout_fn=dropout_fn)
