"""The algorithms on the embedded demo data, top-1 over seeds, in three groups:

- semi-supervised (the CIFAR-format demo, mpl-demo's 1,000 labels, one network, batch and length):
  supervised vs UDA vs MPL (reference and paper feedback) vs MixMatch; EMA top-1 at the end;
- domain generalisation (the multi-domain demo, trained on photo, sketch and painting, tested on
  cartoon): MASF vs plain supervised training of the same AlexNet; top-1 on cartoon of the checkpoint
  chosen on the held-out source images (what eval and freeze take) and at the end;
- self-supervised (the CIFAR-format demo): BYOL's linear evaluation vs the same linear head trained on
  the random encoder (byol_lr=0: the pre-training steps only estimate its batch-norm statistics, so
  the baseline is not crippled by BN at its initial statistics); top-1 of the linear head at the end.

Each run is the real CLI in its own process, as a user would type it. Prints one row per
configuration: mean top-1, min and max over the seeds, and minutes per run.

    .venv/bin/python benchmarks/demo_comparison.py            # 3 seeds, about 75 minutes on 2 cores
    .venv/bin/python benchmarks/demo_comparison.py --seeds 1  # one seed each
    .venv/bin/python benchmarks/demo_comparison.py --only masf  # configurations whose name starts so
"""

import argparse
import os
import shutil
import tempfile
import time

import yaml
from common import demo_project, mpltool

# (name, data: cifar | domains, train options, score: "final" = the default target's last top-1, or
# "selected" = test top-1 of the best checkpoint chosen on validation records)
CONFIGURATIONS = [
    ("supervised", "cifar", ["--recipe", "supervised-demo"], "final"),
    ("uda", "cifar", ["--recipe", "uda-demo"], "final"),
    ("mpl (reference)", "cifar", ["--recipe", "mpl-demo"], "final"),
    ("mpl (paper)", "cifar", ["--recipe", "mpl-demo", "--set", "mpl_feedback=paper"], "final"),
    ("mixmatch", "cifar", ["--recipe", "mixmatch-demo"], "final"),
    ("masf (cartoon)", "domains", ["--recipe", "masf-demo"], "selected"),
    ("alexnet (cartoon)", "domains", ["--recipe", "supervised-domains-demo"], "selected"),
    ("byol linear eval", "cifar", ["--recipe", "byol-demo"], "final"),
    ("random encoder", "cifar", ["--recipe", "byol-demo", "--set", "byol_lr=0"], "final"),
]


def score(record, kind):
    """The run's top-1 on the test images (see CONFIGURATIONS)."""
    target = record["algorithm"]["default_target"]
    if kind == "selected":
        return record["checkpoints"]["best"][target]["top1"]
    return record["metrics"]["{}_top1".format(target)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="", help="run the configurations whose name starts with this")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="mpltool-compare-")
    try:
        templates = {}
        print("{:<20} {:>9} {:>7} {:>7} {:>9}".format("configuration", "top-1", "min", "max", "min/run"))
        for name, data, options, kind in [c for c in CONFIGURATIONS if c[0].startswith(args.only)]:
            if data not in templates:
                templates[data] = demo_project(root, "masf-demo" if data == "domains" else "mpl-demo",
                                               domains=data == "domains")
            template = templates[data]
            scores, minutes = [], []
            for seed in range(args.seeds):
                project = os.path.join(root, "{}-{}".format(name.split()[0], seed))
                shutil.rmtree(project, ignore_errors=True)
                shutil.copytree(template, project)
                started = time.time()
                mpltool(project, "train", "--device", "cpu", "--set", "seed={}".format(seed), *options)
                minutes.append((time.time() - started) / 60)
                with open(os.path.join(project, "mpltool.yaml")) as handle:
                    scores.append(score(yaml.safe_load(handle)["stages"]["train"], kind))
                shutil.rmtree(project, ignore_errors=True)
            print("{:<20} {:>9.3f} {:>7.3f} {:>7.3f} {:>9.1f}".format(
                name, sum(scores) / len(scores), min(scores), max(scores), sum(minutes) / len(minutes)), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
