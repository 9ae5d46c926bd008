"""TFRecord shards as a data source: `data prepare --tfrecord DIR` imports shards of tf.train.Example
records, and `data prepare --images DIR --shards N` writes them from an image folder.

Accepted layout (the one ImageNet's and most build scripts write):
- shard files named `<split>-<i>-of-<n>` (optionally `.tfrecord`/`.tfrecords`), or `<split>.tfrecord`;
  the `<split>` (train, validation, test, ... or a PACS domain) is the record's domain, so a train/test
  set is two domains and training holds one out as the test set (`target_domain`), as with folders;
- each record holds its encoded image under `image/encoded` (or `image`) and its class under
  `image/class/label` (or `label`), an int64; `image/class/text`, when present, names the class.
  Labels that start at 1 (ImageNet's build script keeps 0 for "background") are shifted to start at 0.

Every shard is copied into the project (`shards-<hash>/`), hashed, and every record is parsed, counted
and decoded once to check it. The index (`shards.tsv`: each shard's domain, records, size, mtime and
sha256; `records.npz`: each record's shard, label, fingerprint and decoded size) is what the manifest
pins. Runs read the shards in order, each rank its own shards, and verify every record they use against
its fingerprint as it is read (mpltool/data/records.py).
"""

import collections
import hashlib
import io
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mpltool.data.folders import INDEX_ORDER_SEED, ImageFolders, scan, scan_lists
from mpltool.data.records import ShardImages, check_files
from mpltool.data.sources import register_source
from mpltool.errors import InvalidInputError, UsageError

IMAGE_KEYS = ("image/encoded", "image")
LABEL_KEYS = ("image/class/label", "label")
TEXT_KEY = "image/class/text"
SHARD_NAME = re.compile(r"^(?P<domain>.+?)-(?P<index>\d+)-of-(?P<count>\d+)(\.tfrecords?)?$")
SHARD_SUFFIXES = (".tfrecord", ".tfrecords")
SHARDS_INDEX = "shards.tsv"
RECORDS_INDEX = "records.npz"
SHARDS_DIR_PREFIX = "shards-"
SHARD_COLUMNS = ("name", "domain", "records", "first_row", "size", "mtime_ns", "sha256")
MAX_SHARDS_PER_DOMAIN = 100000
_COPY_CHUNK = 1 << 22
_CHECK_BATCH = 256


def shard_domain(name: str) -> Optional[str]:
    """The domain (split) a shard file's name gives, or None for a file that is not a shard."""
    if name.startswith("."):
        return None
    match = SHARD_NAME.match(name)
    if match:
        return match.group("domain")
    for suffix in SHARD_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _shard_order(name: str):
    match = SHARD_NAME.match(name)
    return (shard_domain(name), int(match.group("index")) if match else 0, name)


