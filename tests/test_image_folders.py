"""Image folders as a data source: `data prepare --images DIR [--lists DIR]`, the stored per-domain files
and their record, reading them back, the held-out domain and its checks in training, and the
multi-domain demo (`data demo --domains`).

Every tree here is tiny (10 images per domain at most 32x32, or a handful at 48x48), so the whole file
runs in well under a minute; the `train` runs all fail in planning, before any graph is built.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cifar_fixtures import make_cifar_dir
from helpers import invoke
from mpltool.data import demo as demo_data
from mpltool.data.domains import STYLES, make_domain_images, write_domain_demo
from mpltool.manifest import MANIFEST_NAME

DOMAINS = sorted(STYLES)  # folder order: cartoon, painting, photo, sketch
CLASS_FOLDERS = sorted(name.replace(" ", "_") for name in demo_data.DEMO_CLASSES)
RECIPE_32 = "supervised-demo"  # wrn-10-1: 32x32 input
RECIPE_64 = "masf-demo"  # caffe-alexnet-64-512: 64x64 input, target_domain cartoon


# -- helpers -------------------------------------------------------------------------------------------

def sha256(path):
    return hashlib.sha256(Path(str(path)).read_bytes()).hexdigest()


def data_record(project):
    path = Path(str(project)) / MANIFEST_NAME
    if not path.exists():
        return None
    return (yaml.safe_load(path.read_text()).get("stages") or {}).get("data")


def error_line(result, code):
    """The one stderr line of a failed command, after checking its exit code and that nothing leaked."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def tree_bytes(folder):
    folder = Path(str(folder))
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


_ENCODER = {}


def encode(image, fmt="png"):
    """PNG or JPEG bytes of a uint8 HWC image (1 or 3 channels), through TensorFlow's encoders."""
    from mpltool.tfv1 import tf

    if not _ENCODER:
        graph = tf.Graph()
        with graph.as_default():
            pixels = tf.placeholder(tf.uint8, (None, None, None))
            _ENCODER.update(pixels=pixels, png=tf.image.encode_png(pixels), jpg=tf.image.encode_jpeg(pixels),
                            session=tf.Session(graph=graph))
    return _ENCODER["session"].run(_ENCODER[fmt], {_ENCODER["pixels"]: image})


def write_image(path, image, fmt="png"):
    path = Path(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image, fmt))


def expected_domain(style, per_domain=10, seed=0):
    """(images, labels) of one demo style as `data prepare` stores them: class folders in sorted order
    (label = index), files by name (= generation index) within each."""
    images, labels = make_domain_images(per_domain, [seed, 100 + STYLES.index(style)], style)
    names = [demo_data.DEMO_CLASSES[l].replace(" ", "_") for l in labels]
    order = sorted(range(per_domain), key=lambda k: (CLASS_FOLDERS.index(names[k]), k))
    return images[order], np.array([CLASS_FOLDERS.index(names[k]) for k in order], np.int64)


def prepared(project):
    from mpltool.data.stage import load_prepared
    from mpltool.manifest import Project

    return load_prepared(Project(project))


# -- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory):
    """The multi-domain demo, 10 PNGs (one per class) in each of the four styles; copy before changing it."""
    root = tmp_path_factory.mktemp("domains") / "src"
    assert write_domain_demo(root, per_domain=10) == {style: 10 for style in STYLES}
    return root


@pytest.fixture(scope="module")
def domain_project(tmp_path_factory, demo_tree):
    """A project whose data stage holds the demo tree at 32x32; copy it (`domain_copy`) before writing."""
    project = tmp_path_factory.mktemp("domain-project") / "proj"
    result = invoke("--project", project, "data", "prepare", "--images", demo_tree, "--recipe", RECIPE_32)
    assert result.exit_code == 0, result.stderr
    return project


@pytest.fixture
def domain_copy(domain_project, tmp_path):
    project = tmp_path / "proj"
    shutil.copytree(str(domain_project), str(project))
    return project


