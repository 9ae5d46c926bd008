"""The algorithm seam: MPL, supervised and UDA through one trainer, and eval/freeze/convert that know
none of them (they read the networks from the train record)."""

import csv
import json
import shutil

import numpy as np
import pytest
import yaml
from helpers import TINY, freeze_and_check_conversion, invoke, sets
from mpltool.algorithms import algorithm_names, get_algorithm
from mpltool.checkpoints import checkpoint_variables
from mpltool.errors import UsageError
from mpltool.manifest import MANIFEST_NAME
from mpltool.recipes import available_recipes, load_recipe
from mpltool.train.trainer import csv_columns

# TINY without num_labelled (the prepared split is adopted) and MPL's own keys, four steps.
RUN = [p for p in TINY if p.split("=")[0] not in ("num_labelled", "student_lr_wait_steps", "student_lr_warmup_steps")
       ] + ["num_train_steps=4", "save_every=2", "eval_every=2", "log_every=2"]


def test_the_registry_knows_six_algorithms_and_every_recipe_names_one():
    assert list(algorithm_names()) == ["mpl", "supervised", "uda", "mixmatch", "masf", "byol"]
    named = {name: load_recipe(name).algorithm for name in available_recipes()}
    for algorithm in ("mpl", "supervised", "uda"):
        assert {"{}-demo".format(algorithm), "{}-wrn28-2".format(algorithm)} <= {
            n for n, a in named.items() if a == algorithm}
    assert {n for n, a in named.items() if a == "mixmatch"} == {"mixmatch-demo", "mixmatch-cifar10-250"}
    assert {n for n, a in named.items() if a == "masf"} == {"masf-demo", "masf-pacs-alexnet"}
    assert {n for n, a in named.items() if a == "byol"} == {"byol-demo", "byol-resnet18"}
    assert named["supervised-domains-demo"] == "supervised"
    listed = json.loads(invoke("--json", "recipes").stdout)["recipes"]
    assert {"supervised-demo", "uda-demo", "mpl-demo", "mixmatch-demo"} <= {r["name"] for r in listed}


def test_an_unknown_algorithm_and_another_algorithms_key_are_usage_errors():
    with pytest.raises(UsageError, match=r"algorithm='mlp' is not a known algorithm \(did you mean mpl\?\)"):
        load_recipe("supervised-demo", ["algorithm=mlp"])
    with pytest.raises(UsageError, match="algorithm supervised does not read mpl_feedback \\(mpl does\\)"):
        load_recipe("supervised-demo", ["mpl_feedback=paper"])
    assert get_algorithm("uda").describe() == {"name": "uda", "networks": ["model", "ema"],
                                               "eval_targets": ["model", "ema"], "default_target": "ema"}


