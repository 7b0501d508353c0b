"""exsnn's HDF5 files: checked read-only opening, and two crash-safe ways to change them.

`atomic_h5_update` (copy, modify the copy, fsync, rename over the original): a process killed at any instant leaves
either the old or the new file. It costs one copy of the file per update. The run files of `exsnn.dynamics` use it.

`journaled_h5_update` (write-ahead journal): changes an existing file in place at a cost that does not grow with the
file. HDF5 itself never writes to the file: the writer opens it through an in-memory overlay (`_Overlay`, h5py's
file-object driver) that reads the file and keeps every byte HDF5 writes. When the writer is done (the HDF5 file is
flushed and closed, so the overlay holds a complete, consistent new state), the overlay is committed as a journal:

1. the changed byte ranges, the new file length and the identity (device, inode) of the file are written to
   ``.NAME.journal.tmp-PID`` with a SHA-256 of the whole, fsynced and renamed to ``.NAME.journal`` (the commit
   point; the folder is fsynced);
2. under an exclusive `flock` of the file itself, the ranges are written into the file, which is truncated to its
   new length and fsynced, and the journal is removed.

Why a kill at any instant is safe: before the rename in 1, the file is untouched (a stale ``*.tmp-PID`` is removed
by the next writer). After it, the journal is complete and checksummed, and step 2 is a pure redo (it writes final
bytes only, so replaying it twice, or over a half-done replay, gives the same file). A file that has a journal is
therefore always read as "file + journal": `open_readonly` lays the journal over the file, and the next writer
starts from the same view and folds the journal into its own (then applies and removes it).

Readers and writers: writers of one path are serialised by an advisory lock on a hidden sidecar `.NAME.lock`.
Readers take a shared `flock` on the file while they have it open (HDF5 >= 1.10 also holds one for any h5py
reader), and step 2 happens only under the exclusive lock, so a reader never sees a half-applied journal. A writer
waits for readers at most `APPLY_WAIT_S` seconds (not at all when its own process has the file open); if they keep
the file open longer, the journal stays (the commit is durable and exsnn's readers see it) and the next writer
applies it. A journal belongs to the file's inode: if the file is replaced by another (rename), the journal is
ignored and removed by the next writer. Do not overwrite a dataset in place (``cp new old``) while a
``.NAME.journal`` sits beside it, and copy such a file with exsnn (read and append), not with ``cp``.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import shutil
import struct
import time
import weakref
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from exsnn.errors import DataError

log = logging.getLogger(__name__)

#: how long a writer waits for readers to close the file before it leaves its (committed) journal to the next writer
APPLY_WAIT_S = 10.0

_JOURNAL_MAGIC = b"EXSNNJ01"
_JOURNAL_HEADER = struct.Struct("<QQQQQ")  # device, inode, new length, base limit, number of ranges
_RANGE_HEADER = struct.Struct("<QQ")  # offset, length
_DIGEST = 32


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def journal_path(path: Path) -> Path:
    """The hidden sidecar that holds a committed change of `path` until it is written into the file."""
    return path.with_name(f".{path.name}.journal")


# ----------------------------------------------------------------------------------------------------------------
# the overlay: a file-like object over a file descriptor that keeps writes in memory


class _Overlay(io.RawIOBase):
    """`fd`'s bytes below `base_limit`, zeros above, with the written ranges on top; logical length `size`.

    Ranges are kept sorted and disjoint (`starts[i]`, `datas[i]`); writes that touch or overlap ranges merge with
    them (a write continuing a range extends it in place, so sequential writes cost O(bytes)).
    """

    def __init__(self, fd: int, size: int, base_limit: int | None = None, writable: bool = True) -> None:
        super().__init__()
        self.fd = fd
        self.size = size
        self.base_limit = size if base_limit is None else min(base_limit, size)
        self.starts: list[int] = []
        self.datas: list[bytearray] = []
        self.pos = 0
        self._writable = writable

    # io protocol ------------------------------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.pos = offset
        elif whence == io.SEEK_CUR:
            self.pos += offset
        else:
            self.pos = self.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n, offset = len(view), self.pos
        got = 0
        if offset < self.base_limit:
            want = min(n, self.base_limit - offset)
            got = os.preadv(self.fd, [view[:want]], offset)
        if got < n:
            view[got:] = bytes(n - got)
        i = max(bisect_right(self.starts, offset) - 1, 0)
        end = offset + n
        while i < len(self.starts) and self.starts[i] < end:
            start, data = self.starts[i], self.datas[i]
            if start + len(data) > offset:
                a, z = max(start, offset), min(start + len(data), end)
                view[a - offset : z - offset] = memoryview(data)[a - start : z - start]
            i += 1
        self.pos += n
        return n

    def write(self, buffer: Any) -> int:
        if not self._writable:
            raise io.UnsupportedOperation("read-only overlay")
        data = memoryview(buffer).cast("B")
        n = len(data)
        if n:
            self._put(self.pos, data)
        self.pos += n
        self.size = max(self.size, self.pos)
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if size < self.size:
            self.base_limit = min(self.base_limit, size)
            keep = bisect_right(self.starts, size - 1) if size > 0 else 0
            del self.starts[keep:], self.datas[keep:]
            if self.starts and self.starts[-1] + len(self.datas[-1]) > size:
                del self.datas[-1][size - self.starts[-1] :]
        self.size = size
        return size

    # ranges -----------------------------------------------------------------------------------------------------
    def _put(self, offset: int, data: memoryview) -> None:
        end = offset + len(data)
        starts, datas = self.starts, self.datas
        lo = bisect_right(starts, offset) - 1
        if lo < 0 or starts[lo] + len(datas[lo]) < offset:
            lo += 1  # the range before does not reach the write
        hi = bisect_right(starts, end) - 1  # last range starting at or before the write's end
        if lo > hi:
            starts.insert(lo, offset)
            datas.insert(lo, bytearray(data))
            return
        if starts[lo] <= offset:
            merged, new_start = datas[lo], starts[lo]
            merged[offset - new_start : offset - new_start + len(data)] = data
            first_tail = lo + 1
        else:
            merged, new_start = bytearray(data), offset
            first_tail = lo
        for j in range(first_tail, hi + 1):
            tail_start = end - starts[j]
            if tail_start < len(datas[j]):
                merged += memoryview(datas[j])[tail_start:]
        starts[lo : hi + 1] = [new_start]
        datas[lo : hi + 1] = [merged]

    def changed_bytes(self) -> int:
        return sum(len(d) for d in self.datas)


# ----------------------------------------------------------------------------------------------------------------
# the journal


@dataclass
class _Journal:
    device: int
    inode: int
    size: int
    base_limit: int
    starts: list[int]
    datas: list[bytearray]

    def overlay(self, fd: int, writable: bool) -> _Overlay:
        overlay = _Overlay(fd, self.size, self.base_limit, writable)
        overlay.starts, overlay.datas = list(self.starts), list(self.datas)
        return overlay

    def belongs_to(self, stat: os.stat_result) -> bool:
        return (self.device, self.inode) == (stat.st_dev, stat.st_ino)


def _read_journal(path: Path) -> _Journal | None:
    """The journal of `path` (None when there is none); DataError if it is damaged."""
    try:
        raw = journal_path(path).read_bytes()
    except FileNotFoundError:
        return None
    body, digest = raw[:-_DIGEST], raw[-_DIGEST:]
    head = len(_JOURNAL_MAGIC) + _JOURNAL_HEADER.size
    if len(raw) < head + _DIGEST or raw[: len(_JOURNAL_MAGIC)] != _JOURNAL_MAGIC or hashlib.sha256(body).digest() != digest:
        raise DataError(journal_path(path), "journal", "damaged (bad header or checksum); it was not written by exsnn's "
                        "append, or the disk lost data: move it away to read the file as it was before its last append")
    device, inode, size, base_limit, count = _JOURNAL_HEADER.unpack_from(raw, len(_JOURNAL_MAGIC))
    starts, datas, at = [], [], head
    view = memoryview(raw)
    for _ in range(count):
        start, length = _RANGE_HEADER.unpack_from(raw, at)
        at += _RANGE_HEADER.size
        starts.append(start)
        datas.append(bytearray(view[at : at + length]))
        at += length
    return _Journal(device, inode, size, base_limit, starts, datas)


def _current_journal(path: Path, stat: os.stat_result, remove_stale: bool) -> _Journal | None:
    journal = _read_journal(path)
    if journal is not None and not journal.belongs_to(stat):  # left beside a file that has since been replaced
        if remove_stale:
            journal_path(path).unlink(missing_ok=True)
        return None
    return journal


def _write_journal(path: Path, stat: os.stat_result, overlay: _Overlay) -> _Journal:
    """Commit `overlay` as the journal of `path` (tmp file, fsync, rename, fsync the folder)."""
    journal = _Journal(stat.st_dev, stat.st_ino, overlay.size, overlay.base_limit, overlay.starts, overlay.datas)
    temporary = journal_path(path).with_name(f"{journal_path(path).name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(temporary, "wb") as handle:

            def put(chunk: bytes | bytearray | memoryview) -> None:
                digest.update(chunk)
                handle.write(chunk)

            put(_JOURNAL_MAGIC)
            put(_JOURNAL_HEADER.pack(journal.device, journal.inode, journal.size, journal.base_limit, len(journal.starts)))
            for start, data in zip(journal.starts, journal.datas):
                put(_RANGE_HEADER.pack(start, len(data)))
                put(data)
            handle.write(digest.digest())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, journal_path(path))
        fsync_path(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
    return journal


def _lock_exclusive(fd: int, wait: float) -> bool:
    deadline, delay = time.monotonic() + wait, 1e-4
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(2 * delay, 0.005)


def _redo(fd: int, journal: _Journal) -> None:
    """Write the journal's final bytes into the file `fd` (bytes above base_limit were truncated away by HDF5)."""
    os.ftruncate(fd, journal.base_limit)
    os.ftruncate(fd, journal.size)
    for start, data in zip(journal.starts, journal.datas):
        view, at = memoryview(data), 0
        while at < len(view):
            at += os.pwrite(fd, view[at:], start + at)


