"""The CIFAR ResNet-18 of BYOL (garder14/byol-tensorflow2, models.py `ResNet18`), in TF1 graph mode, with
WideResNet's calling contract (wrn.py): `model(images, training, scope)` returns its BN update ops.

As the reference (Keras layers with their defaults): a 3x3 stride-1 'same' stem conv of `width` channels,
BN, ReLU and no max-pool; four stages of two BasicBlocks of widths w, 2w, 4w, 8w, the first block of
stages 2-4 with stride 2 and a 1x1 conv + BN shortcut; a block is conv3x3, BN, ReLU, conv3x3, BN, add the
shortcut, ReLU; global average pooling gives the features (8w values). Every conv keeps its bias; kernels
are glorot uniform and biases zero; BN has momentum 0.99 and epsilon 1e-3. The classifier `head/dense`
(glorot-uniform kernel, zero bias) is the linear head BYOL's evaluation puts on the frozen encoder.

The reference's 1x1 shortcut conv pads 'valid' and this one 'same': for a 1x1 kernel both take the same
pixels (no padding is ever needed), so the outputs are equal.

Variable layout under `<scope>/<name>/`: `stem/conv`, `stem/bn`; `block_<i>/` (i = 1..8) with `conv_1`,
`bn_1`, `conv_2`, `bn_2` and, in blocks 3, 5 and 7, `shortcut` and `bn_shortcut`; `head/dense`. Variables
are created in the reference's order (conv, bn, conv, bn, shortcut conv, shortcut bn per block).
"""

from mpltool.models import layers
from mpltool.models.wrn import ModelOutput
from mpltool.tfv1 import tf

BN_MOMENTUM = 0.99  # Keras' BatchNormalization default
BN_EPSILON = 1e-3  # Keras' default
BLOCKS_PER_STAGE = 2
STAGES = 4
DEFAULT_WIDTH = 64


def _conv(x, kernel_size, filters, stride):
    """Keras Conv2D's defaults: 'same' here, glorot-uniform kernel, zero bias."""
    in_channels = int(x.shape[-1])
    kernel = tf.get_variable("kernel", [kernel_size, kernel_size, in_channels, filters], tf.float32,
                             initializer=tf.glorot_uniform_initializer())
    bias = tf.get_variable("bias", [filters], tf.float32, initializer=tf.zeros_initializer())
    y = tf.nn.conv2d(x, kernel, strides=[1, stride, stride, 1], padding="SAME")
    return tf.nn.bias_add(y, bias)


class CifarResNet18:
    """ResNet-18 for 32x32 images in [0, 1] (the caller normalises: x/255), `width` channels in the stem.

    `dropout_rate` and `dropout_fn` are accepted so every registered network builds alike, and ignored:
    the reference has no dropout.
    """

    def __init__(self, width=DEFAULT_WIDTH, num_classes=10, dropout_rate=0.0, dropout_fn=None):
        self.width = width
        self.name = "resnet18-cifar" if width == DEFAULT_WIDTH else "resnet18-cifar-{}".format(width)
        self.num_classes = num_classes
        self.bn_momentum = BN_MOMENTUM  # build_model sets a recipe's bn_momentum here
        self.dropout_rate = dropout_rate  # ignored (see the class docstring)
        self.dropout_fn = dropout_fn  # ignored
        self.widths = tuple(width << stage for stage in range(STAGES))

    def __call__(self, images, training, scope):
        """ModelOutput(logits, bn_updates, features) for normalised NHWC images; `training` must be a Python
        bool (no Switch/Merge ops)."""
        updates = []
        with layers.network_scope(scope, self.name, training):
            with tf.variable_scope("stem"):
                with tf.variable_scope("conv"):
                    x = _conv(images, 3, self.width, 1)
                x = tf.nn.relu(self._batch_norm(x, training, updates, "bn"))
            index = 0
            for stage, width in enumerate(self.widths):
                for block in range(BLOCKS_PER_STAGE):
                    index += 1
                    stride = 2 if (stage > 0 and block == 0) else 1
                    with tf.variable_scope("block_{}".format(index)):
                        x = self._block(x, width, stride, training, updates)
            features = tf.reduce_mean(x, axis=[1, 2], name="global_avg_pool")
            with tf.variable_scope("head"):
                logits = layers.dense(features, self.num_classes, tf.glorot_uniform_initializer())
        return ModelOutput(logits=logits, bn_updates=updates, features=features)

    def _block(self, x, width, stride, training, updates):
        with tf.variable_scope("conv_1"):
            y = _conv(x, 3, width, stride)
        y = tf.nn.relu(self._batch_norm(y, training, updates, "bn_1"))
        with tf.variable_scope("conv_2"):
            y = _conv(y, 3, width, 1)
        y = self._batch_norm(y, training, updates, "bn_2")

        def projection():
            with tf.variable_scope("shortcut"):
                shortcut = _conv(x, 1, width, stride)
            return self._batch_norm(shortcut, training, updates, "bn_shortcut")

        return layers.residual_output(y, x, projection if stride != 1 else None)

    def _batch_norm(self, x, training, updates, name):
        return layers.batch_norm(x, training, updates, name, momentum=self.bn_momentum, epsilon=BN_EPSILON)
