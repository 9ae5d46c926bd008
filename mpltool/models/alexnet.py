"""Caffe's AlexNet as MASF builds it (biomedia-mira/masf, masf_func.py `forward_alexnet` and utils.py), in TF1
graph mode, with WideResNet's calling contract (wrn.py): `model(images, training, scope)`.

Layout, as the reference: conv1 11x11/4 96 -> ReLU -> LRN -> maxpool 3/2 VALID; conv2 5x5 256 (2 groups)
-> ReLU -> LRN -> pool; conv3 3x3 384; conv4 3x3 384 (2 groups); conv5 3x3 256 (2 groups) -> pool;
flatten; fc6, fc7 (ReLU, dropout while training); fc8 logits. Every conv is 'SAME'-padded, conv1
included (the reference's conv_block pads all its convs 'SAME'; Caffe's own conv1 is unpadded, but at 227
both give the same 6x6x256 pool5).

A grouped conv keeps one kernel [k, k, c_in/groups, c_out], the bvlc_alexnet.npy layout, so the Caffe
weights load unchanged (models/pretrained.py); it splits the input channels and the kernel's output
channels into `groups` parts, convolves part i with part i, and concatenates.

Variables under `<scope>/<name>/`: `conv1`..`conv5`, `fc6`..`fc8`, each `kernel` and `bias`.
Initialisers as the reference: glorot (Xavier) uniform for every kernel (its xavier_initializer_conv2d
for conv1..fc7, xavier_initializer for fc8: the same distribution), and glorot uniform for the biases too,
because the reference creates them with `tf.get_variable` and no initializer, whose TF1 default for
floats is glorot uniform (a bias of n values: U(-sqrt(3/n), sqrt(3/n))). There is no batch norm.

`features` is fc7 after its ReLU and before its dropout: the tensor the reference's forward returns
beside the logits and feeds to its metric network (fc7 = relu(dropout6 · W7 + b7); dropout7 is applied
only on the way to fc8).
"""

from mpltool.models import layers
from mpltool.models.wrn import ModelOutput
from mpltool.tfv1 import tf

# (name, kernel size, output channels, stride, groups); LRN and max-pooling follow the layers named below.
CONV_LAYERS = (
    ("conv1", 11, 96, 4, 1),
    ("conv2", 5, 256, 1, 2),
    ("conv3", 3, 384, 1, 1),
    ("conv4", 3, 384, 1, 2),
    ("conv5", 3, 256, 1, 2),
)
LRN_AFTER = ("conv1", "conv2")
POOL_AFTER = ("conv1", "conv2", "conv5")
POOL_SIZE, POOL_STRIDE = 3, 2

# What the reference passes to tf.nn.local_response_normalization: lrn(x, 2, 1e-05, 0.75) with bias 1.0.
# (Caffe's prototxt says local_size 5, alpha 1e-4, and Caffe divides alpha by local_size: 2e-5 per squared
# term in TF's formula. MASF passes 1e-5; this follows MASF.)
LRN_DEPTH_RADIUS = 2
LRN_ALPHA = 1e-5
LRN_BETA = 0.75
LRN_BIAS = 1.0

DEFAULT_INPUT_SIZE = 227
DEFAULT_FC_UNITS = 4096


def _default_dropout(x, rate):
    return tf.nn.dropout(x, rate=rate)


