"""The seed's flag names (npu_train.sh: `--mpl_teacher_lr=0.05`, `--train_batch_size=64`, ...) and mpltool's
earlier key names (teacher_lr, uda_data, ...) are accepted as aliases of recipe keys by `--set`, in recipe files and in recorded params, and resolved to the key: the
recipe, the manifest and `recipes show` hold keys only. An alias and its key given different values in one
source is an error naming both."""

import json

import pytest

from helpers import invoke
from mpltool.errors import InvalidInputError, UsageError
from mpltool.recipes import all_aliases, load_recipe, recipe_from_record, schema_of

ALIASES = all_aliases()
FIELD_BY_NAME = schema_of("mpl")  # every alias here names a key of MPL's recipes

# alias, value as typed, the key's value (of the key's type), none equal to mpl-demo's own value
CASES = [
    ("model_type", "wrn-16-2", "wrn-16-2"),
    ("train_batch_size", "32", 32),
    ("mpl_teacher_lr", "0.1", 0.1),
    ("teacher_lr", "0.1", 0.1),  # mpltool's own name of lr before 2026-12
    ("teacher_lr_warmup_steps", "50", 50),
    ("uda_data", "2", 2),  # the seed's name, and mpltool's before 2026-12
    ("mpl_teacher_lr_warmup_steps", "50", 50),
    ("mpl_student_lr", "0.07", 0.07),
    ("mpl_student_lr_wait_steps", "120", 120),
    ("mpl_student_lr_warmup_steps", "60", 60),
    ("lr_decay_type", "constant", "constant"),
    ("dense_dropout_rate", "0.3", 0.3),
]
TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def show(*args):
    return invoke(*args)


def test_every_alias_is_tested_and_names_an_existing_key():
    assert sorted(alias for alias, _, _ in CASES) == sorted(ALIASES)
    for alias, key in ALIASES.items():
        assert key in FIELD_BY_NAME, "{} -> unknown key {}".format(alias, key)
        assert alias not in FIELD_BY_NAME, "{} is a key itself".format(alias)


@pytest.mark.parametrize("alias, typed, expected", CASES)
def test_set_alias_lands_on_the_key(alias, typed, expected):
    key = ALIASES[alias]
    recipe = load_recipe("mpl-demo", ["{}={}".format(alias, typed)])
    assert recipe[key] == expected and type(recipe[key]) is TYPES[FIELD_BY_NAME[key].kind]
    assert alias not in recipe and alias not in recipe.values
    assert recipe.overrides == {key: expected}
    assert load_recipe("mpl-demo")[key] != expected  # the alias changed something


def test_seed_command_line_spelling_is_accepted():
    recipe = load_recipe("mpl-demo", ["--mpl_student_lr_wait_steps=1000", "--train_batch_size=64"])
    assert (recipe.student_lr_wait_steps, recipe.batch_size) == (1000, 64)


@pytest.mark.parametrize("alias, typed, expected", CASES)
def test_alias_in_a_recipe_file(tmp_path, alias, typed, expected):
    path = tmp_path / "seed.yaml"
    path.write_text("{}: {}\n".format(alias, typed))
    recipe = load_recipe(str(path))
    key = ALIASES[alias]
    assert recipe[key] == expected and type(recipe[key]) is TYPES[FIELD_BY_NAME[key].kind]
    assert set(recipe.values) == set(FIELD_BY_NAME)


def test_the_seed_hyperparameters_as_a_recipe_file(tmp_path):
    path = tmp_path / "seed.yaml"
    path.write_text("\n".join([
        "model_type: wrn-28-2", "train_batch_size: 64", "eval_batch_size: 64", "uda_data: 7",
        "weight_decay: 5e-4", "num_train_steps: 300000", "augment_magnitude: 16", "dense_dropout_rate: 0.2",
        "ema_decay: 0.995", "label_smoothing: 0.15", "mpl_teacher_lr: 0.05", "mpl_teacher_lr_warmup_steps: 5000",
        "mpl_student_lr: 0.05", "mpl_student_lr_wait_steps: 1000", "mpl_student_lr_warmup_steps: 5000",
        "uda_steps: 5000", "uda_temp: 0.7", "uda_threshold: 0.6", "uda_weight: 8", "lr_decay_type: cosine",
        "num_classes: 10", "log_every: 50", "save_every: 100", ""]))
    recipe = load_recipe(str(path))
    assert (recipe.model, recipe.batch_size, recipe.dropout_rate, recipe.lr, recipe.student_lr,
            recipe.lr_warmup_steps, recipe.student_lr_wait_steps, recipe.student_lr_warmup_steps,
            recipe.lr_decay) == ("wrn-28-2", 64, 0.2, 0.05, 0.05, 5000, 1000, 5000, "cosine")


