"""The training views: what one record becomes before it reaches a network (docs/mpl-reference.md §1).

labelled_view (flip/pad/crop), weak_view (MixMatch's flip/reflect crop), the reference's (ori, aug) pair
and the strong view of each `augment` policy; at the end, the View declarations (data/pipeline.py) the
algorithms' streams are made of. An algorithm may declare a view of its own the same way.
"""

from mpltool.data.augment.autoaugment import CIFAR10_POLICY, autoaugment
from mpltool.data.augment.ops import derived_seed, flip_pad_crop, hwc, jitter, no_autograph, random_cutout, uint8_image
from mpltool.data.augment.randaugment import randaugment
from mpltool.data.pipeline import View

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
                                                          recipe.augment_layers, seed, recipe.augment_overflow),))


def ori_aug(recipe) -> View:
    """The reference's unlabelled pair under `ori` and `aug`: with RandAugment, aug starts from this very
    ori image; with another policy, the policy's strong view of ori."""
    def make(image, seed):
        if recipe.augment == "randaugment":
            return unlabelled_views(image, magnitude=recipe.augment_magnitude, num_layers=recipe.augment_layers,
                                    seed=seed, overflow=recipe.augment_overflow)
        ori = ori_view(image, seed=seed)
        return ori, strong_view(ori, recipe.augment, recipe.augment_magnitude, recipe.augment_layers,
                                derived_seed(seed, 7), recipe.augment_overflow)

    return View(("ori", "aug"), make)
