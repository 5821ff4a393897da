"""The repository's packaging and book hygiene: conda and pip install the same dependencies, the
notebooks are stored clean, and the table of contents names only files that exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

import bncore

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from the PyPI names
NOT_PACKAGES = {"python", "pip"}  # the interpreter and installer, not dependencies of bncore


def _split(requirement: str) -> tuple[str, str]:
    """'jupyter-book >=1.0.3, <2' → ('jupyter-book', '<2,>=1.0.3'): a normalized name and the
    version clauses, sorted, without spaces.
    """
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match[1]).lower()
    clauses = sorted(c for c in match[2].replace(" ", "").split(",") if c)
    return name, ",".join(clauses)


def pyproject() -> dict:
    """The [project] table of pyproject.toml (tomllib is in the standard library from 3.11)."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pyproject_dependencies() -> dict[str, str]:
    """The core dependencies and every optional extra of pyproject.toml."""
    project = pyproject()
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return dict(_split(r) for r in requirements)


def conda_dependencies() -> dict[str, str]:
    """environment.yml's packages under their PyPI names: the conda ones and those of its pip:
    list (packages not on conda-forge), without bncore itself (``-e .``).
    """
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    entries = []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            entries += [e for e in entry.get("pip", []) if not e.startswith(("-", "."))]
        else:
            entries.append(entry)
    deps = {}
    for entry in entries:
        name, spec = _split(entry)
        if name not in NOT_PACKAGES:
            assert name not in deps, f"{name} is listed twice in environment.yml"
            deps[CONDA_TO_PIP.get(name, name)] = spec
    return deps


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    pip, conda = pyproject_dependencies(), conda_dependencies()
    assert sorted(conda) == sorted(pip), "missing or extra package names"
    assert conda == pip, "version constraints differ"


def lock_pins() -> dict[str, str]:
    """``name → version`` of every ``name==version`` line of the CI lock, ci/requirements.lock."""
    pins = {}
    for line in (ROOT / "ci" / "requirements.lock").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def test_lock_pins_every_dependency_of_pyproject():
    missing = sorted(set(pyproject_dependencies()) - set(lock_pins()))
    assert not missing, f"regenerate the lock with `make lock`; unpinned: {missing}"


def test_lock_satisfies_pyproject_ranges():
    pins = lock_pins()
    for name, spec in pyproject_dependencies().items():
        assert SpecifierSet(spec).contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, outside pyproject's {spec}: run `make lock`"
        )


def test_lock_pins_the_build_backend_and_installer():
    # make install builds bncore without isolation, with the locked setuptools
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = lock_pins()
    assert "pip" in pins
    for name, spec in (_split(r) for r in build):
        assert name in pins, f"the lock does not pin the build requirement {name}: `make lock`"
        assert SpecifierSet(spec).contains(pins[name]), f"{name}=={pins[name]} is not {spec}"


def test_lock_pins_the_local_cpu_build_of_torch():
    assert lock_pins()["torch"].startswith("2.13.0"), "CI must use the CPU build torch 2.13.0"


def test_environment_yml_installs_bncore_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [e["pip"] for e in env["dependencies"] if isinstance(e, dict) and "pip" in e]
    assert any(item.replace(" ", "") in ("-e.", ".") for lst in pip_lists for item in lst)


def test_pyproject_version_is_the_package_version():
    assert pyproject()["version"] == bncore.__version__


NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {i} of {path.name} has outputs"
            assert cell.get("execution_count") is None, f"cell {i} of {path.name} was executed"


def toc_files() -> list[str]:
    """Every ``root`` and ``file`` entry of _toc.yml, at any depth."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found = [toc["root"]]

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return found


def _source(entry: str) -> Path | None:
    """The notebook or markdown file a toc entry names (with or without its suffix)."""
    path = ROOT / entry
    candidates = [path] if path.suffix in (".ipynb", ".md") else [
        path.with_suffix(".ipynb"), path.with_suffix(".md")]
    return next((p for p in candidates if p.is_file()), None)


@pytest.mark.parametrize("entry", toc_files())
def test_toc_entry_exists(entry):
    assert _source(entry) is not None, f"_toc.yml lists {entry}, but no .ipynb or .md exists"


def test_toc_names_each_file_once():
    files = toc_files()
    assert len(files) == len(set(files))


def test_every_book_notebook_is_in_the_toc():
    # only_build_toc_files: a notebook left out of the toc would be tested but never published
    listed = {_source(entry) for entry in toc_files()}
    assert [p.name for p in NOTEBOOKS if p not in listed] == []
