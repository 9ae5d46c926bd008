"""Labelled / unlabelled / validation splits of the training records (docs/mixmatch.md §1).

Three methods, one result (`Split`):
- first: the first N records are labelled (the MPL reference's `take(N)`); every record is unlabelled too.
- balanced: N/C records of each class drawn with a seed; every record is unlabelled too.
- round-robin: google-research/mixmatch `scripts/create_split.py`, the split named `cifar10.SEED@N-VALID`.
  The labelled set and the unlabelled stream's order both follow the class frequencies; the labelled
  records are not unlabelled; the first VALID records of the unlabelled stream are the validation set
  (the reference's `.skip(valid)` / `.take(valid)`).
"""

import collections
import re

import numpy as np

from mpltool.errors import UsageError

METHODS = ("first", "balanced", "round-robin")

Split = collections.namedtuple("Split", [
    "labelled",    # int64 indices of the labelled records, ascending
    "unlabelled",  # int64 indices of the unlabelled stream in its order (first, balanced: every record)
    "valid",       # int64 indices of the validation records (empty unless round-robin with num_valid)
])

_NAME = re.compile(r"^(?P<dataset>[a-z0-9_]+)\.(?P<seed>\d+)@(?P<labelled>\d+)(?:-(?P<valid>\d+))?$")


def parse_split_name(name):
    """`cifar10.3@250-5000` -> {"seed": 3, "num_labelled": 250, "num_valid": 5000} (no `-VALID`: 0)."""
    match = _NAME.match(str(name).strip())
    if not match:
        raise UsageError("split name {!r} is not DATASET.SEED@LABELLED-VALID (e.g. cifar10.3@250-5000)".format(name))
    return {"seed": int(match.group("seed")), "num_labelled": int(match.group("labelled")),
            "num_valid": int(match.group("valid") or 0)}


def split_name(num_labelled, num_valid, seed, dataset="cifar10"):
    return "{}.{}@{}-{}".format(dataset, seed, num_labelled, num_valid)


def _next_class(stats, taken):
    """argmax(freq_c / max freq − n_c / max(max n, 1)): the class furthest behind its share so far."""
    return int(np.argmax(stats - taken / max(taken.max(), 1)))


def round_robin(labels, num_labelled, num_valid=0, seed=0, num_classes=None):
    """The labelled records, the unlabelled stream order and the validation records of create_split.py.

    Every class present must be numbered 0..C−1 (the reference asserts it). Seed 0 keeps each class's
    records in file order; any other seed shuffles each class with np.random.seed(seed) + np.random.shuffle,
    the very calls the reference makes, so a seed gives the reference's split of the same records.
    """
    labels = np.asarray(labels, dtype=np.int64)
    count = int(labels.shape[0])
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    by_class = [np.flatnonzero(labels == c).astype(np.int64) for c in range(num_classes)]
    if any(members.size == 0 for members in by_class):
        missing = [c for c, members in enumerate(by_class) if members.size == 0]
        raise UsageError("a round-robin split needs every class 0..{} in the training records; class {} has "
                         "none".format(num_classes - 1, missing[0]))
    if not 1 <= num_labelled < count:
        raise UsageError("num_labelled is {} but a round-robin split needs 1 to {} (fewer than the {} training "
                         "records)".format(num_labelled, count - 1, count))
    if not 0 <= num_valid <= count - num_labelled:
        raise UsageError("num_valid is {} but only {} records remain after the {} labelled".format(
            num_valid, count - num_labelled, num_labelled))
    stats = np.array([members.size for members in by_class], np.float64)
    stats /= stats.max()
    if seed:  # RandomState(seed).shuffle draws what np.random.seed(seed); np.random.shuffle draw, without
        rng = np.random.RandomState(seed)  # touching numpy's global state
        for members in by_class:
            rng.shuffle(members)
    taken = np.zeros(num_classes, np.int64)
    labelled = []
    for _ in range(num_labelled):
        c = _next_class(stats, taken)
        if taken[c] >= by_class[c].size:
            raise UsageError("class {} has only {} training records, too few for a round-robin split of {} "
                             "labelled".format(c, by_class[c].size, num_labelled))
        labelled.append(by_class[c][taken[c]])
        taken[c] += 1
    chosen = set(int(i) for i in labelled)
    # The unlabelled stream: records arrive in file order; each waits in its class queue and is emitted
    # whenever its class is the one furthest behind; the queues' remainders follow, class by class.
    taken = np.zeros(num_classes, np.int64)
    queues = [collections.deque() for _ in range(num_classes)]
    unlabelled = []
    for position in range(count):
        if position in chosen:
            continue
        queues[labels[position]].append(position)
        while True:
            c = _next_class(stats, taken)
            if not queues[c]:
                break
            unlabelled.append(queues[c].popleft())
            taken[c] += 1
    for queue in queues:
        unlabelled.extend(queue)
    unlabelled = np.array(unlabelled, np.int64)
    return Split(np.array(sorted(chosen), np.int64), unlabelled[num_valid:], unlabelled[:num_valid])


def make(labels, method, num_labelled, num_valid=0, seed=0, num_classes=10):
    """The split of `method`; validation records exist only for round-robin."""
    from mpltool.data.cifar import make_split

    if method not in METHODS:
        raise UsageError("unknown split method {!r} (use {})".format(method, ", ".join(METHODS)))
    if method == "round-robin":
        return round_robin(labels, num_labelled, num_valid, seed, num_classes)
    if num_valid:
        raise UsageError("num_valid={} needs split round-robin (validation comes from its unlabelled "
                         "stream)".format(num_valid))
    return Split(make_split(labels, num_labelled, method=method, seed=seed, num_classes=num_classes),
                 np.arange(len(labels), dtype=np.int64), np.zeros((0,), np.int64))


def resolve(recipe, num_labelled=None, split=None, seed=None, num_valid=None):
    """The split settings of `data prepare`: the recipe's, overridden by the options given. `split` may be a
    method or a reference name (`cifar10.3@250-5000` = round-robin, seed 3, 250 labelled, 5000 valid); an
    option that contradicts the name is refused."""
    settings = {"split": recipe.split, "num_labelled": recipe.num_labelled, "seed": recipe.split_seed,
                "num_valid": recipe.num_valid}
    given = {"num_labelled": num_labelled, "seed": seed, "num_valid": num_valid}
    if split is not None and split not in METHODS:
        if "@" not in split:
            raise UsageError("--split {!r}: use {} or a name such as cifar10.3@250-5000".format(
                split, ", ".join(METHODS)))
        named = parse_split_name(split)
        if not split.startswith("cifar10."):
            raise UsageError("--split {}: the CIFAR-format data is cifar10 (e.g. cifar10.3@250-5000)".format(split))
        for key, value in named.items():
            if given[key] is not None and given[key] != value:
                raise UsageError("--split {} sets {} to {} but the option says {}".format(split, key, value, given[key]),
                                 hint="give the name or the separate options, not both")
        settings.update(named, split="round-robin")
    elif split is not None:
        settings["split"] = split
        if split != "round-robin" and num_valid is None:
            settings["num_valid"] = 0
    settings.update({k: v for k, v in given.items() if v is not None})
    return settings
