"""Recipes: one flat, typed configuration that every stage receives.

Precedence: schema defaults < recipe file < `--set key=value`. A recipe's schema is the shared fields
(recipes/schema.py) plus its algorithm's own (`Algorithm.fields`), every key declared once with its type
and range, so a typo is an error that names the closest key, a key of another algorithm is an error that
names who reads it, a value of the wrong type or out of range (inf and nan included) is refused wherever
it comes from -- recipe file, `--set`, or the params a manifest recorded -- and the resolved config (and
its hash) is what the manifest records. Earlier names of a key (the seed's flags, mpltool's own before a
rename) are accepted as aliases wherever a key is, and resolved to the key at once.
"""

import collections
import difflib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from mpltool.errors import InvalidInputError, UsageError
from mpltool.recipes.schema import ALIASES, MAX_IMAGES_PER_STEP, SHARED_FIELDS, Field

RECIPE_DIR = Path(__file__).resolve().parent
SHARED_BY_NAME = collections.OrderedDict((field.name, field) for field in SHARED_FIELDS)


def _algorithm(name: str):
    from mpltool.algorithms import get_algorithm

    return get_algorithm(name)


def schema_of(algorithm_name: str) -> "collections.OrderedDict[str, Field]":
    """name -> Field of every key a recipe of this algorithm has: the shared ones, then its own."""
    algorithm = _algorithm(algorithm_name)
    fields = collections.OrderedDict(SHARED_BY_NAME)
    for field in algorithm.fields:
        if field.name in fields:
            raise RuntimeError("algorithm {} declares field {}, a shared key".format(algorithm.name, field.name))
        fields[field.name] = field
    unknown = [key for key in algorithm.reads if key not in SHARED_BY_NAME or not SHARED_BY_NAME[key].optional]
    if unknown:
        raise RuntimeError("algorithm {} reads {}: not optional shared keys".format(algorithm.name, unknown))
    return fields


def aliases_of(algorithm_name: str) -> Dict[str, str]:
    """Every accepted earlier name -> its key, for a recipe of this algorithm."""
    return dict(ALIASES, **dict(_algorithm(algorithm_name).aliases))


def all_aliases() -> Dict[str, str]:
    """The aliases of every registered algorithm's recipes."""
    from mpltool.algorithms import algorithm_names

    merged = dict(ALIASES)
    for name in algorithm_names():
        merged.update(_algorithm(name).aliases)
    return merged


def readers_of(key: str) -> List[str]:
    """The algorithms whose recipes give `key` a meaning (their own field, or an optional shared key they
    read), in registry order."""
    from mpltool.algorithms import algorithm_names

    readers = []
    for name in algorithm_names():
        algorithm = _algorithm(name)
        if key in algorithm.reads or any(field.name == key for field in algorithm.fields):
            readers.append(name)
    return readers


