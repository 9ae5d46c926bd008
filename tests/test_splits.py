"""Labelled / unlabelled / validation splits (mpltool/data/splits.py) against google-research/mixmatch's
scripts/create_split.py, and the split as `data prepare` records it and `train` adopts it."""

import json
from collections import defaultdict

import numpy as np
import pytest
import yaml

from cifar_fixtures import make_cifar_dir
from helpers import invoke
from mpltool.data import cifar, splits
from mpltool.data.splits import make, parse_split_name, resolve, round_robin
from mpltool.errors import PrerequisiteError, UsageError
from mpltool.manifest import MANIFEST_NAME
from mpltool.recipes import load_recipe


# ------------------------------------------------------------------------------------------ reference


def reference_create_split(labels, size, seed):
    """scripts/create_split.py main(), line for line, with record i standing in for the i-th TFRecord.

    Returns (sorted labelled positions, unlabelled positions in the order the writer wrote them), i.e. the
    `label` and `unlabel` lists of the reference's -map.json.
    """
    count = 0
    id_class = []
    class_id = defaultdict(list)
    for i in np.asarray(labels, np.int64):  # the session.run(it) loop over the class of every record
        id_class.append(i)
        class_id[i].append(count)
        count += 1
    nclass = len(class_id)
    train_stats = np.array([len(class_id[i]) for i in range(nclass)], np.float64)
    train_stats /= train_stats.max()
    assert min(class_id.keys()) == 0 and max(class_id.keys()) == (nclass - 1)
    class_id = [np.array(class_id[i], dtype=np.int64) for i in range(nclass)]
    if seed:
        np.random.seed(seed)
        for i in range(nclass):
            np.random.shuffle(class_id[i])
    # Distribute labels to match the input distribution.
    npos = np.zeros(nclass, np.int64)
    label = []
    for i in range(size):
        c = np.argmax(train_stats - npos / max(npos.max(), 1))
        label.append(class_id[c][npos[c]])
        npos[c] += 1

    del npos, class_id
    label = frozenset([int(x) for x in label])

    npos = np.zeros(nclass, np.int64)
    class_data = [[] for _ in range(nclass)]
    unlabel = []
    pos = 0
    for record in range(count):  # tf_record_iterator over the input files
        if pos in label:
            pass  # writer_label.write(record)
        else:
            class_data[id_class[pos]].append((pos, record))
            while True:
                c = np.argmax(train_stats - npos / max(npos.max(), 1))
                if class_data[c]:
                    p, v = class_data[c].pop(0)
                    unlabel.append(p)
                    npos[c] += 1
                else:
                    break
        pos += 1
    for remain in class_data:
        for p, v in remain:
            unlabel.append(p)
    return sorted(label), unlabel


def _balanced_sorted():
    return np.repeat(np.arange(10), 60)


def _balanced_shuffled():
    return np.random.RandomState(11).permutation(np.repeat(np.arange(10), 60))


def _imbalanced_shuffled():
    counts = [60, 45, 30, 80, 12, 25, 50, 70, 33, 41]
    return np.random.RandomState(12).permutation(np.repeat(np.arange(10), counts))


