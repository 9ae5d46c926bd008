"""The inference graph, and running it from a checkpoint or from a frozen .pb.

Eval and freeze share this one definition so the frozen model and the evaluated model cannot drift:
raw 0..255 pixels in (`input`), normalisation inside the graph, `training=False` as a Python bool
(no Switch/Merge, no dropout, BN on moving statistics), `logits` and `probs` out.

Weights are restored with a Saver built over exactly the variables this graph created -- never
`import_meta_graph`, whose second copy of the graph (`..._1` names) is where the Ascend port's restore
went while the frozen graph kept its initial weights. No initializer is ever run here, so a variable the
checkpoint does not fill cannot silently keep a random value: it is refused by name before the restore.
"""

import abc
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from mpltool import graphdef
from mpltool.errors import InvalidInputError
from mpltool.models import build_model, classifier_bias, is_model_name, normalize_input
from mpltool.tfv1 import tf

INPUT_NAME = "input"
LOGITS_NAME = "logits"
PROBS_NAME = "probs"
OUTPUT_NAMES = (LOGITS_NAME, PROBS_NAME)


def build_inference_graph(model, scope: str, batch_size: Optional[int] = None):
    """(input, logits, probs) in the current graph, which must not already hold these names.

    The input's shape and normalisation are the model's input spec (models/__init__.py)."""
    spec = model.input_spec
    images = tf.placeholder(tf.float32, [batch_size] + list(spec.shape), name=INPUT_NAME)
    output = model(normalize_input(images, spec), training=False, scope=scope)
    logits = tf.identity(output.logits, name=LOGITS_NAME)
    probs = tf.identity(tf.nn.softmax(output.logits), name=PROBS_NAME)
    for tensor, name in ((images, INPUT_NAME), (logits, LOGITS_NAME), (probs, PROBS_NAME)):
        if tensor.op.name != name:  # a name clash would make TF rename the node silently
            raise RuntimeError("inference graph node {!r} was created as {!r}; build it in a fresh tf.Graph"
                               .format(name, tensor.op.name))
    return images, logits, probs


def network_in_checkpoint(variables: Dict[str, List[int]], scope: str, prefix: str):
    """(model name, num_classes) of a checkpoint no train record describes: the registered network whose
    name is the scope below `scope/`, and its class count from the classifier the registry names."""
    names = sorted({name.split("/")[1] for name in variables
                    if name.startswith(scope + "/") and name.count("/") >= 2 and is_model_name(name.split("/")[1])})
    if not names:
        scopes = sorted({name.split("/")[0] for name in variables if "/" in name})
        raise InvalidInputError("checkpoint {} holds no network under '{}/' (it has: {})".format(
            prefix, scope, ", ".join(scopes) or "no scoped variables"))
    if len(names) > 1:
        raise InvalidInputError("checkpoint {} holds several networks under '{}/': {}".format(
            prefix, scope, ", ".join(names)))
    bias = "{}/{}/{}".format(scope, names[0], classifier_bias(names[0]))
    if bias not in variables or len(variables[bias]) != 1:
        raise InvalidInputError("checkpoint {} lacks the classifier variable {}".format(prefix, bias))
    return names[0], int(variables[bias][0])


def resolve_network(variables: Dict[str, List[int]], scope: str, prefix: str, network: Optional[Dict] = None):
    """{model, num_classes, input_spec} of the network to run: as the train record describes it, or, for a
    checkpoint no record describes, found through the registry (network_in_checkpoint)."""
    from mpltool.models import input_spec, spec_record

    if network:
        return network
    model_name, num_classes = network_in_checkpoint(variables, scope, prefix)
    return {"model": model_name, "num_classes": num_classes, "input_spec": spec_record(input_spec(model_name))}


def check_variables_present(graph_variables, stored: Dict[str, List[int]], prefix: str) -> None:
    """Refuse (exit 3) a checkpoint that lacks, or has another shape for, any variable of the graph."""
    missing, wrong_shape = [], []
    for variable in graph_variables:
        name = variable.op.name
        if name not in stored:
            missing.append(name)
        elif list(stored[name]) != variable.shape.as_list():
            wrong_shape.append("{} {} != {}".format(name, list(stored[name]), variable.shape.as_list()))
    if missing:
        raise InvalidInputError("checkpoint {} lacks {} variable(s) of the inference graph: {}".format(
            prefix, len(missing), _first(missing)))
    if wrong_shape:
        raise InvalidInputError("checkpoint {} has other shapes for {} variable(s): {}".format(
            prefix, len(wrong_shape), _first(wrong_shape)))


