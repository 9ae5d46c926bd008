"""`predict`: the top-k classes of image files, through any model the project has or the user names.

Images (PNG, JPEG, BMP, GIF, any size) are decoded and resized exactly as `data prepare --images` does it
(mpltool.data.folders.Decoder: TensorFlow's decoders, TF2's bilinear resize with antialias, rounded to
uint8) to the model's input size, and fed as raw 0..255 pixels: every exported graph normalises inside.
Models: the train record's best checkpoint of the target (default), `latest`, a checkpoint path, a
frozen .pb (TensorFlow) or an .onnx (onnxruntime, the `onnx` extra). Nothing is recorded: predict only reads.
"""

import contextlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mpltool.errors import InvalidInputError, NonFiniteError, UsageError
from mpltool.data.stage import class_names
from mpltool.manifest import Project

BATCH = 64


def _top_k(value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError("--top-k must be a whole number, got {!r}".format(value))
    if number < 1 or isinstance(value, bool) or number != float(value):
        raise UsageError("--top-k must be a whole number >= 1, got {!r}".format(value))
    return number


def _check_files(images: Sequence) -> List[str]:
    """The image paths as given, each an existing non-empty file (exit 3 naming the first that is not)."""
    paths = [str(p) for p in images]
    if not paths:
        raise UsageError("give one or more image files")
    for path in paths:
        candidate = Path(path).expanduser()
        if not candidate.exists():
            raise InvalidInputError("cannot read image {}: no such file".format(path))
        if not candidate.is_file():
            raise InvalidInputError("cannot read image {}: not a file".format(path))
        if candidate.stat().st_size == 0:
            raise InvalidInputError("image {} is empty (0 bytes)".format(path))
    return paths


def _static_size(shape, what: str) -> Tuple[int, int]:
    dims = list(shape or [])
    if len(dims) != 3 or any(not isinstance(d, int) or d <= 0 for d in dims[:2]) or dims[2] not in (3, None):
        raise InvalidInputError("{} has input shape {} per image; predict needs a static [height, width, 3]".format(
            what, dims))
    return int(dims[0]), int(dims[1])


@contextlib.contextmanager
def open_model(project: Project, model=None, target: Optional[str] = None):
    """(the InferenceModel, its description, (height, width)) of the model `predict --model` names."""
    from mpltool.models import artifacts

    artifact = artifacts.resolve(project, model, target, what="predict --model")
    network = artifacts.open_model(artifact)
    try:
        described = artifacts.describe(project, artifact)
        if artifact.kind == "checkpoint":
            described["model"] = network.model_name
        what = "model {}".format(network.model_name) if artifact.kind == "checkpoint" else str(model)
        yield network, described, _static_size(network.image_shape, what)
    finally:
        network.close()


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def decode_images(paths: Sequence[str], size: Tuple[int, int]) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """(uint8 [N, H, W, 3] resized as `data prepare --images` does, each file's own (height, width))."""
    from mpltool.data.folders import Decoder

    decoder = Decoder(tuple(size))
    pixels, sizes = [], []
    try:
        for path in paths:
            local = str(Path(path).expanduser())
            pixels.append(decoder(local))  # exit 3 naming the file: unreadable, truncated, not an image
            data = Path(local).read_bytes()
            shape = decoder.session.run(decoder.shape, feed_dict={decoder.data: data})
            sizes.append((int(shape[0]), int(shape[1])))
    finally:
        decoder.close()
    return np.stack(pixels), sizes


def predict(project_dir, images: Sequence, model=None, target: Optional[str] = None,
            top_k: int = 5) -> Dict[str, Any]:
    """The top-k classes and probabilities of each image file; `model` as `predict --model` takes it."""
    from mpltool.eval.metrics import batched_logits

    project = Project(project_dir)
    top_k = _top_k(top_k)
    paths = _check_files(images)
    with open_model(project, model, target) as (network, described, size):
        pixels, sizes = decode_images(paths, size)
        logits = batched_logits(network.predict, pixels.astype(np.float32), BATCH)
    if not np.isfinite(logits).all():
        bad = [paths[i] for i in np.flatnonzero(~np.isfinite(logits).all(axis=1))]
        raise NonFiniteError("the model gives non-finite logits for {}".format(", ".join(bad[:3])))
    probabilities = softmax(logits)
    count = probabilities.shape[1]
    names, origin = class_names(project, count)
    shown = min(top_k, count)
    predictions = []
    for path, (height, width), row in zip(paths, sizes, probabilities):
        order = np.argsort(-row, kind="stable")[:shown]
        predictions.append({"image": path, "height": height, "width": width,
                            "top": [{"class": int(k), "name": names[k], "probability": float(row[k])}
                                    for k in order]})
    return {"project": str(project.dir), "model": described, "input_size": list(size), "classes": count,
            "class_names": origin, "top_k": shown, "predictions": predictions}
