"""The `data` stage: import a data source's files into the project, validate them, record them; and the
readers train, eval, predict and the report use to get them back, verified.

The files are copied into the project (`<project>/data/<source>/`) so the project directory alone carries
everything the later stages need (CI passes only that directory between jobs) and every file is pinned
by sha256. What differs between sources (CIFAR binaries, image folders, ...) is theirs
(mpltool/data/sources.py); nothing here asks which one it holds.
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from mpltool.data.sources import get_source, source_for_usage
from mpltool.errors import InvalidInputError, PrerequisiteError, UsageError
from mpltool.manifest import Project
from mpltool.manifest.files import apply_umask
from mpltool.manifest.stages import command as stage_command

DATA_COMMAND = stage_command("data")


def prepare(project_dir, given, kind: str = "cifar", recipe: Optional[str] = None, force: bool = False,
            options: Optional[Dict[str, Any]] = None, note: Callable[[str], None] = lambda line: None
            ) -> Dict[str, Any]:
    """Import, validate and record `given` as source `kind` under the project lock; every file lands
    through the stage commit.

    `recipe`: whose settings are the defaults (the source's own default recipe when None); `options`: the
    source's `data prepare` options as given (None for those not given). The imported files are staged,
    checked there, and renamed into place together with the manifest record, so a crash leaves the
    previous import or this one, never parts of both.
    """
    from mpltool.recipes import load_recipe

    data_source = source_for_usage(kind)
    project = Project(project_dir)
    project.ensure_dir()
    project.load()  # a corrupt manifest fails here, before any file is touched
    _remove_legacy_staging(project)
    given = Path(str(given)).expanduser()
    recipe_name = recipe or data_source.default_recipe()
    params = data_source.prepare_params(given, load_recipe(recipe_name), dict(options or {}))
    params["kind"] = data_source.name
    with project.stage_run("data", params, force=force) as run:
        imported = project.staging_dir() / "import"
        infos = data_source.import_files(given, imported, params, note)
        final_dir = project.path(data_source.folder)
        names = [info["name"] for info in infos] + [n for n in data_source.extra_files if (imported / n).is_file()]
        staged = {}
        for name in names:
            staged[name] = run.stage_output(data_source.file_key(name), final_dir / name)
            (imported / name).replace(staged[name])
        data_source.place_files(imported, final_dir, infos)
        run.record["source"] = data_source.name
        result = data_source.record(run, project, infos, staged, params)
    data_source.after_commit(project, project.stage("data") or {})
    result.update(project=str(project.dir), data_dir=str(project.path(data_source.folder)), files=infos,
                  source=data_source.name, recipe=recipe_name, outputs=dict(run.outputs))
    for key, record in run.outputs.items():  # the hashes, as committed
        for info in infos:
            if data_source.file_key(info["name"]) == key:
                info.setdefault("sha256", record["sha256"])
                info.setdefault("size", record["size"])
    return result


def _remove_legacy_staging(project: Project) -> None:
    """Staging folders of mpltool 0.1 (`.import-*`, ~180 MB each with CIFAR-10) that a crash left behind."""
    for folder in project.dir.glob(".import-*"):
        if folder.is_dir():
            shutil.rmtree(str(folder), ignore_errors=True)


def load_prepared(project: Project, splits: Sequence[str] = ("train", "test"),
                  command_hint: str = DATA_COMMAND) -> Dict[str, Any]:
    """The data record with the files a reader of `splits` needs re-verified: what train and eval read
    instead of trusting paths. `read_split(prepared, split)` reads a split."""
    record = project.require_stage("data", command_hint)
    source = get_source(record.get("source"))
    outputs = record.get("outputs") or {}
    needed = source.needed_outputs(record, splits)
    missing = [key for key in needed if key not in outputs]
    if missing:
        raise PrerequisiteError("the data record lacks {}".format(", ".join(missing)), hint="re-run `{}`".format(
            command_hint))
    paths = {key: project.verify_file(outputs[key], "data file") for key in needed}
    return {"record": record, "paths": paths, "source": source, "inputs": {key: outputs[key] for key in needed}}


def read_split(prepared: Dict[str, Any], split: str, recipe=None) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 HWC, labels int64) of one split, through the source that imported it (`recipe`: the
    training's, which may choose the split: a held-out domain)."""
    return prepared["source"].read_split(prepared, split, recipe)


def training_data(prepared: Dict[str, Any], recipe) -> Dict[str, Any]:
    """Everything a training run reads (DataSource.training_data)."""
    return prepared["source"].training_data(prepared, recipe)


def check_recipe(prepared: Dict[str, Any], recipe) -> None:
    """Refuse a recipe this data cannot serve, and a best-checkpoint choice on validation records the
    data does not hold."""
    prepared["source"].check_recipe(prepared, recipe)


def train_params(project: Project) -> Optional[Dict[str, Any]]:
    """The params the train stage recorded (None before any training)."""
    train = project.stage("train")
    return None if train is None else dict(train.get("params") or {})


def load_test_set(project: Project) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Test images (raw uint8 HWC), labels, and the records of their files (for a stage's inputs), as
    training chose them."""
    prepared = load_prepared(project, splits=("test",))
    images, labels, inputs = prepared["source"].test_set(prepared, train_params(project))
    if images.shape[0] == 0:
        raise InvalidInputError("the prepared test set holds no images")
    return images, labels, inputs


def test_set_key(project: Project) -> str:
    """What beside its files decides which images are the test set (the report's cache key)."""
    record = project.stage("data") or {}
    return get_source(record.get("source")).test_set_key(train_params(project))


def class_names(project: Project, count: int):
    """(a name for each of `count` classes, where the names came from): the data source's names, and
    `class k` for a class beyond them (origin "none" when the source names none)."""
    from mpltool.errors import MpltoolError

    try:
        record = project.stage("data") or {}
        names, origin = get_source(record.get("source")).class_names(project, record) if record else (None, "none")
    except (MpltoolError, OSError):
        names, origin = None, "none"
    names = [str(name) for name in names or []]
    return [names[k] if k < len(names) else "class {}".format(k) for k in range(count)], origin if names else "none"




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
        result.update(recipe=domain_data.DEMO_RECIPE, domains=list(domain_data.STYLES),
                      next="mpltool --project {} data prepare --images {} --recipe {}".format(
                          project_dir, out, domain_data.DEMO_RECIPE))
    else:
        from mpltool.algorithms import DEFAULT_ALGORITHM, get_algorithm

        recipe = get_algorithm(DEFAULT_ALGORITHM).demo_recipe  # the default algorithm's demo run
        result.update(recipe=recipe, next="mpltool --project {} data prepare --cifar {} --recipe {}".format(
            project_dir, out, recipe))
    return result
