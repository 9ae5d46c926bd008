"""The `data` stage: import CIFAR-format files into the project, validate them, fix the labelled split.

The files are copied into `<project>/data/cifar/` so the project directory alone carries everything the
later stages need (CI passes only that directory between jobs) and every file is pinned by sha256.
"""

import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from mpltool.data import cifar, splits
from mpltool.data.sources import get_source
from mpltool.errors import InvalidInputError, PrerequisiteError, UsageError
from mpltool.manifest import Project
from mpltool.manifest.files import apply_umask, atomic_write_bytes

DATA_DIR = "data/cifar"
FOLDERS_DIR = "data/folders"
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
            force: bool = False, kind: str = "cifar", num_valid: int = 0, image_size=None, lists=None,
            note: Callable[[str], None] = lambda line: None) -> Dict[str, Any]:
    """Import, validate and split under the project lock; every file lands through the stage commit.

    The imported files and the indices files are staged, checked there, and renamed into place together
    with the manifest record, so a crash leaves the previous import or this one, never parts of both.
    Image folders (`kind="folders"`) are resized to `image_size` and have no labelled split: every image
    is labelled, and training chooses the held-out domain.
    """
    project = Project(project_dir)
    seed = _checked_seed(seed)
    project.ensure_dir()
    project.load()  # a corrupt manifest fails here, before any file is touched
    _remove_legacy_staging(project)
    source = Path(str(source)).expanduser()
    data_source = get_source(kind)
    if data_source.has_domains:
        params = {"source": str(source.absolute()), "image_size": list(image_size)}
        if lists:
            params["lists"] = str(Path(str(lists)).expanduser().absolute())
    else:
        params = {"source": str(source.absolute()), "num_labelled": num_labelled, "split": split, "seed": seed}
        if num_valid:
            params["num_valid"] = num_valid
    params["kind"] = kind
    with project.stage_run("data", params, force=force) as run:
        imported = project.staging_dir() / "import"
        options = {"image_size": image_size, "lists": params.get("lists"), "note": note} if data_source.has_domains else {}
        infos = data_source.import_files(source, imported, **options)
        final_dir = project.path(DATA_DIR if not data_source.has_domains else FOLDERS_DIR)
        names = [info["name"] for info in infos] + [n for n in data_source.extra_files if (imported / n).is_file()]
        staged = {}
        for name in names:
            staged[name] = run.stage_output(data_source.file_key(name), final_dir / name)
            (imported / name).replace(staged[name])
        if data_source.has_domains:
            return _record_domains(project, run, infos, staged)
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


def _record_domains(project: Project, run, infos, staged) -> Dict[str, Any]:
    """The data record of image folders: per-domain counts (the files' hashes are the stage outputs)."""
    from mpltool.data.folders import INDEX_FILE, read_index

    index = read_index(staged[INDEX_FILE])
    run.record["source"] = "folders"
    run.record["files"] = [{"name": i["name"], "domain": i["domain"], "records": i["records"],
                            "label_counts": i["label_counts"]} for i in infos]
    run.record["domains"] = [i["domain"] for i in infos]
    run.record["classes"] = index["classes"]
    run.record["image_size"] = index["size"]
    run.metrics.update({"records": sum(i["records"] for i in infos), "domains": len(infos),
                        "classes": len(index["classes"])})
    run.metrics.update({"{}_records".format(i["domain"]): i["records"] for i in infos})
    return {"project": str(project.dir), "data_dir": str(project.path(FOLDERS_DIR)), "files": infos,
            "domains": run.record["domains"], "classes": index["classes"], "image_size": index["size"],
            "records": run.metrics["records"]}


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
    what train and eval read instead of trusting paths. `read_split(prepared, split)` reads a split.
    Image folders: every domain file, since which domain is the test set is training's choice."""
    record = project.require_stage("data", command_hint)
    source = get_source(record.get("source") or "cifar")  # records from before sources were named: CIFAR
    outputs = record.get("outputs") or {}
    if source.has_domains:
        needed = [source.file_key(source.domain_file(d)) for d in record.get("domains") or []]
        needed.append(source.file_key(source.extra_files[0]))
    else:
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


