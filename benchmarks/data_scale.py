"""Does memory stay flat as image folders grow? And does the streamed input keep up with a step?

For each size (default 10k, 50k and 200k JPEGs) this generates a synthetic image folder (DIR/train/<class>/
and DIR/test/<class>/, 5% test; 96x96 JPEGs, each file distinct) and measures, each in its own process:
- `data prepare --images` throughput (images/s: copied, hashed, decoded once) and its peak RSS;
- peak RSS of a short training run (supervised-domains-demo, Caffe AlexNet at 64x64, files decoded and
  resized as they are read) and of `eval` over the test domain;
then, on the smallest folder, the images/s the training input pipeline delivers at 224x224 -- files read,
fingerprint-verified and decoded, then either resized + flip/pad/crop, or autoaugment-resnet50's view
(random-resized crop, flip, the ImageNet AutoAugment policy) -- against the images/s a ResNet-50 training
step at 224x224 consumes (autoaugment-resnet50's network, inputs in memory). The figures are printed as a
table; nothing is asserted.

Re-measure: .venv/bin/python benchmarks/data_scale.py [--sizes 10000,50000,200000] [--steps 20] [--keep DIR]
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

import common

CLASSES = 10
TEST_FRACTION = 0.05
SIDE = 96
RECIPE = "supervised-domains-demo"
TRAIN_SET = ["target_domain=test", "domain_valid_fraction=0", "select_best_on=test"]


def make_folder(root, count):
    """`count` distinct JPEGs: a pool of 200 encoded images, each file one of them with its number appended
    after the end-of-image marker (decoders stop there), so every file has its own bytes and hash."""
    from mpltool.tfv1 import tf

    rng = np.random.RandomState(0)
    pool = []
    with tf.Graph().as_default(), tf.Session() as session:
        image = tf.placeholder(tf.uint8, (SIDE, SIDE, 3))
        encoded = tf.image.encode_jpeg(image, quality=90)
        for _ in range(200):
            base = rng.randint(0, 256, (6, 6, 3)).astype(np.float32)
            smooth = np.kron(base, np.ones((SIDE // 6, SIDE // 6, 1)))[:SIDE, :SIDE]
            noisy = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
            pool.append(session.run(encoded, {image: noisy}))
    tests = int(round(count * TEST_FRACTION))
    for k in range(count):
        split = "test" if k < tests else "train"
        folder = os.path.join(root, split, "class_{}".format(k % CLASSES))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "{:07d}.jpg".format(k)), "wb") as handle:
            handle.write(pool[k % len(pool)] + str(k).encode())
    return tests


def prepare(folder, project):
    from mpltool.data.stage import prepare as prepare_data

    started = time.perf_counter()
    result = prepare_data(project, folder, kind="folders", recipe=RECIPE)
    seconds = time.perf_counter() - started
    return {"images": result["records"], "seconds": seconds, "images_per_second": result["records"] / seconds}


def train(project, steps):
    from mpltool.train.stage import train as train_stage

    started = time.perf_counter()
    train_stage(project, RECIPE, TRAIN_SET + ["num_train_steps={}".format(steps), "eval_every={}".format(steps),
                                               "save_every={}".format(steps), "log_every={}".format(steps)],
                log=lambda line: None, warn=lambda line: None)
    return {"seconds": time.perf_counter() - started}


def evaluate(project):
    from mpltool.eval.stage import evaluate as eval_stage

    result = eval_stage(project)
    return {"images": result["images"], "images_per_second": result["images_per_second"]}


IMAGENET_RECIPE = "autoaugment-resnet50"


def pipeline_rate(project, view="flip-crop", size=224, batch=128, batches=12):
    """Images/s the training input delivers at `size`: files read, verified, decoded, then `view`:
    flip-crop (resized, flip/pad/crop) or imagenet (autoaugment-resnet50's crop + policy)."""
    from mpltool.data.pipeline import Stream, TrainInput
    from mpltool.data.records import reader_of
    from mpltool.data.stage import load_prepared, training_data
    from mpltool.data.views import LABELS, flip_crop, resized_crop
    from mpltool.manifest import Project
    from mpltool.models import normalize_input, input_spec
    from mpltool.recipes import load_recipe
    from mpltool.tfv1 import tf

    recipe = load_recipe(RECIPE, TRAIN_SET)
    data = training_data(load_prepared(Project(project)), recipe)
    images = data["train_images"].resized((size, size))
    spec = input_spec("resnet50-{}".format(size))
    chosen = flip_crop() if view == "flip-crop" else resized_crop(load_recipe(IMAGENET_RECIPE, [
        "model=resnet50-{}".format(size)]))
    with tf.Graph().as_default():
        pipeline = TrainInput([Stream("labelled", batch, chosen, LABELS)], lambda x: normalize_input(x, spec),
                              shuffle_buffer=1024, seed=0, image_shape=images.shape[1:], reader=reader_of(images))
        with tf.Session() as session:
            pipeline.initialize(session, images, data["train_labels"], data["labelled_indices"])
            session.run(pipeline.batch)  # warm-up: fills the shuffle buffer
            started = time.perf_counter()
            for _ in range(batches):
                session.run(pipeline.batch)
            seconds = time.perf_counter() - started
    return {"images_per_second": batch * batches / seconds}


def step_rate(batch=32):
    """Images/s one fwd+bwd step of autoaugment-resnet50's ResNet-50 at 224x224 consumes."""
    from train_step import plain_step

    result = plain_step(IMAGENET_RECIPE, ["batch_size={}".format(batch)], repeat=3)
    return {"images_per_second": batch / result["seconds"], "batch": batch}


MEASUREMENTS = {"prepare": prepare, "train": train, "evaluate": evaluate, "pipeline_rate": pipeline_rate,
                "step_rate": step_rate}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--keep", default=None, help="generate the folders here and keep them")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="mpltool-data-scale-")
    me = os.path.abspath(__file__)
    rows = []
    try:
        for count in [int(s) for s in args.sizes.split(",")]:
            folder, project = os.path.join(root, "images-{}".format(count)), os.path.join(root, "project-{}".format(count))
            if not os.path.isdir(folder):
                make_folder(folder, count)
            shutil.rmtree(project, ignore_errors=True)
            prepared = common.child(me, "prepare", {"folder": folder, "project": project})
            trained = common.child(me, "train", {"project": project, "steps": args.steps})
            evaluated = common.child(me, "evaluate", {"project": project})
            rows.append((count, prepared, trained, evaluated))
            print("{:>8} images: prepare {:7.0f} img/s, {:6.0f} MiB | train {:6.0f} MiB | eval {:6.0f} MiB "
                  "({:.0f} img/s)".format(count, prepared["images_per_second"], prepared["peak_rss_mib"],
                                          trained["peak_rss_mib"], evaluated["peak_rss_mib"],
                                          evaluated["images_per_second"]), flush=True)
        smallest = os.path.join(root, "project-{}".format(rows[0][0]))
        delivered = {view: common.child(me, "pipeline_rate", {"project": smallest, "view": view})
                     for view in ("flip-crop", "imagenet")}
        consumed = common.child(me, "step_rate", {})
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\nmachine: {}".format(common.machine()))
    print("| images | prepare (img/s) | prepare peak RSS | train peak RSS | eval peak RSS |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for count, prepared, trained, evaluated in rows:
        print("| {:,} | {:.0f} | {:.0f} MiB | {:.0f} MiB | {:.0f} MiB |".format(
            count, prepared["images_per_second"], prepared["peak_rss_mib"], trained["peak_rss_mib"],
            evaluated["peak_rss_mib"]))
    for stage, key in (("train", 2), ("eval", 3)):
        values = [row[key]["peak_rss_mib"] for row in rows]
        print("{} peak RSS, largest / smallest folder: {:.3f}".format(stage, values[-1] / values[0]))
    print("a ResNet-50 step at 224x224 (batch {}) consumes {:.1f} images/s".format(
        consumed["batch"], consumed["images_per_second"]))
    for view, label in (("flip-crop", "resize + flip/pad/crop"),
                        ("imagenet", "random-resized crop + flip + ImageNet AutoAugment")):
        rate = delivered[view]["images_per_second"]
        print("input pipeline at 224x224, {}: {:.0f} images/s, {:.1f}x what the step consumes".format(
            label, rate, rate / consumed["images_per_second"]))


if __name__ == "__main__":
    common.child_main(MEASUREMENTS)
    main()
