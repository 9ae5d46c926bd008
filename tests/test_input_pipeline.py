"""The tf.data input of an MPL step: batch shapes, dtypes, value ranges, and which records feed which view."""

import numpy as np
import pytest

from mpltool.algorithms import get_algorithm
from mpltool.data.pipeline import TrainInput
from mpltool.models import CIFAR_MEAN, CIFAR_STD, input_spec, normalize_input
from mpltool.recipes import load_recipe
from mpltool.tfv1 import tf


def denormalise(x):
    return np.rint(x * 255.0 * np.array(CIFAR_STD) + 255.0 * np.array(CIFAR_MEAN))


@pytest.fixture(scope="module")
def batches():
    # Image i is the constant value 10 + i: after flip/pad/crop a pixel is either that value or the fill 128.
    count = 40
    images = np.stack([np.full((32, 32, 3), 10 + i, np.uint8) for i in range(count)])
    labels = np.arange(count) % 10
    labelled = np.array([3, 5, 7, 11], dtype=np.int64)
    with tf.Graph().as_default():
        recipe = load_recipe("mpl-demo", ["batch_size=4", "unlabelled_ratio=3", "augment_magnitude=16",
                                          "augment_layers=2"])
        spec = input_spec("wrn-28-2")
        source = TrainInput(get_algorithm("mpl").streams(recipe), lambda x: normalize_input(x, spec),
                            shuffle_buffer=16, seed=1)
        assert sorted(source.batch) == ["aug", "labelled", "labels", "ori"]
        with tf.Session() as session:
            source.initialize(session, images, labels, labelled)
            out = [session.run(source.batch) for _ in range(5)]
    return out, labelled


def test_shapes_and_dtypes(batches):
    out, _ = batches
    for batch in out:
        assert batch["labelled"].shape == (4, 32, 32, 3) and batch["labelled"].dtype == np.float32
        assert batch["labels"].shape == (4,) and batch["labels"].dtype == np.int64
        assert batch["ori"].shape == (12, 32, 32, 3) and batch["aug"].shape == (12, 32, 32, 3)
        assert batch["ori"].dtype == batch["aug"].dtype == np.float32


def test_values_are_normalised_pixels_in_range(batches):
    out, _ = batches
    low = (0 - 255 * np.array(CIFAR_MEAN)) / (255 * np.array(CIFAR_STD))
    high = (255 - 255 * np.array(CIFAR_MEAN)) / (255 * np.array(CIFAR_STD))
    for batch in out:
        for view in (batch["labelled"], batch["ori"], batch["aug"]):
            assert np.all(view >= low - 1e-5) and np.all(view <= high + 1e-5)


def test_labelled_view_uses_only_the_split_with_its_labels_and_fill_128(batches):
    out, labelled = batches
    allowed = set(int(10 + i) for i in labelled)
    for batch in out:
        pixels = denormalise(batch["labelled"])
        for image, label in zip(pixels, batch["labels"]):
            values = set(np.unique(image).astype(int)) - {128}
            assert len(values) == 1 and values <= allowed  # one source image, padded with 128
            assert (values.pop() - 10) % 10 == label


def test_ori_view_draws_from_all_training_images(batches):
    out, _ = batches
    seen = set()
    for batch in out:
        for image in denormalise(batch["ori"]):
            values = set(np.unique(image).astype(int)) - {128}
            assert len(values) == 1
            seen |= values
    assert len(seen - set(range(10, 50))) == 0 and len(seen) > 8  # beyond the 4 labelled records