def _apply_journal(path: Path, journal: _Journal, wait: float) -> bool:
    """Write `journal` into `path` and remove it, under an exclusive flock of the file; False (journal left in place)
    when readers kept the file open for `wait` seconds. Idempotent: the journal holds final bytes only."""
    fd = os.open(path, os.O_RDWR)
    try:
        if _open_here[(journal.device, journal.inode)]:
            wait = 0.0  # this process has it open itself: waiting would only stall
        if not _lock_exclusive(fd, wait):
            log.warning("%s: readers kept the file open for %.0f s; its last append stays in %s (readers of exsnn see it) "
                        "until the next append", path, wait, journal_path(path).name)
            return False
        try:
            if not journal.belongs_to(os.fstat(fd)):
                return False
            _redo(fd, journal)
            os.fsync(fd)  # before the journal goes: it must not outlive the only copy of its bytes
            journal_path(path).unlink(missing_ok=True)  # no fsync of the folder needed: a journal that reappears
            # after a power cut is the last one, already written in, and writing it in again changes nothing
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------------------------
# reading


_open_here: Counter[tuple[int, int]] = Counter()  # (device, inode) of the files open in this process by open_readonly


def _release(lock_fd: int, key: tuple[int, int]) -> None:
    _open_here[key] -= 1
    os.close(lock_fd)


