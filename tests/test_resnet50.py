"""ResNet-50 v1.5 (seed 003's ImageNet network): its parameter count derived from the layer shapes, the
stride in the 3x3 conv (v1.5), its 224 input spec, and a frozen graph that ATC's pre-check accepts at
input:1,224,224,3."""

import numpy as np
import pytest

from mpltool.tfv1 import tf


def bottleneck_parameters():
    """Trainable parameters of ResNet-50 for 1000 classes, from the architecture: convs (no bias), two
    BN parameters per channel, the classifier with bias."""
    def conv(k, c_in, c_out):
        return k * k * c_in * c_out + 2 * c_out  # + its BN's gamma and beta

    total = conv(7, 3, 64)
    c_in = 64
    for count, width in zip((3, 4, 6, 3), (64, 128, 256, 512)):
        for block in range(count):
            total += conv(1, c_in, width) + conv(3, width, width) + conv(1, width, 4 * width)
            if block == 0:
                total += conv(1, c_in, 4 * width)
            c_in = 4 * width
    return total + 2048 * 1000 + 1000


def test_resnet50_has_torchvisions_parameter_count_and_its_input_spec():
    from mpltool.models import build_model, input_spec

    assert bottleneck_parameters() == 25557032  # torchvision.models.resnet50: sum(p.numel())
    spec = input_spec("resnet50")
    assert spec.shape == (224, 224, 3) and spec.value_range == (0, 255)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    with tf.Graph().as_default():
        model = build_model("resnet50", num_classes=1000)
        out = model(tf.zeros([2, 224, 224, 3]), True, "model")
        count = sum(int(np.prod(v.shape.as_list())) for v in tf.trainable_variables())
        assert count == 25557032
        assert out.logits.shape.as_list() == [2, 1000] and out.features.shape.as_list() == [2, 2048]
        assert len(out.bn_updates) == 2 * 53  # 53 batch norms, two moving statistics each
        graph = tf.get_default_graph()
        # v1.5: the first block of stage 2 halves the map in its 3x3 conv; its first 1x1 keeps 56x56.
        assert graph.get_tensor_by_name("model/resnet50/stage_2/block_1/conv_1/Conv2D:0").shape.as_list()[1] == 56
        assert graph.get_tensor_by_name("model/resnet50/stage_2/block_1/conv_2/Conv2D:0").shape.as_list()[1] == 28


@pytest.mark.parametrize("name, bad", [("resnet50-16", "SIZE must be between 32 and 1024"),
                                       ("resnet50-2000", "SIZE must be between 32 and 1024")])
def test_bad_sizes_are_usage_errors(name, bad):
    from mpltool.errors import UsageError
    from mpltool.models import input_spec

    with pytest.raises(UsageError, match=bad):
        input_spec(name)


def test_a_frozen_resnet50_passes_atcs_precheck_at_1_224_224_3(tmp_path):
    from mpltool.convert.precheck import precheck_graph
    from mpltool.graphdef import read_graph_def
    from test_export_onnx import family_pb

    pb = family_pb(tmp_path / "resnet50.pb", "resnet50", num_classes=1000)
    result = precheck_graph(read_graph_def(pb), "input", [1, 224, 224, 3])
    assert result["problems"] == [], result["problems"]
