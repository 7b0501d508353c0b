"""exsnn's HDF5 files: checked read-only opening, and crash-safe updates (copy, modify the copy, fsync, rename
over the original, under a lock).

A process killed at any instant leaves either the old or the new file; readers that opened the old file keep a
consistent view. Writers of the same path are serialised by an advisory lock on a hidden sidecar `.NAME.lock`.
The cost is one copy of the file per update, so callers batch their changes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from exsnn.errors import DataError


def open_readonly(path: str | os.PathLike[str], format_name: str, what: str) -> h5py.File:
    """Open an exsnn HDF5 file of the given format read-only; DataError naming the file when it is missing,
    unreadable or another kind of file (`what` describes the expected kind in the message)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, "file", f"not a readable HDF5 file ({exc})") from None
    if h5.attrs.get("format") != format_name:
        h5.close()
        raise DataError(path, "attrs/format", f"not {what} (expected format {format_name!r})")
    return h5


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Serialise writers of `path` across processes; the sidecar lock file is removed again when the holder ends.

    Removing a lock file is safe with this protocol: after acquiring the lock, a writer checks that the file it locked
    is still the one at the lock path (same inode); a writer that waited on a file the previous holder unlinked finds
    it gone or replaced and starts over, so two writers never hold locks on different files of the same path.
    """
    lock = lock_path(path)
    while True:
        handle = open(lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                current = os.stat(lock)
            except FileNotFoundError:
                current = None
            if current is None or current.st_ino != os.fstat(handle.fileno()).st_ino:
                continue  # the holder before us removed (or replaced) this file: lock the one at the path now
            try:
                yield
            finally:
                lock.unlink(missing_ok=True)  # still holding the lock: waiters on this inode will start over
            return
        finally:
            handle.close()  # closing releases the lock


def fsync_path(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(path: Path) -> None:
    """Remove copies left by writers killed mid-update (call while holding the lock)."""
    for stale in path.parent.glob(path.name + ".tmp-*"):
        stale.unlink(missing_ok=True)


@contextmanager
def atomic_h5_update(path: str | os.PathLike[str], locked: bool = False) -> Iterator[h5py.File]:
    """Yield a writable h5py.File on a copy of `path` (a new empty file if `path` does not exist); on normal exit
    the copy replaces `path` atomically, on an exception it is discarded. Pass `locked=True` when the caller
    already holds `exclusive_lock(path)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not locked:
        with exclusive_lock(path):
            with atomic_h5_update(path, locked=True) as h5:
                yield h5
        return
    remove_stale_temporaries(path)
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        exists = path.exists()
        if exists:
            shutil.copyfile(path, temporary)
        with h5py.File(temporary, "r+" if exists else "w-") as h5:
            yield h5
        fsync_path(temporary)
        os.replace(temporary, path)
        fsync_path(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
