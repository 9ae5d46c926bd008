"""The one place that imports npu_bridge (Ascend's TF 1.15 adapter) and builds NPU settings.

npu_bridge is used when it imports and never required. Its import is guarded against any Exception,
not only ImportError: a broken CANN install makes `tf.load_op_library(_tf_adapter.so)` print an error
and the next import raise something else (docs/ascend-port.md §3).
"""

from pathlib import Path
from typing import Any, Callable, Optional

from mpltool import tuning
from mpltool.errors import ToolMissingError, UsageError

DEVICES = ("auto", "cpu", "gpu", "npu")
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"

_probe = {}  # cached result of the one import attempt


def npu_bridge():
    """The `npu_bridge.npu_init` module, or None when this host has no working npu_bridge."""
    if "module" not in _probe:
        try:
            import npu_bridge.npu_init as npu_init  # noqa: F401

            _probe["module"] = npu_init
            _probe["error"] = None
        except Exception as exc:  # any failure means "no NPU here", never a crash
            _probe["module"] = None
            _probe["error"] = "{}: {}".format(type(exc).__name__, exc)
    return _probe["module"]


def reset_probe() -> None:
    """Forget the cached import result (tests swap stand-in packages in and out)."""
    _probe.clear()


def _gpu_available() -> bool:
    from mpltool.tfv1 import tf  # first, so TF's start-up chatter stays silenced

    if not tf.test.is_built_with_cuda():
        return False
    from tensorflow.python.client import device_lib

    return any(d.device_type == "GPU" for d in device_lib.list_local_devices())


def resolve_device(device: str) -> str:
    """`auto` picks npu, then gpu, then cpu; a demanded npu that is missing is exit 5."""
    if device not in DEVICES:
        raise UsageError("unknown device {!r}: use one of {}".format(device, ", ".join(DEVICES)))
    if device == "npu":
        if npu_bridge() is None:
            raise ToolMissingError("--device npu demanded but npu_bridge does not import ({})".format(_probe["error"]),
                                   hint="run inside a CANN TensorFlow image and `source set_env.sh`")
        return "npu"
    if device == "auto":
        if npu_bridge() is not None:
            return "npu"
        return "gpu" if _gpu_available() else "cpu"
    if device == "gpu" and not _gpu_available():
        raise ToolMissingError("--device gpu demanded but TensorFlow sees no GPU",
                               hint="install mpltool[gpu] on a CUDA host, or use --device cpu")
    return device


def session_config(device: str, recipe: Any):
    """ConfigProto for the device: NpuOptimizer with the seed's three settings on NPU."""
    from mpltool.tfv1 import tf

    config = tf.ConfigProto(allow_soft_placement=True)
    if device == "gpu":
        config.gpu_options.allow_growth = True
    local = tuning.job_processes_on_host()
    if device == "cpu" and local > 1:
        threads = tuning.threads_per_process(local)
        config.intra_op_parallelism_threads = threads
        config.inter_op_parallelism_threads = threads
    if device != "npu":
        return config
    module = npu_bridge()
    from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

    custom_op = config.graph_options.rewrite_options.custom_optimizers.add()
    custom_op.name = "NpuOptimizer"
    custom_op.parameter_map["use_off_line"].b = True
    custom_op.parameter_map["precision_mode"].s = tf.compat.as_bytes(recipe.precision_mode)
    custom_op.parameter_map["modify_mixlist"].s = tf.compat.as_bytes(str(_recipe_file(recipe.modify_mixlist)))
    custom_op.parameter_map["fusion_switch_file"].s = tf.compat.as_bytes(str(_recipe_file(recipe.fusion_switch_file)))
    if recipe.npu_dynamic_input:  # the MixMatch seed's shape-changing inputs
        custom_op.parameter_map["dynamic_input"].b = True
    if recipe.npu_dynamic_graph_execute_mode != "off":
        custom_op.parameter_map["dynamic_graph_execute_mode"].s = tf.compat.as_bytes(
            recipe.npu_dynamic_graph_execute_mode)
    # Both must be explicitly off on Ascend (the adapter rejects graphs rewritten by them).
    config.graph_options.rewrite_options.remapping = RewriterConfig.OFF
    config.graph_options.rewrite_options.memory_optimization = RewriterConfig.OFF
    if hasattr(module, "npu_config_proto"):
        config = module.npu_config_proto(config_proto=config)
    return config


def _recipe_file(name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else RECIPE_DIR / path


def dropout_fn(device: str) -> Optional[Callable]:
    """npu_ops.dropout (DropOutGenMask/DoMask kernels) on NPU; None means the model's tf.nn.dropout."""
    if device != "npu":
        return None
    npu_ops = npu_bridge().npu_ops

    def npu_dropout(x, rate):
        return npu_ops.dropout(x, keep_prob=1.0 - rate)

    return npu_dropout


# The MixMatch seed's dynamic loss scale (its --loss_scale=0): start high, halve after 2 overflowing
# steps, double after 1000 finite ones.
EXPONENTIAL_LOSS_SCALE = {"init_loss_scale": 2 ** 32, "incr_every_n_steps": 1000, "decr_every_n_nan_or_inf": 2,
                          "decr_ratio": 0.5}


def optimizer_wrapper(device: str, recipe: Any, distributed: bool = False) -> Optional[Callable]:
    """On NPU, wrap each optimizer in NPULossScaleOptimizer with FixedLossScaleManager(recipe.loss_scale),
    or with the ExponentialUpdateLossScaleManager above when loss_scale is 0.

    The steps compute gradients through `optimizer.compute_gradients`, so the wrapper really
    scales the loss and unscales the gradients (the seed's tf.gradients path bypassed it).
    """
    if device != "npu":
        return None
    module = npu_bridge()

    def wrap(optimizer):
        if recipe.loss_scale == 0:
            manager = module.ExponentialUpdateLossScaleManager(**EXPONENTIAL_LOSS_SCALE)
        else:
            manager = module.FixedLossScaleManager(loss_scale=recipe.loss_scale,
                                                   enable_overflow_check=recipe.loss_scale_overflow_check)
        return module.NPULossScaleOptimizer(optimizer, manager, is_distributed=distributed)

    return wrap
