"""Image folders: PACS's layout DIR/<domain>/<class>/*.{jpg,jpeg,png} (a tree without a domain level is one
domain), or per-domain list files `relpath label` (PACS's kfold lists), every image decoded once by
TensorFlow's decoders to check it.

Stored form: the files themselves, copied into `images-<hash>/`, and `images.tsv`, one row per image
(relative path, label, domain, size, mtime, sha256, farmhash64 fingerprint, decoded height and width),
the one manifest output that pins them all. Nothing is decoded into the project: each run decodes at its
model's input size as it reads (mpltool/data/records.py), so one import serves any model and memory stays
flat. Which domain is the test set is a training choice (`target_domain`), so nothing here splits the data.

mpltool 0.x stored `<domain>.bin` (1 label byte + H*W*3 pixel bytes per record, decoded at one size) and
`folders.json`; projects holding those are still read, at that size.
"""

import collections
import json
import os
import re
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from mpltool.errors import InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
INDEX_FILE = "folders.json"
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
    """TensorFlow's image decoders in one small graph: any JPEG/PNG/BMP/GIF bytes to RGB, resized (the
    decode and resize every reader of image files shares: mpltool/data/records.py)."""

    def __init__(self, size: Optional[Tuple[int, int]]):
        from mpltool.data.records import decode_image, fingerprint, resize_image
        from mpltool.tfv1 import tf

        self.graph = tf.Graph()
        with self.graph.as_default():
            self.data = tf.placeholder(tf.string, ())
            image = decode_image(self.data)
            self.shape = tf.shape(image)
            self.fingerprint = fingerprint(self.data)
            self.pixels = resize_image(image, size) if size else image
        self.session = tf.Session(graph=self.graph)

    @staticmethod
    def read(path: str) -> bytes:
        try:
            data = open(path, "rb").read()
        except OSError as exc:
            raise InvalidInputError("cannot read image {}: {}".format(path, exc.strerror or exc))
        if not data:
            raise InvalidInputError("image {} is empty (0 bytes)".format(path))
        return data

    def run(self, fetches, path: str, data: Optional[bytes] = None):
        try:
            return self.session.run(fetches, feed_dict={self.data: self.read(path) if data is None else data})
        except Exception as exc:  # tf.errors.InvalidArgumentError for truncated or foreign bytes
            message = getattr(exc, "message", None) or str(exc)
            raise InvalidInputError("image {} does not decode: {}".format(path, message.splitlines()[0]))

    def __call__(self, path: str) -> np.ndarray:
        return self.run(self.pixels, path)

    def close(self):
        self.session.close()


# ---------------------------------------------------------------------------------------------------
# the stored form: the image files themselves, and an index of them

IMAGES_INDEX = "images.tsv"
IMAGES_DIR_PREFIX = "images-"
INDEX_COLUMNS = ("relpath", "label", "domain", "size", "mtime_ns", "sha256", "fingerprint", "height", "width")
# The index lists the records in one seeded random order, so a shuffle buffer smaller than the data set
# still mixes classes and domains (image folders list them class by class; ImageNet's shard writer
# shuffles for the same reason).
INDEX_ORDER_SEED = 0
_CHECK_CHUNK = 256


def _relpath(root: str, path: str) -> str:
    rel = os.path.relpath(path, root)
    if rel.startswith(".."):  # a list file naming an image outside the root: keep it under its own name
        rel = os.path.join("_outside", rel.replace("..", "_"))
    return rel.replace(os.sep, "/")


