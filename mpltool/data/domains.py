"""A multi-domain demo set: the demo shapes drawn in four styles, written as PNG
files in PACS's layout DOMAIN/CLASS/NNNN.png, so domain generalisation (train on three domains, test on
the fourth) runs from image files without a download.

Styles, each a different look of the same ten classes (what PACS's photo / art / cartoon / sketch are):
- photo: textured background, shaded shape, sensor noise (the CIFAR-format demo's look);
- cartoon: flat colours and a dark outline, no texture or noise;
- sketch: dark strokes along the shape's edges on a light background, no colour;
- painting: blotchy low-frequency colour over both background and shape.
"""

import os

import numpy as np

from mpltool.data import demo
from mpltool.errors import UsageError

STYLES = ("photo", "cartoon", "sketch", "painting")
# The recipe the multi-domain demo is prepared for (domain generalisation on three styles, the fourth held out).
DEMO_RECIPE = "masf-demo"


def _edges(masks):
    """Where the anti-aliased coverage changes: a 1-2 px outline in [0, 1]."""
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gradient = np.abs(padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) + np.abs(padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return np.clip(gradient, 0.0, 1.0)


def make_domain_images(count, seed, style):
    """Balanced, shuffled images (HWC uint8) and int64 labels of one style: a pure function of its arguments."""
    if style not in STYLES:
        raise UsageError("unknown style {!r} (one of {})".format(style, ", ".join(STYLES)))
    rng = np.random.RandomState(seed)
    labels = rng.permutation(np.arange(count) % len(demo.DEMO_CLASSES)).astype(np.int64)
    background, shape = demo._colour_pairs(rng, count)
    masks = demo._shape_masks(rng, labels)
    coverage = masks[..., None]
    if style == "photo":
        texture = rng.uniform(8.0, 30.0, size=(count, 1, 1, 1)) * demo._smooth_noise(rng, count, 4)
        noise = rng.normal(0.0, 1.0, size=masks.shape + (3,)) * rng.uniform(3.0, 14.0, size=(count, 1, 1, 1))
        images = (background + texture) * (1.0 - coverage) + shape * coverage + noise
    elif style == "cartoon":
        outline = _edges(masks)[..., None]
        images = (background * (1.0 - coverage) + shape * coverage) * (1.0 - outline) + 20.0 * outline
    elif style == "sketch":
        paper = rng.uniform(220.0, 250.0, size=(count, 1, 1, 1))
        stroke = _edges(masks)[..., None]
        images = np.broadcast_to(paper * (1.0 - 0.8 * stroke), masks.shape + (3,))
    else:  # painting
        wash = 45.0 * demo._smooth_noise(rng, count, 6)
        images = background * (1.0 - coverage) + shape * coverage + wash
    return np.clip(np.round(images), 0, 255).astype(np.uint8), labels


def write_domain_demo(out_dir, per_domain=400, seed=0, encode_png=None):
    """Write OUT/<style>/<class>/<index>.png for every style; return {style: image count}.

    `encode_png(image) -> bytes` defaults to TensorFlow's PNG encoder (a maintained codec, not ours)."""
    if per_domain < len(demo.DEMO_CLASSES):
        raise UsageError("per_domain must be at least {} (one image per class), got {}".format(
            len(demo.DEMO_CLASSES), per_domain))
    encode = encode_png or _tf_png_encoder()
    counts = {}
    for index, style in enumerate(STYLES):
        images, labels = make_domain_images(per_domain, [seed, 100 + index], style)
        for number, (image, label) in enumerate(zip(images, labels)):
            folder = os.path.join(os.fspath(out_dir), style, demo.DEMO_CLASSES[label].replace(" ", "_"))
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "{:05d}.png".format(number)), "wb") as handle:
                handle.write(encode(image))
        counts[style] = int(per_domain)
    return counts


def _tf_png_encoder():
    from mpltool.tfv1 import tf

    graph = tf.Graph()
    with graph.as_default():
        pixels = tf.placeholder(tf.uint8, (None, None, 3))
        png = tf.image.encode_png(pixels)
    session = tf.Session(graph=graph)
    return lambda image: session.run(png, feed_dict={pixels: image})
