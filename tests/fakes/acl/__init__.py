"""A stand-in for CANN's pyACL (`import acl`; tests only): the calls mpltool's fallback runtime makes, with
pyACL's conventions -- `ret` or `(value, ret)`, 0 for success -- over fake device memory, running the model
behind a fake .om (tests/fakes/fake_om.py). Failures return ACL codes: 107001 (ACL_ERROR_RT_INVALID_DEVICEID)
for a device that is not there, 500000 (internal, what ACL answers EL0005 "resources are busy" with) for a
busy one, 145000 (ACL_ERROR_GE_PARAM_INVALID) for a model that does not load (which code the real
aclmdlLoadFromFile returns for a corrupt file is not documented: docs/atc.md §6).
"""

import itertools

import numpy as np

from fake_om import FakeOm, NotLoadable, device_state

_memory = {}  # address -> bytearray (device and host memory alike)
_models = {}
_datasets = {}
_next = itertools.count(1000)
_state = {"device": None}


def _alloc(data):
    address = next(_next)
    _memory[address] = data
    return address


def init(*args):
    return 500000 if device_state(0) == "busy" else 0


def finalize():
    return 0


def create_data_buffer(address, size):
    return _alloc(("buffer", address, size))


def get_data_buffer_addr(buffer):
    return _memory[buffer][1]


class rt:  # noqa: N801 (pyACL's module names)
    @staticmethod
    def set_device(device_id):
        state = device_state(device_id)
        if state:
            return 107001 if state == "absent" else 500000
        _state["device"] = device_id
        return 0

    @staticmethod
    def create_context(device_id):
        return _alloc("context"), 0

    @staticmethod
    def malloc(size, policy):
        return _alloc(bytearray(size)), 0

    @staticmethod
    def malloc_host(size):
        return _alloc(bytearray(size)), 0

    @staticmethod
    def free(address):
        _memory.pop(address, None)
        return 0

    free_host = free

    @staticmethod
    def memcpy(dst, dst_size, src, src_size, kind):
        data = bytes(_memory[src][:src_size])
        if src_size > dst_size or len(data) != src_size:
            return 107000
        _memory[dst][:src_size] = data
        return 0

    @staticmethod
    def reset_device(device_id):
        return 0


class util:  # noqa: N801
    @staticmethod
    def bytes_to_ptr(data):
        return _alloc(bytearray(data))

    @staticmethod
    def ptr_to_bytes(address, size):
        return bytes(_memory[address][:size])


class mdl:  # noqa: N801
    @staticmethod
    def load_from_file(path):
        try:
            om = FakeOm(path, "pyacl", _state["device"])
        except NotLoadable:
            return 0, 145000
        model_id = next(_next)
        _models[model_id] = om
        return model_id, 0

    @staticmethod
    def create_desc():
        return _alloc({})

    @staticmethod
    def get_desc(desc, model_id):
        om = _models[model_id]
        _memory[desc].update(om=om, classes=om.classes)
        return 0

    @staticmethod
    def get_num_inputs(desc):
        return 1

    @staticmethod
    def get_num_outputs(desc):
        return 2

    @staticmethod
    def get_input_dims(desc, index):
        om = _memory[desc]["om"]
        return {"name": "input", "dimCount": len(om.shape), "dims": list(om.shape)}, 0

    @staticmethod
    def get_output_dims(desc, index):
        om = _memory[desc]["om"]
        return {"name": "output", "dimCount": 2, "dims": [om.shape[0], _memory[desc]["classes"]]}, 0

    @staticmethod
    def get_input_data_type(desc, index):
        return 0  # ACL_FLOAT

    get_output_data_type = get_input_data_type

    @staticmethod
    def get_output_name_by_index(desc, index):
        return ("logits:0", "probs:0")[index]

    @staticmethod
    def get_input_size_by_index(desc, index):
        return _memory[desc]["om"].input_bytes

    @staticmethod
    def get_output_size_by_index(desc, index):
        return _memory[desc]["om"].shape[0] * _memory[desc]["classes"] * 4

    @staticmethod
    def create_dataset():
        dataset = _alloc([])
        _datasets[dataset] = _memory[dataset]
        return dataset

    @staticmethod
    def add_dataset_buffer(dataset, buffer):
        _memory[dataset].append(buffer)
        return dataset, 0

    @staticmethod
    def get_dataset_buffer(dataset, index):
        return _memory[dataset][index]

    @staticmethod
    def execute(model_id, inputs, outputs):
        om = _models[model_id]
        source = _memory[get_data_buffer_addr(_memory[inputs][0])]
        x = np.frombuffer(bytes(source), np.float32).reshape(om.shape)
        for buffer, value in zip(_memory[outputs], om.run(x)):
            _memory[get_data_buffer_addr(buffer)][:] = np.ascontiguousarray(value, np.float32).tobytes()
        return 0

    @staticmethod
    def unload(model_id):
        _models.pop(model_id, None)
        return 0

    @staticmethod
    def destroy_desc(desc):
        return 0
