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
