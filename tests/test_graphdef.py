"""mpltool.graphdef: the one table of ops an inference GraphDef must not contain, and the one GraphDef reader.

Every rule is matched by a node TensorFlow really builds; freeze's check and convert's pre-check refuse the
graphs they used to disagree on, with the same words; every unreadable file is exit 3 naming the file.
"""

import pytest
import tensorflow as raw_tf
from tensorflow.python.framework import function
from tensorflow.python.ops import cond_v2, control_flow_ops

from mpltool import graphdef
from mpltool.convert import precheck
from mpltool.errors import ExitCode, InvalidInputError, VerificationError
from mpltool.freeze.graph import check_frozen_graph, freeze_graph_def
from mpltool.graphdef import Offence, forbidden_ops
from mpltool.models import build_model, inference
from mpltool.tfv1 import tf

REASON = {rule.name: rule.reason for rule in graphdef.RULES}


def graph_def_of(build):
    with tf.Graph().as_default() as graph:
        build()
        return graph.as_graph_def()


def offences(rule, *op_nodes):
    return [Offence(op, REASON[rule], tuple(nodes)) for op, nodes in op_nodes]


# -- one real node per rule ---------------------------------------------------------------------------

def reference_graph():
    flag = tf.placeholder(tf.bool, [], name="flag")
    control_flow_ops.ref_switch(tf.Variable(tf.ones([2]), name="v"), flag, name="gate")


def cond_graph():
    x = tf.placeholder(tf.float32, [2], name="input")
    tf.cond(tf.placeholder(tf.bool, [], name="is_training"), lambda: x * 2.0, lambda: x, name="cond")


def loop_graph():
    tf.while_loop(lambda i: i < 3, lambda i: i + 1, [tf.constant(0)], name="loop")


def pipeline_graph():
    tf.data.Iterator.from_structure(tf.int64, []).get_next(name="next")
    tf.FIFOQueue(2, tf.float32, name="queue").dequeue(name="dequeue")


def random_graph():
    tf.random_uniform([2], name="noise")
    tf.random.stateless_normal([2], seed=[1, 2], name="stateless")
    tf.truncated_normal([2], name="truncated")
    raw_tf.raw_ops.ParameterizedTruncatedNormal(shape=[2], means=0.0, stdevs=1.0, minvals=-1.0, maxvals=1.0,
                                                name="ptn")
    tf.multinomial(tf.zeros([1, 3]), 2, name="draw")


def default_graph():
    tf.placeholder_with_default(tf.zeros([2]), [2], name="input")


def checkpoint_graph():
    tf.train.Saver([tf.Variable(tf.ones([2]), name="v")], sharded=True)


def state_graph():
    w = tf.Variable(tf.ones([2]), name="w")
    r = tf.get_variable("r", [2], initializer=tf.zeros_initializer(), use_resource=True)
    tf.train.GradientDescentOptimizer(0.1).minimize(tf.reduce_sum(w * r))


