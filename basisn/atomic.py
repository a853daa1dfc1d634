"""Writing outputs so that a crash or an error never leaves half of one behind.

Everything is written to a temporary file (or directory) next to its destination and renamed over it only when
complete: a rename within one file system is atomic, so readers see the old version or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)`, flush it to disk, then rename it to `path`; on an error nothing changes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """torch.save, atomically (checkpoints are overwritten every epoch: a kill must not corrupt the last one)."""
    import torch  # only here: notebooks import this module and must not pay for torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_json(path: str | os.PathLike, data: object, **dump_options: object) -> Path:
    """JSON with a trailing newline, atomically."""
    options = dict(indent=2, sort_keys=True) | dump_options
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, **options) + "\n"))


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, enabled: bool = True) -> Iterator[Path]:
    """Yield a staging directory that replaces `final` only if the block finishes without an exception.

    enabled=False yields a throw-away directory (e.g. for DDP ranks other than 0, which write nothing).
    """
    final = Path(final)
    if not enabled:
        with tempfile.TemporaryDirectory() as scratch:
            yield Path(scratch)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        retired = final.with_name(f".{final.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        final.rename(retired)
        staging.rename(final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(final)
