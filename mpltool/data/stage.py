"""The `data` stage: import CIFAR-format files into the project, validate them, fix the labelled split.

The files are copied into `<project>/data/cifar/` so the project directory alone carries everything the
later stages need (CI passes only that directory between jobs) and every file is pinned by sha256.
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from mpltool.data import cifar, splits
from mpltool.data.sources import get_source
from mpltool.errors import InvalidInputError, PrerequisiteError, UsageError
from mpltool.manifest import Project, apply_umask, atomic_write_bytes

DATA_DIR = "data/cifar"
DATA_COMMAND = "mpltool data prepare --cifar PATH"
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


def prepare(project_dir, source, num_labelled: int = 4000, split: str = "first", seed: int = 0,
            force: bool = False, kind: str = "cifar", num_valid: int = 0) -> Dict[str, Any]:
    """Import, validate and split under the project lock; every file lands through the stage commit.

    The CIFAR files and the indices file are staged, checked there, and renamed into place together
    with the manifest record, so a crash leaves the previous import or this one, never parts of both.
    """
    project = Project(project_dir)
    seed = _checked_seed(seed)
    project.ensure_dir()
    project.load()  # a corrupt manifest fails here, before any file is touched
    _remove_legacy_staging(project)
    source = Path(str(source)).expanduser()
    params = {"source": str(source.absolute()), "num_labelled": num_labelled, "split": split, "seed": seed}
    if num_valid:
        params["num_valid"] = num_valid
    data_source = get_source(kind)
    params["kind"] = kind
    with project.stage_run("data", params, force=force) as run:
        imported = project.staging_dir() / "import"
        infos = data_source.import_files(source, imported)
        final_dir = project.path(DATA_DIR)
        names = [info["name"] for info in infos] + [n for n in data_source.extra_files if (imported / n).is_file()]
        staged = {}
        for name in names:
            staged[name] = run.stage_output(data_source.file_key(name), final_dir / name)
            (imported / name).replace(staged[name])
        _, labels = data_source.read([staged[name] for name in data_source.split_files("train")])
        plan = splits.make(labels, split, num_labelled, num_valid=num_valid, seed=seed)
        indices = plan.labelled
        _write_indices(run.stage_output("labelled_indices", project.path(LABELLED_INDICES)), indices)
        _write_indices(run.stage_output("unlabelled_indices", project.path(UNLABELLED_INDICES)),
                       np.concatenate([plan.valid, plan.unlabelled]))
        train_infos = [i for i in infos if i["name"] in data_source.split_files("train")]
        test_infos = [i for i in infos if i["name"] in data_source.split_files("test")]
        run.record["source"] = kind
        run.record["files"] = [{"name": i["name"], "records": i["records"], "label_counts": i["label_counts"]}
                               for i in infos]
        run.record["split"] = {"method": split, "seed": seed, "num_labelled": int(len(indices)),
                               "label_counts": np.bincount(labels[indices], minlength=cifar.NUM_CLASSES)}
        if split == "round-robin":
            run.record["split"].update({
                "name": splits.split_name(int(len(indices)), num_valid, seed), "num_valid": num_valid,
                "valid_label_counts": np.bincount(labels[plan.valid], minlength=cifar.NUM_CLASSES)})
        run.metrics.update({
            "train_records": sum(i["records"] for i in train_infos),
            "test_records": sum(i["records"] for i in test_infos),
            "labelled_records": int(len(indices)),
            "unlabelled_records": int(len(plan.unlabelled)),
            "valid_records": int(len(plan.valid)),
        })
    result = {"project": str(project.dir), "data_dir": str(project.path(DATA_DIR)), "files": infos,
              "split": run.record["split"], "labelled_indices": run.outputs["labelled_indices"]}
    result.update(run.metrics)
    return result


def _write_indices(path, indices) -> None:
    atomic_write_bytes(path, "".join("{}\n".format(i) for i in indices).encode("ascii"))


def _remove_legacy_staging(project: Project) -> None:
    """Staging folders of mpltool 0.1 (`.import-*`, ~180 MB each with CIFAR-10) that a crash left behind."""
    for folder in project.dir.glob(".import-*"):
        if folder.is_dir():
            shutil.rmtree(str(folder), ignore_errors=True)


def load_prepared(project: Project, splits: Sequence[str] = ("train", "test"),
                  command_hint: str = DATA_COMMAND) -> Dict[str, Any]:
    """The data record with the files of `splits` (and, with train, the labelled indices) re-verified:
    what train and eval read instead of trusting paths. `read(prepared, split)` reads a split."""
    record = project.require_stage("data", command_hint)
    source = get_source(record.get("source") or "cifar")  # records from before sources were named: CIFAR
    outputs = record.get("outputs") or {}
    needed = [source.file_key(n) for split in splits for n in source.split_files(split)]
    if "train" in splits:
        needed.append("labelled_indices")
        if "unlabelled_indices" in outputs:
            needed.append("unlabelled_indices")
    missing = [key for key in needed if key not in outputs]
    if missing:
        raise PrerequisiteError("the data record lacks {}".format(", ".join(missing)), hint="re-run `{}`".format(
            command_hint))
    paths = {key: project.verify_file(outputs[key], "data file") for key in needed}
    return {"record": record, "paths": paths, "source": source,
            "inputs": {key: outputs[key] for key in needed}}


def read_split(prepared: Dict[str, Any], split: str):
    """(images uint8 HWC, labels int64) of one split, through the source that imported it."""
    source = prepared["source"]
    return source.read([prepared["paths"][source.file_key(n)] for n in source.split_files(split)])


def load_test_set(project: Project) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Test images (raw uint8 HWC), labels, and the records of their files (for a stage's inputs)."""
    prepared = load_prepared(project, splits=("test",))
    images, labels = read_split(prepared, "test")
    if images.shape[0] == 0:
        raise InvalidInputError("the prepared test set holds no images")
    return images, labels, prepared["inputs"]


