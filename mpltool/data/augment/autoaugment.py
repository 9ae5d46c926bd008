"""AutoAugment: the CIFAR-10 policy as tensorflow/models research/autoaugment applies it, and the ImageNet
policy as tensorflow/models official/vision applies it, on the ops of ops.py (see the section comments
below for the differences from those references). `POLICIES` names them for the recipe key
`autoaugment_policy`."""

import collections
import numbers

import numpy as np

from mpltool.data.augment.ops import (FILL, SIGNED_OPS, TRANSFORMS, SamplingMaps, blend, check_overflow, grayscale_l,
                                      hwc, no_autograph, op_seeds, random_cutout, same_shape, sample, solarize_add,
                                      switch, uint8_image)
from mpltool.data.augment.randaugment import COLOUR_OPS, apply_op
from mpltool.errors import UsageError
from mpltool.tfv1 import tf

# ---------------------------------------------------------------------------------------- AutoAugment
# The CIFAR-10 AutoAugment policy as tensorflow/models research/autoaugment applies it (policies.py,
# augmentation_transforms.py, data_utils.py), on the kernels above. Differences from that PIL code:
# the kernels' own (documented above) rounding and nearest-neighbour sampling, and geometric fill /
# cutout fill FILL = 128 where TFM ends up with the CIFAR mean (about 125, 122, 113).

AUTOAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout",
)
AUTOAUGMENT_PARAMETER_MAX = 10

# The paper's 25 CIFAR-10 sub-policies (its appendix table; the table of DeepVoltaire's CIFAR10Policy and of
# 4uiiurz1's auto_augment.py, which seed 003 names), ((op, prob, level), (op, prob, level)). Rows 1-15 and
# 21-25 are TFM policies.py good_policies() exp0_0, exp1_0, exp2_0 and exp0_1; rows 16-20 are not in that
# file (docs/mixmatch.md §7 compares the two).
CIFAR10_POLICY = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)


