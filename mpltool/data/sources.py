"""Data sources: where a project's images come from, behind the one interface the data stage and the
readers use.

A source imports what the user points at into a folder (validating every file) and reads it back as raw
images (uint8, HWC) and int64 labels. The data stage records the source's name; train and eval read
through it. Two kinds exist:
- split sources (CIFAR) name the files of the train and test splits, and the data stage fixes the
  labelled split at import;
- domain sources (image folders) store one file per domain, and training names the held-out test
  domain (`target_domain`): the other domains are the training data.
A new source is a class here and a `SOURCES` entry, not an edit of train/, eval/ or freeze/.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np

from mpltool.data import cifar, folders
from mpltool.errors import InvalidInputError

SPLITS = ("train", "test")


class CifarBinaries:
    """CIFAR-10 binary batches (a directory or cifar-10-binary.tar.gz); the demo set is written in this form."""

    name = "cifar"
    extra_files = (cifar.META_FILE,)  # imported when present, not read as images
    has_domains = False

    def import_files(self, given, folder, **options) -> List[Dict]:
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


class ImageFolders:
    """Image files in PACS's DOMAIN/CLASS layout or named by per-domain list files, stored per domain
    (mpltool/data/folders.py)."""

    name = "folders"
    extra_files = (folders.INDEX_FILE,)
    has_domains = True

    def import_files(self, given, folder, image_size=(32, 32), lists=None, note=None) -> List[Dict]:
        return folders.import_folders(given, folder, tuple(image_size), lists=lists, note=note or (lambda line: None))

    @staticmethod
    def file_key(name: str) -> str:
        """`domain_<domain>` for `<domain>.bin`, `folders_index` for folders.json."""
        if name == folders.INDEX_FILE:
            return "folders_index"
        return "domain_" + (name[: -len(".bin")] if name.endswith(".bin") else name)

    @staticmethod
    def domain_file(domain: str) -> str:
        return "{}.bin".format(domain)

    def read_domains(self, paths: Dict[str, str], domains: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """(images, labels) of `domains` in that order; `paths` maps file keys to verified files."""
        index = folders.read_index(paths[self.file_key(folders.INDEX_FILE)])
        return folders.read_domain_files([paths[self.file_key(self.domain_file(d))] for d in domains], index["size"])


SOURCES = {source.name: source for source in (CifarBinaries(), ImageFolders())}


def get_source(name: str):
    if name not in SOURCES:
        raise InvalidInputError("the data record names an unknown source {!r} (this mpltool reads {})".format(
            name, ", ".join(SOURCES)))
    return SOURCES[name]
