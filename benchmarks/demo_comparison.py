"""Supervised vs UDA vs MPL (reference and paper feedback) vs MixMatch on the embedded demo data: EMA top-1
over seeds.

Every run uses the same prepared project (the demo set, mpl-demo's 1,000 labels), the same network,
batch and number of steps; only the algorithm (and MPL's feedback mode) differs. Each run is the real
CLI in its own process, as a user would type it. Prints one row per configuration: mean EMA top-1 on
the 1,000 demo test images, min and max over the seeds, and minutes per run.

    .venv/bin/python benchmarks/demo_comparison.py            # 3 seeds, about 30 minutes on 2 cores
    .venv/bin/python benchmarks/demo_comparison.py --seeds 1  # one seed each
    .venv/bin/python benchmarks/demo_comparison.py --only mixmatch  # configurations whose name starts so
"""

import argparse
import os
import shutil
import tempfile
import time

import yaml
from common import demo_project, mpltool

CONFIGURATIONS = [
    ("supervised", ["--recipe", "supervised-demo"]),
    ("uda", ["--recipe", "uda-demo"]),
    ("mpl (reference)", ["--recipe", "mpl-demo"]),
    ("mpl (paper)", ["--recipe", "mpl-demo", "--set", "mpl_feedback=paper"]),
    ("mixmatch", ["--recipe", "mixmatch-demo"]),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="", help="run the configurations whose name starts with this")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="mpltool-compare-")
    try:
        template = demo_project(root, "mpl-demo")
        print("{:<18} {:>9} {:>7} {:>7} {:>9}".format("configuration", "EMA top-1", "min", "max", "min/run"))
        for name, options in [c for c in CONFIGURATIONS if c[0].startswith(args.only)]:
            scores, minutes = [], []
            for seed in range(args.seeds):
                project = os.path.join(root, "{}-{}".format(name.split()[0], seed))
                shutil.rmtree(project, ignore_errors=True)
                shutil.copytree(template, project)
                started = time.time()
                mpltool(project, "train", "--device", "cpu", "--set", "seed={}".format(seed), *options)
                minutes.append((time.time() - started) / 60)
                with open(os.path.join(project, "mpltool.yaml")) as handle:
                    scores.append(yaml.safe_load(handle)["stages"]["train"]["metrics"]["ema_top1"])
                shutil.rmtree(project, ignore_errors=True)
            print("{:<18} {:>9.3f} {:>7.3f} {:>7.3f} {:>9.1f}".format(
                name, sum(scores) / len(scores), min(scores), max(scores), sum(minutes) / len(minutes)), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
