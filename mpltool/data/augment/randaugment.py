"""RandAugment as the MPL reference applies it (google-research meta_pseudo_labels augment.py; docs/mpl-reference.md
§1): p ~ U(0.2, 0.8) per image, then N layers each applying one of 15 ops with probability p, at the
reference's level -> parameter mapping (`op_parameters`)."""

import numpy as np

from mpltool.data.augment.ops import (SIGNED_OPS, TRANSFORMS, SamplingMaps, auto_contrast, brightness,
                                      check_overflow, color, contrast, equalize, hwc, invert, no_autograph, op_seeds,
                                      posterize, random_cutout, same_shape, sample, sharpness, solarize, switch,
                                      uint8_image)
from mpltool.errors import UsageError
from mpltool.tfv1 import tf

RANDAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout",
)

_MAX_LEVEL = 10.0

_UNSIGNED_OPS = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Posterize": posterize,
    "Solarize": solarize,
    "Color": color,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
}


def op_parameters(name, magnitude, image_size=32):
    """The reference's level -> arguments of op `name` (before the random sign), as a tuple.

    Level = magnitude / 10, so magnitude 16 exceeds the nominal maximum: rotate 48 deg, shear 0.48,
    translate 6.4 px and cutout 12 px (both from image_size // 8 = 4), enhance 2.98, posterize 6 bits,
    solarize 409 (see `solarize` for what that means in uint8).
    """
    if name not in RANDAUGMENT_OPS:
        raise UsageError("unknown augmentation op {!r}; choose one of {}".format(
            name, ", ".join(RANDAUGMENT_OPS)))
    if magnitude < 0:
        raise UsageError("augment magnitude must be >= 0, got {}".format(magnitude))
    level = magnitude / _MAX_LEVEL
    size_const = int(image_size) // 8
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":
        return (magnitude * 30.0 / _MAX_LEVEL,)
    if name in ("ShearX", "ShearY"):
        return (magnitude * 0.3 / _MAX_LEVEL,)
    if name in ("TranslateX", "TranslateY"):
        return (magnitude * float(size_const) / _MAX_LEVEL,)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (magnitude * 1.8 / _MAX_LEVEL + 0.1,)
    if name == "Posterize":
        return (int(level * 4),)
    if name == "Solarize":
        return (int(level * 256),)
    return (2 * int(level * size_const),)  # Cutout: the reference's pad_size is half the side


COLOUR_OPS = frozenset({"Color", "Contrast", "Brightness", "Sharpness"})  # the ops that blend


def apply_op(name, img, args, seed, overflow):
    if name == "Cutout":
        return random_cutout(img, args[0], seed=seed)
    if name in COLOUR_OPS:
        return _UNSIGNED_OPS[name](img, *args, overflow=overflow)
    return _UNSIGNED_OPS[name](img, *args)


def _branch_plan(ops, params, shape):
    """How one layer dispatches: (branch of each op, unsigned op indices, map row of each op, maps).

    Branch 0 leaves the image as is, branches 1..k run the unsigned ops, and one last branch serves
    every signed op: a gather through its + or - sampling map, stacked as constants. Fewer branches
    mean fewer nodes, which tf.data runs (as dead tensors) for every image even when not taken.
    """
    signed = [i for i, name in enumerate(ops) if name in SIGNED_OPS]
    unsigned = [i for i, name in enumerate(ops) if name not in SIGNED_OPS]
    branch_of_op = np.zeros(len(ops), np.int32)
    branch_of_op[unsigned] = 1 + np.arange(len(unsigned))
    branch_of_op[signed] = 1 + len(unsigned)
    map_of_op = np.zeros(len(ops), np.int32)
    map_of_op[signed] = 2 * np.arange(len(signed))  # row of the + map; the - map follows it
    transforms = [TRANSFORMS[ops[i]](shape, sign * params[i][0]) for i in signed for sign in (1, -1)]
    return branch_of_op, unsigned, map_of_op, (SamplingMaps(shape, transforms) if transforms else None)


@no_autograph
def randaugment(img, num_layers=2, magnitude=16, prob_range=(0.2, 0.8), seed=None, ops=RANDAUGMENT_OPS,
                overflow="clip"):
    """RandAugment as in the reference: p ~ U(prob_range) once per image, then `num_layers` times pick
    one of `ops` uniformly and apply it with probability p (random sign where SIGNED_OPS says).

    prob_range=(0, 0) never applies an op (the input comes back unchanged); (1, 1) always does.
    `overflow` is the colour ops' blend mode (see `blend`).
    """
    img = uint8_image(img)
    check_overflow(overflow)
    low, high = prob_range
    if not 0.0 <= low <= high <= 1.0:
        raise UsageError("RandAugment prob_range must satisfy 0 <= low <= high <= 1, got {}".format(
            prob_range))
    if int(num_layers) != num_layers or num_layers < 0:
        raise UsageError("RandAugment num_layers must be a whole number >= 0, got {}".format(num_layers))
    if not ops:
        raise UsageError("RandAugment needs at least one op")
    shape = hwc(img)
    params = [op_parameters(name, magnitude, min(shape[:2])) for name in ops]
    branch_of_op, unsigned, map_of_op, maps = _branch_plan(ops, params, shape)
    seeds = op_seeds(seed)
    prob = tf.random.uniform([], low, high, seed=next(seeds))
    out = img
    for _ in range(int(num_layers)):
        choice = tf.random.uniform([], 0, len(ops), tf.int32, seed=next(seeds))
        # u < p (strict) so that p = 0 can never apply an op; u is in [0, 1), so p = 1 always does.
        applied = tf.random.uniform([], seed=next(seeds)) < prob
        negative = tf.cast(tf.random.uniform([], seed=next(seeds)) < 0.5, tf.int32)
        op_seed = next(seeds)
        branches = [lambda layer_in=out: tf.identity(layer_in)]
        branches += [lambda i=i, layer_in=out: apply_op(ops[i], layer_in, params[i], op_seed, overflow)
                     for i in unsigned]
        if maps is not None:
            branches.append(lambda layer_in=out, choice=choice, negative=negative: sample(
                layer_in, maps(tf.gather(map_of_op, choice) + negative)))
        branch = tf.where_v2(applied, tf.gather(branch_of_op, choice), 0)
        out = same_shape(switch(branch, branches), img)
    return out

