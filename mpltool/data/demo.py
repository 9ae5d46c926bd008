"""Embedded demo data: CIFAR-format coloured shapes, so the whole pipeline runs without a download.

Each class is one (colour, shape) pair and every colour and every shape belongs to exactly two
classes, so colour alone or shape alone separates at most half the classes: a network has to learn
both. Random textured backgrounds, position, size, rotation, colour jitter and pixel noise keep it
from being a lookup table. Everything comes from numpy's seeded RandomState, so the same arguments
always give the same bytes.
"""

import os

import numpy as np

from mpltool.data.cifar import META_FILE, NUM_CLASSES, TEST_FILE, TRAIN_FILES, write_cifar_file
from mpltool.errors import UsageError

COLOURS = {
    "red": (215, 45, 40),
    "green": (40, 175, 60),
    "blue": (45, 80, 215),
    "yellow": (225, 205, 40),
    "magenta": (200, 50, 195),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring")

# A cycle colour -> shape -> colour: each colour and each shape occurs in exactly two classes.
DEMO_CLASS_PAIRS = (
    ("red", "circle"), ("green", "circle"),
    ("green", "square"), ("blue", "square"),
    ("blue", "triangle"), ("yellow", "triangle"),
    ("yellow", "cross"), ("magenta", "cross"),
    ("magenta", "ring"), ("red", "ring"),
)
DEMO_CLASSES = tuple("{} {}".format(colour, shape) for colour, shape in DEMO_CLASS_PAIRS)

_SIZE = 32
_SUPERSAMPLE = 2  # shapes are drawn at 64x64 and averaged down, giving anti-aliased edges


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


def _backgrounds(rng, count):
    """A random muted base colour per image plus coarse and fine smooth texture of random strength."""
    base = rng.uniform(40.0, 215.0, size=(count, 1, 1, 1)) + rng.uniform(-50.0, 50.0, size=(count, 1, 1, 3))
    coarse_amp = rng.uniform(10.0, 60.0, size=(count, 1, 1, 1))
    fine_amp = rng.uniform(0.0, 35.0, size=(count, 1, 1, 1))
    return base + coarse_amp * _smooth_noise(rng, count, 4) + fine_amp * _smooth_noise(rng, count, 12)


def _inside(shape, u, v):
    """Which points (u, v), in units of the shape's radius, lie inside the shape."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ring":
        return (u * u + v * v <= 1.0) & (u * u + v * v >= 0.55 ** 2)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.78
    if shape == "triangle":
        return (v >= -0.5) & (v <= 1.0 - np.sqrt(3.0) * np.abs(u))
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    raise ValueError("unknown shape {!r}".format(shape))


def _shape_masks(rng, shape_ids):
    """Anti-aliased coverage [count, 32, 32] in [0, 1] for each image's shape at a random pose."""
    count = shape_ids.shape[0]
    fine = _SIZE * _SUPERSAMPLE
    axis = (np.arange(fine) + 0.5) / _SUPERSAMPLE
    radius = rng.uniform(6.0, 12.0, size=(count, 1, 1))
    # At least ~80% of the shape's extent stays inside the image.
    margin = 0.6 * radius
    centre_x = margin + rng.uniform(0.0, 1.0, size=(count, 1, 1)) * (_SIZE - 2.0 * margin)
    centre_y = margin + rng.uniform(0.0, 1.0, size=(count, 1, 1)) * (_SIZE - 2.0 * margin)
    # A uniformly random rotation as a normalised Gaussian 2-vector: no libm trigonometry, whose last
    # bits may differ between platforms.
    direction = rng.normal(size=(count, 2, 1, 1))
    direction /= np.sqrt((direction ** 2).sum(axis=1, keepdims=True))
    cos, sin = direction[:, 0], direction[:, 1]
    dx = (axis[None, None, :] - centre_x) / radius
    dy = (axis[None, :, None] - centre_y) / radius
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    masks = np.zeros((count, fine, fine))
    for shape_id, shape in enumerate(SHAPES):
        chosen = shape_ids == shape_id
        masks[chosen] = _inside(shape, u[chosen], v[chosen])
    return masks.reshape(count, _SIZE, _SUPERSAMPLE, _SIZE, _SUPERSAMPLE).mean(axis=(2, 4))


def make_demo_images(count, seed):
    """Balanced, shuffled demo images (HWC uint8) and int64 labels, a pure function of (count, seed)."""
    rng = np.random.RandomState(seed)
    labels = rng.permutation(np.arange(count) % NUM_CLASSES).astype(np.int64)
    palette = np.array([COLOURS[colour] for colour, _ in DEMO_CLASS_PAIRS], dtype=np.float64)
    shape_of_class = np.array([SHAPES.index(shape) for _, shape in DEMO_CLASS_PAIRS])

    background = _backgrounds(rng, count)
    masks = _shape_masks(rng, shape_of_class[labels])[..., None]
    brightness = rng.uniform(0.75, 1.15, size=(count, 1, 1, 1))
    jitter = rng.normal(0.0, 18.0, size=(count, 1, 1, 3))
    shading = 1.0 + 0.12 * _smooth_noise(rng, count, 3)
    foreground = (palette[labels][:, None, None, :] * brightness + jitter) * shading
    pixel_noise = rng.normal(0.0, 1.0, size=(count, _SIZE, _SIZE, 3)) * rng.uniform(
        3.0, 18.0, size=(count, 1, 1, 1))
    images = background * (1.0 - masks) + foreground * masks + pixel_noise
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
