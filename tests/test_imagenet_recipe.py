"""Seed 003's ImageNet-style recipe (autoaugment-resnet50): the ImageNet AutoAugment policy of
tensorflow/models and its level mapping, SolarizeAdd, sampling maps computed in the graph for large
images, the random-resized training crop, the centre-crop evaluation framing (eval_crop) of image files,
plain momentum, the recipe's values, and its demo through train -> eval -> freeze -> convert --check-only."""

import json
import math

import numpy as np
import pytest
from helpers import dataset_samples, invoke, manifest, one_error_line, run_once as _run

from mpltool.data.augment import autoaugment as aa
from mpltool.data.augment import ops
from mpltool.tfv1 import tf

RNG = np.random.RandomState(7)
IMG224 = RNG.randint(0, 256, (224, 224, 3)).astype(np.uint8)



# ------------------------------------------------------------------------------------------- the policy


def test_the_imagenet_policy_is_tensorflow_models_v0():
    policy = aa.IMAGENET_POLICY
    assert len(policy) == 25 and all(len(sub) == 2 for sub in policy)
    assert policy[0] == (("Equalize", 0.8, 1), ("ShearY", 0.8, 4))
    assert policy[6] == (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3))
    assert policy[15] == (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9))
    assert policy[24] == (("Color", 0.8, 6), ("Rotate", 0.4, 5))
    ops_used = {op for sub in policy for op, _, _ in sub}
    assert ops_used == {"Equalize", "ShearY", "Color", "Rotate", "Solarize", "SolarizeAdd", "ShearX", "Invert",
                        "Posterize", "AutoContrast", "TranslateY"}
    assert set(aa.POLICIES) == {"cifar10", "cifar10-tfm-good", "imagenet"}


@pytest.mark.parametrize("name, level, want", [
    ("Rotate", 8, (24.0,)), ("Rotate", 5, (15.0,)), ("ShearY", 4, (0.3 * 0.4,)),
    ("TranslateY", 9, (225.0,)), ("TranslateX", 4, (100.0,)),
    ("Color", 9, (0.9 * 1.8 + 0.1,)), ("Contrast", 0, (0.1,)),
    ("Posterize", 6, (2,)), ("Posterize", 2, (1,)),  # int(0.8) = 0 bits, which TF's clamped shift makes 1
    ("Solarize", 3, (76,)), ("Solarize", 10, (256,)), ("SolarizeAdd", 3, (33,)), ("SolarizeAdd", 7, (77,)),
    ("Cutout", 5, (100,)), ("Equalize", 9, ()), ("Invert", 9, ())])
def test_imagenet_levels_map_as_tensorflow_models_level_to_arg(name, level, want):
    got = aa.imagenet_parameters(name, level)
    assert len(got) == len(want) and all(math.isclose(g, w, rel_tol=1e-12) for g, w in zip(got, want))


def test_the_cifar_mapping_knows_no_solarize_add_and_levels_are_checked():
    from mpltool.errors import UsageError

    with pytest.raises(UsageError, match="unknown AutoAugment op 'SolarizeAdd'"):
        aa.autoaugment_parameters("SolarizeAdd", 3)
    with pytest.raises(UsageError, match=r"level must be a number in \[0, 10\]"):
        aa.imagenet_parameters("Rotate", 11)
    with pytest.raises(UsageError, match="unknown AutoAugment policy 'svhn'"):
        aa.autoaugment(tf.constant(IMG224), family="svhn")


def test_posterize_keeps_the_bits_tensorflow_models_shifts_keep():
    """TFM's posterize is (x >> (8 - bits)) << (8 - bits) on uint8; run that very expression in TF at the
    policy's levels and compare with the mapped kernel."""
    for level in (0, 2, 6, 10):
        tfm_bits = int(level / 10 * 4)

        def build(tfm_bits=tfm_bits, level=level):
            img = tf.constant(IMG224)
            shift = tf.constant(8 - tfm_bits, tf.uint8)
            reference = tf.bitwise.left_shift(tf.bitwise.right_shift(img, shift), shift)
            return reference, ops.posterize(img, *aa.imagenet_parameters("Posterize", level))

        reference, got = _run(build)
        np.testing.assert_array_equal(got, reference)


def test_solarize_add_adds_below_the_threshold_and_clips():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    got = _run(lambda: ops.solarize_add(tf.constant(x), 77))
    as_int = x.astype(np.int64)
    want = np.where(as_int < 128, np.minimum(as_int + 77, 255), as_int)
    np.testing.assert_array_equal(got, want)


