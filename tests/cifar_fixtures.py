"""Tiny CIFAR-format data sets for tests: same layout as the real download, a few records per file.

Import from tests as `from cifar_fixtures import make_cifar_dir` (pytest puts tests/ on sys.path) or
`from tests.cifar_fixtures import ...` when tests/ is a package.
"""

import io
import os
import tarfile
import tempfile

import numpy as np

from mpltool.data.cifar import META_FILE, TEST_FILE, TRAIN_FILES, write_cifar_file

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
ARCHIVE_DIR = "cifar-10-batches-bin"


def make_records(count, seed):
    """Random HWC uint8 images and labels; labels cycle 0..9 (shuffled) so every class is present."""
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, size=(count, 32, 32, 3)).astype(np.uint8)
    labels = rng.permutation(np.arange(count) % 10).astype(np.int64)
    return images, labels


def make_cifar_dir(path, train_records=(20, 20, 20, 20, 20), test_records=30, seed=0, meta=True):
    """Write data_batch_1..5.bin, test_batch.bin (and batches.meta.txt) into `path`; return `path`.

    File k (0-based, test last) uses seed `seed * 100 + k`, so files differ from each other and
    two calls with the same arguments give identical bytes.
    """
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    counts = list(train_records) + [test_records]
    for index, (name, count) in enumerate(zip(TRAIN_FILES + (TEST_FILE,), counts)):
        images, labels = make_records(count, seed * 100 + index)
        write_cifar_file(os.path.join(path, name), images, labels)
    if meta:
        with open(os.path.join(path, META_FILE), "w") as handle:
            handle.write("\n".join(CLASS_NAMES) + "\n\n")
    return path


def make_cifar_archive(path, train_records=(20, 20, 20, 20, 20), test_records=30, seed=0, meta=True,
                       prefix=ARCHIVE_DIR, name=ARCHIVE_NAME):
    """Write `path`/cifar-10-binary.tar.gz with members under `prefix`/ (the real layout); return its path.

    Same bytes as make_cifar_dir with the same arguments; nothing but the archive is left in `path`.
    """
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        make_cifar_dir(staging, train_records, test_records, seed, meta)
        members = []
        for file_name in TRAIN_FILES + (TEST_FILE, META_FILE):
            file_path = os.path.join(staging, file_name)
            if os.path.exists(file_path):
                with open(file_path, "rb") as handle:
                    members.append((_join(prefix, file_name), handle.read()))
    return write_archive(os.path.join(path, name), members)


def write_archive(archive_path, members):
    """Write a tar archive (gzip when the name ends .gz/.tgz) of (member name, bytes) pairs.

    Member names are written verbatim, so tests can also build hostile archives ("../x", "/etc/x").
    """
    archive_path = os.fspath(archive_path)
    mode = "w:gz" if archive_path.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(archive_path, mode) as tar:
        for member_name, data in members:
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return archive_path


def _join(prefix, name):
    return "{}/{}".format(prefix, name) if prefix else name
