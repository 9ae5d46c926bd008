"""Augmentation ops against independent numpy computations, and the RandAugment/view wiring."""

import math

import numpy as np
import pytest

from mpltool.data.augment import ops, randaugment
from mpltool.data import views
from mpltool.errors import UsageError
from helpers import dataset_samples
from mpltool.tfv1 import tf

H = W = 32


def _test_image():
    """Seeded noise on a gradient: per-channel ranges inside (0, 255), values both sides of 153."""
    rng = np.random.RandomState(7)
    y, x = np.mgrid[0:H, 0:W]
    img = 10 + 3 * y[..., None] + 2 * x[..., None] + rng.randint(0, 60, (H, W, 3)) + np.array([0, 10, 20])
    return img.astype(np.uint8)


IMG = _test_image()
# The same without any 128, so filled regions can be told apart from image content.
IMG_NO_FILL = np.where(IMG == 128, 127, IMG).astype(np.uint8)
# Every pixel names its source: channel 0 = row + 1, channel 1 = column + 1, channel 2 = 7.
COORDS = np.stack(np.mgrid[1:H + 1, 1:W + 1].tolist() + [np.full((H, W), 7)], -1).astype(np.uint8)


pytestmark = pytest.mark.filterwarnings("ignore:Seed .* from outer graph:UserWarning")


GRAPH_SEED = 20240601  # of the `run` fixture's graph (conftest.py)
_samples = dataset_samples


# ------------------------------------------------------------------------------------ numpy references


def np_blend(img1, img2, factor, overflow="clip"):
    """Both blend modes, written from their definitions.

    clip: float32 on the [0, 255] scale, clipped, truncated.
    wrap: the seed's blend -- tf.image.convert_image_dtype to [0, 1] (x float32(1/255)), blend, clip to
    [0, 255] for factors outside (0, 1), then convert_image_dtype back without saturation: x 255.5,
    truncated towards zero, low 8 bits (Python's % 256 is that for negative numbers too).
    """
    if overflow == "clip":
        a = img1.astype(np.float32)
        b = img2.astype(np.float32)
        return np.clip(a + np.float32(factor) * (b - a), 0, 255).astype(np.uint8)
    if factor == 0:
        return img1.astype(np.uint8)
    if factor == 1:
        return img2.astype(np.uint8)
    scale = np.float32(1.0 / 255.0)
    a = img1.astype(np.float32) * scale
    b = img2.astype(np.float32) * scale
    out = a + np.float32(factor) * (b - a)
    if not 0 < factor < 1:
        out = np.clip(out, np.float32(0), np.float32(255))
    scaled = (out * np.float32(255.5)).astype(np.float64)
    return np.array([int(v) % 256 for v in np.trunc(scaled).ravel()], np.uint8).reshape(img1.shape)


def np_gray(img):
    r, g, b = (img[..., c].astype(np.int64) for c in range(3))
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)


def np_auto_contrast(img):
    out = img.copy()
    for c in range(img.shape[2]):
        channel = img[..., c].astype(np.float64)
        lo, hi = channel.min(), channel.max()
        if hi > lo:
            out[..., c] = np.floor((channel - lo) * 255.0 / (hi - lo))
    return out


def np_equalize(img):
    """PIL ImageOps.equalize, written as PIL's loop."""
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        hist = np.bincount(img[..., c].ravel(), minlength=256)
        nonzero = [count for count in hist if count]
        step = (sum(nonzero) - nonzero[-1]) // 255
        if not step:
            out[..., c] = img[..., c]
            continue
        lut, n = [], step // 2
        for i in range(256):
            lut.append(min(n // step, 255))
            n += hist[i]
        out[..., c] = np.array(lut)[img[..., c]]
    return out


def np_smooth(img):
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]])
    x = img.astype(np.int64)
    smooth = x.copy()
    for i in range(1, img.shape[0] - 1):
        for j in range(1, img.shape[1] - 1):
            smooth[i, j] = (x[i - 1:i + 2, j - 1:j + 2] * kernel[:, :, None]).sum(axis=(0, 1)) // 13
    return smooth


def np_sharpness(img, factor, overflow="clip"):
    return np_blend(np_smooth(img), img, factor, overflow)