@pytest.fixture
def tree_copy(demo_tree, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(str(demo_tree), str(root))
    return root


@pytest.fixture(scope="module", autouse=True)
def _close_encoder():
    yield
    if _ENCODER:
        _ENCODER["session"].close()
        _ENCODER.clear()


# -- 1. prepare a four-domain tree: record, files, exact pixels -----------------------------------------

def test_prepare_records_every_domain_and_reads_back_the_exact_pixels(domain_project, demo_tree):
    project = Path(str(domain_project))
    record = data_record(project)
    assert record["status"] == "done"
    assert record["source"] == "folders"
    assert record["params"]["kind"] == "folders"
    assert record["params"]["source"] == str(Path(str(demo_tree)).absolute())
    assert "image_size" not in record["params"] and "image_size" not in record  # decoded at each model's size
    assert record["domains"] == DOMAINS == ["cartoon", "painting", "photo", "sketch"]
    assert record["classes"] == CLASS_FOLDERS
    assert record["format"] == "files"
    assert record["decoded_size"] == {"min": [32, 32], "max": [32, 32]}
    assert record["files"] == [{"name": d, "domain": d, "records": 10, "label_counts": [1] * 10} for d in DOMAINS]
    source_bytes = sum(p.stat().st_size for p in Path(str(demo_tree)).rglob("*.png"))
    assert record["metrics"] == {"records": 40, "domains": 4, "classes": 10, "cartoon_records": 10,
                                 "painting_records": 10, "photo_records": 10, "sketch_records": 10,
                                 "bytes": source_bytes}

    # The files themselves, byte for byte, under a folder named by the index's hash; one output pins them.
    folder = project / "data" / "folders"
    index_text = (folder / "images.tsv").read_bytes()
    images_dir = "images-" + hashlib.sha256(index_text).hexdigest()[:16]
    assert record["images_dir"] == images_dir
    assert sorted(p.name for p in folder.iterdir()) == sorted(["images.tsv", images_dir])
    copies = sorted(p.relative_to(folder / images_dir) for p in (folder / images_dir).rglob("*.png"))
    originals = sorted(p.relative_to(demo_tree) for p in Path(str(demo_tree)).rglob("*.png"))
    assert copies == originals and len(copies) == 40
    for rel in originals:
        assert (folder / images_dir / rel).read_bytes() == (Path(str(demo_tree)) / rel).read_bytes()
    outputs = record["outputs"]
    assert sorted(outputs) == ["images_index"]
    assert outputs["images_index"]["path"] == "data/folders/images.tsv"
    assert outputs["images_index"]["sha256"] == hashlib.sha256(index_text).hexdigest()

    # The index: one row per file, its label, domain, size, sha256 and decoded size.
    rows = [line.split("\t") for line in index_text.decode().splitlines()]
    assert rows[0] == ["relpath", "label", "domain", "size", "mtime_ns", "sha256", "fingerprint", "height", "width"]
    assert sorted(r[0] for r in rows[1:]) == sorted(str(p) for p in originals)
    for rel, label, domain, size, _, digest, _, height, width in rows[1:]:
        path = Path(str(demo_tree)) / rel
        assert int(label) == CLASS_FOLDERS.index(path.parent.name)
        assert DOMAINS[int(domain)] == path.parent.parent.name
        assert int(size) == path.stat().st_size and digest == sha256(path)
        assert (int(height), int(width)) == (32, 32)
    # Listed in one seeded random order (not class by class), so a small shuffle buffer still mixes.
    assert [r[0] for r in rows[1:]] != sorted(r[0] for r in rows[1:])

    from mpltool.data.stage import read_split

    data = prepared(project)
    test_images, test_labels = read_split(data, "test", "cartoon")
    expected_images, expected_labels = expected_domain("cartoon")
    assert test_images.shape == (10, 32, 32, 3) and test_images.dtype == np.uint8
    # One image per class: in label order they are the generated ones, pixel for pixel.
    decoded = test_images[:]
    np.testing.assert_array_equal(decoded[np.argsort(test_labels)], expected_images)
    np.testing.assert_array_equal(np.sort(test_labels), expected_labels)

    train_images, train_labels = read_split(data, "train", "cartoon")
    assert train_images.shape == (30, 32, 32, 3)
    parts = [expected_domain(style) for style in ("painting", "photo", "sketch")]
    assert sorted(zip(train_labels.tolist(), map(bytes, train_images[:]))) == sorted(
        (int(l), bytes(i)) for p in parts for i, l in zip(*p))

    # Another target: the other three.
    train_images, _ = read_split(data, "train", "photo")
    parts = [expected_domain(style)[0] for style in ("cartoon", "painting", "sketch")]
    assert sorted(map(bytes, train_images[:])) == sorted(bytes(i) for p in parts for i in p)


def test_prepare_prints_the_domains_and_the_next_command(tmp_path, demo_tree):
    result = invoke("--project", tmp_path / "p", "data", "prepare", "--images", demo_tree, "--recipe", RECIPE_64)
    assert result.exit_code == 0, result.stderr
    assert "domains (40 images of 32x32 px, 10 classes)" in result.stdout
    for d in DOMAINS:
        assert d in result.stdout
    # masf-demo names its target domain, so the hint adds none; a recipe without one gets the last domain.
    assert "train --recipe masf-demo\n" in result.stdout and "target_domain" not in result.stdout
    payload = json.loads(invoke("--project", tmp_path / "q", "--json", "data", "prepare", "--images", demo_tree,
                                "--recipe", RECIPE_32).stdout)
    assert payload["domains"] == DOMAINS and payload["classes"] == CLASS_FOLDERS
    assert payload["decoded_size"] == {"min": [32, 32], "max": [32, 32]} and payload["records"] == 40


# -- 2. resizing -----------------------------------------------------------------------------------------

def test_48px_images_are_resized_to_the_recipes_64px_and_a_constant_colour_stays_constant(tmp_path):
    from mpltool.data.stage import read_split
    from mpltool.tfv1 import tf

    rng = np.random.RandomState(7)
    root = tmp_path / "src"
    constant = np.zeros((48, 48, 3), np.uint8) + np.array([200, 17, 90], np.uint8)
    for domain in ("d1", "d2"):
        write_image(root / domain / "cat" / "a.png", constant)
        write_image(root / domain / "cat" / "b.png", rng.randint(0, 256, (48, 48, 3)).astype(np.uint8))
        write_image(root / domain / "dog" / "a.png", np.full((48, 48, 1), 77, np.uint8))  # grayscale
        write_image(root / domain / "dog" / "b.jpg", rng.randint(0, 256, (48, 48, 3)).astype(np.uint8), "jpg")
    project = tmp_path / "proj"
    result = invoke("--project", project, "data", "prepare", "--images", root, "--recipe", RECIPE_64)
    assert result.exit_code == 0, result.stderr
    record = data_record(project)
    assert record["decoded_size"] == {"min": [48, 48], "max": [48, 48]}
    assert record["domains"] == ["d1", "d2"] and record["classes"] == ["cat", "dog"]
    assert [f["label_counts"] for f in record["files"]] == [[2, 2], [2, 2]]

    from mpltool.recipes import load_recipe

    recipe = load_recipe(RECIPE_64, ["target_domain=d2"])  # read at the recipe model's 64x64
    images, labels = read_split(prepared(project), "test", recipe)
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    order = np.argsort([p.rsplit("/", 2)[-2] + p.rsplit("/", 1)[-1] for p in images.paths.tolist()])
    images, labels = images[order], labels[order]  # cat/a, cat/b, dog/a, dog/b.jpg
    assert labels.tolist() == [0, 0, 1, 1]
    assert np.all(images[0] == np.array([200, 17, 90], np.uint8))  # cat/a.png: still that one colour
    assert np.all(images[2] == 77)  # dog/a.png: grayscale becomes three equal channels
    # The random and JPEG images are the 48x48 decode resized (not, say, cropped or padded).
    assert images[1].std() > 30 and images[3].std() > 30
    with tf.Graph().as_default(), tf.Session() as session:
        decoded = session.run(tf.image.decode_png(tf.constant((root / "d2" / "cat" / "b.png").read_bytes()),
                                                  channels=3))
    assert abs(float(images[1].mean()) - float(decoded.mean())) < 2.0


# -- 3. list files ---------------------------------------------------------------------------------------

PACS_CLASSES = ("dog", "elephant", "giraffe")


def _pacs_tree(root, domains=("art_painting", "photo"), per_class=2):
    """root/<domain>/<class>/<n>.png with distinct random 32x32 images; returns {relpath: image}."""
    rng = np.random.RandomState(11)
    images = {}
    for domain in domains:
        for name in PACS_CLASSES:
            for n in range(per_class):
                relpath = "{}/{}/{}.png".format(domain, name, n)
                images[relpath] = rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)
                write_image(root / relpath, images[relpath])
    return images


