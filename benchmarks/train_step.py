"""Training speed and memory of every algorithm's step, against this machine's own limit.

For each configuration (each algorithm's demo and full recipe, and the MPL step at 16/7 too):
  (a) the plain forward+backward step of the recipe's network on its B labelled images (one Nesterov
      step): seconds per image, the cost one forward-equivalent pass of one image is measured in;
  (b) the algorithm's step (every phase of it) with its inputs held in memory, so the figure is compute
      only (benchmarks/input_pipeline.py measures the input side): median seconds, images/s (the images
      it consumes: labelled, unlabelled, per-domain), and the process's peak RSS;
  (c) ideal/measured, where ideal = (a) x the step's forward-equivalents / 3 (Algorithm.
      forward_equivalents: a fwd+bwd pass counts 3). 1.0 means the step costs exactly its passes.
Each measurement runs in its own process, with the settings `mpltool train` runs with (mpltool/tuning.py:
allocator, threads) unless --tuning off; --tuning both measures each configuration both ways.

--baseline DIR runs the same configurations from another checkout (e.g. `git worktree add /tmp/base
<commit>`), as it ran (no tuning), interleaved with this tree for --rounds rounds; medians and ratios
are printed, so a change is judged by figures taken side by side. --compare PYTHON repeats everything
under another interpreter (e.g. a venv with tensorflow-cpu).

Re-measure: .venv/bin/python benchmarks/train_step.py [--only mpl] [--baseline DIR --rounds 3]
            [--tuning both] [--compare .venv-tfcpu/bin/python]
"""

import argparse
import os
import statistics
import sys

import numpy as np

import common

# (label, recipe, overrides): each algorithm at its demo and its full batch size.
CONFIGS = [
    ("mpl 64/7", "mpl-wrn28-2", []),
    ("mpl 16/7", "mpl-wrn28-2", ["batch_size=16"]),
    ("mpl demo", "mpl-demo", []),
    ("uda 64/7", "uda-wrn28-2", []),
    ("uda demo", "uda-demo", []),
    ("supervised 64", "supervised-wrn28-2", []),
    ("supervised demo", "supervised-demo", []),
    ("mixmatch 64", "mixmatch-cifar10-250", []),
    ("mixmatch demo", "mixmatch-demo", []),
    ("byol 512", "byol-resnet18", []),
    ("byol demo", "byol-demo", []),
    ("masf 126", "masf-pacs-alexnet", []),
    ("masf demo", "masf-demo", []),
]
SOURCE_DOMAINS = 3  # MASF: PACS's four domains, one held out


class InMemory:
    """Input tensors held in non-trainable local variables, loaded once: the step reads them as it would
    read a prefetched batch, and the GraphDef stays small however large the batch is."""

    def __init__(self, seed=0):
        self.rng = np.random.RandomState(seed)
        self.loads = []

    def images(self, count, shape):
        return self._variable(self.rng.randn(count, *shape).astype(np.float32))

    def labels(self, count, num_classes):
        return self._variable(self.rng.randint(0, num_classes, count).astype(np.int64))

    def _variable(self, array):
        from mpltool.tfv1 import tf

        value = tf.placeholder(tf.as_dtype(array.dtype), array.shape)
        variable = tf.Variable(value, trainable=False, collections=[tf.GraphKeys.LOCAL_VARIABLES],
                               name="benchmark_input")
        self.loads.append((variable.initializer, value, array))
        return variable.read_value()

    def load(self, session):
        for initializer, value, array in self.loads:
            session.run(initializer, feed_dict={value: array})


def view_structure(view, shape):
    """The nested structure (tuples of images) one record becomes, traced in a scratch graph."""
    from mpltool.tfv1 import tf

    with tf.Graph().as_default():
        return view.make(tf.zeros(shape, tf.uint8), 0)


def step_batch(streams, recipe, shape, memory):
    """The batch dict the input pipeline would give the algorithm's streams, in memory: each view's
    outputs (their structure traced from the view itself) and labels, per source domain where asked."""
    from mpltool.tfv1 import tf

    batch = {}
    for stream in streams:
        domains = SOURCE_DOMAINS if stream.per_domain else 1

        def one_domain(stream=stream):
            made = view_structure(stream.view, shape)
            part = {name: tf.nest.map_structure(lambda _: memory.images(stream.per_step, shape), output)
                    for name, output in zip(stream.view.names, made)}
            if stream.labels:
                part[stream.labels] = memory.labels(stream.per_step, recipe.num_classes)
            return part

        parts = [one_domain() for _ in range(domains)]
        for name in parts[0]:
            batch[name] = parts[0][name] if not stream.per_domain else tuple(p[name] for p in parts)
    return batch


