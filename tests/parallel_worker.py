"""Trains a tiny BN-free MLP for a few steps and saves its weights; test_parallel_equivalence.py runs it.

Usage: parallel_worker.py --single OUT        one process, no Horovod, the whole batch of 8
       parallel_worker.py --replicas OUT      under horovodrun: HorovodReplicas, rank::size shards, wrapped optimizer
       parallel_worker.py --no-allreduce OUT  under horovodrun: the same, optimizer NOT wrapped (broadcast still run)

Each process writes OUT/<mode>-rank<K>.npz with init_* (after initialisation, before the broadcast),
start_* (after the broadcast), final_* (after STEPS steps) and, in the replicas modes, the mean of the ranks.
"""

import os
import sys

import numpy as np

# The repository root, so `mpltool` imports whatever directory horovodrun starts us in.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mpltool.tfv1 import tf  # noqa: E402

STEPS = 5
BATCH = 8
NAMES = ("w1", "b1", "w2", "b2")


def dataset():
    """The fixed global batch: 8 examples of 12 features, 3 classes (seeded, so every process has the same)."""
    rng = np.random.RandomState(1234)
    x = rng.normal(size=(BATCH, 12)).astype(np.float32)
    y = rng.randint(0, 3, size=BATCH).astype(np.int64)
    return x, y


def build_variables():
    """Built first in the graph so the op-level seeds (derived from op ids) are the same in every mode:
    same graph seed => same initial weights."""
    glorot = tf.glorot_uniform_initializer()
    return [tf.get_variable("w1", [12, 8], initializer=glorot),
            tf.get_variable("b1", [8], initializer=tf.random_normal_initializer(stddev=0.1)),
            tf.get_variable("w2", [8, 3], initializer=glorot),
            tf.get_variable("b2", [3], initializer=tf.random_normal_initializer(stddev=0.1))]


def main(argv):
    if len(argv) != 3 or argv[1] not in ("--single", "--replicas", "--no-allreduce"):
        sys.exit(__doc__)
    mode, out = argv[1].lstrip("-"), argv[2]
    if mode == "single":
        from mpltool.parallel import Replicas

        replicas = Replicas()
    else:
        from mpltool.parallel import HorovodReplicas

        replicas = HorovodReplicas()
    rank, size = replicas.rank, replicas.size

    x_all, y_all = dataset()
    x, y = x_all[rank::size], y_all[rank::size]  # mpltool's sharding (trainer._shard)

    tf.set_random_seed(1 + rank)  # distinct initial weights per rank: only the broadcast makes them equal
    w1, b1, w2, b2 = variables = build_variables()
    hidden = tf.tanh(tf.matmul(tf.constant(x), w1) + b1)
    logits = tf.matmul(hidden, w2) + b2
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(y), logits=logits))
    optimizer = tf.train.MomentumOptimizer(0.1, 0.9)
    if mode == "replicas":
        optimizer = replicas.wrap_optimizer(optimizer)
    train_op = optimizer.minimize(loss, var_list=variables)
    mean = replicas.mean(tf.constant(float(rank))) if mode != "single" else None
    broadcast = replicas.broadcast_op()  # after the optimizer: its momentum slots are broadcast too

    config = tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    saved = {}
    with tf.Session(config=config) as session:
        session.run(tf.global_variables_initializer())
        saved.update(("init_" + n, v) for n, v in zip(NAMES, session.run(variables)))
        if broadcast is not None:
            session.run(broadcast)
        saved.update(("start_" + n, v) for n, v in zip(NAMES, session.run(variables)))
        losses = [session.run([train_op, loss])[1] for _ in range(STEPS)]
        saved.update(("final_" + n, v) for n, v in zip(NAMES, session.run(variables)))
        saved["losses"] = np.array(losses)
        saved["size"] = np.array(size)
        if mean is not None:
            saved["mean"] = np.array(session.run(mean))
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, "{}-rank{}.npz".format(mode, rank)), **saved)


if __name__ == "__main__":
    main(sys.argv)
