"""The uint8 image ops the augmentation policies are made of (TF 1.15 graph mode, for Dataset.map): colour
ops, geometry through precomputed sampling maps, cutout, flip/pad/crop, and the helpers the policies
(randaugment.py, autoaugment.py) and the training views (mpltool/data/views.py) share.

Semantics follow the reference RandAugment (google-research meta_pseudo_labels/augment.py and
data_utils.py; docs/mpl-reference.md §1). The colour ops' `blend` has two modes (recipe key
`augment_overflow`), see `blend`:
- `wrap`, the seed's and the reference's blend bit for bit: float32 on the [0, 1] scale, clipped below
  at 0, then TF 1.15's `convert_image_dtype` without saturation (x 255.5, truncated, modulo 256), so a
  pixel pushed past 255 wraps to a dark value (100 at enhance factor 2.98 becomes 42);
- `clip`, mpltool's earlier blend: float32 on the [0, 255] scale, clipped to [0, 255], truncated.
Other deliberate differences, each tested:
- Grayscale, autocontrast and the sharpness filter use exact integer arithmetic, where the reference
  truncates float32 results (at most 1 apart); geometric sampling maps are computed in float64.
- Geometric ops gather nearest neighbours instead of calling tf.contrib.image (not reachable through
  tf.compat.v1) with its coordinates, rounding (half away from zero) and fill-where-outside.
Reference quirks that are kept on purpose are commented where they happen (solarize, contrast).

Every op needs a static HWC shape: masks and sampling maps become graph constants, which keeps the
per-image work to a few kernels (tf.data pays ~2-20 us per kernel on a 32x32 image).
"""


import itertools
import math
import numbers

import numpy as np

from mpltool.errors import UsageError
from mpltool.tfv1 import tf

FILL = 128

# What the colour ops' blend does with values past 0 and 255 (recipe key augment_overflow); see `blend`.
OVERFLOW_MODES = ("wrap", "clip")

# The reference flips the sign of these parameters with probability 1/2; the others are used as is.
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})

# Dataset.map runs AutoGraph over every function it reaches, which costs seconds per pipeline build
# here and buys nothing: these functions have no Python control flow on tensors.
no_autograph = tf.autograph.experimental.do_not_convert


def uint8_image(img, what="augmentation ops"):
    """The input as a uint8 tensor of static HWC shape (masks and sampling maps are built from it)."""
    img = tf.convert_to_tensor(img)
    if img.dtype != tf.uint8:
        raise ValueError("{} take a uint8 HWC image, got {}".format(what, img.dtype.name))
    if img.shape.ndims != 3 or not img.shape.is_fully_defined():
        raise ValueError("{} need a static HWC image shape, got {}; call set_shape first".format(what, img.shape))
    return img


def hwc(img):
    return tuple(int(d) for d in img.shape)


def same_shape(out, img):
    """Keep the input's static shape so tf.cond branches and Dataset.map stay fully shaped."""
    out.set_shape(img.shape)
    return out


def op_seeds(seed):
    """Distinct op-level seeds (ops sharing a seed would draw identical numbers), or all None."""
    if seed is None:
        return itertools.repeat(None)
    return itertools.count(int(seed) * 1000)


# ---------------------------------------------------------------------------------------------- colour


def check_overflow(overflow):
    """`overflow` if it names a blend mode (OVERFLOW_MODES), else a UsageError."""
    if overflow not in OVERFLOW_MODES:
        raise UsageError("augment overflow must be one of {}, got {!r}".format(", ".join(OVERFLOW_MODES), overflow))
    return overflow


