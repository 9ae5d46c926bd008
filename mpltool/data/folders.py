"""Image folders (issue 14, work in progress): PACS's layout DIR/<domain>/<class>/*.{jpg,jpeg,png} (a tree
without a domain level is one domain), every image decoded by TensorFlow's decoders, checked, resized once
to the network's input size and stored in one compact file per domain.

Stored form, `<domain>.bin`: records of 1 label byte + H·W·3 pixel bytes (uint8, RGB, HWC), the CIFAR
record generalised to any size; `folders.json` names the size, the classes (label = index) and the
domains with their record counts. Still to do for the issue: the source entry (`data prepare --images`),
PACS list files (`relpath label`, labels from 1), and `target_domain` through train, eval and freeze.
"""

import json
import os
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from mpltool.errors import InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
INDEX_FILE = "folders.json"


class Layout(NamedTuple):
    domains: List[str]
    classes: List[str]
    items: List[Tuple[str, int, str]]  # (domain, label, path), in domain, class, file-name order


def _subdirs(path: str) -> List[str]:
    return sorted(name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name)))


def _images(path: str) -> List[str]:
    return sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_SUFFIXES)
                  and os.path.isfile(os.path.join(path, name)))


def scan(root) -> Layout:
    """The domains, classes and image files under `root`, checked: every domain has every class folder,
    and no class folder of a domain is empty."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise InvalidInputError("{} is not a folder of images (expected DOMAIN/CLASS/*.png|jpg)".format(root))
    top = _subdirs(root)
    if not top:
        raise InvalidInputError("{} holds no class folders (expected DOMAIN/CLASS/*.png|jpg)".format(root))
    nested = all(_subdirs(os.path.join(root, name)) for name in top)
    domains = {name: os.path.join(root, name) for name in top} if nested else {os.path.basename(root): root}
    classes = sorted(set(c for path in domains.values() for c in _subdirs(path)))
    items = []
    for domain in sorted(domains):
        present = set(_subdirs(domains[domain]))
        for label, name in enumerate(classes):
            folder = os.path.join(domains[domain], name)
            if name not in present:
                raise InvalidInputError("domain {} has no class folder {} (every domain needs all {} classes)".format(
                    domain, folder, len(classes)))
            files = _images(folder)
            if not files:
                raise InvalidInputError("class folder {} holds no .jpg/.jpeg/.png images".format(folder))
            items.extend((domain, label, os.path.join(folder, f)) for f in files)
    return Layout(sorted(domains), classes, items)


class Decoder:
    """TensorFlow's image decoders in one small graph: any JPEG/PNG/BMP/GIF bytes to RGB, resized."""

    def __init__(self, size: Tuple[int, int]):
        from mpltool.tfv1 import tf

        self.graph = tf.Graph()
        with self.graph.as_default():
            self.data = tf.placeholder(tf.string, ())
            image = tf.image.decode_image(self.data, channels=3, expand_animations=False)
            self.shape = tf.shape(image)
            # TF 2's resize (in TF 1.15 as compat.v2) filters when shrinking, so a 227-px photo made 32 px
            # does not alias; same-size input passes through unchanged.
            from tensorflow.compat import v2 as tf2

            resized = tf2.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=True)
            self.pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
        self.session = tf.Session(graph=self.graph)

    def __call__(self, path: str) -> np.ndarray:
        try:
            data = open(path, "rb").read()
        except OSError as exc:
            raise InvalidInputError("cannot read image {}: {}".format(path, exc.strerror or exc))
        if not data:
            raise InvalidInputError("image {} is empty (0 bytes)".format(path))
        try:
            return self.session.run(self.pixels, feed_dict={self.data: data})
        except Exception as exc:  # tf.errors.InvalidArgumentError for truncated or foreign bytes
            message = getattr(exc, "message", None) or str(exc)
            raise InvalidInputError("image {} does not decode: {}".format(path, message.splitlines()[0]))

    def close(self):
        self.session.close()


def import_folders(root, dest, size: Tuple[int, int]) -> List[Dict]:
    """Decode, check and resize every image under `root` into `dest`/<domain>.bin + folders.json; one
    summary per domain file (name, records, label_counts)."""
    layout = scan(root)
    decoder = Decoder(size)
    summaries = []
    try:
        os.makedirs(os.fspath(dest), exist_ok=True)
        for domain in layout.domains:
            chosen = [(label, path) for d, label, path in layout.items if d == domain]
            records = np.empty((len(chosen), 1 + size[0] * size[1] * 3), np.uint8)
            for row, (label, path) in enumerate(chosen):
                records[row, 0] = label
                records[row, 1:] = decoder(path).reshape(-1)
            name = "{}.bin".format(domain)
            records.tofile(os.path.join(os.fspath(dest), name))
            summaries.append({"name": name, "domain": domain, "records": len(chosen),
                              "label_counts": np.bincount(records[:, 0], minlength=len(layout.classes)).tolist()})
    finally:
        decoder.close()
    index = {"size": list(size), "classes": layout.classes,
             "domains": {s["domain"]: s["records"] for s in summaries}}
    with open(os.path.join(os.fspath(dest), INDEX_FILE), "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=2, sort_keys=True)
    return summaries


def read_domains(folder, domains: Sequence[str]):
    """(images uint8 [N, H, W, 3], labels int64) of the named domains, in the given order."""
    folder = os.fspath(folder)
    with open(os.path.join(folder, INDEX_FILE), encoding="utf-8") as handle:
        index = json.load(handle)
    height, width = index["size"]
    images, labels = [], []
    for domain in domains:
        raw = np.fromfile(os.path.join(folder, "{}.bin".format(domain)), dtype=np.uint8)
        records = raw.reshape(-1, 1 + height * width * 3)
        images.append(records[:, 1:].reshape(-1, height, width, 3))
        labels.append(records[:, 0].astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)
