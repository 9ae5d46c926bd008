"""Every recipe key has a checked range: out-of-range, infinite and NaN values are refused with one line
naming the key, from `--set` (exit 2), a recipe file (exit 3) and a manifest's recorded params (exit 3)."""

import pytest
from click.testing import CliRunner

from mpltool.cli import main
from mpltool.errors import InvalidInputError, UsageError
from mpltool.algorithms import algorithm_names, get_algorithm
from mpltool.recipes import load_recipe, readers_of, recipe_from_record, schema_of, with_overrides
from mpltool.recipes.schema import INT32_MAX, SHARED_FIELDS


def _every_field():
    """Every key of every algorithm's recipes once: name -> Field (the shared ones first)."""
    found = {field.name: field for field in SHARED_FIELDS}
    for name in algorithm_names():
        for key, field in schema_of(name).items():
            found.setdefault(key, field)
    return found


FIELDS = list(_every_field().values())
FLOAT_KEYS = [f.name for f in FIELDS if f.kind == "float"]
INT_KEYS = [f.name for f in FIELDS if f.kind == "int"]


def demo_of(key):
    """A demo recipe whose algorithm reads `key` (mpl-demo for the keys every algorithm reads)."""
    readers = readers_of(key)
    return get_algorithm(readers[0]).demo_recipe if readers and "mpl" not in readers else "mpl-demo"
SEED_KEYS = ("seed", "split_seed")


def refused(pairs, text):
    """load_recipe (of a demo recipe whose algorithm reads the first key) refuses `pairs` with a UsageError
    whose message contains `text`; the message."""
    with pytest.raises(UsageError) as caught:
        load_recipe(demo_of(pairs[0].split("=", 1)[0]), list(pairs))
    assert text in caught.value.message
    return caught.value.message


def show(*args):
    return CliRunner(mix_stderr=False).invoke(main, ["recipes", "show"] + list(args), catch_exceptions=False)


