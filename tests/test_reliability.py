"""Nothing a user types can lose data: the write guard, the commit, the lock, bad paths and values.

Each test states the exit code, the one-line error, no traceback, and that the manifest and every file
it records are byte-identical afterwards. Faults that need a real process (kill -9, SIGTERM, a full
disk) are in test_faults.py.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from checkpoint_fixtures import make_trained_project
from cifar_fixtures import make_cifar_dir
from helpers import invoke
from mpltool.errors import NonFiniteError, PrerequisiteError
from mpltool.eval.metrics import metrics_from_logits
from mpltool.manifest import LOCK_NAME, MANIFEST_NAME, Project, STAGING_DIR
from mpltool.manifest.files import recorded_files, sha256_file
from mpltool.train.trainer import MetricsCsv




def snapshot(project_dir):
    """The manifest's bytes and every file any stage recorded, by path."""
    project = Project(project_dir)
    files = {str(project.path(MANIFEST_NAME)): project.manifest_path.read_bytes()}
    for record in project.load()["stages"].values():
        for entry in recorded_files(record):
            path = project.path(entry["path"])
            if path.is_file():
                files[str(path)] = path.read_bytes()
    return files


def assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def small_source(tmp_path):
    return make_cifar_dir(tmp_path / "src", train_records=(10, 10, 10, 10, 10), test_records=5, seed=1)


def prepared_project(tmp_path):
    """A project whose data stage holds 50 training records (10 labelled) and 5 test records."""
    project = tmp_path / "p"
    result = invoke("--project", project, "data", "prepare", "--cifar", small_source(tmp_path), "--labelled", "10")
    assert result.exit_code == 0, result.stderr
    return project


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory):
    return make_trained_project(tmp_path_factory.mktemp("reliability") / "trained")["dir"]


@pytest.fixture
def trained(trained_template, tmp_path):
    target = tmp_path / "project"
    shutil.copytree(str(trained_template), str(target))
    return target


# -- 1. the write guard --------------------------------------------------------------------------------

@pytest.mark.parametrize("victim,fragment", [
    (MANIFEST_NAME, "it is the project manifest"),
    (LOCK_NAME, "it is the project manifest's lock"),
    ("data/cifar/test_batch.bin", "the 'data' stage recorded it as its output"),
    ("checkpoints/model.ckpt-5.index", "the 'train' stage recorded it as its output"),
    ("checkpoints/best-ema/model.ckpt-3.data-00000-of-00001", "the 'train' stage recorded it as its output"),
])
def test_freeze_never_writes_over_project_files(trained, victim, fragment):
    before = snapshot(trained)
    result = invoke("--project", trained, "freeze", "--parity-images", "4", "--output", trained / victim)
    assert_one_line_error(result, 2, "refusing to", fragment)
    assert snapshot(trained) == before
    assert not (trained / LOCK_NAME).exists()
    forced = invoke("--project", trained, "freeze", "--parity-images", "4", "--output", trained / victim, "--force")
    assert forced.exit_code == 2 and snapshot(trained) == before  # --force never covers project files