# tensorflow/models research/autoaugment policies.py good_policies(): 19 groups of 5 sub-policies (exp0_0 ..
# exp2_7), 95 in all, returned in this order and drawn uniformly per image by data_utils.py (one of them,
# TranslateY 0.7/9 twice, appears twice in exp0_2). CIFAR10_POLICY's rows 1-15 and 21-25 are exp0_0,
# exp1_0, exp2_0 and exp0_1; its rows 16-20 are the paper's own and not in this file (docs/mixmatch.md §7).
TFM_GOOD_POLICIES = (
    # exp0_0
    (('Invert', 0.1, 7), ('Contrast', 0.2, 6)),
    (('Rotate', 0.7, 2), ('TranslateX', 0.3, 9)),
    (('Sharpness', 0.8, 1), ('Sharpness', 0.9, 3)),
    (('ShearY', 0.5, 8), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.5, 8), ('Equalize', 0.9, 2)),
    # exp0_1
    (('Solarize', 0.4, 5), ('AutoContrast', 0.9, 3)),
    (('TranslateY', 0.9, 9), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.9, 2), ('Solarize', 0.8, 3)),
    (('Equalize', 0.8, 8), ('Invert', 0.1, 3)),
    (('TranslateY', 0.7, 9), ('AutoContrast', 0.9, 1)),
    # exp0_2
    (('Solarize', 0.4, 5), ('AutoContrast', 0.0, 2)),
    (('TranslateY', 0.7, 9), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.9, 0), ('Solarize', 0.4, 3)),
    (('Equalize', 0.7, 5), ('Invert', 0.1, 3)),
    (('TranslateY', 0.7, 9), ('TranslateY', 0.7, 9)),
    # exp0_3
    (('Solarize', 0.4, 5), ('AutoContrast', 0.9, 1)),
    (('TranslateY', 0.8, 9), ('TranslateY', 0.9, 9)),
    (('AutoContrast', 0.8, 0), ('TranslateY', 0.7, 9)),
    (('TranslateY', 0.2, 7), ('Color', 0.9, 6)),
    (('Equalize', 0.7, 6), ('Color', 0.4, 9)),
    # exp1_0
    (('ShearY', 0.2, 7), ('Posterize', 0.3, 7)),
    (('Color', 0.4, 3), ('Brightness', 0.6, 7)),
    (('Sharpness', 0.3, 9), ('Brightness', 0.7, 9)),
    (('Equalize', 0.6, 5), ('Equalize', 0.5, 1)),
    (('Contrast', 0.6, 7), ('Sharpness', 0.6, 5)),
    # exp1_1
    (('Brightness', 0.3, 7), ('AutoContrast', 0.5, 8)),
    (('AutoContrast', 0.9, 4), ('AutoContrast', 0.5, 6)),
    (('Solarize', 0.3, 5), ('Equalize', 0.6, 5)),
    (('TranslateY', 0.2, 4), ('Sharpness', 0.3, 3)),
    (('Brightness', 0.0, 8), ('Color', 0.8, 8)),
    # exp1_2
    (('Solarize', 0.2, 6), ('Color', 0.8, 6)),
    (('Solarize', 0.2, 6), ('AutoContrast', 0.8, 1)),
    (('Solarize', 0.4, 1), ('Equalize', 0.6, 5)),
    (('Brightness', 0.0, 0), ('Solarize', 0.5, 2)),
    (('AutoContrast', 0.9, 5), ('Brightness', 0.5, 3)),
    # exp1_3
    (('Contrast', 0.7, 5), ('Brightness', 0.0, 2)),
    (('Solarize', 0.2, 8), ('Solarize', 0.1, 5)),
    (('Contrast', 0.5, 1), ('TranslateY', 0.2, 9)),
    (('AutoContrast', 0.6, 5), ('TranslateY', 0.0, 9)),
    (('AutoContrast', 0.9, 4), ('Equalize', 0.8, 4)),
    # exp1_4
    (('Brightness', 0.0, 7), ('Equalize', 0.4, 7)),
    (('Solarize', 0.2, 5), ('Equalize', 0.7, 5)),
    (('Equalize', 0.6, 8), ('Color', 0.6, 2)),
    (('Color', 0.3, 7), ('Color', 0.2, 4)),
    (('AutoContrast', 0.5, 2), ('Solarize', 0.7, 2)),
    # exp1_5
    (('AutoContrast', 0.2, 0), ('Equalize', 0.1, 0)),
    (('ShearY', 0.6, 5), ('Equalize', 0.6, 5)),
    (('Brightness', 0.9, 3), ('AutoContrast', 0.4, 1)),
    (('Equalize', 0.8, 8), ('Equalize', 0.7, 7)),
    (('Equalize', 0.7, 7), ('Solarize', 0.5, 0)),
    # exp1_6
    (('Equalize', 0.8, 4), ('TranslateY', 0.8, 9)),
    (('TranslateY', 0.8, 9), ('TranslateY', 0.6, 9)),
    (('TranslateY', 0.9, 0), ('TranslateY', 0.5, 9)),
    (('AutoContrast', 0.5, 3), ('Solarize', 0.3, 4)),
    (('Solarize', 0.5, 3), ('Equalize', 0.4, 4)),
    # exp2_0
    (('Color', 0.7, 7), ('TranslateX', 0.5, 8)),
    (('Equalize', 0.3, 7), ('AutoContrast', 0.4, 8)),
    (('TranslateY', 0.4, 3), ('Sharpness', 0.2, 6)),
    (('Brightness', 0.9, 6), ('Color', 0.2, 8)),
    (('Solarize', 0.5, 2), ('Invert', 0.0, 3)),
    # exp2_1
    (('AutoContrast', 0.1, 5), ('Brightness', 0.0, 0)),
    (('Cutout', 0.2, 4), ('Equalize', 0.1, 1)),
    (('Equalize', 0.7, 7), ('AutoContrast', 0.6, 4)),
    (('Color', 0.1, 8), ('ShearY', 0.2, 3)),
    (('ShearY', 0.4, 2), ('Rotate', 0.7, 0)),
    # exp2_2
    (('ShearY', 0.1, 3), ('AutoContrast', 0.9, 5)),
    (('TranslateY', 0.3, 6), ('Cutout', 0.3, 3)),
    (('Equalize', 0.5, 0), ('Solarize', 0.6, 6)),
    (('AutoContrast', 0.3, 5), ('Rotate', 0.2, 7)),
    (('Equalize', 0.8, 2), ('Invert', 0.4, 0)),
    # exp2_3
    (('Equalize', 0.9, 5), ('Color', 0.7, 0)),
    (('Equalize', 0.1, 1), ('ShearY', 0.1, 3)),
    (('AutoContrast', 0.7, 3), ('Equalize', 0.7, 0)),
    (('Brightness', 0.5, 1), ('Contrast', 0.1, 7)),
    (('Contrast', 0.1, 4), ('Solarize', 0.6, 5)),
    # exp2_4
    (('Solarize', 0.2, 3), ('ShearX', 0.0, 0)),
    (('TranslateX', 0.3, 0), ('TranslateX', 0.6, 0)),
    (('Equalize', 0.5, 9), ('TranslateY', 0.6, 7)),
    (('ShearX', 0.1, 0), ('Sharpness', 0.5, 1)),
    (('Equalize', 0.8, 6), ('Invert', 0.3, 6)),
    # exp2_5
    (('AutoContrast', 0.3, 9), ('Cutout', 0.5, 3)),
    (('ShearX', 0.4, 4), ('AutoContrast', 0.9, 2)),
    (('ShearX', 0.0, 3), ('Posterize', 0.0, 3)),
    (('Solarize', 0.4, 3), ('Color', 0.2, 4)),
    (('Equalize', 0.1, 4), ('Equalize', 0.7, 6)),
    # exp2_6
    (('Equalize', 0.3, 8), ('AutoContrast', 0.4, 3)),
    (('Solarize', 0.6, 4), ('AutoContrast', 0.7, 6)),
    (('AutoContrast', 0.2, 9), ('Brightness', 0.4, 8)),
    (('Equalize', 0.1, 0), ('Equalize', 0.0, 6)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 4)),
    # exp2_7
    (('Equalize', 0.5, 5), ('AutoContrast', 0.1, 2)),
    (('Solarize', 0.5, 5), ('AutoContrast', 0.9, 5)),
    (('AutoContrast', 0.6, 1), ('AutoContrast', 0.7, 8)),
    (('Equalize', 0.2, 0), ('AutoContrast', 0.1, 2)),
    (('Equalize', 0.6, 9), ('Equalize', 0.4, 4)),
)