class Recipe(dict):
    """The resolved configuration: a dict with attribute access, plus where it came from."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    @property
    def fields(self) -> "collections.OrderedDict[str, Field]":
        return schema_of(self["algorithm"])

    @property
    def values(self) -> Dict[str, Any]:
        return collections.OrderedDict((name, self[name]) for name in self.fields)


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


def _resolve_name(name: str, aliases: Dict[str, str]) -> str:
    return aliases.get(name, name)


def _unknown_key(key: str, source: str, algorithm_name: str, fields, aliases, error=UsageError):
    """The error for a key this algorithm's recipes lack: another algorithm's key names its reader, any
    other the closest key."""
    readers = readers_of(aliases.get(key, all_aliases().get(key, key)))
    if readers:
        return _not_read(algorithm_name, [key], readers, source, error)
    close = difflib.get_close_matches(key, list(fields) + list(aliases), n=1, cutoff=0.5)
    hint = "did you mean {}?".format(close[0]) if close else "`mpltool recipes show` lists the keys"
    return error("{}: unknown key {!r}".format(source, key), hint=hint)


def _not_read(algorithm_name: str, keys: Sequence[str], readers: Sequence[str], source: str, error=UsageError):
    shown = readers[0] if len(readers) == 1 else ", ".join(readers)
    return error("algorithm {} does not read {} ({} {})".format(
        algorithm_name, ", ".join(keys), shown, "does" if len(readers) == 1 else "do"),
        hint="remove {} from {}".format("it" if len(keys) == 1 else "them", source))


def _parse_items(items, source: str, algorithm_name: str, error=UsageError, lenient: bool = False) -> Dict[str, Any]:
    """{key: value} from (name, raw) pairs of one source, a name being a key or one of its aliases.

    A later pair overrides an earlier one of the same name; an alias and its key (or two spellings of one
    key) given with different values is an error naming both. `lenient`: names no algorithm knows, and
    keys of other algorithms, are dropped instead of refused (a manifest written by an earlier mpltool
    recorded every algorithm's keys).
    """
    fields = schema_of(algorithm_name)
    aliases = aliases_of(algorithm_name)
    parsed = {}  # type: Dict[str, Any]
    spellings = {}  # type: Dict[str, Dict[str, Any]]  # key -> {name as given: value}
    for name, raw in items:
        name = str(name)
        key = _resolve_name(name, aliases)
        field = fields.get(key)
        if field is None:
            if lenient:
                continue
            raise _unknown_key(name, source, algorithm_name, fields, aliases, error=error)
        value = parse_value(field, raw, source, error=error, name=name)
        given = spellings.setdefault(key, {})
        for other, other_value in given.items():
            if other != name and other_value != value:
                raise error("{}: {}={!r} and {}={!r} conflict: both set {}".format(
                    source, other, other_value, name, value, key), hint="give only one of them")
        given[name] = value
        parsed[key] = value
    return parsed


def _split_pairs(pairs: Sequence[str]):
    items = []
    for pair in pairs:
        if "=" not in pair:
            raise UsageError("--set {!r}: expected key=value".format(pair))
        key, raw = pair.split("=", 1)
        items.append((key.strip().lstrip("-"), raw.strip()))
    return items


def _algorithm_given(items, source: str, error, fallback: str) -> str:
    """The algorithm the pairs name (the last one), checked; `fallback` when they name none."""
    chosen = fallback
    for name, raw in items:
        if _resolve_name(str(name), ALIASES) == "algorithm":
            chosen = parse_value(SHARED_BY_NAME["algorithm"], raw, source, error=error, name=str(name))
    return chosen


def parse_overrides(pairs: Sequence[str], algorithm_name: str) -> Dict[str, Any]:
    return _parse_items(_split_pairs(pairs), "--set", algorithm_name)


def default_recipe() -> str:
    """The recipe `train` and `data prepare` use when none is named: the default algorithm's reference."""
    from mpltool.algorithms import DEFAULT_ALGORITHM

    return _algorithm(DEFAULT_ALGORITHM).reference_recipe


def load_recipe(name_or_file=None, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe by name or file (None: `default_recipe()`), with `--set` overrides."""
    path = recipe_path(name_or_file if name_or_file is not None else default_recipe())
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
    description = str(document.pop("description", ""))
    source = "recipe {}".format(path)
    set_items = _split_pairs(overrides)
    from_file = _algorithm_given(document.items(), source, InvalidInputError, SHARED_BY_NAME["algorithm"].default)
    name = _algorithm_given(set_items, "--set", UsageError, from_file)
    # The file's keys are parsed against the algorithm the file names; `--set algorithm=` on top of a file
    # is refused where the file holds keys the new algorithm does not read (below).
    document = _parse_items(document.items(), source, from_file, error=InvalidInputError)
    applied = _parse_items(set_items, "--set", name)
    fields = schema_of(name)
    foreign = [key for key in document if key not in fields]
    if foreign:
        raise _not_read(name, sorted(foreign), readers_of(foreign[0]), source + " or the --set options")
    values = {key: field.default for key, field in fields.items()}
    values.update(document)
    values.update(applied)
    recipe = Recipe((key, values[key]) for key in fields)
    _check_consistency(recipe)
    _check_keys_read(recipe, list(document) + list(applied), "recipe {} or the --set options".format(path))
    return _with_meta(recipe, path.stem, str(path), description, applied)


def _check_keys_read(recipe: Recipe, given: Sequence[str], source: str) -> None:
    """An optional shared key the algorithm does not read is a mistake when given explicitly (it would do
    nothing)."""
    algorithm = _algorithm(recipe["algorithm"])
    unread = sorted(key for key in set(given) if SHARED_BY_NAME.get(key) is not None
                    and SHARED_BY_NAME[key].optional and key not in algorithm.reads)
    if unread:
        readers = []  # type: List[str]
        for key in unread:
            readers.extend(r for r in readers_of(key) if r not in readers)
        raise _not_read(recipe["algorithm"], unread, readers or ["no algorithm"], source)


def _with_meta(recipe: Recipe, name: str, path: str, description: str, applied: Dict[str, Any]) -> Recipe:
    # Stored as attributes, not keys, so `values`/hashing see only the configuration itself.
    object.__setattr__(recipe, "recipe_name", name)
    object.__setattr__(recipe, "recipe_path", path)
    object.__setattr__(recipe, "description", description)
    object.__setattr__(recipe, "overrides", applied)
    return recipe


def _check_consistency(recipe: Recipe, error=UsageError, source: str = "") -> None:
    """Checks across keys (each key's own range is checked when it is parsed): the shared ones here, the
    algorithm's own through `Algorithm.check_recipe`.

    Schedule lengths (warmups, waits, ramps) may exceed num_train_steps: a short run of a long recipe is
    legitimate and train warns about it.
    """
    prefix = source + ": " if source else ""
    problems = []
    if recipe["split"] == "balanced" and recipe["num_labelled"] % recipe["num_classes"]:
        problems.append("num_labelled={} is not divisible by num_classes={} (split=balanced)".format(
            recipe["num_labelled"], recipe["num_classes"]))
    if recipe["num_valid"] and recipe["split"] != "round-robin":
        problems.append("num_valid={} needs split=round-robin (validation comes from its unlabelled stream)".format(
            recipe["num_valid"]))
    images = recipe["batch_size"] * (1 + recipe["unlabelled_ratio"])
    if images > MAX_IMAGES_PER_STEP:
        problems.append("batch_size={} with unlabelled_ratio={} is {} images per step; batch_size * (1 + "
                        "unlabelled_ratio) must be <= {}".format(recipe["batch_size"], recipe["unlabelled_ratio"],
                                                                 images, MAX_IMAGES_PER_STEP))
    problems.extend(_algorithm(recipe["algorithm"]).check_recipe(recipe))
    if problems:
        raise error(prefix + problems[0])


def with_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """A copy of `recipe` with `--set` overrides applied on top (e.g. of the recipe a project recorded)."""
    items = _split_pairs(overrides)
    name = _algorithm_given(items, "--set", UsageError, recipe["algorithm"])
    applied = _parse_items(items, "--set", name)
    fields = schema_of(name)
    values = {key: recipe[key] if key in recipe else field.default for key, field in fields.items()}
    values.update(applied)
    updated = Recipe((key, values[key]) for key in fields)
    _check_consistency(updated)
    _check_keys_read(updated, list(applied), "the --set options")
    return _with_meta(updated, getattr(recipe, "recipe_name", "recorded"), getattr(recipe, "recipe_path", ""),
                      getattr(recipe, "description", ""), dict(getattr(recipe, "overrides", {}) or {}, **applied))


def recipe_from_record(values: Dict[str, Any], lenient: bool = False) -> Recipe:
    """The recipe a manifest recorded, re-validated (a hand-edited manifest cannot smuggle bad values).

    Keys of other algorithms are dropped: mpltool before 2026-12 recorded every algorithm's keys in every
    train record, under names since renamed (aliases). `lenient` also drops names no algorithm knows (a
    record's bookkeeping besides the recipe); otherwise they are refused.
    """
    source = "manifest train params"
    name = _algorithm_given(values.items(), source, InvalidInputError, SHARED_BY_NAME["algorithm"].default)
    known = set(all_aliases())
    from mpltool.algorithms import algorithm_names

    for other in algorithm_names():
        known.update(schema_of(other))
    items = [(k, v) for k, v in values.items() if lenient or str(k) not in known or
             _resolve_name(str(k), aliases_of(name)) in schema_of(name)]
    parsed = _parse_items(items, source, name, error=InvalidInputError, lenient=lenient)
    recipe = Recipe((key, parsed.get(key, field.default)) for key, field in schema_of(name).items())
    _check_consistency(recipe, error=InvalidInputError, source=source)
    return recipe
