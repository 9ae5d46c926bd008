"""Per-image uint8 augmentation for the MPL input pipeline (TF 1.15 graph mode, for Dataset.map).

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

RANDAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout",
)
# The reference flips the sign of these parameters with probability 1/2; the others are used as is.
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})

CIFAR_MEAN = (0.491400, 0.482158, 0.4465309)
CIFAR_STD = (0.247032, 0.243485, 0.26159)
# float32 like the reference (np.float32 array * 255), so normalisation is bit-identical to it.
_MEAN_255 = np.array(CIFAR_MEAN, np.float32) * np.float32(255.0)
_STD_255 = np.array(CIFAR_STD, np.float32) * np.float32(255.0)

_MAX_LEVEL = 10.0

# Dataset.map runs AutoGraph over every function it reaches, which costs seconds per pipeline build
# here and buys nothing: these functions have no Python control flow on tensors.
_no_autograph = tf.autograph.experimental.do_not_convert


def uint8_image(img, what="augmentation ops"):
    """The input as a uint8 tensor of static HWC shape (masks and sampling maps are built from it)."""
    img = tf.convert_to_tensor(img)
    if img.dtype != tf.uint8:
        raise ValueError("{} take a uint8 HWC image, got {}".format(what, img.dtype.name))
    if img.shape.ndims != 3 or not img.shape.is_fully_defined():
        raise ValueError("{} need a static HWC image shape, got {}; call set_shape first".format(what, img.shape))
    return img


def _hwc(img):
    return tuple(int(d) for d in img.shape)


def _same_shape(out, img):
    """Keep the input's static shape so tf.cond branches and Dataset.map stay fully shaped."""
    out.set_shape(img.shape)
    return out


def _seeds(seed):
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


@_no_autograph
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


def _grayscale(img):
    """PIL's "L" conversion, (299 R + 587 G + 114 B)/1000 rounded, as an int32 [H, W, 1] image."""
    x = tf.cast(img, tf.int32)
    gray = (x[:, :, 0:1] * 299 + x[:, :, 1:2] * 587 + x[:, :, 2:3] * 114 + 500) // 1000
    return gray


