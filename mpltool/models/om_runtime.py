"""Running an Ascend offline model (.om) on this host's NPU, like every other model (`predict` -> logits).

Two runtimes, found at run time and never required (docs/atc.md §6 says what each needs):
- ais_bench's `InferSession` (the `aclruntime` and `ais_bench` wheels, built against CANN), preferred;
- pyACL (`import acl`, part of CANN, on PYTHONPATH once CANN's set_env.sh is sourced), the fallback.

Either runs the .om at its static input shape: images in chunks of its batch, the last one padded and its
padding dropped (inference.run_at_static_batch). A runtime's failures arrive as text, "[code][what] "
for ais_bench and ACL return codes for pyACL; `classify` turns the code into mpltool's exit contract:
no runtime or no usable device is exit 5, an .om the runtime cannot load (corrupt, tampered, built for
another SoC) is exit 3, anything else from the runtime is exit 6.
"""

import abc
import contextlib
import importlib
import os
import re
import sys
from typing import Any, Dict, List, Optional

import numpy as np

from mpltool.errors import InvalidInputError, MpltoolError, ToolFailedError, ToolMissingError, first_line
from mpltool.models.inference import InferenceModel, run_at_static_batch

RUNTIMES = ("ais_bench", "pyacl")
INSTALL_HINT = ("on a CANN host, install ais_bench (its two wheels, built against CANN: `aclruntime` from "
                "Ascend/tools ais-bench_workload/tool/ais_bench/backend, then `ais_bench`), or source CANN's "
                "set_env.sh so that pyACL (`import acl`) is found")
DEVICE_HINT = ("check the device with `npu-smi info` (present, healthy, memory free), or choose another with "
               "ASCEND_DEVICE_ID=N")

# aclDataType numbers (CANN's acl_base.h; ais_bench's dtype enum has the same values).
ACL_DTYPES = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32, 4: np.uint8, 6: np.int16, 7: np.uint16,
              8: np.uint32, 9: np.int64, 10: np.uint64, 11: np.float64, 12: np.bool_}
# ACL return codes that mean the device, not the model (CANN's aclError table): invalid device id,
# no device, device memory, device set-up failed, busy (EL0005 arrives as the internal 500000).
DEVICE_CODES = frozenset({107001, 200002, 207001, 207004, 207018, 245002, 500000, 507033})
LOAD_FAILED_CODES = frozenset({1, 100003, 100012, 100013, 100014, 100015, 145000, 145002, 145006, 545001})
_CODE = re.compile(r"^\s*\[(-?\d+)\]")


class DeviceUnavailable(ToolMissingError):
    """The runtime is here but the device is absent, busy or out of memory (exit 5)."""


def find_runtime(preferred: Optional[str] = None) -> Optional[str]:
    """The first runtime of RUNTIMES (or `preferred` alone) that imports, or None."""
    for name in ([preferred] if preferred else RUNTIMES):
        try:
            importlib.import_module("ais_bench.infer.interface" if name == "ais_bench" else "acl")
            return name
        except ImportError:
            continue
    return None


def require_runtime(preferred: Optional[str] = None) -> str:
    name = find_runtime(preferred)
    if name is None:
        raise ToolMissingError("running an .om needs CANN's runtime: neither ais_bench nor pyACL imports here"
                               if not preferred else "runtime {} does not import here".format(preferred),
                               hint=INSTALL_HINT)
    return name


def classify(exc: BaseException, what: str, device_id: int, stage: str) -> MpltoolError:
    """The mpltool error of a runtime failure `exc` while `stage` ("load" or "run") of `what`."""
    text = first_line(exc).strip() or type(exc).__name__
    match = _CODE.match(text)
    code = int(match.group(1)) if match else getattr(exc, "acl_code", None)
    if code in DEVICE_CODES:
        return DeviceUnavailable("Ascend device {} is not usable for {}: {}".format(device_id, what, text),
                                 hint=DEVICE_HINT)
    if stage == "load" and (code in LOAD_FAILED_CODES or isinstance(exc, ValueError)):
        return InvalidInputError("{} does not load on device {} ({}): a corrupt or changed file, or one converted "
                                 "for another soc_version".format(what, device_id, text),
                                 hint="re-run `mpltool convert` for this host's SoC")
    if stage == "run" and code == -1:
        return InvalidInputError("{} refused its input ({}): the input does not have the size the .om was "
                                 "converted for".format(what, text))
    return ToolFailedError("the Ascend runtime failed to {} {}: {}".format(stage, what, text))


