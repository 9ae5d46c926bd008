"""The built wheel holds what the editable install runs: every subpackage, the recipe files, the script.

The editable install imports from the checkout, so a subpackage missing from `[tool.setuptools]` only shows
in a built wheel. The wheel is built from a copy of the checkout (pyproject.toml, README.md, mpltool/) so
the build's `build/` and `*.egg-info` never land in the working tree.
"""

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE_SUFFIXES = (".yaml", ".json", ".cfg")


def _has_modern_setuptools() -> bool:
    """True when this interpreter can build pyproject [project] metadata itself (setuptools >= 61, wheel)."""
    probe = ("import setuptools, wheel, sys; "
             "sys.exit(0 if int(setuptools.__version__.split('.')[0]) >= 61 else 1)")
    return subprocess.run([sys.executable, "-c", probe], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def _copy_source(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(str(ROOT / name), str(dest / name))
    shutil.copytree(str(ROOT / "mpltool"), str(dest / "mpltool"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return dest


def _build_wheel(source: Path, out: Path) -> Path:
    """pip wheel: offline with this venv's setuptools when it is new enough, else pip's isolated build
    (which installs setuptools>=61 from the package index; skipped when no index answers)."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(out)]
    isolated = not _has_modern_setuptools()
    if not isolated:
        command.append("--no-build-isolation")
    result = subprocess.run(command + [str(source)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=600)
    if result.returncode != 0:
        if isolated and ("No matching distribution found for setuptools" in result.stdout
                         or "Could not find a version that satisfies the requirement setuptools" in result.stdout):
            pytest.skip("cannot build the wheel offline: this venv has setuptools < 61 and no package index "
                        "offers setuptools>=61,<69")
        pytest.fail("pip wheel failed:\n" + result.stdout[-4000:])
    wheels = sorted(out.glob("mpltool-*.whl"))
    assert len(wheels) == 1, "expected one mpltool wheel in {}: {}".format(out, [w.name for w in wheels])
    return wheels[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("packaging")
    source = _copy_source(base / "src")
    wheel = _build_wheel(source, base / "dist")
    with zipfile.ZipFile(str(wheel)) as archive:
        names = set(archive.namelist())
        entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points[0]).decode("utf-8") if entry_points else ""
    return source, names, scripts


@pytest.mark.slow
def test_every_subpackage_and_module_is_in_the_wheel(built):
    source, names, _ = built
    packages = sorted(p.parent.relative_to(source).as_posix() for p in (source / "mpltool").rglob("__init__.py"))
    assert "mpltool" in packages and len(packages) > 1
    missing = [pkg for pkg in packages if pkg + "/__init__.py" not in names]
    assert not missing, "subpackages missing from the wheel: {}".format(missing)
    modules = sorted(p.relative_to(source).as_posix() for p in (source / "mpltool").rglob("*.py"))
    missing = [m for m in modules if m not in names]
    assert not missing, "modules missing from the wheel: {}".format(missing)


@pytest.mark.slow
def test_recipe_files_are_in_the_wheel(built):
    source, names, _ = built
    recipes = sorted(p.relative_to(source).as_posix() for p in (source / "mpltool" / "recipes").iterdir()
                     if p.suffix in RECIPE_SUFFIXES)
    assert any(r.endswith(".yaml") for r in recipes) and any(r.endswith(".json") for r in recipes) \
        and any(r.endswith(".cfg") for r in recipes), recipes
    missing = [r for r in recipes if r not in names]
    assert not missing, "recipe files missing from the wheel: {}".format(missing)


@pytest.mark.slow
def test_console_script_is_declared(built):
    _, _, scripts = built
    parser = configparser.ConfigParser()
    parser.read_string(scripts)
    assert parser.has_section("console_scripts"), scripts
    assert parser.get("console_scripts", "mpltool").strip() == "mpltool.cli:run"