def test_freeze_overwrites_a_foreign_file_only_with_force(trained, tmp_path):
    foreign = tmp_path / "notes.pb"
    foreign.write_bytes(b"my own file")
    result = invoke("--project", trained, "freeze", "--parity-images", "4", "--output", foreign)
    assert_one_line_error(result, 2, "refusing to overwrite", "no stage of this project wrote it", "--force")
    assert foreign.read_bytes() == b"my own file"
    forced = invoke("--project", trained, "--json", "freeze", "--parity-images", "4", "--output", foreign, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert json.loads(forced.stdout)["sha256"] == sha256_file(foreign)
    again = invoke("--project", trained, "freeze", "--parity-images", "4", "--output", foreign)
    assert again.exit_code == 0, again.stderr  # now freeze's own recorded output: re-freezing it is fine


def test_data_demo_refuses_to_overwrite_recorded_data(tmp_path):
    project = tmp_path / "proj"
    demo_dir = tmp_path / "demo"
    assert invoke("--project", project, "data", "demo", "--out", demo_dir).exit_code == 0
    prepared = invoke("--project", project, "data", "prepare", "--cifar", demo_dir, "--recipe", "mpl-demo")
    assert prepared.exit_code == 0, prepared.stderr
    before = snapshot(project)
    result = invoke("--project", project, "data", "demo", "--out", project / "data" / "cifar")
    # The demo files equal what is there except where they differ: nothing recorded may be replaced.
    assert snapshot(project) == before
    if result.exit_code != 0:
        assert_one_line_error(result, 2, "refusing to")
    again = invoke("--project", project, "data", "demo", "--out", demo_dir)  # identical bytes: a no-op
    assert again.exit_code == 0, again.stderr


def test_data_demo_next_hint_names_the_demo_recipe(tmp_path):
    result = invoke("--project", tmp_path / "p", "--json", "data", "demo", "--out", tmp_path / "d")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["next"].endswith("--recipe mpl-demo")


# -- 2. the commit -------------------------------------------------------------------------------------

def test_an_interrupted_commit_is_rolled_forward_by_the_next_lock(tmp_path):
    project = Project(tmp_path / "p")
    project.ensure_dir()
    final = project.path("frozen/model.pb")
    final.parent.mkdir()
    final.write_bytes(b"old")
    staged = project.path(STAGING_DIR + "/pb-model.pb")
    staged.parent.mkdir()
    staged.write_bytes(b"new")
    record = {"status": "done", "outputs": {"pb": {"path": "frozen/model.pb", "size": 3,
                                                   "sha256": sha256_file(staged)}}}
    project.write({"schema": 1, "created": None, "stages": {"freeze": record},
                   "pending": [{"from": STAGING_DIR + "/pb-model.pb", "to": "frozen/model.pb",
                                "sha256": sha256_file(staged)}]})
    with project.lock("check"):
        pass
    assert final.read_bytes() == b"new"
    assert "pending" not in project.load()
    assert not staged.parent.exists()


def test_staging_leftovers_and_legacy_import_folders_are_swept(tmp_path):
    src = small_source(tmp_path)
    project = tmp_path / "p"
    (project / STAGING_DIR).mkdir(parents=True)
    (project / STAGING_DIR / "pb-x.pb").write_bytes(b"half")
    legacy = project / ".import-abc123"
    legacy.mkdir()
    (legacy / "data_batch_1.bin").write_bytes(b"x" * 3073)
    result = invoke("--project", project, "data", "prepare", "--cifar", src, "--labelled", "10")
    assert result.exit_code == 0, result.stderr
    assert not legacy.exists() and not (project / STAGING_DIR).exists()


def test_a_failed_prepare_keeps_the_previous_import(tmp_path):
    good = make_cifar_dir(tmp_path / "good", train_records=(10, 10, 10, 10, 10), test_records=5, seed=1)
    project = tmp_path / "p"
    assert invoke("--project", project, "data", "prepare", "--cifar", good, "--labelled", "10").exit_code == 0
    before = snapshot(project)
    bad = make_cifar_dir(tmp_path / "bad", train_records=(12, 12, 12, 12, 12), test_records=5, seed=2)
    (Path(bad) / "test_batch.bin").write_bytes(b"\x0b" * 3073)  # label byte 11
    result = invoke("--project", project, "data", "prepare", "--cifar", bad, "--labelled", "10")
    assert_one_line_error(result, 3, "record 0 has label byte 11")
    assert snapshot(project) == before
    assert not (project / STAGING_DIR).exists()


# -- 5. the lock ---------------------------------------------------------------------------------------

def test_a_fresh_empty_lock_is_respected_and_an_old_one_taken_over(tmp_path):
    project = Project(tmp_path / "p")
    project.ensure_dir()
    project.lock_path.write_bytes(b"")
    with pytest.raises(PrerequisiteError, match="is locked by stage '\\?'"):
        with project.lock("x"):
            pass
    old = project.lock_path.stat().st_mtime - 60
    os.utime(str(project.lock_path), (old, old))
    with project.lock("x"):
        holder = json.loads(project.lock_path.read_text())
        assert holder["stage"] == "x" and holder["pid"] == os.getpid()
    assert not project.lock_path.exists()


def test_the_lock_is_never_seen_empty(tmp_path):
    project = Project(tmp_path / "p")
    with project.lock("x"):
        assert json.loads(project.lock_path.read_text())["stage"] == "x"
        assert not [p for p in project.dir.iterdir() if p.name.startswith("." + LOCK_NAME)]  # temp link source gone


# -- 7. resuming on other data --------------------------------------------------------------------------

def test_resume_refuses_data_that_changed_since_training(trained):
    project = Project(trained)
    data = project.load()
    data["stages"]["train"]["inputs"] = {"test_batch": dict(data["stages"]["data"]["outputs"]["test_batch"],
                                                            sha256="0" * 64)}
    project.write(data)
    from mpltool.train.stage import _check_same_data

    with pytest.raises(PrerequisiteError, match=r"the prepared data changed .*\(test_batch differ\)") as info:
        _check_same_data(data["stages"]["train"], data["stages"]["data"])
    assert "--force" in str(info.value) and "deletes" in str(info.value)


# -- 8. non-finite numbers -------------------------------------------------------------------------------

def test_nan_logits_are_refused_not_scored():
    logits = np.zeros((4, 10), np.float32)
    logits[2, 3] = np.nan
    with pytest.raises(NonFiniteError, match="NaN or inf logits for 1 of 4 images") as info:
        metrics_from_logits(logits, np.array([0, 1, 2, 3]))
    assert info.value.exit_code == 9


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_learning_rate_is_a_usage_error(value):
    result = invoke("recipes", "show", "mpl-demo", "--set", "lr=" + value)
    assert_one_line_error(result, 2, "lr=")


# -- 11. user errors that used to be internal errors -----------------------------------------------------

@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_out_of_range_seed_is_a_usage_error(tmp_path, seed):
    src = small_source(tmp_path)
    result = invoke("--project", tmp_path / "p", "data", "prepare", "--cifar", src, "--labelled", "10",
                    "--split", "balanced", "--seed", seed)
    assert_one_line_error(result, 2, "--seed must be a whole number from 0 to 4294967295")
    assert not (tmp_path / "p" / MANIFEST_NAME).exists()


def test_project_under_a_regular_file_is_invalid_input(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(invoke("--project", afile / "sub", "status"), 3)
    assert_one_line_error(invoke("--project", afile, "status"), 2, "is a file")
    assert afile.read_text() == "x"


def test_demo_into_a_path_under_a_file_is_invalid_input(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(invoke("--project", tmp_path / "p", "data", "demo", "--out", afile / "sub"), 3)


@pytest.mark.parametrize("command", [["status"], ["data", "demo"], ["eval"]])
def test_very_long_path_is_invalid_input(tmp_path, command):
    long_dir = tmp_path / "/".join(["d" * 200] * 21)  # 4,200+ characters: beyond PATH_MAX
    result = invoke("--project", long_dir, *command)
    assert_one_line_error(result, 3, "File name too long")
    assert len(result.stderr) < 400  # the path is shortened in the message


def test_non_utf8_manifest_and_recipe_are_invalid_input(trained, tmp_path):
    manifest = trained / MANIFEST_NAME
    original = manifest.read_bytes()
    manifest.write_bytes(original + b"\n# \xff\xfe\n")
    assert_one_line_error(invoke("--project", trained, "eval"), 3, "not UTF-8")
    manifest.write_bytes(original)
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"model: wrn-10-1\n# \xff\n")
    assert_one_line_error(invoke("recipes", "show", recipe), 3, str(recipe))


def test_a_stage_that_is_a_string_is_a_corrupt_manifest(trained):
    manifest = trained / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace("stages:\n", "stages:\n  bogus: just a string\n", 1))
    before = manifest.read_bytes()
    assert_one_line_error(invoke("--project", trained, "status"), 3, "stage 'bogus' is not a record")
    assert manifest.read_bytes() == before


def test_checkpoints_being_a_file_is_invalid_input(tmp_path):
    project = prepared_project(tmp_path)
    (project / "checkpoints").write_text("not a folder")
    result = invoke("--project", project, "train", "--recipe", "mpl-demo", "--device", "cpu",
                    "--set", "num_train_steps=2", "--set", "student_lr_wait_steps=0",
                    "--set", "student_lr_warmup_steps=0")
    assert_one_line_error(result, 3, "checkpoints", "a file is in the way of a folder")
    assert (project / "checkpoints").read_text() == "not a folder"
    assert not (project / LOCK_NAME).exists()


# -- 9. values that passed validation and crashed later ---------------------------------------------------

@pytest.mark.parametrize("pair,code,fragment", [
    ("num_classes=5", 2, "num_classes=5 but the prepared data has labels up to 9"),
    ("num_labelled=20", 4, "num_labelled=20 (prepared: 10)"),  # set explicitly: not adopted, refused
])
def test_train_checks_the_recipe_against_the_data_before_any_graph(tmp_path, pair, code, fragment):
    project = prepared_project(tmp_path)
    before = snapshot(project)
    result = invoke("--project", project, "train", "--recipe", "mpl-demo", "--set", pair)
    assert_one_line_error(result, code, fragment)
    assert snapshot(project) == before


# -- frictions -----------------------------------------------------------------------------------------

def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        src = small_source(tmp_path)
        project = tmp_path / "p"
        assert invoke("--project", project, "data", "prepare", "--cifar", src, "--labelled", "10").exit_code == 0
    finally:
        os.umask(old)
    for path in (project / MANIFEST_NAME, project / "data" / "labelled_indices.txt",
                 project / "data" / "cifar" / "test_batch.bin"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_metrics_csv_keeps_full_time_and_drops_rows_a_kill_lost(tmp_path):
    path = tmp_path / "metrics.csv"
    columns = ("step", "time", "teacher_loss")
    csv_log = MetricsCsv(path, columns)
    for step in (2, 4, 6):
        csv_log.write({"step": step, "time": 1764470000.123456, "teacher_loss": 1.0 / 3})
    csv_log.close()
    rows = path.read_text().splitlines()
    assert rows[1].split(",")[:2] == ["2", "1764470000.123456"]
    assert "0.3333333333333333" in rows[1]
    MetricsCsv(path, columns, resume_step=4).close()  # resumed from the step-4 checkpoint: step 6 is re-trained
    steps = [line.split(",")[0] for line in path.read_text().splitlines()[1:]]
    assert steps == ["2", "4"]
