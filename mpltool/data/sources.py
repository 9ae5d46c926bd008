"""Data sources: where a project's images come from, behind the one interface the data stage, training,
eval, predict and the report use. None of them asks which kind of source it holds.

A source imports what the user points at into the project (validating every file), records it, and reads
it back for training (`training_data`: train and test images, the labelled / unlabelled / validation
records, each record's domain) and for evaluation (`test_set`). It also says which recipe keys it needs
and refuses those it cannot serve (`check_recipe`), fits a recipe to what was prepared (`adopt`), names
the classes, and summarises itself for the CLI and the report.

Adding one: a module with a `DataSource` subclass, a line in `_REGISTRY`, and (for the command line) an
option of `data prepare` naming it. docs/architecture.md shows the steps.
"""

import abc
import collections
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mpltool.errors import InvalidInputError, UsageError
from mpltool.registry import Registry

# name -> module that registers it (imported on first use).
_REGISTRY = Registry(collections.OrderedDict([
    ("cifar", "mpltool.data.cifar"),
    ("folders", "mpltool.data.folders"),
    ("tfrecord", "mpltool.data.tfrecord"),
]))
DEFAULT_SOURCE = "cifar"  # a data record from before sources were named


class DataSource(abc.ABC):
    """The interface of a source; the docstring of each method says what the data stage expects."""

    name = ""
    option = ""            # how `data prepare` names it: "--cifar PATH"
    folder = ""            # where its files land in the project: "data/cifar"
    extra_files = ()       # imported when present, not read as images (batches.meta.txt, an index)

    # -- data prepare --
    def default_recipe(self) -> str:
        """The recipe whose settings `data prepare` defaults to when none is named."""
        from mpltool.recipes import default_recipe

        return default_recipe()

    @abc.abstractmethod
    def prepare_params(self, given: Path, recipe, options: Dict[str, Any]) -> Dict[str, Any]:
        """The data stage's params: what the user gave, with the recipe's defaults; refuses what does not
        apply to this source (a usage error naming the option)."""

    @abc.abstractmethod
    def import_files(self, given: Path, folder: Path, params: Dict[str, Any],
                     note: Callable[[str], None]) -> List[Dict[str, Any]]:
        """Validate and copy every file into `folder`; one summary (name, records, label_counts...) per file."""

    def place_files(self, imported: Path, final_dir: Path, infos: List[Dict[str, Any]]) -> None:
        """Move what is not a manifest output (a tree of image files that one indexed output pins) to its
        final place before the commit; its name must be new, so no earlier import's file is touched."""

    def after_commit(self, project, record: Dict[str, Any]) -> None:
        """Remove what an earlier import left that the committed `record` no longer names."""

    @abc.abstractmethod
    def file_key(self, name: str) -> str:
        """The manifest output key of an imported file."""

    @abc.abstractmethod
    def record(self, run, project, infos: List[Dict[str, Any]], staged: Dict[str, Path],
               params: Dict[str, Any]) -> Dict[str, Any]:
        """Fill the data record (and its metrics; further outputs through run.stage_output); the result
        `data prepare` returns."""

    @abc.abstractmethod
    def summary(self, result: Dict[str, Any]) -> Tuple[str, List[str], List[List[Any]], List[str]]:
        """(table title, columns, rows, lines) `data prepare` prints."""

    def next_train_args(self, result: Dict[str, Any], recipe) -> List[str]:
        """What to add to `mpltool train --recipe R` after this import."""
        return []

    # -- reading back --
    @abc.abstractmethod
    def needed_outputs(self, record: Dict[str, Any], splits: Sequence[str]) -> List[str]:
        """The output keys a reader of `splits` ("train", "test") needs verified."""

    @abc.abstractmethod
    def read_split(self, prepared: Dict[str, Any], split: str, recipe=None) -> Tuple[np.ndarray, np.ndarray]:
        """(images uint8 HWC, labels int64) of one split."""

    def check_recipe(self, prepared: Dict[str, Any], recipe) -> None:
        """Refuse a recipe that cannot train on this data (exit 2 or 4, saying what to change)."""

    def adopt(self, recipe, record: Dict[str, Any], log: Callable[[str], None]) -> None:
        """Fit the recipe to the prepared data before any graph is built (a split `data prepare` fixed)."""

    @abc.abstractmethod
    def training_data(self, prepared: Dict[str, Any], recipe) -> Dict[str, Any]:
        """Everything a training run reads: train_images/labels, test_images/labels, labelled_indices,
        unlabelled_indices, valid_images/labels, train_domains (each training record's domain, an index
        into source_domains), source_domains, target_domain (the held-out one, or ""), and `train_record`
        (what the train record keeps of it)."""

    @abc.abstractmethod
    def test_set(self, prepared: Dict[str, Any], train_params: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray,
                                                                                        Dict[str, Any]]:
        """(images, labels, the records of the files they come from) of the test set, given the train
        record's params (None: no training yet)."""

    def test_set_key(self, train_params: Optional[Dict[str, Any]]) -> str:
        """What beside the files' hashes decides which images are the test set (a cache key part)."""
        return ""

    def class_names(self, project, record: Dict[str, Any]) -> Tuple[Optional[List[str]], str]:
        """(a name per class, or None; where they came from)."""
        return None, "none"

    def facts(self, record: Dict[str, Any], train_params: Dict[str, Any]) -> "collections.OrderedDict":
        """What the report's data section shows beside the counts."""
        return collections.OrderedDict()


register_source = _REGISTRY.register


def source_names() -> List[str]:
    return _REGISTRY.names()


def get_source(name: Optional[str]) -> DataSource:
    """The registered source `name` (a record from before sources were named: DEFAULT_SOURCE)."""
    found = _REGISTRY.find(name or DEFAULT_SOURCE)
    if found is None:
        raise InvalidInputError("the data record names an unknown source {!r} (this mpltool reads {})".format(
            name, ", ".join(source_names())))
    return found


def source_for_usage(name: str) -> DataSource:
    """The source a user named (an unknown one is a usage error listing the known)."""
    try:
        return get_source(name)
    except InvalidInputError:
        raise UsageError("unknown data source {!r}".format(name), hint="one of {}".format(", ".join(source_names())))
