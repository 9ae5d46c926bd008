"""Data sources: where a project's images come from, behind the one interface the data stage and the
readers use.

A source imports what the user points at into a folder (validating every file), names the imported files
that hold each split, and reads a split back as raw images (uint8, HWC) and int64 labels. The data stage
records the source's name; train and eval read splits through it. A new source (image folders next) is
a class here and a `SOURCES` entry, not an edit of train/, eval/ or freeze/.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np

from mpltool.data import cifar
from mpltool.errors import InvalidInputError

SPLITS = ("train", "test")


class CifarBinaries:
    """CIFAR-10 binary batches (a directory or cifar-10-binary.tar.gz); the demo set is written in this form."""

    name = "cifar"
    extra_files = (cifar.META_FILE,)  # imported when present, not read as images

    def import_files(self, given, folder) -> List[Dict]:
        """Copy and validate every file into `folder`; one summary (name, records, label_counts...) per file."""
        return cifar.import_cifar(given, folder)

    def split_files(self, split: str) -> Sequence[str]:
        return cifar.TRAIN_FILES if split == "train" else (cifar.TEST_FILE,)

    @staticmethod
    def file_key(name: str) -> str:
        """Manifest output key of an imported file: `data_batch_1`, ..., `test_batch`, `batches_meta`."""
        if name == cifar.META_FILE:
            return "batches_meta"
        return name[: -len(".bin")] if name.endswith(".bin") else name

    def read(self, paths) -> Tuple[np.ndarray, np.ndarray]:
        return cifar.read_images(paths)


SOURCES = {source.name: source for source in (CifarBinaries(),)}


def get_source(name: str):
    if name not in SOURCES:
        raise InvalidInputError("the data record names an unknown source {!r} (this mpltool reads {})".format(
            name, ", ".join(SOURCES)))
    return SOURCES[name]
