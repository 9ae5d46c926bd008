"""Import of pretrained weights from a `.npy` layer dictionary (bvlc_alexnet.npy) into a graph's variables.

The file is the Caffe AlexNet converted by M. Guerzhoy (cs.toronto.edu/~guerzhoy/tf_alexnet/), the one MASF
loads: a pickled dict layer name -> [W, b]; conv W is HWIO with grouped input channels (48 for conv2, 192 for
conv4 and conv5), fc W is [in, out]. models/alexnet.py keeps that layout, so each array goes into one
variable unchanged: `<scope>/<layer>/kernel` and `<scope>/<layer>/bias`.

Usage, after the variables are initialised (fc8, skipped by default, keeps its own initial value):

    weights = load_npy_weights(path, "model/caffe-alexnet")
    weights.run(session)   # or session.run(weights.ops, weights.feed_dict)

Nothing is added to the graph: each value is fed to the variable's own initializer (what
`tf.Variable.load` does), so a finalized training graph can import, and no 240 MB array becomes a graph
constant (a GraphDef is limited to 2 GB and a checkpoint would carry the constant twice).
"""

import collections
import os
import pickle
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from mpltool.errors import InvalidInputError, PrerequisiteError, first_line

DEFAULT_SKIP = ("fc8",)
SOURCE_URL = "http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/"
KERNEL, BIAS = "kernel", "bias"


class NpyWeights(collections.namedtuple("NpyWeights", ["ops", "feed_dict", "layers"])):
    """What `load_npy_weights` returns: the ops to run with `feed_dict`, and the layers they fill."""

    def run(self, session):
        session.run(self.ops, self.feed_dict)


def _key(name) -> str:
    if isinstance(name, bytes):  # a dict pickled by Python 2 and read with encoding='bytes'
        return name.decode("utf-8", errors="replace")
    return str(name)


def _shape(value) -> List[int]:
    return [int(d) for d in value.shape]


def read_npy_weights(path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """{layer: (W, b)} from a user-supplied bvlc_alexnet.npy-style file, keys as str.

    allow_pickle=True is needed because the format is a pickled dict in a 0-d object array, not a plain
    array; unpickling can run code, so only read a file you trust. mpltool only ever reads the path the
    user gives: it downloads nothing. encoding='bytes' reads the Python 2 pickle (its keys become bytes).

    A missing file is a PrerequisiteError (with where to get it); an unreadable file, one that is not a
    dict, or a layer that is not [W (2-D or 4-D), b (1-D)] is an InvalidInputError.
    """
    path = str(path)
    if not os.path.exists(path):
        raise PrerequisiteError("pretrained weights file {} not found".format(path),
                                hint="mpltool does not download it: get bvlc_alexnet.npy from {} and give its path"
                                .format(SOURCE_URL))
    try:
        loaded = np.load(path, allow_pickle=True, encoding="bytes")
        content = loaded.item() if isinstance(loaded, np.ndarray) and loaded.shape == () else loaded
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, IndexError,
            TypeError, UnicodeError, MemoryError) as exc:
        raise InvalidInputError("cannot read pretrained weights {}: {}".format(path, first_line(exc)))
    if not isinstance(content, dict):
        raise InvalidInputError("pretrained weights {} hold a {}, not a dict of layer -> [weights, biases]".format(
            path, type(content).__name__))
    layers = {}
    for name, arrays in content.items():
        layer = _key(name)
        try:
            arrays = [np.asarray(a) for a in arrays]
        except TypeError:
            arrays = []
        kernels = [a for a in arrays if a.ndim >= 2 and a.dtype.kind == "f"]
        biases = [a for a in arrays if a.ndim == 1 and a.dtype.kind == "f"]
        if len(arrays) != 2 or len(kernels) != 1 or len(biases) != 1:
            raise InvalidInputError("pretrained weights {}: layer {} is not [weights, biases] (got {})".format(
                path, layer, ", ".join("{} {}".format(a.dtype, _shape(a)) for a in arrays) or "no arrays"))
        layers[layer] = (kernels[0], biases[0])
    return layers


def load_npy_weights(path, scope: str, variables: Optional[Iterable] = None,
                     skip: Sequence[str] = DEFAULT_SKIP) -> NpyWeights:
    """The feeds that load every layer of `path` except `skip` into `<scope>/<layer>/{kernel,bias}`.

    `variables`: the graph's variables to fill (default: the default graph's global variables); those
    under `scope/` name the layers `<layer>/kernel` + `<layer>/bias`. Both sides must match exactly
    outside `skip`: a layer the graph has and the file lacks (or the reverse) or a shape mismatch is an
    InvalidInputError naming the layer (and both shapes). Run `result.ops` with `result.feed_dict` after
    the variables' initialisation, or `result.run(session)`.
    """
    if variables is None:
        from mpltool.tfv1 import tf

        variables = tf.global_variables()
    skip = tuple(skip)
    weights = read_npy_weights(path)  # first: a missing file is what the user must fix
    prefix = scope.rstrip("/") + "/"
    graph_layers = collections.OrderedDict()  # layer -> {kernel|bias: variable}
    for variable in variables:
        name = variable.op.name
        if not name.startswith(prefix):
            continue
        layer, _, kind = name[len(prefix):].rpartition("/")
        if kind in (KERNEL, BIAS) and layer:
            graph_layers.setdefault(layer, {})[kind] = variable
    if not graph_layers:
        raise InvalidInputError("no layer variables under '{}' to load {} into".format(prefix, path))

    wanted = [layer for layer in graph_layers if layer not in skip]
    missing = [layer for layer in wanted if layer not in weights]
    if missing:
        raise InvalidInputError("pretrained weights {} lack layer {} (the file has: {})".format(
            path, ", ".join(missing), ", ".join(sorted(weights)) or "nothing"))
    unknown = sorted(layer for layer in weights if layer not in graph_layers and layer not in skip)
    if unknown:
        raise InvalidInputError("pretrained weights {} hold layer {}, which the graph lacks under '{}' (it has: {})"
                                .format(path, ", ".join(unknown), prefix, ", ".join(graph_layers)))

    ops, feeds = [], {}
    for layer in wanted:
        found = graph_layers[layer]
        for kind, value in zip((KERNEL, BIAS), weights[layer]):
            variable = found.get(kind)
            if variable is None:
                raise InvalidInputError("the graph has no variable {}{}/{} for layer {} of {}".format(
                    prefix, layer, kind, layer, path))
            expected = variable.shape.as_list()
            if _shape(value) != expected:
                raise InvalidInputError("pretrained weights {}: layer {} {} has shape {} but {} is {}".format(
                    path, layer, kind, _shape(value), variable.op.name, expected))
            # Feed the variable's initial value: its initializer then assigns the file's array (the
            # mechanism of tf.Variable.load, batched into one run).
            ops.append(variable.initializer)
            feeds[variable.initializer.inputs[1]] = value.astype(variable.dtype.base_dtype.as_numpy_dtype,
                                                                  copy=False)
    return NpyWeights(ops=ops, feed_dict=feeds, layers=tuple(wanted))
