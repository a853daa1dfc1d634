"""requirements.lock is the whole environment: pyproject.toml and environment.yml agree with it, the installed
environment is it, and the check that says so (tools/check_lock.py) names what differs in one line."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

import basisn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_lock  # noqa: E402  (a script of tools/, run by make before anything is installed: not a package)

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)\s*$")


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]:
        match = REQUIREMENT.match(line)
        assert match, f"pyproject.toml: {line!r} is not pinned as name==version"
        pins[check_lock.canonical(match.group(1))] = match.group(2)
    return pins


def lock_pins() -> dict[str, str]:
    return check_lock.read_lock(check_lock.LOCK)


def test_every_pyproject_pin_is_the_locked_version():
    """pyproject.toml keeps its pins for people who install the library into their own environment; the lock,
    which `make venv` installs, must hold the same versions."""
    locked = lock_pins()
    differ = {name: (pin, locked.get(name)) for name, pin in pyproject_pins().items() if locked.get(name) != pin}
    assert not differ, f"pyproject pin vs requirements.lock (run `make lock`): {differ}"


def test_lock_pins_every_package_with_hashes():
    """pip-compile's format: each `name==version` line continues with `--hash=sha256:` lines, so
    `pip install --require-hashes` (make venv) accepts it and nothing is resolved anew."""
    entries = re.split(r"\n(?=[A-Za-z0-9])", check_lock.LOCK.read_text())
    pinned = [entry for entry in entries if check_lock.PIN.match(entry)]
    assert len(pinned) == len(lock_pins()) > 100  # the transitive closure, not only the 18 direct dependencies
    unhashed = [entry.split()[0] for entry in pinned if "--hash=sha256:" not in entry]
    assert not unhashed, f"locked without a hash: {unhashed}"
    assert {"fonttools", "pillow", "kiwisolver", "contourpy"} <= lock_pins().keys()


def test_environment_yml_installs_exactly_the_lock():
    spec = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    python = next(d for d in spec["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert pip_section == ["-r requirements.lock"]
    assert python == "python=3.11" and "with Python 3.11" in check_lock.LOCK.read_text().splitlines()[1]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_torch_pair_is_pinned_to_the_one_that_installs_offline():
    assert pyproject_pins()["torch"] == lock_pins()["torch"] == "2.14.1"
    assert pyproject_pins()["torchvision"] == lock_pins()["torchvision"] == "0.29.1"


def test_installed_packages_are_the_lock():
    """A stale .venv (lock changed, not reinstalled) or a package upgraded by hand makes results irreproducible
    (a fonttools upgrade alone changes every PDF): catch it."""
    wrong = check_lock.differences(lock_pins(), check_lock.installed())
    assert not wrong, check_lock.message(check_lock.LOCK, wrong)


def test_lock_check_names_the_package_that_differs_in_one_line():
    lock = {"fonttools": "4.68.0", "numpy": "2.4.6", "pillow": "13.0.0"}
    have = {"fonttools": "4.69.1", "numpy": "2.4.6", "pillow": "13.0.0", "basisn": "0.1.0", "pip": "23.2.1"}
    wrong = check_lock.differences(lock, have)
    assert wrong == ["fonttools 4.69.1 is installed, the lock pins 4.68.0"]  # the project and pip are not locked
    line = check_lock.message(Path("requirements.lock"), wrong)
    assert "\n" not in line and line.startswith("requirements.lock: fonttools 4.69.1 is installed")
    del have["pillow"]
    have["extra-pkg"] = "1.0"
    several = check_lock.differences(lock, have)
    assert several == [
        "fonttools 4.69.1 is installed, the lock pins 4.68.0",
        "pillow is not installed (the lock pins 13.0.0)",
        "extra-pkg 1.0 is installed but not in the lock",
    ]
    assert "(and 2 more: pillow, extra-pkg)" in check_lock.message(Path("requirements.lock"), several)
    assert check_lock.canonical("PyYAML") == "pyyaml" and check_lock.canonical("Jupyter_Server") == "jupyter-server"
    assert check_lock.canonical("ruamel.yaml_clib") == "ruamel-yaml-clib"


def test_lock_check_script_exits_1_with_one_line_for_a_drifted_lock(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"fonttools==0.0.1 \\\n    --hash=sha256:{'0' * 64}\n")
    script = str(ROOT / "tools/check_lock.py")
    run = subprocess.run([sys.executable, script, str(lock)], capture_output=True, text=True)
    assert run.returncode == 1 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith("requirements.lock: fonttools ") and "the lock pins 0.0.1" in run.stderr
    ok = subprocess.run([sys.executable, script], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("requirements.lock: all "), ok.stderr


def test_package_version_is_importable():
    assert re.fullmatch(r"\d+\.\d+\.\d+", basisn.__version__)
    assert metadata.version("basisn") == basisn.__version__


def test_readme_quotes_the_lock_as_it_is():
    """README's description of the lock (its size, the fonttools pin it names) is the lock's, so it cannot drift."""
    readme, artifact = (ROOT / "README.md").read_text(), (ROOT / "ARTIFACT.md").read_text()
    assert f"all {len(lock_pins())} packages with their sha256" in readme
    assert f"fonttools moved from {lock_pins()['fonttools']} to" in artifact
