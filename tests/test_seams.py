"""The seams stay open: the generic layers name no algorithm and no kind of data source (what differs
between them lives in their own modules, found through the registries)."""

import re
from pathlib import Path

import pytest

from mpltool.algorithms import algorithm_names

ROOT = Path(__file__).resolve().parent.parent / "mpltool"
GENERIC = ["recipes/__init__.py", "recipes/schema.py", "train", "eval", "freeze", "convert", "status.py", "report",
           "manifest", "export", "predict.py", "data/stage.py", "data/pipeline.py", "models/artifacts.py",
           "models/verify.py", "models/inference.py"]
# Algorithm names and the names their papers go by; a model name that contains one (mixmatch-resnet) and a
# docs/ file name (docs/mpl-reference.md) are not the algorithm.
NAMES = re.compile(r"\b(?:{}|meta pseudo labels)\b".format("|".join(re.escape(n) for n in algorithm_names())),
                   re.IGNORECASE)
NOT_ALGORITHMS = re.compile(r"mixmatch-resnet|docs/[\w./-]+|mpltool")


def generic_files():
    for entry in GENERIC:
        path = ROOT / entry
        for file in ([path] if path.is_file() else sorted(path.rglob("*.py"))):
            yield file


@pytest.mark.parametrize("path", list(generic_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_generic_layers_name_no_algorithm(path):
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for match in NAMES.finditer(NOT_ALGORITHMS.sub("", line)):
            found.append("{}:{}: {}".format(path.name, number, match.group(0)))
    assert not found, found


def test_no_module_asks_which_kind_of_data_it_holds():
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "has_domains" not in text, path
        if path.name not in ("cifar.py", "folders.py", "sources.py") and path.parent.name != "algorithms":
            assert not re.search(r"""==\\s*["'](?:cifar|folders)["']""", text), path
