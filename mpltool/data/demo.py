"""Embedded demo data: CIFAR-format shapes, so the whole pipeline runs without a download.

Each class is a shape, told apart from the others by structure only: holes, strokes, arms, tips,
repetition. Colours, brightness and contrast of the shape and of its textured background are drawn
per image independently of the class, every shape covers about the same area, and every image has a
uniformly random rotation, position and size. So, like real CIFAR classes, the labels survive what
MPL's strong view does (RandAugment's colour ops at magnitude 16, rotations, shears, flips,
translations, cutout), and its consistency loss teaches invariances that help instead of erasing the
features the labels depend on. Every shape is mirror symmetric, and no class is a rotation, shear,
mirror image or scaling of another (no square/diamond or +/x pairs). Classes that the strong view
merged with others when tried (triangle and crescent with disc and bar, checkerboard with dot grid,
square frame with ring) were left out.

Everything comes from numpy's seeded RandomState and elementwise arithmetic, so the same arguments
always give the same bytes.
"""

import os

import numpy as np

from mpltool.data.cifar import META_FILE, NUM_CLASSES, TEST_FILE, TRAIN_FILES, write_cifar_file
from mpltool.errors import UsageError

_SIZE = 32
_SUPERSAMPLE = 2  # shapes are drawn at 64x64 and averaged down, giving anti-aliased edges

# Outward normals of the five lines of a pentagram with its tips at radius 1 (angles 90 + 72k degrees),
# written out so no libm trigonometry is involved. A point is inside the star when it is on the inner
# side of at least four of the lines: all five is the central pentagon, four is one of the tips.
_STAR_NORMALS = (
    (0.0, 1.0),
    (-0.9510565162951535, 0.30901699437494745),
    (-0.5877852522924731, -0.8090169943749475),
    (0.5877852522924731, -0.8090169943749475),
    (0.9510565162951535, 0.30901699437494745),
)
_STAR_LINE_DISTANCE = 0.30901699437494745  # cos 72 degrees


# Inside tests in shape coordinates (u, v): centred, rotated, in units of the image's random size.
def _disc(u, v):
    return u * u + v * v <= 0.78 ** 2


def _ring(u, v):
    return (u * u + v * v <= 1.0) & (u * u + v * v >= 0.6 ** 2)


def _bullseye(u, v):
    return ((u * u + v * v <= 1.0) & (u * u + v * v >= 0.66 ** 2)) | (u * u + v * v <= 0.3 ** 2)


def _bar(u, v):
    return (np.abs(u) <= 1.15) & (np.abs(v) <= 0.41)


def _plus(u, v):
    return (np.minimum(np.abs(u), np.abs(v)) <= 0.22) & (np.maximum(np.abs(u), np.abs(v)) <= 1.15)


def _star(u, v):
    u, v = u / 1.3, v / 1.3
    sides = sum((nx * u + ny * v <= _STAR_LINE_DISTANCE).astype(np.int64) for nx, ny in _STAR_NORMALS)
    return sides >= 4


def _zigzag(u, v):
    """Straight strokes along a triangle wave of period 1 in u: four, plus a half one at each end."""
    centre_line = 0.45 * (4.0 * np.abs(u - np.floor(u + 0.5)) - 1.0)
    return (np.abs(v - centre_line) <= 0.34) & (np.abs(u) <= 1.25)


def _stripes(u, v):
    return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9) & (np.floor((v + 0.9) / 0.36) % 2 == 0)


def _hash(u, v):
    """Two strokes each way, crossing in four places (#)."""
    strokes = (np.abs(np.abs(v) - 0.42) <= 0.13) | (np.abs(np.abs(u) - 0.42) <= 0.13)
    return strokes & (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)


def _dot_grid(u, v):
    """3 x 3 dots."""
    du, dv = u - 0.75 * np.round(u / 0.75), v - 0.75 * np.round(v / 0.75)
    return (du * du + dv * dv <= 0.26 ** 2) & (np.abs(u) <= 1.05) & (np.abs(v) <= 1.05)


# Class name, how far the shape reaches from its centre (in units of the size: it sets how close to
# the border the centre may go), inside test. Every shape covers 1.7-2.1 size^2, so the share of
# shape-coloured pixels says nothing about the class.
_SHAPES = (
    ("disc", 0.78, _disc),
    ("ring", 1.0, _ring),
    ("bullseye", 1.0, _bullseye),
    ("bar", 1.22, _bar),
    ("plus", 1.17, _plus),
    ("star", 1.3, _star),
    ("zigzag", 1.3, _zigzag),
    ("stripes", 1.27, _stripes),
    ("hash", 1.15, _hash),
    ("dot grid", 1.3, _dot_grid),
)
DEMO_CLASSES = tuple(name for name, _, _ in _SHAPES)
assert len(DEMO_CLASSES) == NUM_CLASSES


def _upsample(values, axis, low, frac):
    """Linear interpolation along one axis using elementwise arithmetic only (no BLAS), so the bytes
    do not depend on the machine's BLAS kernels or thread count."""
    shape = [1] * values.ndim
    shape[axis] = frac.size
    weight = frac.reshape(shape)
    return np.take(values, low, axis=axis) * (1.0 - weight) + np.take(values, low + 1, axis=axis) * weight


