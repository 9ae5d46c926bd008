"""Projects trained by an earlier mpltool (tests/fixtures/old-projects, written by make_old_projects.py at the
commit its expected.json names) still verify, evaluate, freeze and resume with today's code, as that
mpltool left them: the same test top-1 and loss as its own eval record, the same frozen graph (nodes,
attributes and constants) as its freeze record, and training continues at the recorded step with the schedules the old code
computed for the same steps (the other training metrics depend on tf.data's parallel draws, which no two
runs repeat)."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import invoke
from mpltool.graphdef import read_graph_def
from mpltool.manifest import MANIFEST_NAME
from mpltool.manifest.files import sha256_file

pytestmark = pytest.mark.slow  # trains: `make test-fast` skips it

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "old-projects"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
PROJECTS = sorted(EXPECTED["projects"])
# The columns of each project's metrics CSV that are functions of the step alone.
SCHEDULES = {"mpl-cifar": ("teacher_lr", "student_lr", "uda_weight"), "mixmatch-cifar": ("learning_rate", "match_weight"),
             "byol-cifar": ("linear_lr",), "supervised-folders": ("learning_rate", "ema_decay")}


def stages(project):
    return yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]


@pytest.fixture(params=PROJECTS)
def old(request, tmp_path):
    project = tmp_path / request.param
    shutil.copytree(str(FIXTURES / request.param), str(project))
    return request.param, project


def test_the_fixtures_cover_every_project_and_its_schedules():
    assert set(PROJECTS) == set(SCHEDULES) and EXPECTED["commit"]


def test_an_old_project_verifies_evaluates_and_freezes_as_it_did(old):
    name, project = old
    before = stages(project)
    status = invoke("--project", project, "--json", "status")
    assert status.exit_code == 0, status.stdout
    assert json.loads(status.stdout)["ok"] is True

    evaluated = invoke("--project", project, "--json", "eval")
    assert evaluated.exit_code == 0, evaluated.stderr
    result, recorded = json.loads(evaluated.stdout), before["eval"]["metrics"]
    assert result["images"] == recorded["images"] and result["top1"] == recorded["top1"]
    # float32 sums over the test set: their last bits follow the CPU build and its threads
    assert result["top5"] == recorded["top5"] and abs(result["loss"] - recorded["loss"]) < 1e-6

    pb = project / before["freeze"]["outputs"]["pb"]["path"]
    old_graph = read_graph_def(pb)
    frozen = invoke("--project", project, "--json", "freeze", "--parity-images", "8")
    assert frozen.exit_code == 0, frozen.stderr
    # The same nodes, attributes and constants (the old code serialised attribute maps in no fixed order,
    # so its bytes differ from run to run; today's are deterministic).
    assert read_graph_def(pb) == old_graph
    again = invoke("--project", project, "--json", "freeze", "--parity-images", "8", "--output", project / "again.pb")
    assert again.exit_code == 0 and sha256_file(project / "again.pb") == sha256_file(pb)
    assert json.loads(frozen.stdout)["parity"]["passed"] is True
    checked = invoke("--project", project, "--json", "convert", "--check-only")
    assert checked.exit_code == 0 and json.loads(checked.stdout)["precheck"]["ok"] is True


def test_an_old_project_resumes_at_its_step_with_its_schedules(old):
    name, project = old
    trained = invoke("--project", project, "train", "--extend-steps", "2")
    assert trained.exit_code == 0, trained.stderr
    assert "resuming from checkpoints/model.ckpt-4 (step 4 of 6)" in trained.stdout
    record = stages(project)["train"]
    assert record["status"] == "done" and record["steps_done"] == 6
    # Recorded under today's names: the shared keys renamed (teacher_lr -> lr, uda_data -> unlabelled_ratio),
    # and only this algorithm's own keys (the old record held every algorithm's).
    old_params = yaml.safe_load((FIXTURES / name / MANIFEST_NAME).read_text())["stages"]["train"]["params"]
    params = record["params"]
    assert "teacher_lr" in old_params and "mixup_beta" in old_params and "byol_lr" in old_params
    assert params["lr"] == old_params["teacher_lr"] and params["unlabelled_ratio"] == old_params["uda_data"]
    assert not {"teacher_lr", "teacher_lr_warmup_steps", "uda_data"} & set(params)
    own = {"mpl-cifar": "student_lr", "mixmatch-cifar": "mixup_beta", "byol-cifar": "byol_lr",
           "supervised-folders": None}[name]
    others = {"student_lr", "mixup_beta", "byol_lr", "masf_margin"} - {own}
    assert (own is None or params[own] == old_params[own]) and not others & set(params)
    assert record["checkpoints"]["latest"]["prefix"] == "checkpoints/model.ckpt-6"
    with open(str(project / "logs" / "metrics.csv"), newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["step"]) > 4]
    expected = EXPECTED["projects"][name]["rows"]
    assert [r["step"] for r in rows] == [r["step"] for r in expected]
    for row, old_row in zip(rows, expected):
        for column in SCHEDULES[name]:
            assert row[column] == old_row[column], (row["step"], column)


def test_old_decoded_image_folders_serve_only_the_size_they_were_decoded_at(tmp_path):
    """mpltool 0.x stored image folders decoded at one size: a model of another input size is refused
    (exit 4, nothing recorded) with the way out; today's imports hold the files and serve any size."""
    project = tmp_path / "supervised-folders"
    shutil.copytree(str(FIXTURES / "supervised-folders"), str(project))
    before = (project / MANIFEST_NAME).read_bytes()
    checkpoints = sorted(p.name for p in (project / "checkpoints").iterdir())
    result = invoke("--project", project, "train", "--force", "--recipe", "supervised-domains-demo",
                    "--set", "target_domain=sketch", "--set", "num_train_steps=1")
    assert result.exit_code == 4, result.stderr
    assert result.stderr.strip() == (
        "error: the images were prepared at 32x32 (by an earlier mpltool, which stored them decoded at one size) "
        "but caffe-alexnet-64-512 takes 64x64 (re-run `mpltool data prepare --images DIR --force` (images are "
        "now decoded at each model's size as they are read))")
    assert (project / MANIFEST_NAME).read_bytes() == before
    assert sorted(p.name for p in (project / "checkpoints").iterdir()) == checkpoints
