"""Does the tf.data input keep up with training? (target: deliver >= 5x what a step consumes)

Measures, in one run: (1) source images/s the MPL input pipeline delivers at the recipe's batch (64
labelled + 448 unlabelled per step, each unlabelled image yielding an "ori" and a RandAugment "aug"
view), and (2) the MPL step's rate at the same batch with inputs in memory (benchmarks/train_step.py's
measurement), and prints their ratio.

Re-measure: .venv/bin/python benchmarks/input_pipeline.py [--batch 64] [--uda-data 7]
"""

import argparse

import numpy as np

import common
from train_step import algorithm_step


def pipeline(batch=64, uda_data=7, batches=20, images=5000):
    from mpltool.algorithms import get_algorithm
    from mpltool.data.pipeline import TrainInput
    from mpltool.models import input_spec, normalize_input
    from mpltool.recipes import load_recipe
    from mpltool.tfv1 import tf

    rng = np.random.RandomState(0)
    data = rng.randint(0, 256, (images, 32, 32, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, images)
    recipe = load_recipe("mpl-wrn28-2", ["batch_size={}".format(batch), "unlabelled_ratio={}".format(uda_data)])
    spec = input_spec(recipe.model)
    source = TrainInput(get_algorithm("mpl").streams(recipe), lambda x: normalize_input(x, spec), seed=0)
    with tf.Session() as session:
        source.initialize(session, data, labels, np.arange(min(4000, images)))
        seconds = common.timed(lambda: session.run(source.batch), warmup=3, repeat=batches)
    per_step = batch + batch * uda_data
    return {"seconds_per_batch": seconds, "images_per_second": per_step / seconds, "images_per_step": per_step}




def mpl_step(batch, uda_data, repeat):
    seconds = algorithm_step("mpl-wrn28-2", ["batch_size={}".format(batch), "unlabelled_ratio={}".format(uda_data)],
                             repeat=repeat)["seconds"]["train"]
    return {"seconds": seconds, "steps_per_second": 1.0 / seconds}


MEASUREMENTS = {"pipeline": pipeline, "mpl": mpl_step}


def main():
    common.child_main(MEASUREMENTS)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--uda-data", type=int, default=7)
    args = parser.parse_args()
    print("machine: " + common.machine())
    feed = common.child(__file__, "pipeline", {"batch": args.batch, "uda_data": args.uda_data})
    step = common.child(__file__, "mpl", {"batch": args.batch, "uda_data": args.uda_data, "repeat": 2})
    consumed = feed["images_per_step"] * step["steps_per_second"]
    print("pipeline delivers {:.0f} source images/s ({:.3f} s per step's batch of {})".format(
        feed["images_per_second"], feed["seconds_per_batch"], feed["images_per_step"]))
    print("one MPL step (batch {}, uda_data {}) consumes {:.1f} images/s ({:.2f} s/step)".format(
        args.batch, args.uda_data, consumed, step["seconds"]))
    print("ratio delivered/consumed = {:.1f}x (target >= 5x)".format(feed["images_per_second"] / consumed))


if __name__ == "__main__":
    main()
