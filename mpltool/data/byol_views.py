"""BYOL's two-view augmentation (Grill et al. 2020) as garder14/byol-tensorflow2 does it on CIFAR-10.

Reference: augmentation.py of that repository (facts: docs/byol.md, section 3).
One view of an image, in this order:

1. crop: a = random int in [round(13/32·S), S] (13..32 for S = 32), b = floor(a·U(0.67, 1)), swap
   the two with p 0.5, then a random a x b (height x width) crop;
2. flip: with p 0.5 call a left-right flip that itself flips with p 0.5 (net p 0.25, kept on purpose);
3. resize back to S x S, bilinear with half-pixel centres (TF2's `tf.image.resize`);
4. colour jitter with p 0.8, in order: brightness ±0.4, contrast [0.6, 1.4], saturation [0.6, 1.4],
   hue ±0.1 (tf.image.random_*), then clip to [0, 1] -- no clip between the four ops, as the reference;
5. grayscale with p 0.2 (luma 0.2989 R + 0.5870 G + 0.1140 B, tiled to 3 channels).

The reference works on floats in [0, 1] (uint8 / 255, float64 division cast to float32) and so do these
functions inside; the public views take a uint8 HWC image and return float32 on the pixel scale
[0, 255] (x 255), because the input pipeline applies the network's input spec afterwards (x / 255 for
the BYOL ResNet). Its `if`s on tensors become tf.cond here (its functions are tf.functions, so
AutoGraph turns them into conds there too): graph mode, usable in Dataset.map.

Seeds: every random op gets its own op seed, `augment.derived_seed(seed, k)` with k fixed per op
(layout below), so a seeded view is reproducible and no two ops of a view or of a pair share a seed.
"""

import math

from mpltool.data.augment.ops import derived_seed, no_autograph, uint8_image
from mpltool.tfv1 import tf

# Smallest crop side at S = 32 (the reference's minval=13); other sizes scale it.
MIN_CROP_SIDE_32 = 13
CROP_RATIO_LOW = 0.67  # b = floor(a · U(0.67, 1))
FLIP_GATE_P = 0.5  # the gate in front of random_flip_left_right (which flips with p 0.5 itself)
JITTER_P = 0.8
BRIGHTNESS_DELTA = 0.4
CONTRAST_RANGE = (0.6, 1.4)
SATURATION_RANGE = (0.6, 1.4)
HUE_DELTA = 0.1
GRAYSCALE_P = 0.2

# Op-seed layout of one view, offsets from its seed: 1-6 crop/flip/resize (crop side, ratio, swap, crop
# offset, flip gate, flip), 7-11 colour jitter (gate, brightness, contrast, saturation, hue), 12
# grayscale gate. A pair's second view starts _VIEW_SEED_STRIDE further on, past all of them.
_CROP_FLIP_OFFSET = 1
_JITTER_OFFSET = 7
_GRAYSCALE_OFFSET = 12
_VIEW_SEED_STRIDE = 16

# No Python control flow on tensors here: skip AutoGraph's conversion in Dataset.map (as augment/ops.py does).


def _check_image(image):
    """The input as a uint8 tensor of static square HWC shape with 3 channels; returns (tensor, S)."""
    image = uint8_image(image, "BYOL views")
    shape = image.shape
    if int(shape[0]) != int(shape[1]) or int(shape[2]) != 3:
        raise ValueError("BYOL views need a static square RGB image [S, S, 3], got {}".format(shape))
    return image, int(shape[0])


def to_unit_float(image):
    """uint8 -> float32 in [0, 1] as the reference (numpy x/255. in float64, then cast to float32)."""
    return tf.cast(tf.cast(image, tf.float64) / 255.0, tf.float32)


REFERENCE_MIN_CROP = MIN_CROP_SIDE_32 / 32.0  # the reference's shortest crop side, as a fraction of S


def min_crop_side(size, min_crop=REFERENCE_MIN_CROP):
    """round(min_crop · S), half up, at least 1: the reference's 13 at S = 32 (min_crop = 13/32)."""
    return max(1, int(math.floor(min_crop * size + 0.5)))


def crop_size(size, seed=None, min_crop=REFERENCE_MIN_CROP):
    """int32 [2] (height, width) of one random crop of an S x S image (S = `size`).

    a ~ U{min_crop_side(S), ..., S}; b = floor(a · u) with u ~ U[0.67, 1) in float32, so b < a (the
    int cast truncates, which is floor for positive values); (height, width) = (a, b), swapped with p 0.5.
    Uses op seeds seed+0 (a), +1 (u), +2 (swap).
    """
    a = tf.random.uniform([], min_crop_side(size, min_crop), size + 1, tf.int32, seed=derived_seed(seed, 0))
    a_float = tf.cast(a, tf.float32)
    b = tf.cast(a_float * tf.random.uniform([], CROP_RATIO_LOW, 1.0, seed=derived_seed(seed, 1)), tf.int32)
    swap = tf.random.uniform([], seed=derived_seed(seed, 2)) < 0.5
    return tf.where(swap, tf.stack([b, a]), tf.stack([a, b]))


def random_flip(image, seed=None):
    """With p 0.5, tf.image.random_flip_left_right (itself p 0.5): a net p 0.25 flip, as the reference's
    `if u < 0.5: random_flip_left_right(image)`. Op seeds seed+0 (gate), +1 (the inner flip)."""
    gate = tf.random.uniform([], seed=derived_seed(seed, 0)) < FLIP_GATE_P
    out = tf.cond(gate, lambda: tf.image.random_flip_left_right(image, seed=derived_seed(seed, 1)),
                  lambda: tf.identity(image))
    out.set_shape(image.shape)
    return out


