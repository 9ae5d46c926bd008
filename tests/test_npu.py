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


class ExponentialUpdateLossScaleManager(object):
    def __init__(self, init_loss_scale, incr_every_n_steps, decr_every_n_nan_or_inf=2, incr_ratio=2,
                 decr_ratio=0.8):
        calls.append(("ExponentialUpdateLossScaleManager", init_loss_scale, incr_every_n_steps,
                      decr_every_n_nan_or_inf, decr_ratio))
        self.loss_scale = init_loss_scale
        self.enable_overflow_check = True  # the dynamic manager always watches for overflow


class NPULossScaleOptimizer(tf.train.Optimizer):
    def __init__(self, opt, loss_scale_manager, is_distributed=False):
        super(NPULossScaleOptimizer, self).__init__(False, "NPULossScaleOptimizer")
        self._opt = opt
        self._manager = loss_scale_manager
        calls.append(("wrap", loss_scale_manager.loss_scale, loss_scale_manager.enable_overflow_check))
        if is_distributed:
            calls.append(("loss_scale_is_distributed",))

    def compute_gradients(self, loss, var_list=None, **kwargs):
        scale = float(self._manager.loss_scale)
        calls.append(("compute_gradients", scale))
        pairs = self._opt.compute_gradients(loss * scale, var_list=var_list, **kwargs)
        return [(None if g is None else g / scale, v) for g, v in pairs]

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        calls.append(("apply_gradients",))
        return self._opt.apply_gradients(grads_and_vars, global_step=global_step, name=name)


class NPUDistributedOptimizer(tf.train.Optimizer):
    """Stands for the HCCL all-reduce of the gradients (identity here: one real process)."""

    def __init__(self, optimizer, name=None):
        super(NPUDistributedOptimizer, self).__init__(False, "NPUDistributedOptimizer")
        self._opt = optimizer
        calls.append(("distributed_optimizer",))

    def compute_gradients(self, loss, var_list=None, **kwargs):
        calls.append(("allreduce_gradients",))
        return self._opt.compute_gradients(loss, var_list=var_list, **kwargs)

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        return self._opt.apply_gradients(grads_and_vars, global_step=global_step, name=name)


class _HcclOps(object):
    def broadcast(self, tensor, root_rank):
        calls.append(("broadcast", len(tensor), root_rank))
        return [tf.identity(t) for t in tensor]

    def allreduce(self, tensor, reduction):
        # As if every replica held the same value: the sum is size times it.
        import os
        calls.append(("allreduce", reduction))
        return tensor * float(os.environ["RANK_SIZE"])


hccl_ops = _HcclOps()
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


def _wrap_one(recipe):
    """The NPU wrapper applied to one plain optimizer; its gradients of a tiny loss (scale undone)."""
    wrapper = npu.optimizer_wrapper("npu", recipe)
    with tf.Graph().as_default():
        x = tf.Variable(3.0)
        wrapped = wrapper(tf.train.GradientDescentOptimizer(0.1))
        grads = wrapped.compute_gradients(x * x, var_list=[x])
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            value = session.run(grads[0][0])
    return wrapped, value


def test_loss_scale_0_builds_the_seeds_exponential_manager(stand_in):
    """loss_scale 0 is the MixMatch seed's dynamic scaling: ExponentialUpdateLossScaleManager(2^32, 1000, 2,
    0.5). A fixed scale there would overflow fp16 gradients or underflow them."""
    wrapped, grad = _wrap_one(load_recipe("mixmatch-cifar10-250", ["loss_scale=0"]))
    calls = sys.modules["npu_bridge.npu_init"].calls
    assert ("ExponentialUpdateLossScaleManager", 2 ** 32, 1000, 2, 0.5) in calls
    assert ("wrap", 2 ** 32, True) in calls and ("compute_gradients", float(2 ** 32)) in calls
    assert type(wrapped).__name__ == "NPULossScaleOptimizer"
    assert grad == pytest.approx(6.0)  # d(x^2)/dx at 3, scaled by 2^32 and back


