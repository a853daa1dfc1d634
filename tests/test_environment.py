"""pyproject.toml and environment.yml describe one environment, and the installed one is it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

import basisn

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)\s*$")


def _pins(lines: list[str], where: str) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = REQUIREMENT.match(line)
        assert match, f"{where}: {line!r} is not pinned as name==version"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return _pins(lines, "pyproject.toml")


def environment_pins() -> tuple[dict[str, str], str]:
    spec = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    python = next(d for d in spec["dependencies"] if isinstance(d, str) and d.startswith("python="))
    return _pins([line for line in pip_section if not line.startswith("-e")], "environment.yml"), python


def test_pyproject_and_environment_yml_agree_on_every_package_and_pin():
    from_pyproject = pyproject_pins()
    from_conda, python = environment_pins()
    assert from_pyproject == from_conda, {
        "only in pyproject": sorted(from_pyproject.keys() - from_conda.keys()),
        "only in environment.yml": sorted(from_conda.keys() - from_pyproject.keys()),
        "different pins": {
            k: (from_pyproject[k], from_conda[k])
            for k in from_pyproject.keys() & from_conda.keys()
            if from_pyproject[k] != from_conda[k]
        },
    }
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11" and python == "python=3.11"


def test_torch_pair_is_pinned_to_the_one_that_installs_offline():
    pins = pyproject_pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_installed_packages_match_the_pins():
    """A stale .venv (pins changed, not reinstalled) would make results irreproducible: catch it."""
    wrong = {}
    for name, pin in pyproject_pins().items():
        installed = metadata.version(name).split("+")[0]
        if installed != pin:
            wrong[name] = (pin, installed)
    assert not wrong, f"installed versions differ from the pins (run `make venv`): {wrong}"


def test_package_version_is_importable():
    assert re.fullmatch(r"\d+\.\d+\.\d+", basisn.__version__)
    assert metadata.version("basisn") == basisn.__version__