def resize(image, size):
    """Bilinear resize of an HWC float image to size x size with half-pixel centres: TF2's
    tf.image.resize (resize_images_v2, antialias off), which the reference calls. TF1's
    tf.image.resize defaults to corner-aligned sampling (half_pixel_centers=False), hence the
    explicit kernel call."""
    out = tf.image.resize_bilinear(tf.expand_dims(image, 0), [size, size], half_pixel_centers=True)[0]
    out.set_shape([size, size, image.shape[-1]])
    return out


def random_crop_flip_resize(image, seed=None, min_crop=REFERENCE_MIN_CROP):
    """Steps 1-3 on a float [0, 1] S x S x 3 image: crop (seed+0..2 size, +3 offset), flip (+4, +5),
    resize back to S x S."""
    size = int(image.shape[0])
    height_width = crop_size(size, seed=seed, min_crop=min_crop)
    crop = tf.image.random_crop(image, tf.concat([height_width, [3]], 0), seed=derived_seed(seed, 3))
    crop = random_flip(crop, seed=derived_seed(seed, 4))
    return resize(crop, size)


def color_jitter(image, seed=None):
    """The jitter branch: brightness, contrast, saturation, hue in the reference's order, then one clip
    to [0, 1]. Op seeds seed+0 (brightness), +1 (contrast), +2 (saturation), +3 (hue).

    brightness adds delta ~ U[-0.4, 0.4); contrast maps x -> mean + f·(x - mean) per channel (mean over
    the image), f ~ U[0.6, 1.4); saturation scales HSV saturation by f ~ U[0.6, 1.4) (the kernel clamps
    it to [0, 1]); hue shifts HSV hue by delta ~ U[-0.1, 0.1) of a turn.
    """
    out = tf.image.random_brightness(image, BRIGHTNESS_DELTA, seed=derived_seed(seed, 0))
    out = tf.image.random_contrast(out, CONTRAST_RANGE[0], CONTRAST_RANGE[1], seed=derived_seed(seed, 1))
    out = tf.image.random_saturation(out, SATURATION_RANGE[0], SATURATION_RANGE[1], seed=derived_seed(seed, 2))
    out = tf.image.random_hue(out, HUE_DELTA, seed=derived_seed(seed, 3))
    return tf.clip_by_value(out, 0.0, 1.0)


def random_color_jitter(image, p=JITTER_P, seed=None):
    """color_jitter with probability p (gate: op seed seed+0; the jitter: seed+1..4), else the input."""
    gate = tf.random.uniform([], seed=derived_seed(seed, 0)) < p
    out = tf.cond(gate, lambda: color_jitter(image, seed=derived_seed(seed, 1)), lambda: tf.identity(image))
    out.set_shape(image.shape)
    return out


def grayscale(image):
    """tf.image.rgb_to_grayscale (luma 0.2989 R + 0.5870 G + 0.1140 B) tiled back to 3 channels."""
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def random_grayscale(image, p=GRAYSCALE_P, seed=None):
    """grayscale with probability p (gate: op seed seed+0), else the input."""
    gate = tf.random.uniform([], seed=derived_seed(seed, 0)) < p
    out = tf.cond(gate, lambda: grayscale(image), lambda: tf.identity(image))
    out.set_shape(image.shape)
    return out


@no_autograph
def byol_view(image, seed=None, min_crop=REFERENCE_MIN_CROP, grayscale_p=GRAYSCALE_P):
    """One BYOL pretraining view (steps 1-5) of a uint8 [S, S, 3] image: float32 [S, S, 3] in [0, 255].

    Op seeds: seed+1..6 crop/flip/resize, seed+7..11 colour jitter, seed+12 grayscale.
    """
    image, _ = _check_image(image)
    x = random_crop_flip_resize(to_unit_float(image), seed=derived_seed(seed, _CROP_FLIP_OFFSET), min_crop=min_crop)
    x = random_color_jitter(x, seed=derived_seed(seed, _JITTER_OFFSET))
    x = random_grayscale(x, p=grayscale_p, seed=derived_seed(seed, _GRAYSCALE_OFFSET))
    return x * 255.0


@no_autograph
def byol_pair(image, seed=None, min_crop=REFERENCE_MIN_CROP, grayscale_p=GRAYSCALE_P):
    """(view1, view2): two independent byol_views of one image, the second with its op seeds
    _VIEW_SEED_STRIDE (16) past the first's, so no op seed is shared. Unseeded, TF gives every op its
    own seed from the graph seed."""
    return (byol_view(image, seed=derived_seed(seed, 0), min_crop=min_crop, grayscale_p=grayscale_p),
            byol_view(image, seed=derived_seed(seed, _VIEW_SEED_STRIDE), min_crop=min_crop, grayscale_p=grayscale_p))


@no_autograph
def crop_flip_resize_view(image, seed=None, min_crop=REFERENCE_MIN_CROP, grayscale_p=None):
    """Steps 1-3 only (the reference's linear-evaluation training augmentation): uint8 [S, S, 3] in,
    float32 [S, S, 3] in [0, 255] out. Same op seeds as byol_view's first three steps. `grayscale_p` is
    accepted (the views share one options dict) and not used: the linear evaluation sees colour."""
    image, _ = _check_image(image)
    return random_crop_flip_resize(to_unit_float(image), seed=derived_seed(seed, _CROP_FLIP_OFFSET),
                                   min_crop=min_crop) * 255.0