def _forced(policy, img=IMG224, count=12, seed=3):
    return _run(lambda: dataset_samples(lambda x: aa.autoaugment(x, policy=policy, family="imagenet"), img, count),
                seed)


def test_imagenet_contrast_blends_from_the_pixel_count_mean_and_cifar_from_the_real_mean():
    img = IMG224 // 2  # mean gray about 64, far from the pixel-count/256 = 196
    imagenet = _forced(((("Contrast", 1.0, 3), ("Invert", 0.0, 0)),), img, count=1)[0]
    reference = _run(lambda: ops.contrast(tf.constant(img), aa.imagenet_parameters("Contrast", 3)[0]))
    np.testing.assert_array_equal(imagenet, reference)
    cifar = _run(lambda: aa.autoaugment(tf.constant(img), policy=((("Contrast", 1.0, 3), ("Invert", 0.0, 0)),)))
    assert not np.array_equal(cifar, reference)


def test_a_forced_imagenet_rotation_is_plus_or_minus_its_float_angle_with_both_signs_drawn():
    samples = _forced(((("Rotate", 1.0, 7), ("Invert", 0.0, 0)),), count=16)
    plus, minus = _run(lambda: (ops.rotate(tf.constant(IMG224), 21.0), ops.rotate(tf.constant(IMG224), -21.0)))
    kinds = [0 if np.array_equal(s, plus) else 1 if np.array_equal(s, minus) else -1 for s in samples]
    assert -1 not in kinds and set(kinds) == {0, 1}


def test_a_forced_translation_of_250_px_times_the_level_moves_every_pixel_out_at_224():
    samples = _forced(((("TranslateY", 1.0, 9), ("Invert", 0.0, 0)),), count=4)
    for sample in samples:  # 225 px: rows 0..223 all read from outside, except one edge row
        assert (sample[:-1] == ops.FILL).all() or (sample[1:] == ops.FILL).all()


def test_sampling_maps_of_large_images_are_computed_in_the_graph_and_equal_the_numpy_maps():
    shape = (224, 224, 3)
    transforms = [ops.TRANSFORMS["Rotate"](shape, 24.0), ops.TRANSFORMS["ShearX"](shape, -0.27),
                  ops.TRANSFORMS["TranslateY"](shape, 225.0), ops.TRANSFORMS["TranslateX"](shape, 0.5),
                  ops.TRANSFORMS["ShearY"](shape, 0.5)]
    maps = ops.SamplingMaps(shape, transforms)
    assert maps.constants is None  # 224 x 224 is above CONSTANT_MAP_PIXELS
    got = _run(lambda: [maps(tf.constant(k)) for k in range(len(transforms))])
    for k, transform in enumerate(transforms):
        np.testing.assert_array_equal(got[k], ops.source_index(shape, transform))
    small = ops.SamplingMaps((32, 32, 3), [ops.TRANSFORMS["Rotate"]((32, 32, 3), 24.0)])
    assert small.constants is not None and small.constants.shape == (1, 32, 32)


def test_the_imagenet_policy_at_224_adds_no_large_constant_to_the_graph():
    with tf.Graph().as_default() as graph:
        aa.autoaugment(tf.placeholder(tf.uint8, (224, 224, 3)), seed=1, family="imagenet")
        largest = max(node.ByteSize() for node in graph.as_graph_def().node)
        total = graph.as_graph_def().ByteSize()
    assert largest < 16 * 1024 and total < 512 * 1024  # one constant map would be 200 KB


# ------------------------------------------------------------------------------------------- the crops


def test_the_centre_crop_is_tensorflow_models_eval_crop():
    from mpltool.data.records import frame_image, resize_image

    img = RNG.randint(0, 256, (300, 200, 3)).astype(np.uint8)
    side = int(np.float32(224 / 256) * np.float32(200))  # TFM: (224 / (224 + 32)) * min(h, w), as int32
    top, left = (300 - side + 1) // 2, (200 - side + 1) // 2
    assert (side, top, left) == (175, 63, 13)
    got, want = _run(lambda: (frame_image(tf.constant(img), (64, 64), 0.875),
                              resize_image(tf.constant(img[top:top + side, left:left + side]), (64, 64))))
    np.testing.assert_array_equal(got, want)
    whole, want_whole = _run(lambda: (frame_image(tf.constant(img), (64, 64), 0.0),
                                      resize_image(tf.constant(img), (64, 64))))
    np.testing.assert_array_equal(whole, want_whole)


