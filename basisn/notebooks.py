"""`basisn notebook`: execute a jupytext notebook with papermill, all-or-nothing for its figures and tables.

The committed notebook is `notebooks/NAME.py` (py:percent text). It is converted by jupytext, executed by
papermill with the named kernel (`basisn`, installed into .venv by the Makefile) and saved, executed, to
`runs/NAME.ipynb` (ignored by git). The notebook writes its figures and tables into a staging directory (its
`out_dir` parameter, `paper_figures/.staging-<pid>-*`); only when every cell has run are they moved into
`paper_figures/`. A failing cell fails the command with the cell's traceback and leaves the previous figures in
place; the staging directories of killed runs (dead pid) are removed by the next run.

Opened in JupyterLab (`make lab`), a notebook's kernel starts in notebooks/; its first code cell calls
`at_repo_root()` so that its paths (`outputs/...`, `params.yaml`) mean the same there, and `require(...)` stops it
with one line naming the `dvc repro` stage to run when a stage output is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml


def _parameter(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"parameter {text!r} is not KEY=VALUE")
    return key, yaml.safe_load(value)  # so that 3 is an int, 0.5 a float, [1, 2] a list, null None


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


def notebook_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="basisn notebook", description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, help="notebooks/NAME.py (jupytext py:percent)")
    parser.add_argument("-p", "--parameter", type=_parameter, action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("paper_figures"), help="where figures/tables go")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the executed .ipynb goes")
    parser.add_argument("-k", "--kernel", default=os.environ.get("BASISN_KERNEL", "basisn"), help="jupyter kernel")
    args = parser.parse_args(argv)
    if not args.notebook.is_file() or args.notebook.suffix != ".py":
        print(f"basisn: notebook {args.notebook} not found (expected notebooks/NAME.py)", file=sys.stderr)
        return 2

    import jupytext
    import papermill

    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(args.out)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=args.out))
    executed = args.runs / f"{args.notebook.stem}.ipynb"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            source = Path(scratch) / f"{args.notebook.stem}.ipynb"
            jupytext.write(jupytext.read(args.notebook), source)
            parameters = dict(args.parameter, out_dir=str(staging))
            papermill.execute_notebook(
                str(source),
                str(executed),
                parameters=parameters,
                kernel_name=args.kernel,
                cwd=str(Path.cwd()),
                progress_bar=False,
            )
        written = sorted(staging.iterdir())
        for path in written:
            os.replace(path, args.out / path.name)
        print(f"notebook {args.notebook}: {len(written)} files -> {args.out}; executed copy {executed}")
        return 0
    except papermill.PapermillExecutionError as error:
        print(f"basisn: notebook {args.notebook} failed in cell {error.exec_count}: {error.ename}: {error.evalue}")
        print("".join(error.traceback), file=sys.stderr)
        print(f"basisn: previous files in {args.out} were left in place; executed copy: {executed}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
