"""The two changes that cut a training step's memory (docs/performance.md) change no number.

1. layers.leaky_relu's gradient reads the op's output instead of its input (same values bit for bit, and
   batch norm's output is freed after the activation).
2. MPL in `reference` mode finishes the teacher's backward pass before the student's forward starts
   (tests/test_mpl.py checks the step's numbers against numpy in both modes).
"""

import numpy as np
import pytest

from mpltool.models import build_model, layers
from mpltool.recipes import load_recipe
from mpltool.tfv1 import tf


def test_leaky_relu_gradient_equals_tensorflows_bit_for_bit_including_zero_and_tiny_values():
    values = np.concatenate([np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 3.0, -3.0], np.float32),
                             np.random.RandomState(0).randn(1000).astype(np.float32)])
    upstream = np.random.RandomState(1).randn(values.size).astype(np.float32)
    with tf.Graph().as_default():
        x = tf.constant(values)
        for alpha in (0.2, 0.1, 1e-3):
            ours, stock = layers.leaky_relu(x, alpha), tf.nn.leaky_relu(x, alpha=alpha)
            grads = tf.gradients(ours, x, upstream)[0], tf.gradients(stock, x, upstream)[0]
            with tf.Session() as session:
                (y_ours, g_ours), (y_stock, g_stock) = session.run([(ours, grads[0]), (stock, grads[1])])
            np.testing.assert_array_equal(y_ours, y_stock)
            np.testing.assert_array_equal(g_ours, g_stock)


def test_leaky_relu_gradient_reads_the_output_so_the_input_is_not_kept():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [4])
        y = layers.leaky_relu(x * 2.0, 0.2)
        grad_op = tf.gradients(y, x)[0].op.inputs[0].op  # mul's gradient <- LeakyReluGrad
        while grad_op.type != "LeakyReluGrad":
            grad_op = grad_op.inputs[0].op
        assert grad_op.inputs[1] is y, "the gradient reads {}, not the activation's output".format(grad_op.inputs[1])


def test_a_network_gradient_is_unchanged_by_the_output_based_leaky_relu_gradient(monkeypatch):
    """WRN-10-1 (pre-activation: batch norm -> leaky ReLU -> conv), same weights and batch: every
    variable's gradient equal, bit for bit, with TensorFlow's own LeakyRelu gradient."""
    images = np.random.RandomState(2).randn(8, 32, 32, 3).astype(np.float32)
    labels = np.arange(8) % 10

    def gradients():
        with tf.Graph().as_default():
            tf.set_random_seed(3)
            out = build_model("wrn-10-1")(tf.constant(images), True, "net")
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=out.logits))
            variables = tf.trainable_variables()
            with tf.Session() as session:
                session.run(tf.global_variables_initializer())
                return session.run(tf.gradients(loss, variables))

    ours = gradients()
    monkeypatch.setattr(layers, "leaky_relu", lambda x, alpha: tf.nn.leaky_relu(x, alpha=alpha))
    stock = gradients()
    assert len(ours) == len(stock) > 10
    for a, b in zip(ours, stock):
        np.testing.assert_array_equal(a, b)


def _step_graph(feedback):
    from mpltool.algorithms.mpl import build_mpl_step

    recipe = load_recipe("mpl-demo", ["mpl_feedback=" + feedback, "batch_size=2", "uda_data=1"])
    graph = tf.Graph()
    with graph.as_default():
        images = tf.zeros([2, 32, 32, 3])
        build_mpl_step(build_model("wrn-10-1"), recipe, images, tf.zeros([2], tf.int64), images, images,
                       tf.train.get_or_create_global_step())
    return graph


def _student_input(graph):
    return next(op for op in graph.get_operations() if op.type == "ConcatV2" and any(
        consumer.name.startswith("student/") for consumer in op.outputs[0].consumers()))


def _depends_on_teacher_backward(op):
    """Whether `op` runs only after a teacher weight-gradient conv (through data or control edges)."""
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        if current.type == "Conv2DBackpropFilter" and "/teacher/" in "/" + current.name:
            return True
        stack.extend(t.op for t in current.inputs)
        stack.extend(current.control_inputs)
    return False


@pytest.mark.parametrize("feedback,waits", [("reference", True), ("paper", False)])
def test_the_student_forward_waits_for_the_teachers_backward_in_reference_mode_only(feedback, waits):
    assert _depends_on_teacher_backward(_student_input(_step_graph(feedback))) == waits
