import collections
import hashlib
import os

import numpy as np
import pytest

from mpltool.data import cifar, demo
from mpltool.errors import UsageError

FILE_NAMES = cifar.TRAIN_FILES + (cifar.TEST_FILE, cifar.META_FILE)


def _hashes(paths):
    result = {}
    for path in paths:
        with open(path, "rb") as handle:
            result[os.path.basename(path)] = hashlib.sha256(handle.read()).hexdigest()
    return result


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """The learnability data: 5 x 200 training and 500 test images (a sixth of the default size)."""
    return demo.write_demo(str(tmp_path_factory.mktemp("demo")), train_per_file=200, test_records=500, seed=0)


def test_same_arguments_give_the_same_bytes(tmp_path):
    first = demo.write_demo(tmp_path / "one", train_per_file=30, test_records=40, seed=7)
    second = demo.write_demo(tmp_path / "two", train_per_file=30, test_records=40, seed=7)
    assert [os.path.basename(p) for p in first] == list(FILE_NAMES)
    assert _hashes(first) == _hashes(second)
    other_seed = _hashes(demo.write_demo(tmp_path / "three", train_per_file=30, test_records=40, seed=8))
    for name in FILE_NAMES[:-1]:
        assert other_seed[name] != _hashes(first)[name]
    assert len(set(_hashes(first)[name] for name in FILE_NAMES)) == len(FILE_NAMES)  # files all differ


def test_test_file_does_not_depend_on_the_training_size(tmp_path):
    small = _hashes(demo.write_demo(tmp_path / "small", train_per_file=20, test_records=40))
    large = _hashes(demo.write_demo(tmp_path / "large", train_per_file=50, test_records=40))
    assert small["test_batch.bin"] == large["test_batch.bin"]
    assert small["data_batch_1.bin"] != large["data_batch_1.bin"]


