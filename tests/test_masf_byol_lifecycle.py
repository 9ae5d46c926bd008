"""MASF and BYOL through the same seams as every algorithm: data -> train -> eval -> freeze (parity) ->
convert --check-only; MASF on image folders with a held-out domain and pretrained weights; BYOL's two
phases (the encoder frozen in the second, resumable in either) and the per-domain / view-pair streams."""

import csv
import json

import numpy as np
import pytest
from helpers import freeze_and_check_conversion, invoke, manifest, sets
from mpltool.checkpoints import checkpoint_variables
from mpltool.tfv1 import tf

pytestmark = pytest.mark.slow  # trains: `make test-fast` skips it

DOMAINS = ["cartoon", "painting", "photo", "sketch"]
# masf-demo shrunk to seconds: Caffe AlexNet at its smallest input (57) with 16-unit fc layers, 6 images
# from each source domain a step (2 each for the triplet loss).
MASF_RUN = ["model=caffe-alexnet-57-16", "batch_size=6", "eval_batch_size=16", "shuffle_buffer=64",
            "num_train_steps=3", "save_every=3", "eval_every=1", "log_every=1", "domain_valid_fraction=0.2"]
# byol-demo shrunk to seconds: a width-2 CIFAR ResNet-18, 4 images a step, 3 pre-training + 3 linear steps.
BYOL_RUN = ["model=resnet18-cifar-2", "batch_size=4", "eval_batch_size=16", "shuffle_buffer=64",
            "num_train_steps=6", "byol_pretrain_steps=3", "save_every=100", "eval_every=100", "log_every=1",
            "num_labelled=20"]


@pytest.fixture(scope="module")
def domains_project(tmp_path_factory):
    """The multi-domain demo at 10 images a domain, prepared at masf's 57x57."""
    from mpltool.data.domains import write_domain_demo

    root = tmp_path_factory.mktemp("masf")
    write_domain_demo(root / "src", per_domain=20)
    project = root / "p"
    recipe = root / "masf-tiny.yaml"  # images are resized to the recipe's model input: 57x57 here
    recipe.write_text("algorithm: masf\nmodel: caffe-alexnet-57-16\nnum_classes: 10\ntarget_domain: cartoon\n")
    prepared = invoke("--project", project, "data", "prepare", "--images", root / "src", "--recipe", recipe)
    assert prepared.exit_code == 0, prepared.stderr
    return project, recipe


def _variables(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in checkpoint_variables(prefix)}


def test_masf_trains_on_three_domains_and_is_evaluated_frozen_and_converted_on_the_fourth(domains_project):
    project, recipe = domains_project
    trained = invoke("--project", project, "--json", "train", "--recipe", "masf-demo", "--device", "cpu",
                     *sets(base=MASF_RUN))
    assert trained.exit_code == 0, trained.stderr
    record = manifest(project)["stages"]["train"]
    assert record["algorithm"]["name"] == "masf" and record["algorithm"]["default_target"] == "model"
    assert record["domains"] == {"source": ["painting", "photo", "sketch"], "target": "cartoon"}
    assert record["network"]["input_spec"]["channel_order"] == "BGR"
    best = record["checkpoints"]["best"]["model"]
    assert best["selected_on"] == "valid" and 0.0 <= best["valid_top1"] <= 1.0
    with open(str(project / "logs" / "metrics.csv")) as handle:
        rows = [r for r in csv.DictReader(handle) if r["steps_per_second"]]
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for row in rows:  # each step's episode: three different source domains
        assert sorted(int(float(row[k])) for k in ("domain_a", "domain_a1", "domain_b")) == [0, 1, 2]
        assert float(row["global_loss"]) >= 0.0 and float(row["local_loss"]) >= 0.0
    evaluated = invoke("--project", project, "--json", "eval")
    assert evaluated.exit_code == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["images"] == 20  # cartoon only: the held-out domain is the test set
    assert result["source"]["target"] == "model" and result["source"]["step"] == best["step"]
    freeze_and_check_conversion(project)
    ops = {n.op for n in _graph_def(project).node}
    assert {"LRN", "Split", "ConcatV2"} <= ops and "Switch" not in ops  # grouped convs, no dropout branch
    assert not any("metric" in n.name for n in _graph_def(project).node)