def np_colour_degenerate(name, img):
    """The image each colour op blends from (towards the input), as int64."""
    if name == "Color":
        return np.repeat(np_gray(img)[..., None], 3, -1).astype(np.int64)
    if name == "Contrast":  # the reference's mean: pixel count / 256
        return np.full(img.shape, img.shape[0] * img.shape[1] // 256, np.int64)
    if name == "Brightness":
        return np.zeros(img.shape, np.int64)
    return np_smooth(img)


def _round_half_away(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def np_warp(img, source, fill=128):
    """Output (y, x) = img at source(y, x) -> (sy, sx) rounded half away from zero, else fill."""
    out = np.full_like(img, fill)
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            sy, sx = (_round_half_away(v) for v in source(y, x))
            if 0 <= sy < img.shape[0] and 0 <= sx < img.shape[1]:
                out[y, x] = img[sy, sx]
    return out


def np_rotate(img, degrees):
    """Counter-clockwise rotation about the grid centre, as the inverse map (output -> source)."""
    t = math.radians(degrees)
    cy, cx = (img.shape[0] - 1) / 2.0, (img.shape[1] - 1) / 2.0
    return np_warp(img, lambda y, x: (math.sin(t) * (x - cx) + math.cos(t) * (y - cy) + cy,
                                      math.cos(t) * (x - cx) - math.sin(t) * (y - cy) + cx))


def np_cutout(img, cy, cx, size, fill=128):
    out = img.copy()
    top, left = cy - size // 2, cx - size // 2
    out[max(top, 0):max(top + size, 0), max(left, 0):max(left + size, 0)] = fill
    return out


def np_jitter(img, flip, dy, dx, pad=4, fill=128):
    """Literal flip -> pad -> crop at offset (pad + dy, pad + dx)."""
    flipped = img[:, ::-1] if flip else img
    padded = np.pad(flipped, [(pad, pad), (pad, pad), (0, 0)], constant_values=fill)
    return padded[pad + dy:pad + dy + img.shape[0], pad + dx:pad + dx + img.shape[1]]


def _jitter_candidates(img, pad=4, fill=128):
    return {(flip, dy, dx): np_jitter(img, flip, dy, dx, pad, fill)
            for flip in (False, True) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)}


# ----------------------------------------------------------------------------------- level -> parameter


def test_op_parameters_at_magnitude_16_match_the_reference_numbers():
    assert randaugment.op_parameters("Rotate", 16) == pytest.approx((48.0,))
    assert randaugment.op_parameters("ShearX", 16) == pytest.approx((0.48,))
    assert randaugment.op_parameters("ShearY", 16) == pytest.approx((0.48,))
    assert randaugment.op_parameters("TranslateX", 16) == pytest.approx((6.4,))
    assert randaugment.op_parameters("TranslateY", 16) == pytest.approx((6.4,))
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):
        assert randaugment.op_parameters(name, 16) == pytest.approx((2.98,))
    assert randaugment.op_parameters("Posterize", 16) == (6,)
    assert randaugment.op_parameters("Solarize", 16) == (409,)
    assert randaugment.op_parameters("Cutout", 16) == (12,)
    for name in ("AutoContrast", "Equalize", "Invert"):
        assert randaugment.op_parameters(name, 16) == ()
    # Translate and cutout scale with image_size // 8, like the reference's constants.
    assert randaugment.op_parameters("TranslateX", 16, image_size=64) == pytest.approx((12.8,))
    assert randaugment.op_parameters("Cutout", 10) == (8,)


def test_op_list_and_signed_ops_are_the_references():
    assert randaugment.RANDAUGMENT_OPS == (
        "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
        "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout")
    assert ops.SIGNED_OPS == {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}


def test_op_parameters_rejects_unknown_op_and_negative_magnitude():
    with pytest.raises(UsageError, match="unknown augmentation op 'Mirror'"):
        randaugment.op_parameters("Mirror", 16)
    with pytest.raises(UsageError, match="magnitude must be >= 0"):
        randaugment.op_parameters("Rotate", -1)


# -------------------------------------------------------------------------------------- pixel ops