def find_shards(folder) -> List[Tuple[str, str]]:
    """(domain, path) of every shard in `folder`, in domain then shard-number order."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InvalidInputError("--tfrecord {} is not a folder of TFRecord shards".format(folder))
    names = sorted((n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)) and shard_domain(n)),
                   key=_shard_order)
    if not names:
        raise InvalidInputError("{} holds no TFRecord shards (expected <split>-00000-of-00004[.tfrecord] or "
                                "<split>.tfrecord files)".format(folder))
    return [(shard_domain(n), os.path.join(folder, n)) for n in names]


def _copy_hashing(source: str, target: str) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while True:
            chunk = reader.read(_COPY_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


def _example_keys(serialized: bytes, shown: str) -> Tuple[str, str, bool]:
    from mpltool.tfv1 import tf

    try:
        features = tf.train.Example.FromString(serialized).features.feature
    except Exception:
        raise InvalidInputError("{}: its first record is not a tf.train.Example".format(shown))
    image = next((k for k in IMAGE_KEYS if k in features and features[k].bytes_list.value), None)
    label = next((k for k in LABEL_KEYS if k in features and features[k].int64_list.value), None)
    if image is None or label is None:
        raise InvalidInputError("{}: its records hold {} but an image under {} and an int64 label under {} are "
                                "needed".format(shown, ", ".join(sorted(features)) or "no features",
                                                " or ".join(IMAGE_KEYS), " or ".join(LABEL_KEYS)))
    return image, label, TEXT_KEY in features


class _ShardChecker:
    """Parses, fingerprints and decodes every record of one shard in parallel; a record that fails is
    found again alone, so the error names the shard and the record number."""

    def __init__(self, image_key: str, label_key: str, with_text: bool):
        from mpltool.data.records import decode_image, fingerprint
        from mpltool.tfv1 import tf

        self.graph = tf.Graph()
        with self.graph.as_default():
            self.path = tf.placeholder(tf.string, ())
            spec = {image_key: tf.io.FixedLenFeature((), tf.string), label_key: tf.io.FixedLenFeature((), tf.int64)}
            if with_text:
                spec[TEXT_KEY] = tf.io.FixedLenFeature((), tf.string, default_value="")

            def check(row, serialized):
                example = tf.io.parse_single_example(serialized, spec)
                shape = tf.shape(decode_image(example[image_key]))
                text = example[TEXT_KEY] if with_text else tf.constant("")
                return row, fingerprint(serialized), example[label_key], shape[0], shape[1], text

            dataset = (tf.data.TFRecordDataset(self.path).apply(tf.data.experimental.enumerate_dataset())
                       .map(check, num_parallel_calls=tf.data.experimental.AUTOTUNE)
                       .apply(tf.data.experimental.ignore_errors()).batch(_CHECK_BATCH))
            iterator = tf.data.make_initializable_iterator(dataset)
            self.init, self.pulled = iterator.initializer, iterator.get_next()
        self.session = tf.Session(graph=self.graph)
        self.keys = (image_key, label_key)

    def __call__(self, path: str, count: int, shown: str) -> Dict[str, np.ndarray]:
        from mpltool.tfv1 import tf

        self.session.run(self.init, feed_dict={self.path: path})
        columns = collections.defaultdict(list)
        while True:
            try:
                pulled = self.session.run(self.pulled)
            except tf.errors.OutOfRangeError:
                break
            for name, values in zip(("row", "fingerprint", "label", "height", "width", "text"), pulled):
                columns[name].extend(values.tolist())
        found = set(columns["row"])
        bad = next((k for k in range(count) if k not in found), None)
        if bad is not None:
            raise InvalidInputError("{} record {}: {}".format(shown, bad, self._why(path, bad)))
        return {name: np.array(values) for name, values in columns.items()}

    def _why(self, path: str, row: int) -> str:
        from mpltool.data.folders import Decoder
        from mpltool.tfv1 import tf

        serialized = next(r for k, r in enumerate(tf.io.tf_record_iterator(path)) if k == row)
        features = tf.train.Example.FromString(serialized).features.feature
        image_key, label_key = self.keys
        if not (image_key in features and features[image_key].bytes_list.value):
            return "no image under {}".format(image_key)
        if not (label_key in features and features[label_key].int64_list.value):
            return "no int64 label under {}".format(label_key)
        decoder = Decoder(None)
        try:
            decoder.run(decoder.shape, "the image", features[image_key].bytes_list.value[0])
        except InvalidInputError as exc:
            return "its image does not decode: " + str(exc).split("does not decode: ", 1)[-1]
        finally:
            decoder.close()
        return "the record does not parse"


def count_records(path: str, shown: str) -> int:
    """Records in a shard, each one's length and CRC checked: a truncated or corrupt shard is exit 3."""
    from mpltool.tfv1 import tf

    count = 0
    try:
        for _ in tf.io.tf_record_iterator(path):
            count += 1
    except tf.errors.DataLossError as exc:
        raise InvalidInputError("{} is truncated or corrupt after {} records ({})".format(
            shown, count, (getattr(exc, "message", "") or str(exc)).splitlines()[0]))
    if count == 0:
        raise InvalidInputError("{} holds no records".format(shown))
    return count