def _graph_def(project):
    from mpltool.graphdef import read_graph_def

    record = manifest(project)["stages"]["freeze"]
    return read_graph_def(str(project / record["outputs"]["pb"]["path"]))


def _write_npy(path, layers):
    np.save(str(path), {name.encode(): [w, b] for name, (w, b) in layers.items()}, allow_pickle=True)


def test_masf_starts_from_pretrained_weights_and_refuses_a_missing_file(domains_project, tmp_path):
    project, _ = domains_project
    shapes = {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256), "conv3": (3, 3, 256, 384),
              "conv4": (3, 3, 192, 384), "conv5": (3, 3, 192, 256), "fc6": (256, 16), "fc7": (16, 16),
              "fc8": (16, 1000)}
    rng = np.random.RandomState(0)
    layers = {name: (rng.normal(0, 0.01, shape).astype(np.float32), rng.normal(0, 0.01, shape[-1:]).astype(
        np.float32)) for name, shape in shapes.items()}
    weights = tmp_path / "bvlc_tiny.npy"
    _write_npy(weights, layers)
    missing = invoke("--project", project, "train", "--recipe", "masf-demo", "--force",
                     *sets("pretrained={}".format(tmp_path / "absent.npy"), base=MASF_RUN))
    assert missing.exit_code == 4 and "not found" in missing.stderr and "never downloads" in missing.stderr
    # Learning rates 0: after one step every layer but fc8 (7 or 10 classes, never the file's 1000) still
    # holds the file's values.
    frozen_rates = ["masf_inner_lr=0", "masf_outer_lr=0", "masf_metric_lr=0", "num_train_steps=1",
                    "save_every=1", "pretrained={}".format(weights)]
    trained = invoke("--project", project, "train", "--recipe", "masf-demo", "--force", "--device", "cpu",
                     *sets(*frozen_rates, base=MASF_RUN))
    assert trained.exit_code == 0, trained.stderr
    assert "no pretrained weights" not in trained.stderr
    record = manifest(project)["stages"]["train"]
    assert record["pretrained"]["sha256"] and record["params"]["pretrained"] == str(weights)
    stored = _variables(str(project / record["checkpoints"]["latest"]["prefix"]))
    for name, (kernel, bias) in layers.items():
        if name == "fc8":
            assert stored["model/caffe-alexnet-57-16/fc8/kernel"].shape == (16, 10)
            continue
        np.testing.assert_array_equal(stored["model/caffe-alexnet-57-16/{}/kernel".format(name)], kernel)
        np.testing.assert_array_equal(stored["model/caffe-alexnet-57-16/{}/bias".format(name)], bias)


def test_the_per_domain_stream_gives_each_domain_its_own_batch():
    from mpltool.algorithms import get_algorithm
    from mpltool.data.pipeline import TrainInput
    from mpltool.recipes import load_recipe

    graph = tf.Graph()
    with graph.as_default():
        streams = get_algorithm("masf").streams(load_recipe("masf-demo", ["batch_size=4"]))
        source = TrainInput(streams, lambda x: tf.cast(x, tf.float32), shuffle_buffer=16, seed=1,
                            image_shape=(8, 8, 3), num_domains=3)
        with tf.Session(graph=graph) as session:
            domains = np.repeat(np.arange(3), 10)
            labels = domains * 3 + np.arange(30) % 3  # domain k holds labels 3k..3k+2
            colour = (10 + 50 * domains).astype(np.uint8)  # 10, 60, 110: never the pad value
            images = np.zeros((30, 8, 8, 3), np.uint8) + colour[:, None, None, None]
            labelled = np.arange(30)[np.arange(30) % 5 != 0]  # 8 labelled records per domain
            source.initialize(session, images, labels, labelled, None, domains=domains)
            for _ in range(3):
                batch_images, batch_labels = session.run([source.batch["labelled"], source.batch["labels"]])
                for k in range(3):
                    assert batch_images[k].shape == (4, 8, 8, 3)
                    # flip/pad/crop moves pixels and pads with grey (128), never mixes domains
                    assert set(np.unique(batch_images[k])) <= {128.0, 10.0 + 50 * k}
                    assert set(batch_labels[k]) <= {3 * k, 3 * k + 1, 3 * k + 2}