def _first(items: Sequence[str], count: int = 3) -> str:
    shown = ", ".join(items[:count])
    return shown + (", ... ({} more)".format(len(items) - count) if len(items) > count else "")


class InferenceModel(abc.ABC):
    """What every runnable model offers (a checkpoint's inference graph, a frozen .pb, an .onnx): raw
    0..255 NHWC pixels in, logits out, run at its static batch when it has one; closed by `with`."""

    num_classes = None  # type: Optional[int]
    static_batch = None  # type: Optional[int]  # the batch it must be fed (None: any)

    @abc.abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Logits [N, classes] of raw pixels [N, H, W, 3]."""

    @property
    @abc.abstractmethod
    def image_shape(self) -> List[Optional[int]]:
        """[height, width, channels] of one input image (None where the model does not fix it)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the session (or runtime) behind the model."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _OwnsSession(InferenceModel):
    """A network in its own graph and session."""

    session = None

    def close(self) -> None:
        self.session.close()


class CheckpointModel(_OwnsSession):
    """The inference graph of one network (`scope`: ema/student/teacher) restored from a checkpoint.

    `variables` is the checkpoint's name -> shape map (mpltool.checkpoints.checkpoint_variables, which
    already turned an unreadable checkpoint into exit 3).
    """

    def __init__(self, prefix: str, scope: str, variables: Dict[str, List[int]], batch_size: Optional[int] = None,
                 network: Optional[Dict] = None):
        """`network`: {model, num_classes} as the train record describes it; None for a checkpoint from
        elsewhere (then found in its variable names through the model registry)."""
        self.prefix = str(prefix)
        self.scope = scope
        self.network = resolve_network(variables, scope, self.prefix, network)
        self.model_name, self.num_classes = self.network["model"], int(self.network["num_classes"])
        self.batch_size = batch_size
        self.graph = tf.Graph()
        with self.graph.as_default():
            model = build_model(self.model_name, num_classes=self.num_classes, dropout_rate=0.0)
            self.input, self.logits, self.probs = build_inference_graph(model, scope, batch_size)
            self.variables = tf.global_variables()
            check_variables_present(self.variables, variables, self.prefix)
            saver = tf.train.Saver(var_list={v.op.name: v for v in self.variables})
        self.session = tf.Session(graph=self.graph)
        try:
            saver.restore(self.session, self.prefix)
        except tf.errors.OpError as exc:
            self.session.close()
            raise InvalidInputError("unreadable checkpoint {}: {}".format(self.prefix, _first_line(exc)))
        with self.graph.as_default():
            uninitialised = tf.report_uninitialized_variables(self.variables)
        left = [name.decode() for name in self.session.run(uninitialised)]
        if left:  # cannot happen after a complete restore; guards the invariant the freeze relies on
            self.session.close()
            raise InvalidInputError("checkpoint {} did not fill: {}".format(self.prefix, _first(left)))

    @property
    def variable_names(self) -> List[str]:
        return [v.op.name for v in self.variables]

    @property
    def image_shape(self) -> List[Optional[int]]:
        return list(self.network["input_spec"]["shape"])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(self.logits, {self.input: images})



def run_at_static_batch(run, images: np.ndarray, static_batch: Optional[int], num_classes: Optional[int]) -> np.ndarray:
    """`run(images)` -> logits for a model whose input may have a static batch: images in chunks of that
    batch, the last one padded with zeros and its padding dropped (any batch: one call)."""
    images = np.asarray(images, np.float32)
    if not static_batch:
        return run(images)
    parts = []
    for start in range(0, images.shape[0], static_batch):
        chunk = images[start:start + static_batch]
        valid = chunk.shape[0]
        if valid < static_batch:
            chunk = np.concatenate([chunk, np.zeros((static_batch - valid,) + chunk.shape[1:], np.float32)])
        parts.append(run(chunk)[:valid])
    if not parts:
        return np.zeros((0, num_classes or 0), np.float32)
    return np.concatenate(parts)