def test_the_random_resized_crop_covers_its_area_range_and_flips_half_the_time():
    from mpltool.data.records import resize_image
    from mpltool.data.views import random_resized_crop

    # Whole-image crops only (area and aspect fixed at 1 on a square image): the output is the resized
    # image or its mirror, each drawn.
    square = RNG.randint(0, 256, (48, 48, 3)).astype(np.uint8)
    outs = _run(lambda: dataset_samples(lambda x: random_resized_crop(x, (32, 32), 1.0, 1.0), square, 24))
    resized = _run(lambda: resize_image(tf.constant(square), (32, 32)))
    kinds = [0 if np.array_equal(o, resized) else 1 if np.array_equal(o, resized[:, ::-1]) else -1 for o in outs]
    assert -1 not in kinds and set(kinds) == {0, 1}
    # A coordinate image: each crop's window read back from its corners' values has area >= 10% and
    # aspect in [3/4, 4/3] (bilinear resizing keeps the corners' values within a pixel).
    ys, xs = np.mgrid[0:200, 0:200]
    coords = np.stack([ys, xs, np.zeros_like(ys)], -1).astype(np.uint8)
    crops = _run(lambda: dataset_samples(lambda x: random_resized_crop(x, (16, 16), 0.1, 4.0 / 3.0), coords, 64))
    for crop in crops.astype(np.int64):
        height = crop[-1, 0, 0] - crop[0, 0, 0] + 1
        width = abs(crop[0, -1, 1] - crop[0, 0, 1]) + 1
        assert height * width >= 0.1 * 200 * 200 * 0.85
        assert 0.75 / 1.15 <= width / height <= (4.0 / 3.0) * 1.15


def test_nesterov_false_is_plain_momentum():
    """Two steps of a constant gradient g from w = 1: plain momentum moves lr·g then lr·g(1 + m); Nesterov's
    lr·g(1 + m) then lr·g(1 + m + m²)."""
    from mpltool.algorithms.common import make_optimizer
    from mpltool.recipes import load_recipe

    lr, g, m = 0.1, 2.0, 0.9
    moved = {}
    for nesterov in (False, True):
        with tf.Graph().as_default():
            w = tf.Variable(1.0)
            recipe = load_recipe("autoaugment-resnet50-demo", ["nesterov={}".format(str(nesterov).lower())])
            step = make_optimizer(lr, recipe).apply_gradients([(tf.constant(g), w)])
            with tf.Session() as session:
                session.run(tf.global_variables_initializer())
                values = []
                for _ in range(2):
                    session.run(step)
                    values.append(session.run(w))
        moved[nesterov] = values
    np.testing.assert_allclose(moved[False], [1 - lr * g, 1 - lr * g - lr * g * (1 + m)], rtol=1e-6)
    np.testing.assert_allclose(moved[True], [1 - lr * g * (1 + m), 1 - lr * g * (1 + m) - lr * g * (1 + m + m * m)],
                               rtol=1e-6)


# ------------------------------------------------------------------------------------------- the recipe


def test_autoaugment_resnet50_holds_the_seeds_settings():
    from mpltool.recipes import load_recipe

    recipe = load_recipe("autoaugment-resnet50")
    assert (recipe.algorithm, recipe.model, recipe.num_classes) == ("supervised", "resnet50", 1000)
    assert (recipe.lr, recipe.lr_decay, recipe.lr_warmup_steps) == (0.06, "cosine", 0)
    assert (recipe.momentum, recipe.nesterov, recipe.weight_decay, recipe.label_smoothing) == (0.9, False, 1e-4, 0.1)
    assert recipe.batch_size == 256 and recipe.num_train_steps == math.ceil(150 * 1281167 / 256)
    assert (recipe.augment, recipe.autoaugment_policy, recipe.train_crop) == ("autoaugment", "imagenet",
                                                                             "random-resized")
    assert recipe.eval_crop == 224 / 256 and recipe.crop_min_area == 0.08
    demo = load_recipe("autoaugment-resnet50-demo")
    assert demo.model == "resnet50-32" and demo.target_domain == "cartoon"