def test_files_are_valid_balanced_and_shuffled(tmp_path):
    paths = demo.write_demo(tmp_path, train_per_file=30, test_records=50, seed=1)
    for path, records in zip(paths, [30] * 5 + [50]):
        info = cifar.inspect_file(path)
        assert info["records"] == records
        assert info["label_counts"] == [records // 10] * 10
        _, labels = cifar.read_images([path])
        assert not np.array_equal(labels, np.sort(labels))
        assert not np.array_equal(labels, np.arange(records) % 10)
    assert cifar.read_class_names(tmp_path) == list(demo.DEMO_CLASSES)
    imported = cifar.import_cifar(tmp_path, tmp_path / "imported")
    assert [info["records"] for info in imported] == [30] * 5 + [50]


def test_uneven_counts_stay_within_one_of_balanced(tmp_path):
    paths = demo.write_demo(tmp_path, train_per_file=23, test_records=7)
    assert cifar.inspect_file(paths[0])["label_counts"] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert cifar.inspect_file(paths[5])["label_counts"] == [1] * 7 + [0] * 3


def test_every_colour_and_every_shape_belongs_to_exactly_two_classes():
    assert len(demo.DEMO_CLASSES) == cifar.NUM_CLASSES == len(set(demo.DEMO_CLASSES))
    colours = collections.Counter(colour for colour, _ in demo.DEMO_CLASS_PAIRS)
    shapes = collections.Counter(shape for _, shape in demo.DEMO_CLASS_PAIRS)
    assert set(colours.values()) == {2} and set(shapes.values()) == {2}


def test_shape_pixels_carry_the_class_colour():
    images, labels = demo.make_demo_images(200, seed=3)
    # The 40 most saturated pixels of an image are mostly the shape's (backgrounds are muted); the
    # palette colour nearest in chroma to their mean must be the class colour.
    palette = np.array([demo.COLOURS[c] for c, _ in demo.DEMO_CLASS_PAIRS], np.float64)
    pixels = images.reshape(200, -1, 3).astype(np.float64)
    saturation = pixels.max(-1) - pixels.min(-1)
    top = np.argsort(-saturation, axis=1)[:, :40]
    mean_colour = np.take_along_axis(pixels, top[..., None], axis=1).mean(1)
    chroma, palette_chroma = [v - v.mean(-1, keepdims=True) for v in (mean_colour, palette)]
    cosine = (chroma @ palette_chroma.T) / np.outer(np.linalg.norm(chroma, axis=1),
                                                    np.linalg.norm(palette_chroma, axis=1))
    nearest_colour = palette[cosine.argmax(1)]
    assert (nearest_colour == palette[labels]).all(axis=1).mean() > 0.8


@pytest.mark.parametrize("kwargs, pattern", [
    ({"train_per_file": 0}, "train_per_file must be at least 1, got 0"),
    ({"test_records": -5}, "test_records must be at least 1, got -5"),
    ({"seed": -1}, "seed must be 0 or more, got -1"),
])
def test_bad_arguments(tmp_path, kwargs, pattern):
    with pytest.raises(UsageError, match=pattern):
        demo.write_demo(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# --- learnability, measured with numpy only ----------------------------------------------------------------

_ROWS, _COLS = np.mgrid[0:32, 0:32] / 31.0


def _channel_histograms(images, weights):
    """Per-channel 8-bin colour histograms, each pixel counted with its weight: [N, 24]."""
    count = images.shape[0]
    bins = images.astype(np.int64) // 32
    flat_weights = weights.reshape(count, -1)
    histograms = np.zeros((count, 3, 8))
    for channel in range(3):
        index = np.arange(count)[:, None] * 8 + bins[..., channel].reshape(count, -1)
        histograms[:, channel] = np.bincount(index.ravel(), weights=flat_weights.ravel(),
                                             minlength=count * 8).reshape(count, 8)
    return histograms.reshape(count, -1)


def _global_features(images):
    return _channel_histograms(images, np.full(images.shape[:3], 1.0 / 1024))


def _foreground_features(images):
    """Colour histograms of the pixels far from the image's median colour, plus rotation-invariant
    moments of that region (area, spread relative to area, elongation)."""
    pixels = images.astype(np.float64)
    count = images.shape[0]
    median = np.median(pixels.reshape(count, -1, 3), axis=1)[:, None, None, :]
    distance = np.sqrt(((pixels - median) ** 2).sum(-1))
    mask = distance > 0.5 * distance.reshape(count, -1).max(1)[:, None, None]
    weights = mask / mask.sum(axis=(1, 2), keepdims=True)
    mean_row = (weights * _ROWS).sum((1, 2))[:, None, None]
    mean_col = (weights * _COLS).sum((1, 2))[:, None, None]
    drow, dcol = _ROWS - mean_row, _COLS - mean_col
    var_row, var_col = (weights * drow ** 2).sum((1, 2)), (weights * dcol ** 2).sum((1, 2))
    cov = (weights * drow * dcol).sum((1, 2))
    area = mask.mean((1, 2))
    spread = (var_row + var_col) / area
    elongation = np.sqrt((var_row - var_col) ** 2 + 4 * cov ** 2) / (var_row + var_col)
    return np.concatenate([_channel_histograms(images, weights), np.stack([area, spread, elongation], 1)], 1)


def _nearest_class_mean_accuracy(train_features, train_labels, test_features, test_labels):
    mean, std = train_features.mean(0), train_features.std(0) + 1e-9
    train_features, test_features = (train_features - mean) / std, (test_features - mean) / std
    centroids = np.stack([train_features[train_labels == c].mean(0) for c in range(10)])
    distances = ((test_features[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((distances.argmin(1) == test_labels).mean())


def test_simple_features_learn_it_but_whole_image_colour_does_not(small_demo):
    train_images, train_labels = cifar.read_images(small_demo[:5])
    test_images, test_labels = cifar.read_images([small_demo[5]])
    # Measured 0.61-0.67 for seeds 0-3: well above chance, far from a lookup.
    foreground = _nearest_class_mean_accuracy(_foreground_features(train_images), train_labels,
                                              _foreground_features(test_images), test_labels)
    assert 0.45 < foreground < 0.9
    # Measured 0.17-0.22: colour statistics of the whole image are swamped by the random backgrounds.
    whole_image = _nearest_class_mean_accuracy(_global_features(train_images), train_labels,
                                               _global_features(test_images), test_labels)
    assert whole_image < 0.32
    # Foreground colour alone can only tell the five colours apart (each shared by two classes).
    colour_only = _nearest_class_mean_accuracy(_foreground_features(train_images)[:, :24], train_labels,
                                               _foreground_features(test_images)[:, :24], test_labels)
    assert colour_only < 0.6 and foreground > colour_only + 0.05