def images_per_step(streams):
    """Distinct records one step consumes (views of one record count once)."""
    return sum(int(s.per_step) * (SOURCE_DOMAINS if s.per_domain else 1) for s in streams)


def build_step(recipe, overrides):
    """(step, InMemory) of the recipe's algorithm in the default graph, its inputs held in memory."""
    from mpltool.algorithms import get_algorithm
    from mpltool.models import build_model
    from mpltool.recipes import load_recipe
    from mpltool.tfv1 import tf

    recipe = load_recipe(recipe, overrides)
    algorithm = get_algorithm(recipe.algorithm)
    tf.set_random_seed(recipe.seed)
    model = build_model(recipe.model, recipe.num_classes, recipe.dropout_rate, bn_momentum=recipe.bn_momentum)
    memory = InMemory()
    batch = step_batch(algorithm.streams(recipe), recipe, tuple(model.input_spec.shape), memory)
    return algorithm.build_step(model, recipe, batch, tf.train.get_or_create_global_step()), memory


def initialise(session, step, memory):
    """Variables, the in-memory inputs, and the step's own init ops (EMA copies, pretrained weights)."""
    from mpltool.tfv1 import tf

    session.run(tf.global_variables_initializer())
    memory.load(session)
    if step.init_ops:
        session.run(step.init_ops, feed_dict=step.init_feed)


def algorithm_step(recipe, overrides, repeat=3, warmup=1):
    """Median seconds of each phase's training op."""
    from mpltool.algorithms import phases_of
    from mpltool.tfv1 import tf

    step, memory = build_step(recipe, overrides)
    seconds = {}
    with tf.Session() as session:
        initialise(session, step, memory)
        for phase in phases_of(step):
            fetches = {"train": phase.train_op, "metrics": phase.metrics}
            seconds[phase.name] = common.timed(lambda: session.run(fetches), warmup=warmup, repeat=repeat)
    return {"seconds": seconds}


def plain_step(recipe, overrides, repeat=5):
    """One Nesterov fwd+bwd step of the recipe's network on B in-memory labelled images."""
    from mpltool.models import build_model
    from mpltool.recipes import load_recipe
    from mpltool.tfv1 import tf

    recipe = load_recipe(recipe, overrides)
    net = build_model(recipe.model, recipe.num_classes, recipe.dropout_rate)
    memory = InMemory()
    images = memory.images(recipe.batch_size, tuple(net.input_spec.shape))
    labels = memory.labels(recipe.batch_size, recipe.num_classes)
    out = net(images, True, "net")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=out.logits))
    with tf.control_dependencies(out.bn_updates):
        train = tf.train.MomentumOptimizer(0.01, 0.9, use_nesterov=True).minimize(loss)
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        memory.load(session)
        seconds = common.timed(lambda: session.run(train), warmup=2, repeat=repeat)
    return {"seconds": seconds, "per_image": seconds / recipe.batch_size, "tensorflow": tf.VERSION}


MEASUREMENTS = {"step": algorithm_step, "plain": plain_step}


def run_config(recipe, overrides, python, env, source, repeat):
    args = {"recipe": recipe, "overrides": overrides}
    plain = common.child(__file__, "plain", args, python, env=env, source=source)
    step = common.child(__file__, "step", dict(args, repeat=repeat), python, env=env, source=source)
    return plain, step


def expected(recipe_name, overrides):
    """(forward-equivalents per phase, images per step) from this tree's algorithms."""
    from mpltool.algorithms import get_algorithm
    from mpltool.recipes import load_recipe

    recipe = load_recipe(recipe_name, overrides)
    algorithm = get_algorithm(recipe.algorithm)
    return algorithm.forward_equivalents(recipe), images_per_step(algorithm.streams(recipe))