def _tfm_float(level, maxval):
    """TFM float_parameter: level * maxval / PARAMETER_MAX."""
    return float(level) * maxval / AUTOAUGMENT_PARAMETER_MAX


def _tfm_int(level, maxval):
    """TFM int_parameter: int(level * maxval / PARAMETER_MAX)."""
    return int(level * maxval / AUTOAUGMENT_PARAMETER_MAX)


def autoaugment_parameters(name, level):
    """TFM's level (0..10) -> arguments of op `name`, before the random sign, as a tuple.

    Shear f(L, 0.3); Translate i(L, 10) px; Rotate i(L, 30) degrees (these three get a random sign);
    Posterize keeps 4 - i(L, 4) bits; Solarize threshold 256 - i(L, 256) (256: no pixel changes);
    Color/Contrast/Brightness/Sharpness factor 0.1 + f(L, 1.8); Cutout i(L, 20) px; AutoContrast,
    Equalize and Invert ignore the level.
    """
    if name not in AUTOAUGMENT_OPS:
        raise UsageError("unknown AutoAugment op {!r}; choose one of {}".format(name, ", ".join(AUTOAUGMENT_OPS)))
    _check_level(level)
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":
        return (_tfm_int(level, 30),)
    if name in ("ShearX", "ShearY"):
        return (_tfm_float(level, 0.3),)
    if name in ("TranslateX", "TranslateY"):
        return (_tfm_int(level, 10),)
    if name == "Posterize":
        return (4 - _tfm_int(level, 4),)
    if name == "Solarize":
        return (256 - _tfm_int(level, 256),)
    if name in COLOUR_OPS:
        return (_tfm_float(level, 1.8) + 0.1,)
    return (_tfm_int(level, 20),)  # Cutout


# --------------------------------------------------------------------------------- ImageNet policy
# tensorflow/models official/vision/image_classification/augment.py, AutoAugment(augmentation_name="v0"):
# "the policy used in the AutoAugment paper" for ImageNet, as TFM's ImageNet classifiers train with it
# (docs/imagenet-recipe.md §2). Its level -> argument mapping differs from the CIFAR code's: translations
# of up to 250 px (translate_const), cutout of up to 2 x 100 px, Posterize keeping int(L/10 * 4) bits
# (not 4 - that), rotation by a float angle, SolarizeAdd, and Contrast's degenerate mean taken as the
# pixel count / 256 (the `contrast` kernel's documented quirk, which TFM shares with the MPL reference).

