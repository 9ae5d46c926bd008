"""The training views: what one record becomes before it reaches a network (docs/mpl-reference.md §1).

labelled_view (flip/pad/crop), weak_view (MixMatch's flip/reflect crop), the reference's (ori, aug) pair
and the strong view of each `augment` policy. The streams an algorithm declares (mpltool/data/streams.py)
are made of these.
"""

from mpltool.data.augment.autoaugment import CIFAR10_POLICY, autoaugment
from mpltool.data.augment.ops import derived_seed, flip_pad_crop, hwc, jitter, no_autograph, random_cutout, uint8_image
from mpltool.data.augment.randaugment import randaugment


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


@no_autograph
def autoaugment_view(img, seed=None, overflow="clip", policy=CIFAR10_POLICY):
    """TFM data_utils order: the policy, then pad 4 + random crop + random h-flip (one gather; the
    flip/shift order does not change the distribution), then cutout of half the image size (16 px for
    CIFAR) with a uniform centre, clipped at the borders. uint8 in and out; normalise afterwards."""
    out = autoaugment(img, seed=derived_seed(seed, 1), overflow=overflow, policy=policy)
    out = jitter(out, derived_seed(seed, 2))
    return random_cutout(out, size=min(hwc(out)[:2]) // 2, seed=derived_seed(seed, 3))


POLICIES = ("randaugment", "autoaugment", "none")


def strong_view(image, policy, magnitude, num_layers, seed, overflow):
    """The strong view of one uint8 image under the recipe's `augment` policy:
    randaugment (RandAugment, cutout, flip/crop: the reference's aug view), autoaugment (the CIFAR-10
    policy, crop, flip, cutout 16: tensorflow/models' order), or none (flip/pad/crop only)."""
    if policy == "randaugment":
        return aug_view(image, magnitude=magnitude, num_layers=num_layers, seed=seed, overflow=overflow)
    if policy == "autoaugment":
        return autoaugment_view(image, seed=seed, overflow=overflow)
    if policy == "none":
        return labelled_view(image, seed=seed)
    raise ValueError("augment must be one of {}, got {!r}".format(", ".join(POLICIES), policy))
