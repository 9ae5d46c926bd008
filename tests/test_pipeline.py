"""The lifecycle as a CI pipeline: one process per stage, sharing nothing but the project directory.

Between jobs the project directory is copied to a new place (as a CI artifact would be), each job runs
from another working directory, and the hash chain is checked: each stage's input hash equals the
previous stage's output hash. A file tampered with between jobs is refused with exit 4.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cifar_fixtures import make_cifar_dir
from mpltool.manifest import MANIFEST_NAME

pytestmark = pytest.mark.slow  # trains or runs mpltool in subprocesses: `make test-fast` skips it

FAKES = Path(__file__).resolve().parent / "fakes"
TINY = ["model=wrn-10-1", "batch_size=4", "uda_data=2", "eval_batch_size=16", "num_labelled=20",
        "teacher_lr_warmup_steps=2", "student_lr_wait_steps=1", "student_lr_warmup_steps=2", "uda_steps=4",
        "num_train_steps=4", "save_every=2", "eval_every=2", "log_every=2", "shuffle_buffer=64"]
TRAIN_ARGS = ["train", "--device", "cpu"] + [arg for pair in TINY for arg in ("--set", pair)]


def job(project, workdir, *args):
    """One CI job: its own cwd, a clean environment, the project directory as its only input."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "mpltool", "--project", str(project)] + [str(a) for a in args],
                          cwd=str(workdir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)


def hand_over(project, root, name):
    """The artifact hand-over between two jobs: a copy of the project directory, nothing else."""
    target = root / name
    shutil.copytree(str(project), str(target))
    return target


def stages(project):
    return yaml.safe_load((Path(project) / MANIFEST_NAME).read_text())["stages"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    src = make_cifar_dir(root / "dataset", train_records=(20, 20, 20, 20, 20), test_records=30, seed=6)
    project = root / "job-data" / "p"
    out = job(project, root / "cwd-data", "data", "prepare", "--cifar", src, "--labelled", "20")
    assert out.returncode == 0, out.stderr
    projects = {"data": project}
    steps = [("train", TRAIN_ARGS), ("eval", ["eval"]), ("freeze", ["freeze", "ckpt"]),
             ("convert", ["convert", "--atc", FAKES / "atc", "--soc", "Ascend910A"])]
    previous = project
    for name, args in steps:
        current = hand_over(previous, root, "job-" + name)
        out = job(current, root / ("cwd-" + name), *args)
        assert out.returncode == 0, (name, out.stderr.decode()[-3000:])
        projects[name] = current
        previous = current
    return root, projects


def test_each_stage_reads_exactly_what_the_previous_one_wrote(chain):
    _, projects = chain
    final = stages(projects["convert"])
    assert [final[s]["status"] for s in ("data", "train", "eval", "freeze", "convert")] == ["done"] * 5
    data_out = final["data"]["outputs"]
    for key, record in final["train"]["inputs"].items():
        assert record == data_out[key]
    assert final["eval"]["inputs"]["test_batch"] == data_out["test_batch"]
    best = final["train"]["checkpoints"]["best"]["ema"]
    assert final["eval"]["inputs"]["checkpoint"]["files"] == best["files"]
    assert final["freeze"]["inputs"]["checkpoint"]["files"] == best["files"]
    assert final["convert"]["inputs"]["pb"] == final["freeze"]["outputs"]["pb"]
    om = final["convert"]["outputs"]["om"]
    assert (projects["convert"] / om["path"]).is_file() and om["path"].endswith(".om")
    assert "--framework=3" in final["convert"]["command"]
    assert '--input_shape="input:1,32,32,3"' in final["convert"]["command"]
    assert final["convert"]["soc_version"] == "Ascend910A" and final["convert"]["soc_rule"] == "--soc"


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("stage, args, victim", [
    ("train", TRAIN_ARGS, lambda p: p / "data/cifar/data_batch_2.bin"),
    ("eval", ["eval"], lambda p: p / "data/cifar/test_batch.bin"),
    ("freeze", ["freeze", "ckpt"], lambda p: sorted((p / "checkpoints/best-ema").glob("*.data-*"))[0]),
    ("convert", ["convert", "--atc", FAKES / "atc", "--soc", "Ascend910A"],
     lambda p: sorted((p / "frozen").glob("*.pb"))[0]),
])
def test_a_file_tampered_between_jobs_is_refused(chain, stage, args, victim):
    root, projects = chain
    order = ["data", "train", "eval", "freeze", "convert"]
    before = projects[order[order.index(stage) - 1]]
    project = hand_over(before, root, "tampered-" + stage)
    _tamper(victim(project))
    manifest_before = (project / MANIFEST_NAME).read_bytes()
    out = job(project, root / ("cwd-tampered-" + stage), *args)
    assert out.returncode == 4, (stage, out.stderr)
    assert b"changed since the manifest recorded it" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert (project / MANIFEST_NAME).read_bytes() == manifest_before
