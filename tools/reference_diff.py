"""List the reference files that a rerun changed, against the committed ones (git HEAD), at the end of `make repro`.

Why: a reviewer should see whether the rerun reproduced the reference without knowing which git command to run.
Wall-clock times are recorded, not reproduced (ARTIFACT.md A.6): a file whose only change is one of those fields is
listed as "timing only"; anything else is a real difference and is named as one. It changes nothing and exits 0
(a difference is a result to report, not an error of the run).

Usage: python tools/reference_diff.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = ["dvc.lock", "CLAIMS.md", "paper_figures", "outputs"]
# ARTIFACT.md A.6: the timing fields of the stage metrics, and the files computed from them.
TIMING_KEYS = {"stage_seconds", "train_seconds", "images_per_second", "decompose_seconds"}
TIMING_FILES = ("paper_figures/accuracy_training_cost.",)  # the training-cost table is made of timings
CLAIMS_TIMING_ROW = "| 9 |"  # CLAIMS.md's training-cost row
HASHES = "dvc.lock"  # records the hashes of the files above, so it moves with them


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    return value


def timing_only(path: str, old: str, new: str) -> bool:
    """True when the committed and the current text differ only in the fields a rerun does not reproduce."""
    if path.startswith(TIMING_FILES) or path == HASHES:
        return True
    if path.endswith("metrics.json"):
        return without_timing(json.loads(old)) == without_timing(json.loads(new))
    if path == "CLAIMS.md":
        keep = [[line for line in text.splitlines() if not line.startswith(CLAIMS_TIMING_ROW)] for text in (old, new)]
        return keep[0] == keep[1]
    return False


def changed_files(root: Path) -> tuple[list[str], list[str]]:
    """(tracked reference files that differ from HEAD, reference files that are new: not in HEAD)."""
    changed = git(root, "diff", "--name-only", "HEAD", "--", *REFERENCES).split()
    new = git(root, "ls-files", "--others", "--exclude-standard", "--", *REFERENCES).split()
    return changed, new


def report(root: Path = ROOT) -> list[str]:
    changed, new = changed_files(root)
    timing, real = [], []
    for path in changed:
        current = root / path
        if not current.exists():
            real.append(f"{path} (deleted)")
            continue
        try:
            same = timing_only(path, git(root, "show", f"HEAD:{path}"), current.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            same = False  # a binary file (pdf, png) or broken JSON: any change is a real one
        (timing if same else real).append(path)
    real += [f"{path} (new, not in the references)" for path in new]
    lines = [f"Reference files that differ from the committed ones (git HEAD): {len(changed) + len(new)}"]
    if timing:
        lines.append(f"  timing fields only (expected, ARTIFACT.md A.6): {', '.join(timing)}")
    lines.append(
        f"  beyond the timing fields: {', '.join(real) if real else 'none: the rerun reproduced the reference'}"
    )
    return lines


def main() -> int:
    try:
        lines = report()
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"reference_diff: cannot compare with the committed references (not a git checkout?): {err}")
        return 0
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
