"""What an audit of MixMatch and AutoAugment against their references found, each now a recipe key whose
default is mpltool's earlier behaviour: the labelled shuffle buffer capped at the records (MixMatch's
memoize), tensorflow/models' good_policies() beside the paper's 25, one crop for AutoAugment's unlabelled
view, and the CIFAR-mean fill."""

import types

import numpy as np
import pytest
from helpers import dataset_samples, run_once as _run

from mpltool.data import views
from mpltool.data.augment import autoaugment as aa
from mpltool.data.augment import ops
from mpltool.tfv1 import tf

IMG = np.random.RandomState(3).randint(0, 256, (32, 32, 3)).astype(np.uint8)
IDENTITY = ((("Invert", 0.0, 0), ("Invert", 0.0, 0)),)



# ------------------------------------------------------------------------------- 1. the shuffle buffer


@pytest.mark.parametrize("cap, records, want", [(True, 250, 250), (True, 10000, 8192), (False, 250, 8192)])
def test_the_shuffle_buffer_is_min_of_records_and_the_buffer_when_capped(cap, records, want):
    """libml/data.py memoize: shuffle(len(data) if len(data) < FLAGS.shuffle else FLAGS.shuffle)."""
    from mpltool.data.pipeline import Stream, TrainInput

    with tf.Graph().as_default() as graph:
        pipeline = TrainInput([Stream("labelled", 4, views.flip_crop(), labels=views.LABELS)],
                              lambda x: tf.cast(x, tf.float32), shuffle_buffer=8192, seed=1, image_shape=(8, 8, 3),
                              cap_shuffle_buffer=cap)
        shuffles = [op for op in graph.get_operations() if op.type.startswith("ShuffleDataset")]
        assert len(shuffles) == 1
        images = np.zeros((records, 8, 8, 3), np.uint8)
        labels = np.arange(records) % 10
        with tf.Session() as session:
            feed = {}
            (handles, label_ph), = pipeline._placeholders.values()
            feed.update(pipeline.reader.feed(handles, images, np.arange(records)))
            feed[label_ph] = labels
            assert session.run(shuffles[0].inputs[1], feed) == want
            pipeline.initialize(session, images, labels, np.arange(records))
            assert session.run(pipeline.batch["labels"]).shape == (4,)


def test_the_mixmatch_seed_recipe_caps_and_the_default_does_not():
    from mpltool.recipes import load_recipe

    assert load_recipe("mixmatch-cifar10-250").shuffle_buffer_cap == "records"
    assert load_recipe("mixmatch-demo").shuffle_buffer_cap == "none"


# ------------------------------------------------------------------------------- 2. which sub-policies


