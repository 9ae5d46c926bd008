"""AutoAugment (CIFAR-10 policy, tensorflow/models research/autoaugment) against numpy references."""

import itertools
import math

import numpy as np
import pytest

from mpltool.data.augment import autoaugment
from mpltool.data import views
from mpltool.errors import UsageError
from helpers import dataset_samples
from test_augment import np_equalize, np_smooth  # the PIL definitions, written once
from mpltool.tfv1 import tf

H = W = 32
RNG = np.random.RandomState(12)
IMG = RNG.randint(0, 256, (H, W, 3)).astype(np.uint8)  # fixed random 32x32x3 image
# Every pixel names its source: channel 0 = row + 1, channel 1 = column + 1, channel 2 = 7.
COORDS = np.stack(np.mgrid[1:H + 1, 1:W + 1].tolist() + [np.full((H, W), 7)], -1).astype(np.uint8)

pytestmark = pytest.mark.filterwarnings("ignore:Seed .* from outer graph:UserWarning")


GRAPH_SEED = 20240612  # of the `run` fixture's graph (conftest.py)
_samples = dataset_samples


# ------------------------------------------------------------------------------------ numpy references
# Written from the TFM/PIL definitions (with mpltool's documented integer rounding and fill 128).


def np_level_float(level, maxval):
    return level * maxval / 10.0


def np_level_int(level, maxval):
    return int(level * maxval / 10.0)


def np_blend(degenerate, img, factor):
    a = degenerate.astype(np.float32)
    b = img.astype(np.float32)
    return np.clip(a + np.float32(factor) * (b - a), 0, 255).astype(np.uint8)


def np_gray(img):
    r, g, b = (img[..., c].astype(np.int64) for c in range(3))
    return (299 * r + 587 * g + 114 * b + 500) // 1000


def np_auto_contrast(img):
    out = img.copy()
    for c in range(3):
        ch = img[..., c].astype(np.int64)
        lo, hi = ch.min(), ch.max()
        if hi > lo:
            out[..., c] = (ch - lo) * 255 // (hi - lo)
    return out


def _round_half_away(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def np_warp(img, source, fill=128):
    out = np.full_like(img, fill)
    for y in range(H):
        for x in range(W):
            sy, sx = (_round_half_away(v) for v in source(y, x))
            if 0 <= sy < H and 0 <= sx < W:
                out[y, x] = img[sy, sx]
    return out


def np_op(name, img, level, sign=1):
    """One TFM op at `level` (sign for the signed ops)."""
    if name == "Invert":
        return 255 - img
    if name == "AutoContrast":
        return np_auto_contrast(img)
    if name == "Equalize":
        return np_equalize(img)
    if name == "Posterize":
        bits = 4 - np_level_int(level, 4)
        return img & np.uint8((0xFF << (8 - bits)) & 0xFF)
    if name == "Solarize":
        threshold = 256 - np_level_int(level, 256)
        return np.where(img < threshold, img, 255 - img).astype(np.uint8)
    factor = np_level_float(level, 1.8) + 0.1
    if name == "Color":
        return np_blend(np.repeat(np_gray(img)[..., None], 3, -1), img, factor)
    if name == "Contrast":  # PIL: the mean of the "L" image, int(mean + 0.5)
        mean = int(np_gray(img).mean() + 0.5)
        return np_blend(np.full(img.shape, mean), img, factor)
    if name == "Brightness":
        return np_blend(np.zeros(img.shape), img, factor)
    if name == "Sharpness":
        return np_blend(np_smooth(img), img, factor)
    if name == "Rotate":  # counter-clockwise about the centre, as the inverse map
        t = math.radians(sign * np_level_int(level, 30))
        c = (H - 1) / 2.0
        return np_warp(img, lambda y, x: (math.sin(t) * (x - c) + math.cos(t) * (y - c) + c,
                                          math.cos(t) * (x - c) - math.sin(t) * (y - c) + c))
    if name == "ShearX":  # PIL affine (1, s, 0, 0, 1, 0)
        s = sign * np_level_float(level, 0.3)
        return np_warp(img, lambda y, x: (y, x + s * y))
    if name == "ShearY":  # PIL affine (1, 0, 0, s, 1, 0)
        s = sign * np_level_float(level, 0.3)
        return np_warp(img, lambda y, x: (y + s * x, x))
    if name == "TranslateX":
        t = sign * np_level_int(level, 10)
        return np_warp(img, lambda y, x: (y, x + t))
    if name == "TranslateY":
        t = sign * np_level_int(level, 10)
        return np_warp(img, lambda y, x: (y + t, x))
    raise AssertionError(name)


SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}

