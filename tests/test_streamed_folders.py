"""Image folders are streamed from their files: every file is checked at start-up (size, and its sha256
when its mtime moved) and verified against its recorded fingerprint as it is read. A file that changed
after `data prepare`, or a JPEG that never decoded, is exit 3 naming it; the manifest is left as it was.
Each rank of a data-parallel run reads its own files."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import invoke, one_error_line
from mpltool.manifest import MANIFEST_NAME

def as_is():
    from mpltool.data.pipeline import View

    return View(("image",), lambda image, seed: (image,))

RECIPE = "supervised-domains-demo"  # caffe-alexnet-64-512, target cartoon: 64x64 from 32x32 files
FEW_STEPS = ["--set", "num_train_steps=2", "--set", "eval_every=2", "--set", "save_every=2", "--set", "log_every=1"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The multi-domain demo (10 PNGs a style) and a project that imported it."""
    from mpltool.data.domains import write_domain_demo

    base = tmp_path_factory.mktemp("streamed")
    write_domain_demo(base / "src", per_domain=10)
    assert invoke("--project", base / "p", "data", "prepare", "--images", base / "src",
                  "--recipe", RECIPE).exit_code == 0
    return base / "src"


@pytest.fixture(scope="module")
def prepared_project(source):
    return source.parent / "p"