def batched_logits(predict_batch: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int,
                   progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """predict_batch over consecutive slices of `images`; one row of logits per image, in order.

    `progress(done, total)` is called after every batch with image counts.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1, got {}".format(batch_size))
    total = int(images.shape[0])
    parts = []
    for start in range(0, total, batch_size):
        batch = images[start:start + batch_size]
        logits = np.asarray(predict_batch(batch))
        if logits.ndim != 2 or logits.shape[0] != batch.shape[0]:
            raise ValueError("predict_batch returned logits of shape {} for a batch of {} images".format(
                logits.shape, batch.shape[0]))
        parts.append(logits)
        if progress is not None:
            progress(start + batch.shape[0], total)
    if not parts:
        raise ValueError("no images to evaluate")
    return np.concatenate(parts)


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_graph_def(path) -> "tf.GraphDef":
    """mpltool.graphdef's reader, also refusing (exit 3) a graph without `input` and `logits`, which eval runs."""
    return graphdef.read_graph_def(path, required_nodes=(INPUT_NAME, LOGITS_NAME))


def parse_graph_def(data: bytes, what: str) -> "tf.GraphDef":
    """mpltool.graphdef's parser, with read_graph_def's `input`/`logits` requirement."""
    return graphdef.parse_graph_def(data, what, required_nodes=(INPUT_NAME, LOGITS_NAME))


def frozen_session_config():
    """Grappler's remapper off on MKL builds (intel-tensorflow): there it splits a FusedBatchNorm whose
    parameters are constants (as in every frozen graph) into Mul/Add with layout conversions around them,
    which made the .pb ~1.5x slower than the checkpoint graph (TF timeline, benchmarks/eval.py), and after
    batch-norm folding it still cost 10% on the CIFAR ResNet-18. On stock TF it stays on: it fuses
    Conv2D + BiasAdd + Relu, 10% faster on the folded ResNet-18, neutral on WRN. (The NPU session config
    is npu.py's, not this.)"""
    from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

    config = tf.ConfigProto()
    if _mkl_build():
        config.graph_options.rewrite_options.remapping = RewriterConfig.OFF
    return config


def _mkl_build() -> bool:
    try:
        from tensorflow.python import pywrap_tensorflow

        return bool(pywrap_tensorflow.IsMklEnabled())
    except (ImportError, AttributeError):
        return False


def _image_shape(graph_def) -> List[Optional[int]]:
    """The per-image shape the graph's own `input` placeholder declares (its batch dimension dropped)."""
    for node in graph_def.node:
        if node.name == INPUT_NAME and node.attr["shape"].shape.dim:
            return [None if d.size < 0 else int(d.size) for d in node.attr["shape"].shape.dim][1:]
    return [None, None, None]


class FrozenModel(_OwnsSession):
    """A frozen GraphDef in its own graph and session.

    `any_batch=True` maps `input` onto a [None,32,32,3] placeholder (eval: batch as you like; works because
    the graph has no Reshape tied to its batch); `any_batch=False` runs the graph exactly as written,
    so a static batch is fed that many images at a time (the last batch padded, its padding dropped).
    """

    def __init__(self, graph_def, what: str, any_batch: bool = True):
        self.graph = tf.Graph()
        with self.graph.as_default():
            input_map = None
            if any_batch:
                input_map = {INPUT_NAME + ":0": tf.placeholder(tf.float32, [None] + _image_shape(graph_def),
                                                               name=INPUT_NAME)}
            try:
                tf.import_graph_def(graph_def, input_map=input_map, name="frozen")
            except (ValueError, TypeError, tf.errors.OpError) as exc:
                raise InvalidInputError("{} cannot be loaded as a graph: {}".format(what, _first_line(exc)))
            self.input = input_map[INPUT_NAME + ":0"] if any_batch else self.graph.get_tensor_by_name(
                "frozen/" + INPUT_NAME + ":0")
            self.logits = self.graph.get_tensor_by_name("frozen/" + LOGITS_NAME + ":0")
        static = self.input.shape.as_list()[0] if self.input.shape.ndims else None
        self.static_batch = None if any_batch else static
        self.num_classes = self.logits.shape.as_list()[-1] if self.logits.shape.ndims else None
        self.session = tf.Session(graph=self.graph, config=frozen_session_config())

    @property
    def image_shape(self) -> List[Optional[int]]:
        return self.input.shape.as_list()[1:] if self.input.shape.ndims else [None, None, None]

    def tensor(self, name: str):
        """A tensor of the graph as written (`input` is the original one, whatever input_map did)."""
        return self.graph.get_tensor_by_name("frozen/{}:0".format(name))

    def predict(self, images: np.ndarray) -> np.ndarray:
        return run_at_static_batch(self._run, images, self.static_batch, self.num_classes)

    def _run(self, images: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(self.logits, {self.input: images})
        except tf.errors.OpError as exc:
            raise InvalidInputError("the frozen graph failed to run: {}".format(_first_line(exc)))