# The paper's / DeepVoltaire's CIFAR-10 table, written out again independently.
WANT_POLICY = """
Invert .1 7 Contrast .2 6 | Rotate .7 2 TranslateX .3 9 | Sharpness .8 1 Sharpness .9 3 |
ShearY .5 8 TranslateY .7 9 | AutoContrast .5 8 Equalize .9 2 | ShearY .2 7 Posterize .3 7 |
Color .4 3 Brightness .6 7 | Sharpness .3 9 Brightness .7 9 | Equalize .6 5 Equalize .5 1 |
Contrast .6 7 Sharpness .6 5 | Color .7 7 TranslateX .5 8 | Equalize .3 7 AutoContrast .4 8 |
TranslateY .4 3 Sharpness .2 6 | Brightness .9 6 Color .2 8 | Solarize .5 2 Invert .0 3 |
Equalize .2 0 AutoContrast .6 0 | Equalize .2 8 Equalize .6 4 | Color .9 9 Equalize .6 6 |
AutoContrast .8 4 Solarize .2 8 | Brightness .1 3 Color .7 0 | Solarize .4 5 AutoContrast .9 3 |
TranslateY .9 9 TranslateY .7 9 | AutoContrast .9 2 Solarize .8 3 | Equalize .8 8 Invert .1 3 |
TranslateY .7 9 AutoContrast .9 1
"""


def test_cifar10_policy_is_the_25_published_sub_policies():
    want = []
    for chunk in WANT_POLICY.split("|"):
        t = chunk.split()
        want.append(((t[0], float(t[1]), int(t[2])), (t[3], float(t[4]), int(t[5]))))
    assert len(want) == 25
    assert [tuple(tuple(op) for op in sub) for sub in autoaugment.CIFAR10_POLICY] == want


# ----------------------------------------------------------------------------------- level -> parameter

MAPPING = {  # op: expected parameter at levels 0, 5, 9, 10
    "ShearX": (0.0, 0.15, 0.27, 0.3), "ShearY": (0.0, 0.15, 0.27, 0.3),
    "TranslateX": (0, 5, 9, 10), "TranslateY": (0, 5, 9, 10),
    "Rotate": (0, 15, 27, 30),
    "Posterize": (4, 2, 1, 0),
    "Solarize": (256, 128, 26, 0),
    "Color": (0.1, 1.0, 1.72, 1.9), "Contrast": (0.1, 1.0, 1.72, 1.9),
    "Brightness": (0.1, 1.0, 1.72, 1.9), "Sharpness": (0.1, 1.0, 1.72, 1.9),
    "Cutout": (0, 10, 18, 20),
}


@pytest.mark.parametrize("name", autoaugment.AUTOAUGMENT_OPS)
def test_level_mapping_at_levels_0_5_9_10(name):
    got = [autoaugment.autoaugment_parameters(name, level) for level in (0, 5, 9, 10)]
    if name in ("AutoContrast", "Equalize", "Invert"):
        assert got == [(), (), (), ()]
        return
    assert [g[0] for g in got] == pytest.approx(list(MAPPING[name]))
    if name in ("TranslateX", "TranslateY", "Rotate", "Posterize", "Solarize", "Cutout"):
        assert all(isinstance(g[0], int) for g in got)


def test_bad_ops_levels_and_probabilities_are_refused():
    with pytest.raises(UsageError, match="unknown AutoAugment op"):
        autoaugment.autoaugment_parameters("Blur", 3)
    with pytest.raises(UsageError, match="level"):
        autoaugment.autoaugment_parameters("Rotate", 11)
    with pytest.raises(UsageError, match="level"):
        autoaugment.autoaugment_parameters("Rotate", -1)
    with pytest.raises(UsageError, match="probability"):
        autoaugment.autoaugment(IMG, policy=((("Invert", 1.5, 0), ("Invert", 0.5, 0)),))
    with pytest.raises(UsageError, match="overflow"):
        autoaugment.autoaugment(IMG, overflow="saturate")


# ------------------------------------------------------------------------------------- each sub-policy


@pytest.mark.parametrize("index", range(25))
def test_each_sub_policy_with_probability_1_matches_numpy(run, index):
    (op1, _, level1), (op2, _, level2) = autoaugment.CIFAR10_POLICY[index]
    forced = (((op1, 1.0, level1), (op2, 1.0, level2)),)
    signs1 = (1, -1) if op1 in SIGNED else (1,)
    signs2 = (1, -1) if op2 in SIGNED else (1,)
    expected = {}
    for s1, s2 in itertools.product(signs1, signs2):
        expected.setdefault(np_op(op2, np_op(op1, IMG, level1, s1), level2, s2).tobytes(), set()).add((s1, s2))
    count = 4 if len(expected) == 1 else 48
    samples = run(lambda: _samples(lambda x: autoaugment.autoaugment(x, policy=forced), IMG, count))
    assert samples.shape == (count, H, W, 3) and samples.dtype == np.uint8
    seen = set()
    for sample in samples:
        assert sample.tobytes() in expected, "sub-policy {} {}+{} differs from numpy".format(index + 1, op1, op2)
        seen.add(sample.tobytes())
    assert seen == set(expected)  # every sign combination shows up
    if len(expected) == 1:
        assert not np.array_equal(samples[0], IMG) or (op1, op2) == ("Invert", "Invert")


