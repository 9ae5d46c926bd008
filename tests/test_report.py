"""`mpltool report`: the HTML page and its PNGs, on real tiny projects at every state of the lifecycle.

One supervised project is trained (4 steps of WRN-10-1), evaluated and frozen once per module; each test
works on a copy of it (or of the `prepared` data-only project)."""

import csv
import html.parser
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from cifar_fixtures import CLASS_NAMES
from helpers import TINY, invoke, sets
from mpltool.algorithms import algorithm_names, get_algorithm
from mpltool.manifest import MANIFEST_NAME
from mpltool.report import curves, figures, predictions
from mpltool.status import STAGE_ORDER
from mpltool.train.trainer import csv_columns

RUN = [p for p in TINY if p.split("=")[0] not in ("num_labelled", "student_lr_wait_steps", "student_lr_warmup_steps")
       ] + ["num_train_steps=4", "save_every=2", "eval_every=2", "log_every=1"]
NO_MATPLOTLIB = "matplotlib is not installed: `pip install 'mpltool[report]'` (make venv installs it)"


def needs_matplotlib():
    pytest.importorskip("matplotlib", reason=NO_MATPLOTLIB)


@pytest.fixture(scope="module")
def lifecycle(prepared, tmp_path_factory):
    """data -> train (supervised, 4 steps) -> eval -> freeze; copy it (`trained`) before writing to it."""
    project = tmp_path_factory.mktemp("report") / "trained"
    shutil.copytree(str(prepared), str(project))
    trained = invoke("--project", project, "train", "--recipe", "supervised-demo", "--device", "cpu",
                    *sets(base=RUN, algorithm="supervised"))
    assert trained.exit_code == 0, trained.stderr
    assert invoke("--project", project, "eval").exit_code == 0
    frozen = invoke("--project", project, "freeze", "--parity-images", "8")
    assert frozen.exit_code == 0, frozen.stderr
    return project


@pytest.fixture
def trained(lifecycle, tmp_path):
    project = tmp_path / "proj"
    shutil.copytree(str(lifecycle), str(project))
    return project


def manifest(project):
    return yaml.safe_load((Path(project) / MANIFEST_NAME).read_text())


