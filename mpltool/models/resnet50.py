"""ResNet-50 v1.5, the ImageNet network of seed 003's AutoAugment run, in TF1 graph mode with
WideResNet's calling contract (wrn.py): `model(images, training, scope)` returns its BN update ops.

As tensorflow/models' official ResNet (`resnet_model.py`, `resnet_size=50`, v1, bottleneck blocks), which
the seed trains:
- stem: 7x7 stride-2 conv of 64 channels (no bias), BN, ReLU, 3x3 stride-2 'SAME' max-pool;
- four stages of [3, 4, 6, 3] bottleneck blocks of widths 64, 128, 256, 512;
- a block is 1x1 conv (width), BN, ReLU; 3x3 conv (width, the stage's stride), BN, ReLU; 1x1 conv
  (4·width), BN; add the shortcut; ReLU. "v1.5" puts the stride in the 3x3 conv, not in the first 1x1 (He
  et al.'s v1); the first block of every stage has a projection shortcut (1x1 conv with the stride, BN);
- a strided conv pads explicitly by (k-1)//2 before and the rest after, then 'VALID' ("fixed padding"), so
  padding never depends on the input size;
- BN momentum 0.997, epsilon 1e-5; convs he-normal over the fan-out (variance scaling, fan_out);
- global average pooling, then a dense classifier with bias.

For 1000 classes the network has 25,557,032 trainable parameters, torchvision's `resnet50` count: the
test derives it from the layer shapes.

Variable layout under `<scope>/<name>/`: `stem/conv`, `stem/bn`; `stage_<s>/block_<b>/` (s = 1..4) with
`conv_1`, `bn_1`, `conv_2`, `bn_2`, `conv_3`, `bn_3` and, in block 1, `shortcut` and `bn_shortcut`;
`head/dense`.
"""

from mpltool.models import layers
from mpltool.models.wrn import ModelOutput
from mpltool.tfv1 import tf

BLOCKS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
BN_MOMENTUM = 0.997  # tensorflow/models official resnet_model.py: _BATCH_NORM_DECAY
BN_EPSILON = 1e-5    # _BATCH_NORM_EPSILON
DEFAULT_INPUT_SIZE = 224
MIN_INPUT_SIZE = 32  # five halvings leave at least a 1x1 map


def _conv(x, kernel_size, filters, stride):
    """A bias-free conv; strided ones pad explicitly (fixed padding), others 'SAME'."""
    if stride > 1:
        total = kernel_size - 1
        before = total // 2
        x = tf.pad(x, [[0, 0], [before, total - before], [before, total - before], [0, 0]])
    in_channels = int(x.shape[-1])
    kernel = tf.get_variable("kernel", [kernel_size, kernel_size, in_channels, filters], tf.float32,
                             initializer=layers.he_normal_fan_out(kernel_size, filters))
    return tf.nn.conv2d(x, kernel, strides=[1, stride, stride, 1], padding="VALID" if stride > 1 else "SAME")


class ResNet50:
    """ResNet-50 v1.5 for `input_size`² RGB images, normalised by the caller (ImageNet mean and std).

    `dropout_rate` and `dropout_fn` are accepted so every registered network builds alike, and ignored:
    the reference has no dropout.
    """

    def __init__(self, num_classes=1000, dropout_rate=0.0, dropout_fn=None, input_size=DEFAULT_INPUT_SIZE):
        self.name = "resnet50" if input_size == DEFAULT_INPUT_SIZE else "resnet50-{}".format(input_size)
        self.num_classes = num_classes
        self.input_size = input_size
        self.bn_momentum = BN_MOMENTUM  # build_model sets a recipe's bn_momentum here
        self.dropout_rate = dropout_rate  # ignored
        self.dropout_fn = dropout_fn  # ignored

    def __call__(self, images, training, scope):
        """ModelOutput(logits, bn_updates, features) for normalised NHWC images; `training` a Python bool."""
        updates = []
        with layers.network_scope(scope, self.name, training):
            with tf.variable_scope("stem"):
                with tf.variable_scope("conv"):
                    x = _conv(images, 7, WIDTHS[0], 2)
                x = tf.nn.relu(self._batch_norm(x, training, updates, "bn"))
                x = tf.nn.max_pool(x, [1, 3, 3, 1], [1, 2, 2, 1], padding="SAME")
            for stage, (count, width) in enumerate(zip(BLOCKS, WIDTHS)):
                for block in range(count):
                    stride = 2 if (stage > 0 and block == 0) else 1
                    with tf.variable_scope("stage_{}/block_{}".format(stage + 1, block + 1)):
                        x = self._block(x, width, stride, block == 0, training, updates)
            features = tf.reduce_mean(x, axis=[1, 2], name="global_avg_pool")
            with tf.variable_scope("head"):
                logits = layers.dense(features, self.num_classes, tf.random_normal_initializer(stddev=0.01))
        return ModelOutput(logits=logits, bn_updates=updates, features=features)

    def _block(self, x, width, stride, project, training, updates):
        with tf.variable_scope("conv_1"):
            y = _conv(x, 1, width, 1)
        y = tf.nn.relu(self._batch_norm(y, training, updates, "bn_1"))
        with tf.variable_scope("conv_2"):
            y = _conv(y, 3, width, stride)
        y = tf.nn.relu(self._batch_norm(y, training, updates, "bn_2"))
        with tf.variable_scope("conv_3"):
            y = _conv(y, 1, width * EXPANSION, 1)
        y = self._batch_norm(y, training, updates, "bn_3")

        def projection():
            with tf.variable_scope("shortcut"):
                shortcut = _conv(x, 1, width * EXPANSION, stride)
            return self._batch_norm(shortcut, training, updates, "bn_shortcut")

        return layers.residual_output(y, x, projection if project else None)

    def _batch_norm(self, x, training, updates, name):
        return layers.batch_norm(x, training, updates, name, momentum=self.bn_momentum, epsilon=BN_EPSILON)