def test_solarize_level_0_changes_nothing_and_probability_0_never_applies(run):
    got = run(lambda: (
        _samples(lambda x: autoaugment.autoaugment(x, policy=((("Solarize", 1.0, 0), ("Invert", 0.0, 0)),)), IMG, 8),
        _samples(lambda x: autoaugment.autoaugment(x, policy=((("Posterize", 1.0, 10), ("Solarize", 1.0, 10)),)), IMG, 2)))
    for sample in got[0]:
        np.testing.assert_array_equal(sample, IMG)
    for sample in got[1]:  # 0 bits kept -> all 0, then threshold 0 inverts everything
        assert (sample == 255).all()


def test_each_op_is_applied_with_its_own_probability_independently(run):
    policy = ((("Invert", 0.5, 0), ("Posterize", 0.2, 5)),)
    samples = run(lambda: _samples(lambda x: autoaugment.autoaugment(x, policy=policy), IMG, 2000))
    post = lambda x: x & np.uint8(0xC0)  # noqa: E731  (level 5: 2 bits)
    outcomes = {IMG.tobytes(): (0, 0), (255 - IMG).tobytes(): (1, 0),
                post(IMG).tobytes(): (0, 1), post(255 - IMG).tobytes(): (1, 1)}
    assert len(outcomes) == 4
    keys = [outcomes[s.tobytes()] for s in samples]
    first = np.mean([k[0] for k in keys])
    second = np.mean([k[1] for k in keys])
    both = np.mean([k == (1, 1) for k in keys])
    assert abs(first - 0.5) < 0.05 and abs(second - 0.2) < 0.04
    assert abs(both - 0.1) < 0.03  # independent draws


# ---------------------------------------------------------------------------------------- uniformity


def test_sub_policy_choice_is_uniform_chi_square(run):
    # 25 deterministic sub-policies (p = 1), each leaving a distinct image.
    policy = tuple((("Solarize", 1.0, a), ("Brightness", 1.0, b)) for a in (0, 2, 4, 6, 8) for b in (1, 3, 5, 7, 9))
    marks = {}
    for k, ((_, _, a), (_, _, b)) in enumerate(policy):
        marks[np_op("Brightness", np_op("Solarize", IMG, a), b).tobytes()] = k
    assert len(marks) == 25
    count = 5000
    samples = run(lambda: _samples(lambda x: autoaugment.autoaugment(x, policy=policy), IMG, count))
    counts = np.bincount([marks[s.tobytes()] for s in samples], minlength=25)
    expected = count / 25.0
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 51.0, (chi2, counts)  # 24 dof: p > 0.001
    assert counts.min() > 0


def test_default_policy_runs_and_changes_most_images(run):
    samples = run(lambda: _samples(autoaugment.autoaugment, IMG, 200))
    assert samples.shape == (200, H, W, 3) and samples.dtype == np.uint8
    changed = np.mean([not np.array_equal(s, IMG) for s in samples])
    # Every sub-policy but one (16: p .2 / .6) applies something with prob >= .5.
    assert 0.6 < changed < 1.0


# ---------------------------------------------------------------------------------------------- view


def _jitters(img, pad=4, fill=128):
    out = []
    for flip in (False, True):
        flipped = img[:, ::-1] if flip else img
        padded = np.pad(flipped, [(pad, pad), (pad, pad), (0, 0)], constant_values=fill)
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                out.append(padded[dy:dy + H, dx:dx + W])
    return out


def np_cutout(img, cy, cx, size=16, fill=128):
    out = img.copy()
    top, left = cy - size // 2, cx - size // 2
    out[max(top, 0):max(top + size, 0), max(left, 0):max(left + size, 0)] = fill
    return out


def test_autoaugment_view_shape_dtype(run):
    outputs = run(lambda: _samples(views.autoaugment_view, IMG, 64))
    assert outputs.shape == (64, H, W, 3) and outputs.dtype == np.uint8
    assert np.mean([not np.array_equal(v, IMG) for v in outputs]) > 0.95


def test_autoaugment_view_is_jitter_then_a_16x16_cutout(run):
    identity = ((("Invert", 0.0, 0), ("Invert", 0.0, 0)),)
    outputs = run(lambda: _samples(lambda x: views.autoaugment_view(x, policy=identity), COORDS, 40))
    candidates = _jitters(COORDS)
    full_squares = 0
    for view in outputs:
        kept = view[..., 2] != 128
        matches = [c for c in candidates if np.array_equal(c[kept], view[kept])]
        assert matches, "kept pixels are not a flip + pad + crop of the input"
        found = [(cy, cx) for c in matches for cy in range(H) for cx in range(W)
                 if np.array_equal(np_cutout(c, cy, cx), view)]
        assert found, "fill region is not a (clipped) 16x16 square"
        cy, cx = found[0]
        if 8 <= cy <= H - 8 and 8 <= cx <= W - 8:
            full_squares += 1
            assert (view[cy - 8:cy + 8, cx - 8:cx + 8] == 128).all()
    assert full_squares > 0


def test_explicit_seeds_reproduce_across_graphs():
    def draw(seed):
        with tf.Graph().as_default(), tf.Session() as sess:
            return sess.run(_samples(lambda x: views.autoaugment_view(x, seed=seed), IMG, 16))

    first, again, other = draw(5), draw(5), draw(6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
