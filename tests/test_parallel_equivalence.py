"""Data parallelism is only right if 2 Horovod replicas train exactly like 1 process at the global batch.

tests/parallel_worker.py trains a BN-free MLP 5 steps on a fixed batch of 8: alone (`--single`), under
horovodrun with mpltool's HorovodReplicas (`--replicas`), and with the optimizer left unwrapped
(`--no-allreduce`, which must differ, so the equivalence test can fail).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpltool.parallel import horovod_available

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WORKER = str(ROOT / "tests" / "parallel_worker.py")
NAMES = ("w1", "b1", "w2", "b2")
TIMEOUT = 120

_MISSING = horovod_available()
if _MISSING:
    pytest.skip("Horovod is needed for the 2-process runs: " + _MISSING, allow_module_level=True)


def _run(argv, what):
    """Run a worker command; on failure or timeout the assertion carries its whole output."""
    try:
        proc = subprocess.run(argv, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("{} timed out after {} s:\n{}".format(what, TIMEOUT, exc.output or ""))
    assert proc.returncode == 0, "{} exited {}:\n{}".format(what, proc.returncode, proc.stdout)


def _horovod(mode, out):
    """Both ranks' saved arrays from a 2-process gloo run on localhost."""
    _run([sys.executable, "-m", "horovod.runner.launch", "-np", "2", "--gloo", "-H", "localhost:2",
          sys.executable, WORKER, "--" + mode, str(out)], "horovodrun --" + mode)
    return [dict(np.load(str(out / "{}-rank{}.npz".format(mode, rank)))) for rank in (0, 1)]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    _run([sys.executable, WORKER, "--single", str(out)], "single-process worker")
    return dict(np.load(str(out / "single-rank0.npz")))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    return _horovod("replicas", tmp_path_factory.mktemp("replicas"))


@pytest.fixture(scope="module")
def unreduced(tmp_path_factory):
    return _horovod("no-allreduce", tmp_path_factory.mktemp("no_allreduce"))


def test_runs_had_the_expected_sizes(single, replicas, unreduced):
    """Guards against a run that silently fell back to one replica (which would make equivalence trivial)."""
    assert int(single["size"]) == 1
    assert [int(r["size"]) for r in replicas + unreduced] == [2, 2, 2, 2]


def test_broadcast_matters_and_single_starts_from_rank_0(single, replicas):
    """The ranks initialise differently, so only the broadcast makes them start equal; the single run starts
    from rank 0's weights exactly, so any later difference comes from training."""
    rank0, rank1 = replicas
    for name in NAMES:
        np.testing.assert_array_equal(rank0["init_" + name], single["init_" + name], err_msg=name)
        assert np.abs(rank1["init_" + name] - rank0["init_" + name]).max() > 1e-3, name
        np.testing.assert_array_equal(rank1["start_" + name], rank0["init_" + name], err_msg=name)


def test_two_replicas_equal_one_process_at_the_global_batch(single, replicas):
    """Averaged gradients over two half-batches of 4 are the gradient of the batch of 8: same weights."""
    rank0, rank1 = replicas
    for name in NAMES:
        assert np.abs(single["final_" + name] - single["init_" + name]).max() > 1e-2, name + " did not train"
        np.testing.assert_allclose(rank0["final_" + name], single["final_" + name], rtol=0, atol=1e-5,
                                   err_msg=name)
        np.testing.assert_allclose(rank1["final_" + name], rank0["final_" + name], rtol=0, atol=1e-5,
                                   err_msg=name)


def test_without_allreduce_the_weights_differ(single, unreduced):
    """Without the all-reduce each rank follows its own half-batch: the equivalence test above can fail."""
    rank0, rank1 = unreduced
    for name in NAMES:  # the same start as the single run, so the difference is the missing reduction
        np.testing.assert_array_equal(rank0["start_" + name], single["init_" + name], err_msg=name)
    worst = max(np.abs(rank0["final_" + n] - single["final_" + n]).max() for n in NAMES)
    assert worst > 1e-3, "rank 0 without the all-reduce still matches the single run (max diff {})".format(worst)
    apart = max(np.abs(rank0["final_" + n] - rank1["final_" + n]).max() for n in NAMES)
    assert apart > 1e-3, "the unreduced ranks ended equal (max diff {})".format(apart)


def test_mean_averages_over_ranks(replicas):
    """replicas.mean of each rank's own rank is (0 + 1) / 2 on every rank."""
    assert [float(r["mean"]) for r in replicas] == [0.5, 0.5]
