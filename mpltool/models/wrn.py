"""Wide ResNet as the MPL reference builds it (docs/mpl-reference.md §2), in TF1 graph mode.

Why hand-written layers instead of tf.layers: MPL calls each network several times per step and must
choose which call's batch-norm statistics update (teacher: none; student: the first call only), and the
freeze stage must rebuild the same variables with `training=False` as a Python bool. So a call returns
its BN update ops instead of hiding them in the UPDATE_OPS collection.
"""

import collections
import math

from mpltool.tfv1 import tf

ModelOutput = collections.namedtuple("ModelOutput", ["logits", "bn_updates"])

BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
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
        self.dropout_rate = dropout_rate
        self.blocks_per_group = (depth - 4) // 6
        self.widths = (16 * width, 32 * width, 64 * width)
        self.dropout_fn = dropout_fn or _default_dropout

    def __call__(self, images, training, scope):
        """Logits for normalised NHWC images; `training` must be a Python bool (no Switch/Merge ops)."""
        if not isinstance(training, bool):
            raise TypeError("training must be a Python bool, got {!r}".format(training))
        updates = []
        with tf.variable_scope(scope, reuse=tf.AUTO_REUSE), tf.variable_scope(self.name):
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
                x = _lrelu(_batch_norm(x, training, updates, "bn"))
                x = tf.reduce_mean(x, axis=[1, 2], name="global_avg_pool")
                if training and self.dropout_rate > 0:
                    x = self.dropout_fn(x, self.dropout_rate)
                logits = _dense(x, self.num_classes)
        return ModelOutput(logits=logits, bn_updates=updates)

    def _block(self, x, width, stride, training, updates):
        in_width = int(x.shape[-1])
        with tf.variable_scope("residual"):
            activated = _lrelu(_batch_norm(x, training, updates, "bn_1"))
            if stride != 1 or in_width != width:
                with tf.variable_scope("shortcut"):
                    shortcut = _conv(activated, 1, width, stride)
            else:
                shortcut = x
            with tf.variable_scope("conv_1"):
                y = _conv(activated, 3, width, stride)
            y = _lrelu(_batch_norm(y, training, updates, "bn_2"))
            with tf.variable_scope("conv_2"):
                y = _conv(y, 3, width, 1)
            return tf.add(y, shortcut, name="add")


def _lrelu(x):
    return tf.nn.leaky_relu(x, alpha=LEAKY_SLOPE)


def _conv(x, kernel_size, filters, stride):
    in_channels = int(x.shape[-1])
    # He fan-out init as the reference: N(0, sqrt(2 / (k*k*c_out))).
    stddev = math.sqrt(2.0 / (kernel_size * kernel_size * filters))
    kernel = tf.get_variable("kernel", [kernel_size, kernel_size, in_channels, filters], tf.float32,
                             initializer=tf.random_normal_initializer(stddev=stddev))
    return tf.nn.conv2d(x, kernel, strides=[1, stride, stride, 1], padding="SAME")


def _dense(x, units):
    in_units = int(x.shape[-1])
    bound = 1.0 / math.sqrt(units)
    with tf.variable_scope("dense"):
        kernel = tf.get_variable("kernel", [in_units, units], tf.float32,
                                 initializer=tf.random_uniform_initializer(-bound, bound))
        bias = tf.get_variable("bias", [units], tf.float32, initializer=tf.zeros_initializer())
        return tf.nn.bias_add(tf.matmul(x, kernel), bias)


def _batch_norm(x, training, updates, name):
    channels = int(x.shape[-1])
    with tf.variable_scope(name):
        gamma = tf.get_variable("gamma", [channels], tf.float32, initializer=tf.ones_initializer())
        beta = tf.get_variable("beta", [channels], tf.float32, initializer=tf.zeros_initializer())
        moving_mean = tf.get_variable("moving_mean", [channels], tf.float32, trainable=False,
                                      initializer=tf.zeros_initializer())
        moving_variance = tf.get_variable("moving_variance", [channels], tf.float32, trainable=False,
                                          initializer=tf.ones_initializer())
        if not training:
            y, _, _ = tf.nn.fused_batch_norm(x, gamma, beta, mean=moving_mean, variance=moving_variance,
                                             epsilon=BN_EPSILON, is_training=False)
            return y
        # Normalise with the biased batch variance (as the reference); the moving variance takes the
        # unbiased estimate fused_batch_norm returns (as the Ascend port's tf.layers BN does).
        y, mean, variance = tf.nn.fused_batch_norm(x, gamma, beta, epsilon=BN_EPSILON, is_training=True)
        updates.append(tf.assign_sub(moving_mean, (1.0 - BN_MOMENTUM) * (moving_mean - mean)))
        updates.append(tf.assign_sub(moving_variance, (1.0 - BN_MOMENTUM) * (moving_variance - variance)))
        return y
