"""The recipe schema: the Field type, its ranges, and the keys every algorithm shares.

A recipe's keys are these shared fields plus the chosen algorithm's own (`Algorithm.fields`, declared in
its module with their ranges and `why`). Shared fields marked `optional` (the optimiser's, the EMA's, the
augmentation's, the unlabelled ratio, pretrained weights) mean something only to the algorithms whose
`Algorithm.reads` lists them; the rest (data, model, run length, checkpoints, devices) are read by the
trainer for every algorithm. `ALIASES` maps the seed's flag names and mpltool's earlier key names to the
shared keys; an algorithm's own earlier names are its `Algorithm.aliases`.
"""

import math
from typing import Any, Callable, Optional, Sequence

from mpltool.algorithms import DEFAULT_ALGORITHM
from mpltool.errors import UsageError

INT32_MAX = 2 ** 31 - 1  # TF keeps steps, batch sizes and counts in int32 tensors
SEED_MAX = 2 ** 32 - 1  # numpy's RandomState takes seeds in [0, 2**32 - 1]
MAX_IMAGES_PER_STEP = 65536  # batch_size * (1 + unlabelled_ratio): beyond this no host holds a step's activations


class Field:
    """One recipe key: type, default, meaning and its checked range.

    `low`/`high` bound int and float values (inclusive unless `low_open`/`high_open`); every int field
    has both, so every value fits an int32. Floats must also be finite. `why` is added to a range error
    when the bound alone would not say what goes wrong. `check` is for what a range cannot express.
    Shared keys are declared here; an algorithm declares its own in its module (`Algorithm.fields`).
    """

    def __init__(self, name, kind, default, doc, check=None, choices=None, low=None, high=None,
                 low_open=False, high_open=False, why=None, optional=False):
        self.name = name
        self.kind = kind  # int | float | bool | str
        self.default = default
        self.doc = doc
        self.check = check  # type: Optional[Callable[[Any], Optional[str]]]
        self.choices = choices  # type: Optional[Sequence[str]]
        self.low = low
        self.high = high
        self.low_open = low_open
        self.high_open = high_open
        self.why = why
        # A shared key only the algorithms that list it in `Algorithm.reads` take (it means nothing to the
        # others: giving it to one of them is an error naming who reads it).
        self.optional = optional

    def range_problem(self, value) -> Optional[str]:
        """None when `value` (already of the field's type) is in range, else what it must be."""
        if self.kind not in ("int", "float"):
            return None
        if self.kind == "float" and not math.isfinite(value):
            return "must be a finite number"
        violated = None
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            violated = "must be {} {}".format(">" if self.low_open else ">=", _num(self.low))
        elif self.high is not None and (value >= self.high if self.high_open else value > self.high):
            violated = "must be {} {}".format("<" if self.high_open else "<=", _num(self.high))
        if violated is None:
            return None
        if self.low is not None and self.high is not None:
            excluded = [_num(b) for b, is_open in ((self.low, self.low_open), (self.high, self.high_open)) if is_open]
            violated += " (between {} and {}{})".format(
                _num(self.low), _num(self.high), ", {} excluded".format(" and ".join(excluded)) if excluded else "")
        return violated + (": " + self.why if self.why else "")


def _num(bound) -> str:
    """A bound as a person writes it: 0 not 0.0, 16777216 not 16777216.0, 1e-06 as is."""
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


def counts(low=1, high=INT32_MAX):
    """Range keywords of an int count (steps, sizes): at least `low`, at most an int32."""
    return {"low": low, "high": high}


UNIT = {"low": 0.0, "high": 1.0}  # [0, 1]
UNIT_OPEN = {"low": 0.0, "high": 1.0, "high_open": True}  # [0, 1)
LEARNING_RATE = {"low": 0.0, "high": 10.0}
NON_NEGATIVE = {"low": 0.0}  # finite and >= 0 (finiteness is checked for every float)
SEED = {"low": 0, "high": SEED_MAX}


