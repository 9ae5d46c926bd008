"""`mpltool data prepare` / `data demo` through the CLI: records, split, and every bad input."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cifar_fixtures import make_cifar_archive, make_cifar_dir
from mpltool.cli import main
from mpltool.data import cifar
from mpltool.manifest import MANIFEST_NAME


def invoke(project, *args):
    runner = CliRunner(mix_stderr=False)
    return runner.invoke(main, ["--project", str(project)] + list(args), catch_exceptions=False)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def cifar_dir(tmp_path):
    return Path(make_cifar_dir(tmp_path / "src", train_records=(30, 30, 30, 30, 30), test_records=25, seed=3))


def test_prepare_records_hashes_counts_and_first_split(tmp_path, cifar_dir):
    project = tmp_path / "proj"
    result = invoke(project, "--json", "data", "prepare", "--cifar", str(cifar_dir), "--labelled", "40")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["train_records"] == 150 and payload["test_records"] == 25 and payload["labelled_records"] == 40
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["data"]
    assert record["status"] == "done"
    for name in cifar.TRAIN_FILES + (cifar.TEST_FILE,):
        out = record["outputs"][name[:-4]]
        assert out["path"] == "data/cifar/" + name
        assert out["sha256"] == sha256(cifar_dir / name) == sha256(project / out["path"])
        assert out["size"] == (cifar_dir / name).stat().st_size
    indices = (project / "data/labelled_indices.txt").read_text().split()
    assert indices == [str(i) for i in range(40)]
    assert record["outputs"]["labelled_indices"]["sha256"] == sha256(project / "data/labelled_indices.txt")
    _, labels = cifar.read_images([cifar_dir / n for n in cifar.TRAIN_FILES])
    assert record["split"]["label_counts"] == np.bincount(labels[:40], minlength=10).tolist()
    assert record["metrics"] == {"train_records": 150, "test_records": 25, "labelled_records": 40,
                                 "unlabelled_records": 150, "valid_records": 0}


def test_prepare_from_archive_balanced_split(tmp_path):
    archive = make_cifar_archive(tmp_path, train_records=(40, 40, 40, 40, 40), test_records=10, seed=1)
    project = tmp_path / "proj"
    result = invoke(project, "data", "prepare", "--cifar", str(archive), "--labelled", "20", "--split", "balanced",
                    "--seed", "5")
    assert result.exit_code == 0, result.stderr
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["data"]
    assert record["split"]["label_counts"] == [2] * 10
    assert record["split"]["method"] == "balanced" and record["split"]["seed"] == 5


def _bad_size(tmp_path, src):
    with open(str(src / "data_batch_3.bin"), "ab") as handle:
        handle.write(b"\x00" * 7)


def _bad_label(tmp_path, src):
    data = bytearray((src / "data_batch_2.bin").read_bytes())
    data[3073 * 4] = 12
    (src / "data_batch_2.bin").write_bytes(bytes(data))


@pytest.mark.parametrize("case, args, code, message", [
    ("missing path", ["--cifar", "{tmp}/nope"], 3, "no such file or directory"),
    ("size", ["--cifar", "{src}"], 3, "data_batch_3.bin"),
    ("label", ["--cifar", "{src}"], 3, "record 4"),
    ("empty archive", ["--cifar", "{tmp}/empty.tar.gz"], 3, "no CIFAR"),
    ("too many labelled", ["--cifar", "{src}", "--labelled", "1000"], 2, "1000"),
    ("balanced not divisible", ["--cifar", "{src}", "--labelled", "25", "--split", "balanced"], 2, "divisible"),
])
def test_bad_input_one_line_error_and_manifest_unchanged(tmp_path, cifar_dir, case, args, code, message):
    from cifar_fixtures import write_archive

    project = tmp_path / "proj"
    good = invoke(project, "data", "prepare", "--cifar", str(cifar_dir), "--labelled", "10")
    assert good.exit_code == 0
    before = (project / MANIFEST_NAME).read_bytes()
    copies_before = {p.name: p.read_bytes() for p in (project / "data/cifar").iterdir()}
    if case == "size":
        _bad_size(tmp_path, cifar_dir)
    elif case == "label":
        _bad_label(tmp_path, cifar_dir)
    elif case == "empty archive":
        write_archive(tmp_path / "empty.tar.gz", [("readme.txt", b"hello")])
    argv = [a.format(tmp=tmp_path, src=cifar_dir) for a in args]
    result = invoke(project, "data", "prepare", *argv)
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert (project / MANIFEST_NAME).read_bytes() == before
    assert {p.name: p.read_bytes() for p in (project / "data/cifar").iterdir()} == copies_before
    assert not [p for p in project.iterdir() if p.name.startswith(".import-")]


def test_unwritable_project_directory(tmp_path, cifar_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke(blocker / "proj", "data", "prepare", "--cifar", str(cifar_dir))
    assert result.exit_code == 3 and "is not a directory" in result.stderr and "file is a file" in result.stderr


def test_corrupt_manifest_is_exit_3_and_untouched(tmp_path, cifar_dir):
    project = tmp_path / "proj"
    project.mkdir()
    (project / MANIFEST_NAME).write_text("schema: 1\nstages: {data: [\n")
    result = invoke(project, "data", "prepare", "--cifar", str(cifar_dir))
    assert result.exit_code == 3 and "corrupt manifest" in result.stderr and "line" in result.stderr
    assert (project / MANIFEST_NAME).read_text() == "schema: 1\nstages: {data: [\n"
    assert not (project / "data").exists()


def test_demo_then_prepare_in_a_subprocess_plain_output(tmp_path):
    project = tmp_path / "proj"
    cmd = [sys.executable, "-m", "mpltool", "--project", str(project)]
    demo = subprocess.run(cmd + ["data", "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert demo.returncode == 0, demo.stderr
    assert "\x1b[" not in demo.stdout.decode()  # not a terminal: plain lines
    prepared = subprocess.run(cmd + ["--json", "data", "prepare", "--cifar", str(project / "demo-cifar"),
                                     "--recipe", "mpl-demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=120)
    assert prepared.returncode == 0, prepared.stderr
    payload = json.loads(prepared.stdout.decode())
    assert payload["train_records"] == 5000 and payload["test_records"] == 1000
    assert payload["labelled_records"] == 1000  # mpl-demo's num_labelled
    missing = subprocess.run(cmd + ["data", "prepare", "--cifar", str(tmp_path / "absent")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert missing.returncode == 3
    assert missing.stderr.decode().count("\n") == 1 and b"Traceback" not in missing.stderr


def test_the_data_record_names_its_source_and_readers_go_through_it(tmp_path, cifar_dir):
    from mpltool.data.stage import load_prepared, read_split
    from mpltool.manifest import Project

    project = tmp_path / "proj"
    assert invoke(project, "data", "prepare", "--cifar", str(cifar_dir), "--labelled", "40").exit_code == 0
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["data"]
    assert record["source"] == "cifar" and record["params"]["kind"] == "cifar"
    images, labels = read_split(load_prepared(Project(project)), "train")
    expected_images, expected_labels = cifar.read_images([cifar_dir / n for n in cifar.TRAIN_FILES])
    assert np.array_equal(images, expected_images) and np.array_equal(labels, expected_labels)

    manifest = project / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace("source: cifar", "source: tfrecords"))
    result = invoke(project, "eval")
    assert result.exit_code == 3
    # (a test that registers a source of its own may have run first in this process: then it is listed too)
    assert result.stderr.strip().startswith("error: the data record names an unknown source 'tfrecords' (this "
                                            "mpltool reads cifar, folders")
