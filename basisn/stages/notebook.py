"""Notebook stages (`nb_*`, `basisn notebook`): execute a jupytext notebook with papermill, all-or-nothing for its
figures and tables.

The committed notebook is `notebooks/NAME.py` (py:percent text). It is converted by jupytext, executed by
papermill with the named kernel (`basisn`, installed into .venv by the Makefile) and saved, executed, to
`runs/NAME.ipynb` (ignored by git). The notebook writes its figures and tables into a staging directory (its
`out_dir` parameter, `paper_figures/.staging-<pid>-*`); only when every cell has run are they moved into
`paper_figures/`. A failing cell fails the command with the cell's traceback and leaves the previous figures in
place; the staging directories of killed runs (dead pid) are removed by the next run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from basisn.notebooks import STAGING_PREFIX, clean_stale_staging

DESCRIPTION = "execute a jupytext notebook with papermill, all-or-nothing for its figures and tables"


def _parameter(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"parameter {text!r} is not KEY=VALUE")
    return key, yaml.safe_load(value)  # so that 3 is an int, 0.5 a float, [1, 2] a list, null None


def main(argv: list[str]) -> int:
    """`basisn notebook notebooks/NAME.py -p KEY=VALUE ...`: one notebook, its files moved only when it ran."""
    parser = argparse.ArgumentParser(prog="basisn notebook", description=DESCRIPTION)
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
