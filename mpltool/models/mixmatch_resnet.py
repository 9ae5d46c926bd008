"""The ResNet of MixMatch (google-research/mixmatch, libml/models.py `ResNet.classifier`), in TF1 graph mode.

The MixMatch papers' "WRN-28-2" (1.5M parameters) is this network with filters 32, scales 3, repeat 4.
It differs from `wrn.WideResNet` in ways that change the numbers, so it is its own class: a 16-channel
stem whatever the width, convolutions with biases, leaky ReLU slope 0.1 (not 0.2), BN momentum 0.999
(not 0.99), a shortcut conv on the raw block input except in the first block, a glorot-normal classifier,
and no dropout. It keeps WideResNet's calling contract (see wrn.py): `training` is a Python bool and a
call returns its BN update ops rather than putting them in UPDATE_OPS.

Variable layout under `<scope>/<name>/`: `stem/{kernel,bias}`; per block `block_<i>/residual/` with
`bn_1`, `conv_1`, `bn_2`, `conv_2` and (when the width changes) `shortcut`; `head/bn`, `head/dense`.
Variables are created in the reference's order (bn, conv, bn, conv, shortcut), so the i-th variable
here is the i-th variable of the tf.layers reference.
"""

from mpltool.models import layers
from mpltool.models.wrn import ModelOutput
from mpltool.tfv1 import tf

BN_MOMENTUM = 0.999  # the reference's bn_args
LEAKY_SLOPE = 0.1  # the reference's functools.partial(tf.nn.leaky_relu, alpha=0.1)
STEM_FILTERS = 16


class MixMatchResNet:
    """Stem conv (16 channels), then `scales` groups of `repeat` pre-activation residual blocks of width
    filters·2^s (the first block of each group after the first halves the resolution), BN + leaky ReLU,
    global average pooling and a dense classifier.

    `dropout_rate` and `dropout_fn` are accepted so every registered network builds alike, and ignored:
    the reference has no dropout.
    """

    def __init__(self, filters, scales, repeat, num_classes=10, dropout_rate=0.0, dropout_fn=None):
        self.filters = filters
        self.scales = scales
        self.repeat = repeat
        self.name = "mixmatch-resnet-{}-{}-{}".format(filters, scales, repeat)
        self.num_classes = num_classes
        self.bn_momentum = BN_MOMENTUM  # build_model sets a recipe's bn_momentum here
        self.dropout_rate = dropout_rate  # ignored (see the class docstring)
        self.dropout_fn = dropout_fn  # ignored
        self.widths = tuple(filters << scale for scale in range(scales))

    def __call__(self, images, training, scope):
        """Logits for normalised NHWC images (the reference feeds x·2/255 − 1); `training` must be a Python
        bool (no Switch/Merge ops)."""
        updates = []
        with layers.network_scope(scope, self.name, training):
            with tf.variable_scope("stem"):
                x = layers.conv2d(images, 3, STEM_FILTERS, 1, use_bias=True)
            index = 0
            for scale, width in enumerate(self.widths):
                for block in range(self.repeat):
                    index += 1
                    first = block == 0
                    with tf.variable_scope("block_{}".format(index)):
                        x = self._block(x, width, stride=2 if (first and scale > 0) else 1,
                                        activate_before_residual=(first and scale == 0),
                                        training=training, updates=updates)
            with tf.variable_scope("head"):
                x = _lrelu(_batch_norm(x, training, updates, "bn", self.bn_momentum))
                features = x = tf.reduce_mean(x, axis=[1, 2], name="global_avg_pool")
                # tf.glorot_normal_initializer: truncated normal, std sqrt(2 / (fan_in + fan_out)).
                logits = layers.dense(x, self.num_classes, tf.glorot_normal_initializer())
        return ModelOutput(logits=logits, bn_updates=updates, features=features)

    def _block(self, x, width, stride, activate_before_residual, training, updates):
        """The reference's `residual`: x + F(x), F = conv(lrelu(bn(conv(lrelu(bn(x)))))).

        The shortcut is the raw input (a 1x1 strided conv of it when the width changes), except with
        `activate_before_residual` (first block only), where it starts from lrelu(bn(x)) instead.
        """
        in_width = int(x.shape[-1])
        with tf.variable_scope("residual"):
            activated = _lrelu(_batch_norm(x, training, updates, "bn_1", self.bn_momentum))
            shortcut = activated if activate_before_residual else x
            with tf.variable_scope("conv_1"):
                y = layers.conv2d(activated, 3, width, stride, use_bias=True)
            y = _lrelu(_batch_norm(y, training, updates, "bn_2", self.bn_momentum))
            with tf.variable_scope("conv_2"):
                y = layers.conv2d(y, 3, width, 1, use_bias=True)
            # As the reference: only a width change gets a projection. A stride-2 block with an unchanged
            # width would leave the shapes unequal, but every stride-2 block here doubles the width.
            if in_width != width:
                with tf.variable_scope("shortcut"):
                    shortcut = layers.conv2d(shortcut, 1, width, stride, use_bias=True)
            return tf.add(shortcut, y, name="add")


def _lrelu(x):
    return layers.leaky_relu(x, LEAKY_SLOPE)


def _batch_norm(x, training, updates, name, momentum):
    return layers.batch_norm(x, training, updates, name, momentum=momentum)