def report(project, *args):
    """`mpltool --json report`: (the result object, the click result)."""
    result = invoke("--project", project, "--json", "report", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        elif tag == "a" and not attrs.get("href", "#").startswith("#"):
            self.links.append(attrs["href"])


def page_references(report_dir):
    parser = _Images()
    parser.feed((Path(report_dir) / "index.html").read_text(encoding="utf-8"))
    return parser


def check_pngs(result):
    """Every PNG decodes at the size its figure record (and its <img> tag) says; the page shows exactly
    the PNG files the folder holds, and links nothing that is not there."""
    from matplotlib.image import imread

    folder = Path(result["report_dir"])
    written = sorted(p.name for p in folder.iterdir())
    assert written == sorted(result["files"]) and "index.html" in written
    pngs = sorted(p for p in written if p.endswith(".png"))
    references = page_references(folder)
    assert sorted(references.sources) == pngs == sorted(f["file"] for f in result["figures"])
    assert set(references.links) <= set(written)
    page = (folder / "index.html").read_text(encoding="utf-8")
    for figure in result["figures"]:
        pixels = imread(str(folder / figure["file"]))
        assert pixels.shape[:2] == (figure["height"], figure["width"]), figure["file"]
        assert '<img src="{}" width="{}" height="{}"'.format(figure["file"], figure["width"], figure["height"]) in page
    for marker in ("http://", "https://", "<script"):
        assert marker not in page  # self-contained: nothing fetched, nothing run
    return page


# -- a whole lifecycle ------------------------------------------------------------------------------------

def test_report_of_a_trained_evaluated_frozen_project(trained):
    needs_matplotlib()
    result, plain = report(trained)
    assert plain.stderr.strip().splitlines()[-1] == str(trained / "report" / "index.html")
    page = check_pngs(result)
    sizes = {f["file"]: (f["width"], f["height"]) for f in result["figures"]}
    assert sizes["curves-accuracy.png"] == (figures.WIDTH, figures.CURVE_HEIGHT)
    assert sizes["confusion.png"] == (figures.confusion_size(10),) * 2
    assert sizes["samples.png"] == figures.samples_size(24)

    # the predictions are eval's: same network, same images, same top-1
    evaluated = manifest(trained)["stages"]["eval"]["metrics"]
    shown = result["predictions"]
    matrix = np.array(shown["confusion"])
    assert matrix.shape == (10, 10) and matrix.sum() == evaluated["images"] == 37
    assert np.trace(matrix) == evaluated["correct_top1"]
    assert np.trace(matrix) / matrix.sum() == shown["top1"] == evaluated["top1"]
    assert shown["matches_eval"] is True and shown["origin"] == "eval" and shown["cached"] is False
    assert shown["classes"] == list(CLASS_NAMES)  # the imported batches.meta.txt
    assert [c["images"] for c in shown["per_class"]] == matrix.sum(axis=1).tolist()
    for name in CLASS_NAMES:
        assert "<td>{}</td>".format(name) in page

    # the worst mistakes first: every wrong one before every right one, confidence falling among them
    samples = shown["samples"]
    wrong = [s for s in samples if not s["correct"]]
    assert samples[:len(wrong)] == wrong and len(samples) == 24
    assert [s["confidence"] for s in wrong] == sorted((s["confidence"] for s in wrong), reverse=True)
    assert all(s["prediction"] != s["label"] for s in wrong)

    # every stage with its time; convert never ran
    stages = {s["stage"]: s for s in result["stages"]}
    assert [stages[n]["status"] for n in ("data", "train", "eval", "freeze")] == ["done"] * 4
    assert stages["convert"]["status"] == "not run" and stages["convert-check"]["status"] == "not run"
    assert all(stages[n]["seconds"] >= 0 for n in ("data", "train", "eval", "freeze"))
    assert "not run: no 'convert' stage yet" in page
    # freeze: parity and the frozen graph's ops
    assert "Parity: frozen graph vs checkpoint" in page and "passed" in page
    assert result["freeze_ops"]["Conv2D"] >= 1 and "Placeholder" in result["freeze_ops"]
    # curves: the supervised algorithm's columns, by family
    groups = result["curves"]["groups"]
    assert groups["losses"] == ["loss", "labelled_ce"] and groups["learning-rates"] == ["learning_rate"]
    assert groups["accuracy"] == ["model_top1", "model_top5", "ema_top1", "ema_top5"]
    assert result["curves"]["empty_columns"] == ["model_valid_top1", "ema_valid_top1"]  # no validation split
    assert not list(trained.glob(".report-*"))  # no scratch folder left


def test_rerun_reads_the_cache_and_a_changed_checkpoint_runs_the_network_again(trained, monkeypatch):
    needs_matplotlib()
    from mpltool.models import inference

    first, _ = report(trained)
    assert first["predictions"]["cached"] is False and (trained / "report" / "predictions.npz").is_file()

    class Refused:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the report ran the network although nothing changed")

    real = inference.CheckpointModel
    monkeypatch.setattr(inference, "CheckpointModel", Refused)
    again, plain = report(trained)
    assert again["predictions"]["cached"] is True
    assert again["predictions"]["confusion"] == first["predictions"]["confusion"]
    assert "read from the previous report" in plain.stderr

    # the checkpoint eval scored, re-saved with one class's classifier bias raised: another file, another
    # answer (the class whose share of the 37 test images is not eval's top-1: classes 0-6 hold 4, 7-9 hold 3)
    record = manifest(trained)["stages"]["eval"]
    prefix = str(trained / record["source"]["prefix"])
    favoured = 9 if abs(record["metrics"]["top1"] - 4 / 37) < 1e-9 else 0
    rewrite_with_bias(prefix, "ema/{}/{}".format("wrn-10-1", _bias_name()), class_index=favoured, delta=1e4)
    built = []

    class Counted(real):
        def __init__(self, *args, **kwargs):
            built.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(inference, "CheckpointModel", Counted)
    changed, plain = report(trained)
    assert built == [prefix]
    shown = changed["predictions"]
    assert shown["cached"] is False and shown["model_changed"] is True and shown["matches_eval"] is False
    assert np.array(shown["confusion"])[:, favoured].sum() == 37  # everything is that class now
    assert any("changed since the eval stage recorded them" in w for w in changed["warnings"])
    assert "warning: the model files changed" in plain.stderr
    check_pngs(changed)


def _bias_name():
    from mpltool.models import classifier_bias

    return classifier_bias("wrn-10-1")


def rewrite_with_bias(prefix, variable, class_index, delta):
    """Re-save checkpoint `prefix` in place with `variable`[class_index] += delta (every other value kept)."""
    from mpltool.tfv1 import tf

    reader = tf.train.NewCheckpointReader(prefix)
    with tf.Graph().as_default():
        values = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
        values[variable] = values[variable].copy()
        values[variable][class_index] += delta
        holders = {name: tf.Variable(value, name=name.replace(":", "_")) for name, value in values.items()}
        saver = tf.train.Saver(var_list=holders)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False, write_state=False)


