"""Checkpoint eval vs frozen-.pb eval on the same images (target: the .pb faster than the checkpoint).

Builds an EMA checkpoint of the model (random weights, batch-norm statistics set away from 0/1 so the
folding has real work), freezes it exactly as `mpltool freeze` does, with and without folding the batch
norms (freeze/fold.py), and times all three through mpltool's eval code on the same images and batch
size, in interleaved rounds.

Re-measure: .venv/bin/python benchmarks/eval.py [--images 2000] [--batch 100] [--model wrn-28-2]
            (--model resnet18-cifar: a conv -> BN network, where every batch norm folds)
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import common


def measure(images=2000, batch=100, model="wrn-28-2", rounds=3):
    from mpltool.eval.metrics import evaluate_logits_fn
    from mpltool.freeze.fold import simplify_for_inference
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
            rng = np.random.RandomState(1)
            for variable in tf.global_variables():
                if variable.op.name.endswith(("moving_mean", "moving_variance")):
                    shape = variable.shape.as_list()
                    value = rng.uniform(0.5, 1.5, shape) if "variance" in variable.op.name else rng.normal(0, .1, shape)
                    variable.load(value.astype(np.float32), session)
            prefix = tf.train.Saver().save(session, str(workdir / "model.ckpt"), global_step=1)
    rng = np.random.RandomState(0)
    shape = tuple(build_model(model).input_spec.shape)
    pixels = rng.randint(0, 256, (images,) + shape).astype(np.float32)
    labels = rng.randint(0, 10, images)
    with CheckpointModel(prefix, "ema", checkpoint_variables(prefix)) as ckpt:
        frozen = freeze_graph_def(ckpt.session, ckpt.graph)
        folded, names = simplify_for_inference(frozen, ["logits", "probs"])
        with FrozenModel(frozen, "benchmark .pb", any_batch=True) as pb, \
                FrozenModel(folded, "benchmark folded .pb", any_batch=True) as pb_folded:
            models = (("ckpt", ckpt), ("pb", pb), ("pb_folded", pb_folded))
            onnx = _onnx_model(folded)  # what `export --format onnx` converts: the folded .pb
            if onnx is not None:
                models += (("onnx", onnx),)
            runs = {name: [] for name, _ in models}
            logits = {}
            for _, model in models:
                evaluate_logits_fn(model.predict, pixels[:batch], labels[:batch], batch)  # warm-up
            # Interleaved rounds, median per kind: a shared machine's slow spells hit all alike.
            for _ in range(rounds):
                for name, model in models:
                    result = evaluate_logits_fn(model.predict, pixels, labels, batch)
                    runs[name].append(result["images_per_second"])
            for name, model in models:
                logits[name] = model.predict(pixels[:batch])
    sizes = {"pb": len(frozen.SerializeToString()), "pb_folded": len(folded.SerializeToString())}
    compared = [name for name, _ in models if name != "ckpt"]
    return {"images_per_second": {k: float(np.median(v)) for k, v in runs.items()}, "sizes": sizes,
            "folded_batch_norms": len(names),
            "max_abs_logit_diff": {k: float(np.abs(logits[k] - logits["ckpt"]).max()) for k in compared}}


def _onnx_model(graph_def):
    """The graph as onnxruntime runs it, or None (said once) when the `onnx` extra is not installed."""
    from mpltool.errors import ToolMissingError
    from mpltool.models.onnx_runtime import OnnxModel, convert_graph_def

    try:
        proto = convert_graph_def(graph_def, 11, "benchmark .pb")
        return OnnxModel(proto.SerializeToString(), "benchmark .onnx")
    except ToolMissingError as exc:
        print("no ONNX column: {}".format(exc.message))
        return None


def main():
    common.child_main({"measure": measure})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--model", default="wrn-28-2")
    args = parser.parse_args()
    print("machine: " + common.machine())
    result = common.child(__file__, "measure", {"images": args.images, "batch": args.batch, "model": args.model})
    speed = result["images_per_second"]
    print("{} eval, {} images at batch {}, median of 3 interleaved rounds (images/s): checkpoint {:.0f}, "
          "frozen .pb {:.0f}, folded .pb {:.0f} ({} batch norms folded)".format(
              args.model, args.images, args.batch, speed["ckpt"], speed["pb"], speed["pb_folded"],
              result["folded_batch_norms"]))
    print("ratio .pb/checkpoint = {:.2f}, folded .pb/checkpoint = {:.2f} (target > 1.0); folded/unfolded "
          "= {:.2f}".format(speed["pb"] / speed["ckpt"], speed["pb_folded"] / speed["ckpt"],
                            speed["pb_folded"] / speed["pb"]))
    if "onnx" in speed:
        print("ONNX (onnxruntime, from the folded .pb) {:.0f} images/s: onnx/checkpoint = {:.2f}, onnx/folded .pb "
              "= {:.2f}".format(speed["onnx"], speed["onnx"] / speed["ckpt"], speed["onnx"] / speed["pb_folded"]))
    print("size: .pb {} bytes, folded {} bytes; max |dlogit| vs checkpoint: {}".format(
        result["sizes"]["pb"], result["sizes"]["pb_folded"],
        ", ".join("{} {:.3g}".format(k, v) for k, v in result["max_abs_logit_diff"].items())))


if __name__ == "__main__":
    main()