def _check_decodes(paths: List[str], shown: List[str]) -> List[Tuple[int, int, int]]:
    """(fingerprint, height, width) of every file, decoded in parallel; the first that does not decode is
    named (exit 3) with TensorFlow's reason."""
    from mpltool.data.records import decode_image, fingerprint
    from mpltool.tfv1 import tf

    graph = tf.Graph()
    with graph.as_default():
        names = tf.placeholder(tf.string, (None,))

        def check(index, path):
            data = tf.io.read_file(path)
            shape = tf.shape(decode_image(data))
            return index, fingerprint(data), shape[0], shape[1]

        dataset = (tf.data.Dataset.from_tensor_slices((tf.range(tf.size(names, out_type=tf.int64)), names))
                   .map(check, num_parallel_calls=tf.data.experimental.AUTOTUNE)
                   .apply(tf.data.experimental.ignore_errors()).batch(_CHECK_CHUNK))
        iterator = tf.data.make_initializable_iterator(dataset)
        pulled = iterator.get_next()
    found = {}
    with tf.Session(graph=graph) as session:
        session.run(iterator.initializer, feed_dict={names: paths})
        while True:
            try:
                indices, prints, heights, widths = session.run(pulled)
            except tf.errors.OutOfRangeError:
                break
            found.update((int(i), (int(f), int(h), int(w))) for i, f, h, w in zip(indices, prints, heights, widths))
    bad = [k for k in range(len(paths)) if k not in found]
    if bad:
        decoder = Decoder(None)
        try:
            decoder.run(decoder.shape, shown[bad[0]], Decoder.read(paths[bad[0]]))
        finally:
            decoder.close()
        raise InvalidInputError("image {} does not decode".format(shown[bad[0]]))
    return [found[k] for k in range(len(paths))]


