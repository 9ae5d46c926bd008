"""A stand-in for ais_bench's `InferSession` (tests only) that really runs the model behind a fake .om
(tests/fakes/fake_om.py). Errors are raised as the real binding raises them (docs/atc.md §6):
RuntimeError "[code][description] " -- "[1][ACL: invalid parameter] " for a model that does not load,
"[507033][Error code unknown] " when the device cannot be opened, "[500000][Unknown internal error] " when
ACL reports it busy, "[-1][ACL: general failure] " for an input of the wrong size; ACL's own messages are
printed on stdout first, as the binding prints them.
"""

import numpy as np

from fake_om import FakeOm, NotLoadable, device_state


class TensorDesc:
    def __init__(self, name, shape, datatype, size):
        self.name, self.shape, self.datatype, self.size, self.realsize, self.format = name, shape, datatype, size, size, 1


class Summary:
    def __init__(self, times):
        self.exec_time_list = times


class InferSession:
    def __init__(self, device_id, model_path, acl_json_path=None, debug=False, loop=1):
        state = device_state(device_id)
        if state == "busy":
            print("EL0005: The resources are busy.")
            raise RuntimeError("[500000][Unknown internal error] ")
        if state == "absent":
            print("[ERROR] acl open device {} failed".format(device_id))
            print("SetDevice failed. ret=507033")
            raise RuntimeError("[507033][Error code unknown] ")
        try:
            self.om = FakeOm(model_path, "ais_bench", device_id)
        except NotLoadable:
            print("[ERROR] load model from file failed, model file is {}".format(model_path))
            raise RuntimeError("[1][ACL: invalid parameter] ")

    def get_inputs(self):
        return [TensorDesc("input", list(self.om.shape), 0, self.om.input_bytes)]

    def get_outputs(self):
        batch = self.om.shape[0]
        return [TensorDesc("logits:0", [batch, -1], 0, 0), TensorDesc("probs:0", [batch, -1], 0, 0)]

    def infer(self, feeds, mode="static", custom_sizes=100000, out_array=True):
        size = np.asarray(feeds[0]).nbytes if feeds else 0
        if mode != "static" or len(feeds) != 1 or size != self.om.input_bytes:
            print("[ERROR] Check i:0 name:input in size:{} needsize:{} not match".format(size, self.om.input_bytes))
            raise RuntimeError("[-1][ACL: general failure] ")
        x = np.frombuffer(np.ascontiguousarray(feeds[0]).tobytes(), np.float32).reshape(self.om.shape)
        return self.om.run(x)

    def sumary(self):  # the older ais_bench spelling only: mpltool must handle it
        return Summary(list(self.om.times))

    def free_resource(self):
        self.om = None