RULE_CASES = [
    ("reference", reference_graph, offences("state", ("Assign", ["v/Assign"]))
     + offences("reference", ("RefSwitch", ["gate"])) + offences("state", ("VariableV2", ["v"]))),
    ("control_flow", cond_graph, offences("control_flow", ("Merge", ["cond/Merge"]),
                                          ("Switch", ["cond/Switch", "cond/mul/Switch", "cond/Switch_1"]))),
    ("control_flow", loop_graph, offences("control_flow", ("Enter", ["loop/Enter"]), ("Exit", ["loop/Exit"]),
                                          ("LoopCond", ["loop/LoopCond"]), ("Merge", ["loop/Merge"]),
                                          ("NextIteration", ["loop/NextIteration"]), ("Switch", ["loop/Switch"]))),
    ("input_pipeline", pipeline_graph, offences("input_pipeline", ("FIFOQueueV2", ["queue"]),
                                                ("IteratorGetNext", ["next"]),
                                                ("IteratorToStringHandle", ["IteratorToStringHandle"]),
                                                ("IteratorV2", ["IteratorV2"]), ("QueueDequeueV2", ["dequeue"]))),
    ("random", random_graph, offences("random", ("Multinomial", ["draw/Multinomial"]),
                                      ("ParameterizedTruncatedNormal", ["ptn"]),
                                      ("RandomUniform", ["noise/RandomUniform"]),
                                      ("StatelessRandomNormal", ["stateless/StatelessRandomNormal"]),
                                      ("TruncatedNormal", ["truncated/TruncatedNormal"]))),
    ("placeholder_default", default_graph, offences("placeholder_default", ("PlaceholderWithDefault", ["input"]))),
    ("checkpoint", checkpoint_graph,
     offences("state", ("Assign", ["v/Assign", "save/Assign"]))
     + offences("checkpoint", ("MergeV2Checkpoints", ["save/MergeV2Checkpoints"]))
     + offences("placeholder_default", ("PlaceholderWithDefault", ["save/filename", "save/Const"]))
     + offences("checkpoint", ("RestoreV2", ["save/RestoreV2"]), ("SaveV2", ["save/SaveV2"]),
                ("ShardedFilename", ["save/ShardedFilename"]))
     + offences("state", ("VariableV2", ["v"]))),
    ("state", state_graph, offences("state",
                                    ("ApplyGradientDescent", ["GradientDescent/update_w/ApplyGradientDescent"]),
                                    ("Assign", ["w/Assign"]), ("AssignVariableOp", ["r/Assign"]),
                                    ("ReadVariableOp", ["r/Read/ReadVariableOp", "mul/ReadVariableOp"]),
                                    ("ResourceApplyGradientDescent",
                                     ["GradientDescent/update_r/ResourceApplyGradientDescent"]),
                                    ("VarHandleOp", ["r"]),
                                    ("VarIsInitializedOp", ["r/IsInitialized/VarIsInitializedOp"]),
                                    ("VariableV2", ["w"]))),
]


@pytest.mark.parametrize("rule, build, expected", RULE_CASES, ids=[case[1].__name__ for case in RULE_CASES])
def test_each_rule_names_the_real_nodes_it_matches(rule, build, expected):
    found = forbidden_ops(graph_def_of(build))
    assert found == expected
    assert rule in {graphdef.rule_for(offence.op).name for offence in found}


def test_every_rule_has_a_real_graph_case():
    assert sorted({case[0] for case in RULE_CASES}) == sorted(rule.name for rule in graphdef.RULES)


def test_function_bodies_are_searched_and_named_by_function():
    @function.Defun(tf.float32, func_name="noisy")
    def noisy(x):
        return x + tf.random_uniform([], name="jitter")

    found = forbidden_ops(graph_def_of(lambda: noisy(tf.placeholder(tf.float32, [], name="input"), name="call")))
    assert found == offences("random", ("RandomUniform", ["noisy/jitter/RandomUniform"]))


@pytest.mark.parametrize("op, rule", [
    ("RefEnter", "reference"), ("RefSwitch", "reference"), ("StatelessIf", "control_flow"), ("While", "control_flow"),
    ("AnonymousIteratorV2", "input_pipeline"), ("RandomShuffleQueueV2", "input_pipeline"),
    ("TensorSliceDataset", "input_pipeline"), ("ReaderReadV2", "input_pipeline"), ("RandomShuffle", "random"),
    ("StatelessTruncatedNormal", "random"), ("StatelessMultinomial", "random"), ("SaveSlices", "checkpoint"),
    ("AssignSub", "state"), ("SparseApplyAdagrad", "state"), ("ResourceScatterAdd", "state"),
    ("IsVariableInitialized", "state"), ("CountUpTo", "state"),
    ("Conv2D", None), ("ScatterNd", None), ("Placeholder", None), ("PlaceholderV2", None), ("Identity", None),
])
def test_op_names_pick_the_first_matching_rule(op, rule):
    found = graphdef.rule_for(op)
    assert (found.name if found else None) == rule


def test_a_frozen_inference_graph_passes_both_checks():
    with tf.Graph().as_default() as graph:
        inference.build_inference_graph(build_model("wrn-10-1", 10, 0.0), "ema", batch_size=1)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            frozen = freeze_graph_def(session, graph)
    assert forbidden_ops(frozen) == []
    assert graphdef.extra_placeholders(frozen, "input") == []
    assert check_frozen_graph(frozen, "clean.pb") is None
    report = precheck.precheck_graph(frozen, "input", [1, 32, 32, 3], ["logits", "probs"])
    assert report["problems"] == [] and report["ok"] is True


