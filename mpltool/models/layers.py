"""The layers every registered network is built from: conv, batch norm, dense, leaky ReLU (TF1 graph mode).

Why not tf.layers: a network is called several times per step (MPL: teacher and student on several
batches) and the caller must choose which call's batch-norm statistics update, so `batch_norm` returns
its update ops (appended to `updates`) instead of hiding them in the UPDATE_OPS collection. Variables
are made with `tf.get_variable` in the current variable scope, so a caller's `AUTO_REUSE` scope shares
them between calls. Variable names follow tf.layers (`kernel`, `bias`, `gamma`, `beta`, `moving_mean`,
`moving_variance`; the scopes differ), and the numbers are tf.layers' own: same ops, same defaults.
"""

import contextlib
import math

from mpltool.tfv1 import tf

BN_EPSILON = 1e-3  # tf.layers' default


@contextlib.contextmanager
def network_scope(scope, name, training):
    """The variable scopes of one call of a network, `<scope>/<name>/`, shared between calls (AUTO_REUSE),
    after checking that `training` is a Python bool: a tensor would build Switch/Merge ops into the
    exported graph (every registered network's calling contract)."""
    if not isinstance(training, bool):
        raise TypeError("training must be a Python bool, got {!r}".format(training))
    with tf.variable_scope(scope, reuse=tf.AUTO_REUSE), tf.variable_scope(name):
        yield


LEAKY_RELU_GRADIENT = "MpltoolLeakyReluGradFromOutput"


@tf.RegisterGradient(LEAKY_RELU_GRADIENT)
def _leaky_relu_gradient_from_output(op, grad):
    """TF's LeakyReluGrad(g, f) = g·(f > 0 ? 1 : α), called with the op's input f = x. For α > 0,
    y = leaky_relu(x) > 0 exactly when x > 0 (y = 0 when x = 0, where both take α), so calling it with
    the output y gives the same gradient bit for bit, and x need not live until the backward pass. In a
    pre-activation network x is batch norm's output, used by nothing else: this frees one activation
    tensor of three per layer (docs/performance.md)."""
    return tf.raw_ops.LeakyReluGrad(gradients=grad, features=op.outputs[0], alpha=op.get_attr("alpha"))


def leaky_relu(x, alpha):
    """tf.nn.leaky_relu; for α > 0 its gradient is taken from its output (same values, less memory)."""
    if alpha <= 0:
        return tf.nn.leaky_relu(x, alpha=alpha)
    with tf.get_default_graph().gradient_override_map({"LeakyRelu": LEAKY_RELU_GRADIENT}):
        return tf.nn.leaky_relu(x, alpha=alpha)


def he_normal_fan_out(kernel_size, filters):
    """N(0, sqrt(2 / (k·k·c_out))): He init over the fan-out, as both reference networks initialise convs."""
    return tf.random_normal_initializer(stddev=math.sqrt(2.0 / (kernel_size * kernel_size * filters)))


def conv2d(x, kernel_size, filters, stride, use_bias=False):
    """A k x k, "SAME"-padded NHWC convolution in the current scope: `kernel` [k, k, c_in, c_out], then
    `bias` [c_out] (zeros) when `use_bias`."""
    in_channels = int(x.shape[-1])
    kernel = tf.get_variable("kernel", [kernel_size, kernel_size, in_channels, filters], tf.float32,
                             initializer=he_normal_fan_out(kernel_size, filters))
    y = tf.nn.conv2d(x, kernel, strides=[1, stride, stride, 1], padding="SAME")
    if use_bias:
        bias = tf.get_variable("bias", [filters], tf.float32, initializer=tf.zeros_initializer())
        y = tf.nn.bias_add(y, bias)
    return y


def dense(x, units, kernel_initializer):
    """x·kernel + bias under a `dense` scope; the bias starts at zero, the kernel as the network says."""
    in_units = int(x.shape[-1])
    with tf.variable_scope("dense"):
        kernel = tf.get_variable("kernel", [in_units, units], tf.float32, initializer=kernel_initializer)
        bias = tf.get_variable("bias", [units], tf.float32, initializer=tf.zeros_initializer())
        return tf.nn.bias_add(tf.matmul(x, kernel), bias)


def residual_output(y, x, projection=None):
    """relu(y + shortcut): the shortcut is `projection()` (a strided 1x1 conv + BN in its own scopes) where
    the block changes the shape, else the block's input `x` unchanged."""
    shortcut = x if projection is None else projection()
    return tf.nn.relu(tf.add(y, shortcut, name="add"))


def batch_norm(x, training, updates, name, momentum, epsilon=BN_EPSILON):
    """NHWC batch norm under scope `name` (which must start with `bn`: weight decay skips those).

    Training: normalise with the batch statistics and append the two moving-average updates
    m <- m - (1 - momentum)·(m - batch value) to `updates`. Inference: normalise with the moving
    statistics and append nothing.
    """
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
                                             epsilon=epsilon, is_training=False)
            return y
        # Normalise with the biased batch variance (as the references); the moving variance takes the
        # unbiased estimate fused_batch_norm returns, as tf.layers' fused BN does (it applies Bessel's
        # correction to the moving statistics only).
        y, mean, variance = tf.nn.fused_batch_norm(x, gamma, beta, epsilon=epsilon, is_training=True)
        updates.append(tf.assign_sub(moving_mean, (1.0 - momentum) * (moving_mean - mean)))
        updates.append(tf.assign_sub(moving_variance, (1.0 - momentum) * (moving_variance - variance)))
        return y
