"""`mpltool status`: stages in lifecycle order, outputs re-hashed, JSON and plain output."""

import json
from pathlib import Path

from click.testing import CliRunner

from cifar_fixtures import make_cifar_dir
from mpltool.cli import main
from mpltool.manifest import Project


def invoke(project, *args):
    return CliRunner(mix_stderr=False).invoke(main, ["--project", str(project)] + list(args), catch_exceptions=False)


def test_status_of_an_empty_project_says_how_to_start(tmp_path):
    result = invoke(tmp_path, "--json", "status")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["stages"] == [] and "mpltool data prepare" in payload["notes"][0]


def test_status_rehashes_outputs_and_orders_stages(tmp_path):
    src = Path(make_cifar_dir(tmp_path / "src", train_records=(10,) * 5, test_records=5))
    project = tmp_path / "p"
    assert invoke(project, "data", "prepare", "--cifar", str(src), "--labelled", "10").exit_code == 0
    with Project(project).stage_run("convert", {}) as run:
        run.record["command"] = "atc --model=x.pb --framework=3"
    payload = json.loads(invoke(project, "--json", "status").stdout)
    assert [s["stage"] for s in payload["stages"]] == ["data", "convert"]
    data = payload["stages"][0]
    assert data["status"] == "done" and data["outputs_state"] == "ok"
    assert data["metrics"]["labelled_records"] == 10
    assert "to make the .om on a CANN host: atc --model=x.pb --framework=3" in payload["notes"]
    with open(str(project / "data/cifar/test_batch.bin"), "r+b") as handle:
        handle.write(b"\x09")
    (project / "data/labelled_indices.txt").unlink()
    plain = invoke(project, "status")
    assert plain.exit_code == 0
    assert "test_batch changed" in plain.stdout and "labelled_indices missing" in plain.stdout
    assert "stage=data  status=done" in plain.stdout and "\x1b[" not in plain.stdout