def _write_list(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_pacs_kfold_lists_labels_from_1_are_shifted_and_train_crossval_test_merge(tmp_path):
    from mpltool.data.stage import read_split

    root, lists = tmp_path / "pacs", tmp_path / "lists"
    images = _pacs_tree(root)
    for domain in ("art_painting", "photo"):
        # PACS: train and crossval split a domain; test lists every image of it again.
        _write_list(lists / "{}_train_kfold.txt".format(domain),
                    ["{}/{}/0.png {}".format(domain, c, k + 1) for k, c in enumerate(PACS_CLASSES)])
        _write_list(lists / "{}_crossval_kfold.txt".format(domain),
                    ["{}/{}/1.png {}".format(domain, c, k + 1) for k, c in enumerate(PACS_CLASSES)])
        _write_list(lists / "{}_test_kfold.txt".format(domain),
                    ["", "{}/{}/1.png {}".format(domain, PACS_CLASSES[0], 1)] +
                    ["{}/{}/{}.png {}".format(domain, c, n, k + 1)
                     for k, c in enumerate(PACS_CLASSES) for n in range(2)])
    project = tmp_path / "proj"
    result = invoke("--project", project, "data", "prepare", "--images", root, "--lists", lists,
                    "--recipe", RECIPE_32)
    assert result.exit_code == 0, result.stderr
    assert ("the list files' labels start at 1 (PACS's kfold lists): stored as label - 1, so 1..3 become 0..2"
            in result.stdout)
    record = data_record(project)
    assert record["params"]["lists"] == str(lists.absolute())
    assert record["domains"] == ["art_painting", "photo"]
    assert record["classes"] == list(PACS_CLASSES)  # named by the folder their files share
    assert record["files"] == [{"name": d, "domain": d, "records": 6, "label_counts": [2, 2, 2]}
                               for d in ("art_painting", "photo")]
    stored, labels = read_split(prepared(project), "test", "photo")
    order = np.argsort(stored.paths.astype(str))
    assert labels[order].tolist() == [0, 0, 1, 1, 2, 2]
    expected = np.stack([images["photo/{}/{}.png".format(c, n)] for c in PACS_CLASSES for n in range(2)])
    np.testing.assert_array_equal(stored[order], expected)


def test_zero_based_lists_stay_unchanged_and_unshared_folders_name_classes_by_label(tmp_path):
    from mpltool.data.stage import read_split

    root, lists = tmp_path / "m", tmp_path / "lists"
    rng = np.random.RandomState(5)
    images = {}
    for domain in ("mnist", "svhn"):
        lines = []
        for n in range(4):
            relpath = "{}/{}.png".format(domain, n)  # no class folders: every label shares the domain's
            images[relpath] = rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)
            write_image(root / relpath, images[relpath])
            lines.append("{} {}".format(relpath, n % 2))
        _write_list(lists / "{}.txt".format(domain), lines)
    project = tmp_path / "proj"
    result = invoke("--project", project, "data", "prepare", "--images", root, "--lists", lists,
                    "--recipe", RECIPE_32)
    assert result.exit_code == 0, result.stderr
    assert "start at 1" not in result.stdout
    record = data_record(project)
    assert record["domains"] == ["mnist", "svhn"]
    assert record["classes"] == ["class_0", "class_1"]
    assert [f["label_counts"] for f in record["files"]] == [[2, 2], [2, 2]]
    stored, labels = read_split(prepared(project), "test", "svhn")
    order = np.argsort(stored.paths.astype(str))  # svhn/0.png .. svhn/3.png
    assert labels[order].tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(stored[order], np.stack([images["svhn/{}.png".format(n)] for n in range(4)]))


