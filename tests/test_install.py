"""A fresh install gets the tested versions: constraints.txt pins every dependency the project declares,
each pin satisfies pyproject's range, and the README's commands and .ci/run install from it."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.cli import ROOT


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not a pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_every_declared_dependency_is_pinned_within_its_range():
    pins = _pins()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt (bash .ci/newest --write-lock)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside pyproject's {req.specifier}"


def test_the_lock_is_sorted_and_has_no_duplicates():
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert lines == sorted(lines, key=str.lower)  # as .ci/newest writes it
    names = [line.partition("==")[0] for line in lines]
    assert len({canonicalize_name(n) for n in names}) == len(names)


def test_the_readme_and_ci_install_from_the_lock():
    readme = (ROOT / "README.md").read_text().splitlines()
    first_two = [line for line in readme[:8] if line.startswith("python3 -m venv")]
    assert len(first_two) == 2 and all("pip install -q -c constraints.txt -e " in line for line in first_two)
    ci = (ROOT / ".ci" / "run").read_text()
    assert first_two[1] in ci  # exactly the README's test command
    assert re.search(r"--upgrade -e \"\.\[test,cluster\]\"", (ROOT / ".ci" / "newest").read_text())