@pytest.mark.parametrize("pair, message", [
    ("dropout_rate=1.0", "--set: dropout_rate=1.0 must be < 1 (between 0 and 1, 1 excluded): at 1 it drops every "
                         "activation (TF refuses it)"),
    ("dropout_rate=-0.1", "--set: dropout_rate=-0.1 must be >= 0 (between 0 and 1, 1 excluded): at 1 it drops "
                          "every activation (TF refuses it)"),
    ("lr=inf", "--set: lr=inf must be a finite number"),
    ("student_lr=nan", "--set: student_lr=nan must be a finite number"),
    ("lr=10.5", "--set: lr=10.5 must be <= 10 (between 0 and 10)"),
    ("label_smoothing=1", "--set: label_smoothing=1.0 must be < 1 (between 0 and 1, 1 excluded): at 1 the targets "
                          "no longer depend on the labels"),
    ("momentum=1", "--set: momentum=1.0 must be < 1 (between 0 and 1, 1 excluded): at 1 the velocity never decays"),
    ("ema_decay=1.0001", "--set: ema_decay=1.0001 must be <= 1 (between 0 and 1)"),
    ("uda_threshold=-0.01", "--set: uda_threshold=-0.01 must be >= 0 (between 0 and 1)"),
    ("mpl_baseline_decay=2", "--set: mpl_baseline_decay=2.0 must be <= 1 (between 0 and 1)"),
    ("uda_temp=0", "--set: uda_temp=0.0 must be > 0"),
    ("uda_temp=-1", "--set: uda_temp=-1.0 must be > 0"),
    ("uda_temp=inf", "--set: uda_temp=inf must be a finite number"),
    ("weight_decay=-1e-9", "--set: weight_decay=-1e-09 must be >= 0"),
    ("weight_decay=1e400", "--set: weight_decay=inf must be a finite number"),
    ("grad_bound=0", "--set: grad_bound=0.0 must be > 0: a clip norm of 0 zeroes every gradient (NaN when the norm "
                     "is 0)"),
    ("grad_bound=-inf", "--set: grad_bound=-inf must be a finite number"),
    ("uda_weight=nan", "--set: uda_weight=nan must be a finite number"),
    ("loss_scale=0.5", "--set: loss_scale=0.5 must be 0 (dynamic) or >= 1 (fixed)"),
    ("loss_scale=16777217", "--set: loss_scale=16777217.0 must be <= 16777216 (between 0 and 16777216)"),
    ("num_train_steps=2147483648", "--set: num_train_steps=2147483648 must be <= 2147483647 (between 1 and "
                                   "2147483647)"),
    ("num_train_steps=1e23", "--set: num_train_steps='1e23' is not a valid int"),
    ("num_train_steps=0", "--set: num_train_steps=0 must be >= 1 (between 1 and 2147483647)"),
    ("seed=4294967296", "--set: seed=4294967296 must be <= 4294967295 (between 0 and 4294967295)"),
    ("split_seed=-1", "--set: split_seed=-1 must be >= 0 (between 0 and 4294967295)"),
    ("num_classes=1", "--set: num_classes=1 must be >= 2 (between 2 and 100000)"),
    ("num_classes=100001", "--set: num_classes=100001 must be <= 100000 (between 2 and 100000)"),
    ("eval_every=0", "--set: eval_every=0 must be >= 1 (between 1 and 2147483647)"),
    ("save_every=0", "--set: save_every=0 must be >= 1 (between 1 and 2147483647)"),
    ("log_every=-3", "--set: log_every=-3 must be >= 1 (between 1 and 2147483647)"),
    ("keep_checkpoints=0", "--set: keep_checkpoints=0 must be >= 1 (between 1 and 2147483647)"),
    ("uda_steps=0", "--set: uda_steps=0 must be >= 1 (between 1 and 2147483647)"),
    ("shuffle_buffer=0", "--set: shuffle_buffer=0 must be >= 1 (between 1 and 2147483647)"),
    ("num_labelled=0", "--set: num_labelled=0 must be >= 1 (between 1 and 2147483647)"),
    ("eval_batch_size=65537", "--set: eval_batch_size=65537 must be <= 65536 (between 1 and 65536)"),
    ("augment_magnitude=31", "--set: augment_magnitude=31 must be <= 30 (between 0 and 30)"),
    ("augment_layers=-1", "--set: augment_layers=-1 must be >= 0 (between 0 and 30)"),
    ("lr_warmup_steps=-1", "--set: lr_warmup_steps=-1 must be >= 0 (between 0 and 2147483647)"),
    ("model=wrn-1006-1", "--set: model='wrn-1006-1' is too large: depth must be <= 1000 and width <= 100"),
    ("modify_mixlist=", "--set: modify_mixlist='' must be a file name (one line, not empty)"),
])
def test_out_of_range_values_are_usage_errors_naming_the_key(pair, message):
    assert refused([pair], pair.split("=", 1)[0]) == message


@pytest.mark.parametrize("pair", ["dropout_rate=1.0", "lr=inf", "uda_temp=nan", "num_train_steps=1e23",
                                  "num_train_steps=2147483648", "batch_size=16385"])
def test_the_cli_exits_2_with_one_line_naming_the_key(pair):
    result = show("mpl-demo", "--set", pair)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pair.split("=", 1)[0] + "=" in lines[0]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "1e400"])
def test_no_float_key_takes_a_non_finite_value(key, raw):
    assert refused(["{}={}".format(key, raw)], key).endswith("must be a finite number")


@pytest.mark.parametrize("key", INT_KEYS)
def test_every_int_key_has_an_upper_bound_that_fits(key):
    field = next(f for f in FIELDS if f.name == key)
    limit = 2 ** 32 - 1 if key in SEED_KEYS else INT32_MAX
    assert field.low is not None and field.high is not None and field.high <= limit
    refused(["{}={}".format(key, field.high + 1)], "{}={} must be <= {}".format(key, field.high + 1, field.high))
    refused(["{}={}".format(key, limit + 1)], "{}={} must be <= ".format(key, limit + 1))


