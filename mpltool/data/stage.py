"""The `data` stage: import CIFAR-format files into the project, validate them, fix the labelled split.

The files are copied into `<project>/data/cifar/` so the project directory alone carries everything the
later stages need (CI passes only that directory between jobs) and every file is pinned by sha256.
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from mpltool.data import cifar
from mpltool.errors import PrerequisiteError
from mpltool.manifest import Project, atomic_write_bytes

DATA_DIR = "data/cifar"
LABELLED_INDICES = "data/labelled_indices.txt"


def file_key(name: str) -> str:
    """Manifest output key of a CIFAR file: `data_batch_1`, ..., `test_batch`."""
    return name[: -len(".bin")] if name.endswith(".bin") else name


def prepare(project_dir, source, num_labelled: int = 4000, split: str = "first", seed: int = 0) -> Dict[str, Any]:
    project = Project(project_dir)
    project.ensure_dir()
    project.load()  # a corrupt manifest fails here, before any file is touched
    source = Path(str(source)).expanduser()
    params = {"source": str(source.absolute()), "num_labelled": num_labelled, "split": split, "seed": seed}
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=str(project.dir)))
    try:
        infos = cifar.import_cifar(source, staging)
        train_paths = [staging / name for name in cifar.TRAIN_FILES]
        _, labels = cifar.read_images(train_paths)
        indices = cifar.make_split(labels, num_labelled, method=split, seed=seed)
        with project.stage_run("data", params) as run:
            final_dir = project.path(DATA_DIR)
            final_dir.mkdir(parents=True, exist_ok=True)
            for path in sorted(staging.iterdir()):
                path.replace(final_dir / path.name)
            indices_path = project.path(LABELLED_INDICES)
            atomic_write_bytes(indices_path, "".join("{}\n".format(i) for i in indices).encode("ascii"))
            for info in infos:
                run.outputs[file_key(info["name"])] = project.file_record(final_dir / info["name"])
            meta = final_dir / cifar.META_FILE
            if meta.is_file():
                run.outputs["batches_meta"] = project.file_record(meta)
            run.outputs["labelled_indices"] = project.file_record(indices_path)
            train_infos = [i for i in infos if i["name"] in cifar.TRAIN_FILES]
            test_info = next(i for i in infos if i["name"] == cifar.TEST_FILE)
            run.record["files"] = [{"name": i["name"], "records": i["records"], "label_counts": i["label_counts"]}
                                   for i in infos]
            run.record["split"] = {"method": split, "seed": seed, "num_labelled": int(len(indices)),
                                   "label_counts": np.bincount(labels[indices], minlength=cifar.NUM_CLASSES)}
            run.metrics.update({
                "train_records": sum(i["records"] for i in train_infos),
                "test_records": test_info["records"],
                "labelled_records": int(len(indices)),
                "unlabelled_records": sum(i["records"] for i in train_infos),
            })
            result = {"project": str(project.dir), "data_dir": str(final_dir), "files": infos,
                      "split": run.record["split"], "labelled_indices": run.outputs["labelled_indices"]}
            result.update(run.metrics)
        return result
    finally:
        shutil.rmtree(str(staging), ignore_errors=True)


def load_prepared(project: Project, command_hint: str = "mpltool data prepare --cifar PATH") -> Dict[str, Any]:
    """The data record with every file re-verified: what train and eval read instead of trusting paths."""
    record = project.require_stage("data", command_hint)
    outputs = record.get("outputs") or {}
    needed = [file_key(n) for n in cifar.TRAIN_FILES] + [file_key(cifar.TEST_FILE), "labelled_indices"]
    missing = [key for key in needed if key not in outputs]
    if missing:
        raise PrerequisiteError("the data record lacks {}".format(", ".join(missing)), hint="re-run `{}`".format(
            command_hint))
    paths = {key: project.verify_file(outputs[key], "data file") for key in needed}
    return {"record": record, "paths": paths}


def read_labelled_indices(path) -> np.ndarray:
    text = Path(str(path)).read_text(encoding="ascii").split()
    return np.array([int(v) for v in text], dtype=np.int64)


def demo(out_dir: Optional[str], project_dir) -> Dict[str, Any]:
    from mpltool.data import demo as demo_data

    out = Path(out_dir) if out_dir else Project(project_dir).dir / "demo-cifar"
    paths = demo_data.write_demo(out)
    return {"out": str(out.absolute()), "files": [str(p) for p in paths],
            "classes": list(demo_data.DEMO_CLASSES),
            "next": "mpltool --project {} data prepare --cifar {}".format(project_dir, out)}
