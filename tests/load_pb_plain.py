"""Run a frozen mpltool .pb with plain TensorFlow, as a deployment script would: no mpltool import.

usage: python load_pb_plain.py MODEL.pb IMAGES.npy OUT.npz
IMAGES.npy holds raw pixels [N,32,32,3] (uint8 or float, 0..255): the graph normalises them itself.
Writes logits and probs to OUT.npz and prints one JSON line (images, batch, predictions, and whether
anything imported mpltool -- it must not, or the .pb would not be self-contained as claimed).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1


def run(pb_path, images):
    graph_def = tf1.GraphDef()
    with open(pb_path, "rb") as handle:
        graph_def.ParseFromString(handle.read())
    graph = tf1.Graph()
    with graph.as_default():
        tf1.import_graph_def(graph_def, name="")
    image_input = graph.get_tensor_by_name("input:0")
    outputs = [graph.get_tensor_by_name("logits:0"), graph.get_tensor_by_name("probs:0")]
    batch = image_input.shape.as_list()[0] or len(images)
    logits, probs = [], []
    with tf1.Session(graph=graph) as session:
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            valid = len(chunk)
            if valid < batch:  # a static-batch graph takes exactly `batch` images: pad, then drop the padding
                chunk = np.concatenate([chunk, np.zeros((batch - valid,) + chunk.shape[1:], np.float32)])
            chunk_logits, chunk_probs = session.run(outputs, {image_input: chunk})
            logits.append(chunk_logits[:valid])
            probs.append(chunk_probs[:valid])
    return batch, np.concatenate(logits), np.concatenate(probs)


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    pb_path, images_path, out_path = argv[1:]
    images = np.load(images_path).astype(np.float32)
    batch, logits, probs = run(pb_path, images)
    np.savez(out_path, logits=logits, probs=probs)
    print(json.dumps({"images": int(len(images)), "batch": int(batch),
                      "predictions": [int(p) for p in logits.argmax(axis=1)],
                      "mpltool_loaded": any(name == "mpltool" or name.startswith("mpltool.") for name in sys.modules)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