@_no_autograph
def auto_contrast(img):
    """Stretch each channel linearly so its minimum becomes 0 and its maximum 255."""
    img = uint8_image(img)
    x = tf.cast(img, tf.int32)
    lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
    flat = hi <= lo  # a flat channel stays as it is: stretch it by 255/255 from 0
    lo = tf.where(flat, tf.zeros_like(lo), lo)
    span = tf.where(flat, tf.fill(tf.shape(lo), 255), hi - lo)
    return _same_shape(tf.cast((x - lo) * 255 // span, tf.uint8), img)


@_no_autograph
def equalize(img):
    """PIL ImageOps.equalize per channel: LUT from the histogram, step excluding the top value's count."""
    img = uint8_image(img)
    height, width, channels = _hwc(img)
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
    return _same_shape(tf.cast(out, tf.uint8), img)


@_no_autograph
def invert(img):
    img = uint8_image(img)
    return _same_shape(tf.constant(255, tf.uint8) - img, img)


@_no_autograph
def posterize(img, bits):
    """Keep the top `bits` bits of every value; bits outside 0..8 are clamped (8 keeps the image)."""
    img = uint8_image(img)
    bits = min(max(int(bits), 0), 8)
    mask = (0xFF << (8 - bits)) & 0xFF
    return _same_shape(tf.bitwise.bitwise_and(img, tf.constant(mask, tf.uint8)), img)


@_no_autograph
def solarize(img, threshold):
    """Invert values >= threshold.

    The reference casts the threshold to the image dtype, and TF 1.15 wraps int32 -> uint8, so its
    magnitude-16 threshold 409 becomes 409 % 256 = 153 (verified in the venv). Kept as is: thresholds
    are taken modulo 256, so solarize(img, 409) == solarize(img, 153).
    """
    img = uint8_image(img)
    wrapped = tf.constant(int(threshold) % 256, tf.uint8)
    return _same_shape(tf.where(img < wrapped, img, tf.constant(255, tf.uint8) - img), img)


@_no_autograph
def color(img, factor, overflow="clip"):
    """PIL Color: blend from the grayscale image towards the input."""
    img = uint8_image(img)
    gray = tf.tile(_grayscale(img), [1, 1, _hwc(img)[2]])
    return _same_shape(blend(gray, img, factor, overflow), img)


@_no_autograph
def contrast(img, factor, overflow="clip"):
    """Blend from a constant image towards the input.

    The reference means to use the mean gray level, but computes sum(histogram)/256, i.e. the pixel
    count / 256 (4 for 32x32): kept, so magnitude-16 contrast behaves like the run it reproduces.
    """
    img = uint8_image(img)
    height, width, _ = _hwc(img)
    level = min(int(height * width / 256.0), 255)
    return _same_shape(blend(np.full(_hwc(img), level, np.uint8), img, factor, overflow), img)


@_no_autograph
def brightness(img, factor, overflow="clip"):
    img = uint8_image(img)
    return _same_shape(blend(tf.zeros_like(img), img, factor, overflow), img)


@_no_autograph
def sharpness(img, factor, overflow="clip"):
    """PIL Sharpness: blend from the SMOOTH-filtered image (borders unfiltered) towards the input."""
    img = uint8_image(img)
    height, width, channels = _hwc(img)
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
    return _same_shape(blend(degenerate, img, factor, overflow), img)


# ------------------------------------------------------------------------------------------- geometry
# Geometric ops take Python numbers: the source pixel of every output pixel is computed once in numpy
# when the graph is built, so the per-image work is a single gather.


def _round_half_away(v):
    """std::round, as the tf.contrib.image NEAREST kernel rounds (np.round rounds half to even)."""
    magnitude = np.abs(v)
    whole = np.floor(magnitude)
    return np.sign(v) * (whole + (magnitude - whole >= 0.5))


def _source_index(shape, transform):
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


def _rotation(shape, degrees):
    """tf.contrib.image.rotate's matrix: counter-clockwise about the centre of the pixel grid."""
    radians = float(degrees) * math.pi / 180.0
    cos, sin = math.cos(radians), math.sin(radians)
    last_x, last_y = shape[1] - 1.0, shape[0] - 1.0
    x_offset = (last_x - (cos * last_x - sin * last_y)) / 2.0
    y_offset = (last_y - (sin * last_x + cos * last_y)) / 2.0
    return (cos, -sin, x_offset, sin, cos, y_offset)


_TRANSFORMS = {
    "Rotate": _rotation,
    "ShearX": lambda shape, level: (1.0, level, 0.0, 0.0, 1.0, 0.0),
    "ShearY": lambda shape, level: (1.0, 0.0, 0.0, level, 1.0, 0.0),
    "TranslateX": lambda shape, pixels: (1.0, 0.0, pixels, 0.0, 1.0, 0.0),
    "TranslateY": lambda shape, pixels: (1.0, 0.0, 0.0, 0.0, 1.0, pixels),
}


def _sample(img, index, fill=FILL):
    """Output pixel (y, x) = input pixel index[y, x] (flat), or `fill` where index is negative.

    One gather from [fill pixel, pixels...]: cheaper than masking, which in TF 1.15 means a
    broadcasting SelectV2 at ~20x the per-element cost.
    """
    height, width, channels = _hwc(img)
    table = tf.concat([tf.fill([1, channels], tf.constant(fill, tf.uint8)),
                       tf.reshape(img, [height * width, channels])], 0)
    if isinstance(index, np.ndarray):
        rows = np.maximum(index + 1, 0)
    else:
        rows = tf.maximum(index + 1, 0)
    return _same_shape(tf.gather(table, rows), img)


def _geometric(name, img, parameter):
    img = uint8_image(img)
    return _sample(img, _source_index(_hwc(img), _TRANSFORMS[name](_hwc(img), parameter)))


@_no_autograph
def rotate(img, degrees):
    """Rotate counter-clockwise by `degrees` about the image centre."""
    return _geometric("Rotate", img, degrees)


@_no_autograph
def shear_x(img, level):
    """PIL-style shear about the top-left corner: output (y, x) takes input (y, x + level*y)."""
    return _geometric("ShearX", img, level)


@_no_autograph
def shear_y(img, level):
    """Output (y, x) takes input (y + level*x, x)."""
    return _geometric("ShearY", img, level)


@_no_autograph
def translate_x(img, pixels):
    """Output (y, x) takes input (y, x + pixels): positive pixels move the content left, like PIL."""
    return _geometric("TranslateX", img, pixels)


@_no_autograph
def translate_y(img, pixels):
    """Output (y, x) takes input (y + pixels, x): positive pixels move the content up."""
    return _geometric("TranslateY", img, pixels)


@_no_autograph
def cutout_at(img, center_y, center_x, size, fill=FILL):
    """Fill rows [cy - size//2, cy - size//2 + size) x the same for columns, clipped at the borders."""
    img = uint8_image(img)
    height, width, _ = _hwc(img)
    top = center_y - size // 2
    left = center_x - size // 2
    rows = np.arange(height, dtype=np.int32)
    cols = np.arange(width, dtype=np.int32)
    in_rows = tf.logical_and(rows >= top, rows < top + size)
    in_cols = tf.logical_and(cols >= left, cols < left + size)
    covered = tf.logical_and(in_rows[:, None], in_cols[None, :])
    identity = np.arange(height * width, dtype=np.int32).reshape(height, width)
    return _sample(img, tf.where(covered, tf.fill([height, width], -1), identity), fill)


@_no_autograph
def random_cutout(img, size=16, fill=FILL, seed=None):
    """Cutout with a centre uniform over the pixels, so the square may hang over the border."""
    img = uint8_image(img)
    height, width, _ = _hwc(img)
    center = tf.random.uniform([], 0, height * width, tf.int32, seed=next(_seeds(seed)))
    return cutout_at(img, center // width, center % width, size, fill)


@_no_autograph
def flip_pad_crop(img, pad=4, fill=FILL, seed=None, reflect=False):
    """Random horizontal flip, pad `pad` px on every side (of `fill`, or mirrored as tf.pad's REFLECT,
    the edge not repeated), random crop back to the input size."""
    img = uint8_image(img)
    seeds = _seeds(seed)
    height, width, _ = _hwc(img)
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
    return _sample(img, row_start[:, None] + col[None, :], fill)


# ---------------------------------------------------------------------------------------- RandAugment

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


_COLOUR_OPS = frozenset({"Color", "Contrast", "Brightness", "Sharpness"})  # the ops that blend


def _apply_op(name, img, args, seed, overflow):
    if name == "Cutout":
        return random_cutout(img, args[0], seed=seed)
    if name in _COLOUR_OPS:
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
    maps = [_source_index(shape, _TRANSFORMS[ops[i]](shape, sign * params[i][0]))
            for i in signed for sign in (1, -1)]
    return branch_of_op, unsigned, map_of_op, (np.stack(maps) if maps else None)


def _switch(index, branches, first=0):
    """branches[index]() as a balanced tree of tf.cond (tf.switch_case is not in TF 1.15's v1 API).

    A tree nests each branch in log2(n) conds instead of the n of tf.case's chain: fewer Switch
    nodes, which tf.data runs (as dead tensors) for every branch of every image.
    """
    if len(branches) == 1:
        return branches[0]()
    half = len(branches) // 2
    return tf.cond(index < first + half,
                   lambda: _switch(index, branches[:half], first),
                   lambda: _switch(index, branches[half:], first + half))


@_no_autograph
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
    shape = _hwc(img)
    params = [op_parameters(name, magnitude, min(shape[:2])) for name in ops]
    branch_of_op, unsigned, map_of_op, maps = _branch_plan(ops, params, shape)
    seeds = _seeds(seed)
    prob = tf.random.uniform([], low, high, seed=next(seeds))
    out = img
    for _ in range(int(num_layers)):
        choice = tf.random.uniform([], 0, len(ops), tf.int32, seed=next(seeds))
        # u < p (strict) so that p = 0 can never apply an op; u is in [0, 1), so p = 1 always does.
        applied = tf.random.uniform([], seed=next(seeds)) < prob
        negative = tf.cast(tf.random.uniform([], seed=next(seeds)) < 0.5, tf.int32)
        op_seed = next(seeds)
        branches = [lambda layer_in=out: tf.identity(layer_in)]
        branches += [lambda i=i, layer_in=out: _apply_op(ops[i], layer_in, params[i], op_seed, overflow)
                     for i in unsigned]
        if maps is not None:
            branches.append(lambda layer_in=out, choice=choice, negative=negative: _sample(
                layer_in, tf.gather(maps, tf.gather(map_of_op, choice) + negative)))
        branch = tf.where_v2(applied, tf.gather(branch_of_op, choice), 0)
        out = _same_shape(_switch(branch, branches), img)
    return out


# -------------------------------------------------------------------------------------------- views


def _jitter(img, seed):
    """The reference's flip + pad + crop, padding by image_size // 8 (4 px for CIFAR)."""
    img = uint8_image(img)
    return flip_pad_crop(img, pad=min(_hwc(img)[:2]) // 8, seed=seed)


def derived_seed(seed, offset):
    """An op seed `offset` away from `seed`; None (unseeded) stays None."""
    return None if seed is None else int(seed) + offset


@_no_autograph
def labelled_view(img, seed=None):
    return _jitter(img, seed)


@_no_autograph
def weak_view(img, seed=None):
    """MixMatch's weak augmentation (libml/data.py augment_cifar10): random flip, then REFLECT-pad by
    image_size // 8 (4 px for CIFAR) and random crop."""
    img = uint8_image(img)
    return flip_pad_crop(img, pad=min(_hwc(img)[:2]) // 8, seed=seed, reflect=True)


@_no_autograph
def ori_view(img, seed=None):
    return _jitter(img, seed)


@_no_autograph
def aug_view(ori_img, magnitude=16, num_layers=2, seed=None, overflow="clip"):
    """The strong view, from the already jittered ori image: RandAugment, cutout of half the image
    size (16 px for CIFAR), then flip + pad + crop once more, as the reference does."""
    out = randaugment(ori_img, num_layers=num_layers, magnitude=magnitude, seed=derived_seed(seed, 1),
                      overflow=overflow)
    out = random_cutout(out, size=min(_hwc(out)[:2]) // 2, seed=derived_seed(seed, 2))
    return _jitter(out, derived_seed(seed, 3))


@_no_autograph
def unlabelled_views(img, magnitude=16, num_layers=2, seed=None, overflow="clip"):
    """(ori, aug) for one unlabelled image; aug starts from this very ori image.

    Pass distinct seeds (or none) to the labelled and unlabelled maps: with only a graph-level seed,
    TF may give their random ops identical op seeds, i.e. correlated draws. `overflow` is the recipe's
    augment_overflow (see `blend`).
    """
    ori = ori_view(img, seed=seed)
    return ori, aug_view(ori, magnitude=magnitude, num_layers=num_layers, seed=derived_seed(seed, 4),
                         overflow=overflow)


@_no_autograph
def normalize(img):
    """(x - 255 mean) / (255 std) in float32 over the last axis: one image, a batch, uint8 or float."""
    x = tf.cast(img, tf.float32)
    return (x - tf.constant(_MEAN_255)) / tf.constant(_STD_255)


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

# The 25 CIFAR-10 sub-policies, ((op, prob, level), (op, prob, level)). 1-15 and 21-25 are TFM
# policies.py good_policies() exp0_0, exp1_0, exp2_0 and exp0_1; 16-20 are the paper's remaining five
# (as in the DeepVoltaire / 4U CIFAR10Policy, docs reference §2.1).
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
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 <= level <= AUTOAUGMENT_PARAMETER_MAX:
        raise UsageError("AutoAugment level must be a number in [0, {}], got {!r}".format(
            AUTOAUGMENT_PARAMETER_MAX, level))
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
    if name in _COLOUR_OPS:
        return (_tfm_float(level, 1.8) + 0.1,)
    return (_tfm_int(level, 20),)  # Cutout


def _mean_contrast(img, factor, overflow="clip"):
    """PIL ImageEnhance.Contrast: blend from the image's mean gray level, int(mean + 0.5), towards it.

    (`contrast` keeps the RandAugment reference's pixel-count/256 quirk; TFM's PIL contrast uses the
    real mean of the "L" image.)
    """
    img = uint8_image(img)
    height, width, _ = _hwc(img)
    count = height * width
    total = tf.reduce_sum(_grayscale(img))
    mean = (2 * total + count) // (2 * count)  # floor(total / count + 0.5), exactly
    degenerate = tf.fill(_hwc(img), tf.cast(mean, tf.uint8))
    return _same_shape(blend(degenerate, img, factor, overflow), img)


def _autoaugment_unsigned(name, img, args, seed, overflow):
    if name == "Solarize" and args[0] >= 256:
        return tf.identity(img)  # threshold 256 changes nothing (the kernel would take it modulo 256)
    if name == "Contrast":
        return _mean_contrast(img, args[0], overflow)
    if name == "Cutout":
        return tf.identity(img) if args[0] <= 0 else random_cutout(img, args[0], seed=seed)
    return _apply_op(name, img, args, seed, overflow)


def check_policy(policy):
    """The policy as a tuple of sub-policies of (op, prob, level) triples, or a UsageError."""
    if not policy:
        raise UsageError("an AutoAugment policy needs at least one sub-policy")
    checked = []
    for sub in policy:
        ops = []
        for entry in sub:
            name, prob, level = entry
            autoaugment_parameters(name, level)
            if not 0.0 <= float(prob) <= 1.0:
                raise UsageError("AutoAugment probability must be in [0, 1], got {!r} for {}".format(prob, name))
            ops.append((name, float(prob), level))
        checked.append(tuple(ops))
    return tuple(checked)


@_no_autograph
def autoaugment(img, seed=None, overflow="clip", policy=CIFAR10_POLICY):
    """AutoAugment on one uint8 HWC image: pick one sub-policy uniformly, then apply each of its ops
    in order with its own probability (independent draws u < p, so p = 0 never and p = 1 always
    applies) and fixed level (autoaugment_parameters), signed ops getting a random sign each.
    """
    img = uint8_image(img)
    check_overflow(overflow)
    policy = check_policy(policy)
    shape = _hwc(img)
    width = max(len(sub) for sub in policy)
    seeds = _seeds(seed)
    choice = tf.random.uniform([], 0, len(policy), tf.int32, seed=next(seeds))
    draws = tf.random.uniform([max(width, 1)], seed=next(seeds))
    negative = tf.cast(tf.random.uniform([max(width, 1)], seed=next(seeds)) < 0.5, tf.int32)
    op_seeds = [next(seeds) for _ in range(width)]
    out = img
    # One switch per op position (as randaugment does), not one per sub-policy: branch 0 is identity,
    # then each distinct unsigned (op, arguments) of that position, then one gather for every signed op
    # through its + or - sampling map. Fewer branches, much less tf.data function set-up time.
    for j in range(width):
        unsigned = []
        branch_of = np.zeros(len(policy), np.int32)
        prob_of = np.zeros(len(policy), np.float32)
        map_row = np.zeros(len(policy), np.int32)
        maps = []
        signed_subs = []
        for k, sub in enumerate(policy):
            if j >= len(sub) or sub[j][1] <= 0.0:
                continue
            name, prob, level = sub[j]
            args = autoaugment_parameters(name, level)
            prob_of[k] = prob
            if name in SIGNED_OPS:
                signed_subs.append(k)
                map_row[k] = len(maps)
                maps += [_source_index(shape, _TRANSFORMS[name](shape, sign * args[0])) for sign in (1, -1)]
            else:
                if (name, args) not in unsigned:
                    unsigned.append((name, args))
                branch_of[k] = 1 + unsigned.index((name, args))
        branch_of[signed_subs] = 1 + len(unsigned)
        branches = [lambda x=out: tf.identity(x)]
        branches += [lambda x=out, n=name, a=args, j=j: _autoaugment_unsigned(n, x, a, op_seeds[j], overflow)
                     for name, args in unsigned]
        if maps:
            stacked = np.stack(maps)
            branches.append(lambda x=out, j=j, stacked=stacked, map_row=map_row: _sample(
                x, tf.gather(stacked, tf.gather(map_row, choice) + negative[j])))
        applied = draws[j] < tf.gather(prob_of, choice)  # u in [0, 1): p = 1 always, p = 0 never applies
        branch = tf.where_v2(applied, tf.gather(branch_of, choice), 0)
        out = _same_shape(_switch(branch, branches), img)
    return out


@_no_autograph
def autoaugment_view(img, seed=None, overflow="clip", policy=CIFAR10_POLICY):
    """TFM data_utils order: the policy, then pad 4 + random crop + random h-flip (one gather; the
    flip/shift order does not change the distribution), then cutout of half the image size (16 px for
    CIFAR) with a uniform centre, clipped at the borders. uint8 in and out; normalise afterwards."""
    out = autoaugment(img, seed=derived_seed(seed, 1), overflow=overflow, policy=policy)
    out = _jitter(out, derived_seed(seed, 2))
    return random_cutout(out, size=min(_hwc(out)[:2]) // 2, seed=derived_seed(seed, 3))