def _imbalanced_file_order():
    counts = [20, 70, 35, 50, 15, 60, 40, 25, 55, 30]
    rng = np.random.RandomState(13)
    # Runs of one class in a row, so the writer's queues really fill up and drain in bursts.
    runs = [np.full(n, c) for c, total in enumerate(counts) for n in np.diff([0, total // 2, total])]
    order = rng.permutation(len(runs))
    return np.concatenate([runs[i] for i in order])


LABEL_SETS = {
    "balanced-sorted": _balanced_sorted,
    "balanced-shuffled": _balanced_shuffled,
    "imbalanced-shuffled": _imbalanced_shuffled,
    "imbalanced-runs": _imbalanced_file_order,
}


@pytest.mark.parametrize("labels_name", sorted(LABEL_SETS))
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("num_labelled, num_valid", [(40, 0), (40, 100), (100, 50), (250, 150)])
def test_round_robin_equals_create_split(labels_name, seed, num_labelled, num_valid):
    """The point of round-robin: a named split cifar10.SEED@N-VALID must pick the very records (and the very
    unlabelled order, whose head is the validation set) that the reference's create_split.py writes."""
    labels = LABEL_SETS[labels_name]()
    expected_label, expected_unlabel = reference_create_split(labels, num_labelled, seed)
    plan = round_robin(labels, num_labelled, num_valid=num_valid, seed=seed)
    assert plan.labelled.tolist() == expected_label
    assert plan.valid.tolist() == expected_unlabel[:num_valid]
    assert plan.unlabelled.tolist() == expected_unlabel[num_valid:]
    assert plan.labelled.dtype == plan.unlabelled.dtype == plan.valid.dtype == np.int64


def test_round_robin_accepts_a_list_and_make_routes_to_it():
    """`data prepare` calls `make`; it must give the same split as the function the reference test checks."""
    labels = _balanced_shuffled()
    direct = round_robin(labels, 40, 30, seed=2)
    via_make = make(labels.tolist(), "round-robin", 40, num_valid=30, seed=2)
    for a, b in zip(direct, via_make):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("seed", range(6))
def test_balanced_classes_give_25_per_class_and_a_partition(seed):
    """cifar10.SEED@250: 25 labels of each class whatever the seed, and every record in exactly one of
    labelled, unlabelled and valid (a record in two would leak labels into validation or the stream)."""
    labels = _balanced_shuffled()
    plan = round_robin(labels, 250, num_valid=100, seed=seed)
    assert np.bincount(labels[plan.labelled], minlength=10).tolist() == [25] * 10
    together = np.concatenate([plan.labelled, plan.unlabelled, plan.valid])
    assert sorted(together.tolist()) == list(range(len(labels)))
    assert len(plan.valid) == 100 and len(plan.unlabelled) == len(labels) - 250 - 100
    assert list(plan.labelled) == sorted(plan.labelled)


def test_seeds_choose_different_labelled_sets_and_seed_0_is_file_order():
    """Seed 0 means no shuffle in the reference (the first records of each class); other seeds must differ,
    or the 5 seeds of a reported median would all be one split."""
    labels = _balanced_shuffled()
    chosen = {seed: tuple(round_robin(labels, 250, seed=seed).labelled) for seed in range(6)}
    assert len(set(chosen.values())) == 6
    first_of_each = sorted(int(i) for c in range(10) for i in np.flatnonzero(labels == c)[:25])
    assert list(chosen[0]) == first_of_each


# -------------------------------------------------------------------------------------------- errors


def _one_line(exc):
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_round_robin_refuses_bad_sizes_and_a_missing_class():
    """Each mistake is a UsageError (exit 2) with one line that says what is wrong, not an IndexError."""
    labels = _balanced_shuffled()
    with pytest.raises(UsageError) as info:
        round_robin(labels, 600)
    assert "600" in _one_line(info)
    with pytest.raises(UsageError) as info:
        round_robin(labels, 700)
    assert "700" in _one_line(info)
    with pytest.raises(UsageError) as info:
        round_robin(labels, 0)
    with pytest.raises(UsageError) as info:
        round_robin(labels, 250, num_valid=351)
    assert "351" in _one_line(info) and "350" in _one_line(info)
    assert len(round_robin(labels, 250, num_valid=350).unlabelled) == 0  # the edge itself is allowed
    missing = labels[labels != 3]
    with pytest.raises(UsageError) as info:
        round_robin(missing, 40, num_classes=10)
    assert "class 3" in _one_line(info)
    with pytest.raises(UsageError) as info:
        make(missing, "round-robin", 40)
    assert "class 3" in _one_line(info)


def test_validation_only_comes_with_round_robin():
    """A validation set is the head of round-robin's stream; for first/balanced it would silently be nothing."""
    labels = _balanced_shuffled()
    with pytest.raises(UsageError) as info:
        make(labels, "first", 40, num_valid=5)
    assert "round-robin" in _one_line(info)
    with pytest.raises(UsageError):
        make(labels, "balanced", 40, num_valid=5)
    with pytest.raises(UsageError):
        make(labels, "sorted", 40)
    first = make(labels, "first", 40)
    assert first.labelled.tolist() == list(range(40))
    assert first.unlabelled.tolist() == list(range(600)) and first.valid.size == 0


# ------------------------------------------------------------------------------------------ the names


def test_parse_split_name():
    """The reference's dataset names are what users copy from papers and scripts."""
    assert parse_split_name("cifar10.3@250-5000") == {"seed": 3, "num_labelled": 250, "num_valid": 5000}
    assert parse_split_name("cifar10.1@4000") == {"seed": 1, "num_labelled": 4000, "num_valid": 0}
    assert splits.split_name(250, 5000, 3) == "cifar10.3@250-5000"


@pytest.mark.parametrize("name", ["cifar10@250", "cifar10.3", "cifar10.x@250", "cifar10.3@", "cifar10.3@250-",
                                  "cifar10.3@-5", "cifar10.3@250-5000-1", ".3@250", "", "cifar10.3@2.5e2",
                                  "cifar10.-1@250"])
def test_bad_split_names_are_usage_errors(name):
    with pytest.raises(UsageError) as info:
        parse_split_name(name)
    assert "cifar10.3@250-5000" in _one_line(info)  # the message shows the form


def test_resolve_with_a_name_and_with_options():
    """`--split NAME` sets round-robin with the name's numbers; an option that contradicts the name is
    refused instead of one of the two silently winning."""
    recipe = load_recipe("mpl-wrn28-2")
    assert resolve(recipe, split="cifar10.3@250-5000") == {
        "split": "round-robin", "seed": 3, "num_labelled": 250, "num_valid": 5000}
    assert resolve(recipe, 250, "cifar10.3@250-5000", 3, 5000)["num_valid"] == 5000  # agreeing options: fine
    for kwargs in ({"num_labelled": 40}, {"seed": 2}, {"num_valid": 10}):
        with pytest.raises(UsageError) as info:
            resolve(recipe, split="cifar10.3@250-5000", **kwargs)
        _one_line(info)
    with pytest.raises(UsageError):
        resolve(recipe, split="roundrobin")
    assert resolve(recipe) == {"split": "first", "seed": 0, "num_labelled": 4000, "num_valid": 0}
    mixmatch = load_recipe("mixmatch-cifar10-250")
    assert resolve(mixmatch) == {"split": "round-robin", "seed": 3, "num_labelled": 250, "num_valid": 5000}
    assert resolve(mixmatch, split="first")["num_valid"] == 0  # the recipe's validation needs round-robin
    assert resolve(mixmatch, seed=1)["seed"] == 1


# -------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def cifar_src(tmp_path_factory):
    """5 x 40 training records (20 of each class: every file cycles the 10 classes) and 25 test records."""
    root = tmp_path_factory.mktemp("splits")
    return make_cifar_dir(root / "src", train_records=(40, 40, 40, 40, 40), test_records=25, seed=8)


def _data_record(project):
    return yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["data"]


def _indices(path):
    return [int(v) for v in path.read_text().split()]


def test_cli_prepares_a_named_round_robin_split(tmp_path, cifar_src):
    """The whole route from `--split cifar10.1@40-100` to the files train reads: recorded settings, and
    indices files equal to the reference split of the labels actually imported (valid first)."""
    project = tmp_path / "proj"
    result = invoke("--project", project, "--json", "data", "prepare", "--cifar", cifar_src,
                    "--split", "cifar10.1@40-100")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["valid_records"] == 100 and payload["labelled_records"] == 40
    assert payload["unlabelled_records"] == 200 - 40 - 100
    split = _data_record(project)["split"]
    assert split["method"] == "round-robin" and split["seed"] == 1
    assert split["num_labelled"] == 40 and split["num_valid"] == 100
    assert split["name"] == "cifar10.1@40-100"
    assert split["label_counts"] == [4] * 10
    labelled_file = project / "data/labelled_indices.txt"
    unlabelled_file = project / "data/unlabelled_indices.txt"
    assert labelled_file.is_file() and unlabelled_file.is_file()
    _, labels = cifar.read_images([project / "data/cifar" / n for n in cifar.TRAIN_FILES])
    plan = round_robin(labels, 40, num_valid=100, seed=1)
    assert _indices(labelled_file) == plan.labelled.tolist()
    assert _indices(unlabelled_file) == plan.valid.tolist() + plan.unlabelled.tolist()
    expected_label, expected_unlabel = reference_create_split(labels, 40, 1)
    assert _indices(labelled_file) == expected_label and _indices(unlabelled_file) == expected_unlabel
    assert split["valid_label_counts"] == np.bincount(labels[plan.valid], minlength=10).tolist()

    from mpltool.data.cifar import training_indices
    from mpltool.data.stage import load_prepared
    from mpltool.manifest import Project

    got = training_indices(load_prepared(Project(project)), len(labels))
    assert got["labelled"].tolist() == plan.labelled.tolist()
    assert got["unlabelled"].tolist() == plan.unlabelled.tolist()
    assert got["valid"].tolist() == plan.valid.tolist()


def test_cli_refuses_validation_with_a_first_split_and_keeps_the_manifest(tmp_path, cifar_src):
    """A validation set a first split cannot have is exit 2 in one line, and the earlier import stands."""
    project = tmp_path / "proj"
    assert invoke("--project", project, "data", "prepare", "--cifar", cifar_src, "--labelled", "20").exit_code == 0
    before = (project / MANIFEST_NAME).read_bytes()
    indices_before = (project / "data/labelled_indices.txt").read_bytes()
    result = invoke("--project", project, "data", "prepare", "--cifar", cifar_src, "--split", "first",
                    "--valid", "10")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "round-robin" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert (project / MANIFEST_NAME).read_bytes() == before
    assert (project / "data/labelled_indices.txt").read_bytes() == indices_before


def test_cli_name_and_contradicting_labelled_is_exit_2(tmp_path, cifar_src):
    """`--split cifar10.1@40-100 --labelled 50` names two different splits: neither may win silently."""
    project = tmp_path / "proj"
    result = invoke("--project", project, "data", "prepare", "--cifar", cifar_src, "--split", "cifar10.1@40-100",
                    "--labelled", "50")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cifar10.1@40-100" in result.stderr and "Traceback" not in result.stderr
    assert not (project / "data").exists()  # refused before anything was imported


def test_first_split_lists_every_training_record_as_unlabelled(tmp_path, cifar_src):
    """MPL's reference streams every training record (labelled ones included) as unlabelled, in file order."""
    project = tmp_path / "proj"
    result = invoke("--project", project, "--json", "data", "prepare", "--cifar", cifar_src, "--labelled", "20")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["valid_records"] == 0
    assert _indices(project / "data/labelled_indices.txt") == list(range(20))
    assert _indices(project / "data/unlabelled_indices.txt") == list(range(200))
    split = _data_record(project)["split"]
    assert split["method"] == "first" and "name" not in split

    from mpltool.data.cifar import training_indices
    from mpltool.data.stage import load_prepared
    from mpltool.manifest import Project

    got = training_indices(load_prepared(Project(project)), 200)
    assert got["unlabelled"].tolist() == list(range(200)) and got["valid"].size == 0


# ------------------------------------------------------------------------------------------ train adopts


ROUND_ROBIN_RECORD = {"split": {"method": "round-robin", "seed": 3, "num_labelled": 250, "num_valid": 5000,
                                "name": "cifar10.3@250-5000", "label_counts": [25] * 10}}


def test_train_adopts_the_prepared_round_robin_split():
    """Train must use the split data prepare wrote: a recipe that leaves the split keys alone takes them
    from the record (and says so), so the run's recorded params describe the data it really saw."""
    from mpltool.data.sources import get_source

    recipe = load_recipe("mpl-wrn28-2")
    logged = []
    get_source("cifar").adopt(recipe, ROUND_ROBIN_RECORD, logged.append)
    assert (recipe.split, recipe.split_seed, recipe.num_labelled, recipe.num_valid) == ("round-robin", 3, 250, 5000)
    assert len(logged) == 1 and "num_valid=5000" in logged[0]


def test_train_refuses_an_explicit_num_valid_that_differs():
    """An explicit `--set num_valid=...` that disagrees with the prepared split would train on a split
    that does not exist on disk: refused, not overridden silently either way."""
    from mpltool.data.sources import get_source

    adopt = get_source("cifar").adopt
    recipe = load_recipe("mpl-wrn28-2", ["split=round-robin", "split_seed=3", "num_valid=100"])
    assert "num_valid" in recipe.overrides
    with pytest.raises(PrerequisiteError) as info:
        adopt(recipe, ROUND_ROBIN_RECORD, lambda line: None)
    assert "num_valid=100" in info.value.message and "5000" in info.value.message
    agreeing = load_recipe("mpl-wrn28-2", ["split=round-robin", "num_valid=5000"])
    adopt(agreeing, ROUND_ROBIN_RECORD, lambda line: None)
    assert agreeing.num_valid == 5000 and agreeing.split_seed == 3 and agreeing.num_labelled == 250