@pytest.mark.parametrize("case, line, message", [
    ("no label", "photo/dog/0.png", "photo_train_kfold.txt line 2: expected 'relpath label', got 'photo/dog/0.png'"),
    ("three fields", "photo/dog/0.png 1 x", "photo_train_kfold.txt line 2: expected 'relpath label'"),
    ("label not a number", "photo/dog/0.png one", "photo_train_kfold.txt line 2: expected 'relpath label'"),
    ("missing image", "photo/dog/9.png 1", "photo_train_kfold.txt line 2: no image {root}/photo/dog/9.png"),
])
def test_a_bad_list_line_is_exit_3_naming_file_and_line(tmp_path, case, line, message):
    root, lists = tmp_path / "pacs", tmp_path / "lists"
    _pacs_tree(root)
    _write_list(lists / "photo_train_kfold.txt", ["photo/dog/1.png 1", line, "photo/elephant/0.png 2"])
    _write_list(lists / "art_painting_train_kfold.txt", ["art_painting/dog/0.png 1"])
    project = tmp_path / "proj"
    result = invoke("--project", project, "data", "prepare", "--images", root, "--lists", lists,
                    "--recipe", RECIPE_32)
    text = error_line(result, 3)
    assert message.format(root=root) in text
    assert str(lists / "photo_train_kfold.txt") in text
    assert data_record(project) is None


