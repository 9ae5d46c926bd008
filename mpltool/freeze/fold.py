"""Inference-only simplifications of a frozen GraphDef, each one exact algebra whose result freeze's parity
check then verifies on real images (a wrong fold is exit 7, never a silently different model).

1. Batch norm folded into the convolution before it. In inference a batch norm with constant parameters
   is an affine map per output channel c:

       BN(y)_c = γ_c·(y_c − μ_c)/sqrt(σ²_c + ε) + β_c = s_c·y_c + (β_c − s_c·μ_c),  s_c = γ_c/sqrt(σ²_c + ε).

   When y = conv(x, W) + b (b = 0 without a bias), y_c is linear in W[..., c], so

       BN(conv(x, W) + b)_c = conv(x, W')_c + b'_c,  W'[..., c] = s_c·W[..., c],  b'_c = s_c·(b_c − μ_c) + β_c:

   one Conv2D + BiasAdd instead of Conv2D (+ BiasAdd) + FusedBatchNorm, with no extra op and four fewer
   constants per layer. Only a conv whose output feeds nothing but that batch norm is folded (its
   unnormalised output must not be needed elsewhere). Pre-activation networks (WRN: BN → ReLU → conv)
   keep the batch norms that follow an addition; those stay FusedBatchNorm, one fused op each.
2. Identity nodes that only forward a constant (what convert_variables_to_constants leaves for every
   variable read) are bypassed: their consumers read the constant directly. The named outputs stay.

The constants are computed in float64 and stored in the graph's float32.
"""

import collections
from typing import Dict, List, Sequence, Tuple

import numpy as np

from mpltool.tfv1 import tf

BATCH_NORM_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")


def _source(name: str) -> Tuple[str, int]:
    """(node, output index) of an input reference `node`, `node:k` (control inputs `^node`: index -1)."""
    if name.startswith("^"):
        return name[1:], -1
    node, _, index = name.partition(":")
    return node, int(index) if index else 0


def _consumers(graph_def) -> Dict[str, List[str]]:
    """node name -> the names of the nodes that read any of its outputs (control inputs included)."""
    readers = collections.defaultdict(list)
    for node in graph_def.node:
        for name in node.input:
            readers[_source(name)[0]].append(node.name)
    return readers


def _float32_const(name: str, value: np.ndarray):
    node = tf.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = tf.float32.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(value, np.float32)))
    return node


def _constant_value(nodes, name: str):
    """The value of `name` when it is a constant, through any chain of Identity nodes, else None."""
    node_name, index = _source(name)
    while index == 0 and node_name in nodes and nodes[node_name].op == "Identity":
        node_name, index = _source(nodes[node_name].input[0])
    node = nodes.get(node_name)
    if index != 0 or node is None or node.op != "Const":
        return None
    return tf.make_ndarray(node.attr["value"].tensor)


def _nhwc(node) -> bool:
    return node.attr["data_format"].s in (b"", b"NHWC")


def fold_batch_norms(graph_def) -> Tuple["tf.GraphDef", List[str]]:
    """(a new GraphDef with every foldable batch norm folded into its conv, the names of the folded batch
    norms). Nodes keep their names: the folded batch norm's name now belongs to the BiasAdd that replaces
    it, so its consumers are untouched."""
    nodes = {node.name: node for node in graph_def.node}
    readers = _consumers(graph_def)
    replaced = {}  # name -> new node(s) standing in its place
    added = []
    folded = []
    for bn in graph_def.node:
        if bn.op not in BATCH_NORM_OPS or bn.attr["is_training"].b or not _nhwc(bn):
            continue
        if any(_source(i)[1] > 0 for reader in readers[bn.name] for i in nodes[reader].input
               if _source(i)[0] == bn.name):
            continue  # a consumer reads the batch statistics outputs
        params = [_constant_value(nodes, name) for name in bn.input[1:5]]
        if any(p is None for p in params):
            continue
        gamma, beta, mean, variance = (np.asarray(p, np.float64) for p in params)
        producer_name, index = _source(bn.input[0])
        producer = nodes.get(producer_name)
        bias = np.zeros_like(gamma)
        if producer is not None and producer.op == "BiasAdd" and index == 0 and _nhwc(producer):
            value = _constant_value(nodes, producer.input[1])
            if value is None or len(readers[producer.name]) != 1:
                continue
            bias = np.asarray(value, np.float64)
            producer_name, index = _source(producer.input[0])
        conv = nodes.get(producer_name)
        if conv is None or conv.op != "Conv2D" or index != 0 or not _nhwc(conv) or len(readers[conv.name]) != 1:
            continue
        kernel = _constant_value(nodes, conv.input[1])
        if kernel is None or kernel.shape[-1] != gamma.shape[0] or conv.name in replaced:
            continue
        scale = gamma / np.sqrt(variance + bn.attr["epsilon"].f)
        new_conv = tf.NodeDef()
        new_conv.CopyFrom(conv)
        kernel_name = conv.name + "/folded_kernel"
        new_conv.input[1] = kernel_name
        bias_name = bn.name + "/folded_bias"
        bias_add = tf.NodeDef(name=bn.name, op="BiasAdd", input=[conv.name, bias_name])
        bias_add.attr["T"].type = tf.float32.as_datatype_enum
        bias_add.attr["data_format"].s = b"NHWC"
        replaced[conv.name] = new_conv
        replaced[bn.name] = bias_add
        added.append(_float32_const(kernel_name, np.asarray(kernel, np.float64) * scale))
        added.append(_float32_const(bias_name, scale * (bias - mean) + beta))
        folded.append(bn.name)
    result = tf.GraphDef()
    result.versions.CopyFrom(graph_def.versions)
    result.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        result.node.extend([replaced.get(node.name, node)])
    result.node.extend(added)
    return result, folded


def bypass_constant_identities(graph_def, keep: Sequence[str]) -> "tf.GraphDef":
    """Consumers of an Identity that forwards a constant read the constant itself; nodes in `keep` (the
    graph's named outputs) stay as they are."""
    nodes = {node.name: node for node in graph_def.node}
    forward = {}
    for node in graph_def.node:
        if node.op == "Identity" and node.name not in keep and not any(i.startswith("^") for i in node.input):
            source, index = _source(node.input[0])
            while index == 0 and source in nodes and nodes[source].op == "Identity" and source not in keep:
                source, index = _source(nodes[source].input[0])
            if index == 0 and source in nodes and nodes[source].op == "Const":
                forward[node.name] = source
    result = tf.GraphDef()
    result.CopyFrom(graph_def)
    for node in result.node:
        for position, name in enumerate(node.input):
            source, index = _source(name)
            if index >= 0 and source in forward:
                node.input[position] = forward[source]
    return result


def simplify_for_inference(graph_def, outputs: Sequence[str]) -> Tuple["tf.GraphDef", List[str]]:
    """Both simplifications, then only what `outputs` need: (GraphDef, names of the folded batch norms)."""
    folded_def, folded = fold_batch_norms(graph_def)
    simplified = bypass_constant_identities(folded_def, keep=outputs)
    return tf.graph_util.extract_sub_graph(simplified, list(outputs)), folded
