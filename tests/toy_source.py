"""A toy data source, registered from this module alone: a folder holding train.npz and test.npz, each with
`images` (uint8 [N, H, W, 3]) and `labels` (int [N]), and optionally a classes.txt. Importing this module
adds it to mpltool's sources; tests/test_data_sources.py runs it through data -> train -> eval -> freeze
with no edit anywhere else."""

import collections
import shutil

import numpy as np

from mpltool.data.sources import DataSource, register_source
from mpltool.errors import InvalidInputError, UsageError

FILES = ("train.npz", "test.npz")
CLASSES = "classes.txt"


def read_npz(path):
    try:
        with np.load(str(path), allow_pickle=False) as data:
            images, labels = np.array(data["images"]), np.array(data["labels"]).astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidInputError("{} is not an npz of images and labels: {}".format(path, exc))
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or labels.shape != images.shape[:1]:
        raise InvalidInputError("{}: images must be uint8 [N, H, W, 3] with one label each".format(path))
    return images, labels


@register_source
class NpzFolder(DataSource):
    name = "toy-npz"
    option = "--toy-npz DIR"
    folder = "data/toy-npz"
    extra_files = (CLASSES,)

    def prepare_params(self, given, recipe, options):
        extra = sorted(k for k, v in options.items() if v is not None)
        if extra:
            raise UsageError("{} do not apply to npz folders".format(", ".join(extra)))
        return {"source": str(given.absolute())}

    def import_files(self, given, folder, params, note):
        folder.mkdir(parents=True, exist_ok=True)
        infos = []
        for name in FILES:
            if not (given / name).is_file():
                raise InvalidInputError("{} lacks {}".format(given, name))
            images, labels = read_npz(given / name)
            shutil.copyfile(str(given / name), str(folder / name))
            infos.append({"name": name, "records": int(labels.size),
                          "label_counts": np.bincount(labels, minlength=int(labels.max()) + 1).tolist()})
        if (given / CLASSES).is_file():
            shutil.copyfile(str(given / CLASSES), str(folder / CLASSES))
        return infos

    def file_key(self, name):
        return name.replace(".", "_")

    def record(self, run, project, infos, staged, params):
        run.record["files"] = infos
        run.metrics.update({"{}_records".format(i["name"].split(".")[0]): i["records"] for i in infos})
        return dict(run.metrics)

    def summary(self, result):
        return "npz files", ["file", "records"], [[f["name"], f["records"]] for f in result["files"]], []

    def needed_outputs(self, record, splits):
        return [self.file_key("{}.npz".format(split)) for split in splits]

    def read_split(self, prepared, split, recipe=None):
        return read_npz(prepared["paths"][self.file_key("{}.npz".format(split))])

    def training_data(self, prepared, recipe):
        train_images, train_labels = self.read_split(prepared, "train")
        test_images, test_labels = self.read_split(prepared, "test")
        everything = np.arange(train_labels.size)
        none = np.zeros((0,), np.int64)
        return {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
                "test_labels": test_labels, "labelled_indices": everything, "unlabelled_indices": everything,
                "valid_images": train_images[none], "valid_labels": train_labels[none],
                "train_domains": np.zeros(train_labels.shape, np.int64), "source_domains": [], "target_domain": "",
                "train_record": {}}

    def test_set(self, prepared, train_params):
        images, labels = self.read_split(prepared, "test")
        return images, labels, prepared["inputs"]

    def class_names(self, project, record):
        meta = (record.get("outputs") or {}).get(self.file_key(CLASSES))
        if not meta:
            return None, "none"
        return project.path(meta["path"]).read_text().split(), CLASSES

    def facts(self, record, train_params):
        return collections.OrderedDict([("format", "npz")])