def test_crop_keys_are_refused_by_an_algorithm_that_does_not_read_them():
    result = invoke("recipes", "show", "mpl-demo", "--set", "train_crop=random-resized")
    assert "train_crop" in one_error_line(result, 2)


# ------------------------------------------------------------------------------------------- end to end

# Two steps of 16 images; batch-norm statistics that follow the last batch (bn_momentum 0.01), so that the inference
# graph's logits are of a sane size after two steps and the frozen graph's parity is meaningful.
DEMO_RUN = ["num_train_steps=2", "batch_size=16", "eval_batch_size=20", "shuffle_buffer=16", "save_every=2",
            "eval_every=2", "log_every=1", "bn_momentum=0.01"]


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    from mpltool.data.domains import write_domain_demo

    root = tmp_path_factory.mktemp("aa-resnet50")
    write_domain_demo(root / "src", per_domain=20)
    project = root / "p"
    prepared = invoke("--project", project, "data", "prepare", "--images", root / "src", "--recipe",
                      "autoaugment-resnet50-demo")
    assert prepared.exit_code == 0, prepared.stderr
    return project


@pytest.mark.slow
def test_the_demo_goes_through_train_eval_freeze_and_convert(demo_project):
    project = demo_project
    trained = invoke("--project", project, "--json", "train", "--recipe", "autoaugment-resnet50-demo", "--device",
                     "cpu", *[t for pair in DEMO_RUN for t in ("--set", pair)])
    assert trained.exit_code == 0, trained.stderr
    record = manifest(project)["stages"]["train"]
    assert record["params"]["eval_crop"] == 0.875 and record["params"]["train_crop"] == "random-resized"
    assert record["network"]["input_spec"]["shape"] == [32, 32, 3]
    evaluated = invoke("--project", project, "--json", "eval", "--target", "model")
    assert evaluated.exit_code == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["images"] == 20
    # eval frames the test set as training's own evaluation did (the centre 87.5%): the same top-1
    assert result["top1"] == record["metrics"]["model_top1"]
    # Folding 53 batch norms into their convs rounds at ~1e-6 of the logits, which two steps leave in the
    # hundreds or thousands: parity is checked at 1e-5 of the largest logit here (a trained network's are
    # ~10, where the default 1e-4 holds); wrong weights would differ by the logits' own size.
    from mpltool.data.stage import load_test_set
    from mpltool.manifest import Project
    from mpltool.models import artifacts

    images = load_test_set(Project(project))[0][:8]
    with artifacts.open_model(artifacts.resolve(Project(project), None, "ema")) as network:
        largest = float(np.abs(network.predict(np.asarray(images, np.float32))).max())
    frozen = invoke("--project", project, "--json", "freeze", "--parity-images", 8, "--tolerance",
                    max(1e-4, 1e-5 * largest))
    assert frozen.exit_code == 0, frozen.stderr
    frozen = json.loads(frozen.stdout)
    assert frozen["parity"]["passed"] is True and frozen["parity"]["top1_agreement"] == 1.0
    assert frozen["io"]["input_shape"] == [1, 32, 32, 3]
    checked = invoke("--project", project, "--json", "convert", "--check-only")
    assert checked.exit_code == 0, checked.stderr
    assert json.loads(checked.stdout)["precheck"]["ok"] is True


def test_the_test_set_of_a_crop_recipe_is_the_centre_of_each_file(demo_project):
    from mpltool.data.records import frame_image
    from mpltool.data.stage import load_prepared
    from mpltool.data.sources import get_source
    from mpltool.manifest import Project
    from PIL import Image

    project = Project(demo_project)
    prepared = load_prepared(project, splits=("test",))
    params = {"target_domain": "cartoon", "model": "resnet50-64", "eval_crop": 0.5}
    images, _, _ = get_source("folders").test_set(prepared, params)
    assert images.crop == 0.5 and images.shape[1:] == (64, 64, 3)
    first = np.asarray(Image.open(str(images.paths[0])).convert("RGB"))
    want = _run(lambda: frame_image(tf.constant(first), (64, 64), 0.5))
    np.testing.assert_array_equal(images[0], want)
    np.testing.assert_array_equal(images[:3][0], want)


def test_eval_crop_on_cifar_data_is_a_usage_error(prepared_copy):
    result = invoke("--project", prepared_copy, "train", "--recipe", "supervised-demo", "--set", "eval_crop=0.875",
                    "--set", "num_train_steps=1")
    assert "eval_crop" in one_error_line(result, 2)