def training_indices(prepared: Dict[str, Any], num_train: int) -> Dict[str, np.ndarray]:
    """labelled, unlabelled (in stream order) and valid record indices of a prepared split."""
    paths = prepared["paths"]
    labelled = read_labelled_indices(paths["labelled_indices"])
    if "unlabelled_indices" not in paths:
        return {"labelled": labelled, "unlabelled": np.arange(num_train, dtype=np.int64),
                "valid": np.zeros((0,), np.int64)}
    stream = read_labelled_indices(paths["unlabelled_indices"])
    num_valid = int((prepared["record"].get("split") or {}).get("num_valid") or 0)
    outside = any(indices.size and (indices.min() < 0 or indices.max() >= num_train) for indices in (labelled, stream))
    if outside or num_valid > stream.size:
        raise InvalidInputError("the prepared split names records outside the {} training records".format(num_train),
                                hint="re-run `{}`".format(DATA_COMMAND))
    return {"labelled": labelled, "unlabelled": stream[num_valid:], "valid": stream[:num_valid]}


def read_labelled_indices(path) -> np.ndarray:
    text = Path(str(path)).read_text(encoding="ascii").split()
    return np.array([int(v) for v in text], dtype=np.int64)


DEMO_RECIPE = "mpl-demo"


def demo(out_dir: Optional[str], project_dir, force: bool = False) -> Dict[str, Any]:
    """Write the demo set; a file already there is replaced only when identical, unrecorded and --force, or absent.

    The files are generated into a scratch folder first, so an existing file is compared with what
    would replace it (re-running is a no-op) and no half-written file is ever left under a final name.
    """
    from mpltool.data import demo as demo_data

    project = Project(project_dir)
    out = (Path(out_dir) if out_dir else project.dir / "demo-cifar").absolute()
    if out.exists() and not out.is_dir():
        raise UsageError("--out {} is a file, not a folder".format(out))
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".demo-", dir=str(out)))
    try:
        generated = [Path(p) for p in demo_data.write_demo(scratch)]
        for path in generated:
            target = out / path.name
            if target.is_file() and target.read_bytes() == path.read_bytes():
                continue
            project.check_writable(target, "demo", force)
        for path in generated:
            apply_umask(path)
            path.replace(out / path.name)
    finally:
        shutil.rmtree(str(scratch), ignore_errors=True)
    paths = [out / path.name for path in generated]
    return {"out": str(out), "files": [str(p) for p in paths], "classes": list(demo_data.DEMO_CLASSES),
            "recipe": DEMO_RECIPE,
            "next": "mpltool --project {} data prepare --cifar {} --recipe {}".format(project_dir, out, DEMO_RECIPE)}
