"""MixMatch's weak view (flip, REFLECT pad 4, random crop) against numpy, and its wiring in TrainInput."""

import itertools

import numpy as np
import pytest

from helpers import dataset_samples
from mpltool.data.augment import ops
from mpltool.data import views
from mpltool.data.pipeline import Stream, TrainInput
from mpltool.models import input_spec, normalize_input
from mpltool.tfv1 import tf

pytestmark = pytest.mark.filterwarnings("ignore:Seed .* from outer graph:UserWarning")

GRAPH_SEED = 20240707  # of the `run` fixture's graph (conftest.py)
H = W = 32
PAD = 4
IMG = np.random.RandomState(21).randint(0, 256, (H, W, 3)).astype(np.uint8)
# 162 equally likely candidates: P(one is never drawn in N draws) <= 162 (1 - 1/162)^N, ~3e-9 for N = 4000.
DRAWS = 4000


def candidates(img, pad=PAD, mode="reflect", **kwargs):
    """{(flip, dy, dx): crop of np.pad(flip?(img))} -- libml/data.py augment_cifar10 written in numpy.

    tf.pad's REFLECT is numpy's mode="reflect": the edge pixel is not repeated."""
    out = {}
    for flip, dy, dx in itertools.product((False, True), range(2 * pad + 1), range(2 * pad + 1)):
        source = img[:, ::-1] if flip else img
        padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)), mode=mode, **kwargs)
        out[(flip, dy, dx)] = padded[dy:dy + img.shape[0], dx:dx + img.shape[1]]
    return out


def _draws(samples, table):
    by_bytes = {crop.tobytes(): key for key, crop in table.items()}
    assert len(by_bytes) == len(table)  # all distinct, so each sample names one draw
    found = [by_bytes.get(sample.tobytes()) for sample in samples]
    assert None not in found, "a sample is not flip + pad + crop of the input"
    return found


@pytest.mark.parametrize("fn", [
    lambda x: ops.flip_pad_crop(x, pad=PAD, seed=3, reflect=True),
    lambda x: views.weak_view(x, seed=5),
    lambda x: views.weak_view(x),
], ids=["flip_pad_crop-reflect", "weak_view-seeded", "weak_view-unseeded"])
def test_weak_view_is_one_of_the_162_reflect_crops_and_hits_them_all(run, fn):
    """MixMatch's accuracy is reported with mirrored borders, not grey ones: every output must be exactly a
    reference candidate, and every flip and offset must occur (a biased or off-by-one draw would not)."""
    samples = run(lambda: dataset_samples(fn, IMG, DRAWS))
    assert samples.shape == (DRAWS, H, W, 3) and samples.dtype == np.uint8
    found = _draws(samples, candidates(IMG))
    assert len(set(found)) == 2 * (2 * PAD + 1) ** 2


