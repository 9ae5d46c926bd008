"""TFRecord shards as a source: `--tfrecord DIR` (the common image/encoded + image/class/label layout,
labels from 1 shifted, other accepted keys), `--images DIR --shards N`, a run on shards that equals a run
on the same images as files, batch for batch, and truncated or changed shards as exit 3 naming them,
with the manifest unchanged. Each rank opens only its own shards."""

import shutil

import numpy as np
import pytest
import yaml

from helpers import invoke, one_error_line
from mpltool.manifest import MANIFEST_NAME

RECIPE = "supervised-domains-demo"  # caffe-alexnet-64-512: 64x64, reads every source record
TWO_SPLITS = ["--set", "target_domain=test", "--set", "domain_valid_fraction=0", "--set", "select_best_on=test"]


def png(image):
    from mpltool.tfv1 import tf

    with tf.Graph().as_default(), tf.Session() as session:
        return session.run(tf.image.encode_png(tf.constant(image)))


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """DIR/train/<class>/*.png and DIR/test/<class>/*.png: 3 classes, random 40x40 images."""
    root = tmp_path_factory.mktemp("splits") / "src"
    rng = np.random.RandomState(5)
    for split, per_class in (("train", 8), ("test", 3)):
        for name in ("ant", "bee", "cow"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                (folder / "{}.png".format(k)).write_bytes(png(rng.randint(0, 256, (40, 40, 3)).astype(np.uint8)))
    return root


@pytest.fixture(scope="module")
def projects(tmp_path_factory, splits):
    base = tmp_path_factory.mktemp("two-sources")
    folder, sharded = base / "files", base / "shards"
    assert invoke("--project", folder, "data", "prepare", "--images", splits, "--recipe", RECIPE).exit_code == 0
    result = invoke("--project", sharded, "data", "prepare", "--images", splits, "--shards", "4", "--recipe", RECIPE)
    assert result.exit_code == 0, result.stderr
    return folder, sharded


def write_examples(path, examples):
    from mpltool.tfv1 import tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for features in examples:
            feature = {}
            for key, value in features.items():
                if isinstance(value, bytes):
                    feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
                else:
                    feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_shards_written_from_a_folder_are_recorded_counted_and_hashed(projects, splits):
    _, sharded = projects
    record = yaml.safe_load((sharded / MANIFEST_NAME).read_text())["stages"]["data"]
    assert record["source"] == "tfrecord" and record["format"] == "shards"
    assert record["domains"] == ["test", "train"] and record["classes"] == ["ant", "bee", "cow"]
    assert record["metrics"]["records"] == 33 and record["metrics"]["shards"] == 8
    assert sorted(record["outputs"]) == ["records_index", "shards_index"]
    folder = sharded / "data" / "tfrecord" / record["shards_dir"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["test-0000{}-of-00004.tfrecord".format(k) for k in range(4)] + [
        "train-0000{}-of-00004.tfrecord".format(k) for k in range(4)]
    rows = [line.split("\t") for line in (sharded / "data" / "tfrecord" / "shards.tsv").read_text().splitlines()]
    assert rows[0] == ["name", "domain", "records", "first_row", "size", "mtime_ns", "sha256"]
    import hashlib

    for name, domain, records, first, size, _, digest in rows[1:]:
        data = (folder / name).read_bytes()
        assert int(size) == len(data) and digest == hashlib.sha256(data).hexdigest()
    assert sum(int(r[2]) for r in rows[1:]) == 33 and [int(r[3]) for r in rows[1:3]] == [0, int(rows[1][2])]


def test_a_run_on_shards_equals_a_run_on_the_same_images_as_files_batch_for_batch(projects):
    """Same records in the same order, the same bytes decoded the same way: the training input pipeline
    (shuffled, repeated for 12 epochs) gives identical batches, and eval identical test images.

    Through an identity view: the augmenting views draw from stateful random ops inside a parallel map,
    so two runs even on one source differ in which record gets which draw (docs/data-at-scale.md)."""
    from mpltool.data.pipeline import Stream, TrainInput, View
    from mpltool.data.records import reader_of
    from mpltool.data.stage import load_prepared, training_data
    from mpltool.manifest import Project
    from mpltool.models import input_spec, normalize_input
    from mpltool.recipes import load_recipe
    from mpltool.tfv1 import tf

    recipe = load_recipe(RECIPE, [s for s in TWO_SPLITS if s != "--set"])
    as_is = View(("image",), lambda image, seed: (image,))
    pulled = []
    for project in projects:
        data = training_data(load_prepared(Project(project)), recipe)
        assert data["train_images"].shape == (24, 64, 64, 3) and data["test_images"].shape == (9, 64, 64, 3)
        with tf.Graph().as_default():
            spec = input_spec(recipe.model)
            pipeline = TrainInput([Stream("labelled", 72, as_is, "labels")],
                                  lambda images: normalize_input(images, spec), shuffle_buffer=8, seed=11,
                                  image_shape=data["train_images"].shape[1:], reader=reader_of(data["train_images"]))
            with tf.Session() as session:
                pipeline.initialize(session, data["train_images"], data["train_labels"], data["labelled_indices"])
                pulled.append([session.run(pipeline.batch) for _ in range(4)])  # 4 x 72 records: 12 epochs
        pulled[-1].append({"test": data["test_images"][:], "test_labels": data["test_labels"]})
    files, shards = pulled
    assert len(set(map(bytes, files[0]["image"]))) == 24  # every training image, shuffled
    for from_files, from_shards in zip(files, shards):
        assert sorted(from_files) == sorted(from_shards)
        for key in from_files:
            np.testing.assert_array_equal(from_files[key], from_shards[key])


def test_tfrecord_dir_with_labels_from_1_and_other_keys(tmp_path):
    rng = np.random.RandomState(1)
    shards = tmp_path / "in"
    shards.mkdir()
    images = [rng.randint(0, 256, (20, 30, 3)).astype(np.uint8) for _ in range(6)]
    write_examples(shards / "train-00000-of-00002", [{"image": png(images[k]), "label": 1 + k % 2} for k in (0, 1)])
    write_examples(shards / "train-00001-of-00002", [{"image": png(images[k]), "label": 1 + k % 2} for k in (2, 3)])
    write_examples(shards / "validation.tfrecord", [{"image": png(images[k]), "label": 1 + k % 2} for k in (4, 5)])
    (shards / "README.txt").write_text("not a shard")
    project = tmp_path / "p"
    result = invoke("--project", project, "data", "prepare", "--tfrecord", shards, "--recipe", RECIPE)
    assert result.exit_code == 0, result.stderr
    assert "the shards' labels start at 1 (as ImageNet's build script writes them): read as label - 1" in result.stdout
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["data"]
    assert record["domains"] == ["train", "validation"] and record["classes"] == ["class_0", "class_1"]
    assert record["keys"] == {"image": "image", "label": "label"} and record["label_offset"] == 1
    assert record["decoded_size"] == {"min": [20, 30], "max": [20, 30]}

    from mpltool.data.stage import read_split, load_prepared
    from mpltool.manifest import Project

    test_images, test_labels = read_split(load_prepared(Project(project)), "test", "validation")
    assert test_labels.tolist() == [0, 1]
    np.testing.assert_array_equal(test_images[:], np.stack(images[4:]))  # 20x30 as stored: no model named


@pytest.mark.parametrize("breaks, message", [
    ("truncate", "is truncated or corrupt after 1 records"),
    ("keys", "its records hold image/format but an image under image/encoded or image and an int64 label under "
             "image/class/label or label are needed"),
    ("jpeg", "record 1: its image does not decode"),
])
def test_bad_shards_are_exit_3_naming_them_and_record_nothing(tmp_path, breaks, message):
    shards = tmp_path / "in"
    shards.mkdir()
    good = png(np.zeros((8, 8, 3), np.uint8))
    examples = [{"image/encoded": good, "image/class/label": 0}, {"image/encoded": good, "image/class/label": 1}]
    if breaks == "keys":
        examples = [{"image/format": b"png"}]
    if breaks == "jpeg":
        examples[1]["image/encoded"] = b"\xff\xd8\xff\xe0 not a jpeg"
    path = shards / "train-00000-of-00001.tfrecord"
    write_examples(path, examples)
    if breaks == "truncate":
        path.write_bytes(path.read_bytes()[:-7])
    project = tmp_path / "p"
    line = one_error_line(invoke("--project", project, "data", "prepare", "--tfrecord", shards), 3)
    assert line.startswith("error: {}".format(path)) and message in line, line
    assert not (project / MANIFEST_NAME).exists() or "data" not in (
        yaml.safe_load((project / MANIFEST_NAME).read_text()).get("stages") or {})


def test_a_shard_truncated_after_prepare_stops_training_at_start_up(projects, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(str(projects[1]), str(project))
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["data"]
    shard = project / "data" / "tfrecord" / record["shards_dir"] / "train-00002-of-00004.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    before = (project / MANIFEST_NAME).read_bytes()
    line = one_error_line(invoke("--project", project, "train", "--recipe", RECIPE, *TWO_SPLITS,
                                 "--set", "num_train_steps=1"), 3)
    assert line.startswith("error: prepared data file data/tfrecord/{}/train-00002-of-00004.tfrecord changed since "
                           "`data prepare`".format(record["shards_dir"]))
    assert (project / MANIFEST_NAME).read_bytes() == before


def test_a_record_changed_in_place_is_caught_as_it_is_read(projects, tmp_path):
    import os

    project = tmp_path / "p"
    shutil.copytree(str(projects[1]), str(project))
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["data"]
    shard = project / "data" / "tfrecord" / record["shards_dir"] / "train-00001-of-00004.tfrecord"
    stat = os.stat(str(shard))
    data = bytearray(shard.read_bytes())
    data[40] ^= 0x01  # inside the first record's payload: TFRecord's CRC or mpltool's fingerprint
    shard.write_bytes(bytes(data))
    os.utime(str(shard), ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the start-up check cannot see it
    before = (project / MANIFEST_NAME).read_bytes()
    line = one_error_line(invoke("--project", project, "train", "--recipe", RECIPE, *TWO_SPLITS,
                                 "--set", "num_train_steps=1"), 3)
    assert "prepared data file" in line and ("truncated or corrupt" in line or str(shard) in line), line
    assert (project / MANIFEST_NAME).read_bytes() == before


def test_two_ranks_open_disjoint_shards(projects):
    from mpltool.data.records import rank_share
    from mpltool.data.stage import load_prepared, training_data
    from mpltool.manifest import Project
    from mpltool.recipes import load_recipe

    recipe = load_recipe(RECIPE, [s for s in TWO_SPLITS if s != "--set"])
    data = training_data(load_prepared(Project(projects[1])), recipe)
    images, labelled = data["train_images"], data["labelled_indices"]
    opened = []
    for rank in range(2):
        share = rank_share(images, labelled, rank, 2)
        opened.append(set(images.shard_of[images.rows[share]].tolist()))
    assert len(opened[0]) == len(opened[1]) == 2 and not opened[0] & opened[1]
    assert sorted(opened[0] | opened[1]) == sorted(set(images.shard_of[images.rows].tolist()))
    with pytest.raises(Exception, match="the 4 shards of these records cannot be shared by 8 ranks"):
        rank_share(images, labelled, 0, 8)