@no_autograph
def blend(img1, img2, factor, overflow="clip"):
    """img1 + factor*(img2 - img1) as uint8; `overflow` says what happens past 0 and 255.

    "clip": in float32 on the [0, 255] scale, clipped to [0, 255], truncated.

    "wrap": the seed's (and google-research's) blend, op for op. Both images go to the [0, 1] scale
    (uint8 * float32(1/255)); out = a + factor*(b - a); for factors outside (0, 1) out is clipped to
    [0, 255] -- on the [0, 1] scale, so that clip only catches values below 0 (they become 0); then
    `convert_image_dtype(out, uint8)` multiplies by 255.5 and casts WITHOUT saturation, which in TF 1.15
    truncates and keeps the low 8 bits: 1.1686 -> 298.58 -> 298 -> 42. The wrap is written out here
    (int32 cast, & 255) instead of relying on the float->uint8 cast, whose out-of-range result C++
    leaves undefined (it is the low byte on x86 TF 1.15, measured). Factors 0 and 1 return img1 and img2
    untouched, as the seed's tf.case does.
    """
    check_overflow(overflow)
    a = tf.cast(img1, tf.float32)
    b = tf.cast(img2, tf.float32)
    factor_t = tf.cast(factor, tf.float32)
    if overflow == "clip":
        return tf.cast(tf.clip_by_value(a + factor_t * (b - a), 0.0, 255.0), tf.uint8)
    static = isinstance(factor, numbers.Real) and not isinstance(factor, bool)
    if static and factor in (0, 1):
        return tf.cast(img2 if factor == 1 else img1, tf.uint8)
    a = a * (1.0 / 255.0)  # convert_image_dtype(uint8 -> float32)
    b = b * (1.0 / 255.0)
    out = a + factor_t * (b - a)
    if not static:
        out = tf.where_v2(tf.logical_and(0.0 < factor_t, factor_t < 1.0), out, tf.clip_by_value(out, 0.0, 255.0))
    elif not 0.0 < factor < 1.0:
        out = tf.clip_by_value(out, 0.0, 255.0)
    out = tf.cast(tf.bitwise.bitwise_and(tf.cast(out * 255.5, tf.int32), 255), tf.uint8)
    if not static:
        out = tf.where_v2(tf.equal(factor_t, 0.0), tf.cast(img1, tf.uint8),
                          tf.where_v2(tf.equal(factor_t, 1.0), tf.cast(img2, tf.uint8), out))
    return out


def grayscale_l(img):
    """PIL's "L" conversion, (299 R + 587 G + 114 B)/1000 rounded, as an int32 [H, W, 1] image."""
    x = tf.cast(img, tf.int32)
    gray = (x[:, :, 0:1] * 299 + x[:, :, 1:2] * 587 + x[:, :, 2:3] * 114 + 500) // 1000
    return gray