def import_image_files(root, dest, lists=None, note: Callable[[str], None] = lambda line: None) -> Dict:
    """Copy every image under `root` (or named by the list files in `lists`) into `dest`/images/, each
    decoded once to check it, and index them in `dest`/images.tsv (relative path, label, domain, size,
    mtime, sha256, fingerprint, decoded height and width). Nothing is resized: training decodes at the
    model's input size. Returns the index's summary."""
    import hashlib
    import shutil

    layout = scan_lists(root, lists, note) if lists else scan(root)
    base = os.path.abspath(os.fspath(root))
    dest = os.fspath(dest)
    images = os.path.join(dest, "images")
    order = np.random.RandomState(INDEX_ORDER_SEED).permutation(len(layout.items))
    rows, copies, shown = [], [], []
    for k in order:
        domain, label, path = layout.items[int(k)]
        data = Decoder.read(path)
        rel = _relpath(base, path)
        target = os.path.join(images, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(data)
        stat = os.stat(target)
        rows.append([rel, label, layout.domains.index(domain), stat.st_size, stat.st_mtime_ns,
                     hashlib.sha256(data).hexdigest()])
        copies.append(target)
        shown.append(path)
    for row, (print_, height, width) in zip(rows, _check_decodes(copies, shown)):
        row.extend([print_, height, width])
    if len(set(r[0] for r in rows)) != len(rows):
        shutil.rmtree(images, ignore_errors=True)
        raise InvalidInputError("two images map to one path under {}".format(base))
    lines = ["\t".join(INDEX_COLUMNS)] + ["\t".join(str(v) for v in row) for row in rows]
    text = ("\n".join(lines) + "\n").encode("utf-8")
    with open(os.path.join(dest, IMAGES_INDEX), "wb") as handle:
        handle.write(text)
    labels = np.array([r[1] for r in rows], np.int64)
    domain_ids = np.array([r[2] for r in rows], np.int64)
    per_domain = [{"name": d, "domain": d, "records": int((domain_ids == k).sum()),
                   "label_counts": np.bincount(labels[domain_ids == k], minlength=len(layout.classes)).tolist()}
                  for k, d in enumerate(layout.domains)]
    heights, widths = [r[7] for r in rows], [r[8] for r in rows]
    return {"name": IMAGES_INDEX, "records": len(rows), "domains": per_domain, "classes": layout.classes,
            "images_dir": IMAGES_DIR_PREFIX + hashlib.sha256(text).hexdigest()[:16],
            "bytes": int(sum(r[3] for r in rows)),
            "decoded_size": {"min": [min(heights), min(widths)], "max": [max(heights), max(widths)]}}


class ImageIndex(NamedTuple):
    """The index of an imported folder as compact arrays, one row per record in the index's order (about
    120 bytes a record: no Python object per file, so a 1.28M-image index stays ~150 MB)."""
    root: str                # the project's copy of the images
    relpaths: np.ndarray     # bytes, relative to root
    labels: np.ndarray
    domains: np.ndarray      # index into the data record's domains
    sizes: np.ndarray
    mtimes: np.ndarray
    sha256s: np.ndarray      # raw 32-byte digests
    fingerprints: np.ndarray
    heights: np.ndarray      # as decoded at prepare
    widths: np.ndarray


def read_image_index(path, images_dir) -> ImageIndex:
    """Parsed line by line into preallocated arrays, so reading it costs no more memory than it keeps."""
    with open(os.fspath(path), "rb") as handle:
        header = handle.readline().rstrip(b"\n").decode("utf-8", "replace").split("\t")
        if tuple(header) != INDEX_COLUMNS:
            raise InvalidInputError("{} is not an mpltool image index (its header is {!r})".format(path, header[:3]))
        count = sum(1 for line in handle if line.strip())
        handle.seek(0)
        handle.readline()
        numbers = np.zeros((count, 7), np.int64)  # label, domain, size, mtime, fingerprint, height, width
        digests = np.zeros(count, "S32")
        relpaths = []
        for row, line in enumerate(line for line in handle if line.strip()):
            rel, label, domain, size, mtime, digest, print_, height, width = line.rstrip(b"\n").split(b"\t")
            relpaths.append(rel)
            digests[row] = bytes.fromhex(digest.decode("ascii"))
            numbers[row] = (int(label), int(domain), int(size), int(mtime), int(print_), int(height), int(width))
    relpaths = np.array(relpaths, dtype="S")
    return ImageIndex(os.fspath(images_dir), relpaths, *(numbers[:, k] for k in range(4)), digests,
                      *(numbers[:, k] for k in range(4, 7)))


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


# ---------------------------------------------------------------------------------------------------
# the data source


from mpltool.data.sources import DataSource, register_source  # noqa: E402  (below the format code it uses)

# `data prepare --images` without --recipe prepares at this recipe's input size: the reference
# domain-generalisation recipe's (Caffe AlexNet, 227x227).
DEFAULT_RECIPE = "masf-pacs-alexnet"


def domain_holdout(domain_ids: np.ndarray, fraction: float, seed: int, names: Optional[Sequence[str]] = None
                   ) -> np.ndarray:
    """Validation records of image-folder training: round(fraction·n) records of each source domain, a
    seeded draw per domain, sorted. The draw is seeded by the domain's name (`names[id]`; its id when no
    names are given), so a domain's share never depends on the others nor on which one is the target."""
    import zlib

    chosen = []
    for domain in np.unique(domain_ids):
        members = np.flatnonzero(domain_ids == domain)
        count = int(round(fraction * members.size))
        if fraction > 0 and count == 0:
            count = 1
        key = zlib.crc32(names[int(domain)].encode("utf-8")) if names is not None else int(domain)
        rng = np.random.RandomState([seed, key])
        chosen.append(members[rng.permutation(members.size)[:count]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros((0,), np.int64)


@register_source
class ImageFolders(DataSource):
    """Image files in PACS's DOMAIN/CLASS layout or named by per-domain list files. No labelled split:
    every image is labelled, and training names the held-out test domain (`target_domain`); the other
    domains are the training data.

    Stored as the files themselves under `images-<hash>/`, indexed by images.tsv (the one manifest output
    that pins them all), and read, verified and decoded at the recipe model's input size by each run, so
    one import serves any model. A project imported by mpltool 0.x holds decoded `<domain>.bin` files at
    one size instead (its record has no `format`): still read, at that size only.
    """

    name = "folders"
    option = "--images DIR"
    folder = "data/folders"
    extra_files = ()

    def default_recipe(self):
        return DEFAULT_RECIPE

    def prepare_params(self, given, recipe, options):
        from mpltool.errors import UsageError

        refused = [flag for flag, key in (("--labelled", "num_labelled"), ("--split", "split"), ("--seed", "seed"),
                                          ("--valid", "num_valid")) if options.get(key) is not None]
        if refused:
            raise UsageError("{} only apply to --cifar (image folders keep every image labelled; training holds "
                             "a domain out)".format(", ".join(refused)), hint="see `mpltool data prepare --help`")
        params = {"source": str(given.absolute())}
        if options.get("lists"):
            params["lists"] = str(Path(str(options["lists"])).expanduser().absolute())
        return params

    def import_files(self, given, folder, params, note):
        return [import_image_files(given, folder, lists=params.get("lists"), note=note)]

    def file_key(self, name):
        """`images_index` for images.tsv; `domain_<domain>` for a legacy `<domain>.bin`, `folders_index` for
        its folders.json."""
        if name == IMAGES_INDEX:
            return "images_index"
        if name == INDEX_FILE:
            return "folders_index"
        return "domain_" + (name[: -len(".bin")] if name.endswith(".bin") else name)

    def place_files(self, imported, final_dir, infos):
        """The copied images, renamed into `final_dir` under a name their index's hash decides, before the
        commit that names them (a crash leaves a folder no record names, swept by the next import)."""
        final = Path(str(final_dir)) / infos[0]["images_dir"]
        if final.is_dir():  # the very same files (the index hashes every one) are there already
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(str(Path(str(imported)) / "images"), str(final))

    def after_commit(self, project, record):
        """Remove image folders and legacy decoded files that no record names any more."""
        import shutil

        folder = project.path(self.folder)
        named = set(project.path(o["path"]).name for o in (record.get("outputs") or {}).values())
        keep = record.get("images_dir")
        for entry in folder.iterdir() if folder.is_dir() else ():
            if entry.is_dir() and entry.name.startswith(IMAGES_DIR_PREFIX) and entry.name != keep:
                shutil.rmtree(str(entry), ignore_errors=True)
            elif entry.is_file() and entry.name not in named and (entry.suffix == ".bin" or entry.name == INDEX_FILE):
                entry.unlink()

    def record(self, run, project, infos, staged, params):
        info = infos[0]
        run.record["format"] = "files"
        run.record["files"] = info["domains"]
        run.record["domains"] = [d["domain"] for d in info["domains"]]
        run.record["classes"] = info["classes"]
        run.record["images_dir"] = info["images_dir"]
        run.record["decoded_size"] = info["decoded_size"]
        run.metrics.update({"records": info["records"], "domains": len(info["domains"]),
                            "classes": len(info["classes"]), "bytes": info["bytes"]})
        run.metrics.update({"{}_records".format(d["domain"]): d["records"] for d in info["domains"]})
        return {"domains": run.record["domains"], "classes": info["classes"], "records": info["records"],
                "domain_records": collections.OrderedDict((d["domain"], d["records"]) for d in info["domains"]),
                "images_dir": info["images_dir"], "decoded_size": info["decoded_size"]}

    def summary(self, result):
        size = result["decoded_size"]
        sizes = "x".join(str(v) for v in size["min"]) + (
            "" if size["min"] == size["max"] else " to " + "x".join(str(v) for v in size["max"]))
        return ("domains ({} images of {} px, {} classes)".format(result["records"], sizes, len(result["classes"])),
                ["domain", "records", "folder"],
                [[d, n, result["images_dir"]] for d, n in result["domain_records"].items()], [])

    def next_train_args(self, result, recipe):
        from mpltool.recipes import load_recipe

        if load_recipe(recipe).target_domain:
            return []
        return ["--set", "target_domain={}".format(result["domains"][-1])]

    @staticmethod
    def _legacy(record) -> bool:
        """Decoded `<domain>.bin` files of mpltool 0.x (their records name no format)."""
        return "format" not in record

    def needed_outputs(self, record, splits):
        # Every domain, whichever split: which domain is the test set is training's choice.
        if not self._legacy(record):
            return [self.file_key(IMAGES_INDEX)]
        return [self.file_key("{}.bin".format(d)) for d in record.get("domains") or []] + [self.file_key(INDEX_FILE)]

    def _domains(self, prepared):
        return list(prepared["record"].get("domains") or [])

    def split_domains(self, prepared, target_domain: str):
        """(source domains, target domain): the target is held out as the test set."""
        from mpltool.errors import UsageError

        domains = self._domains(prepared)
        if len(domains) < 2:
            raise UsageError("the prepared images form one domain ({}): training needs a held-out test domain"
                             .format(", ".join(domains)),
                             hint="lay the images out as DIR/<domain>/<class>/ with two or more domains (a "
                                  "train/test split is two domains: DIR/train/..., DIR/test/...)")
        if target_domain not in domains:
            raise UsageError("{}: the prepared domains are {}".format(
                "target_domain is not set" if not target_domain else "unknown target_domain {!r}".format(
                    target_domain), ", ".join(domains)),
                hint="choose the held-out test domain with --set target_domain={}".format(domains[-1]))
        return [d for d in domains if d != target_domain], target_domain

    def image_index(self, prepared) -> ImageIndex:
        """The verified index of the imported files, read once per `prepared`."""
        if "image_index" not in prepared:
            path = prepared["paths"][self.file_key(IMAGES_INDEX)]
            prepared["image_index"] = read_image_index(
                path, Path(str(path)).parent / str(prepared["record"].get("images_dir")))
        return prepared["image_index"]

    def read_domains(self, prepared, domains, size=None):
        """(images [N, H, W, 3], labels, each record's domain as an index into `domains`) of the named
        domains: a lazy FileImages decoded at `size` (each file's size and mtime checked now, its content
        as it is read), or the legacy decoded arrays."""
        from mpltool.data.records import FileImages, check_files

        if self._legacy(prepared["record"]):
            paths = prepared["paths"]
            index = read_index(paths[self.file_key(INDEX_FILE)])
            counts = {f["domain"]: int(f["records"]) for f in prepared["record"].get("files") or []}
            images, labels = read_domain_files([paths[self.file_key("{}.bin".format(d))] for d in domains],
                                               index["size"])
            ids = np.concatenate([np.zeros((0,), np.int64)] + [np.full(counts[d], k, np.int64)
                                                               for k, d in enumerate(domains)])
            if ids.size != labels.size:
                raise InvalidInputError("the prepared domain files hold {} records where the data record counts "
                                        "{}".format(labels.size, ids.size), hint="re-run `mpltool data prepare`")
            return images, labels, ids
        index = self.image_index(prepared)
        position = {d: k for k, d in enumerate(self._domains(prepared))}
        wanted = {position[d]: k for k, d in enumerate(domains)}
        rows = np.flatnonzero(np.isin(index.domains, list(wanted)))
        check_files(index.root, index.relpaths[rows], index.sizes[rows], index.mtimes[rows], index.sha256s[rows],
                    "{}/{}".format(self.folder, prepared["record"].get("images_dir")))
        ids = np.array([wanted[int(d)] for d in index.domains[rows]], np.int64)
        if size is None:  # no model named: the images' own size, when they share one
            sizes = set(zip(index.heights[rows].tolist(), index.widths[rows].tolist()))
            if len(sizes) > 1:
                from mpltool.errors import PrerequisiteError

                raise PrerequisiteError("the images of {} differ in size: name the model whose input size they "
                                        "are read at".format(", ".join(domains)), hint="train first")
            size = sizes.pop() if sizes else (1, 1)
        images = FileImages(index.root, index.relpaths[rows], index.fingerprints[rows], size)
        return images, index.labels[rows], ids

    @staticmethod
    def _size_of(model) -> Tuple[int, int]:
        from mpltool.models import input_spec

        return tuple(input_spec(model).shape[:2])

    def read_split(self, prepared, split, recipe=None):
        """`recipe`: the training's (its target_domain is the test set, its model the decoded size)."""
        sources, target = self.split_domains(prepared, getattr(recipe, "target_domain", recipe) or "")
        size = self._size_of(recipe.model) if hasattr(recipe, "model") else None
        images, labels, _ = self.read_domains(prepared, [target] if split == "test" else sources, size)
        return images, labels

    def check_recipe(self, prepared, recipe):
        from mpltool.errors import PrerequisiteError, UsageError

        self.split_domains(prepared, recipe.target_domain)
        size = list(prepared["record"].get("image_size") or [])
        wanted = list(self._size_of(recipe.model))
        if self._legacy(prepared["record"]) and recipe.eval_crop:
            raise UsageError("eval_crop frames image files as they are decoded; these images were stored decoded "
                             "at {}x{} by an earlier mpltool".format(*size[:2]),
                             hint="drop --set eval_crop, or re-run `mpltool data prepare --images DIR --force`")
        if self._legacy(prepared["record"]) and size != wanted:
            raise PrerequisiteError("the images were prepared at {}x{} (by an earlier mpltool, which stored them "
                                    "decoded at one size) but {} takes {}x{}".format(
                                        size[0], size[1], recipe.model, wanted[0], wanted[1]),
                                    hint="re-run `mpltool data prepare --images DIR --force` (images are now "
                                         "decoded at each model's size as they are read)")
        if recipe.select_best_on == "valid" and not recipe.domain_valid_fraction > 0:
            raise UsageError("select_best_on=valid but this run has no validation records",
                             hint="set domain_valid_fraction, or use select_best_on=test")

    def training_data(self, prepared, recipe):
        """The target domain is the test set; every record of the other domains is labelled and
        unlabelled alike, except `domain_valid_fraction` of each source domain held out for validation
        (model selection that never looks at the target)."""
        from mpltool.data.records import subset, with_eval_crop

        sources, target = self.split_domains(prepared, recipe.target_domain)
        size = self._size_of(recipe.model)
        train_images, train_labels, domain_ids = self.read_domains(prepared, sources, size)
        test_images, test_labels, _ = self.read_domains(prepared, [target], size)
        valid = domain_holdout(domain_ids, recipe.domain_valid_fraction, recipe.split_seed, sources)
        rest = np.setdiff1d(np.arange(train_labels.size), valid)
        return {"train_images": train_images, "train_labels": train_labels,
                "test_images": with_eval_crop(test_images, recipe.eval_crop), "test_labels": test_labels,
                "labelled_indices": rest, "unlabelled_indices": rest,
                "valid_images": with_eval_crop(subset(train_images, valid), recipe.eval_crop),
                "valid_labels": train_labels[valid],
                "train_domains": domain_ids, "source_domains": list(sources), "target_domain": target,
                "train_record": {"domains": {"source": list(sources), "target": target}}}

    def test_set(self, prepared, train_params):
        from mpltool.errors import PrerequisiteError

        target = str((train_params or {}).get("target_domain") or "")
        if not target:
            raise PrerequisiteError("image-folder data has no test set until training names the held-out domain",
                                    hint="run `mpltool train --set target_domain=DOMAIN` first")
        self.split_domains(prepared, target)
        from mpltool.data.records import with_eval_crop

        model = (train_params or {}).get("model")
        images, labels, _ = self.read_domains(prepared, [target], self._size_of(model) if model else None)
        images = with_eval_crop(images, float((train_params or {}).get("eval_crop") or 0.0))
        keep = (self.file_key("{}.bin".format(target)), self.file_key(INDEX_FILE), self.file_key(IMAGES_INDEX))
        return images, labels, {k: v for k, v in prepared["inputs"].items() if k in keep}

    def test_set_key(self, train_params):
        params = train_params or {}
        key = "{}@{}".format(params.get("target_domain") or "", params.get("model") or "")
        return key + ("~{}".format(float(params["eval_crop"])) if params.get("eval_crop") else "")

    def class_names(self, project, record):
        return record.get("classes"), "data record classes"

    def facts(self, record, train_params):
        facts = collections.OrderedDict()
        target = (train_params or {}).get("target_domain")
        facts["domains"] = ", ".join("{}{}".format(d, " (held out: the test set)" if d == target else "")
                                     for d in record.get("domains") or [])
        if record.get("image_size"):
            facts["image size"] = "x".join(str(v) for v in record["image_size"])
        if record.get("format") == "files":
            facts["stored as"] = "the image files ({}), decoded at the model's input size as they are read".format(
                record.get("images_dir"))
        return facts