def import_shards(shards: Sequence[Tuple[str, str]], dest, note: Callable[[str], None], copy: bool = True) -> Dict:
    """Copy (unless already in place), hash, count and check every shard; index them in `dest`."""
    dest = os.fspath(dest)
    folder = os.path.join(dest, "shards")
    os.makedirs(folder, exist_ok=True)
    domains = sorted(set(d for d, _ in shards), key=[d for d, _ in shards].index)
    from mpltool.tfv1 import tf

    first = next(iter(tf.io.tf_record_iterator(shards[0][1])), None)
    if first is None:
        raise InvalidInputError("{} holds no records".format(shards[0][1]))
    image_key, label_key, with_text = _example_keys(first, shards[0][1])
    checker = _ShardChecker(image_key, label_key, with_text)
    table, columns, texts = [], collections.defaultdict(list), {}
    try:
        for number, (domain, source) in enumerate(shards):
            name = os.path.basename(source)
            target = os.path.join(folder, name)
            digest = _copy_hashing(source, target) if copy else _sha256(target)
            count = count_records(target, source)
            checked = checker(target, count, source)
            stat = os.stat(target)
            table.append([name, domain, count, len(columns["label"]), stat.st_size, stat.st_mtime_ns, digest])
            columns["label"].extend(checked["label"].tolist())
            columns["shard"].extend([number] * count)
            columns["domain"].extend([domains.index(domain)] * count)
            for key in ("fingerprint", "height", "width"):
                columns[key].extend(checked[key].tolist())
            for label, text in zip(checked["label"].tolist(), checked.get("text", np.array([])).tolist()):
                if text:
                    texts.setdefault(int(label), text.decode("utf-8", "replace") if isinstance(text, bytes) else text)
    finally:
        checker.session.close()
    labels = np.array(columns["label"], np.int64)
    if labels.min() < 0:
        raise InvalidInputError("the shards hold label {} (labels are 0 or more)".format(int(labels.min())))
    offset = 0
    if labels.min() == 1:
        offset = 1
        note("the shards' labels start at 1 (as ImageNet's build script writes them): read as label - 1, so "
             "1..{} become 0..{}".format(int(labels.max()), int(labels.max()) - 1))
    num_classes = int(labels.max()) - offset + 1
    classes = [texts.get(k + offset, "class_{}".format(k)) for k in range(num_classes)]
    lines = ["\t".join(SHARD_COLUMNS)] + ["\t".join(str(v) for v in row) for row in table]
    text = ("\n".join(lines) + "\n").encode("utf-8")
    with open(os.path.join(dest, SHARDS_INDEX), "wb") as handle:
        handle.write(text)
    arrays = {k: np.array(v, np.int64) for k, v in columns.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with open(os.path.join(dest, RECORDS_INDEX), "wb") as handle:
        handle.write(buffer.getvalue())
    domain_ids = arrays["domain"]
    per_domain = [{"name": d, "domain": d, "records": int((domain_ids == k).sum()),
                   "shards": sum(1 for row in table if row[1] == d),
                   "label_counts": np.bincount(labels[domain_ids == k] - offset, minlength=num_classes).tolist()}
                  for k, d in enumerate(domains)]
    return {"name": SHARDS_INDEX, "records": int(labels.size), "domains": per_domain, "classes": classes,
            "shards_dir": SHARDS_DIR_PREFIX + hashlib.sha256(text + buffer.getvalue()).hexdigest()[:16],
            "shards": len(table), "bytes": int(sum(row[4] for row in table)), "label_offset": offset,
            "keys": {"image": image_key, "label": label_key},
            "decoded_size": {"min": [int(arrays["height"].min()), int(arrays["width"].min())],
                             "max": [int(arrays["height"].max()), int(arrays["width"].max())]}}


def _sha256(path: str) -> str:
    from mpltool.manifest.files import sha256_file

    return sha256_file(path)


def write_shards(root, dest, shards_per_domain: int, lists=None, note: Callable[[str], None] = lambda line: None
                 ) -> List[Tuple[str, str]]:
    """An image folder as TFRecord shards in `dest`: each domain's images (in the order an image-folder
    import lists them, so both read the same records in the same order) split into `shards_per_domain`
    shards of consecutive records, each an Example of image/encoded (the file's bytes, unchanged),
    image/class/label (0-based) and image/class/text (the class folder's name)."""
    from mpltool.data.folders import Decoder
    from mpltool.tfv1 import tf

    layout = scan_lists(root, lists, note) if lists else scan(root)
    order = np.random.RandomState(INDEX_ORDER_SEED).permutation(len(layout.items))
    os.makedirs(os.fspath(dest), exist_ok=True)
    written = []
    for domain in layout.domains:
        items = [layout.items[int(k)] for k in order if layout.items[int(k)][0] == domain]
        count = min(shards_per_domain, len(items))
        bounds = np.linspace(0, len(items), count + 1).round().astype(int)
        for shard in range(count):
            path = os.path.join(os.fspath(dest), "{}-{:05d}-of-{:05d}.tfrecord".format(domain, shard, count))
            with tf.io.TFRecordWriter(path) as writer:
                for _, label, image in items[bounds[shard]:bounds[shard + 1]]:
                    feature = {"image/encoded": _bytes(Decoder.read(image)), "image/class/label": _int(label),
                               "image/class/text": _bytes(layout.classes[label].encode("utf-8"))}
                    writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
            written.append((domain, path))
    return written


def _bytes(value: bytes):
    from mpltool.tfv1 import tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int):
    from mpltool.tfv1 import tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