def test_reflect_is_not_edge_or_symmetric_padding():
    """The numpy candidates themselves: tf.pad REFLECT (edge not repeated) is numpy's "reflect", and it
    differs from "symmetric" (edge repeated), so the test above tells the two apart."""
    with tf.Graph().as_default(), tf.Session() as session:
        padded = session.run(tf.pad(tf.constant(IMG), [[PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT"))
    assert np.array_equal(padded, np.pad(IMG, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect"))
    assert not np.array_equal(padded, np.pad(IMG, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="symmetric"))


def test_reflect_false_keeps_the_fill_128(run):
    """The MPL views still pad with the constant 128: reflect must be opt-in."""
    samples = run(lambda: dataset_samples(lambda x: ops.flip_pad_crop(x, pad=PAD, seed=9), IMG, 400))
    found = _draws(samples, candidates(IMG, mode="constant", constant_values=128))
    assert len(set(found)) > 100
    shifted = [key for key in found if key[1] != PAD or key[2] != PAD]
    assert shifted  # some samples really carry a border of 128s
    key = shifted[0]
    assert not np.array_equal(candidates(IMG)[key], candidates(IMG, mode="constant", constant_values=128)[key])


# ----------------------------------------------------------------------------------------- TrainInput

SPEC = input_spec("mixmatch-resnet-32-3-4")
BATCH = 4
RATIO = 2


def unnormalise(x):
    scale = float(SPEC.value_range[1])
    return np.rint(x * np.array(SPEC.std) * scale + np.array(SPEC.mean) * scale).astype(np.int64)


@pytest.fixture(scope="module")
def weak_input():
    """(random-image batches, index-image batches, the unlabelled indices) from MixMatch's streams: B labelled
    images in one weak view, RATIO·B unlabelled ones in two."""
    rng = np.random.RandomState(4)
    count = 40
    random_images = rng.randint(0, 256, (count, H, W, 3)).astype(np.uint8)
    index_images = np.stack([np.full((H, W, 3), i, np.uint8) for i in range(count)])
    labels = np.arange(count) % 10
    labelled = np.array([0, 1, 2, 3], np.int64)
    unlabelled = np.array([5, 9, 14, 22, 27, 33, 38], np.int64)
    with tf.Graph().as_default():
        streams = [Stream("labelled", BATCH, views.weak(), labels=views.LABELS),
                   Stream("unlabelled", BATCH * RATIO, views.weak_views(2))]
        source = TrainInput(streams, lambda x: normalize_input(x, SPEC), shuffle_buffer=16, seed=7)
        batch = source.batch
        pair = batch["views"]
        static = [tuple(v.shape.as_list()) for v in pair] if isinstance(pair, tuple) else None
        fetch = {"labelled": batch["labelled"], "views": pair}
        with tf.Session() as session:
            source.initialize(session, random_images, labels, labelled)
            random_batches = [session.run(fetch) for _ in range(4)]
            source.initialize(session, index_images, labels, labelled, unlabelled_indices=unlabelled)
            index_batches = [session.run(fetch) for _ in range(6)]
    return {"batch": batch, "static": static, "random": random_batches, "index": index_batches,
            "unlabelled": unlabelled}


def test_weak_views_are_two_float_tensors_in_minus_one_to_one(weak_input):
    """MixMatch's network takes [-1, 1] inputs and guesses labels from K = 2 views of each unlabelled image."""
    pair = weak_input["batch"]["views"]
    assert sorted(weak_input["batch"]) == ["labelled", "labels", "views"]  # no ori/aug pair
    assert isinstance(pair, tuple) and len(pair) == 2
    assert all(v.dtype == tf.float32 for v in pair)
    assert weak_input["static"] == [(BATCH * RATIO, H, W, 3)] * 2
    for batch in weak_input["random"]:
        assert len(batch["views"]) == 2
        for view in batch["views"]:
            assert view.shape == (BATCH * RATIO, H, W, 3) and view.dtype == np.float32
            assert view.min() >= -1.0 and view.max() <= 1.0
        assert batch["labelled"].min() >= -1.0 and batch["labelled"].max() <= 1.0


def test_the_two_views_of_an_image_are_independent_draws(weak_input):
    """Averaging K predictions is pointless if the K views are the same crop. Independent draws coincide
    with probability 1/162, so nearly every pair must differ."""
    differ = 0
    total = 0
    for batch in weak_input["random"]:
        first, second = batch["views"]
        for a, b in zip(first, second):
            total += 1
            differ += int(not np.array_equal(a, b))
    assert differ >= total - 4 and differ > 0


def test_unlabelled_views_only_show_the_split_s_unlabelled_records(weak_input):
    """With a round-robin split the labelled (and validation) records must not enter the unlabelled
    stream: every pixel of every weak view comes from an image listed in unlabelled_indices."""
    allowed = set(weak_input["unlabelled"].tolist())
    seen = set()
    for batch in weak_input["index"]:
        for view in batch["views"]:
            for image in unnormalise(view):
                values = set(np.unique(image).tolist())
                assert len(values) == 1 and values <= allowed  # reflect padding: no fill value appears
                seen |= values
    assert len(seen) >= 5
