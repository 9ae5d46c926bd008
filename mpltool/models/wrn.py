"""Wide ResNet as the MPL reference builds it (docs/mpl-reference.md §2), in TF1 graph mode.

Why hand-written layers instead of tf.layers: MPL calls each network several times per step and must
choose which call's batch-norm statistics update (teacher: none; student: the first call only), and the
freeze stage must rebuild the same variables with `training=False` as a Python bool. So a call returns
its BN update ops instead of hiding them in the UPDATE_OPS collection.
"""

import collections
import math

from mpltool.models import layers
from mpltool.tfv1 import tf

ModelOutput = collections.namedtuple("ModelOutput", ["logits", "bn_updates", "features"])
ModelOutput.__doc__ = """What a network call returns: `logits`; `bn_updates`, the moving-statistics updates of this call
(empty at inference); `features`, the representation the classifier reads (after global pooling or
flatten, before dropout), for heads, probes and metric losses (None if a network does not say)."""
ModelOutput.__new__.__defaults__ = (None,)

BN_MOMENTUM = 0.99
BN_EPSILON = layers.BN_EPSILON
LEAKY_SLOPE = 0.2


def _default_dropout(x, rate):
    return tf.nn.dropout(x, rate=rate)


class WideResNet:
    """WRN-depth-width: 32k-channel stem (k = width), three groups of (depth-4)/6 pre-activation blocks."""

    def __init__(self, depth, width, num_classes=10, dropout_rate=0.2, dropout_fn=None):
        self.depth = depth
        self.width = width
        self.name = "wrn-{}-{}".format(depth, width)
        self.num_classes = num_classes
        self.bn_momentum = BN_MOMENTUM  # build_model sets a recipe's bn_momentum here
        self.dropout_rate = dropout_rate
        self.blocks_per_group = (depth - 4) // 6
        self.widths = (16 * width, 32 * width, 64 * width)
        self.dropout_fn = dropout_fn or _default_dropout

    def __call__(self, images, training, scope):
        """Logits for normalised NHWC images; `training` must be a Python bool (no Switch/Merge ops)."""
        updates = []
        with layers.network_scope(scope, self.name, training):
            with tf.variable_scope("stem"):
                x = _conv(images, 3, self.widths[0], 1)
            index = 0
            for group, width in enumerate(self.widths):
                for block in range(self.blocks_per_group):
                    index += 1
                    stride = 2 if (group > 0 and block == 0) else 1
                    with tf.variable_scope("block_{}".format(index)):
                        x = self._block(x, width, stride, training, updates)
            with tf.variable_scope("head"):
                x = _lrelu(_batch_norm(x, training, updates, "bn", self.bn_momentum))
                features = x = tf.reduce_mean(x, axis=[1, 2], name="global_avg_pool")
                if training and self.dropout_rate > 0:
                    x = self.dropout_fn(x, self.dropout_rate)
                logits = _dense(x, self.num_classes)
        return ModelOutput(logits=logits, bn_updates=updates, features=features)

    def _block(self, x, width, stride, training, updates):
        in_width = int(x.shape[-1])
        with tf.variable_scope("residual"):
            activated = _lrelu(_batch_norm(x, training, updates, "bn_1", self.bn_momentum))
            if stride != 1 or in_width != width:
                with tf.variable_scope("shortcut"):
                    shortcut = _conv(activated, 1, width, stride)
            else:
                shortcut = x
            with tf.variable_scope("conv_1"):
                y = _conv(activated, 3, width, stride)
            y = _lrelu(_batch_norm(y, training, updates, "bn_2", self.bn_momentum))
            with tf.variable_scope("conv_2"):
                y = _conv(y, 3, width, 1)
            return tf.add(y, shortcut, name="add")


def _lrelu(x):
    return layers.leaky_relu(x, LEAKY_SLOPE)


def _conv(x, kernel_size, filters, stride):
    # He fan-out init as the reference: N(0, sqrt(2 / (k*k*c_out))), no bias (BN follows).
    return layers.conv2d(x, kernel_size, filters, stride, use_bias=False)


def _dense(x, units):
    # U(-1/sqrt(units), 1/sqrt(units)), as the reference's dense kernel.
    bound = 1.0 / math.sqrt(units)
    return layers.dense(x, units, tf.random_uniform_initializer(-bound, bound))


def _batch_norm(x, training, updates, name, momentum):
    return layers.batch_norm(x, training, updates, name, momentum=momentum, epsilon=BN_EPSILON)