def conv_output_size(size, kernel_size, stride, padding):
    """Spatial size after a conv or pool (TF's rule): SAME ceil(n / s), VALID floor((n - k) / s) + 1."""
    if padding == "SAME":
        return -(-size // stride)
    return (size - kernel_size) // stride + 1 if size >= kernel_size else 0


def pool5_size(input_size):
    """Side of pool5's square map for a square input (0: empty, the network cannot be built)."""
    size = input_size
    for name, kernel_size, _, stride, _ in CONV_LAYERS:
        size = conv_output_size(size, kernel_size, stride, "SAME")
        if name in POOL_AFTER:
            size = conv_output_size(size, POOL_SIZE, POOL_STRIDE, "VALID") if size > 0 else 0
    return max(size, 0)


def minimum_input_size():
    """The smallest square input whose pool5 map is not empty (57)."""
    size = 1
    while pool5_size(size) < 1:
        size += 1
    return size


def grouped_conv2d(x, kernel, stride, groups, padding="SAME"):
    """NHWC convolution of `x` with one kernel [k, k, c_in/groups, c_out] in `groups` groups: input
    channels and the kernel's output channels split into `groups` equal parts, part i convolved with part
    i, the results concatenated (groups=1: a plain conv2d)."""
    strides = [1, stride, stride, 1]
    if groups == 1:
        return tf.nn.conv2d(x, kernel, strides=strides, padding=padding)
    inputs = tf.split(x, groups, axis=3)
    kernels = tf.split(kernel, groups, axis=3)
    return tf.concat([tf.nn.conv2d(i, k, strides=strides, padding=padding) for i, k in zip(inputs, kernels)],
                     axis=3)


def local_response_normalization(x):
    """The reference's LRN: x / (bias + alpha·sum of squares over channels c-2..c+2)^beta."""
    return tf.nn.local_response_normalization(x, depth_radius=LRN_DEPTH_RADIUS, alpha=LRN_ALPHA, beta=LRN_BETA,
                                              bias=LRN_BIAS)


def _max_pool(x):
    return tf.nn.max_pool(x, ksize=[1, POOL_SIZE, POOL_SIZE, 1], strides=[1, POOL_STRIDE, POOL_STRIDE, 1],
                          padding="VALID")


def _variables(kernel_shape, units):
    kernel = tf.get_variable("kernel", kernel_shape, tf.float32, initializer=tf.glorot_uniform_initializer())
    # tf.get_variable's default for a float variable without an initializer, as the reference's biases.
    bias = tf.get_variable("bias", [units], tf.float32, initializer=tf.glorot_uniform_initializer())
    return kernel, bias


class CaffeAlexNet:
    """AlexNet for square `input_size` RGB-mean-subtracted BGR images (227 in the reference); fc6 and fc7
    have `fc_units` units (4096 in the reference). `dropout_fn(x, rate)` drops fc6 and fc7 while training."""

    def __init__(self, input_size=DEFAULT_INPUT_SIZE, fc_units=DEFAULT_FC_UNITS, num_classes=7, dropout_rate=0.5,
                 dropout_fn=None):
        if pool5_size(input_size) < 1:
            raise ValueError("input_size {} leaves pool5 empty (minimum {})".format(input_size, minimum_input_size()))
        self.input_size = input_size
        self.fc_units = fc_units
        self.name = ("caffe-alexnet" if (input_size, fc_units) == (DEFAULT_INPUT_SIZE, DEFAULT_FC_UNITS)
                     else "caffe-alexnet-{}-{}".format(input_size, fc_units))
        self.num_classes = num_classes
        self.bn_momentum = 0.0  # unused (no batch norm); present because build_model may set it
        self.dropout_rate = dropout_rate
        self.dropout_fn = dropout_fn or _default_dropout
        self.flat_size = pool5_size(input_size) ** 2 * CONV_LAYERS[-1][2]

    def __call__(self, images, training, scope):
        """ModelOutput(logits, bn_updates=[], features=fc7) for normalised NHWC images; `training` must be a
        Python bool (no Switch/Merge ops)."""
        with layers.network_scope(scope, self.name, training):
            x = images
            for name, kernel_size, filters, stride, groups in CONV_LAYERS:
                with tf.variable_scope(name):
                    in_channels = int(x.shape[-1])
                    kernel, bias = _variables([kernel_size, kernel_size, in_channels // groups, filters], filters)
                    x = tf.nn.relu(tf.nn.bias_add(grouped_conv2d(x, kernel, stride, groups), bias))
                if name in LRN_AFTER:
                    x = local_response_normalization(x)
                if name in POOL_AFTER:
                    x = _max_pool(x)
            x = tf.reshape(x, [-1, self.flat_size], name="flatten")
            for name in ("fc6", "fc7"):
                with tf.variable_scope(name):
                    x = tf.nn.relu(self._dense(x, self.fc_units))
                if name == "fc7":
                    features = x
                if training and self.dropout_rate > 0:
                    x = self.dropout_fn(x, self.dropout_rate)
            with tf.variable_scope("fc8"):
                logits = self._dense(x, self.num_classes)
        return ModelOutput(logits=logits, bn_updates=[], features=features)

    @staticmethod
    def _dense(x, units):
        kernel, bias = _variables([int(x.shape[-1]), units], units)
        return tf.nn.bias_add(tf.matmul(x, kernel), bias)
