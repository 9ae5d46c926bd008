"""Checkpoint eval vs frozen-.pb eval on the same images (target: the .pb at least as fast as the checkpoint).

Builds a WRN-28-2 EMA checkpoint (random weights, non-trivial BN statistics), freezes it exactly as
`mpltool freeze` does, and times both through mpltool's eval code on the same images and batch size.

Re-measure: .venv/bin/python benchmarks/eval.py [--images 2000] [--batch 100] [--model wrn-28-2]
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import common


def measure(images=2000, batch=100, model="wrn-28-2", rounds=3):
    from mpltool.eval.metrics import evaluate_logits_fn
    from mpltool.freeze.graph import freeze_graph_def
    from mpltool.models import build_model
    from mpltool.models.inference import CheckpointModel, FrozenModel, build_inference_graph
    from mpltool.tfv1 import tf
    from mpltool.checkpoints import checkpoint_variables

    workdir = Path(tempfile.mkdtemp(prefix="mpltool-bench-"))
    with tf.Graph().as_default():
        build_inference_graph(build_model(model), "ema")
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            prefix = tf.train.Saver().save(session, str(workdir / "model.ckpt"), global_step=1)
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, (images, 32, 32, 3)).astype(np.float32)
    labels = rng.randint(0, 10, images)
    with CheckpointModel(prefix, "ema", checkpoint_variables(prefix)) as ckpt:
        frozen = freeze_graph_def(ckpt.session, ckpt.graph)
        with FrozenModel(frozen, "benchmark .pb", any_batch=True) as pb:
            runs = {"ckpt": [], "pb": []}
            top1 = {}
            for model in (ckpt, pb):
                evaluate_logits_fn(model.predict, pixels[:batch], labels[:batch], batch)  # warm-up
            # Interleaved rounds, median per kind: a shared machine's slow spells hit both alike.
            for _ in range(rounds):
                for name, model in (("ckpt", ckpt), ("pb", pb)):
                    result = evaluate_logits_fn(model.predict, pixels, labels, batch)
                    runs[name].append(result["images_per_second"])
                    top1[name] = result["top1"]
    return {"ckpt": float(np.median(runs["ckpt"])), "pb": float(np.median(runs["pb"])),
            "same_top1": top1["ckpt"] == top1["pb"]}


def main():
    common.child_main({"measure": measure})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--model", default="wrn-28-2")
    args = parser.parse_args()
    print("machine: " + common.machine())
    result = common.child(__file__, "measure", {"images": args.images, "batch": args.batch, "model": args.model})
    print("{} eval, {} images at batch {}, median of 3 interleaved rounds: checkpoint {:.0f} images/s, "
          "frozen .pb {:.0f} images/s".format(
        args.model, args.images, args.batch, result["ckpt"], result["pb"]))
    print("ratio pb/checkpoint = {:.2f} (target >= 1.0); same top-1: {}".format(
        result["pb"] / result["ckpt"], result["same_top1"]))


if __name__ == "__main__":
    main()