IMAGENET_OPS = AUTOAUGMENT_OPS + ("SolarizeAdd",)
IMAGENET_TRANSLATE_CONST = 250.0
IMAGENET_CUTOUT_CONST = 100.0

IMAGENET_POLICY = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)


def imagenet_parameters(name, level):
    """TFM's ImageNet level (0..10) -> arguments of op `name`, before the random sign, as a tuple.

    With L = level / 10: Rotate 30 L degrees, Shear 0.3 L, Translate 250 L px (these three get a random
    sign); Color/Contrast/Brightness/Sharpness factor 1.8 L + 0.1; Posterize int(4 L) bits, at least
    1: TFM shifts right and back by 8 - bits, and TF clamps a shift to 7 for uint8, so its 0 bits
    (level 2) keeps the top bit; Solarize threshold int(256 L) (256: no pixel changes); SolarizeAdd
    +int(110 L) below 128; Cutout a square of 2 int(100 L) px; AutoContrast, Equalize and Invert ignore
    the level.
    """
    if name not in IMAGENET_OPS:
        raise UsageError("unknown AutoAugment op {!r}; choose one of {}".format(name, ", ".join(IMAGENET_OPS)))
    _check_level(level)
    fraction = level / float(AUTOAUGMENT_PARAMETER_MAX)
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":
        return (fraction * 30.0,)
    if name in ("ShearX", "ShearY"):
        return (fraction * 0.3,)
    if name in ("TranslateX", "TranslateY"):
        return (fraction * IMAGENET_TRANSLATE_CONST,)
    if name in COLOUR_OPS:
        return (fraction * 1.8 + 0.1,)
    if name == "Posterize":
        return (max(int(fraction * 4), 1),)
    if name == "Solarize":
        return (int(fraction * 256),)
    if name == "SolarizeAdd":
        return (int(fraction * 110),)
    return (2 * int(fraction * IMAGENET_CUTOUT_CONST),)  # Cutout: TFM's pad_size is half the side


def _check_level(level):
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 <= level <= AUTOAUGMENT_PARAMETER_MAX:
        raise UsageError("AutoAugment level must be a number in [0, {}], got {!r}".format(
            AUTOAUGMENT_PARAMETER_MAX, level))


def _mean_contrast(img, factor, overflow="clip"):
    """PIL ImageEnhance.Contrast: blend from the image's mean gray level, int(mean + 0.5), towards it.

    (`contrast` keeps the RandAugment reference's pixel-count/256 quirk; TFM's PIL contrast uses the
    real mean of the "L" image.)
    """
    img = uint8_image(img)
    height, width, _ = hwc(img)
    count = height * width
    total = tf.reduce_sum(grayscale_l(img))
    mean = (2 * total + count) // (2 * count)  # floor(total / count + 0.5), exactly
    degenerate = tf.fill(hwc(img), tf.cast(mean, tf.uint8))
    return same_shape(blend(degenerate, img, factor, overflow), img)


# A named policy: its sub-policies, its level -> arguments mapping, and whether Contrast blends from the
# image's real mean gray level (PIL's, the CIFAR code's) or from TFM's pixel-count / 256.
Policy = collections.namedtuple("Policy", ["subpolicies", "parameters", "mean_contrast"])
POLICIES = collections.OrderedDict([
    ("cifar10", Policy(CIFAR10_POLICY, autoaugment_parameters, True)),
    ("cifar10-tfm-good", Policy(TFM_GOOD_POLICIES, autoaugment_parameters, True)),
    ("imagenet", Policy(IMAGENET_POLICY, imagenet_parameters, False)),
])


def _autoaugment_unsigned(name, img, args, seed, overflow, mean_contrast=True, fill=FILL):
    if name == "Solarize" and args[0] >= 256:
        return tf.identity(img)  # threshold 256 changes nothing (the kernel would take it modulo 256)
    if name == "Contrast" and mean_contrast:
        return _mean_contrast(img, args[0], overflow)
    if name == "SolarizeAdd":
        return solarize_add(img, args[0])
    if name == "Cutout":
        return tf.identity(img) if args[0] <= 0 else random_cutout(img, args[0], fill=fill, seed=seed)
    return apply_op(name, img, args, seed, overflow)


