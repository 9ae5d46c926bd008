"""Data-parallel replicas: which engine this process belongs to, and the four things training needs from it.

mpltool never reduces anything itself. A process started by `horovodrun` (HOROVOD_RANK set) uses Horovod;
one started under an Ascend rank table (RANK_TABLE_FILE and RANK_SIZE > 1, on an NPU) uses HCCL through
npu_bridge; any other is a single replica. Training asks the replicas for:

- `wrap_optimizer(opt)`: gradients averaged over replicas before they are applied (Horovod's
  DistributedOptimizer, npu_bridge's NPUDistributedOptimizer), so every replica applies the same update;
- `mean(tensor)`: an all-reduced mean of a scalar the step needs identical everywhere (MPL's h-term);
- `broadcast_op()`: rank 0's variables copied to every replica (after initialisation or restore);
- `rank`, `size`: the shard a replica reads, and whether it is rank 0 (the only one that writes);
- `share_params(params)`: rank 0's resolved recipe, handed to every other rank before any graph is built,
  so all train the same configuration however the processes were started.
"""

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

from mpltool.signals import check_interrupted

from mpltool.errors import PrerequisiteError, ToolMissingError

SHARE_TIMEOUT_SECONDS = 600

HOROVOD_INSTALL = ('HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 '
                   'HOROVOD_WITHOUT_MXNET=1 .venv/bin/pip install --no-build-isolation horovod==0.28.1 '
                   '(or `make venv EXTRAS=cpu,test,dist`)')


class Replicas:
    """One replica: nothing to reduce or broadcast."""

    backend = "none"
    rank = 0
    size = 1

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def wrap_optimizer(self, optimizer):
        return optimizer

    def mean(self, tensor):
        return tensor

    def broadcast_op(self):
        return None

    def describe(self):
        return {"backend": self.backend, "replicas": self.size}

    def share_params(self, params: Optional[Dict[str, Any]], project_dir=None) -> Dict[str, Any]:
        """Rank 0 passes its resolved recipe values, the other ranks None; every rank gets rank 0's."""
        return params


class HorovodReplicas(Replicas):
    backend = "horovod"

    def __init__(self):
        self.hvd = import_horovod()
        self.hvd.init()
        self.rank = self.hvd.rank()
        self.size = self.hvd.size()

    def wrap_optimizer(self, optimizer):
        return self.hvd.DistributedOptimizer(optimizer)

    def mean(self, tensor):
        return self.hvd.allreduce(tensor, op=self.hvd.Average)

    def broadcast_op(self):
        return self.hvd.broadcast_global_variables(0)

    def share_params(self, params, project_dir=None):
        from horovod.tensorflow.functions import broadcast_object
        from mpltool.tfv1 import tf

        with tf.Graph().as_default(), tf.Session() as session:  # the same name on every rank, whatever it sends
            return broadcast_object(params, root_rank=0, session=session, name="mpltool_recipe")


class HcclReplicas(Replicas):
    """Ascend: the rank and size come from the rank-table environment mpltool's launcher (or the cluster's)
    set; npu_bridge does the reductions over HCCL."""

    backend = "hccl"

    def __init__(self, module):
        self.npu = module
        self.rank = int(os.environ["RANK_ID"])
        self.size = int(os.environ["RANK_SIZE"])

    def wrap_optimizer(self, optimizer):
        return self.npu.NPUDistributedOptimizer(optimizer)

    def mean(self, tensor):
        return self.npu.hccl_ops.allreduce(tensor, "sum") / float(self.size)

    def share_params(self, params, project_dir=None):
        """Through `logs/launch-<JOB_ID>.json` in the (shared) project directory: rank 0 writes it, the others
        wait for it. JOB_ID is unique per job (mpltool's launcher and Ascend's cluster launchers set it)."""
        from mpltool.manifest.files import atomic_write_bytes

        path = Path(str(project_dir)) / "logs" / "launch-{}.json".format(os.environ.get("JOB_ID") or "job")
        if self.is_chief:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(params, sort_keys=True).encode("utf-8"))
            return params
        deadline = time.time() + SHARE_TIMEOUT_SECONDS
        while time.time() < deadline:
            check_interrupted()
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
            time.sleep(0.2)
        raise PrerequisiteError("rank {} waited {} s for rank 0's {}".format(self.rank, SHARE_TIMEOUT_SECONDS, path),
                                hint="rank 0 did not start or failed; see its log")

    def broadcast_op(self):
        from mpltool.tfv1 import tf

        variables = tf.global_variables()
        received = self.npu.hccl_ops.broadcast(tensor=variables, root_rank=0)
        return tf.group(*[tf.assign(v, r) for v, r in zip(variables, received)], name="broadcast_from_rank_0")


def import_horovod():
    try:
        import horovod.tensorflow as hvd
    except Exception as exc:  # ImportError, or a Horovod built against another TensorFlow
        raise ToolMissingError("Horovod is not installed in this environment ({}: {})".format(
            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""), hint="install it: " + HOROVOD_INSTALL)
    return hvd


def horovod_available() -> Optional[str]:
    """None when `horovod.tensorflow` imports, else why not (one line)."""
    try:
        import_horovod()
    except ToolMissingError as exc:
        return exc.message
    return None


def launched_by_horovod() -> bool:
    return "HOROVOD_RANK" in os.environ


def launched_by_rank_table() -> bool:
    return bool(os.environ.get("RANK_TABLE_FILE")) and int(os.environ.get("RANK_SIZE") or 1) > 1


def detect(device: str) -> Replicas:
    """The replicas this process is part of (see the module docstring). `device` as the user gave it
    (`auto` too): it is resolved only under a rank table, where HCCL needs an NPU."""
    if launched_by_horovod():
        return HorovodReplicas()
    if launched_by_rank_table():
        from mpltool import npu

        if npu.resolve_device(device) == "npu":
            return HcclReplicas(npu.npu_bridge())
    return Replicas()