@pytest.mark.parametrize("pairs", [
    ["dropout_rate=0"], ["dropout_rate=0.999"], ["label_smoothing=0"], ["label_smoothing=0.999"],
    ["momentum=0"], ["momentum=0.9999"], ["ema_decay=0"], ["ema_decay=1"], ["uda_threshold=0"], ["uda_threshold=1"],
    ["mpl_baseline_decay=0"], ["mpl_baseline_decay=1"], ["lr=0", "student_lr=0"],
    ["lr=10", "student_lr=10"], ["uda_temp=1e-30"], ["uda_temp=1e30"], ["weight_decay=0"],
    ["grad_bound=1e-9"], ["uda_weight=0"], ["loss_scale=1"], ["loss_scale=16777216"],
    ["num_train_steps=2147483647"], ["num_train_steps=1"], ["seed=4294967295", "split_seed=4294967295"],
    ["seed=0", "split_seed=0"], ["num_classes=2"], ["num_classes=100000"], ["eval_every=1", "save_every=1", "log_every=1"],
    ["keep_checkpoints=1"], ["augment_magnitude=0", "augment_layers=0"], ["augment_magnitude=30", "augment_layers=30"],
    ["lr_warmup_steps=0", "student_lr_wait_steps=0", "student_lr_warmup_steps=0"],
    # schedules longer than the run are allowed (train warns)
    ["num_train_steps=10", "student_lr_wait_steps=2147483647", "uda_steps=2147483647"],
    ["batch_size=16384", "unlabelled_ratio=3"],  # exactly 65536 images per step
    ["batch_size=1", "unlabelled_ratio=65535"], ["eval_batch_size=65536"], ["model=wrn-1000-100"],
])
def test_boundary_values_are_accepted(pairs):
    recipe = load_recipe(demo_of(pairs[0].split("=", 1)[0]), pairs)
    for pair in pairs:
        key, raw = pair.split("=", 1)
        kind = next(f.kind for f in FIELDS if f.name == key)
        assert recipe[key] == {"int": int, "float": float, "str": str}[kind](raw)


@pytest.mark.parametrize("pairs, message", [
    (["batch_size=16385", "unlabelled_ratio=3"], "batch_size=16385 with unlabelled_ratio=3 is 65540 images per step; "
                                         "batch_size * (1 + unlabelled_ratio) must be <= 65536"),
    (["batch_size=2", "unlabelled_ratio=65535"], "batch_size=2 with unlabelled_ratio=65535 is 131072 images per step; "
                                         "batch_size * (1 + unlabelled_ratio) must be <= 65536"),
])
def test_images_per_step_are_bounded(pairs, message):
    assert refused(pairs, "batch_size") == message
    with pytest.raises(UsageError, match=r"131072|65540"):
        with_overrides(load_recipe("mpl-demo"), pairs)


def test_the_shipped_recipes_load_and_show():
    assert load_recipe("mpl-demo").num_train_steps == 800
    assert load_recipe("mpl-wrn28-2").num_train_steps == 300000
    for name in ("mpl-demo", "mpl-wrn28-2"):
        result = show(name)
        assert result.exit_code == 0 and result.stderr == ""
    for name in algorithm_names():  # every default is in range
        fields = schema_of(name)
        assert recipe_from_record({"algorithm": name}).values == dict({k: f.default for k, f in fields.items()},
                                                                      algorithm=name)


@pytest.mark.parametrize("line, message", [
    ("dropout_rate: 1.0", "dropout_rate=1.0 must be < 1"),
    ("lr: .inf", "lr=inf must be a finite number"),
    ("uda_temp: .nan", "uda_temp=nan must be a finite number"),
    ("num_train_steps: 1.0e+23", "num_train_steps=99999999999999991611392 must be <= 2147483647"),
    ("seed: 4294967296", "seed=4294967296 must be <= 4294967295"),
])
def test_a_recipe_file_out_of_range_is_invalid_input(tmp_path, line, message):
    path = tmp_path / "r.yaml"
    path.write_text("model: wrn-10-1\n{}\n".format(line))
    with pytest.raises(InvalidInputError) as caught:
        load_recipe(str(path))
    assert caught.value.message.startswith("recipe {}: {}".format(path, message))
    result = show(str(path))
    assert result.exit_code == 3 and len(result.stderr.splitlines()) == 1 and message in result.stderr


@pytest.mark.parametrize("values, message", [
    ({"dropout_rate": 1.0}, "manifest train params: dropout_rate=1.0 must be < 1"),
    ({"ema_decay": float("nan")}, "manifest train params: ema_decay=nan must be a finite number"),
    ({"num_train_steps": 2 ** 40}, "manifest train params: num_train_steps=1099511627776 must be <= 2147483647"),
    ({"batch_size": 20000, "unlabelled_ratio": 7}, "manifest train params: batch_size=20000 with unlabelled_ratio=7 is 160000 "
                                           "images per step"),
])
def test_recorded_params_are_checked_too(values, message):
    with pytest.raises(InvalidInputError) as caught:
        recipe_from_record(values)
    assert caught.value.message.startswith(message)