def _smooth_noise(rng, count, grid):
    """[count, 32, 32, 3] noise in about [-1, 1], bilinearly upsampled from a grid x grid lattice."""
    coarse = rng.uniform(-1.0, 1.0, size=(count, grid, grid, 3))
    position = (np.arange(_SIZE) + 0.5) * (grid - 1) / _SIZE
    low = np.minimum(np.floor(position).astype(int), grid - 2)
    frac = position - low
    return _upsample(_upsample(coarse, 1, low, frac), 2, low, frac)


def _colour_pairs(rng, count):
    """Background and shape colours [count, 1, 1, 3] of any hue, the shape 60-150 gray levels lighter.

    Always lighter, like real photos whose objects have a typical look; RandAugment's Invert and
    Solarize show the teacher the other polarity, and the class does not change with it.
    """
    background_level = rng.uniform(15.0, 110.0, size=(count, 1, 1, 1))
    shape_level = np.minimum(background_level + rng.uniform(60.0, 150.0, size=(count, 1, 1, 1)), 245.0)

    def tint(level):
        hue = rng.normal(size=(count, 1, 1, 3))
        hue -= hue.mean(axis=-1, keepdims=True)
        return level + rng.uniform(0.0, 35.0, size=(count, 1, 1, 1)) * hue

    return tint(background_level), tint(shape_level)


def _shape_masks(rng, labels):
    """Anti-aliased coverage [count, 32, 32] in [0, 1] of each image's class shape at a random pose."""
    count = labels.shape[0]
    fine = _SIZE * _SUPERSAMPLE
    axis = (np.arange(fine) + 0.5) / _SUPERSAMPLE
    size = rng.uniform(9.0, 12.5, size=(count, 1, 1))
    reach = np.array([shape_reach for _, shape_reach, _ in _SHAPES])[labels].reshape(count, 1, 1) * size
    # At least ~80% of the shape's extent stays inside the image.
    margin = 0.6 * reach
    centre_x = margin + rng.uniform(0.0, 1.0, size=(count, 1, 1)) * (_SIZE - 2.0 * margin)
    centre_y = margin + rng.uniform(0.0, 1.0, size=(count, 1, 1)) * (_SIZE - 2.0 * margin)
    # A uniformly random rotation as a normalised Gaussian 2-vector: no libm trigonometry, whose last
    # bits may differ between platforms.
    direction = rng.normal(size=(count, 2, 1, 1))
    direction /= np.sqrt((direction ** 2).sum(axis=1, keepdims=True))
    cos, sin = direction[:, 0], direction[:, 1]
    dx = (axis[None, None, :] - centre_x) / size
    dy = (axis[None, :, None] - centre_y) / size
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    masks = np.zeros((count, fine, fine))
    for label, (_, _, inside) in enumerate(_SHAPES):
        chosen = labels == label
        masks[chosen] = inside(u[chosen], v[chosen])
    return masks.reshape(count, _SIZE, _SUPERSAMPLE, _SIZE, _SUPERSAMPLE).mean(axis=(2, 4))


def make_demo_images(count, seed):
    """Balanced, shuffled demo images (HWC uint8) and int64 labels, a pure function of (count, seed)."""
    rng = np.random.RandomState(seed)
    labels = rng.permutation(np.arange(count) % NUM_CLASSES).astype(np.int64)
    background_colour, shape_colour = _colour_pairs(rng, count)
    texture = (rng.uniform(8.0, 30.0, size=(count, 1, 1, 1)) * _smooth_noise(rng, count, 4)
               + rng.uniform(0.0, 18.0, size=(count, 1, 1, 1)) * _smooth_noise(rng, count, 12))
    masks = _shape_masks(rng, labels)[..., None]
    shading = 1.0 + 0.1 * _smooth_noise(rng, count, 3)
    pixel_noise = rng.normal(0.0, 1.0, size=(count, _SIZE, _SIZE, 3)) * rng.uniform(
        3.0, 14.0, size=(count, 1, 1, 1))
    images = (background_colour + texture) * (1.0 - masks) + shape_colour * shading * masks + pixel_noise
    return np.clip(np.round(images), 0, 255).astype(np.uint8), labels


def write_demo(out_dir, train_per_file=1000, test_records=1000, seed=0):
    """Write data_batch_1..5.bin, test_batch.bin and batches.meta.txt; return their paths in that order.

    Each file has its own seed derived from (seed, file index), so the test file does not change
    when the training files are made larger or smaller.
    """
    for option, value in (("train_per_file", train_per_file), ("test_records", test_records)):
        if value < 1:
            raise UsageError("{} must be at least 1, got {}".format(option, value))
    if seed < 0:
        raise UsageError("seed must be 0 or more, got {}".format(seed))
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    counts = [train_per_file] * len(TRAIN_FILES) + [test_records]
    for index, (name, count) in enumerate(zip(TRAIN_FILES + (TEST_FILE,), counts)):
        images, labels = make_demo_images(count, [seed, index])
        path = os.path.join(out_dir, name)
        write_cifar_file(path, images, labels)
        paths.append(path)
    meta_path = os.path.join(out_dir, META_FILE)
    with open(meta_path, "w", encoding="utf-8") as handle:
        handle.write("".join(name + "\n" for name in DEMO_CLASSES))
    paths.append(meta_path)
    return paths