@pytest.fixture(scope="module")
def cifar_project(tmp_path_factory):
    from cifar_fixtures import make_cifar_dir

    root = tmp_path_factory.mktemp("byol")
    source = make_cifar_dir(root / "src", test_records=37, seed=8)
    project = root / "p"
    prepared = invoke("--project", project, "data", "prepare", "--cifar", source, "--recipe", "byol-demo",
                      "--labelled", "20")
    assert prepared.exit_code == 0, prepared.stderr
    return project


def test_byol_pretrains_then_trains_a_linear_head_on_the_frozen_encoder(cifar_project):
    project = cifar_project
    first = invoke("--project", project, "train", "--recipe", "byol-demo", "--device", "cpu",
                   *sets("num_train_steps=4", base=BYOL_RUN))
    assert first.exit_code == 0, first.stderr
    record = manifest(project)["stages"]["train"]
    assert record["algorithm"]["eval_targets"] == ["online"] and record["steps_done"] == 4
    ckpt_dir = project / "checkpoints"
    # The phase boundary (step 3) is saved although save_every is 100: a run resumes in either phase.
    assert (ckpt_dir / "model.ckpt-3.index").is_file()
    phase = record["checkpoints"]["phases"]["pretrain"]  # kept apart: the pre-trained encoder
    assert phase["step"] == 3 and phase["prefix"] == "checkpoints/phase-pretrain/model.ckpt-3"
    after_pretraining = _variables(str(ckpt_dir / "model.ckpt-3"))
    resumed = invoke("--project", project, "train", "--extend-steps", "2", "--device", "cpu")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming from checkpoints/model.ckpt-4" in resumed.stdout
    final = _variables(str(ckpt_dir / "model.ckpt-6"))
    encoder = [n for n in final if n.startswith("online/resnet18-cifar-2/") and "/head/" not in n
               and "Adam" not in n]
    head = [n for n in final if n.startswith("online/resnet18-cifar-2/head/") and "Adam" not in n]
    assert len(encoder) > 100 and len(head) == 2
    for name in encoder + [n for n in final if n.startswith(("target/", "projector/", "predictor/"))]:
        np.testing.assert_array_equal(final[name], after_pretraining[name], err_msg=name)  # frozen
    assert any(not np.array_equal(final[n], after_pretraining[n]) for n in head)
    # The target moved towards the online encoder in pre-training: an EMA, not a copy, not still.
    name = "online/resnet18-cifar-2/stem/conv/kernel"
    target = after_pretraining[name.replace("online/", "target/", 1)]
    initial_gap = np.abs(after_pretraining[name] - target).max()
    assert 0.0 < initial_gap
    with open(str(project / "logs" / "metrics.csv")) as handle:
        rows = [r for r in csv.DictReader(handle) if r["steps_per_second"]]  # step rows, not evaluations
    assert [(int(r["step"]), bool(r["byol_loss"]), bool(r["linear_ce"])) for r in rows] == [
        (1, True, False), (2, True, False), (3, True, False), (4, False, True), (5, False, True), (6, False, True)]
    for row in rows[:3]:
        assert 0.0 <= float(row["byol_loss"]) <= 4.0 and float(row["target_decay"]) == pytest.approx(0.99)
    evaluated = invoke("--project", project, "--json", "eval")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["source"]["target"] == "online"
    status = invoke("--project", project, "status")
    assert status.exit_code == 0, status.stderr
    assert "best online checkpoints/best-online/" in status.stdout
    freeze_and_check_conversion(project)


def test_byol_with_no_pretraining_step_and_a_recipe_without_linear_steps(cifar_project, tmp_path):
    import shutil

    project = tmp_path / "p"
    shutil.copytree(str(cifar_project), str(project))
    none = invoke("--project", project, "train", "--recipe", "byol-demo", "--force", "--device", "cpu",
                  *sets("byol_pretrain_steps=0", "num_train_steps=2", base=BYOL_RUN))
    assert none.exit_code == 0, none.stderr
    with open(str(project / "logs" / "metrics.csv")) as handle:
        assert [bool(r["linear_ce"]) for r in csv.DictReader(handle) if r["steps_per_second"]] == [True, True]
    refused = invoke("--project", project, "train", "--recipe", "byol-demo", "--force",
                     *sets("byol_pretrain_steps=6", base=BYOL_RUN))
    assert refused.exit_code == 2
    assert "byol_pretrain_steps=6 leaves no step of linear evaluation" in refused.stderr