# -- graphs freeze and convert used to judge differently ----------------------------------------------

def _classifier_around(make_noise):
    """`input` -> + noise -> `logits` -> `probs`, so only the noise op can be refused."""
    def build():
        x = tf.placeholder(tf.float32, [1, 2], name="input")
        logits = tf.identity(x + make_noise(), name="logits")
        tf.nn.softmax(logits, name="probs")
    return build


def _queue():
    return tf.FIFOQueue(2, tf.float32, shapes=[[2]], name="queue").dequeue(name="dequeue")


def _ptn():
    return raw_tf.raw_ops.ParameterizedTruncatedNormal(shape=[2], means=0.0, stdevs=1.0, minvals=-1.0, maxvals=1.0,
                                                       name="ptn")


def _functional_if():
    return cond_v2.cond_v2(tf.constant(False, name="training"), lambda: tf.zeros([2]), lambda: tf.ones([2]),
                           name="branch")


def _defun_noise():
    @function.Defun(func_name="noise_fn")
    def noise():
        return tf.random_uniform([2], name="jitter")
    return noise(name="call")


def _input_with_default():
    x = tf.placeholder_with_default(tf.zeros([1, 2]), [1, 2], name="input")
    logits = tf.identity(x, name="logits")
    tf.nn.softmax(logits, name="probs")


DISAGREEMENTS = [
    # freeze passed it (no "Queue" in its table); convert: QueueDequeueV2 training op, FIFOQueueV2 unsupported
    ("queue", _classifier_around(_queue),
     offences("input_pipeline", ("FIFOQueueV2", ["queue"]), ("QueueDequeueV2", ["dequeue"]))),
    # freeze: random op; convert: only "not in the ATC list"
    ("parameterized_truncated_normal", _classifier_around(_ptn),
     offences("random", ("ParameterizedTruncatedNormal", ["ptn"]))),
    # freeze passed it; convert called it a random op (its "Stateless" prefix)
    ("functional_if", _classifier_around(_functional_if), offences("control_flow", ("StatelessIf", ["branch"]))),
    # freeze looked inside function bodies, convert did not
    ("random_in_a_function", _classifier_around(_defun_noise),
     offences("random", ("RandomUniform", ["noise_fn/jitter/RandomUniform"]))),
    # freeze took a PlaceholderWithDefault as the input; convert refused it
    ("input_with_default", _input_with_default,
     offences("placeholder_default", ("PlaceholderWithDefault", ["input"]))),
]


@pytest.mark.parametrize("build, expected", [case[1:] for case in DISAGREEMENTS], ids=[c[0] for c in DISAGREEMENTS])
def test_freeze_and_convert_refuse_the_same_graph_for_the_same_reason(build, expected):
    graph_def = graph_def_of(build)
    assert forbidden_ops(graph_def) == expected
    messages = [graphdef.offence_message(offence) for offence in expected]
    with pytest.raises(VerificationError) as excinfo:
        check_frozen_graph(graph_def, "x.pb")
    assert excinfo.value.exit_code == ExitCode.VERIFICATION == 7
    assert excinfo.value.message == "frozen graph x.pb contains {} node(s) a deployable graph must not have: {}".format(
        sum(len(o.nodes) for o in expected), "; ".join(messages))
    report = precheck.precheck_graph(graph_def, "input", [1, 2], ["logits", "probs"])
    assert report["ok"] is False
    assert [p for p in report["problems"] if p["kind"] == "training_op"] == [
        {"kind": "training_op", "op": o.op, "nodes": list(o.nodes), "message": m} for o, m in zip(expected, messages)]


def test_the_shared_wording_of_one_offence():
    offence = Offence("Switch", REASON["control_flow"], ("a", "b", "c", "d", "e"))
    assert graphdef.offence_message(offence) == (
        "Switch is a control-flow op (freeze with training=False as a Python bool): a, b, c (+2 more)")


