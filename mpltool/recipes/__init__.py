"""Recipes: one flat, typed configuration that every stage receives.

Precedence: schema defaults < recipe file < `--set key=value`. Every key is declared once in
`FIELDS` with its type and its range, so a typo is an error that names the closest key, a value of the
wrong type or out of range (inf and nan included) is refused wherever it comes from -- recipe file,
`--set`, or the params a manifest recorded -- and the resolved config (and its hash) is what the
manifest records. The seed's flag names for the same settings (`mpl_teacher_lr`, `train_batch_size`, ...)
are accepted as `ALIASES` wherever a key is and resolved to the key at once.
"""

import difflib
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml

from mpltool.algorithms import fields_of_other_algorithms, get_algorithm
from mpltool.errors import InvalidInputError, UsageError

RECIPE_DIR = Path(__file__).resolve().parent


INT32_MAX = 2 ** 31 - 1  # TF keeps steps, batch sizes and counts in int32 tensors
SEED_MAX = 2 ** 32 - 1  # numpy's RandomState takes seeds in [0, 2**32 - 1]
MAX_IMAGES_PER_STEP = 65536  # batch_size * (1 + uda_data): beyond this no host holds a step's activations


class Field:
    """One recipe key: type, default, meaning and its checked range.

    `low`/`high` bound int and float values (inclusive unless `low_open`/`high_open`); every int field
    has both, so every value fits an int32. Floats must also be finite. `why` is added to a range error
    when the bound alone would not say what goes wrong. `check` is for what a range cannot express.
    """

    def __init__(self, name, kind, default, doc, check=None, choices=None, low=None, high=None,
                 low_open=False, high_open=False, why=None):
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


def _counts(low=1, high=INT32_MAX):
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