@no_autograph
def auto_contrast(img):
    """Stretch each channel linearly so its minimum becomes 0 and its maximum 255."""
    img = uint8_image(img)
    x = tf.cast(img, tf.int32)
    lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
    flat = hi <= lo  # a flat channel stays as it is: stretch it by 255/255 from 0
    lo = tf.where(flat, tf.zeros_like(lo), lo)
    span = tf.where(flat, tf.fill(tf.shape(lo), 255), hi - lo)
    return same_shape(tf.cast((x - lo) * 255 // span, tf.uint8), img)


@no_autograph
def equalize(img):
    """PIL ImageOps.equalize per channel: LUT from the histogram, step excluding the top value's count."""
    img = uint8_image(img)
    height, width, channels = hwc(img)
    flat = tf.reshape(tf.cast(img, tf.int32), [height * width, channels])
    ids = flat + np.arange(channels, dtype=np.int32) * 256  # one histogram per channel, side by side
    bins = channels * 256
    hist = tf.reshape(tf.math.bincount(ids, minlength=bins, maxlength=bins), [channels, 256])
    top_count = tf.reduce_sum(hist * tf.one_hot(tf.reduce_max(flat, axis=0), 256, dtype=tf.int32), axis=1)
    step = tf.expand_dims((height * width - top_count) // 255, 1)
    lut = (tf.cumsum(hist, axis=1, exclusive=True) + step // 2) // tf.maximum(step, 1)
    identity = np.tile(np.arange(256, dtype=np.int32), (channels, 1))
    # (tf.where with equal shapes: broadcasting SelectV2 is ~20x slower per element in TF 1.15.)
    lut = tf.where(tf.equal(tf.tile(step, [1, 256]), 0), identity, tf.clip_by_value(lut, 0, 255))
    out = tf.reshape(tf.gather(tf.reshape(lut, [-1]), ids), [height, width, channels])
    return same_shape(tf.cast(out, tf.uint8), img)


@no_autograph
def invert(img):
    img = uint8_image(img)
    return same_shape(tf.constant(255, tf.uint8) - img, img)


@no_autograph
def posterize(img, bits):
    """Keep the top `bits` bits of every value; bits outside 0..8 are clamped (8 keeps the image)."""
    img = uint8_image(img)
    bits = min(max(int(bits), 0), 8)
    mask = (0xFF << (8 - bits)) & 0xFF
    return same_shape(tf.bitwise.bitwise_and(img, tf.constant(mask, tf.uint8)), img)


@no_autograph
def solarize(img, threshold):
    """Invert values >= threshold.

    The reference casts the threshold to the image dtype, and TF 1.15 wraps int32 -> uint8, so its
    magnitude-16 threshold 409 becomes 409 % 256 = 153 (verified in the venv). Kept as is: thresholds
    are taken modulo 256, so solarize(img, 409) == solarize(img, 153).
    """
    img = uint8_image(img)
    wrapped = tf.constant(int(threshold) % 256, tf.uint8)
    return same_shape(tf.where(img < wrapped, img, tf.constant(255, tf.uint8) - img), img)


@no_autograph
def solarize_add(img, addition, threshold=128):
    """tensorflow/models' SolarizeAdd: values below `threshold` get `addition` added (clipped to 0..255),
    the others are kept."""
    img = uint8_image(img)
    added = tf.cast(tf.clip_by_value(tf.cast(img, tf.int32) + int(addition), 0, 255), tf.uint8)
    return same_shape(tf.where(img < tf.constant(int(threshold), tf.uint8), added, img), img)


@no_autograph
def color(img, factor, overflow="clip"):
    """PIL Color: blend from the grayscale image towards the input."""
    img = uint8_image(img)
    gray = tf.tile(grayscale_l(img), [1, 1, hwc(img)[2]])
    return same_shape(blend(gray, img, factor, overflow), img)


@no_autograph
def contrast(img, factor, overflow="clip"):
    """Blend from a constant image towards the input.

    The reference means to use the mean gray level, but computes sum(histogram)/256, i.e. the pixel
    count / 256 (4 for 32x32): kept, so magnitude-16 contrast behaves like the run it reproduces.
    """
    img = uint8_image(img)
    height, width, _ = hwc(img)
    level = min(int(height * width / 256.0), 255)
    return same_shape(blend(np.full(hwc(img), level, np.uint8), img, factor, overflow), img)


@no_autograph
def brightness(img, factor, overflow="clip"):
    img = uint8_image(img)
    return same_shape(blend(tf.zeros_like(img), img, factor, overflow), img)


@no_autograph
def sharpness(img, factor, overflow="clip"):
    """PIL Sharpness: blend from the SMOOTH-filtered image (borders unfiltered) towards the input."""
    img = uint8_image(img)
    height, width, channels = hwc(img)
    x = tf.cast(img, tf.float32)
    # SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 on the interior, as separable slice sums
    # (TF 1.15's depthwise_conv2d costs ~100 us on a 32x32 image; these slices a fraction of that).
    row_sums = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
    sums = row_sums[:-2] + row_sums[1:-1] + row_sums[2:] + 4.0 * x[1:-1, 1:-1]
    # The sums are exact integers, so floor((sum + 0.5) / 13) is exactly sum // 13: no float quotient
    # lies within 0.5/13 of an integer it must not reach.
    smooth = tf.pad(tf.floor((sums + 0.5) / 13.0), [[1, 1], [1, 1], [0, 0]])
    interior = np.zeros((height, width, channels), bool)  # the border keeps the original pixels
    interior[1:-1, 1:-1] = True
    degenerate = tf.where(interior, smooth, x)
    return same_shape(blend(degenerate, img, factor, overflow), img)


# ------------------------------------------------------------------------------------------- geometry
# Geometric ops take Python numbers: the source pixel of every output pixel is computed once in numpy
# when the graph is built, so the per-image work is a single gather.


def _round_half_away(v):
    """std::round, as the tf.contrib.image NEAREST kernel rounds (np.round rounds half to even)."""
    magnitude = np.abs(v)
    whole = np.floor(magnitude)
    return np.sign(v) * (whole + (magnitude - whole >= 0.5))


def source_index(shape, transform):
    """Flat source index of every output pixel, -1 where it falls outside.

    As in tf.contrib.image.transform, output (y, x) reads input (b0 x + b1 y + b2, a0 x + a1 y + a2),
    rounded to the nearest pixel, for transform = (a0, a1, a2, b0, b1, b2).
    """
    height, width = shape[0], shape[1]
    a0, a1, a2, b0, b1, b2 = (float(v) for v in transform)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    src_x = _round_half_away(a0 * xs + a1 * ys + a2).astype(np.int64)
    src_y = _round_half_away(b0 * xs + b1 * ys + b2).astype(np.int64)
    inside = (src_x >= 0) & (src_x < width) & (src_y >= 0) & (src_y < height)
    return np.where(inside, src_y * width + src_x, -1).astype(np.int32)


# A sampling map as a graph constant costs H*W*4 bytes: nothing at 32x32, 200 KB at 224x224, where a
# policy's two dozen maps would weigh down the input graph and every checkpoint's meta graph. Above this
# many pixels each image's map is computed from its six transform numbers instead (the same float64
# arithmetic and rounding as `source_index`, tested equal).
CONSTANT_MAP_PIXELS = 96 * 96


class SamplingMaps:
    """The sampling maps of a list of transforms, picked per image by an int32 row tensor: constants
    (one gather) for small images, computed in the graph for large ones."""

    def __init__(self, shape, transforms):
        self.shape = tuple(shape)
        self.transforms = np.asarray(transforms, np.float64).reshape(-1, 6)
        small = self.shape[0] * self.shape[1] <= CONSTANT_MAP_PIXELS
        self.constants = np.stack([source_index(self.shape, t) for t in self.transforms]) if small else None

    def __call__(self, row):
        if self.constants is not None:
            return tf.gather(self.constants, row)
        return _source_index_tensor(self.shape, tf.gather(self.transforms, row))


def _source_index_tensor(shape, transform):
    """`source_index` of one float64 [6] transform tensor, in the graph."""
    height, width = shape[0], shape[1]
    xs = tf.cast(tf.range(width), tf.float64)[None, :]  # broadcast to [H, W] by the arithmetic below
    ys = tf.cast(tf.range(height), tf.float64)[:, None]
    a0, a1, a2, b0, b1, b2 = tf.unstack(transform)

    def rounded(v):  # half away from zero, as _round_half_away
        magnitude = tf.abs(v)
        whole = tf.floor(magnitude)
        return tf.cast(tf.sign(v) * (whole + tf.cast(magnitude - whole >= 0.5, tf.float64)), tf.int32)

    src_x = rounded(a0 * xs + a1 * ys + a2)
    src_y = rounded(b0 * xs + b1 * ys + b2)
    inside = (src_x >= 0) & (src_x < width) & (src_y >= 0) & (src_y < height)
    return tf.where(inside, src_y * width + src_x, tf.fill([height, width], -1))


def _rotation(shape, degrees):
    """tf.contrib.image.rotate's matrix: counter-clockwise about the centre of the pixel grid."""
    radians = float(degrees) * math.pi / 180.0
    cos, sin = math.cos(radians), math.sin(radians)
    last_x, last_y = shape[1] - 1.0, shape[0] - 1.0
    x_offset = (last_x - (cos * last_x - sin * last_y)) / 2.0
    y_offset = (last_y - (sin * last_x + cos * last_y)) / 2.0
    return (cos, -sin, x_offset, sin, cos, y_offset)


TRANSFORMS = {
    "Rotate": _rotation,
    "ShearX": lambda shape, level: (1.0, level, 0.0, 0.0, 1.0, 0.0),
    "ShearY": lambda shape, level: (1.0, 0.0, 0.0, level, 1.0, 0.0),
    "TranslateX": lambda shape, pixels: (1.0, 0.0, pixels, 0.0, 1.0, 0.0),
    "TranslateY": lambda shape, pixels: (1.0, 0.0, 0.0, 0.0, 1.0, pixels),
}


def sample(img, index, fill=FILL):
    """Output pixel (y, x) = input pixel index[y, x] (flat), or `fill` where index is negative.

    One gather from [fill pixel, pixels...]: cheaper than masking, which in TF 1.15 means a
    broadcasting SelectV2 at ~20x the per-element cost.
    """
    height, width, channels = hwc(img)
    fill_row = np.broadcast_to(np.asarray(fill, np.uint8), (channels,)).reshape(1, channels)  # grey or per channel
    table = tf.concat([tf.constant(fill_row), tf.reshape(img, [height * width, channels])], 0)
    if isinstance(index, np.ndarray):
        rows = np.maximum(index + 1, 0)
    else:
        rows = tf.maximum(index + 1, 0)
    return same_shape(tf.gather(table, rows), img)


def _geometric(name, img, parameter):
    img = uint8_image(img)
    return sample(img, source_index(hwc(img), TRANSFORMS[name](hwc(img), parameter)))


@no_autograph
def rotate(img, degrees):
    """Rotate counter-clockwise by `degrees` about the image centre."""
    return _geometric("Rotate", img, degrees)


@no_autograph
def shear_x(img, level):
    """PIL-style shear about the top-left corner: output (y, x) takes input (y, x + level*y)."""
    return _geometric("ShearX", img, level)


@no_autograph
def shear_y(img, level):
    """Output (y, x) takes input (y + level*x, x)."""
    return _geometric("ShearY", img, level)


@no_autograph
def translate_x(img, pixels):
    """Output (y, x) takes input (y, x + pixels): positive pixels move the content left, like PIL."""
    return _geometric("TranslateX", img, pixels)


@no_autograph
def translate_y(img, pixels):
    """Output (y, x) takes input (y + pixels, x): positive pixels move the content up."""
    return _geometric("TranslateY", img, pixels)


@no_autograph
def cutout_at(img, center_y, center_x, size, fill=FILL):
    """Fill rows [cy - size//2, cy - size//2 + size) x the same for columns, clipped at the borders."""
    img = uint8_image(img)
    height, width, _ = hwc(img)
    top = center_y - size // 2
    left = center_x - size // 2
    rows = np.arange(height, dtype=np.int32)
    cols = np.arange(width, dtype=np.int32)
    in_rows = tf.logical_and(rows >= top, rows < top + size)
    in_cols = tf.logical_and(cols >= left, cols < left + size)
    covered = tf.logical_and(in_rows[:, None], in_cols[None, :])
    identity = np.arange(height * width, dtype=np.int32).reshape(height, width)
    return sample(img, tf.where(covered, tf.fill([height, width], -1), identity), fill)


@no_autograph
def random_cutout(img, size=16, fill=FILL, seed=None):
    """Cutout with a centre uniform over the pixels, so the square may hang over the border."""
    img = uint8_image(img)
    height, width, _ = hwc(img)
    center = tf.random.uniform([], 0, height * width, tf.int32, seed=next(op_seeds(seed)))
    return cutout_at(img, center // width, center % width, size, fill)


@no_autograph
def flip_pad_crop(img, pad=4, fill=FILL, seed=None, reflect=False):
    """Random horizontal flip, pad `pad` px on every side (of `fill`, or mirrored as tf.pad's REFLECT,
    the edge not repeated), random crop back to the input size."""
    img = uint8_image(img)
    seeds = op_seeds(seed)
    height, width, _ = hwc(img)
    rows = np.arange(height, dtype=np.int32)
    cols = np.arange(width, dtype=np.int32)
    flip = tf.random.uniform([], seed=next(seeds)) < 0.5
    # Crop offset o in [0, 2 pad] of the padded image = shift o - pad of the flipped image; the whole
    # flip + pad + crop is then a single gather.
    shift = tf.random.uniform([2], 0, 2 * pad + 1, tf.int32, seed=next(seeds)) - pad
    src_y = rows + shift[0]
    flipped_x = cols + shift[1]
    if reflect:  # REFLECT: index -i for i < 0, 2(n - 1) - i for i >= n (pad < n, so one fold suffices)
        src_y = (height - 1) - tf.abs((height - 1) - tf.abs(src_y))
        flipped_x = (width - 1) - tf.abs((width - 1) - tf.abs(flipped_x))
    src_x = tf.where(flip, (width - 1) - flipped_x, flipped_x)
    # Outside rows/columns get a large negative offset so that every sum involving them stays < 0.
    outside = -2 * height * width
    row_start = tf.where((src_y >= 0) & (src_y < height), src_y * width, tf.fill([height], outside))
    col = tf.where((src_x >= 0) & (src_x < width), src_x, tf.fill([width], outside))
    return sample(img, row_start[:, None] + col[None, :], fill)


def switch(index, branches, first=0):
    """branches[index]() as a balanced tree of tf.cond (tf.switch_case is not in TF 1.15's v1 API).

    A tree nests each branch in log2(n) conds instead of the n of tf.case's chain: fewer Switch
    nodes, which tf.data runs (as dead tensors) for every branch of every image.
    """
    if len(branches) == 1:
        return branches[0]()
    half = len(branches) // 2
    return tf.cond(index < first + half,
                   lambda: switch(index, branches[:half], first),
                   lambda: switch(index, branches[half:], first + half))


def jitter(img, seed, fill=FILL):
    """The reference's flip + pad + crop, padding by image_size // 8 (4 px for CIFAR)."""
    img = uint8_image(img)
    return flip_pad_crop(img, pad=min(hwc(img)[:2]) // 8, fill=fill, seed=seed)


def derived_seed(seed, offset):
    """An op seed `offset` away from `seed`; None (unseeded) stays None."""
    return None if seed is None else int(seed) + offset
