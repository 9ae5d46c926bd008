"""What the fake runtimes (tests/fakes/ais_bench, tests/fakes/acl) share: a fake device set, and the model
the fake atc put into a fake .om, run for real (TensorFlow for a .pb, onnxruntime for an .onnx).

A fake .om is `FAKE-OM\\0<soc>\\0<sha256 of the model>\\0<json settings>\\0<model bytes>`; a model whose
bytes no longer match the digest does not load (a corrupt or tampered .om). Knobs (environment):
FAKE_ASCEND_DEVICES=n devices present (default 1; 0: none), FAKE_ASCEND_BUSY=1 (the device is busy),
FAKE_OM_LOGIT_SHIFT=x (x added to every logit: a conversion that changed the numbers), FAKE_OM_LOG=file
(each load appended as a JSON line: runtime, device, model path, input shape).
"""

import hashlib
import json
import os
import time

import numpy as np

FP16_MODES = ("force_fp16", "allow_mix_precision", "allow_fp32_to_fp16", "allow_mix_precision_fp16",
              "cube_fp16in_fp32out")


class NotLoadable(Exception):
    pass


def device_state(device_id):
    """None when device `device_id` can be opened, else "busy" or "absent"."""
    if os.environ.get("FAKE_ASCEND_BUSY"):
        return "busy"
    if not 0 <= int(device_id) < int(os.environ.get("FAKE_ASCEND_DEVICES", "1")):
        return "absent"
    return None


class FakeOm:
    def __init__(self, path, runtime, device_id):
        try:
            data = open(path, "rb").read()
            magic, self.soc, digest, meta, model = data.split(b"\x00", 4)
            if magic != b"FAKE-OM" or hashlib.sha256(model).hexdigest().encode() != digest:
                raise ValueError("digest")
            self.meta = json.loads(meta.decode("utf-8"))
        except (OSError, ValueError):
            raise NotLoadable(path)
        name, dims = self.meta["input_shape"].rsplit(":", 1)
        self.shape = [int(d) for d in dims.split(",")]
        self.times = []
        if self.meta["framework"] == "5":
            import onnxruntime

            session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
            self._run = lambda x: session.run(["logits", "probs"], {"input": x})
        else:
            from mpltool.tfv1 import tf

            graph_def = tf.GraphDef()
            graph_def.ParseFromString(model)
            graph = tf.Graph()
            with graph.as_default():
                tf.import_graph_def(graph_def, name="")
            session = tf.Session(graph=graph)
            fetches = [graph.get_tensor_by_name(n + ":0") for n in ("logits", "probs")]
            self._run = lambda x: session.run(fetches, {name + ":0": x})
        log = os.environ.get("FAKE_OM_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(json.dumps({"runtime": runtime, "device": int(device_id), "model": str(path),
                                         "shape": self.shape}) + "\n")

    @property
    def input_bytes(self):
        return int(np.prod(self.shape)) * 4

    @property
    def classes(self):
        return self.run(np.zeros(self.shape, np.float32), timed=False)[0].shape[-1]

    def run(self, x, timed=True):
        """[logits, probs] of float32 input x; fp16 precision modes round input and outputs to float16."""
        fp16 = self.meta["precision_mode"] in FP16_MODES
        started = time.perf_counter()
        logits, probs = self._run(x.astype(np.float16).astype(np.float32) if fp16 else x)
        if timed:
            self.times.append((time.perf_counter() - started) * 1000.0)
        if fp16:
            logits, probs = (v.astype(np.float16).astype(np.float32) for v in (logits, probs))
        return [logits + float(os.environ.get("FAKE_OM_LOGIT_SHIFT", "0")), probs]
