"""Per-image predictions of the evaluated network on the test set, computed as `eval` computes them and
cached by the sha256 of every file they depend on.

Which network: the one the `eval` record names (its `source`: a checkpoint prefix + target, or a .pb),
with eval's batch size and label smoothing; without a finished eval, the train record's best checkpoint of
the default target (else its latest), as `eval` would choose it. The images, the network classes and the
scoring (mpltool.data.stage.load_test_set, mpltool.models.inference, eval.metrics.batched_logits) are
eval's own, so the report's top-1 is eval's top-1 for the same files.

The logits are cached in `report/predictions.npz` under a key hashing the model files' sha256, the test
files' sha256, the network description, the target and the batch size: a re-run on an unchanged project
hashes files but runs no network; any changed checkpoint or .pb changes the key.
"""

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from mpltool.errors import MpltoolError

CACHE_NAME = "predictions.npz"
CACHE_VERSION = 1


class Unavailable(Exception):
    """Why the report has no predictions (shown in the page, not an error of the command)."""


def _train_recipe(project):
    from mpltool.eval.stage import train_recipe

    return train_recipe(project)


def model_source(project, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """The network to run: {origin, kind, target, prefix|path, recorded files, artifact, batch_size,
    label_smoothing, step, note}. The model is the one the eval record names, else the train record's best
    checkpoint of the default network (its latest before any best); its files are not verified here (a
    changed one is reported, not refused). Raises Unavailable when the project has no network yet."""
    from mpltool.checkpoints import trained_networks
    from mpltool.manifest.records import typed
    from mpltool.models import artifacts

    stages = manifest.get("stages") or {}
    evaluated = typed("eval", stages.get("eval"))
    note = None
    if evaluated.done and evaluated.source.get("kind") in artifacts.KINDS:
        artifact = artifacts.from_record(project, evaluated.source, evaluated.inputs)
        described = {"origin": "eval", "batch_size": int(evaluated.params.get("batch_size") or 100),
                     "label_smoothing": float(evaluated.params.get("label_smoothing") or 0.0),
                     "eval_top1": evaluated.metrics.get("top1"), "eval_images": evaluated.metrics.get("images")}
    else:
        if evaluated:
            note = "the eval stage is {}: predictions are of the checkpoint eval would choose".format(
                evaluated.status)
        train = typed("train", stages.get("train"))
        if not train:
            raise Unavailable("no trained network yet: run `mpltool train`, then `mpltool eval`")
        target = trained_networks(project)["default_target"]
        record, chosen = train.checkpoints.best.get(target), "best"
        if not record:
            record, chosen = train.checkpoints.latest, "latest"
        if not record:
            raise Unavailable("the train stage ({}) recorded no checkpoint yet".format(train.status))
        artifact = artifacts.from_record(project, {"kind": "checkpoint", "target": target, "prefix": record["prefix"],
                                                   "step": record.get("step"), "chosen": chosen},
                                         {"checkpoint": record})
        recipe = _train_recipe(project)
        described = {"origin": "train", "batch_size": int(recipe.eval_batch_size),
                     "label_smoothing": float(recipe.label_smoothing), "eval_top1": None, "eval_images": None}
    described.update(kind=artifact.kind, target=artifact.target, step=artifact.step, chosen=artifact.chosen,
                     network=artifact.network, artifact=artifact, note=note,
                     recorded=list((artifact.record or {}).get("files") or []) if artifact.kind == "checkpoint"
                     else [artifact.record] if artifact.record else [])
    described["prefix" if artifact.kind == "checkpoint" else "path"] = str(artifact.path)
    return described


def model_files(project, source: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(path relative to the project, sha256) of every file the network is read from, as they are now."""
    from mpltool.checkpoints import checkpoint_files
    from mpltool.manifest.files import sha256_file

    if source["kind"] != "checkpoint":
        path = Path(source["path"])
        if not path.is_file():
            raise Unavailable("the model file {} is missing".format(project.relative(path)))
        paths = [path]
    else:
        paths = checkpoint_files(source["prefix"])
        if not any(p.name.endswith(".index") for p in paths):
            raise Unavailable("the checkpoint {} is missing".format(project.relative(source["prefix"])))
    try:
        return [(project.relative(p), sha256_file(p)) for p in paths]
    except OSError as exc:  # a checkpoint rotated away while training runs, an unreadable file
        raise Unavailable("cannot read the model file {}: {}".format(getattr(exc, "filename", None) or "",
                                                                     exc.strerror or exc))


def changed_since_recorded(files: List[Tuple[str, str]], recorded: List[Dict[str, Any]]) -> bool:
    """True when the files on disk are not the ones the record names (or the record names none)."""
    wanted = sorted((str(r.get("path")), str(r.get("sha256"))) for r in recorded if isinstance(r, dict))
    return not wanted or sorted(files) != wanted


def cache_key(source: Dict[str, Any], files: List[Tuple[str, str]], test_files: Dict[str, Any],
              target_domain: str) -> str:
    payload = {"version": CACHE_VERSION, "kind": source["kind"], "target": source.get("target"),
               "network": source.get("network"), "batch_size": source["batch_size"],
               "model_files": sorted(files),
               "test_files": sorted((k, str(v.get("sha256"))) for k, v in test_files.items()),
               "target_domain": target_domain}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def read_cache(path, key: str, labels: np.ndarray) -> Optional[np.ndarray]:
    """The cached logits when `path` holds them under `key` for these labels; None otherwise (any
    unreadable or foreign file is simply not a cache hit)."""
    path = Path(str(path))
    if not path.is_file():
        return None
    try:
        with np.load(str(path), allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            logits, cached_labels = np.array(data["logits"]), np.array(data["labels"])
    except Exception:  # a truncated or foreign file: recompute
        return None
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or not np.array_equal(cached_labels, labels):
        return None
    return logits


def cache_bytes(key: str, logits: np.ndarray, labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, key=np.array(key), logits=logits, labels=labels)
    return buffer.getvalue()


def run_network(source: Dict[str, Any], images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Logits of every test image, through the very models and batching `eval` uses."""
    from mpltool.errors import InvalidInputError
    from mpltool.models import artifacts
    from mpltool.data.records import at_input_size
    from mpltool.models.inference import batched_logits

    with artifacts.open_model(source["artifact"]) as network:
        if network.num_classes is not None and int(labels.max()) >= network.num_classes:
            raise InvalidInputError("the model has {} classes but the test data has label {}".format(
                network.num_classes, int(labels.max())))
        return batched_logits(network.predict, at_input_size(images, network.image_shape), source["batch_size"])


def predictions(project, manifest: Dict[str, Any], cache_path, log: Callable[[str], None] = lambda line: None
                ) -> Dict[str, Any]:
    """{source, images, labels, logits, key, cached, changed, test_files}; raises Unavailable with the
    reason when the project cannot give them (no network yet, a missing file, a changed data file...)."""
    from mpltool.data.stage import load_test_set, test_set_key

    source = model_source(project, manifest)
    try:
        images, labels, test_files = load_test_set(project)
        files = model_files(project, source)
    except MpltoolError as exc:
        raise Unavailable(str(exc))
    changed = changed_since_recorded(files, source.get("recorded") or [])
    key = cache_key(source, files, test_files, test_set_key(project))
    logits = read_cache(cache_path, key, labels)
    cached = logits is not None
    if not cached:
        log("running {} on {} test images for the report".format(describe(source), labels.shape[0]))
        try:
            logits = run_network(source, images, labels)
        except MpltoolError as exc:
            raise Unavailable(str(exc))
    return {"source": source, "images": images, "labels": labels, "logits": logits, "key": key, "cached": cached,
            "changed": changed, "test_files": test_files, "model_files": files}


def describe(source: Dict[str, Any]) -> str:
    if source["kind"] != "checkpoint":
        from mpltool.models.artifacts import FILE_WORDS

        return "the {} {}".format(FILE_WORDS.get(source["kind"], source["kind"]), Path(source["path"]).name)
    return "{} checkpoint {}{}".format(source.get("target"), Path(source["prefix"]).name,
                                       " ({})".format(source["chosen"]) if source.get("chosen") else "")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def sample_order(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, count: int) -> List[int]:
    """Test image indices to show: wrong predictions by descending confidence (the worst mistakes first),
    then right ones by ascending confidence (the closest calls); ties by index."""
    wrong = np.flatnonzero(predicted != labels)
    right = np.flatnonzero(predicted == labels)
    wrong = wrong[np.lexsort((wrong, -confidence[wrong]))]
    right = right[np.lexsort((right, confidence[right]))]
    return [int(i) for i in np.concatenate([wrong, right])[:max(0, count)]]
