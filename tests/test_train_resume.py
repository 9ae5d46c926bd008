"""Resuming a run safely: the manifest's checkpoint record beats a corrupt index, the data must be the
data the checkpoints were trained on, run lengths are consistent, and a diverging run stops (exit 9)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from cifar_fixtures import make_cifar_dir
from mpltool.errors import NonFiniteError
from mpltool.manifest import LOCK_NAME, MANIFEST_NAME, Project
from helpers import TINY, manifest, mpltool

pytestmark = pytest.mark.slow  # trains or runs mpltool in subprocesses: `make test-fast` skips it


def one_error_line(result):
    err = result.stderr.decode()
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and b"ERROR:tensorflow" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return Path(make_cifar_dir(root / "src", train_records=(20, 20, 20, 20, 20), test_records=37, seed=4))


@pytest.fixture(scope="module")
def trained_template(source, tmp_path_factory):
    project = tmp_path_factory.mktemp("resume-project") / "p"
    assert mpltool(project, "data", "prepare", "--cifar", source, "--labelled", "20").returncode == 0
    # num_labelled is not set: train adopts the prepared split (20) over the recipe's 4,000.
    pairs = [p for p in TINY if p != "num_labelled=20"] + ["num_train_steps=6", "save_every=2", "eval_every=6",
                                                            "log_every=2"]
    settings = [token for pair in pairs for token in ("--set", pair)]
    first = mpltool(project, "train", "--device", "cpu", *settings)
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    assert b"using the labelled split recorded by `data prepare`: num_labelled=20" in first.stdout
    assert manifest(project)["stages"]["train"]["params"]["num_labelled"] == 20
    return project


@pytest.fixture
def trained(trained_template, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(str(trained_template), str(project))
    return project


def test_a_corrupt_checkpoint_index_resumes_from_the_manifest_record(trained):
    (trained / "checkpoints" / "checkpoint").write_bytes(b"\x00garbage{{{")
    result = mpltool(trained, "train", "--extend-steps", "2")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"resuming from checkpoints/model.ckpt-6 (step 6 of 8)" in result.stdout
    assert b"ERROR:tensorflow" not in result.stdout + result.stderr and b"Traceback" not in result.stderr
    record = manifest(trained)["stages"]["train"]
    assert record["status"] == "done" and record["checkpoints"]["latest"]["prefix"] == "checkpoints/model.ckpt-8"


def test_missing_checkpoint_files_suggest_restoring_before_force(trained):
    (trained / "checkpoints" / "checkpoint").unlink()
    for path in (trained / "checkpoints").glob("model.ckpt-6.*"):
        path.unlink()
    before = (trained / MANIFEST_NAME).read_bytes()
    result = mpltool(trained, "train", "--extend-steps", "2")
    assert result.returncode == 4
    line = one_error_line(result)
    assert "cannot resume: checkpoint" in line and "model.ckpt-6.index is missing" in line
    assert line.index("restore the checkpoint files") < line.index("--force") and "deletes" in line
    assert (trained / MANIFEST_NAME).read_bytes() == before and not (trained / LOCK_NAME).exists()


def test_resume_on_relabelled_data_is_refused(trained, source, tmp_path):
    relabelled = tmp_path / "relabelled"
    shutil.copytree(str(source), str(relabelled))
    batch = relabelled / "data_batch_1.bin"
    raw = bytearray(batch.read_bytes())
    raw[0] = (raw[0] + 1) % 10  # same images, the first label changed
    batch.write_bytes(bytes(raw))
    prepared = mpltool(trained, "data", "prepare", "--cifar", relabelled, "--labelled", "20")
    assert prepared.returncode == 0, prepared.stderr.decode()
    before = (trained / MANIFEST_NAME).read_bytes()
    result = mpltool(trained, "train", "--extend-steps", "2")
    assert result.returncode == 4
    line = one_error_line(result)
    assert "the prepared data changed since this run's checkpoints were trained (data_batch_1 differ)" in line
    assert (trained / MANIFEST_NAME).read_bytes() == before


@pytest.mark.parametrize("args, text", [
    (["--extend-steps", "1", "--set", "num_train_steps=5"], "--extend-steps and --set num_train_steps both set"),
    (["--set", "num_train_steps=3"], "num_train_steps=3 is below the 6 steps this project has already trained"),
    (["--extend-steps", "0"], "--extend-steps must be between 1 and"),
])
def test_run_lengths_must_agree(trained, args, text):
    before = (trained / MANIFEST_NAME).read_bytes()
    result = mpltool(trained, "train", *args)
    assert result.returncode == 2
    assert text in one_error_line(result)
    assert (trained / MANIFEST_NAME).read_bytes() == before


def test_a_diverging_run_stops_with_exit_9_and_keeps_the_last_finite_checkpoint(trained_template, tmp_path,
                                                                                  monkeypatch):
    """The losses turn NaN from step 3 on (injected into the real MPL step): the run stops there."""
    from mpltool.tfv1 import tf
    from mpltool.algorithms import mpl
    from mpltool.train.stage import train

    project = tmp_path / "p"
    shutil.copytree(str(trained_template), str(project))
    real = mpl.build_mpl_step

    def nan_from_step_3(*args, **kwargs):
        step = real(*args, **kwargs)
        global_step = tf.train.get_global_step()
        loss = step.metrics["teacher_loss"]
        step.metrics["teacher_loss"] = tf.where(global_step >= 3, tf.constant(np.nan, loss.dtype), loss)
        return step

    monkeypatch.setattr(mpl, "build_mpl_step", nan_from_step_3)
    with pytest.raises(NonFiniteError, match=r"training diverged at step [34]: teacher_loss became nan") as info:
        train(project, overrides=list(TINY) + ["num_train_steps=8", "save_every=2", "eval_every=100",
                                               "log_every=100"],
              device="cpu", force=True, log=lambda line: None, warn=lambda line: None)
    assert info.value.exit_code == 9
    record = Project(project).stage("train")
    assert record["status"] == "failed" and record["error"].startswith("training diverged at step")
    assert record["checkpoints"]["latest"]["prefix"] == "checkpoints/model.ckpt-2"
    assert not list((project / "checkpoints").glob("model.ckpt-4.*"))