FIELDS = [
    Field("algorithm", "str", "mpl", "training algorithm: mpl (Meta Pseudo Labels), supervised, uda, mixmatch, "
          "masf, byol",
          _known_algorithm),
    Field("model", "str", "wrn-28-2", "network: wrn-DEPTH-WIDTH (wrn-28-2; wrn-10-1 for quick runs), "
          "mixmatch-resnet-FILTERS-SCALES-REPEAT (mixmatch-resnet-32-3-4), caffe-alexnet[-SIZE-FC], "
          "resnet18-cifar[-WIDTH]", _model_name),
    Field("num_classes", "int", 10, "classes in the data set", low=2, high=100000),
    Field("num_labelled", "int", 4000, "labelled training records (CIFAR-10-4K: 4000)", **_counts()),
    Field("split", "str", "first", "labelled split: first N records (MPL reference), class-balanced, or "
          "round-robin (MixMatch's create_split.py: cifar10.SEED@N-VALID)", choices=("first", "balanced", "round-robin")),
    Field("split_seed", "int", 0, "seed of the balanced or round-robin split (round-robin 0: no shuffle)", **SEED),
    Field("num_valid", "int", 0, "validation records from the head of the unlabelled stream (round-robin only)",
          **_counts(low=0)),
    Field("target_domain", "str", "", "image-folder data: the domain held out as the test set (the others are "
          "trained on); empty for CIFAR data", _domain_name),
    Field("domain_valid_fraction", "float", 0.0, "image-folder data: share of each source domain held out as "
          "validation records", low=0.0, high=0.5),
    Field("select_best_on", "str", "test", "which top-1 picks the best checkpoint (what eval and freeze take): "
          "test (the references) or valid (held-out training records; never looks at the test set)",
          choices=("test", "valid")),
    Field("batch_size", "int", 64, "labelled images per step and replica (B)", **_counts(high=MAX_IMAGES_PER_STEP)),
    Field("uda_data", "int", 7, "unlabelled images per labelled one (U = uda_data * B)",
          **_counts(high=MAX_IMAGES_PER_STEP - 1)),
    Field("eval_batch_size", "int", 64, "batch size of evaluation (every image counted once)",
          **_counts(high=MAX_IMAGES_PER_STEP)),
    Field("num_train_steps", "int", 300000, "total training steps (N)", **_counts()),
    Field("teacher_lr", "float", 0.05, "teacher base learning rate", **LEARNING_RATE),
    Field("teacher_lr_warmup_steps", "int", 5000, "teacher linear warmup steps", **_counts(low=0)),
    Field("student_lr", "float", 0.05, "student base learning rate", **LEARNING_RATE),
    Field("student_lr_wait_steps", "int", 1000, "steps the student's learning rate stays 0 (W)", **_counts(low=0)),
    Field("student_lr_warmup_steps", "int", 5000, "student linear warmup steps after the wait", **_counts(low=0)),
    Field("lr_scale_by_batch", "bool", False, "multiply base rates by B/256 (reference TPU code; the Ascend run did not)"),
    Field("lr_decay", "str", "cosine", "decay after warmup", choices=("cosine", "constant")),
    Field("momentum", "float", 0.9, "Nesterov momentum of both optimizers", **UNIT_OPEN,
          why="at 1 the velocity never decays"),
    Field("weight_decay", "float", 5e-4, "L2 added to the gradients of non-BN variables", **NON_NEGATIVE),
    Field("grad_bound", "float", 1e9, "global-norm gradient clip (1e9: none in practice)", low=0.0, low_open=True,
          why="a clip norm of 0 zeroes every gradient (NaN when the norm is 0)"),
    Field("label_smoothing", "float", 0.15, "smoothing of labelled CE and the student's targets (MixMatch: of the "
          "evaluation loss only)", **UNIT_OPEN,
          why="at 1 the targets no longer depend on the labels"),
    Field("uda_temp", "float", 0.7, "temperature of the teacher's sharpened distribution", low=0.0, low_open=True),
    Field("uda_threshold", "float", 0.6, "confidence mask threshold of the UDA loss", **UNIT),
    Field("uda_weight", "float", 8.0, "final weight of the UDA loss", **NON_NEGATIVE),
    Field("uda_steps", "int", 5000, "steps over which the UDA weight ramps up linearly", **_counts()),
    Field("ema_decay", "float", 0.995, "EMA decay of the trained network (capped by (t+1)/(t+10) except in MixMatch)",
          **UNIT),
    Field("mixmatch_views", "int", 2, "MixMatch: weak views per unlabelled image whose predictions are averaged (K)",
          low=1, high=16),
    Field("mixmatch_temperature", "float", 0.5, "MixMatch: sharpening temperature of the guessed labels (T)",
          low=0.0, high=10.0, low_open=True),
    Field("mixup_beta", "float", 0.5, "MixMatch: MixUp coefficients λ ~ Beta(α, α) (α)", low=0.0, high=100.0,
          low_open=True),
    Field("mixmatch_weight", "float", 100.0, "MixMatch: final weight of the unlabelled L2 loss (w_match)",
          low=0.0, high=1e6),
    Field("mixmatch_rampup_kimg", "int", 1024, "MixMatch: thousands of labelled images (x1024) over which the "
          "L2 weight ramps up linearly", **_counts(low=0, high=2 ** 20)),
    Field("mixmatch_lr", "float", 0.002, "MixMatch: Adam's constant learning rate", **LEARNING_RATE),
    Field("decoupled_weight_decay", "float", 0.02, "MixMatch: kernels shrink by (1 - wd * mixmatch_lr) after each "
          "step", **NON_NEGATIVE),
    Field("masf_inner_lr", "float", 1e-5, "MASF: step size α of the inner update θ' = θ − α·clip(g)", **LEARNING_RATE),
    Field("masf_outer_lr", "float", 1e-5, "MASF: Adam rate of the task and meta updates", **LEARNING_RATE),
    Field("masf_metric_lr", "float", 1e-5, "MASF: Adam rate of the metric network's own update", **LEARNING_RATE),
    Field("masf_clip_norm", "float", 2.0, "MASF: per-tensor gradient norm clip of the inner and meta updates",
          low=0.0, low_open=True),
    Field("masf_margin", "float", 10.0, "MASF: margin of the local (triplet) loss", **NON_NEGATIVE),
    Field("masf_temperature", "float", 2.0, "MASF: softening temperature of the class-alignment loss",
          low=0.0, high=100.0, low_open=True),
    Field("masf_global_weight", "float", 1.0, "MASF: weight of the global class-alignment loss", **NON_NEGATIVE),
    Field("masf_local_weight", "float", 0.005, "MASF: weight of the local triplet loss", **NON_NEGATIVE),
    Field("pretrained", "str", "", "weights to start from: a Caffe-AlexNet .npy (bvlc_alexnet.npy; its fc8 is "
          "skipped); empty: from scratch", _optional_file_name),
    Field("byol_pretrain_steps", "int", 19400, "BYOL: steps of self-supervised pre-training; the rest of "
          "num_train_steps is the linear evaluation (0: a random encoder's linear evaluation)", **_counts(low=0)),
    Field("byol_lr", "float", 1e-3, "BYOL: Adam's constant rate in pre-training (the reference: 1e-3·B/512)",
          **LEARNING_RATE),
    Field("byol_target_decay", "float", 0.99, "BYOL: target EMA decay τ (cosine: its base τ_0)", **UNIT),
    Field("byol_target_schedule", "str", "constant", "BYOL: τ constant (the reference) or cosine from τ_0 to 1 "
          "over pre-training (the paper)", choices=("constant", "cosine")),
    Field("byol_min_crop", "float", 0.40625, "BYOL: shortest side of a view's random crop, as a fraction of the "
          "image side (the reference: 13/32 = 0.40625)", low=0.0, high=1.0, low_open=True),
    Field("byol_grayscale", "float", 0.2, "BYOL: probability that a pre-training view is made grayscale (the "
          "reference: 0.2; 1 removes colour from every view)", **UNIT),
    Field("byol_hidden_units", "int", 256, "BYOL: hidden width of the projector and predictor", low=1, high=65536),
    Field("byol_projection_units", "int", 128, "BYOL: output width of the projector and predictor", low=1,
          high=65536),
    Field("linear_lr", "float", 5e-2, "BYOL linear evaluation: Adam's rate at its first step (polynomial decay, "
          "power 2)", **LEARNING_RATE),
    Field("linear_lr_end", "float", 5e-4, "BYOL linear evaluation: Adam's rate at its last step", **LEARNING_RATE),
    Field("bn_momentum", "float", 0.0, "batch-norm momentum of the moving statistics; 0: the network's own "
          "(wrn 0.99, mixmatch-resnet 0.999). Short runs need less: at 0.999 they still hold 45% of their "
          "initial values after 800 steps", **UNIT_OPEN),
    Field("dropout_rate", "float", 0.2, "dropout before the classifier", **UNIT_OPEN,
          why="at 1 it drops every activation (TF refuses it)"),
    Field("augment", "str", "randaugment", "strong-view policy: randaugment (the reference's), autoaugment (the "
          "CIFAR-10 policy of tensorflow/models), none (flip/pad/crop only)",
          choices=("randaugment", "autoaugment", "none")),
    Field("augment_magnitude", "int", 16, "RandAugment magnitude (16 = level 1.6)", low=0, high=30),
    Field("augment_layers", "int", 2, "RandAugment ops per image", low=0, high=30),
    Field("augment_overflow", "str", "clip", "colour ops (Color, Contrast, Brightness, Sharpness) past 255: wrap "
          "(the seed and reference: TF 1.15's unsaturated uint8 cast, 100 at factor 2.98 -> 42) or clip (-> 255)",
          choices=("wrap", "clip")),
    Field("mpl_feedback", "str", "reference", "teacher MPL term: reference (the released code: zero gradient) "
          "or paper (hard pseudo labels: the h-term moves the teacher)", choices=("reference", "paper")),
    Field("mpl_baseline_decay", "float", 0.01, "rate of the moving baseline of the h-term", **UNIT),
    Field("student_second_pass_bn_update", "bool", False, "also update the student's BN moving statistics from its "
          "second (labelled-only, after-update) pass, after the EMA: true as the seed (Ascend run), false as "
          "google-research"),
    Field("replicas", "int", 1, "data-parallel replicas (set by `train --nproc N` or `--devices`, not by --set): "
          "the global batch is batch_size * replicas", **_counts(high=4096)),
    Field("lr_scaling", "str", "none", "learning rates under data parallelism: none (as the recipe says) or linear "
          "(times replicas, for the larger global batch)", choices=("none", "linear")),
    Field("save_every", "int", 100, "steps between checkpoints", **_counts()),
    Field("eval_every", "int", 100, "steps between evaluations of teacher, student and EMA", **_counts()),
    Field("log_every", "int", 50, "steps between log lines", **_counts()),
    Field("keep_checkpoints", "int", 6, "latest checkpoints kept", **_counts()),
    Field("shuffle_buffer", "int", 1024, "shuffle buffer of the input streams (records)", **_counts()),
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
FIELD_BY_NAME = {field.name: field for field in FIELDS}

# The seed's flag names (the Ascend port's npu_train.sh, flags inherited from google-research's flag_utils.py)
# that mean exactly a recipe key: accepted by `--set`, in recipe files and in recorded params, and always
# stored under the key, so manifests and `recipes show` hold keys only (docs/mpl-reference.md §0). Seed
# flags spelled as the key (uda_data, ema_decay, ...) need no alias; those with no key (optim_type,
# image_size, batch_norm_batch_size, ...) stay unknown keys.
ALIASES = {
    "model_type": "model",
    "train_batch_size": "batch_size",  # per device; the seed ran on one
    "mpl_teacher_lr": "teacher_lr",
    "mpl_teacher_lr_warmup_steps": "teacher_lr_warmup_steps",
    "mpl_student_lr": "student_lr",
    "mpl_student_lr_wait_steps": "student_lr_wait_steps",
    "mpl_student_lr_warmup_steps": "student_lr_warmup_steps",
    "lr_decay_type": "lr_decay",  # google-research's meaning; the port's schedule is cosine whatever it says
    "dense_dropout_rate": "dropout_rate",
}


class Recipe(dict):
    """The resolved configuration: a dict with attribute access, plus where it came from."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    @property
    def values(self) -> Dict[str, Any]:
        return {field.name: self[field.name] for field in FIELDS}


def available_recipes() -> List[str]:
    return sorted(path.stem for path in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name_or_file) -> Path:
    candidate = Path(str(name_or_file))
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise UsageError("recipe file {} does not exist".format(candidate))
        return candidate
    path = RECIPE_DIR / "{}.yaml".format(name_or_file)
    if not path.is_file():
        names = available_recipes()
        close = difflib.get_close_matches(str(name_or_file), names, n=1)
        hint = "did you mean {}?".format(close[0]) if close else "available: {}".format(", ".join(names))
        raise UsageError("unknown recipe {!r}".format(name_or_file), hint=hint)
    return path


def parse_value(field: Field, raw: Any, source: str, error=UsageError, name: Optional[str] = None) -> Any:
    """A value of the field's type, or a one-line error naming the key (as given: `name`) and the source."""
    shown = field.name if name in (None, field.name) else "{} (alias of {})".format(name, field.name)
    value = raw
    try:
        if field.kind == "bool":
            if isinstance(raw, str):
                lowered = raw.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                value = lowered in ("true", "1", "yes")
            elif not isinstance(raw, bool):
                raise ValueError(raw)
        elif field.kind == "int":
            if isinstance(raw, bool):
                raise ValueError(raw)
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError(raw)
                value = int(raw)
            else:
                value = int(str(raw).replace("_", ""))
        elif field.kind == "float":
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = float(raw)
        else:
            value = str(raw)
    except ValueError:
        raise error("{}: {}={!r} is not a valid {}".format(source, shown, raw, field.kind))
    if field.choices and value not in field.choices:
        raise error("{}: {}={!r} must be one of {}".format(source, shown, value, ", ".join(field.choices)))
    problem = field.range_problem(value)
    if problem:
        raise error("{}: {}={!r} {}".format(source, shown, value, problem))
    if field.check is not None:
        try:
            problem = field.check(value)
        except UsageError as exc:
            problem = exc.message
        if problem:
            raise error("{}: {}={!r} {}".format(source, shown, value, problem))
    return value


def _unknown_key(key: str, source: str, error=UsageError):
    close = difflib.get_close_matches(key, list(FIELD_BY_NAME) + list(ALIASES), n=1, cutoff=0.5)
    hint = "did you mean {}?".format(close[0]) if close else "`mpltool recipes show` lists the keys"
    return error("{}: unknown key {!r}".format(source, key), hint=hint)


def _parse_items(items, source: str, error=UsageError) -> Dict[str, Any]:
    """{key: value} from (name, raw) pairs of one source, a name being a key or one of its ALIASES.

    A later pair overrides an earlier one of the same name; an alias and its key (or two spellings of one
    key) given with different values is an error naming both.
    """
    parsed = {}  # type: Dict[str, Any]
    spellings = {}  # type: Dict[str, Dict[str, Any]]  # key -> {name as given: value}
    for name, raw in items:
        name = str(name)
        key = ALIASES.get(name, name)
        field = FIELD_BY_NAME.get(key)
        if field is None:
            raise _unknown_key(name, source, error=error)
        value = parse_value(field, raw, source, error=error, name=name)
        given = spellings.setdefault(key, {})
        for other, other_value in given.items():
            if other != name and other_value != value:
                raise error("{}: {}={!r} and {}={!r} conflict: both set {}".format(
                    source, other, other_value, name, value, key), hint="give only one of them")
        given[name] = value
        parsed[key] = value
    return parsed


def parse_overrides(pairs: Sequence[str]) -> Dict[str, Any]:
    items = []
    for pair in pairs:
        if "=" not in pair:
            raise UsageError("--set {!r}: expected key=value".format(pair))
        key, raw = pair.split("=", 1)
        items.append((key.strip().lstrip("-"), raw.strip()))
    return _parse_items(items, "--set")


def load_recipe(name_or_file="mpl-wrn28-2", overrides: Sequence[str] = ()) -> Recipe:
    path = recipe_path(name_or_file)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise InvalidInputError("recipe {}: not UTF-8 text".format(path))
    except OSError as exc:
        raise InvalidInputError("cannot read recipe {}: {}".format(path, exc.strerror or exc))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = " line {}".format(mark.line + 1) if mark is not None else ""
        raise InvalidInputError("recipe {}{}: invalid YAML".format(path, where))
    if not isinstance(document, dict):
        raise InvalidInputError("recipe {}: expected a mapping of key: value".format(path))
    values = {field.name: field.default for field in FIELDS}
    description = str(document.pop("description", ""))
    document = _parse_items(document.items(), "recipe {}".format(path), error=InvalidInputError)  # aliases -> keys
    values.update(document)
    applied = parse_overrides(overrides)
    values.update(applied)
    recipe = Recipe(values)
    _check_consistency(recipe)
    _check_algorithm_keys(recipe, list(document) + list(applied), path)
    return _with_meta(recipe, path.stem, str(path), description, applied)


def _check_algorithm_keys(recipe: Recipe, given: Sequence[str], path) -> None:
    """A key that only other algorithms read is a mistake when given explicitly (it would do nothing)."""
    others = fields_of_other_algorithms(recipe["algorithm"])
    unused = sorted(key for key in set(given) if key in others)
    if unused:
        raise UsageError("algorithm {} does not read {} ({} {})".format(
            recipe["algorithm"], ", ".join(unused), ", ".join(sorted(set(others[k] for k in unused))),
            "does" if len(set(others[k] for k in unused)) == 1 else "do"),
            hint="remove {} from recipe {} or the --set options".format("it" if len(unused) == 1 else "them", path))


def _with_meta(recipe: Recipe, name: str, path: str, description: str, applied: Dict[str, Any]) -> Recipe:
    # Stored as attributes, not keys, so `values`/hashing see only the configuration itself.
    object.__setattr__(recipe, "recipe_name", name)
    object.__setattr__(recipe, "recipe_path", path)
    object.__setattr__(recipe, "description", description)
    object.__setattr__(recipe, "overrides", applied)
    return recipe


def _check_consistency(recipe: Recipe, error=UsageError, source: str = "") -> None:
    """Checks across keys (each key's own range is checked when it is parsed).

    Schedule lengths (warmups, the student's wait, uda_steps) may exceed num_train_steps: a short run of
    a long recipe is legitimate and train warns about it.
    """
    prefix = source + ": " if source else ""
    if recipe["split"] == "balanced" and recipe["num_labelled"] % recipe["num_classes"]:
        raise error("{}num_labelled={} is not divisible by num_classes={} (split=balanced)".format(
            prefix, recipe["num_labelled"], recipe["num_classes"]))
    if recipe["num_valid"] and recipe["split"] != "round-robin":
        raise error("{}num_valid={} needs split=round-robin (validation comes from its unlabelled stream)".format(
            prefix, recipe["num_valid"]))
    if recipe["algorithm"] == "byol" and recipe["byol_pretrain_steps"] >= recipe["num_train_steps"]:
        raise error("{}byol_pretrain_steps={} leaves no step of linear evaluation in num_train_steps={}".format(
            prefix, recipe["byol_pretrain_steps"], recipe["num_train_steps"]))
    if recipe["decoupled_weight_decay"] * recipe["mixmatch_lr"] >= 1.0:
        raise error("{}decoupled_weight_decay * mixmatch_lr = {} must be < 1 (kernels shrink by that fraction "
                    "each step)".format(prefix, recipe["decoupled_weight_decay"] * recipe["mixmatch_lr"]))
    images = recipe["batch_size"] * (1 + recipe["uda_data"])
    if images > MAX_IMAGES_PER_STEP:
        raise error("{}batch_size={} with uda_data={} is {} images per step; batch_size * (1 + uda_data) must be "
                    "<= {}".format(prefix, recipe["batch_size"], recipe["uda_data"], images, MAX_IMAGES_PER_STEP))


def with_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """A copy of `recipe` with `--set` overrides applied on top (e.g. of the recipe a project recorded)."""
    applied = parse_overrides(overrides)
    updated = Recipe(dict(recipe.values, **applied))
    _check_consistency(updated)
    return _with_meta(updated, getattr(recipe, "recipe_name", "recorded"), getattr(recipe, "recipe_path", ""),
                      getattr(recipe, "description", ""), dict(getattr(recipe, "overrides", {}) or {}, **applied))


def recipe_from_record(values: Dict[str, Any]) -> Recipe:
    """The recipe a manifest recorded, re-validated (a hand-edited manifest cannot smuggle bad values)."""
    resolved = {field.name: field.default for field in FIELDS}
    resolved.update(_parse_items(values.items(), "manifest train params", error=InvalidInputError))
    recipe = Recipe(resolved)
    _check_consistency(recipe, error=InvalidInputError, source="manifest train params")
    return recipe