def test_alias_and_key_with_different_values_is_a_usage_error():
    with pytest.raises(UsageError) as caught:
        load_recipe("mpl-demo", ["lr=0.2", "mpl_teacher_lr=0.1"])
    message = caught.value.message
    assert message == "--set: lr=0.2 and mpl_teacher_lr=0.1 conflict: both set lr"
    result = show("recipes", "show", "mpl-demo", "--set", "mpl_teacher_lr=0.1", "--set", "teacher_lr=0.2")
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "mpl_teacher_lr=0.1" in result.stderr and "teacher_lr=0.2" in result.stderr


def test_alias_and_key_with_the_same_value_agree():
    recipe = load_recipe("mpl-demo", ["train_batch_size=32", "batch_size=0_32", "mpl_teacher_lr=0.1",
                                      "lr=1e-1"])
    assert (recipe.batch_size, recipe.lr) == (32, 0.1)
    # a later --set of the same name still overrides an earlier one; across sources --set wins over the file
    assert load_recipe("mpl-demo", ["mpl_teacher_lr=0.1", "mpl_teacher_lr=0.2"]).lr == 0.2


def test_alias_and_key_in_one_recipe_file_conflict(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("model: wrn-10-1\nstudent_lr: 0.05\nmpl_student_lr: 0.1\n")
    with pytest.raises(InvalidInputError) as caught:
        load_recipe(str(path))
    assert caught.value.message == ("recipe {}: student_lr=0.05 and mpl_student_lr=0.1 conflict: both set "
                                    "student_lr".format(path))
    # the file's key and a --set alias are two sources: precedence, not a conflict
    path.write_text("model: wrn-10-1\nstudent_lr: 0.05\n")
    assert load_recipe(str(path), ["mpl_student_lr=0.1"]).student_lr == 0.1


def test_recorded_params_accept_aliases_and_keep_keys():
    recipe = recipe_from_record({"mpl_teacher_lr": 0.1, "model": "wrn-10-1"})
    assert recipe.lr == 0.1 and "mpl_teacher_lr" not in recipe
    with pytest.raises(InvalidInputError, match="lr=0.2 and mpl_teacher_lr=0.1 conflict"):
        recipe_from_record({"lr": 0.2, "mpl_teacher_lr": 0.1})


def test_bad_alias_value_names_the_alias_and_the_key():
    with pytest.raises(UsageError) as caught:
        load_recipe("mpl-demo", ["dense_dropout_rate=1.0"])
    assert caught.value.message.startswith("--set: dense_dropout_rate (alias of dropout_rate)=1.0 must be < 1")


def test_unknown_seed_flag_suggests_the_alias():
    with pytest.raises(UsageError) as caught:
        load_recipe("mpl-demo", ["mpl_teacher_lr_warmup=10"])
    assert caught.value.hint == "did you mean mpl_teacher_lr_warmup_steps?"


def test_recipes_show_with_an_alias_shows_the_key():
    result = show("recipes", "show", "mpl-demo", "--set", "mpl_teacher_lr=0.1")
    assert result.exit_code == 0 and result.stderr == ""
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if len(line.split()) > 1}
    assert rows["lr"] == "0.1"
    assert "mpl_teacher_lr" not in result.stdout
    result = show("--json", "recipes", "show", "mpl-demo", "--set", "mpl_teacher_lr=0.1")
    document = json.loads(result.stdout)
    assert document["values"]["lr"] == 0.1 and document["overrides"] == {"lr": 0.1}
    assert not set(ALIASES) & set(document["values"])