def test_a_project_evaluated_through_its_frozen_graph_reports_the_graphs_predictions(trained):
    needs_matplotlib()
    pb = manifest(trained)["stages"]["freeze"]["outputs"]["pb"]["path"]
    assert invoke("--project", trained, "eval", "--model", trained / pb).exit_code == 0
    result, _ = report(trained, "--samples", "5")
    shown = result["predictions"]
    assert shown["kind"] == "pb" and shown["model_files"] == [pb]
    assert shown["top1"] == manifest(trained)["stages"]["eval"]["metrics"]["top1"] and shown["matches_eval"]
    assert [f for f in result["figures"] if f["file"] == "samples.png"][0]["width"] == 5 * figures.SAMPLE_CELL[0]
    check_pngs(result)


# -- any project state ----------------------------------------------------------------------------------

def test_a_project_with_only_its_data_stage_gets_a_report(prepared_copy):
    needs_matplotlib()
    result, _ = report(prepared_copy)
    page = check_pngs(result)
    statuses = {s["stage"]: s["status"] for s in result["stages"]}
    assert statuses == dict({stage: "not run" for stage in STAGE_ORDER}, data="done")
    assert {"train", "eval", "freeze", "convert"} < set(statuses)
    assert result["figures"] == [] and result["files"] == ["index.html"]
    assert result["predictions"] == {"available": False,
                                     "reason": "no trained network yet: run `mpltool train`, then `mpltool eval`"}
    for stage in ("train", "eval", "freeze", "convert"):
        assert "not run: no '{}' stage yet".format(stage) in page
    assert "logs/metrics.csv is missing" in page