def domains_of(prepared: Dict[str, Any]) -> Sequence[str]:
    """The prepared domains (image folders), or () for data without domains."""
    return list(prepared["record"].get("domains") or []) if prepared["source"].has_domains else []


def split_domains(prepared: Dict[str, Any], target_domain: str) -> Tuple[Sequence[str], str]:
    """(source domains, target domain) of image-folder data: the target is held out as the test set.

    Data without domains takes no target_domain; domain data needs one naming a prepared domain."""
    domains = domains_of(prepared)
    if not prepared["source"].has_domains:
        if target_domain:
            raise UsageError("target_domain={} but the prepared data has no domains (CIFAR files)".format(
                target_domain), hint="drop --set target_domain, or prepare image folders with `mpltool data "
                                     "prepare --images DIR`")
        return [], ""
    if target_domain not in domains or len(domains) < 2:
        if len(domains) < 2:
            raise UsageError("the prepared images form one domain ({}): training needs a held-out test domain"
                             .format(", ".join(domains)),
                             hint="lay the images out as DIR/<domain>/<class>/ with two or more domains (a "
                                  "train/test split is two domains: DIR/train/..., DIR/test/...)")
        raise UsageError("{}: the prepared domains are {}".format(
            "target_domain is not set" if not target_domain else "unknown target_domain {!r}".format(target_domain),
            ", ".join(domains)), hint="choose the held-out test domain with --set target_domain={}".format(
                domains[-1]))
    return [d for d in domains if d != target_domain], target_domain


def read_split(prepared: Dict[str, Any], split: str, target_domain: str = ""):
    """(images uint8 HWC, labels int64) of one split, through the source that imported it. With domains,
    test is the target domain and train the other domains, in the prepared order."""
    source = prepared["source"]
    if source.has_domains:
        sources, target = split_domains(prepared, target_domain)
        return source.read_domains(prepared["paths"], [target] if split == "test" else sources)
    return source.read([prepared["paths"][source.file_key(n)] for n in source.split_files(split)])


def trained_target_domain(project: Project) -> str:
    """The held-out domain the train stage recorded ("" when none was trained or the data has no domains)."""
    return str(((project.stage("train") or {}).get("params") or {}).get("target_domain") or "")