def test_pixel_ops_match_numpy(run):
    assert (IMG >= 153).any() and (IMG < 153).any()
    got = run(lambda: {
        "invert": ops.invert(IMG),
        "posterize": ops.posterize(IMG, 6),
        "solarize_409": ops.solarize(IMG, 409),
        "solarize_153": ops.solarize(IMG, 153),
        "auto_contrast": ops.auto_contrast(IMG),
        "equalize": ops.equalize(IMG),
        "color": ops.color(IMG, 2.98),
        "contrast": ops.contrast(IMG, 2.98),
        "brightness": ops.brightness(IMG, 2.98),
        "sharpness": ops.sharpness(IMG, 2.98),
        "brightness_half": ops.brightness(IMG, 0.5),
        "sharpness_blur": ops.sharpness(IMG, 0.0),
    })
    np.testing.assert_array_equal(got["invert"], 255 - IMG)
    np.testing.assert_array_equal(got["posterize"], (IMG >> 2) << 2)
    # Solarize 409 behaves as 409 % 256 = 153, which is what the reference's uint8 cast does.
    np.testing.assert_array_equal(got["solarize_409"], np.where(IMG < 153, IMG, 255 - IMG))
    np.testing.assert_array_equal(got["solarize_153"], got["solarize_409"])
    np.testing.assert_array_equal(got["auto_contrast"], np_auto_contrast(IMG))
    assert got["auto_contrast"].reshape(-1, 3).min(0).tolist() == [0, 0, 0]
    assert got["auto_contrast"].reshape(-1, 3).max(0).tolist() == [255, 255, 255]
    np.testing.assert_array_equal(got["equalize"], np_equalize(IMG))
    assert not np.array_equal(got["equalize"], IMG)
    gray = np.repeat(np_gray(IMG)[..., None], 3, -1)
    np.testing.assert_array_equal(got["color"], np_blend(gray, IMG, 2.98))
    # Contrast blends from a constant of pixel count / 256 = 4, the reference's histogram-sum quirk.
    np.testing.assert_array_equal(got["contrast"], np_blend(np.full_like(IMG, 4), IMG, 2.98))
    np.testing.assert_array_equal(got["brightness"], np_blend(np.zeros_like(IMG), IMG, 2.98))
    np.testing.assert_array_equal(got["brightness_half"], IMG // 2)
    np.testing.assert_array_equal(got["sharpness"], np_sharpness(IMG, 2.98))
    np.testing.assert_array_equal(got["sharpness_blur"], np_sharpness(IMG, 0.0))


def test_flat_channels_and_constant_images_pass_through(run):
    flat = IMG.copy()
    flat[..., 1] = 77
    constant = np.full((H, W, 3), 200, np.uint8)
    got = run(lambda: (ops.auto_contrast(flat), ops.equalize(constant)))
    np.testing.assert_array_equal(got[0], np_auto_contrast(flat))
    assert (got[0][..., 1] == 77).all()
    np.testing.assert_array_equal(got[1], constant)


def test_np_blend_wrap_model_reproduces_the_issue_numbers():
    # The model itself, on the numbers of issue 11: 100 at factor 2.98 is 1.1686 on the [0, 1] scale,
    # 298.58 after x 255.5, 298 truncated, 42 modulo 256. Below 0 the seed's clip_by_value(0, 255) acts
    # first, so -0.2 (which convert_image_dtype alone would turn into 205) never reaches the cast.
    zero = np.zeros(1, np.uint8)
    assert np_blend(zero, np.array([100], np.uint8), 2.98, "wrap").tolist() == [42]
    assert np_blend(zero, np.array([100], np.uint8), 2.98, "clip").tolist() == [255]
    assert np_blend(zero, np.array([100], np.uint8), -0.5, "wrap").tolist() == [0]


# Hand-computed pixels where blends cross 255 or 0: (op, degenerate, input, factor, wrap, clip).
# wrap = trunc(255.5 * (d/255 + f*(x - d)/255)) % 256 with the negative side clipped to 0 first.
CROSSING_PIXELS = [
    ("Brightness", 0, 100, 2.98, 42, 255),    # 298.0 (0-1 scale 1.1686) -> 298.58 -> 42
    ("Brightness", 0, 86, 2.98, 0, 255),      # 256.28 -> 256.78 -> 256 -> 0
    ("Brightness", 0, 85, 2.98, 253, 253),    # 253.3 -> 253.80: in range, both 253
    ("Brightness", 0, 255, 2.98, 249, 255),   # 759.9 -> 761.39 -> 761 -> 249
    ("Brightness", 0, 100, -0.5, 0, 0),       # -50 -> clipped to 0 in both
    ("Color", 29, 0, 2.98, 0, 0),             # 29 - 86.4 < 0
    ("Color", 29, 255, 2.98, 191, 255),       # 702.5 -> 703.85 -> 703 -> 191
    ("Contrast", 4, 0, 2.98, 0, 0),           # 4 - 11.9 < 0
    ("Contrast", 4, 3, 2.98, 1, 1),           # 1.02 -> 1.022 -> 1
    ("Contrast", 4, 200, 2.98, 77, 255),      # 588.08 -> 589.23 -> 589 -> 77
    ("Sharpness", 123, 0, 2.98, 0, 0),        # 123 - 366.5 < 0
    ("Sharpness", 184, 200, 2.98, 232, 231),  # 231.68: in range, but x 255.5/255 -> 232.13 -> 232
    ("Sharpness", 159, 255, 2.98, 189, 255),  # 445.08 -> 445.95 -> 445 -> 189
]


def _crossing_images():
    """Per op, an image whose blend at the CROSSING_PIXELS has exactly those degenerate values."""
    images = {}
    bright = np.full((H, W, 3), 0, np.uint8)
    bright[0, 0], bright[0, 1], bright[0, 2], bright[0, 3] = 100, 86, 85, 255
    images["Brightness"] = bright
    color = np.zeros((H, W, 3), np.uint8)
    color[..., 2] = 255  # (0, 0, 255): PIL gray (114 * 255 + 500) // 1000 = 29
    images["Color"] = color
    contrast = np.full((H, W, 3), 0, np.uint8)  # 32 x 32 -> the reference's "mean" is 1024 / 256 = 4
    contrast[0, 1], contrast[0, 2] = 3, 200
    images["Contrast"] = contrast
    sharp = np.full((H, W, 3), 200, np.uint8)
    sharp[5, 5] = 0  # smooth: (8 * 200) // 13 = 123; its neighbour (6, 6): (7 * 200 + 5 * 200) // 13 = 184
    sharp[19:22, 19:22] = 100
    sharp[20, 20] = 255  # smooth: (8 * 100 + 5 * 255) // 13 = 159
    images["Sharpness"] = sharp
    return images


CROSSING_AT = {("Brightness", 100): (0, 0), ("Brightness", 86): (0, 1), ("Brightness", 85): (0, 2),
               ("Brightness", 255): (0, 3), ("Color", 0): (0, 0), ("Color", 255): (0, 0),
               ("Contrast", 0): (0, 0), ("Contrast", 3): (0, 1), ("Contrast", 200): (0, 2),
               ("Sharpness", 0): (5, 5), ("Sharpness", 200): (6, 6), ("Sharpness", 255): (20, 20)}
CHANNEL_OF = {("Color", 0): 0, ("Color", 255): 2}
COLOUR_FNS = {"Color": ops.color, "Contrast": ops.contrast, "Brightness": ops.brightness, "Sharpness": ops.sharpness}


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
def test_colour_ops_give_the_hand_computed_pixels_past_0_and_255(run, overflow):
    images = _crossing_images()
    factors = sorted({f for _, _, _, f, _, _ in CROSSING_PIXELS})
    got = run(lambda: {(name, f): COLOUR_FNS[name](images[name], f, overflow=overflow)
                       for name in COLOUR_FNS for f in factors})
    for name, degenerate, value, factor, wrapped, clipped in CROSSING_PIXELS:
        y, x = CROSSING_AT[(name, value)]
        channel = CHANNEL_OF.get((name, value), 0)
        assert images[name][y, x, channel] == value
        assert np_colour_degenerate(name, images[name])[y, x, channel] == degenerate
        want = wrapped if overflow == "wrap" else clipped
        assert got[(name, factor)][y, x, channel] == want, (name, value, factor)


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
@pytest.mark.parametrize("factor", [2.98, 1.9, 0.5, -0.5])
def test_colour_ops_match_numpy_on_images_crossing_0_and_255(run, overflow, factor):
    rng = np.random.RandomState(11)
    img = rng.randint(0, 256, (H, W, 3)).astype(np.uint8)  # every op sees dark and bright pixels
    got = run(lambda: {name: fn(img, factor, overflow=overflow) for name, fn in COLOUR_FNS.items()})
    for name in COLOUR_FNS:
        degenerate = np_colour_degenerate(name, img)
        raw = degenerate + factor * (img.astype(np.float64) - degenerate)
        if factor > 1:  # the image really crosses 255 (and 0, where the op can go below it)
            assert (raw >= 256).sum() > 20, name
            assert name == "Brightness" or (raw < 0).sum() > 5, name
        if factor < 0 and name != "Sharpness":  # (the smoothed noise is too flat to go below 0 at -0.5)
            assert (raw < 0).sum() > 20, name
        want = np_blend(degenerate, img, factor, overflow)
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        assert got[name].dtype == np.uint8
    if factor > 1:  # the modes really differ where pixels cross 255
        other = "clip" if overflow == "wrap" else "wrap"
        assert not np.array_equal(got["Brightness"], np_blend(np.zeros_like(img), img, factor, other))


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
def test_blend_factors_0_and_1_return_the_images_and_tensor_factors_match(run, overflow):
    rng = np.random.RandomState(12)
    a, b = (rng.randint(0, 256, (4, 4, 3)).astype(np.uint8) for _ in range(2))
    factors = [0.0, 1.0, 0.5, 2.98, -0.5]
    got = run(lambda: ([ops.blend(a, b, f, overflow) for f in factors],
                       [ops.blend(a, b, tf.constant(f), overflow) for f in factors]))
    for f, static, dynamic in zip(factors, *got):
        np.testing.assert_array_equal(static, np_blend(a, b, f, overflow), err_msg=str(f))
        np.testing.assert_array_equal(dynamic, static, err_msg=str(f))
    np.testing.assert_array_equal(got[0][0], a)
    np.testing.assert_array_equal(got[0][1], b)


def test_unknown_overflow_mode_is_refused():
    with tf.Graph().as_default():
        with pytest.raises(UsageError, match="overflow must be one of wrap, clip"):
            ops.brightness(IMG, 2.0, overflow="saturate")
        with pytest.raises(UsageError, match="overflow"):
            randaugment.randaugment(IMG, overflow="modulo")


# ------------------------------------------------------------------------------------------ geometry


def test_geometric_ops_match_numpy_nearest_neighbour_with_fill_128(run):
    got = run(lambda: {
        "rotate": ops.rotate(IMG, 48.0),
        "rotate_neg": ops.rotate(IMG, -48.0),
        "shear_x": ops.shear_x(IMG, 0.48),
        "shear_y": ops.shear_y(IMG, -0.48),
        "translate_x": ops.translate_x(IMG, 6.4),
        "translate_y": ops.translate_y(IMG, -6.4),
    })
    np.testing.assert_array_equal(got["rotate"], np_rotate(IMG, 48.0))
    np.testing.assert_array_equal(got["rotate_neg"], np_rotate(IMG, -48.0))
    np.testing.assert_array_equal(got["shear_x"], np_warp(IMG, lambda y, x: (y, x + 0.48 * y)))
    np.testing.assert_array_equal(got["shear_y"], np_warp(IMG, lambda y, x: (y - 0.48 * x, x)))
    # +6.4 px reads 6 px to the right: the content moves left and the last 6 columns are fill.
    np.testing.assert_array_equal(got["translate_x"][:, :W - 6], IMG[:, 6:])
    assert (got["translate_x"][:, W - 6:] == 128).all()
    np.testing.assert_array_equal(got["translate_y"][6:], IMG[:H - 6])
    assert (got["translate_y"][:6] == 128).all()
    # A 48-degree rotation uncovers the corners: they are fill, the centre is not.
    rotated = got["rotate"]
    assert (rotated[0, 0] == 128).all() and (rotated[-1, -1] == 128).all()
    np.testing.assert_array_equal(rotated[H // 2 - 1:H // 2 + 1, W // 2 - 1:W // 2 + 1],
                                  np_rotate(IMG, 48.0)[H // 2 - 1:H // 2 + 1, W // 2 - 1:W // 2 + 1])
    assert (got["shear_x"][0] == IMG[0]).all()  # the shear pivots on the top row


def test_half_pixel_shifts_round_away_from_zero_like_the_contrib_kernel(run):
    got = run(lambda: (ops.translate_x(IMG, 0.5), ops.translate_x(IMG, 1), ops.translate_y(IMG, -0.5),
                       ops.translate_x(IMG, 1.5), ops.translate_x(IMG, 2)))
    np.testing.assert_array_equal(got[0], got[1])  # x + 0.5 -> x + 1 for every x (half to even: x or x + 1)
    np.testing.assert_array_equal(got[3], got[4])
    # y - 0.5 rounds to y for y >= 1 but to -1 (outside) for y = 0: only the top row becomes fill.
    assert (got[2][0] == 128).all()
    np.testing.assert_array_equal(got[2][1:], IMG[1:])


def test_rotate_by_90_and_0_degrees(run):
    got = run(lambda: (ops.rotate(IMG, 90), ops.rotate(IMG, 0), ops.rotate(IMG[:16], 90.0)))
    np.testing.assert_array_equal(got[0], np.rot90(IMG))  # counter-clockwise, like np.rot90
    np.testing.assert_array_equal(got[1], IMG)
    # Non-square input: the shape stays, and the result matches the centred-rotation formula.
    assert got[2].shape == (16, W, 3)
    np.testing.assert_array_equal(got[2], np_rotate(IMG[:16], 90.0))


def test_cutout_at_fills_a_square_clipped_at_the_borders(run):
    got = run(lambda: (ops.cutout_at(IMG, 2, 30, 12), ops.cutout_at(IMG, 16, 10, 5, fill=0),
                       ops.cutout_at(IMG, 40, 40, 12)))
    np.testing.assert_array_equal(got[0], np_cutout(IMG, 2, 30, 12))
    assert (got[0][:8, 24:] == 128).all()
    assert (got[0][8:] == IMG[8:]).all() and (got[0][:, :24] == IMG[:, :24]).all()
    np.testing.assert_array_equal(got[1], np_cutout(IMG, 16, 10, 5, fill=0))
    assert (got[1] == 0).all(axis=-1).sum() == 25
    np.testing.assert_array_equal(got[2], IMG)  # entirely outside: nothing to cut


def _decode_cutout(image, sample, size):
    """Centre (cy, cx) of the fill square in `sample`; checks it is exactly a clipped size x size square."""
    covered = (sample == 128).all(-1)
    rows, cols = np.where(covered)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    half = size // 2
    cy = bottom + 1 - (size - half) if top == 0 else top + half
    cx = right + 1 - (size - half) if left == 0 else left + half
    np.testing.assert_array_equal(sample, np_cutout(image, cy, cx, size))
    return cy, cx


def test_random_cutout_centres_cover_the_whole_image(run):
    samples = run(lambda: _samples(lambda x: ops.random_cutout(x, 16), IMG_NO_FILL, 300))
    centres = np.array([_decode_cutout(IMG_NO_FILL, s, 16) for s in samples])
    assert centres.min() == 0 and centres.max() == H - 1
    assert len(set(centres[:, 0].tolist())) >= 28 and len(set(centres[:, 1].tolist())) >= 28


# --------------------------------------------------------------------------------------- jitter/views


def _decode_jitters(image, samples, pad=4, fill=128):
    """(flip, dy, dx) of the flip + pad + crop of `image` that gives each sample; fails if none does."""
    by_bytes = {cand.tobytes(): key for key, cand in _jitter_candidates(image, pad, fill).items()}
    assert len(by_bytes) == 2 * (2 * pad + 1) ** 2  # every candidate is distinct, so the draw is unique
    draws = [by_bytes.get(sample.tobytes()) for sample in samples]
    assert None not in draws, "a sample is not a flip + pad + crop of the input"
    return draws


def test_flip_pad_crop_draws_every_offset_and_flip_with_fill_128(run):
    samples, zeros = run(lambda: (_samples(ops.flip_pad_crop, COORDS, 300),
                                  _samples(ops.flip_pad_crop, np.zeros((H, W, 3), np.uint8), 64)))
    draws = _decode_jitters(COORDS, samples)
    assert {flip for flip, _, _ in draws} == {False, True}
    assert {dy for _, dy, _ in draws} == set(range(-4, 5))
    assert {dx for _, _, dx in draws} == set(range(-4, 5))
    assert set(np.unique(zeros).tolist()) == {0, 128}
    assert zeros.shape == (64, H, W, 3) and zeros.dtype == np.uint8


def test_flip_pad_crop_pad_and_fill_arguments(run):
    samples = run(lambda: _samples(lambda x: ops.flip_pad_crop(x, pad=2, fill=9), COORDS, 100))
    draws = set(_decode_jitters(COORDS, samples, pad=2, fill=9))
    assert {dy for _, dy, _ in draws} == set(range(-2, 3))
    assert {dx for _, _, dx in draws} == set(range(-2, 3))


def test_labelled_and_ori_views_are_jitter_only(run):
    zeros = np.zeros((H, W, 3), np.uint8)
    labelled, ori, coords = run(lambda: (_samples(views.labelled_view, zeros, 64),
                                         _samples(views.ori_view, zeros, 64),
                                         _samples(views.labelled_view, COORDS, 32)))
    for samples in (labelled, ori):
        assert samples.shape == (64, H, W, 3) and samples.dtype == np.uint8
        assert set(np.unique(samples).tolist()) == {0, 128}
        assert (samples == 128).any(axis=(1, 2, 3)).mean() > 0.8  # only shift (0, 0) shows no fill
    _decode_jitters(COORDS, coords)


def test_aug_view_is_built_from_the_same_ori_image(run):
    # num_layers=0 leaves cutout + jitter, so every aug pixel that is not fill must be a jitter of ori.
    ori, aug = run(lambda: _samples(lambda x: views.unlabelled_views(x, num_layers=0), COORDS, 48))
    _decode_jitters(COORDS, ori)
    for ori_view, aug_view in zip(ori, aug):
        kept = aug_view[..., 2] != 128
        assert set(np.unique(aug_view[..., 2]).tolist()) <= {7, 128}
        # Some jitter of ori explains every kept pixel, and the cutout adds fill beyond its padding.
        assert any(np.array_equal(cand[kept], aug_view[kept])
                   and (cand[..., 2][~kept] == 128).sum() < (~kept).sum()
                   for cand in _jitter_candidates(ori_view).values())


def test_unlabelled_views_full_pipeline_shapes_and_change(run):
    ori, aug = run(lambda: _samples(views.unlabelled_views, IMG, 64))
    assert ori.shape == aug.shape == (64, H, W, 3)
    assert ori.dtype == aug.dtype == np.uint8
    assert np.mean([not np.array_equal(o, a) for o, a in zip(ori, aug)]) > 0.9
    _decode_jitters(IMG, ori)


# ---------------------------------------------------------------------------------------- RandAugment


def test_randaugment_with_p_zero_returns_the_input_unchanged(run):
    samples = run(lambda: _samples(lambda x: randaugment.randaugment(x, prob_range=(0, 0)), IMG, 64))
    for sample in samples:
        np.testing.assert_array_equal(sample, IMG)


def test_randaugment_with_p_one_always_applies(run):
    once, twice, full = run(lambda: (
        _samples(lambda x: randaugment.randaugment(x, num_layers=1, prob_range=(1, 1), ops=("Invert",)), IMG, 16),
        _samples(lambda x: randaugment.randaugment(x, num_layers=2, prob_range=(1, 1), ops=("Invert",)), IMG, 16),
        _samples(lambda x: randaugment.randaugment(x, prob_range=(1, 1)), IMG, 32)))
    for sample in once:
        np.testing.assert_array_equal(sample, 255 - IMG)
    for sample in twice:
        np.testing.assert_array_equal(sample, IMG)
    assert sum(not np.array_equal(s, IMG) for s in full) >= 30
    assert full.dtype == np.uint8 and full.shape == (32, H, W, 3)


def test_randaugment_applies_with_probability_p(run):
    samples = run(lambda: _samples(
        lambda x: randaugment.randaugment(x, num_layers=1, prob_range=(0.5, 0.5), ops=("Invert",)), IMG, 400))
    inverted = sum(np.array_equal(s, 255 - IMG) for s in samples)
    unchanged = sum(np.array_equal(s, IMG) for s in samples)
    assert inverted + unchanged == 400
    assert 150 <= inverted <= 250


@pytest.mark.parametrize("name", randaugment.RANDAUGMENT_OPS)
def test_randaugment_applies_each_op_with_the_reference_parameters(run, name):
    image = IMG_NO_FILL
    (param,) = randaugment.op_parameters(name, 16) or (None,)
    functions = {"AutoContrast": ops.auto_contrast, "Equalize": ops.equalize, "Invert": ops.invert, "Rotate": ops.rotate,
           "Posterize": ops.posterize, "Solarize": ops.solarize, "Color": ops.color, "Contrast": ops.contrast,
           "Brightness": ops.brightness, "Sharpness": ops.sharpness, "ShearX": ops.shear_x, "ShearY": ops.shear_y,
           "TranslateX": ops.translate_x, "TranslateY": ops.translate_y}

    def build():
        always_once = lambda x: randaugment.randaugment(x, num_layers=1, prob_range=(1, 1), ops=(name,))  # noqa: E731
        samples = _samples(always_once, image, 24)
        if name == "Cutout":
            return samples, {}
        if param is None:
            return samples, {1: functions[name](image)}
        if name in ops.SIGNED_OPS:
            return samples, {1: functions[name](image, param), -1: functions[name](image, -param)}
        return samples, {1: functions[name](image, param)}

    samples, expected = run(build)
    if name == "Cutout":
        for sample in samples:
            _decode_cutout(image, sample, 12)
        return
    signs = set()
    for sample in samples:
        matches = [sign for sign, want in expected.items() if np.array_equal(sample, want)]
        assert len(matches) == 1
        signs.add(matches[0])
    assert signs == set(expected)  # signed ops show both signs, unsigned ones the single result


@pytest.mark.parametrize("name", sorted(COLOUR_FNS))
def test_randaugment_and_the_aug_view_pass_the_overflow_mode_on(run, name):
    bright = np.tile(np.array([220, 120, 40], np.uint8), (H, W, 1))  # coloured, so Color changes it
    bright[::2, ::3] = (30, 60, 90)  # not flat, so Sharpness changes it
    (param,) = randaugment.op_parameters(name, 16)

    def build():
        modes = {}
        for overflow in ("wrap", "clip"):
            once = lambda x, o=overflow: randaugment.randaugment(  # noqa: E731
                x, num_layers=1, prob_range=(1, 1), ops=(name,), overflow=o)
            modes[overflow] = (_samples(once, bright, 4), COLOUR_FNS[name](bright, param, overflow=overflow))
        return modes

    modes = run(build)
    for overflow, (samples, want) in modes.items():
        for sample in samples:
            np.testing.assert_array_equal(sample, want, err_msg=overflow)
    assert not np.array_equal(modes["wrap"][1], modes["clip"][1])


def test_unlabelled_views_pass_the_overflow_mode_on():
    bright = np.full((H, W, 3), 200, np.uint8)

    def draw(overflow):
        with tf.Graph().as_default(), tf.Session() as sess:
            return sess.run(_samples(lambda x: views.unlabelled_views(x, seed=3, overflow=overflow), bright, 32))

    (ori_wrap, aug_wrap), (ori_clip, aug_clip) = draw("wrap"), draw("clip")
    np.testing.assert_array_equal(ori_wrap, ori_clip)  # same seed: same draws, only the blend differs
    differ = [not np.array_equal(w, c) for w, c in zip(aug_wrap, aug_clip)]
    assert 0 < sum(differ) < 32  # the images where Brightness or Contrast ran


def test_explicit_seeds_reproduce_across_graphs():
    def draw(seed):
        def views(x):
            return (ops.flip_pad_crop(x, seed=seed), ops.random_cutout(x, seed=seed),
                    randaugment.randaugment(x, seed=seed, prob_range=(0.5, 0.5), ops=("Rotate", "Cutout", "Invert")))
        with tf.Graph().as_default(), tf.Session() as sess:
            return sess.run(_samples(views, COORDS, 16))

    first, again, other = draw(5), draw(5), draw(6)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


# ------------------------------------------------------------------------------------- normalisation


def test_normalize_matches_numpy_for_images_batches_and_floats(run):
    from mpltool.models import CIFAR_MEAN, CIFAR_STD, input_spec, normalize_input

    spec = input_spec("wrn-28-2")
    batch = np.stack([IMG, 255 - IMG])
    floats = batch.astype(np.float32) + 0.25
    got = run(lambda: tuple(normalize_input(x, spec) for x in (IMG, batch, tf.constant(floats))))
    mean = 255.0 * np.array(CIFAR_MEAN)
    std = 255.0 * np.array(CIFAR_STD)
    assert CIFAR_MEAN == (0.491400, 0.482158, 0.4465309) and CIFAR_STD == (0.247032, 0.243485, 0.26159)
    assert got[0].dtype == got[1].dtype == got[2].dtype == np.float32
    np.testing.assert_allclose(got[0], (IMG - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], (batch - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[2], (floats - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[1][0], got[0])


# ---------------------------------------------------------------------------------------- bad input


def test_bad_inputs_are_rejected(run):
    def build():
        with pytest.raises(ValueError, match="uint8"):
            ops.invert(IMG.astype(np.float32))
        with pytest.raises(ValueError, match="static HWC"):
            ops.rotate(tf.placeholder(tf.uint8, [None, None, 3]), 10)
        with pytest.raises(ValueError, match="static HWC"):
            ops.equalize(np.zeros((2, H, W, 3), np.uint8))
        with pytest.raises(UsageError, match="prob_range"):
            randaugment.randaugment(IMG, prob_range=(0.8, 0.2))
        with pytest.raises(UsageError, match="prob_range"):
            randaugment.randaugment(IMG, prob_range=(0.0, 1.5))
        with pytest.raises(UsageError, match="num_layers"):
            randaugment.randaugment(IMG, num_layers=-1)
        with pytest.raises(UsageError, match="magnitude"):
            randaugment.randaugment(IMG, magnitude=-3)
        with pytest.raises(UsageError, match="unknown augmentation op"):
            randaugment.randaugment(IMG, ops=("Identity",))
        return tf.constant(0)

    run(build)
