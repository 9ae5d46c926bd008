"""Where one training step's time and memory go: TF's own step stats, grouped by pass, and page faults.

One traced step (RunOptions FULL_TRACE, after warm-up steps) of a recipe's training op (its first phase),
built and fed in memory exactly as benchmarks/train_step.py times it. Printed:
  - op time by pass (teacher/student forward, each backward, optimizer...) and the op types that cost most;
  - the allocator's live bytes over the step, rebuilt from its allocation records: the peak, which op was
    running at that moment, and what the live bytes at the peak belong to (by pass);
  - minor/major page faults and peak RSS of an untraced step, and the optional chrome://tracing timeline.

Re-measure: .venv/bin/python benchmarks/profile_step.py [--recipe mpl-wrn28-2] [--batch 16] [--set k=v]
            [--timeline out.json]
            (run once per batch size; each run is its own process, so its peak RSS is its own)
"""

import argparse
import collections
import os
import re
import resource
import time

import common
from train_step import build_step, initialise

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


def profile(recipe="mpl-wrn28-2", overrides=(), timeline=None, warmup=2):
    """One traced step of the recipe's first phase (build_step: the benchmark's in-memory inputs)."""
    from mpltool.algorithms import phases_of
    from mpltool.tfv1 import tf

    step, memory = build_step(recipe, list(overrides))
    phase = phases_of(step)[0]
    fetches = {"train": phase.train_op, "metrics": phase.metrics}
    with tf.Session() as session:
        initialise(session, step, memory)
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
        "seconds_untraced": seconds,
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
    parser.add_argument("--recipe", default="mpl-wrn28-2")
    parser.add_argument("--batch", type=int, default=None, help="batch_size [the recipe's]")
    parser.add_argument("--uda-data", type=int, default=None, help="unlabelled_ratio (U/B) [the recipe's]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any other recipe override, e.g. mpl_feedback=paper")
    parser.add_argument("--timeline", help="also write a chrome://tracing JSON file here")
    parser.add_argument("--no-tuning", action="store_true", help="profile without mpltool/tuning.py's settings")
    args = parser.parse_args()
    overrides = list(args.overrides)
    overrides += ["batch_size={}".format(args.batch)] if args.batch else []
    overrides += ["unlabelled_ratio={}".format(args.uda_data)] if args.uda_data else []
    from mpltool import tuning

    tuned = {} if args.no_tuning else tuning.tuned_environment(os.environ)  # as `mpltool train` runs
    result = common.child(__file__, "profile", {"recipe": args.recipe, "overrides": overrides,
                                                "timeline": args.timeline}, env=tuned)
    print("machine: " + common.machine())
    print("{} {}: one step {:.2f} s untraced, peak RSS {:.0f} MiB".format(
        args.recipe, " ".join(overrides), result["seconds_untraced"], result["peak_rss_mib"]))
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
