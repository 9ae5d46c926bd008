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
from pathlib import Path
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
    """Image files in PACS's DOMAIN/CLASS layout or named by per-domain list files, stored per domain at the
    recipe model's input size. No labelled split: every image is labelled, and training names the held-out
    test domain (`target_domain`); the other domains are the training data."""

    name = "folders"
    option = "--images DIR"
    folder = "data/folders"
    extra_files = (INDEX_FILE,)

    def default_recipe(self):
        return DEFAULT_RECIPE

    def prepare_params(self, given, recipe, options):
        from mpltool.errors import UsageError
        from mpltool.models import input_spec

        refused = [flag for flag, key in (("--labelled", "num_labelled"), ("--split", "split"), ("--seed", "seed"),
                                          ("--valid", "num_valid")) if options.get(key) is not None]
        if refused:
            raise UsageError("{} only apply to --cifar (image folders keep every image labelled; training holds "
                             "a domain out)".format(", ".join(refused)), hint="see `mpltool data prepare --help`")
        params = {"source": str(given.absolute()), "image_size": list(input_spec(recipe.model).shape[:2])}
        if options.get("lists"):
            params["lists"] = str(Path(str(options["lists"])).expanduser().absolute())
        return params

    def import_files(self, given, folder, params, note):
        return import_folders(given, folder, tuple(params["image_size"]), lists=params.get("lists"), note=note)

    def file_key(self, name):
        """`domain_<domain>` for `<domain>.bin`, `folders_index` for folders.json."""
        if name == INDEX_FILE:
            return "folders_index"
        return "domain_" + (name[: -len(".bin")] if name.endswith(".bin") else name)

    def record(self, run, project, infos, staged, params):
        index = read_index(staged[INDEX_FILE])
        run.record["files"] = [{"name": i["name"], "domain": i["domain"], "records": i["records"],
                                "label_counts": i["label_counts"]} for i in infos]
        run.record["domains"] = [i["domain"] for i in infos]
        run.record["classes"] = index["classes"]
        run.record["image_size"] = index["size"]
        run.metrics.update({"records": sum(i["records"] for i in infos), "domains": len(infos),
                            "classes": len(index["classes"])})
        run.metrics.update({"{}_records".format(i["domain"]): i["records"] for i in infos})
        return {"domains": run.record["domains"], "classes": index["classes"], "image_size": index["size"],
                "records": run.metrics["records"]}

    def summary(self, result):
        size = result["image_size"]
        return ("domains ({}x{} images, {} classes)".format(size[0], size[1], len(result["classes"])),
                ["domain", "records", "file"], [[f["domain"], f["records"], f["name"]] for f in result["files"]], [])

    def next_train_args(self, result, recipe):
        from mpltool.recipes import load_recipe

        if load_recipe(recipe).target_domain:
            return []
        return ["--set", "target_domain={}".format(result["domains"][-1])]

    def needed_outputs(self, record, splits):
        # Every domain file, whichever split: which domain is the test set is training's choice.
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

    def read_domains(self, prepared, domains):
        paths = prepared["paths"]
        index = read_index(paths[self.file_key(INDEX_FILE)])
        return read_domain_files([paths[self.file_key("{}.bin".format(d))] for d in domains], index["size"])

    def read_split(self, prepared, split, recipe=None):
        """`recipe`: the training's (its target_domain is the test set), or that domain's name."""
        sources, target = self.split_domains(prepared, getattr(recipe, "target_domain", recipe) or "")
        return self.read_domains(prepared, [target] if split == "test" else sources)

    def check_recipe(self, prepared, recipe):
        from mpltool.errors import PrerequisiteError, UsageError
        from mpltool.models import input_spec

        self.split_domains(prepared, recipe.target_domain)
        size = list(prepared["record"].get("image_size") or [])
        wanted = list(input_spec(recipe.model).shape[:2])
        if size != wanted:
            raise PrerequisiteError("the images were prepared at {}x{} but {} takes {}x{}".format(
                size[0], size[1], recipe.model, wanted[0], wanted[1]),
                hint="re-run `mpltool data prepare --images DIR --recipe {} --force`".format(
                    getattr(recipe, "recipe_name", None) or "RECIPE"))
        if recipe.select_best_on == "valid" and not recipe.domain_valid_fraction > 0:
            raise UsageError("select_best_on=valid but this run has no validation records",
                             hint="set domain_valid_fraction, or use select_best_on=test")

    def training_data(self, prepared, recipe):
        """The target domain is the test set; every record of the other domains is labelled and
        unlabelled alike, except `domain_valid_fraction` of each source domain held out for validation
        (model selection that never looks at the target)."""
        from mpltool.errors import InvalidInputError

        sources, target = self.split_domains(prepared, recipe.target_domain)
        train_images, train_labels = self.read_domains(prepared, sources)
        test_images, test_labels = self.read_domains(prepared, [target])
        counts = {f["domain"]: int(f["records"]) for f in prepared["record"].get("files") or []}
        domain_ids = np.concatenate([np.full(counts[d], k, np.int64) for k, d in enumerate(sources)])
        if domain_ids.size != train_labels.size:
            raise InvalidInputError("the prepared domain files hold {} records where the data record counts {}"
                                    .format(train_labels.size, domain_ids.size), hint="re-run `mpltool data prepare`")
        valid = domain_holdout(domain_ids, recipe.domain_valid_fraction, recipe.split_seed, sources)
        rest = np.setdiff1d(np.arange(train_labels.size), valid)
        return {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
                "test_labels": test_labels, "labelled_indices": rest, "unlabelled_indices": rest,
                "valid_images": train_images[valid], "valid_labels": train_labels[valid], "train_domains": domain_ids,
                "source_domains": list(sources), "target_domain": target,
                "train_record": {"domains": {"source": list(sources), "target": target}}}

    def test_set(self, prepared, train_params):
        from mpltool.errors import PrerequisiteError

        target = str((train_params or {}).get("target_domain") or "")
        if not target:
            raise PrerequisiteError("image-folder data has no test set until training names the held-out domain",
                                    hint="run `mpltool train --set target_domain=DOMAIN` first")
        images, labels = self.read_split(prepared, "test", target)
        keep = (self.file_key("{}.bin".format(target)), self.file_key(INDEX_FILE))
        return images, labels, {k: v for k, v in prepared["inputs"].items() if k in keep}

    def test_set_key(self, train_params):
        return str((train_params or {}).get("target_domain") or "")

    def class_names(self, project, record):
        return record.get("classes"), "data record classes"

    def facts(self, record, train_params):
        import collections

        facts = collections.OrderedDict()
        target = (train_params or {}).get("target_domain")
        facts["domains"] = ", ".join("{}{}".format(d, " (held out: the test set)" if d == target else "")
                                     for d in record.get("domains") or [])
        if record.get("image_size"):
            facts["image size"] = "x".join(str(v) for v in record["image_size"])
        return facts