class _LockedFile(h5py.File):
    """A read-only h5py.File that holds a shared flock on the file (so no journal is applied under it) until closed."""

    def __init__(self, name: Any, lock_fd: int, overlay: _Overlay | None = None) -> None:
        super().__init__(name, "r")
        self._exsnn_overlay = overlay
        stat = os.fstat(lock_fd)
        key = (stat.st_dev, stat.st_ino)
        _open_here[key] += 1
        self._exsnn_release = weakref.finalize(self, _release, lock_fd, key)

    def close(self) -> None:
        try:
            super().close()
        finally:
            release = getattr(self, "_exsnn_release", None)
            if release is not None:
                release()


def open_readonly(path: str | os.PathLike[str], format_name: str, what: str) -> h5py.File:
    """Open an exsnn HDF5 file of the given format read-only; DataError naming the file when it is missing,
    unreadable or another kind of file (`what` describes the expected kind in the message).

    The file is seen with its committed journal, if any, and no journal is applied to it while it is open."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise DataError(path, "file", f"not a readable HDF5 file ({exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a writer applies a journal
        journal = _current_journal(path, os.fstat(fd), remove_stale=False)
        try:
            h5 = _LockedFile(path, fd) if journal is None else _LockedFile(overlay := journal.overlay(fd, False), fd, overlay)
        except OSError as exc:
            raise DataError(path, "file", f"not a readable HDF5 file ({exc})") from None
    except BaseException:
        os.close(fd)
        raise
    if h5.attrs.get("format") != format_name:
        h5.close()
        raise DataError(path, "attrs/format", f"not {what} (expected format {format_name!r})")
    return h5


# ----------------------------------------------------------------------------------------------------------------
# writing


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
    """Remove copies and journal drafts left by writers killed mid-update (call while holding the lock)."""
    for stale in (*path.parent.glob(path.name + ".tmp-*"), *path.parent.glob(journal_path(path).name + ".tmp-*")):
        stale.unlink(missing_ok=True)


def discard_journal(path: Path) -> None:
    """Remove the journal of `path` (call while holding the lock, before replacing or removing `path`)."""
    journal_path(path).unlink(missing_ok=True)


@contextmanager
def atomic_h5_update(path: str | os.PathLike[str], locked: bool = False) -> Iterator[h5py.File]:
    """Yield a writable h5py.File on a copy of `path` (a new empty file if `path` does not exist); on normal exit
    the copy replaces `path` atomically, on an exception it is discarded. Pass `locked=True` when the caller
    already holds `exclusive_lock(path)`. A journal of `path` is folded into the copy."""
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
            journal = _current_journal(path, os.stat(path), remove_stale=True)
            if journal is not None:
                with open(temporary, "r+b") as handle:
                    _redo(handle.fileno(), journal)
        with h5py.File(temporary, "r+" if exists else "w-") as h5:
            yield h5
        fsync_path(temporary)
        os.replace(temporary, path)
        discard_journal(path)  # the copy already holds it (and it belongs to the replaced inode)
        fsync_path(path.parent)
    finally:
        temporary.unlink(missing_ok=True)




@contextmanager
def journaled_h5_update(path: str | os.PathLike[str], locked: bool = False, apply_wait: float | None = None) -> Iterator[h5py.File]:
    """Yield a writable h5py.File on the existing file `path`; on normal exit the changes are committed through a
    journal (see the module docstring), at a cost that grows with the bytes changed, not with the file; on an
    exception nothing is written. Pass `locked=True` when the caller already holds `exclusive_lock(path)`.
    `apply_wait`: seconds to wait for readers before leaving the journal for the next writer (default APPLY_WAIT_S)."""
    path = Path(path)
    if not locked:
        with exclusive_lock(path):
            with journaled_h5_update(path, locked=True, apply_wait=apply_wait) as h5:
                yield h5
        return
    remove_stale_temporaries(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = os.fstat(fd)
        pending = _current_journal(path, stat, remove_stale=True)
        overlay = _Overlay(fd, stat.st_size) if pending is None else pending.overlay(fd, True)
        with h5py.File(overlay, "r+") as h5:
            yield h5
            h5.flush()
        if pending is None and not overlay.starts and overlay.size == stat.st_size:
            return  # nothing changed
        journal = _write_journal(path, stat, overlay)
    finally:
        os.close(fd)
    # committed: a kill from here on leaves the journal, which readers see and the next writer applies
    _apply_journal(path, journal, APPLY_WAIT_S if apply_wait is None else apply_wait)
