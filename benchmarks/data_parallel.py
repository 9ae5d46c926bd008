"""Images per second of one process vs N processes (`mpltool train --nproc N`, Horovod over gloo) on the
embedded demo data, in one run.

Each configuration trains the same recipe from scratch for STEPS steps at the same per-replica batch, as a
user would type it; the rate is read from rank 0's metrics CSV (its steps_per_second over every log window
after the first, which holds graph building and start-up), times the global batch of labelled images
(batch_size x replicas; an MPL step also reads uda_data times as many unlabelled ones).

    .venv/bin/python benchmarks/data_parallel.py                    # mpl-demo, 1 vs 2 processes
    .venv/bin/python benchmarks/data_parallel.py --recipe supervised-demo --steps 300
"""

import argparse
import csv
import os
import shutil
import tempfile

import yaml
from common import demo_project, mpltool


def steps_per_second(project):
    with open(os.path.join(project, "logs", "metrics.csv")) as handle:
        rates = [float(r["steps_per_second"]) for r in csv.DictReader(handle) if r["steps_per_second"]]
    later = rates[1:] or rates
    return sum(later) / len(later)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="mpl-demo")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="mpltool-dp-")
    try:
        template = demo_project(root, args.recipe)
        settings = ["--set", "num_train_steps={}".format(args.steps), "--set", "log_every=20",
                    "--set", "eval_every={}".format(args.steps), "--set", "save_every={}".format(args.steps)]
        results = []
        for nproc in (1, args.nproc):
            project = os.path.join(root, "n{}".format(nproc))
            shutil.copytree(template, project)
            parallel = [] if nproc == 1 else ["--nproc", str(nproc)]
            mpltool(project, "train", "--recipe", args.recipe, "--device", "cpu", *(settings + parallel))
            with open(os.path.join(project, "mpltool.yaml")) as handle:
                record = yaml.safe_load(handle)["stages"]["train"]
            global_batch = record.get("global_batch_size") or record["params"]["batch_size"]
            rate = steps_per_second(project)
            results.append((nproc, global_batch, rate, rate * global_batch))
        print("{:<10} {:>12} {:>11} {:>11}".format("processes", "global batch", "steps/s", "labelled images/s"))
        for nproc, batch, rate, images in results:
            print("{:<10} {:>12} {:>11.2f} {:>11.1f}".format(nproc, batch, rate, images))
        print("images/s ratio {} vs 1 process: {:.2f} (host cores: {})".format(
            args.nproc, results[1][3] / results[0][3], os.cpu_count()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
