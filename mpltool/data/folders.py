"""Image folders: PACS's layout DIR/<domain>/<class>/*.{jpg,jpeg,png} (a tree without a domain level is one
domain), or per-domain list files `relpath label` (PACS's kfold lists), every image decoded by TensorFlow's
decoders, checked, resized once to the network's input size and stored in one compact file per domain.

Stored form, `<domain>.bin`: records of 1 label byte + H·W·3 pixel bytes (uint8, RGB, HWC), the CIFAR
record generalised to any size; `folders.json` names the size, the classes (label = index) and the
domains with their record counts. Which domain is the test set is a training choice (`target_domain`),
so nothing here splits the data.
"""

import json
import os
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from mpltool.errors import InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
INDEX_FILE = "folders.json"
MAX_CLASSES = 256  # a label is one byte of the stored record
# PACS's official lists are <domain>_{train,crossval,test}_kfold.txt; M's are <domain>.txt.
LIST_SUFFIX = re.compile(r"(_(train|crossval|test|val))?(_kfold)?$")


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
    root = os.path.abspath(os.fspath(root))  # `--images .` names its one domain after the folder, not "."
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
    if len(classes) > MAX_CLASSES:
        raise InvalidInputError("{} holds {} class folders; at most {} are supported".format(
            root, len(classes), MAX_CLASSES))
    return Layout(sorted(domains), classes, items)


def scan_lists(root, lists_dir, note: Callable[[str], None] = lambda line: None) -> Layout:
    """The domains, classes and images named by the list files in `lists_dir` (`<domain>*.txt`, one
    `relpath label` per line, paths relative to `root`), checked: every line parses, every file exists,
    and every domain has every class.

    Labels that start at 1 (PACS's kfold lists: 1..7, no 0) are detected and shifted to start at 0, and
    `note` says so. Several lists of one domain (train + crossval + test) are merged. A class is named by
    the folder its files share (PACS: `<domain>/<class>/<file>`), else `class_<label>`."""
    root, lists_dir = os.fspath(root), os.fspath(lists_dir)
    if not os.path.isdir(lists_dir):
        raise InvalidInputError("--lists {} is not a folder of list files".format(lists_dir))
    files = sorted(name for name in os.listdir(lists_dir) if name.endswith(".txt"))
    if not files:
        raise InvalidInputError("--lists {} holds no .txt list files".format(lists_dir))
    entries = {}  # type: Dict[str, List[Tuple[int, str]]]
    for name in files:
        domain = LIST_SUFFIX.sub("", name[: -len(".txt")])
        path = os.path.join(lists_dir, name)
        seen = set(p for _, p in entries.get(domain, []))
        for number, line in enumerate(open(path, encoding="utf-8", errors="replace").read().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not re.match(r"^\d+$", parts[1]):
                raise InvalidInputError("{} line {}: expected 'relpath label', got {!r}".format(path, number, line[:80]))
            image = os.path.join(root, parts[0])
            if not os.path.isfile(image):
                raise InvalidInputError("{} line {}: no image {}".format(path, number, image))
            if image not in seen:
                seen.add(image)
                entries.setdefault(domain, []).append((int(parts[1]), image))
    labels = sorted(set(label for items in entries.values() for label, _ in items))
    if not labels:
        raise InvalidInputError("the list files in {} name no images".format(lists_dir))
    offset = 0
    if labels[0] == 1:
        offset = 1
        note("the list files' labels start at 1 (PACS's kfold lists): stored as label - 1, so {} become 0..{}"
             .format("1..{}".format(labels[-1]), labels[-1] - 1))
    count = labels[-1] - offset + 1
    if count > MAX_CLASSES:
        raise InvalidInputError("the list files name label {}; at most {} classes are supported".format(
            labels[-1], MAX_CLASSES))
    classes = []
    for label in range(count):
        folders = set(os.path.basename(os.path.dirname(p)) for items in entries.values()
                      for l, p in items if l - offset == label)
        classes.append(folders.pop() if len(folders) == 1 else "class_{}".format(label))
    items = []
    for domain in sorted(entries):
        present = set(l - offset for l, _ in entries[domain])
        absent = [classes[c] for c in range(count) if c not in present]
        if absent:
            raise InvalidInputError("domain {} has no image of class {} (every domain needs all {} classes)".format(
                domain, ", ".join(absent), count))
        items.extend((domain, l - offset, p) for l, p in sorted(entries[domain], key=lambda e: (e[0], e[1])))
    return Layout(sorted(entries), classes, items)


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


def import_folders(root, dest, size: Tuple[int, int], lists=None,
                   note: Callable[[str], None] = lambda line: None) -> List[Dict]:
    """Decode, check and resize every image under `root` (or named by the list files in `lists`) into
    `dest`/<domain>.bin + folders.json; one summary per domain file (name, domain, records, label_counts)."""
    layout = scan_lists(root, lists, note) if lists else scan(root)
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


def read_index(path) -> Dict:
    with open(os.fspath(path), encoding="utf-8") as handle:
        return json.load(handle)


def read_domain_files(paths: Sequence, size) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W, 3], labels int64) of stored domain files, concatenated in order."""
    height, width = size
    record_size = 1 + height * width * 3
    images, labels = [np.zeros((0, height, width, 3), np.uint8)], [np.zeros((0,), np.int64)]
    for path in paths:
        raw = np.fromfile(os.fspath(path), dtype=np.uint8)
        if raw.size % record_size:
            raise InvalidInputError("{} is not a whole number of {}x{} image records".format(path, height, width))
        records = raw.reshape(-1, record_size)
        images.append(records[:, 1:].reshape(-1, height, width, 3))
        labels.append(records[:, 0].astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_domains(folder, domains: Sequence[str]):
    """(images uint8 [N, H, W, 3], labels int64) of the named domains of an imported folder, in order."""
    folder = os.fspath(folder)
    index = read_index(os.path.join(folder, INDEX_FILE))
    return read_domain_files([os.path.join(folder, "{}.bin".format(d)) for d in domains], index["size"])
