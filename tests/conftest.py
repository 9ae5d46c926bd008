"""Fixtures shared by the test files (helpers without pytest state are in helpers.py)."""

import os

# `make test` runs two pytest workers (pytest-xdist) on this machine's 2 cores: each worker and the
# processes it starts get one thread for TensorFlow's and OpenMP's pools instead of one per core, so the
# workers do not oversubscribe the cores. Set before anything imports TensorFlow; a value given is kept.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(_name, "1")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from cifar_fixtures import make_cifar_dir  # noqa: E402
from helpers import graph_runner, invoke  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A project whose data stage holds 5 x 20 training records (the first 20 labelled) and 37 test records;
    copy it (`project_copy`) before writing to it."""
    root = tmp_path_factory.mktemp("prepared")
    src = make_cifar_dir(root / "src", train_records=(20, 20, 20, 20, 20), test_records=37, seed=4)
    project = root / "template"
    result = invoke("--project", project, "data", "prepare", "--cifar", src, "--labelled", "20")
    assert result.exit_code == 0, result.stderr
    return project


@pytest.fixture
def prepared_copy(prepared, tmp_path):
    project = tmp_path / "proj"
    shutil.copytree(str(prepared), str(project))
    return Path(project)


@pytest.fixture(scope="module")
def run(request):
    """One graph and session per test module (seeded by the module's GRAPH_SEED): run(build) builds
    tensors in it and evaluates them."""
    runner, close = graph_runner(getattr(request.module, "GRAPH_SEED", 0))
    yield runner
    close()
