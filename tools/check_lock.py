"""Check that the installed environment is exactly requirements.lock, and say in one line where it is not.

Why: a transitive package the lock does not fix (fonttools' font subsetting, pillow's encoder, numpy's BLAS) can
change a reference file without any change to this repository. `make venv` installs the lock; this check catches a
venv that drifted from it afterwards (a package installed or upgraded by hand, a stale venv after `make lock`).

Usage: python tools/check_lock.py [LOCK]   (exit 0 and one line when it matches, exit 1 and one line when not)
It uses only the standard library, so it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)==([^\s;\\]+)")
# What a venv carries besides the lock: the project itself (installed editable, not from the index) and the
# installer, which the lock does not pin (pip-compile leaves pip out unless a package depends on it).
NOT_LOCKED = {"basisn", "pip"}


def canonical(name: str) -> str:
    """PEP 503 name normalisation, so `PyYAML`, `pyyaml` and `py_yaml` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (pip-compile's format; hashes and comments skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    if not pins:
        raise ValueError(f"{path}: no `name==version` lines (is it a pip-compile lock?)")
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def differences(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    """One phrase per package that is not as the lock says: missing, another version, or not in the lock."""
    wrong = []
    for name, pin in sorted(lock.items()):
        if name not in have:
            wrong.append(f"{name} is not installed (the lock pins {pin})")
        elif have[name] != pin:
            wrong.append(f"{name} {have[name]} is installed, the lock pins {pin}")
    wrong += [f"{name} {have[name]} is installed but not in the lock" for name in sorted(have.keys() - lock.keys())]
    return [w for w in wrong if w.split()[0] not in NOT_LOCKED]


def message(lock_path: Path, wrong: list[str]) -> str:
    more = f" (and {len(wrong) - 1} more: {', '.join(w.split()[0] for w in wrong[1:6])})" if len(wrong) > 1 else ""
    return f"{lock_path.name}: {wrong[0]}{more}; run `make clean-venv venv` to install the lock"


def main(argv: list[str]) -> int:
    lock_path = Path(argv[0]) if argv else LOCK
    try:
        lock = read_lock(lock_path)
    except (OSError, ValueError) as err:
        print(f"check_lock: {err}", file=sys.stderr)
        return 1
    wrong = differences(lock, installed())
    if wrong:
        print(message(lock_path, wrong), file=sys.stderr)
        return 1
    print(f"{lock_path.name}: all {len(lock)} locked packages installed at their pinned versions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
