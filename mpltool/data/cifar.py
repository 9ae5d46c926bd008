"""CIFAR-10 binary files: validate, import (directory or downloaded archive), read, split, write.

Any file whose size is a multiple of 3,073 bytes and whose label bytes are 0-9 is a valid CIFAR-format
set, so the same code serves the real data, the embedded demo data and the tiny test fixtures.
"""

import hashlib
import os
import shutil
import tarfile
import zlib

import numpy as np

from mpltool.errors import InvalidInputError, UsageError

RECORD_BYTES = 3073
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
TRAIN_FILES = tuple("data_batch_{}.bin".format(i) for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
DATA_FILES = TRAIN_FILES + (TEST_FILE,)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")

_PIXEL_BYTES = RECORD_BYTES - 1
_COPY_CHUNK = 1 << 20


def _records(name, raw):
    """The [N, 3073] record view of a file's bytes, or InvalidInputError saying why it is not CIFAR."""
    size = raw.size
    if size == 0 or size % RECORD_BYTES:
        raise InvalidInputError(
            "{} is not a CIFAR-10 binary file: its size {} bytes is not a non-zero multiple of {} "
            "(1 label byte + 3,072 pixel bytes per record)".format(name, size, RECORD_BYTES))
    records = raw.reshape(-1, RECORD_BYTES)
    bad = np.flatnonzero(records[:, 0] >= NUM_CLASSES)
    if bad.size:
        index = int(bad[0])
        raise InvalidInputError(
            "{} is not a CIFAR-10 binary file: record {} has label byte {} (labels must be 0-9)".format(
                name, index, int(records[index, 0])))
    return records


def _read_raw(path):
    return np.fromfile(os.fspath(path), dtype=np.uint8)


def _inspect(name, path):
    raw = _read_raw(path)
    records = _records(name, raw)
    counts = np.bincount(records[:, 0], minlength=NUM_CLASSES)
    return {
        "name": name,
        "records": int(records.shape[0]),
        "size": int(raw.size),
        "sha256": hashlib.sha256(raw.tobytes()).hexdigest(),
        "label_counts": [int(c) for c in counts],
    }


def _existing_file(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InvalidInputError("no such file or directory: {}".format(path))
    if not os.path.isfile(path):
        raise InvalidInputError("{} is not a file (expected a CIFAR-10 .bin file)".format(path))
    return path


def inspect_file(path):
    """Validate one CIFAR binary file and summarise it: what the manifest records to pin the data."""
    path = _existing_file(path)
    return _inspect(os.path.basename(path), path)


def read_images(paths):
    """Images as HWC uint8 (the layout augmentation and the exported model use) and int64 labels."""
    images, labels = [], []
    for path in paths:
        path = _existing_file(path)
        records = _records(os.path.basename(path), _read_raw(path))
        chw = records[:, 1:].reshape(-1, IMAGE_SHAPE[2], IMAGE_SHAPE[0], IMAGE_SHAPE[1])
        images.append(chw.transpose(0, 2, 3, 1))
        labels.append(records[:, 0].astype(np.int64))
    if not images:
        return np.zeros((0,) + IMAGE_SHAPE, np.uint8), np.zeros((0,), np.int64)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def read_class_names(path):
    """Class names from batches.meta.txt (blank lines dropped), or None when the file is absent."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, META_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line.strip() for line in handle if line.strip()]


def write_cifar_file(path, images, labels):
    """Write HWC uint8 images as CIFAR records: the exact inverse of read_images."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError("images must be uint8 [N, 32, 32, 3], got {} {}".format(images.dtype, images.shape))
    if labels.shape != (images.shape[0],):
        raise ValueError("labels must have shape ({},), got {}".format(images.shape[0], labels.shape))
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError("labels must be in 0..{}".format(NUM_CLASSES - 1))
    records = np.empty((images.shape[0], RECORD_BYTES), np.uint8)
    records[:, 0] = labels
    records[:, 1:] = images.transpose(0, 3, 1, 2).reshape(images.shape[0], _PIXEL_BYTES)
    records.tofile(os.fspath(path))


def make_split(labels, num_labelled, method="first", seed=0, num_classes=NUM_CLASSES):
    """Indices of the labelled subset: 'first' matches the reference's take(n), 'balanced' is per class."""
    labels = np.asarray(labels)
    available = int(labels.shape[0])
    if isinstance(num_labelled, bool) or not isinstance(num_labelled, (int, np.integer)):
        raise UsageError("num_labelled must be a whole number, got {!r}".format(num_labelled))
    num_labelled = int(num_labelled)
    if num_labelled < 1 or num_labelled > available:
        raise UsageError("num_labelled is {} but must be between 1 and the {} training records "
                         "available".format(num_labelled, available))
    if method == "first":
        return np.arange(num_labelled, dtype=np.int64)
    if method != "balanced":
        raise UsageError("unknown split method {!r} (use 'first' or 'balanced')".format(method))
    if num_labelled % num_classes:
        raise UsageError("a balanced split needs num_labelled divisible by {} classes, got {}".format(
            num_classes, num_labelled))
    per_class = num_labelled // num_classes
    rng = np.random.RandomState(seed)
    chosen = []
    for cls in range(num_classes):
        members = np.flatnonzero(labels == cls)
        if members.size < per_class:
            raise UsageError(
                "class {} has only {} training records but a balanced split of {} needs {} per class "
                "(lower num_labelled or use split: first)".format(cls, members.size, num_labelled, per_class))
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# import


def _missing_message(where, missing):
    return "{} is missing {} (expected {} and {} from cifar-10-binary.tar.gz)".format(
        where, ", ".join(missing), ", ".join(TRAIN_FILES), TEST_FILE)


class _DirectorySource:
    """Files copied from a directory (or its cifar-10-batches-bin/ subdirectory)."""

    def __init__(self, path):
        self.root = path
        nested = os.path.join(path, "cifar-10-batches-bin")
        if not any(os.path.isfile(os.path.join(path, n)) for n in DATA_FILES) and os.path.isdir(nested):
            self.root = nested
        missing = [n for n in DATA_FILES if not os.path.isfile(os.path.join(self.root, n))]
        if missing:
            raise InvalidInputError(_missing_message("directory " + self.root, missing))

    def has(self, name):
        return os.path.isfile(os.path.join(self.root, name))

    def copy_to(self, name, handle):
        with open(os.path.join(self.root, name), "rb") as source:
            shutil.copyfileobj(source, handle, _COPY_CHUNK)

    def close(self):
        pass


def _index_members(path, members):
    """Map each known file name to its archive member, at any depth, refusing ambiguity and gaps."""
    wanted = DATA_FILES + (META_FILE,)
    found = {}
    for member in members:
        name = member.name.replace("\\", "/").rsplit("/", 1)[-1]
        if member.isfile() and name in wanted:
            found.setdefault(name, []).append(member)
    for name, candidates in sorted(found.items()):
        if len(candidates) > 1:
            raise InvalidInputError(
                "archive {} holds {} copies of {} ({}); extract it and pass the directory with the right "
                "files".format(path, len(candidates), name, ", ".join(m.name for m in candidates)))
    missing = [n for n in DATA_FILES if n not in found]
    if len(missing) == len(DATA_FILES):
        if any(m.name.endswith("data_batch_1") for m in members):
            hint = "it looks like the Python version; download cifar-10-binary.tar.gz"
        else:
            hint = "expected cifar-10-batches-bin/data_batch_1.bin ... test_batch.bin"
        raise InvalidInputError("archive {} holds no CIFAR-10 binary files ({})".format(path, hint))
    if missing:
        raise InvalidInputError(_missing_message("archive " + path, missing))
    return {name: candidates[0] for name, candidates in found.items()}


class _ArchiveSource:
    """Members read by name from a tar archive; member paths never reach the file system."""

    _READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)

    def __init__(self, path):
        self.tar = None
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = _index_members(path, self.tar.getmembers())
        except self._READ_ERRORS as exc:
            self.close()
            raise InvalidInputError("cannot read archive {}: {}".format(path, exc))
        except InvalidInputError:
            self.close()
            raise

    def has(self, name):
        return name in self.members

    def copy_to(self, name, handle):
        source = self.tar.extractfile(self.members[name])
        try:
            shutil.copyfileobj(source, handle, _COPY_CHUNK)
        except self._READ_ERRORS as exc:
            raise InvalidInputError("cannot read {} from the archive: {}".format(name, exc))

    def close(self):
        if self.tar is not None:
            self.tar.close()


def _open_source(source):
    if os.path.isdir(source):
        return _DirectorySource(source)
    if not source.lower().endswith(ARCHIVE_SUFFIXES):
        raise InvalidInputError("{} is neither a directory nor a .tar.gz/.tgz/.tar archive "
                                "(pass the CIFAR-10 directory or cifar-10-binary.tar.gz)".format(source))
    return _ArchiveSource(source)


def import_cifar(source, dest_dir):
    """Copy and validate the six CIFAR files (plus class names) into dest_dir, all or nothing.

    Every file lands under a temporary name first and is validated there; only when all six are good
    are they renamed over any existing files, so a bad input never damages a previous import.
    """
    source = os.fspath(source)
    dest_dir = os.fspath(dest_dir)
    if not os.path.exists(source):
        raise InvalidInputError("no such file or directory: {}".format(source))
    if os.path.exists(dest_dir) and not os.path.isdir(dest_dir):
        raise UsageError("destination {} exists and is not a directory".format(dest_dir))
    reader = _open_source(source)
    staged = []
    try:
        os.makedirs(dest_dir, exist_ok=True)
        summaries = []
        names = DATA_FILES + ((META_FILE,) if reader.has(META_FILE) else ())
        for name in names:
            temp_path = os.path.join(dest_dir, ".{}.{}.partial".format(name, os.urandom(6).hex()))
            staged.append((temp_path, os.path.join(dest_dir, name)))
            with open(temp_path, "xb") as handle:
                reader.copy_to(name, handle)
            if name != META_FILE:
                summaries.append(_inspect(name, temp_path))
        for temp_path, final_path in staged:
            os.replace(temp_path, final_path)
        staged = []
        return summaries
    finally:
        reader.close()
        for temp_path, _ in staged:
            if os.path.exists(temp_path):
                os.remove(temp_path)


# ---------------------------------------------------------------------------------------------------
# the data source


from mpltool.data.sources import DataSource, register_source  # noqa: E402  (below the format code it uses)

# The split `data prepare` fixed, as recorded (key in the data record's split) -> the recipe key.
SPLIT_KEYS = {"num_labelled": "num_labelled", "method": "split", "seed": "split_seed", "num_valid": "num_valid"}
SEEDED_SPLITS = ("balanced", "round-robin")
LABELLED_INDICES = "data/labelled_indices.txt"
# The unlabelled stream in order, the validation records first (only round-robin splits have them and
# leave the labelled records out; first and balanced list every training record). Projects prepared
# before this file existed have no such output: their unlabelled stream is every training record.
UNLABELLED_INDICES = "data/unlabelled_indices.txt"
MAX_SEED = 2 ** 32 - 1  # numpy's RandomState takes seeds in [0, 2**32)


def _checked_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError("--seed must be a whole number from 0 to {}, got {!r}".format(MAX_SEED, seed))
    return seed


def read_indices(path) -> np.ndarray:
    with open(os.fspath(path), encoding="ascii") as handle:
        return np.array([int(v) for v in handle.read().split()], dtype=np.int64)


def _write_indices(path, indices) -> None:
    from mpltool.manifest.files import atomic_write_bytes

    atomic_write_bytes(path, "".join("{}\n".format(i) for i in indices).encode("ascii"))


def training_indices(prepared, num_train: int):
    """labelled, unlabelled (in stream order) and valid record indices of a prepared split."""
    paths = prepared["paths"]
    labelled = read_indices(paths["labelled_indices"])
    if "unlabelled_indices" not in paths:
        return {"labelled": labelled, "unlabelled": np.arange(num_train, dtype=np.int64),
                "valid": np.zeros((0,), np.int64)}
    stream = read_indices(paths["unlabelled_indices"])
    num_valid = int((prepared["record"].get("split") or {}).get("num_valid") or 0)
    outside = any(indices.size and (indices.min() < 0 or indices.max() >= num_train) for indices in (labelled, stream))
    if outside or num_valid > stream.size:
        raise InvalidInputError("the prepared split names records outside the {} training records".format(num_train),
                                hint="re-run `mpltool data prepare --cifar PATH`")
    return {"labelled": labelled, "unlabelled": stream[num_valid:], "valid": stream[:num_valid]}


@register_source
class CifarBinaries(DataSource):
    """CIFAR-10 binary batches (a directory or cifar-10-binary.tar.gz); the demo set is written in this form.
    The labelled split (and the unlabelled stream, validation records first) is fixed at import."""

    name = "cifar"
    option = "--cifar PATH"
    folder = "data/cifar"
    extra_files = (META_FILE,)

    def prepare_params(self, given, recipe, options):
        from mpltool.data import splits

        if options.get("lists") is not None:
            raise UsageError("--lists goes with --images", hint="see `mpltool data prepare --help`")
        settings = splits.resolve(recipe, options.get("num_labelled"), options.get("split"), options.get("seed"),
                                  options.get("num_valid"))
        params = {"source": str(given.absolute()), "num_labelled": settings["num_labelled"],
                  "split": settings["split"], "seed": _checked_seed(settings["seed"])}
        if settings["num_valid"]:
            params["num_valid"] = settings["num_valid"]
        return params

    def import_files(self, given, folder, params, note):
        return import_cifar(given, folder)

    def file_key(self, name):
        """`data_batch_1`, ..., `test_batch`, `batches_meta`."""
        if name == META_FILE:
            return "batches_meta"
        return name[: -len(".bin")] if name.endswith(".bin") else name

    def record(self, run, project, infos, staged, params):
        from mpltool.data import splits

        split, num_labelled, seed = params["split"], params["num_labelled"], params["seed"]
        num_valid = params.get("num_valid", 0)
        _, labels = read_images([staged[name] for name in TRAIN_FILES])
        plan = splits.make(labels, split, num_labelled, num_valid=num_valid, seed=seed)
        indices = plan.labelled
        _write_indices(run.stage_output("labelled_indices", project.path(LABELLED_INDICES)), indices)
        _write_indices(run.stage_output("unlabelled_indices", project.path(UNLABELLED_INDICES)),
                       np.concatenate([plan.valid, plan.unlabelled]))
        run.record["files"] = [{"name": i["name"], "records": i["records"], "label_counts": i["label_counts"]}
                               for i in infos]
        run.record["split"] = {"method": split, "seed": seed, "num_labelled": int(len(indices)),
                               "label_counts": np.bincount(labels[indices], minlength=NUM_CLASSES)}
        if split == "round-robin":
            run.record["split"].update({
                "name": splits.split_name(int(len(indices)), num_valid, seed), "num_valid": num_valid,
                "valid_label_counts": np.bincount(labels[plan.valid], minlength=NUM_CLASSES)})
        run.metrics.update({
            "train_records": sum(i["records"] for i in infos if i["name"] in TRAIN_FILES),
            "test_records": sum(i["records"] for i in infos if i["name"] == TEST_FILE),
            "labelled_records": int(len(indices)),
            "unlabelled_records": int(len(plan.unlabelled)),
            "valid_records": int(len(plan.valid)),
        })
        result = {"split": run.record["split"]}
        result.update(run.metrics)
        return result

    def summary(self, result):
        split = result["split"]
        line = "labelled: {} records ({} split{}, seed {}); unlabelled: {}; validation: {}; test: {}".format(
            result["labelled_records"], split["method"], " " + split["name"] if "name" in split else "",
            split["seed"], result["unlabelled_records"], result.get("valid_records", 0), result["test_records"])
        rows = [[f["name"], f["records"], f["size"], f["sha256"][:16]] for f in result["files"]]
        return "CIFAR files", ["file", "records", "bytes", "sha256"], rows, [line]

    def needed_outputs(self, record, splits):
        needed = [self.file_key(n) for split in splits for n in (TRAIN_FILES if split == "train" else (TEST_FILE,))]
        if "train" in splits:
            needed.append("labelled_indices")
            if "unlabelled_indices" in (record.get("outputs") or {}):
                needed.append("unlabelled_indices")
        return needed

    def read_split(self, prepared, split, recipe=None):
        names = TRAIN_FILES if split == "train" else (TEST_FILE,)
        return read_images([prepared["paths"][self.file_key(n)] for n in names])

    def check_recipe(self, prepared, recipe):
        if recipe.target_domain:
            raise UsageError("target_domain={} but the prepared data has no domains (CIFAR files)".format(
                recipe.target_domain), hint="drop --set target_domain, or prepare image folders with `mpltool data "
                                            "prepare --images DIR`")
        if recipe.domain_valid_fraction:
            raise UsageError("domain_valid_fraction applies to image-folder data; CIFAR validation records come "
                             "from a round-robin split (num_valid)")
        if recipe.select_best_on == "valid" and not recipe.num_valid:
            raise UsageError("select_best_on=valid but this run has no validation records",
                             hint="prepare a round-robin split with --valid N, or use select_best_on=test")
        if recipe.eval_crop:
            raise UsageError("eval_crop frames image files and shards as they are decoded; CIFAR's images are "
                             "stored at 32x32", hint="drop --set eval_crop, or prepare image files (--images DIR)")

    def adopt(self, recipe, record, log):
        """The labelled split `data prepare` recorded is adopted for every split key the user did not set
        explicitly (`--set`); an explicit one that differs is refused."""
        from mpltool.errors import PrerequisiteError

        split = record.get("split") or {}
        explicit = set(getattr(recipe, "overrides", {}) or {})
        adopted, conflicts = [], []
        for recorded_key, recipe_key in SPLIT_KEYS.items():
            have = split.get(recorded_key, 0 if recorded_key == "num_valid" and split else None)
            if have is None or (recipe_key == "split_seed" and split.get("method") not in SEEDED_SPLITS):
                continue
            if recipe[recipe_key] == have:
                continue
            if recipe_key in explicit:
                conflicts.append("{}={} (prepared: {})".format(recipe_key, recipe[recipe_key], have))
            else:
                adopted.append("{}={}".format(recipe_key, have))
                recipe[recipe_key] = have
        if conflicts:
            raise PrerequisiteError(
                "the labelled split you set differs from the prepared one: {}".format(", ".join(conflicts)),
                hint="drop those --set options to use the prepared split, or re-run `mpltool data prepare --cifar "
                     "PATH --labelled {} --split {}{}{}`".format(
                         recipe.num_labelled, recipe.split,
                         " --seed {}".format(recipe.split_seed) if recipe.split in SEEDED_SPLITS else "",
                         " --valid {}".format(recipe.num_valid) if recipe.num_valid else ""))
        if adopted:
            log("using the labelled split recorded by `data prepare`: {}".format(", ".join(adopted)))

    def training_data(self, prepared, recipe):
        train_images, train_labels = self.read_split(prepared, "train")
        test_images, test_labels = self.read_split(prepared, "test")
        indices = training_indices(prepared, len(train_labels))
        return {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
                "test_labels": test_labels, "labelled_indices": indices["labelled"],
                "unlabelled_indices": indices["unlabelled"], "valid_images": train_images[indices["valid"]],
                "valid_labels": train_labels[indices["valid"]], "train_domains": np.zeros(train_labels.shape, np.int64),
                "source_domains": [], "target_domain": "", "train_record": {"domains": None}}

    def test_set(self, prepared, train_params):
        images, labels = self.read_split(prepared, "test")
        return images, labels, prepared["inputs"]

    def class_names(self, project, record):
        meta = (record.get("outputs") or {}).get("batches_meta")
        if not isinstance(meta, dict) or not meta.get("path"):
            return None, "none"
        return read_class_names(project.path(meta["path"])), "batches.meta.txt"

    def facts(self, record, train_params):
        import collections

        facts = collections.OrderedDict()
        split = record.get("split") or {}
        if split:
            facts["split"] = "{}{}, seed {}, {} labelled".format(split.get("method"), " " + split["name"]
                                                                 if split.get("name") else "", split.get("seed"),
                                                                 split.get("num_labelled"))
        return facts
