"""What notebooks and the notebook stage share: staging directories of figures, and repository-root paths.

The notebook stage (basisn.stages.notebook, `basisn notebook`) executes a notebook into a staging directory
(`paper_figures/.staging-<pid>-*`) and moves its files into place only when every cell has run;
`clean_stale_staging` removes what killed runs left.

Opened in JupyterLab (`make lab`), a notebook's kernel starts in notebooks/; its first code cell calls
`at_repo_root()` so that its paths (`outputs/...`, `params.yaml`) mean the same there, and `require(...)` stops it
with one line naming the `dvc repro` stage to run when a stage output is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

STAGING_PREFIX = ".staging-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove the staging directories that killed runs left in `out` (`.staging-<pid>-*` of a dead pid).

    Other live runs' directories stay. Returns what was removed.
    """
    removed = []
    for staging in out.glob(f"{STAGING_PREFIX}*"):
        pid_text = staging.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if staging.is_dir() and not (pid_text.isdigit() and _alive(int(pid_text))):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


# ---- path resolution for notebooks opened in JupyterLab (kernel working directory: notebooks/) ----------------
ROOT_MARKERS = ("dvc.yaml", "params.yaml")


class MissingStageOutput(FileNotFoundError):
    """A stage output a notebook reads is absent: says, in one line, which `dvc repro` stage writes it."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"{type(self).__name__}: {self}"]


def repo_root(start: str | Path | None = None) -> Path:
    """The repository root: the first directory from `start` (default: cwd) upwards holding dvc.yaml and params.yaml.

    Falls back to the checkout this package was imported from, so a kernel started anywhere finds the repository.
    """
    here = Path(start or Path.cwd()).resolve()
    package_checkout = Path(__file__).resolve().parents[1]
    for candidate in (here, *here.parents, package_checkout):
        if all((candidate / marker).is_file() for marker in ROOT_MARKERS):
            return candidate
    raise FileNotFoundError(f"no repository root (a directory with {' and '.join(ROOT_MARKERS)}) above {here}")


def at_repo_root() -> Path:
    """chdir to the repository root, so that a notebook's relative paths mean the same in papermill and JupyterLab."""
    root = repo_root()
    os.chdir(root)
    return root


def stage_writing(path: str | Path, root: str | Path | None = None) -> str | None:
    """The dvc.yaml stage whose outs/metrics/plots contain `path` (relative to the root), or None."""
    root = Path(root) if root is not None else repo_root()
    target = Path(path).as_posix().rstrip("/")
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []) or []:
                declared = (next(iter(entry)) if isinstance(entry, dict) else entry).rstrip("/")
                if target == declared or target.startswith(declared + "/") or declared.startswith(target + "/"):
                    return name
    return None


def require(*paths: str | Path, root: str | Path | None = None) -> None:
    """Fail before any work if an input is missing: one line naming the stage to run (`dvc repro STAGE`)."""
    root = Path(root) if root is not None else repo_root()
    for path in paths:
        if (root / path).exists():
            continue
        stage = stage_writing(path, root)
        if stage is None:
            raise FileNotFoundError(f"{path} not found (no dvc.yaml stage writes it; pass an existing path)")
        raise MissingStageOutput(f"{path} not found: run `dvc repro {stage}` first (or `make repro`)")