def _model_name(v):
    from mpltool.models import parse_model_name

    size = parse_model_name(v)
    if size.get("depth", 0) > 1000 or size.get("width", 0) > 100:
        return "is too large: depth must be <= 1000 and width <= 100"
    return None


def _known_algorithm(v):
    from mpltool.algorithms import get_algorithm

    try:
        get_algorithm(v)
    except UsageError as exc:
        return "is not a known algorithm ({})".format(exc.hint)
    return None


def _loss_scale(v):
    if 0.0 < v < 1.0:
        return "must be 0 (dynamic) or >= 1 (fixed)"
    return None


def _domain_name(v):
    if v and (v.strip() != v or any(c in v for c in "/\\\n\r\0")):
        return "must be a domain name (a folder name, no slashes)"
    return None


def _optional_file_name(v):
    return _file_name(v) if v else None


def _file_name(v):
    if not v.strip() or any(c in v for c in "\n\r\0"):
        return "must be a file name (one line, not empty)"
    return None


SHARED_FIELDS = [
    Field("algorithm", "str", DEFAULT_ALGORITHM, "training algorithm, by its registered name (`mpltool "
          "recipes` lists each recipe's)", _known_algorithm),
    Field("model", "str", "wrn-28-2", "network: wrn-DEPTH-WIDTH (wrn-28-2; wrn-10-1 for quick runs), "
          "mixmatch-resnet-FILTERS-SCALES-REPEAT (mixmatch-resnet-32-3-4), caffe-alexnet[-SIZE-FC], "
          "resnet18-cifar[-WIDTH], resnet50[-SIZE]", _model_name),
    Field("num_classes", "int", 10, "classes in the data set", low=2, high=100000),
    Field("num_labelled", "int", 4000, "labelled training records (CIFAR-10-4K: 4000)", **counts()),
    Field("split", "str", "first", "labelled split: the first N records, class-balanced, or round-robin "
          "(create_split.py's: cifar10.SEED@N-VALID; docs/mixmatch.md §1)", choices=("first", "balanced", "round-robin")),
    Field("split_seed", "int", 0, "seed of the balanced or round-robin split (round-robin 0: no shuffle)", **SEED),
    Field("num_valid", "int", 0, "validation records from the head of the unlabelled stream (round-robin only)",
          **counts(low=0)),
    Field("target_domain", "str", "", "image-folder data: the domain held out as the test set (the others are "
          "trained on); empty for CIFAR data", _domain_name),
    Field("domain_valid_fraction", "float", 0.0, "image-folder data: share of each source domain held out as "
          "validation records", low=0.0, high=0.5),
    Field("select_best_on", "str", "test", "which top-1 picks the best checkpoint (what eval and freeze take): "
          "test (the references) or valid (held-out training records; never looks at the test set)",
          choices=("test", "valid")),
    Field("batch_size", "int", 64, "labelled images per step and replica (B)", **counts(high=MAX_IMAGES_PER_STEP)),
    Field("unlabelled_ratio", "int", 7, "unlabelled images per labelled one (U = unlabelled_ratio * B)",
          **counts(high=MAX_IMAGES_PER_STEP - 1), optional=True),
    Field("eval_batch_size", "int", 64, "batch size of evaluation (every image counted once)",
          **counts(high=MAX_IMAGES_PER_STEP)),
    Field("num_train_steps", "int", 300000, "total training steps (N)", **counts()),
    Field("lr", "float", 0.05, "base learning rate of the trained network", **LEARNING_RATE, optional=True),
    Field("lr_warmup_steps", "int", 5000, "linear warmup steps of lr", **counts(low=0), optional=True),
    Field("lr_scale_by_batch", "bool", False, "multiply base rates by B/256 (reference TPU code; the Ascend run did not)", optional=True),
    Field("lr_decay", "str", "cosine", "decay after warmup", choices=("cosine", "constant"), optional=True),
    Field("momentum", "float", 0.9, "momentum of the optimizers", **UNIT_OPEN,
          why="at 1 the velocity never decays", optional=True),
    Field("nesterov", "bool", True, "Nesterov momentum (the references'); false: plain momentum, as PyTorch's SGD "
          "in seed 003", optional=True),
    Field("weight_decay", "float", 5e-4, "L2 added to the gradients of non-BN variables", **NON_NEGATIVE, optional=True),
    Field("grad_bound", "float", 1e9, "global-norm gradient clip (1e9: none in practice)", low=0.0, low_open=True,
          why="a clip norm of 0 zeroes every gradient (NaN when the norm is 0)", optional=True),
    Field("label_smoothing", "float", 0.15, "smoothing of the labelled cross-entropy (and of the evaluation loss)", **UNIT_OPEN,
          why="at 1 the targets no longer depend on the labels"),
    Field("ema_decay", "float", 0.995, "EMA decay of the trained network (the algorithm says whether (t+1)/(t+10) caps it early)",
          **UNIT, optional=True),
    Field("pretrained", "str", "", "weights to start from: a Caffe-AlexNet .npy (bvlc_alexnet.npy; its fc8 is "
          "skipped); empty: from scratch", _optional_file_name, optional=True),
    Field("bn_momentum", "float", 0.0, "batch-norm momentum of the moving statistics; 0: the network's own "
          "(0.99 or 0.999 by network). Short runs need less: at 0.999 they still hold 45% of their "
          "initial values after 800 steps", **UNIT_OPEN),
    Field("dropout_rate", "float", 0.2, "dropout before the classifier", **UNIT_OPEN,
          why="at 1 it drops every activation (TF refuses it)"),
    Field("augment", "str", "randaugment", "strong-view policy: randaugment (the reference's), autoaugment (the "
          "policy autoaugment_policy names), none (flip/pad/crop only)",
          choices=("randaugment", "autoaugment", "none"), optional=True),
    Field("autoaugment_policy", "str", "cifar10", "AutoAugment's policy: cifar10 (the paper's 25 CIFAR-10 "
          "sub-policies, as seed 003's 4uiiurz1 code), cifar10-tfm-good (tensorflow/models research/autoaugment "
          "good_policies(): 95), imagenet (tensorflow/models official/vision v0, its own level mapping)",
          choices=("cifar10", "cifar10-tfm-good", "imagenet"), optional=True),
    Field("autoaugment_pair", "str", "recrop", "AutoAugment as an unlabelled strong view: recrop (the "
          "policy's view of the already cropped ori image, cropped again: mpltool before 2026-12) or shared-crop "
          "(policy and cutout on ori: one crop, as the labelled view)", choices=("recrop", "shared-crop"),
          optional=True),
    Field("augment_fill", "str", "grey", "what AutoAugment's padding, cutout and geometric ops fill with: grey "
          "(128) or cifar-mean (125, 123, 114: tensorflow/models' zero of normalised images)",
          choices=("grey", "cifar-mean"), optional=True),
    Field("train_crop", "str", "pad-crop", "training crop: pad-crop (flip, pad by size/8, random crop: CIFAR's) or "
          "random-resized (a random share of each image at its own size, resized to the input, flipped: "
          "ImageNet's)", choices=("pad-crop", "random-resized"), optional=True),
    Field("crop_min_area", "float", 0.08, "random-resized crop: least share of the image's area a crop covers",
          low=0.0, high=1.0, low_open=True, optional=True),
    Field("crop_max_aspect", "float", 4.0 / 3.0, "random-resized crop: aspect ratios range over [1/r, r]", low=1.0,
          high=100.0, optional=True),
    Field("eval_crop", "float", 0.0, "evaluation framing of image files and shards: 0 resizes the whole image to the "
          "input; F in (0, 1] takes the centre square of F x the shorter side (0.875: resize 256, centre 224)",
          **UNIT),
    Field("augment_magnitude", "int", 16, "RandAugment magnitude (16 = level 1.6)", low=0, high=30, optional=True),
    Field("augment_layers", "int", 2, "RandAugment ops per image", low=0, high=30, optional=True),
    Field("augment_overflow", "str", "clip", "colour ops (Color, Contrast, Brightness, Sharpness) past 255: wrap "
          "(the seed and reference: TF 1.15's unsaturated uint8 cast, 100 at factor 2.98 -> 42) or clip (-> 255)",
          choices=("wrap", "clip"), optional=True),
    Field("replicas", "int", 1, "data-parallel replicas (set by `train --nproc N` or `--devices`, not by --set): "
          "the global batch is batch_size * replicas", **counts(high=4096)),
    Field("lr_scaling", "str", "none", "learning rates under data parallelism: none (as the recipe says) or linear "
          "(times replicas, for the larger global batch)", choices=("none", "linear")),
    Field("save_every", "int", 100, "steps between checkpoints", **counts()),
    Field("eval_every", "int", 100, "steps between evaluations of the evaluated networks", **counts()),
    Field("log_every", "int", 50, "steps between log lines", **counts()),
    Field("keep_checkpoints", "int", 6, "latest checkpoints kept", **counts()),
    Field("shuffle_buffer", "int", 1024, "shuffle buffer of the input streams (records)", **counts()),
    Field("shuffle_buffer_cap", "str", "none", "records: a stream's buffer is min(its records, shuffle_buffer), as "
          "google-research's memoize (250 at 250 labels); none: shuffle_buffer as given", choices=("none", "records")),
    Field("seed", "int", 0, "graph-level random seed", **SEED),
    Field("precision_mode", "str", "allow_mix_precision", "NPU precision mode (NpuOptimizer)",
          choices=("allow_mix_precision", "force_fp32", "force_fp16", "must_keep_origin_dtype",
                   "allow_fp32_to_fp16")),
    Field("loss_scale", "float", 10.0, "NPU loss scale: >= 1 fixed (losses scaled, gradients unscaled), 0 dynamic "
          "(the seed's exponential manager: 2^32, halved after 2 overflows, doubled after 1000 finite steps)",
          _loss_scale, low=0.0, high=float(2 ** 24)),
    Field("loss_scale_overflow_check", "bool", False, "skip the update of a step whose gradients overflow"),
    Field("modify_mixlist", "str", "ops_info.json", "NPU mixed-precision list file (recipe dir relative)", _file_name),
    Field("fusion_switch_file", "str", "fusion_switch.cfg", "NPU fusion switch file (recipe dir relative)",
          _file_name),
    Field("npu_dynamic_input", "bool", False, "NPU: allow inputs whose shape changes between runs (dynamic_input)"),
    Field("npu_dynamic_graph_execute_mode", "str", "off", "NPU: dynamic_graph_execute_mode with dynamic inputs "
          "(lazy_recompile: compile each new shape once)", choices=("off", "lazy_recompile", "dynamic_execute")),
]

# The seed's flag names (the Ascend port's npu_train.sh, flags inherited from google-research's flag_utils.py)
# and mpltool's own earlier key names that mean exactly a shared key: accepted by `--set`, in recipe files and
# in recorded params, and always stored under the key, so manifests and `recipes show` hold keys only
# (docs/mpl-reference.md §0). Seed flags spelled as the key need no alias; those with no key (optim_type,
# image_size, batch_norm_batch_size, ...) stay unknown keys.
ALIASES = {
    "model_type": "model",
    "train_batch_size": "batch_size",  # per device; the seed ran on one
    "teacher_lr": "lr",  # mpltool before 2026-12: every single-network algorithm trained at "teacher_lr"
    "teacher_lr_warmup_steps": "lr_warmup_steps",
    "mpl_teacher_lr": "lr",
    "mpl_teacher_lr_warmup_steps": "lr_warmup_steps",
    "uda_data": "unlabelled_ratio",  # the seed's name, and mpltool's before 2026-12
    "lr_decay_type": "lr_decay",  # google-research's meaning; the port's schedule is cosine whatever it says
    "dense_dropout_rate": "dropout_rate",
}
