"""Writing outputs so that a crash, an error or a second writer never leaves half of one behind.

Everything is written to a temporary file (or directory) next to its destination and renamed over it only when
complete: a rename within one file system is atomic, so readers see the old version or the new one, never a mix.

A directory output has one writer at a time: `output_lock` holds an exclusive `flock` on `.NAME.lock` next to it
(the file names the holder: pid, host, command, start time; it is removed when the writer finishes or fails, and a
killed writer's is taken over by the next one). The kernel drops the lock when its process dies,
so a killed run never blocks the next one, and anything a killed run left next to the output (its staging
directory `.NAME.staging-<random>`, or the previous output `.NAME.old` renamed away mid-swap) is cleaned, or restored,
by the next writer while it holds the lock.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


class OutputError(ValueError):
    """An output directory cannot be written (unwritable, not a directory, or held by another writer)."""


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temporary file (mkstemp: 0600) or directory (mkdtemp: 0700) the mode an ordinary one gets: 0666 or
    0777 less the umask (0644 / 0755 under the usual 022), so that other users of the machine can read outputs."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)`, flush it to disk, then rename it to `path`; on an error nothing changes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        public_mode(tmp)
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


# --------------------------------------------------------------------------------------------------------------
# One writer per output directory.
# --------------------------------------------------------------------------------------------------------------
_HELD: dict[Path, int] = {}  # output directory -> open lock file descriptor held by this process


def lock_path(final: str | os.PathLike) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.lock"


def _check_parent(final: Path) -> None:
    """The parent of `final` must exist (it is created) and be writable: the lock file and the staging live there."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"--out {final}: cannot create {final.parent} ({error.strerror})") from None
    if not os.access(final.parent, os.W_OK | os.X_OK):
        raise OutputError(f"--out {final}: {final.parent} is not writable; pass a writable --out")


def check_writable(final: str | os.PathLike) -> Path:
    """Raise OutputError (one line) unless `final` can be created or replaced; creates its parent directory.

    Definitive only while holding `output_lock(final)`: without it another writer may be swapping `final`
    (renaming it away and its new version in), and a check between those two renames sees no directory.
    `output_lock` therefore checks again once it holds the lock; a call before it is the early, common-case check.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise OutputError(f"--out {final} is a file, not a directory; pass a directory path")
    _check_parent(final)
    if final.is_dir() and not os.access(final, os.W_OK | os.X_OK):
        raise OutputError(f"--out {final} is not writable (it is replaced as a whole); pass a writable --out")
    return final


def _holder() -> str:
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    command = " ".join(["basisn", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith("basisn") else sys.argv)
    return f"pid {os.getpid()} on {socket.gethostname()} ({command}, since {started})"


@contextlib.contextmanager
def output_lock(final: str | os.PathLike, wait: bool = False) -> Iterator[Path]:
    """Hold the one-writer lock of output directory `final` (reentrant within a process).

    wait=False: if another process holds it, raise OutputError naming the holder (a stage must not queue up
    silently behind another run writing the same output); wait=True: block until it is free.
    """
    final = Path(final)
    _check_parent(final)  # the lock file lives there; the checks of `final` itself wait for the lock (below)
    key = final.resolve()
    if key in _HELD:
        yield final
        return
    path = lock_path(final)
    fd = _locked(final, path, wait)
    try:
        check_writable(final)  # under the lock: no other writer is between the two renames of its swap
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder() + "\n").encode(), 0)
        _HELD[key] = fd
        try:
            _recover(final)
            yield final
        finally:
            del _HELD[key]
            path.unlink(missing_ok=True)  # still held: a waiter on this inode sees it gone and retries (_locked)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _locked(final: Path, path: Path, wait: bool) -> int:
    """An open descriptor of `path` holding its exclusive flock, `path` being that very file (not one a previous
    holder unlinked after we opened it: then open the new one and lock again)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise OutputError(f"--out {final}: cannot create its lock file {path} ({error.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = (path.read_text().strip() if path.exists() else "") or "another process"
            raise OutputError(
                f"--out {final} is being written by {holder}; wait for it to finish or pass another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _recover(final: Path) -> None:
    """Under the lock: undo what a killed writer of `final` left behind."""
    retired = final.with_name(f".{final.name}.old")
    if retired.exists() and not final.exists():  # killed between the two renames of the swap: keep the old one
        retired.rename(final)
    if retired.is_dir():
        shutil.rmtree(retired, ignore_errors=True)
    for staging in final.parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, enabled: bool = True) -> Iterator[Path]:
    """Yield a staging directory that replaces `final` only if the block finishes without an exception.

    Holds `output_lock(final)` (waiting for it if another process writes `final`), so concurrent writers
    replace it one after the other, each atomically. enabled=False yields a throw-away directory (e.g. for DDP
    ranks other than 0, which write nothing).
    """
    final = Path(final)
    if not enabled:
        with tempfile.TemporaryDirectory() as scratch:
            yield Path(scratch)
        return
    with output_lock(final, wait=True):
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
        public_mode(staging, directory=True)
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