def test_a_fixed_loss_scale_builds_the_fixed_manager(stand_in):
    """The recipe's 999 (the MixMatch port's) reaches FixedLossScaleManager unchanged, no dynamic manager."""
    wrapped, grad = _wrap_one(load_recipe("mixmatch-cifar10-250"))
    calls = sys.modules["npu_bridge.npu_init"].calls
    assert not [c for c in calls if c[0] == "ExponentialUpdateLossScaleManager"]
    assert ("wrap", 999.0, False) in calls and ("compute_gradients", 999.0) in calls
    assert type(wrapped._manager).__name__ == "FixedLossScaleManager" and wrapped._manager.loss_scale == 999.0
    assert grad == pytest.approx(6.0)
    assert npu.optimizer_wrapper("cpu", load_recipe("mixmatch-cifar10-250", ["loss_scale=0"])) is None


def test_a_loss_scale_between_0_and_1_is_refused():
    """0 < scale < 1 would shrink the losses the scaling exists to enlarge: refused when the recipe loads."""
    from mpltool.errors import UsageError

    with pytest.raises(UsageError) as info:
        load_recipe("mpl-wrn28-2", ["loss_scale=0.5"])
    assert "loss_scale" in str(info.value) and "0 (dynamic)" in str(info.value)
    assert load_recipe("mpl-wrn28-2", ["loss_scale=1"]).loss_scale == 1.0


def _npu_params(recipe):
    config = npu.session_config("npu", recipe)
    optimizers = [o for o in config.graph_options.rewrite_options.custom_optimizers if o.name == "NpuOptimizer"]
    assert len(optimizers) == 1
    return optimizers[0].parameter_map


def test_mixmatch_recipe_sets_dynamic_input_and_lazy_recompile(stand_in):
    """The MixMatch step feeds inputs whose shape changes between runs; without dynamic_input and
    lazy_recompile the NPU graph would be compiled for one shape and fail on the next."""
    params = _npu_params(load_recipe("mixmatch-cifar10-250"))
    assert params["dynamic_input"].b is True
    assert params["dynamic_graph_execute_mode"].s == b"lazy_recompile"
    assert params["precision_mode"].s == b"force_fp32"
    assert params["use_off_line"].b is True


def test_mpl_recipe_sets_no_dynamic_keys(stand_in):
    """Static-shape recipes must not pay for dynamic compilation (nor ask an adapter that lacks the keys)."""
    params = _npu_params(load_recipe("mpl-wrn28-2"))
    assert "dynamic_input" not in params and "dynamic_graph_execute_mode" not in params
    assert params["precision_mode"].s == b"allow_mix_precision"


def test_under_a_rank_table_training_uses_hccl_through_npu_bridge(stand_in, monkeypatch, tmp_path):
    """The Ascend path of data-parallel training, as far as a host without an NPU can run it: the rank-table
    environment makes the replicas HCCL's, every optimizer is wrapped in NPUDistributedOptimizer (inside the
    loss scale, which is told it is distributed), MPL's h is all-reduced, and rank 0's variables are
    broadcast; one step then runs."""
    from mpltool import parallel
    from mpltool.train.trainer import TrainingGraph

    monkeypatch.setenv("RANK_TABLE_FILE", str(tmp_path / "rank_table.json"))
    monkeypatch.setenv("RANK_SIZE", "2")
    monkeypatch.setenv("RANK_ID", "0")
    replicas = parallel.detect("npu")
    assert isinstance(replicas, parallel.HcclReplicas) and (replicas.rank, replicas.size) == (0, 2)
    recipe = load_recipe("mpl-wrn28-2", ["model=wrn-10-1", "batch_size=2", "uda_data=1", "eval_batch_size=4"])
    recipe["replicas"] = 2
    graph = TrainingGraph(recipe, "npu", replicas=replicas)
    calls = sys.modules["npu_bridge.npu_init"].calls
    assert calls.count(("distributed_optimizer",)) == 2  # teacher and student
    assert calls.count(("loss_scale_is_distributed",)) == 2
    assert calls.count(("allreduce", "sum")) == 1  # MPL's h, averaged over the replicas
    with graph.graph.as_default():
        variables = len(tf.global_variables())
    assert ("broadcast", variables, 0) in calls
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(8, 32, 32, 3)).astype(np.uint8)
    labels = np.arange(8) % 10
    with tf.Session(graph=graph.graph) as session:
        session.run(graph.init)
        session.run(graph.broadcast)
        graph.input.initialize(session, images, labels, np.arange(4), np.arange(8))
        session.run(graph.step.train_op)
        assert session.run(graph.global_step) == 1