def check_policy(policy, parameters=autoaugment_parameters):
    """The policy as a tuple of sub-policies of (op, prob, level) triples, or a UsageError."""
    if not policy:
        raise UsageError("an AutoAugment policy needs at least one sub-policy")
    checked = []
    for sub in policy:
        ops = []
        for entry in sub:
            name, prob, level = entry
            parameters(name, level)
            if not 0.0 <= float(prob) <= 1.0:
                raise UsageError("AutoAugment probability must be in [0, 1], got {!r} for {}".format(prob, name))
            ops.append((name, float(prob), level))
        checked.append(tuple(ops))
    return tuple(checked)


@no_autograph
def autoaugment(img, seed=None, overflow="clip", policy=None, family="cifar10", fill=FILL):
    """AutoAugment on one uint8 HWC image: pick one sub-policy uniformly, then apply each of its ops
    in order with its own probability (independent draws u < p, so p = 0 never and p = 1 always
    applies) and fixed level, signed ops getting a random sign each. `family` (a POLICIES name) gives the
    level mapping and, unless `policy` replaces them, the sub-policies; `fill` (grey, or one value per
    channel) is what geometric ops and cutout leave.
    """
    img = uint8_image(img)
    check_overflow(overflow)
    if family not in POLICIES:
        raise UsageError("unknown AutoAugment policy {!r}; choose one of {}".format(family, ", ".join(POLICIES)))
    parameters, mean_contrast = POLICIES[family].parameters, POLICIES[family].mean_contrast
    policy = check_policy(POLICIES[family].subpolicies if policy is None else policy, parameters)
    shape = hwc(img)
    width = max(len(sub) for sub in policy)
    seeds = op_seeds(seed)
    choice = tf.random.uniform([], 0, len(policy), tf.int32, seed=next(seeds))
    draws = tf.random.uniform([max(width, 1)], seed=next(seeds))
    negative = tf.cast(tf.random.uniform([max(width, 1)], seed=next(seeds)) < 0.5, tf.int32)
    position_seeds = [next(seeds) for _ in range(width)]
    out = img
    # One switch per op position (as randaugment does), not one per sub-policy: branch 0 is identity,
    # then each distinct unsigned (op, arguments) of that position, then one gather for every signed op
    # through its + or - sampling map. Fewer branches, much less tf.data function set-up time.
    for j in range(width):
        unsigned = []
        branch_of = np.zeros(len(policy), np.int32)
        prob_of = np.zeros(len(policy), np.float32)
        map_row = np.zeros(len(policy), np.int32)
        transforms = []
        signed_subs = []
        for k, sub in enumerate(policy):
            if j >= len(sub) or sub[j][1] <= 0.0:
                continue
            name, prob, level = sub[j]
            args = parameters(name, level)
            prob_of[k] = prob
            if name in SIGNED_OPS:
                signed_subs.append(k)
                map_row[k] = len(transforms)
                transforms += [TRANSFORMS[name](shape, sign * args[0]) for sign in (1, -1)]
            else:
                if (name, args) not in unsigned:
                    unsigned.append((name, args))
                branch_of[k] = 1 + unsigned.index((name, args))
        branch_of[signed_subs] = 1 + len(unsigned)
        branches = [lambda x=out: tf.identity(x)]
        branches += [lambda x=out, n=name, a=args, j=j: _autoaugment_unsigned(n, x, a, position_seeds[j], overflow,
                                                                              mean_contrast, fill)
                     for name, args in unsigned]
        if transforms:
            maps = SamplingMaps(shape, transforms)
            branches.append(lambda x=out, j=j, maps=maps, map_row=map_row: sample(
                x, maps(tf.gather(map_row, choice) + negative[j]), fill))
        applied = draws[j] < tf.gather(prob_of, choice)  # u in [0, 1): p = 1 always, p = 0 never applies
        branch = tf.where_v2(applied, tf.gather(branch_of, choice), 0)
        out = same_shape(switch(branch, branches), img)
    return out