def summarise(runs, forward_equivalents, images):
    """Medians over rounds of one configuration under one setting."""
    plains = [plain for plain, _ in runs]
    per_image = statistics.median(p["per_image"] for p in plains)
    phases = {}
    for name in runs[0][1]["seconds"]:
        seconds = statistics.median(step["seconds"][name] for _, step in runs)
        fwd = forward_equivalents.get(name)
        ideal = per_image * fwd / 3.0 if fwd else None
        phases[name] = {"seconds": seconds, "images_per_second": images / seconds,
                        "ideal_over_measured": ideal / seconds if ideal else None}
    return {"phases": phases, "peak_rss_mib": statistics.median(step["peak_rss_mib"] for _, step in runs),
            "plain_per_image_ms": per_image * 1e3, "tensorflow": plains[0]["tensorflow"]}


def print_table(label, results):
    print("== {} ==".format(label))
    print("{:16s} {:9s} {:>9s} {:>9s} {:>10s} {:>14s} {:>12s}".format(
        "config", "phase", "s/step", "images/s", "peak MiB", "plain ms/img", "ideal/meas."))
    for name, result in results.items():
        for phase, figures in result["phases"].items():
            ratio = figures["ideal_over_measured"]
            print("{:16s} {:9s} {:9.3f} {:9.1f} {:10.0f} {:14.2f} {:>12s}".format(
                name, phase, figures["seconds"], figures["images_per_second"], result["peak_rss_mib"],
                result["plain_per_image_ms"], "{:.2f}".format(ratio) if ratio else "-"))


def print_ratios(label, results, baseline):
    print("== {}: first / second (medians; below 1 is better) ==".format(label))
    for name, result in results.items():
        if name not in baseline:
            continue
        for phase, figures in result["phases"].items():
            before = baseline[name]["phases"].get(phase)
            if before:
                print("{:16s} {:9s} time {:.2f}x  peak RSS {:.2f}x  ({:.3f} s vs {:.3f} s, {:.0f} vs {:.0f} MiB)".format(
                    name, phase, figures["seconds"] / before["seconds"],
                    result["peak_rss_mib"] / baseline[name]["peak_rss_mib"], figures["seconds"], before["seconds"],
                    result["peak_rss_mib"], baseline[name]["peak_rss_mib"]))


def main():
    common.child_main(MEASUREMENTS)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated substrings of the configurations to run")
    parser.add_argument("--repeat", type=int, default=3, help="timed steps per measurement (median)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians over rounds)")
    parser.add_argument("--tuning", choices=("on", "off", "both"), default="on")
    parser.add_argument("--baseline", metavar="DIR", help="another checkout, run untuned beside this tree")
    parser.add_argument("--compare", metavar="PYTHON", help="another Python with a TF 1.15 wheel")
    args = parser.parse_args()
    from mpltool import tuning

    wanted = [s for s in args.only.split(",") if s]
    configs = [c for c in CONFIGS if not wanted or any(w in c[0] for w in wanted)]
    settings = []  # (label, python, env additions, source tree)
    tuned = tuning.tuned_environment(os.environ)
    if args.tuning in ("on", "both"):
        settings.append(("this tree, tuned", sys.executable, tuned, None))
    if args.tuning in ("off", "both"):
        settings.append(("this tree, untuned", sys.executable, {}, None))
    if args.baseline:
        settings.append(("baseline {}".format(args.baseline), sys.executable, {}, os.path.abspath(args.baseline)))
    if args.compare:
        settings.append(("{}, tuned".format(args.compare), args.compare, tuned, None))
    print("machine: " + common.machine())
    print("tuned settings: " + (", ".join("{}={}".format(k, v) for k, v in sorted(tuned.items())) or "none"))
    runs = {(s[0], c[0]): [] for s in settings for c in configs}
    for round_index in range(args.rounds):
        for label, recipe, overrides in configs:
            for name, python, env, source in settings:  # interleaved: every setting once per round
                runs[(name, label)].append(run_config(recipe, overrides, python, env, source, args.repeat))
    tables = {}
    for name, _, _, _ in settings:
        tables[name] = {}
        for label, recipe, overrides in configs:
            forward_equivalents, images = expected(recipe, overrides)
            tables[name][label] = summarise(runs[(name, label)], forward_equivalents, images)
        print_table("{} (TensorFlow {})".format(name, next(iter(tables[name].values()))["tensorflow"]), tables[name])
    first = settings[0][0]
    for name, _, _, _ in settings[1:]:
        print_ratios("{} vs {}".format(first, name), tables[first], tables[name])


if __name__ == "__main__":
    main()