class ShardIndex(collections.namedtuple("ShardIndex", ["table", "arrays", "folder"])):
    """The index of imported shards: `table` one dict per shard, `arrays` one entry per record."""


def read_shard_index(shards_path, records_path, folder) -> ShardIndex:
    with open(os.fspath(shards_path), encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if tuple(header) != SHARD_COLUMNS:
            raise InvalidInputError("{} is not an mpltool shard index".format(shards_path))
        table = [dict(zip(SHARD_COLUMNS, line.rstrip("\n").split("\t"))) for line in handle if line.strip()]
    with np.load(os.fspath(records_path), allow_pickle=False) as loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    return ShardIndex(table, arrays, os.fspath(folder))


@register_source
class TFRecordShards(ImageFolders):
    """TFRecord shards, one domain per split name; what differs from image folders is only where the
    records live and how they are read (the domains, the held-out target and validation are the same)."""

    name = "tfrecord"
    option = "--tfrecord DIR"
    folder = "data/tfrecord"
    extra_files = (RECORDS_INDEX,)

    def prepare_params(self, given, recipe, options):
        params = super().prepare_params(given, recipe, options)
        shards = options.get("shards")
        if shards is not None:
            if int(shards) < 1 or int(shards) > MAX_SHARDS_PER_DOMAIN:
                raise UsageError("--shards must be between 1 and {}, got {}".format(MAX_SHARDS_PER_DOMAIN, shards))
            params["written_from_images"] = True
            params["shards_per_domain"] = int(shards)
        elif params.get("lists"):
            raise UsageError("--lists goes with --images", hint="see `mpltool data prepare --help`")
        return params

    def import_files(self, given, folder, params, note):
        if params.get("written_from_images"):
            written = write_shards(given, Path(str(folder)) / "shards", params["shards_per_domain"],
                                   lists=params.get("lists"), note=note)
            return [import_shards(written, folder, note, copy=False)]
        return [import_shards(find_shards(given), folder, note)]

    def file_key(self, name):
        return {SHARDS_INDEX: "shards_index", RECORDS_INDEX: "records_index"}.get(name, name)

    def place_files(self, imported, final_dir, infos):
        final = Path(str(final_dir)) / infos[0]["shards_dir"]
        if not final.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(str(Path(str(imported)) / "shards"), str(final))

    def after_commit(self, project, record):
        folder = project.path(self.folder)
        for entry in folder.iterdir() if folder.is_dir() else ():
            if entry.is_dir() and entry.name.startswith(SHARDS_DIR_PREFIX) and entry.name != record.get("shards_dir"):
                shutil.rmtree(str(entry), ignore_errors=True)

    def record(self, run, project, infos, staged, params):
        info = infos[0]
        result = super().record(run, project, [dict(info, images_dir=info["shards_dir"])], staged, params)
        del run.record["images_dir"]
        run.record["format"] = "shards"
        run.record.update(shards_dir=info["shards_dir"], label_offset=info["label_offset"], keys=info["keys"])
        run.metrics["shards"] = info["shards"]
        result.update(shards_dir=info["shards_dir"], images_dir=info["shards_dir"], shards=info["shards"])
        return result

    def summary(self, result):
        title, _, rows, lines = super().summary(result)
        return (title.replace("domains (", "domains ({} shards, ".format(result["shards"]), 1), ["domain", "records",
                                                                                              "folder"], rows, lines)

    def needed_outputs(self, record, splits):
        return [self.file_key(SHARDS_INDEX), self.file_key(RECORDS_INDEX)]

    def shard_index(self, prepared) -> ShardIndex:
        if "shard_index" not in prepared:
            paths = prepared["paths"]
            folder = Path(str(paths[self.file_key(SHARDS_INDEX)])).parent / str(prepared["record"].get("shards_dir"))
            prepared["shard_index"] = read_shard_index(paths[self.file_key(SHARDS_INDEX)],
                                                       paths[self.file_key(RECORDS_INDEX)], folder)
        return prepared["shard_index"]

    def read_domains(self, prepared, domains, size=None):
        """(ShardImages, labels, domain ids) of the named domains: every shard's size and mtime checked now,
        every record as it is read."""
        index = self.shard_index(prepared)
        record = prepared["record"]
        position = {d: k for k, d in enumerate(self._domains(prepared))}
        wanted = {position[d]: k for k, d in enumerate(domains)}
        arrays = index.arrays
        rows = np.flatnonzero(np.isin(arrays["domain"], list(wanted)))
        used = sorted(set(arrays["shard"][rows].tolist()))
        table = index.table
        paths = np.array([os.path.join(index.folder, row["name"]) for row in table], dtype=object)
        check_files(index.folder, np.array([table[k]["name"] for k in used], dtype="S"),
                    np.array([int(table[k]["size"]) for k in used]), np.array([int(table[k]["mtime_ns"]) for k in used]),
                    np.array([bytes.fromhex(table[k]["sha256"]) for k in used], dtype="S32"),
                    "{}/{}".format(self.folder, record.get("shards_dir")))
        if size is None:
            sizes = set(zip(arrays["height"][rows].tolist(), arrays["width"][rows].tolist()))
            if len(sizes) > 1:
                from mpltool.errors import PrerequisiteError

                raise PrerequisiteError("the images of {} differ in size: name the model whose input size they "
                                        "are read at".format(", ".join(domains)), hint="train first")
            size = sizes.pop() if sizes else (1, 1)
        if "shards" not in prepared:
            keys = record.get("keys") or {}
            prepared["shards"] = {"paths": paths, "first": np.array([int(r["first_row"]) for r in table], np.int64),
                                  "rows": np.array([int(r["records"]) for r in table], np.int64),
                                  "shard_of": arrays["shard"], "fingerprints": arrays["fingerprint"],
                                  "image_key": keys.get("image", IMAGE_KEYS[0]),
                                  "label_key": keys.get("label", LABEL_KEYS[0]),
                                  "label_offset": int(record.get("label_offset") or 0)}
        ids = np.array([wanted[int(d)] for d in arrays["domain"][rows]], np.int64)
        labels = arrays["label"][rows] - int(record.get("label_offset") or 0)
        return ShardImages(prepared["shards"], rows, size), labels, ids

    def test_set(self, prepared, train_params):
        images, labels, _ = super().test_set(prepared, train_params)
        return images, labels, dict(prepared["inputs"])

    def facts(self, record, train_params):
        facts = super().facts(record, train_params)
        facts["stored as"] = "TFRecord shards ({}), decoded at the model's input size as they are read".format(
            record.get("shards_dir"))
        return facts