def test_list_files_without_any_line_are_invalid_input(tmp_path):
    root, lists = tmp_path / "pacs", tmp_path / "lists"
    _pacs_tree(root)
    _write_list(lists / "photo_train_kfold.txt", [""])
    result = invoke("--project", tmp_path / "proj", "data", "prepare", "--images", root, "--lists", lists,
                    "--recipe", RECIPE_32)
    error_line(result, 3)


def test_lists_without_images_is_a_usage_error(tmp_path):
    cifar = make_cifar_dir(tmp_path / "cifar", train_records=(10,) * 5, test_records=10)
    lists = tmp_path / "lists"
    _write_list(lists / "photo.txt", ["photo/a.png 0"])
    with_cifar = invoke("--project", tmp_path / "p", "data", "prepare", "--cifar", cifar, "--lists", lists)
    assert error_line(with_cifar, 2) == "error: --lists goes with --images (see `mpltool data prepare --help`)"
    alone = invoke("--project", tmp_path / "p", "data", "prepare", "--lists", lists)
    assert error_line(alone, 2) == "error: give exactly one of --cifar PATH, --images DIR and --tfrecord DIR (see `mpltool data prepare --help`)"
    with_shards = invoke("--project", tmp_path / "p", "data", "prepare", "--tfrecord", lists, "--lists", lists)
    assert error_line(with_shards, 2) == "error: --lists goes with --images (see `mpltool data prepare --help`)"
    shards_of_cifar = invoke("--project", tmp_path / "p", "data", "prepare", "--cifar", cifar, "--shards", "2")
    assert error_line(shards_of_cifar, 2) == ("error: --shards applies to --images (it writes the images as shards) "
                                              "(see `mpltool data prepare --help`)")
    assert data_record(tmp_path / "p") is None


def test_cifar_split_options_do_not_apply_to_images(tmp_path, demo_tree):
    result = invoke("--project", tmp_path / "p", "data", "prepare", "--images", demo_tree, "--labelled", "10",
                    "--seed", "3")
    assert error_line(result, 2).startswith("error: --labelled, --seed only apply to --cifar")


# -- 4. bad input: exit 3, one line naming the file, nothing recorded -------------------------------------