@contextlib.contextmanager
def runtime_output_to_stderr():
    """The runtimes print their ACL messages on stdout (C++ cout and Python print): sent to stderr while
    they run, so that stdout keeps one result (--json)."""
    sys.stdout.flush()
    saved = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no file descriptors to redirect (an embedded interpreter): Python's stdout only
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, 1)
            os.close(saved)


class Session(abc.ABC):
    """One loaded .om on one device, as a runtime offers it."""

    input_shape = ()  # type: tuple
    input_dtype = np.float32
    output_names = ()  # type: tuple

    @abc.abstractmethod
    def run(self, array: np.ndarray) -> List[np.ndarray]:
        """Every output for one input batch of exactly `input_shape`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device's resources."""

    def execute_ms(self) -> List[float]:
        """Device time of each run so far, in ms, where the runtime measures it."""
        return []


class AisBenchSession(Session):
    """ais_bench: InferSession(device_id, path) opens the device and loads the model; infer(mode="static")."""

    def __init__(self, path: str, device_id: int):
        from ais_bench.infer.interface import InferSession

        self.session = InferSession(int(device_id), path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise InvalidInputError("{} has {} inputs; an mpltool model has one".format(path, len(inputs)))
        self.input_shape = tuple(int(d) for d in inputs[0].shape)
        self.input_dtype = ACL_DTYPES.get(int(inputs[0].datatype), np.float32)
        self.output_names = tuple(o.name for o in outputs)

    def run(self, array):
        return [np.asarray(o) for o in self.session.infer([array], mode="static")]

    def execute_ms(self):
        summary = getattr(self.session, "summary", None) or getattr(self.session, "sumary")  # both spellings exist
        return [float(ms) for ms in summary().exec_time_list]

    def close(self):
        free = getattr(self.session, "free_resource", None)
        if free is not None:
            free()


class AclError(RuntimeError):
    def __init__(self, call: str, code: int):
        super().__init__("[{}][{} failed]".format(code, call))
        self.acl_code = code


def _acl(result, call):
    """pyACL returns `ret` or `(value, ret)`; 0 is success."""
    value, ret = (result if isinstance(result, tuple) else (None, result))
    if ret != 0:
        raise AclError(call, int(ret))
    return value


class PyAclSession(Session):
    """pyACL: init, set_device, create_context, load_from_file, then per run host->device copy, execute,
    device->host copy (CANN's pyACL inference flow)."""

    MEMCPY_HOST_TO_DEVICE, MEMCPY_DEVICE_TO_HOST = 1, 2

    def __init__(self, path: str, device_id: int):
        import acl

        self.acl, self.device_id, self._buffers, self.model_id, self.desc = acl, int(device_id), [], None, None
        self._device_set = False
        _acl(acl.init(), "acl.init")
        try:
            self._open(path)
        except BaseException:
            self.close()
            raise

    def _open(self, path):
        acl = self.acl
        _acl(acl.rt.set_device(self.device_id), "acl.rt.set_device")
        self._device_set = True
        self.context = _acl(acl.rt.create_context(self.device_id), "acl.rt.create_context")
        self.model_id = _acl(acl.mdl.load_from_file(path), "acl.mdl.load_from_file")
        self.desc = acl.mdl.create_desc()
        _acl(acl.mdl.get_desc(self.desc, self.model_id), "acl.mdl.get_desc")
        if acl.mdl.get_num_inputs(self.desc) != 1:
            raise InvalidInputError("{} has {} inputs; an mpltool model has one".format(
                path, acl.mdl.get_num_inputs(self.desc)))
        self.input_shape = tuple(int(d) for d in _acl(acl.mdl.get_input_dims(self.desc, 0),
                                                      "acl.mdl.get_input_dims")["dims"])
        self.input_dtype = ACL_DTYPES.get(int(acl.mdl.get_input_data_type(self.desc, 0)), np.float32)
        count = acl.mdl.get_num_outputs(self.desc)
        self.output_names = tuple(acl.mdl.get_output_name_by_index(self.desc, i) for i in range(count))
        self.output_dtypes = [ACL_DTYPES.get(int(acl.mdl.get_output_data_type(self.desc, i)), np.float32)
                              for i in range(count)]
        self.output_dims = [tuple(_acl(acl.mdl.get_output_dims(self.desc, i), "acl.mdl.get_output_dims")["dims"])
                            for i in range(count)]
        self.input_size = acl.mdl.get_input_size_by_index(self.desc, 0)
        self.output_sizes = [acl.mdl.get_output_size_by_index(self.desc, i) for i in range(count)]
        self.inputs = self._dataset([self.input_size])
        self.outputs = self._dataset(self.output_sizes)

    def _dataset(self, sizes):
        acl = self.acl
        dataset = acl.mdl.create_dataset()
        for size in sizes:
            device = _acl(acl.rt.malloc(size, 0), "acl.rt.malloc")  # ACL_MEM_MALLOC_HUGE_FIRST
            self._buffers.append(device)
            _acl(acl.mdl.add_dataset_buffer(dataset, acl.create_data_buffer(device, size)), "acl.mdl.add_dataset_buffer")
        return dataset

    def run(self, array):
        acl = self.acl
        data = np.ascontiguousarray(array).tobytes()
        if len(data) != self.input_size:
            raise AclError("input of {} bytes where the model takes {}: acl.rt.memcpy".format(
                len(data), self.input_size), -1)
        target = acl.get_data_buffer_addr(acl.mdl.get_dataset_buffer(self.inputs, 0))
        _acl(acl.rt.memcpy(target, self.input_size, acl.util.bytes_to_ptr(data), len(data),
                           self.MEMCPY_HOST_TO_DEVICE), "acl.rt.memcpy")
        _acl(acl.mdl.execute(self.model_id, self.inputs, self.outputs), "acl.mdl.execute")
        results = []
        for i, size in enumerate(self.output_sizes):
            host = _acl(acl.rt.malloc_host(size), "acl.rt.malloc_host")
            try:
                source = acl.get_data_buffer_addr(acl.mdl.get_dataset_buffer(self.outputs, i))
                _acl(acl.rt.memcpy(host, size, source, size, self.MEMCPY_DEVICE_TO_HOST), "acl.rt.memcpy")
                data = acl.util.ptr_to_bytes(host, size)
            finally:
                acl.rt.free_host(host)
            results.append(np.frombuffer(data, self.output_dtypes[i]).reshape(self.output_dims[i]))
        return results

    def close(self):
        acl = self.acl
        for buffer in self._buffers:
            acl.rt.free(buffer)
        if self.model_id is not None:
            acl.mdl.unload(self.model_id)
        if self.desc is not None:
            acl.mdl.destroy_desc(self.desc)
        if self._device_set:
            acl.rt.reset_device(self.device_id)
        acl.finalize()
        self._buffers, self.model_id, self.desc, self._device_set = [], None, None, False


SESSIONS = {"ais_bench": AisBenchSession, "pyacl": PyAclSession}


class OmModel(InferenceModel):
    """An .om on Ascend device `device_id`: raw NHWC pixels in, logits out, at its static batch."""

    def __init__(self, path, device_id: int = 0, runtime: Optional[str] = None):
        self.what = str(path)
        self.device_id = int(device_id)
        self.runtime = require_runtime(runtime)
        try:
            with runtime_output_to_stderr():
                self.session = SESSIONS[self.runtime](str(path), self.device_id)
        except MpltoolError:
            raise
        except Exception as exc:  # RuntimeError / ValueError from ais_bench, AclError from pyACL
            raise classify(exc, self.what, self.device_id, "load")
        shape = self.session.input_shape
        if len(shape) != 4 or any(d <= 0 for d in shape):
            self.session.close()
            raise InvalidInputError("{} takes input {}; mpltool runs .om files of a static NHWC shape".format(
                self.what, list(shape)))
        self.static_batch = shape[0]
        self.logits_index = next((i for i, name in enumerate(self.session.output_names) if "logits" in name), 0)
        self.num_classes = None

    @property
    def image_shape(self) -> List[Optional[int]]:
        return list(self.session.input_shape[1:])

    def describe(self) -> Dict[str, Any]:
        return {"runtime": self.runtime, "device_id": self.device_id, "input_shape": list(self.session.input_shape),
                "input_dtype": np.dtype(self.session.input_dtype).name, "output_names": list(self.session.output_names)}

    def predict(self, images: np.ndarray) -> np.ndarray:
        return run_at_static_batch(self._run, images, self.static_batch, self.num_classes)

    def _run(self, images: np.ndarray) -> np.ndarray:
        try:
            with runtime_output_to_stderr():
                outputs = self.session.run(np.ascontiguousarray(images, dtype=self.session.input_dtype))
        except MpltoolError:
            raise
        except Exception as exc:
            raise classify(exc, self.what, self.device_id, "run")
        logits = np.asarray(outputs[self.logits_index], np.float32).reshape(images.shape[0], -1)
        self.num_classes = logits.shape[1]
        return logits

    def execute_ms(self) -> List[float]:
        return self.session.execute_ms()

    def close(self) -> None:
        if getattr(self, "session", None) is not None:
            self.session.close()
            self.session = None