@pytest.mark.parametrize("algorithm", ["supervised", "uda"])
def test_each_algorithm_runs_the_whole_lifecycle(prepared, tmp_path, algorithm):
    project = tmp_path / "p"
    shutil.copytree(str(prepared), str(project))
    trained = invoke("--project", project, "--json", "train", "--recipe", "{}-demo".format(algorithm),
                     "--device", "cpu", *sets(base=RUN, algorithm=algorithm))
    assert trained.exit_code == 0, trained.stderr
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["train"]
    assert record["algorithm"] == get_algorithm(algorithm).describe()
    assert record["params"]["algorithm"] == algorithm and record["params"]["num_labelled"] == 20
    assert set(record["checkpoints"]["best"]) == {"model", "ema"}
    scopes = {name.split("/")[0] for name in checkpoint_variables(project / record["checkpoints"]["latest"]["prefix"])}
    assert {"model", "ema"} <= scopes and not scopes & {"teacher", "student"}
    with open(str(project / "logs" / "metrics.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == csv_columns(get_algorithm(algorithm))
    assert [int(r["step"]) for r in rows if r["loss"]] == [2, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows if r["loss"])
    if algorithm == "uda":
        assert all(0.0 <= float(r["uda_mask_rate"]) <= 1.0 for r in rows if r["loss"])

    evaluated = invoke("--project", project, "--json", "eval")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["source"]["target"] == "ema"
    model = invoke("--project", project, "--json", "eval", "--target", "model")
    assert model.exit_code == 0 and json.loads(model.stdout)["images"] == 37
    wrong = invoke("--project", project, "eval", "--target", "student")
    assert wrong.exit_code == 2
    assert wrong.stderr.strip() == "error: unknown target 'student': this project's training built model, ema"

    freeze_and_check_conversion(project)


def test_supervised_builds_no_unlabelled_stream():
    from mpltool.data.pipeline import TrainInput
    from mpltool.tfv1 import tf

    with tf.Graph().as_default():
        source = TrainInput(batch_size=4, unlabelled_ratio=0, shuffle_buffer=8, seed=1)
        assert source.batch.ori_images is None and source.batch.aug_images is None
        ops = {op.type for op in tf.get_default_graph().get_operations()}
    assert "ZipDataset" not in ops


def test_the_recipes_overflow_mode_reaches_the_unlabelled_views(monkeypatch):
    from mpltool.data import views as augment
    from mpltool.data.pipeline import TrainInput
    from mpltool.tfv1 import tf

    seen = []
    real = augment.unlabelled_views

    def recording(*args, **kwargs):
        seen.append(kwargs.get("overflow"))
        return real(*args, **kwargs)

    monkeypatch.setattr(augment, "unlabelled_views", recording)
    with tf.Graph().as_default():
        TrainInput(batch_size=2, unlabelled_ratio=1, shuffle_buffer=4, seed=1, overflow="wrap")
    assert seen == ["wrap"]
    assert load_recipe("mpl-wrn28-2").augment_overflow == "wrap"


def test_a_new_algorithm_needs_only_its_module_and_a_recipe(prepared, tmp_path):
    """A toy algorithm registered here (labelled CE at half the teacher's rate, its own metric
    names) runs train -> eval -> freeze -> convert --check-only with no line of eval/, freeze/ or convert/
    knowing it: they read its networks and input spec from the train record."""
    from mpltool.algorithms import SingleNetwork, Streams, register_algorithm
    from mpltool.algorithms.common import single_network_step

    @register_algorithm
    class HalfRate(SingleNetwork):
        name = "toy-half-rate"
        metric_names = ("loss", "accuracy")
        progress_metrics = ("loss",)
        reads = ("lr", "lr_warmup_steps", "lr_decay", "momentum", "weight_decay", "grad_bound", "ema_decay")

        def streams(self, recipe):
            return Streams(unlabelled=False)

        def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None):
            recipe = dict(recipe, lr=recipe["lr"] / 2)
            from mpltool.recipes import Recipe

            return single_network_step(model, Recipe(recipe), batch, global_step, None, optimizer_wrapper)

    recipe_file = tmp_path / "toy.yaml"
    recipe_file.write_text("algorithm: toy-half-rate\nmodel: wrn-10-1\nnum_labelled: 20\nbatch_size: 4\n")
    project = tmp_path / "p"
    shutil.copytree(str(prepared), str(project))
    trained = invoke("--project", project, "train", "--recipe", recipe_file, "--device", "cpu",
                     *sets(base=RUN, algorithm="toy-half-rate"))
    assert trained.exit_code == 0, trained.stderr
    with open(str(project / "logs" / "metrics.csv")) as handle:
        assert next(csv.reader(handle)) == ["step", "time", "steps_per_second", "loss", "accuracy", "model_top1",
                                            "model_top5", "model_loss_eval", "ema_top1", "ema_top5",
                                            "ema_loss_eval", "model_valid_top1", "ema_valid_top1"]
    assert invoke("--project", project, "eval", "--target", "model").exit_code == 0
    frozen = invoke("--project", project, "--json", "freeze", "--parity-images", "4")
    assert frozen.exit_code == 0, frozen.stderr
    assert json.loads(frozen.stdout)["io"]["input_shape"] == [1, 32, 32, 3]
    assert invoke("--project", project, "convert", "--check-only").exit_code == 0


@pytest.mark.parametrize("policy, expected", [("randaugment", "aug_view"), ("autoaugment", "autoaugment_view"),
                                              ("none", "labelled_view")])
def test_the_augment_key_picks_the_strong_view(monkeypatch, policy, expected):
    from mpltool.data import views as augment
    from mpltool.data.views import strong_view

    called = []
    for name in ("aug_view", "autoaugment_view", "labelled_view"):
        monkeypatch.setattr(augment, name, lambda image, _name=name, **kwargs: called.append(_name) or image)
    assert strong_view("image", policy, 16, 2, seed=3, overflow="wrap") == "image"
    assert called == [expected]


def test_supervised_with_the_autoaugment_policy_runs_end_to_end(prepared, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(str(prepared), str(project))
    trained = invoke("--project", project, "--json", "train", "--recipe", "supervised-wrn28-2", "--device", "cpu",
                     "--set", "augment=autoaugment", *sets(base=RUN, algorithm="supervised"))
    assert trained.exit_code == 0, trained.stderr
    assert yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["train"]["params"]["augment"] == \
        "autoaugment"
    frozen = invoke("--project", project, "--json", "freeze", "--parity-images", "4")
    assert frozen.exit_code == 0, frozen.stderr
