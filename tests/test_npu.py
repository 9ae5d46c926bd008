"""mpltool/npu.py against a stand-in npu_bridge package: the settings the seed used, wired for real."""

import sys
import textwrap

import numpy as np
import pytest

from mpltool import npu
from mpltool.errors import ToolMissingError
from mpltool.recipes import load_recipe
from mpltool.tfv1 import tf

STAND_IN = '''
"""A stand-in for Ascend's npu_bridge.npu_init: records how mpltool uses it."""
import tensorflow as _tf
tf = _tf.compat.v1
calls = []


def npu_config_proto(config_proto=None):
    calls.append(("npu_config_proto",))
    config_proto.allow_soft_placement = True
    return config_proto


class _NpuOps(object):
    def dropout(self, x, keep_prob, noise_shape=None, seed=None, name=None):
        calls.append(("dropout", keep_prob))
        return tf.nn.dropout(x, rate=1.0 - keep_prob)


npu_ops = _NpuOps()


class FixedLossScaleManager(object):
    def __init__(self, loss_scale, enable_overflow_check=True):
        self.loss_scale = loss_scale
        self.enable_overflow_check = enable_overflow_check


class NPULossScaleOptimizer(tf.train.Optimizer):
    def __init__(self, opt, loss_scale_manager, is_distributed=False):
        super(NPULossScaleOptimizer, self).__init__(False, "NPULossScaleOptimizer")
        self._opt = opt
        self._manager = loss_scale_manager
        calls.append(("wrap", loss_scale_manager.loss_scale, loss_scale_manager.enable_overflow_check))

    def compute_gradients(self, loss, var_list=None, **kwargs):
        scale = float(self._manager.loss_scale)
        calls.append(("compute_gradients", scale))
        pairs = self._opt.compute_gradients(loss * scale, var_list=var_list, **kwargs)
        return [(None if g is None else g / scale, v) for g, v in pairs]

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        calls.append(("apply_gradients",))
        return self._opt.apply_gradients(grads_and_vars, global_step=global_step, name=name)
'''


@pytest.fixture()
def stand_in(tmp_path, monkeypatch):
    package = tmp_path / "npu_bridge"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "npu_init.py").write_text(textwrap.dedent(STAND_IN))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n.startswith("npu_bridge")]:
        monkeypatch.delitem(sys.modules, name)
    npu.reset_probe()
    yield package
    npu.reset_probe()
    for name in [n for n in sys.modules if n.startswith("npu_bridge")]:
        del sys.modules[name]


def test_npu_is_chosen_when_npu_bridge_imports(stand_in):
    assert npu.resolve_device("npu") == "npu"
    assert npu.resolve_device("auto") == "npu"


def test_session_config_carries_the_seeds_npu_settings(stand_in):
    recipe = load_recipe("mpl-wrn28-2")
    config = npu.session_config("npu", recipe)
    optimizers = [o for o in config.graph_options.rewrite_options.custom_optimizers if o.name == "NpuOptimizer"]
    assert len(optimizers) == 1
    params = optimizers[0].parameter_map
    assert params["precision_mode"].s == b"allow_mix_precision"
    assert params["use_off_line"].b is True
    mixlist = params["modify_mixlist"].s.decode()
    fusion = params["fusion_switch_file"].s.decode()
    assert mixlist.endswith("recipes/ops_info.json") and fusion.endswith("recipes/fusion_switch.cfg")
    import json
    assert json.load(open(mixlist)) == {"black-list": {"to-add": [], "to-remove": []},
                                        "white-list": {"to-add": [], "to-remove": []}}
    assert json.load(open(fusion))["Switch"]["GraphFusion"] == {"SoftmaxArgMaxValueONNXFusionPass": "off"}
    from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig
    assert config.graph_options.rewrite_options.remapping == RewriterConfig.OFF
    assert config.graph_options.rewrite_options.memory_optimization == RewriterConfig.OFF
    assert ("npu_config_proto",) in sys.modules["npu_bridge.npu_init"].calls
    forced = npu.session_config("npu", load_recipe("mpl-wrn28-2", ["precision_mode=force_fp32"]))
    assert forced.graph_options.rewrite_options.custom_optimizers[0].parameter_map["precision_mode"].s == b"force_fp32"


def test_cpu_config_has_no_npu_optimizer(stand_in):
    config = npu.session_config("cpu", load_recipe("mpl-wrn28-2"))
    assert not config.graph_options.rewrite_options.custom_optimizers


def test_npu_dropout_and_loss_scale_wrapper_are_used_by_the_mpl_step(stand_in):
    from mpltool.models import build_model
    from mpltool.algorithms.mpl import build_mpl_step

    recipe = load_recipe("mpl-wrn28-2", ["model=wrn-10-1", "batch_size=2", "uda_data=1"])
    dropout = npu.dropout_fn("npu")
    wrapper = npu.optimizer_wrapper("npu", recipe)
    calls = sys.modules["npu_bridge.npu_init"].calls
    with tf.Graph().as_default():
        rng = np.random.RandomState(0)
        images = [tf.constant(rng.randn(2, 32, 32, 3).astype(np.float32)) for _ in range(3)]
        labels = tf.constant([1, 2], dtype=tf.int64)
        model = build_model(recipe.model, 10, recipe.dropout_rate, dropout_fn=dropout)
        step = build_mpl_step(model, recipe, images[0], labels, images[1], images[2],
                              tf.train.get_or_create_global_step(), optimizer_wrapper=wrapper)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            session.run(step.ema_init_op)
            session.run(step.train_op)
            assert session.run(tf.train.get_global_step()) == 1
    assert ("dropout", pytest.approx(0.8)) in calls
    assert calls.count(("wrap", 10.0, False)) == 2  # teacher and student, FixedLossScaleManager(10) as the seed
    assert calls.count(("compute_gradients", 10.0)) == 2 and calls.count(("apply_gradients",)) == 2


def test_a_broken_npu_bridge_means_no_npu_not_a_crash(tmp_path, monkeypatch):
    package = tmp_path / "npu_bridge"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "npu_init.py").write_text("raise RuntimeError('libtf_adapter.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    npu.reset_probe()
    try:
        assert npu.npu_bridge() is None
        assert npu.resolve_device("auto") in ("cpu", "gpu")
        with pytest.raises(ToolMissingError) as info:
            npu.resolve_device("npu")
        assert info.value.exit_code == 5 and "libtf_adapter.so" in str(info.value)
    finally:
        npu.reset_probe()
        for name in [n for n in sys.modules if n.startswith("npu_bridge")]:
            del sys.modules[name]
