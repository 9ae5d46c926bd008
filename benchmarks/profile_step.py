"""Where one training step's time and memory go: TF's own step stats, grouped by pass, and page faults.

One traced step (RunOptions FULL_TRACE, after warm-up steps) of an algorithm's training op, the inputs
held in memory as in benchmarks/train_step.py. Printed:
  - op time by pass (teacher/student forward, each backward, optimizer...) and the op types that cost most;
  - the allocator's live bytes over the step, rebuilt from its allocation records: the peak, which op was
    running at that moment, and what the live bytes at the peak belong to (by pass);
  - minor/major page faults and peak RSS of an untraced step, and the optional chrome://tracing timeline.

Re-measure: .venv/bin/python benchmarks/profile_step.py [--batch 64] [--uda-data 7] [--timeline out.json]
            (run once per batch size; each run is its own process, so its peak RSS is its own)
"""

import argparse
import collections
import re
import resource
import time

import common

PASS_PATTERNS = [  # first match wins; names as the graph builders in mpltool/algorithms create them
    ("optimizer/apply", re.compile(r"(^|/)(Momentum|Adam|update_|clip_by_global_norm|ema_update|AddN)")),
    ("teacher backward", re.compile(r"^gradients(_\d+)?/teacher")),
    ("student backward", re.compile(r"^gradients(_\d+)?/student")),
    ("other backward", re.compile(r"^gradients")),
    ("student 2nd forward", re.compile(r"^student_1/")),
    ("teacher forward", re.compile(r"^teacher/")),
    ("student forward", re.compile(r"^student/")),
    ("ema", re.compile(r"^ema/")),
]


def pass_of(node_name):
    for label, pattern in PASS_PATTERNS:
        if pattern.search(node_name):
            return label
    return "other"


def build(batch, uda_data, feedback):
    import numpy as np
    from mpltool.algorithms.mpl import build_mpl_step
    from mpltool.models import build_model
    from mpltool.recipes import load_recipe
    from mpltool.tfv1 import tf

    recipe = load_recipe("mpl-wrn28-2", ["batch_size={}".format(batch), "uda_data={}".format(uda_data),
                                         "mpl_feedback=" + feedback])
    rng = np.random.RandomState(0)
    const = lambda n: tf.constant(rng.randn(n, 32, 32, 3).astype(np.float32))  # noqa: E731
    net = build_model(recipe.model, dropout_rate=recipe.dropout_rate)
    unlabelled = batch * uda_data
    step = build_mpl_step(net, recipe, const(batch), tf.constant(rng.randint(0, 10, batch)), const(unlabelled),
                          const(unlabelled), tf.train.get_or_create_global_step())
    return step


def memory_timeline(step_stats):
    """[(micros, +/-bytes, node)] from every allocator's allocation records, in time order."""
    events = []
    for device in step_stats.dev_stats:
        for node in device.node_stats:
            for memory in node.memory:
                for record in memory.allocation_records:
                    events.append((record.alloc_micros, record.alloc_bytes, node.node_name, memory.allocator_name))
    events.sort(key=lambda e: e[0])
    return events


def profile(batch=64, uda_data=7, feedback="reference", timeline=None, warmup=2):
    from mpltool.tfv1 import tf

    step = build(batch, uda_data, feedback)
    fetches = {"train": step.train_op, "metrics": step.metrics}
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        session.run(step.ema_init_op)
        for _ in range(warmup):
            session.run(fetches)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        session.run(fetches)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
        metadata = tf.RunMetadata()
        session.run(fetches, options=options, run_metadata=metadata)
    stats = metadata.step_stats

    by_pass = collections.Counter()
    by_type = collections.Counter()
    for device in stats.dev_stats:
        for node in device.node_stats:
            micros = node.op_end_rel_micros - node.op_start_rel_micros
            by_pass[pass_of(node.node_name)] += micros
            kind = node.timeline_label.split("=")[-1].split("(")[0].strip() if "=" in node.timeline_label else ""
            by_type[kind or node.node_name.split("/")[-1]] += micros

    events = memory_timeline(stats)
    live, peak, peak_at, owner_live = 0, 0, None, collections.Counter()
    peak_owners = {}
    for micros, nbytes, node, _ in events:
        live += nbytes
        owner_live[pass_of(node)] += nbytes
        if live > peak:
            peak, peak_at = live, node
            peak_owners = dict(owner_live)
    total_op = sum(by_pass.values()) or 1
    return {
        "batch": batch, "uda_data": uda_data, "seconds_untraced": seconds,
        "minor_faults": after.ru_minflt - before.ru_minflt, "major_faults": after.ru_majflt - before.ru_majflt,
        "op_seconds_by_pass": {k: v / 1e6 for k, v in by_pass.most_common()},
        "op_share_by_pass": {k: round(v / total_op, 3) for k, v in by_pass.most_common()},
        "top_op_types": [(k, v / 1e6) for k, v in by_type.most_common(12)],
        "allocator_peak_mib": peak / 2.0 ** 20, "peak_during": peak_at,
        "live_at_peak_mib_by_pass": {k: round(v / 2.0 ** 20) for k, v in
                                     sorted(peak_owners.items(), key=lambda kv: -kv[1]) if v > 2 ** 20},
        "allocators": sorted(set(e[3] for e in events)),
        "timeline": _write_timeline(stats, timeline) if timeline else None,
    }


def _write_timeline(step_stats, path):
    from tensorflow.python.client import timeline as tf_timeline

    with open(path, "w") as handle:
        handle.write(tf_timeline.Timeline(step_stats).generate_chrome_trace_format(show_memory=True))
    return path


def main():
    common.child_main({"profile": profile})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--uda-data", type=int, default=7)
    parser.add_argument("--feedback", default="reference")
    parser.add_argument("--timeline", help="also write a chrome://tracing JSON file here")
    args = parser.parse_args()
    result = common.child(__file__, "profile", {"batch": args.batch, "uda_data": args.uda_data,
                                                "feedback": args.feedback, "timeline": args.timeline})
    print("machine: " + common.machine())
    print("MPL step, batch {} uda_data {}: {:.2f} s untraced, peak RSS {:.0f} MiB".format(
        args.batch, args.uda_data, result["seconds_untraced"], result["peak_rss_mib"]))
    print("page faults in one untraced step: {} minor, {} major".format(result["minor_faults"],
                                                                        result["major_faults"]))
    print("op time by pass (sum of op durations; ops overlap on 2 threads):")
    for name, seconds in result["op_seconds_by_pass"].items():
        print("  {:22s} {:7.2f} s  {:5.1%}".format(name, seconds, result["op_share_by_pass"][name]))
    print("op types that cost most:")
    for name, seconds in result["top_op_types"]:
        print("  {:40s} {:7.2f} s".format(name, seconds))
    print("allocator live bytes peak: {:.0f} MiB, reached during {} ({})".format(
        result["allocator_peak_mib"], result["peak_during"], ", ".join(result["allocators"])))
    print("live at the peak, by pass that allocated it:")
    for name, mib in result["live_at_peak_mib_by_pass"].items():
        print("  {:22s} {:7d} MiB".format(name, mib))
    if result["timeline"]:
        print("timeline: " + result["timeline"])


if __name__ == "__main__":
    main()
