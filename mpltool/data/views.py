"""The training views: what one record becomes before it reaches a network (docs/mpl-reference.md §1).

labelled_view (flip/pad/crop), weak_view (MixMatch's flip/reflect crop), the reference's (ori, aug) pair
and the strong view of each `augment` policy; at the end, the View declarations (data/pipeline.py) the
algorithms' streams are made of. An algorithm may declare a view of its own the same way.
"""

from mpltool.data.augment.autoaugment import autoaugment
from mpltool.data.augment.ops import (FILL, derived_seed, flip_pad_crop, hwc, jitter, no_autograph, op_seeds,
                                      random_cutout, uint8_image)
from mpltool.data.augment.randaugment import randaugment
from mpltool.data.pipeline import View
from mpltool.tfv1 import tf

# The batch keys the common views use.
LABELLED = "labelled"
LABELS = "labels"


@no_autograph
def labelled_view(img, seed=None):
    return jitter(img, seed)


@no_autograph
def weak_view(img, seed=None):
    """MixMatch's weak augmentation (libml/data.py augment_cifar10): random flip, then REFLECT-pad by
    image_size // 8 (4 px for CIFAR) and random crop."""
    img = uint8_image(img)
    return flip_pad_crop(img, pad=min(hwc(img)[:2]) // 8, seed=seed, reflect=True)


@no_autograph
def ori_view(img, seed=None):
    return jitter(img, seed)


@no_autograph
def aug_view(ori_img, magnitude=16, num_layers=2, seed=None, overflow="clip"):
    """The strong view, from the already jittered ori image: RandAugment, cutout of half the image
    size (16 px for CIFAR), then flip + pad + crop once more, as the reference does."""
    out = randaugment(ori_img, num_layers=num_layers, magnitude=magnitude, seed=derived_seed(seed, 1),
                      overflow=overflow)
    out = random_cutout(out, size=min(hwc(out)[:2]) // 2, seed=derived_seed(seed, 2))
    return jitter(out, derived_seed(seed, 3))


@no_autograph
def unlabelled_views(img, magnitude=16, num_layers=2, seed=None, overflow="clip"):
    """(ori, aug) for one unlabelled image; aug starts from this very ori image.

    Pass distinct seeds (or none) to the labelled and unlabelled maps: with only a graph-level seed,
    TF may give their random ops identical op seeds, i.e. correlated draws. `overflow` is the recipe's
    augment_overflow (see `blend`).
    """
    ori = ori_view(img, seed=seed)
    return ori, aug_view(ori, magnitude=magnitude, num_layers=num_layers, seed=derived_seed(seed, 4),
                         overflow=overflow)


# What AutoAugment's padding, cutout and geometric ops fill with (recipe key augment_fill): mpltool's grey, or
# the CIFAR-10 mean tensorflow/models ends up with (it augments normalised images and pads with 0, the
# mean: MEANS = 0.49139968, 0.48215827, 0.44653124 of 255, rounded). docs/mixmatch.md §7.
FILLS = {"grey": FILL, "cifar-mean": (125, 123, 114)}


@no_autograph
def autoaugment_view(img, seed=None, overflow="clip", policy=None, family="cifar10", fill=FILL, crop=True):
    """TFM data_utils order: the policy, then pad 4 + random crop + random h-flip (one gather; the
    flip/shift order does not change the distribution), then cutout of half the image size (16 px for
    CIFAR) with a uniform centre, clipped at the borders. uint8 in and out; normalise afterwards. `crop`
    False leaves out the pad/crop/flip (an image that had it already: autoaugment_pair shared-crop)."""
    out = autoaugment(img, seed=derived_seed(seed, 1), overflow=overflow, policy=policy, family=family, fill=fill)
    if crop:
        out = jitter(out, derived_seed(seed, 2), fill)
    return random_cutout(out, size=min(hwc(out)[:2]) // 2, fill=fill, seed=derived_seed(seed, 3))


@no_autograph
def random_resized_crop(img, size, min_area=0.08, max_aspect=4.0 / 3.0, seed=None):
    """The Inception / ImageNet training crop, from a uint8 image of any size: a window covering a share
    of the image's area in [min_area, 1] with aspect ratio (width / height) in [1/max_aspect, max_aspect]
    (tf.image.sample_distorted_bounding_box, 10 attempts, then the whole image), resized to `size`
    (records.resize_image, as evaluation resizes), then flipped left-right with probability 1/2."""
    from mpltool.data.records import resize_image

    img = tf.convert_to_tensor(img)
    seeds = op_seeds(seed)
    begin, extent, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(img), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=next(seeds),
        min_object_covered=0.0, aspect_ratio_range=(1.0 / max_aspect, max_aspect), area_range=(min_area, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    out = resize_image(tf.slice(img, begin, extent), size)
    flip = tf.random.uniform([], seed=next(seeds)) < 0.5
    return tf.where_v2(flip, tf.reverse(out, [1]), out)


POLICIES = ("randaugment", "autoaugment", "none")


def strong_view(image, policy, magnitude, num_layers, seed, overflow, family="cifar10", fill=FILL):
    """The strong view of one uint8 image under the recipe's `augment` policy:
    randaugment (RandAugment, cutout, flip/crop: the reference's aug view), autoaugment (the policy
    `family` names, crop, flip, cutout of half the size: tensorflow/models' CIFAR order), or none
    (flip/pad/crop only)."""
    if policy == "randaugment":
        return aug_view(image, magnitude=magnitude, num_layers=num_layers, seed=seed, overflow=overflow)
    if policy == "autoaugment":
        return autoaugment_view(image, seed=seed, overflow=overflow, family=family, fill=fill)
    if policy == "none":
        return labelled_view(image, seed=seed)
    raise ValueError("augment must be one of {}, got {!r}".format(", ".join(POLICIES), policy))


# --------------------------------------------------------------------------------- view declarations


def flip_crop(name=LABELLED) -> View:
    """One flip/pad/crop view (the reference's labelled view)."""
    return View((name,), lambda image, seed: (labelled_view(image, seed=seed),))


def weak(name=LABELLED) -> View:
    """One weak view (flip, reflect-pad crop: MixMatch's)."""
    return View((name,), lambda image, seed: (weak_view(image, seed=seed),))


def weak_views(count: int, name="views") -> View:
    """K weak views of each record, as one tuple under `name`."""
    return View((name,), lambda image, seed: (tuple(weak_view(image, seed=derived_seed(seed, 11 * k))
                                                    for k in range(int(count))),))


def strong(recipe, name=LABELLED) -> View:
    """The strong view of the recipe's `augment` policy."""
    return View((name,), lambda image, seed: (strong_view(image, recipe.augment, recipe.augment_magnitude,
                                                          recipe.augment_layers, seed, recipe.augment_overflow,
                                                          recipe.autoaugment_policy, FILLS[recipe.augment_fill]),))


def resized_crop(recipe, name=LABELLED) -> View:
    """Seed 003's training view (recipe key train_crop: random-resized): a random-resized crop and flip of
    each image at its own decoded size, brought to the model's input size, then the recipe's `augment`
    policy, no cutout: tensorflow/models' ImageNet order (docs/imagenet-recipe.md §1)."""
    from mpltool.models import input_spec

    size = tuple(input_spec(recipe.model).shape[:2])

    def make(image, seed):
        out = random_resized_crop(image, size, recipe.crop_min_area, recipe.crop_max_aspect, derived_seed(seed, 1))
        if recipe.augment == "autoaugment":
            out = autoaugment(out, seed=derived_seed(seed, 2), overflow=recipe.augment_overflow,
                              family=recipe.autoaugment_policy, fill=FILLS[recipe.augment_fill])
        elif recipe.augment == "randaugment":
            out = randaugment(out, num_layers=recipe.augment_layers, magnitude=recipe.augment_magnitude,
                              seed=derived_seed(seed, 2), overflow=recipe.augment_overflow)
        return (out,)

    return View((name,), make, full_image=True)


def ori_aug(recipe) -> View:
    """The reference's unlabelled pair under `ori` and `aug`: with RandAugment, aug starts from this very
    ori image; with another policy, the policy's strong view of ori."""
    def make(image, seed):
        if recipe.augment == "randaugment":
            return unlabelled_views(image, magnitude=recipe.augment_magnitude, num_layers=recipe.augment_layers,
                                    seed=seed, overflow=recipe.augment_overflow)
        ori = ori_view(image, seed=seed)
        if recipe.augment == "autoaugment" and recipe.autoaugment_pair == "shared-crop":  # ori's crop, once
            return ori, autoaugment_view(ori, derived_seed(seed, 7), recipe.augment_overflow,
                                         family=recipe.autoaugment_policy, fill=FILLS[recipe.augment_fill], crop=False)
        return ori, strong_view(ori, recipe.augment, recipe.augment_magnitude, recipe.augment_layers,
                                derived_seed(seed, 7), recipe.augment_overflow, recipe.autoaugment_policy,
                                FILLS[recipe.augment_fill])

    return View(("ori", "aug"), make)