def test_tfm_good_policies_are_95_and_hold_20_of_the_papers_25():
    good = aa.TFM_GOOD_POLICIES
    assert len(good) == 95 and len(set(good)) == 94
    assert good.count((("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9))) == 2  # exp0_2 lists it twice
    paper = aa.CIFAR10_POLICY
    inside = [k for k, sub in enumerate(paper) if sub in good]
    assert inside == list(range(15)) + list(range(20, 25))  # rows 16-20 are the paper's own
    # rows 1-15 are exp0_0, exp1_0, exp2_0 (file positions 0-4, 20-24, 55-59); 21-25 are exp0_1 (5-9)
    assert list(paper[:5]) == list(good[0:5]) and list(paper[5:10]) == list(good[20:25])
    assert list(paper[10:15]) == list(good[55:60]) and list(paper[20:25]) == list(good[5:10])
    assert good[60][1] == ("Brightness", 0.0, 0) and good[-1] == (("Equalize", 0.6, 9), ("Equalize", 0.4, 4))


def test_the_tfm_good_family_draws_among_its_sub_policies():
    """TFM's first three rows forced to always apply: rows 1 and 3 have no signed op, so each has one
    outcome, computed alone; drawing 60 images through the three must show both (and row 2's)."""
    forced = tuple(tuple((op, 1.0, level) for op, _, level in sub) for sub in aa.TFM_GOOD_POLICIES[:3])
    samples = _run(lambda: dataset_samples(lambda x: aa.autoaugment(x, policy=forced, family="cifar10-tfm-good"),
                                           IMG, 60))
    alone = [_run(lambda sub=sub: aa.autoaugment(tf.constant(IMG), policy=(sub,), family="cifar10-tfm-good"))
             for sub in (forced[0], forced[2])]
    kinds = {s.tobytes() for s in samples}
    assert all(a.tobytes() in kinds for a in alone) and len(kinds) >= 3
    assert aa.POLICIES["cifar10-tfm-good"].subpolicies is aa.TFM_GOOD_POLICIES


# ------------------------------------------------------------------------------- 3. one crop


def _pair_recipe(pair):
    return types.SimpleNamespace(augment="autoaugment", autoaugment_pair=pair, augment_overflow="clip",
                                 autoaugment_policy="identity-test", augment_fill="grey", augment_magnitude=16,
                                 augment_layers=2)


@pytest.mark.parametrize("pair", ["shared-crop", "recrop"])
def test_autoaugments_unlabelled_view_crops_once_with_shared_crop(pair, monkeypatch):
    monkeypatch.setitem(aa.POLICIES, "identity-test", aa.Policy(IDENTITY, aa.autoaugment_parameters, True))
    view = views.ori_aug(_pair_recipe(pair))
    pairs = _run(lambda: dataset_samples(lambda x: view.make(x, 5), IMG, 24))
    ori, aug = pairs
    for o, a in zip(ori, aug):
        differs = np.any(o != a, axis=-1)
        if pair == "shared-crop":
            # aug is ori with a 16x16 cutout (clipped at the borders): nothing outside it moved
            rows, cols = np.nonzero(differs)
            assert rows.size == 0 or (rows.max() - rows.min() < 16 and cols.max() - cols.min() < 16)
            assert np.all(a[differs] == ops.FILL)
    if pair == "recrop":
        moved = sum(np.mean(np.any(o != a, axis=-1)) > 0.5 for o, a in zip(ori, aug))
        assert moved >= 12  # a second flip/crop moves most of the image in most samples


# ------------------------------------------------------------------------------- 4. the fill


def test_the_cifar_mean_fill_reaches_translation_padding_and_cutout():
    mean = views.FILLS["cifar-mean"]
    assert mean == tuple(int(round(m * 255)) for m in (0.49139968, 0.48215827, 0.44653124))
    shifted = _run(lambda: aa.autoaugment(tf.constant(IMG), policy=((("TranslateY", 1.0, 9), ("Invert", 0.0, 0)),),
                                          fill=mean))
    # TFM translate: 9 px (int(9 * 10 / 10)); the 9 rows moved in from outside hold the mean, per channel
    edge = shifted[-9:] if np.array_equal(shifted[:-9], IMG[9:]) else shifted[:9]
    assert np.array_equal(shifted[:-9], IMG[9:]) or np.array_equal(shifted[9:], IMG[:-9])
    assert np.all(edge == np.array(mean, np.uint8))
    padded = _run(lambda: ops.flip_pad_crop(tf.constant(np.zeros((8, 8, 3), np.uint8)), pad=4, fill=mean, seed=2))
    outside = np.any(padded != 0, axis=-1)
    assert np.all(padded[outside] == np.array(mean, np.uint8))
    cut = _run(lambda: ops.cutout_at(tf.constant(IMG), 16, 16, 16, fill=mean))
    np.testing.assert_array_equal(cut[8:24, 8:24], np.broadcast_to(np.array(mean, np.uint8), (16, 16, 3)))
    np.testing.assert_array_equal(cut[:8], IMG[:8])


def test_grey_stays_the_default_fill_of_every_view():
    from mpltool.recipes import load_recipe

    recipe = load_recipe("supervised-demo", ["augment=autoaugment"])
    assert recipe.augment_fill == "grey" and views.FILLS["grey"] == ops.FILL == 128
    assert recipe.autoaugment_pair == "recrop" and recipe.autoaugment_policy == "cifar10"