@pytest.fixture
def project(prepared_project, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(str(prepared_project), str(copy))  # copytree keeps mtimes (copy2)
    return copy


def stored_file(project, rel):
    record = yaml.safe_load((project / MANIFEST_NAME).read_text())["stages"]["data"]
    return project / "data" / "folders" / record["images_dir"] / rel


def flip_a_byte_keeping_size_and_mtime(path):
    stat = os.stat(str(path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(str(path), ns=(stat.st_atime_ns, stat.st_mtime_ns))


def a_source_file(source):
    return sorted(p.relative_to(source) for p in (source / "photo").rglob("*.png"))[0]


def test_a_file_whose_size_changed_after_prepare_stops_training_at_start_up(project, source):
    rel = a_source_file(source)
    path = stored_file(project, rel)
    with open(str(path), "ab") as handle:
        handle.write(b"\0")
    before = (project / MANIFEST_NAME).read_bytes()
    line = one_error_line(invoke("--project", project, "train", "--recipe", RECIPE, *FEW_STEPS), 3)
    assert line.startswith("error: prepared data file data/folders/images-")
    assert "/{} changed since `data prepare`: {} bytes, recorded {}".format(
        rel.as_posix(), path.stat().st_size, path.stat().st_size - 1) in line
    assert (project / MANIFEST_NAME).read_bytes() == before
    assert not (project / "checkpoints").exists()


def test_a_file_changed_in_place_keeping_size_and_mtime_is_caught_as_it_is_read(project, source):
    """The start-up check passes (same size, same mtime); the fingerprint of the bytes read does not."""
    rel = a_source_file(source)
    path = stored_file(project, rel)
    flip_a_byte_keeping_size_and_mtime(path)
    before = (project / MANIFEST_NAME).read_bytes()
    line = one_error_line(invoke("--project", project, "train", "--recipe", RECIPE, *FEW_STEPS), 3)
    assert line == ("error: {} changed since `data prepare` (its content fingerprint differs); not training on it "
                    "(restore the original file, or re-import the data with `mpltool data prepare ... --force`)"
                    .format(path))
    assert (project / MANIFEST_NAME).read_bytes() == before


def test_a_touched_file_is_rehashed_and_a_changed_one_with_a_new_mtime_is_refused(project, source):
    from mpltool.data.stage import load_prepared, training_data
    from mpltool.errors import InvalidInputError
    from mpltool.manifest import Project
    from mpltool.recipes import load_recipe

    rel = a_source_file(source)
    path = stored_file(project, rel)
    os.utime(str(path), ns=(0, 10 ** 9))  # a checkout or a copy: same bytes, another mtime
    data = training_data(load_prepared(Project(project)), load_recipe(RECIPE))
    assert data["train_images"].shape == (30, 64, 64, 3)  # photo, painting, sketch at the model's 64x64

    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="{} changed since `data prepare` \\(its sha256 differs\\)".format(
            rel.as_posix())):
        training_data(load_prepared(Project(project)), load_recipe(RECIPE))


def test_eval_reads_the_test_domain_verified(project, source):
    assert invoke("--project", project, "train", "--recipe", RECIPE, *FEW_STEPS).exit_code == 0
    cartoon = sorted(p.relative_to(source) for p in (source / "cartoon").rglob("*.png"))[0]
    flip_a_byte_keeping_size_and_mtime(stored_file(project, cartoon))
    before = (project / MANIFEST_NAME).read_bytes()
    line = one_error_line(invoke("--project", project, "eval"), 3)
    assert line.startswith("error: {} changed since `data prepare`".format(stored_file(project, cartoon)))
    assert (project / MANIFEST_NAME).read_bytes() == before


def test_a_corrupt_jpeg_is_exit_3_naming_it_and_nothing_is_recorded(tmp_path, source, prepared_project):
    root = tmp_path / "src"
    shutil.copytree(str(source), str(root))
    bad = root / "photo" / "disc" / "truncated.jpg"
    good = next((root / "photo" / "disc").glob("*.png"))
    from mpltool.tfv1 import tf

    with tf.Graph().as_default(), tf.Session() as session:
        jpeg = session.run(tf.image.encode_jpeg(tf.image.decode_png(good.read_bytes(), channels=3)))
    bad.write_bytes(jpeg[: len(jpeg) // 2])  # cut mid-scan: the decoder fails
    project = tmp_path / "p"
    shutil.copytree(str(prepared_project), str(project))
    before = (project / MANIFEST_NAME).read_bytes()
    files_before = sorted(str(p.relative_to(project)) for p in (project / "data").rglob("*"))
    line = one_error_line(invoke("--project", project, "data", "prepare", "--images", root, "--recipe", RECIPE,
                                 "--force"), 3)
    assert line.startswith("error: image {} does not decode: ".format(bad))
    assert (project / MANIFEST_NAME).read_bytes() == before
    assert sorted(str(p.relative_to(project)) for p in (project / "data").rglob("*")) == files_before


def test_two_ranks_read_disjoint_files_that_together_are_the_training_set(prepared_project):
    """What each rank's input pipeline is fed: its own files, never the others'."""
    from mpltool.data.pipeline import Stream, TrainInput
    from mpltool.data.records import rank_share, reader_of
    from mpltool.data.stage import load_prepared, training_data
    from mpltool.manifest import Project
    from mpltool.recipes import load_recipe
    from mpltool.tfv1 import tf

    data = training_data(load_prepared(Project(prepared_project)), load_recipe(RECIPE))
    images, labelled = data["train_images"], data["labelled_indices"]
    fed = []
    for rank in range(2):
        share = rank_share(images, labelled, rank, 2)
        with tf.Graph().as_default():
            pipeline = TrainInput([Stream("labelled", 2, as_is(), "labels")], lambda x: tf.cast(x, tf.float32),
                                  image_shape=images.shape[1:], reader=reader_of(images))
            handles, _ = pipeline._placeholders[("labelled", None)]
            feed = pipeline.reader.feed(handles, images, share)
            fed.append(set(feed[handles[0]].tolist()))
    assert fed[0] and fed[1] and not fed[0] & fed[1]
    assert fed[0] | fed[1] == set(images.relpaths[labelled].tolist())  # relative to the images' folder
    assert all((Path(images.root) / p.decode()).is_file() for p in fed[0] | fed[1])


def test_a_streamed_batch_is_the_files_decoded_at_the_models_size(prepared_project):
    """The training pipeline decodes and resizes exactly as eval's lazy reader (one decode for both)."""
    from mpltool.data.pipeline import Stream, TrainInput
    from mpltool.data.records import reader_of
    from mpltool.data.stage import load_prepared, training_data
    from mpltool.manifest import Project
    from mpltool.recipes import load_recipe
    from mpltool.tfv1 import tf

    data = training_data(load_prepared(Project(prepared_project)), load_recipe(RECIPE))
    images, labels = data["train_images"], data["train_labels"]
    with tf.Graph().as_default():
        pipeline = TrainInput([Stream("labelled", 30, as_is(), "labels")], lambda x: tf.cast(x, tf.float32),
                              image_shape=images.shape[1:], reader=reader_of(images), shuffle_buffer=1, seed=3)
        with tf.Session() as session:
            pipeline.initialize(session, images, labels, np.arange(30))
            batch = session.run(pipeline.batch)
    np.testing.assert_array_equal(batch["image"], images[:].astype(np.float32))  # buffer 1: in order
    np.testing.assert_array_equal(batch["labels"], labels)