def _truncated_png(root):
    path = root / "photo" / "disc" / sorted(os.listdir(str(root / "photo" / "disc")))[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "image {} does not decode".format(path)


def _zero_byte(root):
    path = root / "sketch" / "star" / sorted(os.listdir(str(root / "sketch" / "star")))[0]
    path.write_bytes(b"")
    return path, "image {} is empty (0 bytes)".format(path)


def _missing_class(root):
    shutil.rmtree(str(root / "painting" / "ring"))
    return root, "domain painting has no class folder {} (every domain needs all 10 classes)".format(
        root / "painting" / "ring")


def _empty_class(root):
    for name in os.listdir(str(root / "cartoon" / "hash")):
        os.remove(str(root / "cartoon" / "hash" / name))
    return root, "class folder {} holds no .jpg/.jpeg/.png images".format(root / "cartoon" / "hash")


def _no_folder(root):
    missing = root.parent / "nope"
    return missing, "{} is not a folder of images".format(missing)


@pytest.mark.parametrize("breaks", [_truncated_png, _zero_byte, _missing_class, _empty_class, _no_folder],
                         ids=["truncated png", "zero-byte image", "class folder missing", "empty class folder",
                              "no such folder"])
def test_bad_trees_are_exit_3_and_record_nothing(tmp_path, tree_copy, domain_copy, breaks):
    given, message = breaks(tree_copy)
    source = given if breaks is _no_folder else tree_copy

    fresh = tmp_path / "fresh"
    result = invoke("--project", fresh, "data", "prepare", "--images", source, "--recipe", RECIPE_32)
    assert message in error_line(result, 3)
    assert data_record(fresh) is None
    assert not (fresh / "data").exists()

    manifest_before = (domain_copy / MANIFEST_NAME).read_bytes()
    files_before = tree_bytes(domain_copy / "data")
    again = invoke("--project", domain_copy, "data", "prepare", "--images", source, "--recipe", RECIPE_32, "--force")
    assert message in error_line(again, 3)
    assert (domain_copy / MANIFEST_NAME).read_bytes() == manifest_before
    assert tree_bytes(domain_copy / "data") == files_before
    assert sorted(p.name for p in domain_copy.iterdir()) == sorted([MANIFEST_NAME, "data"])


# -- 5. a tree without a domain level -------------------------------------------------------------------

@pytest.fixture
def flat_project(tmp_path, demo_tree):
    """The photo style alone, as a flat CLASS/*.png tree named `shapes`."""
    root = tmp_path / "shapes"
    shutil.copytree(str(demo_tree / "photo"), str(root))
    project = tmp_path / "proj"
    result = invoke("--project", project, "data", "prepare", "--images", root, "--recipe", RECIPE_32)
    assert result.exit_code == 0, result.stderr
    return project


def test_a_tree_without_a_domain_level_is_one_domain_named_after_the_folder(flat_project):
    record = data_record(flat_project)
    assert record["domains"] == ["shapes"] and record["classes"] == CLASS_FOLDERS
    assert record["files"] == [{"name": "shapes", "domain": "shapes", "records": 10, "label_counts": [1] * 10}]
    assert len(list((flat_project / "data" / "folders" / record["images_dir"]).rglob("*.png"))) == 10
    loaded = prepared(flat_project)
    images, labels, _ = loaded["source"].read_domains(loaded, ["shapes"])
    expected_images, expected_labels = expected_domain("photo")
    order = np.argsort(labels)  # one image per class
    np.testing.assert_array_equal(images[:][order], expected_images)
    np.testing.assert_array_equal(labels[order], expected_labels)

    before = (flat_project / MANIFEST_NAME).read_bytes()
    result = invoke("--project", flat_project, "train", "--recipe", RECIPE_32, "--set", "num_train_steps=1")
    line = error_line(result, 2)
    assert "the prepared images form one domain (shapes)" in line
    assert "two or more domains" in line
    assert (flat_project / MANIFEST_NAME).read_bytes() == before
    assert not (flat_project / "checkpoints").exists()


def test_one_domain_is_refused_even_when_named_as_the_target(flat_project):
    result = invoke("--project", flat_project, "train", "--recipe", RECIPE_32, "--set", "num_train_steps=1",
                    "--set", "target_domain=shapes")
    assert "two or more domains" in error_line(result, 2)


def test_the_one_domain_of_images_dot_is_named_after_the_folder(tmp_path, demo_tree, monkeypatch):
    root = tmp_path / "shapes"
    shutil.copytree(str(demo_tree / "photo"), str(root))
    monkeypatch.chdir(str(root))
    project = tmp_path / "proj"
    result = invoke("--project", project, "data", "prepare", "--images", ".", "--recipe", RECIPE_32)
    assert result.exit_code == 0, result.stderr
    assert data_record(project)["domains"] == ["shapes"]


# -- 6. training's checks of the held-out domain -------------------------------------------------------

@pytest.mark.parametrize("sets, code, expected", [
    ([], 2, "error: target_domain is not set: the prepared domains are cartoon, painting, photo, sketch "
            "(choose the held-out test domain with --set target_domain=sketch)"),
    (["target_domain=art"], 2, "error: unknown target_domain 'art': the prepared domains are cartoon, painting, "
                               "photo, sketch (choose the held-out test domain with --set target_domain=sketch)"),
    (["target_domain=cartoon", "select_best_on=valid"], 2,
     "error: select_best_on=valid but this run has no validation records (set domain_valid_fraction, or use "
     "select_best_on=test)"),
])
def test_train_refuses_a_missing_or_unknown_target_and_valid_without_holdout(domain_copy, sets, code, expected):
    before = (domain_copy / MANIFEST_NAME).read_bytes()
    args = [token for pair in ["num_train_steps=1"] + sets for token in ("--set", pair)]
    result = invoke("--project", domain_copy, "train", "--recipe", RECIPE_32, *args)
    assert error_line(result, code) == expected
    assert (domain_copy / MANIFEST_NAME).read_bytes() == before


def test_one_import_serves_models_of_any_input_size(domain_copy):
    """Imported once (32x32 files), read at 64x64 by a 64-px model: decoded and resized as they are read,
    exactly as the 64-px Decoder resizes each file."""
    from mpltool.data.folders import Decoder
    from mpltool.data.stage import training_data
    from mpltool.recipes import load_recipe

    data = training_data(prepared(domain_copy), load_recipe(RECIPE_64))
    assert data["train_images"].shape == (30, 64, 64, 3) and data["test_images"].shape == (10, 64, 64, 3)
    decoder = Decoder((64, 64))
    try:
        expected = np.stack([decoder(p) for p in data["test_images"].paths[:3]])
    finally:
        decoder.close()
    np.testing.assert_array_equal(data["test_images"][:3], expected)
    result = invoke("--project", domain_copy, "train", "--recipe", RECIPE_64, "--set", "num_train_steps=1")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("sets, expected", [
    (["target_domain=cartoon"], "error: target_domain=cartoon but the prepared data has no domains (CIFAR files)"),
    (["domain_valid_fraction=0.1"], "error: domain_valid_fraction applies to image-folder data"),
])
def test_train_on_cifar_data_refuses_domain_settings(prepared_copy, sets, expected):
    args = [token for pair in ["num_train_steps=1"] + sets for token in ("--set", pair)]
    result = invoke("--project", prepared_copy, "train", "--recipe", RECIPE_32, *args)
    assert error_line(result, 2).startswith(expected)


# -- 7. the per-domain validation hold-out --------------------------------------------------------------

def test_domain_holdout_counts_seeds_and_order():
    from mpltool.data.folders import domain_holdout

    ids = np.array([0] * 10 + [1] * 7 + [2] * 3, np.int64)
    for fraction, counts in [(0.3, [3, 2, 1]), (0.1, [1, 1, 1]), (0.5, [5, 4, 2]), (0.0, [0, 0, 0])]:
        chosen = domain_holdout(ids, fraction, seed=4)
        assert np.bincount(ids[chosen], minlength=3).tolist() == counts, fraction
        assert chosen.tolist() == sorted(set(chosen.tolist()))  # sorted, no repeats
    first = domain_holdout(ids, 0.3, seed=4)
    np.testing.assert_array_equal(first, domain_holdout(ids, 0.3, seed=4))
    assert not np.array_equal(first, domain_holdout(ids, 0.3, seed=5))
    # A domain's draw depends on the seed and that domain alone, not on the other domains.
    alone = domain_holdout(np.array([2] * 10, np.int64), 0.3, seed=4)
    np.testing.assert_array_equal(first[ids[first] == 0], domain_holdout(np.array([0] * 10, np.int64), 0.3, 4))
    assert alone.size == 3
    assert domain_holdout(np.zeros((0,), np.int64), 0.3, seed=4).tolist() == []


def test_training_data_holds_out_validation_records_of_each_source_domain(domain_project):
    from mpltool.data.folders import domain_holdout
    from mpltool.data.stage import read_split, training_data
    from mpltool.recipes import recipe_from_record

    def recipe(target, fraction=0.0, seed=0):
        return recipe_from_record({"algorithm": "supervised", "target_domain": target,
                                   "domain_valid_fraction": fraction, "split_seed": seed})

    data = prepared(domain_project)
    result = training_data(data, recipe("photo", 0.2, 3))
    assert result["source_domains"] == ["cartoon", "painting", "sketch"] and result["target_domain"] == "photo"
    assert np.bincount(result["train_domains"]).tolist() == [10, 10, 10]
    train_images = result["train_images"][:]
    for k, style in enumerate(("cartoon", "painting", "sketch")):  # each record's domain is its style's
        mine = result["train_domains"] == k
        assert sorted(map(bytes, train_images[mine])) == sorted(map(bytes, expected_domain(style)[0]))
    order = np.argsort(result["test_labels"])  # one image per class
    np.testing.assert_array_equal(result["test_images"][:][order], expected_domain("photo")[0])
    np.testing.assert_array_equal(result["test_labels"][order], expected_domain("photo")[1])

    valid = domain_holdout(result["train_domains"], 0.2, 3, result["source_domains"])
    assert np.bincount(result["train_domains"][valid], minlength=3).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(result["valid_images"][:], train_images[valid])
    np.testing.assert_array_equal(result["valid_labels"], result["train_labels"][valid])
    labelled = result["labelled_indices"]
    assert np.intersect1d(labelled, valid).size == 0
    assert sorted(labelled.tolist() + valid.tolist()) == list(range(30))
    np.testing.assert_array_equal(result["unlabelled_indices"], labelled)

    again = training_data(data, recipe("photo", 0.2, 3))
    np.testing.assert_array_equal(again["labelled_indices"], labelled)
    other = training_data(data, recipe("photo", 0.2, 4))
    assert not np.array_equal(other["labelled_indices"], labelled)
    none = training_data(data, recipe("photo"))
    assert none["labelled_indices"].tolist() == list(range(30)) and none["valid_images"].shape == (0, 32, 32, 3)

    train_images, _ = read_split(data, "train", "sketch")
    assert training_data(data, recipe("sketch"))["source_domains"] == ["cartoon", "painting", "photo"]
    assert train_images.shape[0] == 30


# -- 8. `data demo --domains` -----------------------------------------------------------------------------

def test_demo_domains_writes_four_styles_of_ten_classes_and_reruns_as_a_no_op(tmp_path):
    project, out = tmp_path / "proj", tmp_path / "demo"
    result = invoke("--project", project, "--json", "data", "demo", "--domains", "--out", out)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["domains"] == list(STYLES) and payload["recipe"] == "masf-demo"
    assert payload["next"].endswith("data prepare --images {} --recipe masf-demo".format(out.absolute()))
    assert sorted(p.name for p in out.iterdir()) == DOMAINS  # no scratch folder left behind
    for style in STYLES:
        assert sorted(p.name for p in (out / style).iterdir()) == CLASS_FOLDERS
        per_class = [len(list((out / style / c).glob("*.png"))) for c in CLASS_FOLDERS]
        assert per_class == [40] * 10, style  # 400 per style, balanced
    files = tree_bytes(out)
    assert len(files) == 1600 and len(payload["files"]) == 1600
    assert all(name.endswith(".png") for name in files)

    again = invoke("--project", project, "data", "demo", "--domains", "--out", out)
    assert again.exit_code == 0, again.stderr
    assert tree_bytes(out) == files

    changed = out / "sketch" / "ring" / sorted(os.listdir(str(out / "sketch" / "ring")))[0]
    changed.write_bytes(b"my own edit")
    refused = invoke("--project", project, "data", "demo", "--domains", "--out", out)
    line = error_line(refused, 2)
    assert line.startswith("error: refusing to overwrite {}".format(changed)) and "--force" in line
    assert changed.read_bytes() == b"my own edit"
    assert {k: v for k, v in tree_bytes(out).items() if k != str(changed.relative_to(out))} == {
        k: v for k, v in files.items() if k != str(changed.relative_to(out))}
    forced = invoke("--project", project, "data", "demo", "--domains", "--out", out, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert tree_bytes(out) == files


# -- 9. the test set of domain data before training -----------------------------------------------------

def test_no_test_set_before_training_names_the_target(domain_copy):
    from mpltool.data.stage import load_test_set
    from mpltool.errors import PrerequisiteError
    from mpltool.manifest import Project

    with pytest.raises(PrerequisiteError) as raised:
        load_test_set(Project(domain_copy))
    assert "held-out domain" in str(raised.value.message)
    assert "--set target_domain" in raised.value.hint

    before = (domain_copy / MANIFEST_NAME).read_bytes()
    line = error_line(invoke("--project", domain_copy, "eval"), 4)
    assert line == ("error: image-folder data has no test set until training names the held-out domain (run "
                    "`mpltool train --set target_domain=DOMAIN` first)")
    assert (domain_copy / MANIFEST_NAME).read_bytes() == before
