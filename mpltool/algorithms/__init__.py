"""Training algorithms, found by name: `recipe.algorithm` picks one (timm's registry habit).

An algorithm is everything that differs between one way of training and another: its own recipe keys
(with their ranges and cross-key checks) and the shared ones it reads, the input streams it needs, the networks it builds (variable scopes), which of them are
evaluated and exportable and which one `eval`/`freeze` take by default, the metrics of its step (the
CSV columns, stable per algorithm), and the step itself: one train op plus those metrics. The loop,
checkpoints, periodic eval, logs, resume and signals (train/trainer.py) are written once for all, and
eval/freeze/convert read the networks from the train record, never from an algorithm's name.

Adding one: a module here with a class decorated by `@register_algorithm`, an entry in `_REGISTRY`, and
recipe files. Nothing in recipes/, train/, eval/, freeze/ or convert/ changes (docs/architecture.md).
"""

import abc
import collections
import difflib
from typing import Any, Dict, Sequence

from mpltool.errors import UsageError
from mpltool.registry import Registry

# name -> module that registers it (imported on first use, so `recipes` stays light).
_REGISTRY = Registry(collections.OrderedDict([
    ("mpl", "mpltool.algorithms.mpl"),
    ("supervised", "mpltool.algorithms.supervised"),
    ("uda", "mpltool.algorithms.uda"),
    ("mixmatch", "mpltool.algorithms.mixmatch"),
    ("masf", "mpltool.algorithms.masf"),
    ("byol", "mpltool.algorithms.byol"),
]))
DEFAULT_ALGORITHM = "mpl"  # what a recipe without `algorithm` trains (the product's reference system)

Step = collections.namedtuple("Step", [
    "train_op",   # the whole step, one session.run
    "metrics",    # OrderedDict name -> float32 scalar, keys exactly Algorithm.metric_names
    "init_ops",   # run once after variable initialisation on a fresh start (e.g. copy a network to its EMA)
    "init_feed",  # feed_dict of init_ops (e.g. pretrained weights through placeholders), or None
    "phases",     # None, or Phases run one after another (train_op and metrics are then the first's)
])
Step.__new__.__defaults__ = (None, None)

# A phase of a multi-phase algorithm (BYOL: pre-training, then linear evaluation), run while
# global_step < `until` (None: to the end). Its metrics are a subset of Algorithm.metric_names (the CSV
# leaves the others empty); `evaluate`: whether the periodic evaluation runs in it. A checkpoint is saved
# as a phase ends, so a run resumes in either phase.
Phase = collections.namedtuple("Phase", ["name", "until", "train_op", "metrics", "evaluate"])


def phases_of(step: Step):
    """The phases of a step: its own, or the one phase of a single-phase algorithm."""
    return tuple(step.phases) if step.phases else (Phase("train", None, step.train_op, step.metrics, True),)

class Algorithm(abc.ABC):
    """The declaration of one algorithm; subclasses fill in the class attributes, `streams` and `build_step`
    (registering a class that lacks either fails at import, naming it)."""

    name = ""
    description = ""
    fields = ()            # type: Sequence[Any]  its own recipe keys: mpltool.recipes.schema.Field objects
    reads = ()             # type: Sequence[str]  the optional shared keys it reads (recipes/schema.py)
    aliases = {}           # type: Dict[str, str]  earlier names of its own keys -> the keys
    reference_recipe = ""  # the recipe that reproduces its reference run
    demo_recipe = ""       # its short run on the embedded demo data
    networks = ()          # type: Tuple[str, ...]  variable scopes the step builds
    eval_targets = ()      # type: Tuple[str, ...]  networks evaluated during training and exportable
    default_target = ""    # the network eval and freeze take when none is named
    metric_names = ()      # type: Tuple[str, ...]  the step's metrics, in CSV column order
    progress_metrics = ()  # type: Tuple[str, ...]  the two or three shown on a progress line

    @abc.abstractmethod
    def streams(self, recipe) -> Sequence[Any]:
        """The input streams one step reads: mpltool.data.pipeline.Stream declarations, each with its view
        (mpltool/data/views.py has the common ones; an algorithm may declare its own)."""

    @abc.abstractmethod
    def build_step(self, model, recipe, batch, global_step, optimizer_wrapper=None, replicas=None) -> Step:
        """`batch`: a dict from the batch keys its streams declared (view names, label keys) to tensors
        (a tuple of tensors for a view of several images, or for a per-domain stream).
        `optimizer_wrapper` wraps every optimizer (NPU loss scale, the data-parallel all-reduce);
        `replicas` (mpltool.parallel) all-reduces what the step needs identical on every replica."""

    def forward_equivalents(self, recipe) -> Dict[str, int]:
        """Phase name -> images' worth of forward passes one step costs, counting a forward+backward
        pass as 3 (backward ≈ 2 forwards: input and weight gradients). benchmarks/train_step.py divides
        it into the plain fwd+bwd step's cost to get the ideal step time this step is measured against.
        Empty: not counted."""
        return {}

    def check_recipe(self, recipe) -> Sequence[str]:
        """What is wrong across this algorithm's keys (each key's range is its Field's): one line each."""
        return []

    def warnings(self, recipe) -> Sequence[str]:
        """What `train` should warn about before this recipe runs (nothing by default)."""
        return []

    def divergence_hint(self, recipe) -> str:
        """What to do when training diverged (the hint of exit 9)."""
        return ("the last finite checkpoint is kept; lower the learning rate (--set lr=...) and start over with "
                "`mpltool train --force`")

    def describe(self) -> Dict[str, Any]:
        """What the train record keeps, so later stages need no knowledge of the algorithm."""
        return {"name": self.name, "networks": list(self.networks), "eval_targets": list(self.eval_targets),
                "default_target": self.default_target}


class SingleNetwork(Algorithm):
    """An algorithm that trains one network (scope `model`) and evaluates it and its EMA (`ema`)."""

    networks = ("model", "ema")
    eval_targets = ("model", "ema")
    default_target = "ema"


register_algorithm = _REGISTRY.register


def algorithm_names() -> Sequence[str]:
    return _REGISTRY.names()


def get_algorithm(name: str) -> Algorithm:
    found = _REGISTRY.find(name)
    if found is None:
        close = difflib.get_close_matches(str(name), algorithm_names(), n=1)
        raise UsageError("unknown algorithm {!r}".format(name),
                         hint="did you mean {}?".format(close[0]) if close else "available: {}".format(
                             ", ".join(algorithm_names())))
    return found
