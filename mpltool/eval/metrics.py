"""Top-1, top-5 and loss over a test set, every image counted exactly once.

The Ascend port divided by 10,112 because it padded the last batch from a repeating stream
(docs/mpl-reference.md §4); here batches are plain slices, the last one simply shorter. Scoring is numpy on
the host so the same code serves the eval stage, the freeze parity check and the training loop's
periodic evaluation of every evaluated network: anything that maps an image batch to logits can be scored.
"""

import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from mpltool.errors import NonFiniteError
from mpltool.models.inference import batched_logits  # noqa: F401  (eval scores through it)

TOP_K = 5
# How some references report a run (docs/mixmatch.md: scripts/extract_accuracy.py): the median test accuracy
# of the last N evaluations. Training records them; eval shows them.
MEDIAN_WINDOWS = (1, 10, 20, 50)


def median_key(target: str, window: int) -> str:
    """The train record's metric holding `target`'s median test top-1 of its last `window` evaluations."""
    return "{}_top1_median{}".format(target, window)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def metrics_from_logits(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> Dict[str, Any]:
    """top1/top5 (fractions of all images), loss = mean CE against smoothed one-hot targets, nll = plain CE.

    Smoothing follows tf.losses.softmax_cross_entropy: targets (1 - s) * onehot + s / num_classes.
    top-k counts an image when fewer than k classes score strictly higher than its label (tf.nn.in_top_k).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels, np.int64)
    count, num_classes = logits.shape
    bad_rows = int(np.count_nonzero(~np.isfinite(logits).all(axis=1)))
    if bad_rows:
        # NaN compares false with everything, so argmax/top-k would score it as right (top-5 = 1.000).
        raise NonFiniteError("the model gives NaN or inf logits for {} of {} images".format(bad_rows, count),
                             hint="its weights are not finite (a diverged training run?); evaluate an earlier "
                                  "checkpoint with --model")
    if labels.shape != (count,):
        raise ValueError("{} labels for {} rows of logits".format(labels.shape, count))
    log_probs = log_softmax(logits)
    nll = -log_probs[np.arange(count), labels]
    smoothed = (1.0 - label_smoothing) * nll - (label_smoothing / num_classes) * log_probs.sum(axis=1)
    label_logit = logits[np.arange(count), labels]
    rank = (logits > label_logit[:, None]).sum(axis=1)
    correct_top1 = int((logits.argmax(axis=1) == labels).sum())
    correct_top5 = int((rank < min(TOP_K, num_classes)).sum())
    return {
        "images": int(count),
        "top1": correct_top1 / count,
        "top5": correct_top5 / count,
        "correct_top1": correct_top1,
        "correct_top5": correct_top5,
        "loss": float(smoothed.mean()),
        "nll": float(nll.mean()),
        "label_smoothing": float(label_smoothing),
    }


def evaluate_logits_fn(predict_batch: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray,
                       batch_size: int, label_smoothing: float = 0.0,
                       progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Metrics of any image-batch -> logits callable over all images, plus its throughput."""
    started = time.perf_counter()
    logits = batched_logits(predict_batch, images, batch_size, progress)
    seconds = time.perf_counter() - started
    result = metrics_from_logits(logits, labels, label_smoothing)
    result["seconds"] = seconds
    result["images_per_second"] = result["images"] / seconds if seconds > 0 else None
    return result
