"""A stand-in for ais_bench's `InferSession` (tests only) that really runs the model behind a fake .om.

The fake atc (tests/fakes/atc) writes the converted .pb (or .onnx) into the .om after a header holding
its sha256 and the conversion's settings; this session checks the digest, then runs that model in
TensorFlow (or onnxruntime) at the .om's static input shape. Errors are raised as the real binding raises
them (docs/om-runtime.md §3): RuntimeError "[code][description] " -- "[1][ACL: invalid parameter] " for
a model that does not load, "[507033][Error code unknown] " when the device cannot be opened,
"[500000][Unknown internal error] " when ACL reports it busy, "[-1][ACL: general failure] " for an input
of the wrong size.

Knobs (environment): FAKE_ASCEND_DEVICES=n devices present (default 1; 0: none), FAKE_ASCEND_BUSY=1 (the
device is busy), FAKE_OM_LOGIT_SHIFT=x (x added to every logit: a conversion that changed the numbers),
FAKE_OM_LOG=file (each load appended as a JSON line: device, model path, input shape).
"""

import hashlib
import json
import os
import time

import numpy as np

FP16_MODES = ("force_fp16", "allow_mix_precision", "allow_fp32_to_fp16", "allow_mix_precision_fp16",
              "cube_fp16in_fp32out")


class TensorDesc:
    def __init__(self, name, shape, datatype, size):
        self.name, self.shape, self.datatype, self.size, self.realsize, self.format = name, shape, datatype, size, size, 1


class Summary:
    def __init__(self, times):
        self.exec_time_list = times


def _read_om(path):
    try:
        data = open(path, "rb").read()
        magic, soc, digest, meta, model = data.split(b"\x00", 4)
        if magic != b"FAKE-OM" or hashlib.sha256(model).hexdigest().encode() != digest:
            raise ValueError("digest")
        return soc.decode(), json.loads(meta.decode("utf-8")), model
    except (OSError, ValueError):
        print("[ERROR] load model from file failed, model file is {}".format(path))
        raise RuntimeError("[1][ACL: invalid parameter] ")


class InferSession:
    def __init__(self, device_id, model_path, acl_json_path=None, debug=False, loop=1):
        devices = int(os.environ.get("FAKE_ASCEND_DEVICES", "1"))
        if os.environ.get("FAKE_ASCEND_BUSY"):
            print("EL0005: The resources are busy.")
            raise RuntimeError("[500000][Unknown internal error] ")
        if not 0 <= int(device_id) < devices:
            print("[ERROR] acl open device {} failed".format(device_id))
            print("SetDevice failed. ret=507033")
            raise RuntimeError("[507033][Error code unknown] ")
        self.soc, self.meta, model = _read_om(model_path)
        name, dims = self.meta["input_shape"].rsplit(":", 1)
        self.shape = [int(d) for d in dims.split(",")]
        self.times = []
        if self.meta["framework"] == "5":
            import onnxruntime

            self.session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
            self.run_model = lambda x: self.session.run(["logits", "probs"], {"input": x})
        else:
            from mpltool.tfv1 import tf

            graph_def = tf.GraphDef()
            graph_def.ParseFromString(model)
            self.graph = tf.Graph()
            with self.graph.as_default():
                tf.import_graph_def(graph_def, name="")
            self.tf_session = tf.Session(graph=self.graph)
            fetches = [self.graph.get_tensor_by_name(n + ":0") for n in ("logits", "probs")]
            self.run_model = lambda x: self.tf_session.run(fetches, {name + ":0": x})
        log = os.environ.get("FAKE_OM_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(json.dumps({"device": int(device_id), "model": str(model_path), "shape": self.shape}) + "\n")

    def get_inputs(self):
        return [TensorDesc("input", list(self.shape), 0, int(np.prod(self.shape)) * 4)]

    def get_outputs(self):
        return [TensorDesc("logits:0", [self.shape[0], -1], 0, 0), TensorDesc("probs:0", [self.shape[0], -1], 0, 0)]

    def infer(self, feeds, mode="static", custom_sizes=100000, out_array=True):
        if mode != "static" or len(feeds) != 1 or np.asarray(feeds[0]).nbytes != int(np.prod(self.shape)) * 4:
            print("[ERROR] Check i:0 name:input in size:{} needsize:{} not match".format(
                np.asarray(feeds[0]).nbytes if feeds else 0, int(np.prod(self.shape)) * 4))
            raise RuntimeError("[-1][ACL: general failure] ")
        x = np.frombuffer(np.ascontiguousarray(feeds[0]).tobytes(), np.float32).reshape(self.shape)
        fp16 = self.meta["precision_mode"] in FP16_MODES
        started = time.perf_counter()
        logits, probs = self.run_model(x.astype(np.float16).astype(np.float32) if fp16 else x)
        self.times.append((time.perf_counter() - started) * 1000.0)
        if fp16:
            logits, probs = (v.astype(np.float16).astype(np.float32) for v in (logits, probs))
        logits = logits + float(os.environ.get("FAKE_OM_LOGIT_SHIFT", "0"))
        return [logits, probs]

    def sumary(self):  # the older ais_bench spelling only: mpltool must handle it
        return Summary(list(self.times))

    def free_resource(self):
        self.run_model = None
