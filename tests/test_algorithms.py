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
        streams = get_algorithm("supervised").streams(load_recipe("supervised-demo", ["batch_size=4"]))
        source = TrainInput(streams, lambda x: tf.cast(x, tf.float32), shuffle_buffer=8, seed=1)
        assert sorted(source.batch) == ["labelled", "labels"]
        ops = {op.type for op in tf.get_default_graph().get_operations()}
    assert "ZipDataset" not in ops


def test_the_recipes_overflow_mode_reaches_the_unlabelled_views(monkeypatch):
    from mpltool.data import views
    from mpltool.data.pipeline import TrainInput
    from mpltool.tfv1 import tf

    seen = []
    real = views.unlabelled_views

    def recording(*args, **kwargs):
        seen.append(kwargs.get("overflow"))
        return real(*args, **kwargs)

    monkeypatch.setattr(views, "unlabelled_views", recording)
    recipe = load_recipe("mpl-demo", ["batch_size=2", "unlabelled_ratio=1", "augment_overflow=wrap"])
    with tf.Graph().as_default():
        TrainInput(get_algorithm("mpl").streams(recipe), lambda x: tf.cast(x, tf.float32), shuffle_buffer=4, seed=1)
    assert seen == ["wrap"]
    assert load_recipe("mpl-wrn28-2").augment_overflow == "wrap"


def _register_two_strong_views():
    """A toy algorithm, registered from this module alone: its own recipe key (`toy_agreement`), its own
    view kind (two independent RandAugment views of each labelled image, `strong_a` and `strong_b`), and
    a step that trains on view a and weights the cross-entropy of view b by toy_agreement."""
    from mpltool.algorithms import SingleNetwork, register_algorithm
    from mpltool.algorithms.common import single_network_step, soft_cross_entropy
    from mpltool.data import views
    from mpltool.data.augment.ops import derived_seed
    from mpltool.data.pipeline import Stream, View
    from mpltool.recipes.schema import Field
    from mpltool.tfv1 import tf

    if "toy-two-strong" in algorithm_names():
        return

    @register_algorithm
    class TwoStrongViews(SingleNetwork):
        name = "toy-two-strong"
        fields = (Field("toy_agreement", "float", 1.0, "weight of the second view's cross-entropy", low=0.0,
                        high=100.0, why="a weight beyond 100 drowns the first view"),)
        reads = ("lr", "lr_warmup_steps", "lr_decay", "momentum", "weight_decay", "grad_bound", "ema_decay",
                 "augment", "augment_magnitude", "augment_layers", "augment_overflow")
        metric_names = ("loss", "labelled_ce", "view_b_ce", "accuracy")
        progress_metrics = ("loss",)

        def streams(self, recipe):
            def two_strong(image, seed):
                def strong(view_seed):
                    return views.strong_view(image, recipe.augment, recipe.augment_magnitude, recipe.augment_layers,
                                             view_seed, recipe.augment_overflow)

                return strong(seed), strong(derived_seed(seed, 500))

            return [Stream("labelled", recipe.batch_size, View(("strong_a", "strong_b"), two_strong),
                           labels="labels")]

        def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None):
            labels = batch["labels"]

            def view_b(logits, step):
                ce = tf.reduce_mean(soft_cross_entropy(tf.one_hot(labels, recipe.num_classes, dtype=logits.dtype),
                                                       logits))
                return recipe.toy_agreement * ce, [("view_b_ce", ce)]

            return single_network_step(model, recipe, {"labelled": batch["strong_a"], "labels": labels}, global_step,
                                       (batch["strong_b"], view_b), optimizer_wrapper)


def test_a_new_algorithm_brings_its_own_key_and_view_kind_and_needs_no_other_edit(prepared, tmp_path):
    """The toy algorithm (registered by this test module alone) runs train -> eval -> freeze -> convert
    --check-only: its key is typed and range-checked and recorded, other algorithms refuse it naming the
    toy, its two views reach its step as two batch keys, and eval/freeze/convert read its networks and
    input spec from the train record."""
    from mpltool.data.pipeline import TrainInput
    from mpltool.tfv1 import tf

    _register_two_strong_views()
    with pytest.raises(UsageError, match=r"toy_agreement=-1.0 must be >= 0 \(between 0 and 100\)"):
        load_recipe("supervised-demo", ["algorithm=toy-two-strong", "toy_agreement=-1"])
    with pytest.raises(UsageError, match=r"algorithm mpl does not read toy_agreement \(toy-two-strong does\)"):
        load_recipe("mpl-demo", ["toy_agreement=0.5"])
    recipe = load_recipe("supervised-demo", ["algorithm=toy-two-strong", "augment=randaugment", "batch_size=4"])
    with tf.Graph().as_default():
        source = TrainInput(get_algorithm("toy-two-strong").streams(recipe), lambda x: tf.cast(x, tf.float32),
                            shuffle_buffer=8, seed=1)
        assert sorted(source.batch) == ["labels", "strong_a", "strong_b"]
        with tf.Session() as session:
            images = np.random.RandomState(0).randint(0, 256, (10, 32, 32, 3)).astype(np.uint8)
            source.initialize(session, images, np.arange(10) % 10, np.arange(10))
            pairs = [session.run(source.batch) for _ in range(3)]
    differ = [not np.array_equal(a, b) for batch in pairs for a, b in zip(batch["strong_a"], batch["strong_b"])]
    assert sum(differ) >= len(differ) - 1  # two independent draws of the policy, not one view twice

    recipe_file = tmp_path / "toy.yaml"
    recipe_file.write_text("algorithm: toy-two-strong\nmodel: wrn-10-1\nnum_labelled: 20\nbatch_size: 4\n"
                           "augment: randaugment\ntoy_agreement: 0.5\n")
    project = tmp_path / "p"
    shutil.copytree(str(prepared), str(project))
    trained = invoke("--project", project, "train", "--recipe", recipe_file, "--device", "cpu",
                     *sets(base=RUN, algorithm="toy-two-strong"))
    assert trained.exit_code == 0, trained.stderr
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["train"]
    assert record["params"]["toy_agreement"] == 0.5 and "uda_temp" not in record["params"]
    with open(str(project / "logs" / "metrics.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:7] == ["step", "time", "steps_per_second", "loss", "labelled_ce", "view_b_ce", "accuracy"]
    trained_rows = [r for r in rows if r["loss"]]
    for row in trained_rows:  # loss = CE(view a) + 0.5 CE(view b), as the step adds them
        assert float(row["loss"]) == pytest.approx(float(row["labelled_ce"]) + 0.5 * float(row["view_b_ce"]),
                                                   rel=1e-5)
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