def test_extra_placeholders_are_refused_by_both():
    graph_def = graph_def_of(cond_graph)
    extra = graphdef.extra_placeholders(graph_def, "input")
    reason = "placeholder other than the input 'input' (a training flag or an input nobody feeds)"
    assert extra == [Offence("Placeholder", reason, ("is_training",))]
    with pytest.raises(VerificationError) as excinfo:
        check_frozen_graph(graph_def, "x.pb")
    assert excinfo.value.message.endswith("; Placeholder is a " + reason + ": is_training")
    report = precheck.precheck_graph(graph_def, "input", [2], [])
    assert [p for p in report["problems"] if p["kind"] == "extra_placeholder"] == [
        {"kind": "extra_placeholder", "op": "Placeholder", "nodes": ["is_training"],
         "message": "Placeholder is a " + reason + ": is_training"}]


# -- the reader ----------------------------------------------------------------------------------------

HINT = " (pass a frozen .pb such as the one `mpltool freeze` wrote)"
UNPARSABLE = "{} is not a TensorFlow GraphDef (.pb): protobuf cannot parse it" + HINT


def _tiny_graph_bytes(with_logits=True):
    def build():
        x = tf.placeholder(tf.float32, [1, 2], name="input")
        tf.identity(x, name="logits" if with_logits else "other")
    return graph_def_of(build).SerializeToString()


@pytest.mark.parametrize("name, content, message", [
    ("missing.pb", None, "frozen graph {} not found"),
    ("dir.pb", "dir", "frozen graph {} is a directory, not a .pb file"),
    ("empty.pb", b"", "{} is empty, not a TensorFlow GraphDef (.pb)" + HINT),
    ("notes.pb", b"this is not a protobuf\n", UNPARSABLE),  # the C++ parser only warns on this one
    ("elf.pb", b"\x7fELF\x02\x01\x01\x00" * 8, UNPARSABLE),
    ("varint.pb", b"\x08\x01", "{} is not a TensorFlow GraphDef (.pb): it holds no nodes" + HINT),
    ("opless.pb", b"\n\x02\n\x00", "{} is not a TensorFlow GraphDef (.pb): 1 of its 1 node(s) have no op" + HINT),
    ("truncated.pb", "truncated", UNPARSABLE),
])
def test_every_unreadable_file_is_one_exit_3_line_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content == "truncated":
        path.write_bytes(_tiny_graph_bytes()[:-3])
    elif content is not None:
        path.write_bytes(content)
    for reader in (graphdef.read_graph_def, precheck.load_graph_def, inference.read_graph_def):
        with pytest.raises(InvalidInputError) as excinfo:
            reader(path)
        assert excinfo.value.exit_code == ExitCode.INVALID_INPUT == 3
        assert str(excinfo.value) == message.format(path)
        assert "\n" not in str(excinfo.value)


def test_a_path_through_a_file_is_not_found(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InvalidInputError) as excinfo:
        graphdef.read_graph_def(tmp_path / "file" / "m.pb")
    assert str(excinfo.value) == "frozen graph {} not found".format(tmp_path / "file" / "m.pb")


def test_convert_uses_the_one_reader_and_eval_adds_its_node_names(tmp_path):
    assert precheck.load_graph_def is graphdef.read_graph_def
    path = tmp_path / "other.pb"
    path.write_bytes(_tiny_graph_bytes(with_logits=False))
    assert [n.name for n in graphdef.read_graph_def(path).node] == ["input", "other"]
    with pytest.raises(InvalidInputError) as excinfo:
        inference.read_graph_def(path)
    assert str(excinfo.value) == "{} has no node named 'logits' (expected a graph frozen by `mpltool freeze`)".format(
        path)
    with pytest.raises(InvalidInputError) as excinfo:
        inference.parse_graph_def(path.read_bytes(), "staged.pb")
    assert str(excinfo.value) == "staged.pb has no node named 'logits' (expected a graph frozen by `mpltool freeze`)"
    good = tmp_path / "good.pb"
    good.write_bytes(_tiny_graph_bytes())
    graph_def = inference.read_graph_def(good)
    assert [(n.op, n.name) for n in graph_def.node] == [("Placeholder", "input"), ("Identity", "logits")]
    assert graph_def.SerializeToString() == good.read_bytes()
