"""Training speed against this machine's own limit (the targets are ratios measured in one run).

(a) plain WRN-28-2 forward+backward images/s at batch 64 (one Nesterov step);
(b) the MPL step at the recipe's batch (64, uda_data 7) and at a smaller one, inputs held in memory so the
    figure is compute only (benchmarks/input_pipeline.py measures the input side);
(c) ideal/measured, where the ideal MPL step time is the plain step time scaled by the pass count of
    docs/mpl-reference.md §5: 4,480 forward-equivalents per MPL step vs 3 x 64 = 192 in a plain step.
    Target >= 0.8: no wasted passes, no host round-trips.
Peak RSS of each configuration is its own process's. `--compare PYTHON` repeats (a) and (b) under another
interpreter (e.g. a venv with tensorflow-cpu) in the same run, so the wheels are compared as a ratio.

Re-measure: .venv/bin/python benchmarks/train_step.py [--compare .venv-tfcpu/bin/python] [--repeat N]
"""

import argparse
import sys

import numpy as np

import common

FORWARD_EQUIVALENTS_MPL = lambda b, u: (b + 2 * u * b) * 3 + (u * b + b) * 3 + b  # noqa: E731


def plain_step(batch=64, model="wrn-28-2", repeat=5):
    from mpltool.models import build_model
    from mpltool.tfv1 import tf

    net = build_model(model)
    rng = np.random.RandomState(0)
    images = tf.constant(rng.randn(batch, 32, 32, 3).astype(np.float32))
    labels = tf.constant(rng.randint(0, 10, batch))
    out = net(images, True, "net")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=out.logits))
    with tf.control_dependencies(out.bn_updates):
        train = tf.train.MomentumOptimizer(0.01, 0.9, use_nesterov=True).minimize(loss)
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        seconds = common.timed(lambda: session.run(train), warmup=2, repeat=repeat)
    return {"seconds": seconds, "images_per_second": batch / seconds, "tensorflow": tf.VERSION}


def mpl_step(batch=64, uda_data=7, model="wrn-28-2", repeat=3, feedback="reference"):
    from mpltool.models import build_model
    from mpltool.recipes import load_recipe
    from mpltool.tfv1 import tf
    from mpltool.algorithms.mpl import build_mpl_step

    recipe = load_recipe("mpl-wrn28-2", ["model=" + model, "batch_size={}".format(batch),
                                         "uda_data={}".format(uda_data), "mpl_feedback=" + feedback])
    rng = np.random.RandomState(0)
    unlabelled = batch * uda_data
    const = lambda n: tf.constant(rng.randn(n, 32, 32, 3).astype(np.float32))  # noqa: E731
    net = build_model(model, dropout_rate=recipe.dropout_rate)
    step = build_mpl_step(net, recipe, const(batch), tf.constant(rng.randint(0, 10, batch)), const(unlabelled),
                          const(unlabelled), tf.train.get_or_create_global_step())
    fetches = {"train": step.train_op, "metrics": step.metrics}
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        session.run(step.ema_init_op)
        seconds = common.timed(lambda: session.run(fetches), warmup=1, repeat=repeat)
    return {"seconds": seconds, "steps_per_second": 1.0 / seconds}


MEASUREMENTS = {"plain": plain_step, "mpl": mpl_step}


def report(python, label, repeat):
    plain = common.child(__file__, "plain", {"repeat": repeat + 2}, python)
    rows = []
    for batch in (64, 16):
        mpl = common.child(__file__, "mpl", {"batch": batch, "uda_data": 7, "repeat": repeat}, python)
        ideal = plain["seconds"] * FORWARD_EQUIVALENTS_MPL(batch, 7) / (3.0 * 64)
        rows.append((batch, mpl, ideal))
    print("== {} (TensorFlow {}) ==".format(label, plain["tensorflow"]))
    print("(a) plain WRN-28-2 fwd+bwd, batch 64: {:.3f} s/step = {:.1f} images/s, peak RSS {:.0f} MiB".format(
        plain["seconds"], plain["images_per_second"], plain["peak_rss_mib"]))
    for batch, mpl, ideal in rows:
        print("(b) MPL step, batch {} uda_data 7: {:.3f} s/step, peak RSS {:.0f} MiB".format(
            batch, mpl["seconds"], mpl["peak_rss_mib"]))
        print("(c)   ideal {:.3f} s/step ({} forward-equivalents) -> ideal/measured = {:.2f} (target >= 0.8)".format(
            ideal, FORWARD_EQUIVALENTS_MPL(batch, 7), ideal / mpl["seconds"]))
    return plain, rows


def main():
    common.child_main(MEASUREMENTS)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="another Python with a TF 1.15 wheel (e.g. tensorflow-cpu)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("machine: " + common.machine())
    plain, rows = report(sys.executable, "this interpreter", args.repeat)
    if args.compare:
        other_plain, other_rows = report(args.compare, args.compare, args.repeat)
        print("== speed-up of this interpreter's TF over {} ==".format(args.compare))
        print("plain step: {:.2f}x".format(other_plain["seconds"] / plain["seconds"]))
        for (batch, mpl, _), (_, other, _) in zip(rows, other_rows):
            print("MPL step batch {}: {:.2f}x".format(batch, other["seconds"] / mpl["seconds"]))


if __name__ == "__main__":
    main()