def load_test_set(project: Project) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Test images (raw uint8 HWC), labels, and the records of their files (for a stage's inputs).
    Image folders: the target domain training held out."""
    prepared = load_prepared(project, splits=("test",))
    target = trained_target_domain(project)
    if prepared["source"].has_domains and not target:
        raise PrerequisiteError("image-folder data has no test set until training names the held-out domain",
                                hint="run `mpltool train --set target_domain=DOMAIN` first")
    images, labels = read_split(prepared, "test", target)
    if images.shape[0] == 0:
        raise InvalidInputError("the prepared test set holds no images")
    inputs = prepared["inputs"]
    if prepared["source"].has_domains:
        source = prepared["source"]
        keep = (source.file_key(source.domain_file(target)), source.file_key(source.extra_files[0]))
        inputs = {k: v for k, v in inputs.items() if k in keep}
    return images, labels, inputs


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


def domain_holdout(domain_ids: np.ndarray, fraction: float, seed: int, names: Optional[Sequence[str]] = None
                   ) -> np.ndarray:
    """Validation records of image-folder training: round(fraction·n) records of each source domain, a
    seeded draw per domain, sorted. The draw is seeded by the domain's name (`names[id]`; its id when no
    names are given), so a domain's share never depends on the others nor on which one is the target."""
    chosen = []
    for domain in np.unique(domain_ids):
        members = np.flatnonzero(domain_ids == domain)
        count = int(round(fraction * members.size))
        if fraction > 0 and count == 0:
            count = 1
        key = zlib.crc32(names[int(domain)].encode("utf-8")) if names is not None else int(domain)
        rng = np.random.RandomState([seed, key])
        chosen.append(members[rng.permutation(members.size)[:count]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros((0,), np.int64)


def training_data(prepared: Dict[str, Any], target_domain: str = "", valid_fraction: float = 0.0,
                  seed: int = 0) -> Dict[str, Any]:
    """Everything a training run reads: train and test images and labels, the labelled / unlabelled /
    validation record indices, and per training record its domain (an index into `source_domains`).

    CIFAR: the prepared split. Image folders: the target domain is the test set; every record of the
    other domains is labelled and unlabelled alike, except `valid_fraction` of each source domain held
    out for validation (model selection that never looks at the target)."""
    train_images, train_labels = read_split(prepared, "train", target_domain)
    test_images, test_labels = read_split(prepared, "test", target_domain)
    if prepared["source"].has_domains:
        sources, _ = split_domains(prepared, target_domain)
        counts = {f["domain"]: int(f["records"]) for f in prepared["record"].get("files") or []}
        domain_ids = np.concatenate([np.full(counts[d], k, np.int64) for k, d in enumerate(sources)])
        if domain_ids.size != train_labels.size:
            raise InvalidInputError("the prepared domain files hold {} records where the data record counts {}"
                                    .format(train_labels.size, domain_ids.size), hint="re-run `mpltool data prepare`")
        valid = domain_holdout(domain_ids, valid_fraction, seed, sources)
        rest = np.setdiff1d(np.arange(train_labels.size), valid)
        indices = {"labelled": rest, "unlabelled": rest, "valid": valid}
    else:
        sources = []
        domain_ids = np.zeros(train_labels.shape, np.int64)
        indices = training_indices(prepared, len(train_labels))
    return {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
            "test_labels": test_labels, "labelled_indices": indices["labelled"],
            "unlabelled_indices": indices["unlabelled"], "valid_images": train_images[indices["valid"]],
            "valid_labels": train_labels[indices["valid"]], "train_domains": domain_ids,
            "source_domains": list(sources), "target_domain": target_domain}


def read_labelled_indices(path) -> np.ndarray:
    text = Path(str(path)).read_text(encoding="ascii").split()
    return np.array([int(v) for v in text], dtype=np.int64)


DEMO_RECIPE = "mpl-demo"
DOMAINS_DEMO_RECIPE = "masf-demo"


def demo(out_dir: Optional[str], project_dir, force: bool = False, domains: bool = False) -> Dict[str, Any]:
    """Write the demo set; a file already there is replaced only when identical, unrecorded and --force, or absent.

    `domains`: the multi-domain demo (PNG files in PACS's DOMAIN/CLASS layout) instead of the CIFAR-format
    one. The files are generated into a scratch folder first, so an existing file is compared with what
    would replace it (re-running is a no-op) and no half-written file is ever left under a final name.
    """
    from mpltool.data import demo as demo_data
    from mpltool.data import domains as domain_data

    project = Project(project_dir)
    out = (Path(out_dir) if out_dir else project.dir / ("demo-domains" if domains else "demo-cifar")).absolute()
    if out.exists() and not out.is_dir():
        raise UsageError("--out {} is a file, not a folder".format(out))
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".demo-", dir=str(out)))
    try:
        if domains:
            domain_data.write_domain_demo(scratch)
            generated = sorted(p.relative_to(scratch) for p in scratch.rglob("*") if p.is_file())
        else:
            generated = [Path(p).relative_to(scratch) for p in demo_data.write_demo(scratch)]
        for name in generated:
            target = out / name
            if target.is_file() and target.read_bytes() == (scratch / name).read_bytes():
                continue
            project.check_writable(target, "demo", force)
        for name in generated:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            apply_umask(scratch / name)
            (scratch / name).replace(out / name)
    finally:
        shutil.rmtree(str(scratch), ignore_errors=True)
    result = {"out": str(out), "files": [str(out / name) for name in generated],
              "classes": list(demo_data.DEMO_CLASSES)}
    if domains:
        result.update(recipe=DOMAINS_DEMO_RECIPE, domains=list(domain_data.STYLES),
                      next="mpltool --project {} data prepare --images {} --recipe {}".format(
                          project_dir, out, DOMAINS_DEMO_RECIPE))
    else:
        result.update(recipe=DEMO_RECIPE, next="mpltool --project {} data prepare --cifar {} --recipe {}".format(
            project_dir, out, DEMO_RECIPE))
    return result