def test_an_empty_folder_is_exit_4_with_a_hint(tmp_path):
    result = invoke("--project", tmp_path, "report")
    assert result.exit_code == 4
    assert result.stderr.startswith("error: no mpltool project in {} (no mpltool.yaml)".format(tmp_path))
    assert "data prepare --cifar PATH" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_the_report_is_exit_5_naming_the_extra(prepared_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    result = invoke("--project", prepared_copy, "--json", "report")
    assert result.exit_code == 5
    error = json.loads(result.stdout)
    assert error["exit_code"] == 5 and "matplotlib" in error["error"]
    assert "install the 'report' extra: pip install 'mpltool[report]'" in error["hint"]
    assert not (prepared_copy / "report").exists()


def test_a_report_folder_mpltool_did_not_write_needs_force(prepared_copy):
    needs_matplotlib()
    (prepared_copy / "report").mkdir()
    (prepared_copy / "report" / "notes.txt").write_text("mine")
    refused = invoke("--project", prepared_copy, "report")
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert (prepared_copy / "report" / "notes.txt").read_text() == "mine"
    report(prepared_copy, "--force")
    assert not (prepared_copy / "report" / "notes.txt").exists()
    report(prepared_copy)  # its own report is replaced without --force


def test_a_failing_report_leaves_the_previous_one_whole(prepared_copy, monkeypatch):
    needs_matplotlib()
    from mpltool.report import writer

    report(prepared_copy)
    before = {p.name: p.read_bytes() for p in (prepared_copy / "report").iterdir()}

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(writer._Builder, "page", broken)
    assert invoke("--project", prepared_copy, "report").exit_code == 1
    assert {p.name: p.read_bytes() for p in (prepared_copy / "report").iterdir()} == before
    assert not list(prepared_copy.glob(".report-*"))


# -- curves: the CSV's columns, whatever the algorithm ---------------------------------------------------------

@pytest.mark.parametrize("algorithm", list(algorithm_names()))
def test_every_metric_column_of_every_algorithm_is_in_exactly_one_figure(algorithm):
    columns = list(csv_columns(get_algorithm(algorithm)))
    groups = curves.group_columns(columns)
    placed = [c for group in groups.values() for c in group]
    assert sorted(placed) == sorted(c for c in columns if c not in ("step", "time"))
    described = get_algorithm(algorithm).describe()
    for target in described["eval_targets"]:
        assert {"{}_top1".format(target), "{}_top5".format(target), "{}_valid_top1".format(target)} <= set(
            groups["accuracy"])
        assert "{}_loss_eval".format(target) in groups["eval-loss"]
    for column in columns:
        if column.endswith("_lr") or column == "learning_rate":
            assert column in groups["learning-rates"]
        elif column.endswith("_ce") or column.endswith("_loss") or column == "loss":
            assert column in groups["losses"]


def test_mpl_families():
    groups = curves.group_columns(csv_columns(get_algorithm("mpl")))
    assert groups["learning-rates"] == ["teacher_lr", "student_lr"]
    assert groups["losses"] == ["teacher_loss", "labelled_ce", "uda_loss", "student_loss", "student_ce_old",
                                "student_ce_new"]
    assert groups["other"] == ["steps_per_second", "uda_mask_rate", "uda_weight", "h", "h_baseline"]


@pytest.mark.parametrize("algorithm", ["mpl", "masf", "byol"])
def test_the_figures_follow_the_csv_columns_including_one_only_this_project_has(prepared_copy, algorithm):
    """A metrics CSV with the algorithm's columns plus a made-up one: every column with values is drawn."""
    needs_matplotlib()
    columns = list(csv_columns(get_algorithm(algorithm))) + ["made_up_metric", "made_up_lr"]
    (prepared_copy / "logs").mkdir()
    with open(str(prepared_copy / "logs" / "metrics.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for step in range(1, 9):
            writer.writerow([step, time.time()] + [
                "" if c.endswith("valid_top1") or (("top" in c or "loss_eval" in c) and step % 4) else
                "{:.4f}".format(np.sin(step + k)) for k, c in enumerate(columns[2:])])
    result, _ = report(prepared_copy)
    check_pngs(result)
    drawn = {c: f["file"] for f in result["figures"] for c in f["columns"]}
    assert drawn["made_up_metric"] == "curves-other.png" and drawn["made_up_lr"] == "curves-learning-rates.png"
    expected = [c for c in columns[2:] if not c.endswith("valid_top1")]
    assert sorted(drawn) == sorted(expected)
    panels = [f for f in result["figures"] if f["file"] == "curves-other.png"][0]
    rows = -(-len(panels["columns"]) // figures.PANEL_COLUMNS)
    assert (panels["width"], panels["height"]) == (figures.WIDTH, figures.PANEL_HEIGHT * rows)


# -- pieces --------------------------------------------------------------------------------------------

def test_class_names_from_cifar_meta_or_numbers(tmp_path):
    from mpltool.data.stage import class_names
    from mpltool.manifest import Project

    project = Project(tmp_path / "p")
    (tmp_path / "meta.txt").write_text("a\n\nb\n")
    with project.stage_run("data", {}) as run:
        run.record["source"] = "cifar"
        run.outputs["batches_meta"] = {"path": str(tmp_path / "meta.txt"), "size": 5, "sha256": "-"}
    assert class_names(project, 3) == (["a", "b", "class 2"], "batches.meta.txt")
    assert class_names(Project(tmp_path / "empty"), 2) == (["class 0", "class 1"], "none")


def test_sample_order_puts_the_most_confident_mistakes_first():
    labels = np.array([0, 1, 2, 3, 4])
    predicted = np.array([0, 2, 2, 1, 0])
    confidence = np.array([0.9, 0.6, 0.5, 0.95, 0.6])
    assert predictions.sample_order(labels, predicted, confidence, 5) == [3, 1, 4, 2, 0]
    assert predictions.sample_order(labels, predicted, confidence, 2) == [3, 1]


# -- in a browser ------------------------------------------------------------------------------------------

BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) { if (images[i].complete && images[i].naturalWidth > 0) loaded++; }
  var out = document.createElement("div");
  out.id = "image-check";
  out.textContent = loaded + "/" + images.length;
  document.body.appendChild(out);
});
</script>"""


def test_every_image_loads_in_a_headless_browser(trained, tmp_path):
    needs_matplotlib()
    browser = next((b for b in BROWSERS if os.access(b, os.X_OK)), None)
    if browser is None:
        pytest.skip("no Chromium: apt-get install chromium to run this test")
    result, _ = report(trained)
    folder = Path(result["report_dir"])
    check = folder / "browser-check.html"  # beside index.html, so the relative <img> paths resolve the same
    check.write_text((folder / "index.html").read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"),
                     encoding="utf-8")
    done = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--allow-file-access-from-files",
                           "--user-data-dir={}".format(tmp_path / "profile"), "--virtual-time-budget=10000",
                           "--dump-dom", check.as_uri()], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    dom = done.stdout.decode("utf-8", errors="replace")
    marker = '<div id="image-check">'
    assert marker in dom, dom[-2000:]
    loaded, total = dom.split(marker, 1)[1].split("<", 1)[0].split("/")
    assert int(total) == len(result["figures"]) >= 7
    assert int(loaded) == int(total)
