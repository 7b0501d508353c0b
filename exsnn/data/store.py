"""The exsnn HDF5 dataset: crash-safe appends, whole-file or random-access reads.

Layout (F frames, A atoms in all, N states, P = N(N-1)/2 pairs, Pd = N(N+1)/2 dipole pairs)::

    /                      attrs: format, format_version, n_states, state_labels, method, basis,
                                  program, program_version, extra (JSON)
    /frames/atom_offsets   (F+1,)     int64    atoms of frame k are rows offsets[k]:offsets[k+1] of /atoms/*
    /frames/energies       (F, N)     Hartree
    /frames/dipoles        (F, Pd, 3) e*Bohr   pairs 00, 01, ..., 11, 12, ...
    /frames/charge         (F,)       int32    total charge
    /frames/multiplicity   (F,)       int32    spin multiplicity
    /frames/provenance     (F,)       JSON text: how each frame was made
    /atoms/numbers         (A,)       int16
    /atoms/positions       (A, 3)     Bohr
    /atoms/forces          (A, N, 3)  Hartree/Bohr
    /atoms/nacs            (A, P, 3)  1/Bohr   pairs 01, 02, ..., 12, ...
    /masks/<label>         (F,)       bool     False where the label is absent (its values are NaN or 0)

Every numeric dataset carries a ``unit`` attribute. Every dataset holds exactly the committed frames (atoms); there
is no committed-length attribute.

Appends (`append_frames`, `DatasetWriter`) change the file in place through a write-ahead journal
(`exsnn.data.atomic.journaled_h5_update`): HDF5 writes the appended rows, the resized chunk indices and the new
superblock into an in-memory overlay of the file; the changed byte ranges are committed as a checksummed hidden
sidecar ``.NAME.journal`` (fsync, atomic rename), then written into the file under an exclusive flock and the
journal removed. An append therefore costs what it changes (the new rows, the last chunk of each column, a few
metadata blocks), not a copy of the file. A writer killed at any instant leaves the file as it was before the append
(if it died before the journal's rename) or as after it (the journal is complete; `read_frames` and friends lay it
over the file, and the next append writes it in); a half-applied journal is never seen, because readers hold a shared
flock on the file while it is open and the journal is applied only under an exclusive one. The layout is unchanged,
so files written by earlier versions (which copied the whole file on every append) are read and appended as they
are. A new file is written whole beside its destination and renamed into place. Plain h5py (no exsnn) sees the
file without its journal: whole frames, but after a writer was killed while writing a journal in, the file alone may
be inconsistent until the next append (or any exsnn read, which sees file + journal) - open datasets with `open_h5`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from exsnn.data.atomic import atomic_h5_update, discard_journal, exclusive_lock, journaled_h5_update, open_readonly
from exsnn.data.frame import Frame, FrameArrays
from exsnn.data.properties import (
    CHARGE,
    DIPOLES,
    ENERGIES,
    FORCES,
    FRAME_INTEGERS,
    LABELS,
    MULTIPLICITY,
    NACS,
    POSITIONS,
    UNITS,
    default_state_labels,
)
from exsnn.errors import ConfigurationError, DataError

FORMAT_NAME = "exsnn-excited-state-dataset"
FORMAT_VERSION = 1

# (group, name) of every array column in FrameArrays.
_FRAME_COLUMNS = (ENERGIES, DIPOLES, CHARGE, MULTIPLICITY)
_ATOM_COLUMNS = ("numbers", POSITIONS, FORCES, NACS)


@dataclass
class DatasetMetadata:
    """What a dataset is: its states and the electronic-structure method that labelled it."""

    n_states: int
    state_labels: list[str] = field(default_factory=list)
    method: str = ""
    basis: str = ""
    program: str = ""
    program_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.state_labels:
            self.state_labels = default_state_labels(self.n_states)
        if len(self.state_labels) != self.n_states:
            raise ConfigurationError(f"{len(self.state_labels)} state labels given for {self.n_states} states", where="state_labels")


def _create_layout(h5: h5py.File, metadata: DatasetMetadata) -> None:
    n, P, Pd = metadata.n_states, metadata.n_states * (metadata.n_states - 1) // 2, metadata.n_states * (metadata.n_states + 1) // 2
    h5.attrs.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "n_states": n,
            "state_labels": json.dumps(metadata.state_labels),
            "method": metadata.method,
            "basis": metadata.basis,
            "program": metadata.program,
            "program_version": metadata.program_version,
            "extra": json.dumps(metadata.extra, sort_keys=True),
        }
    )

    def column(group: str, name: str, shape: tuple[int, ...], dtype: Any, unit: str | None, chunk_rows: int) -> None:
        ds = h5.create_dataset(
            f"{group}/{name}", shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(chunk_rows, *shape)
        )
        if unit is not None:
            ds.attrs["unit"] = unit

    offsets = h5.create_dataset("frames/atom_offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(4096,))
    offsets.attrs["unit"] = "1"
    column("frames", ENERGIES, (n,), np.float64, UNITS[ENERGIES], 1024)
    column("frames", DIPOLES, (Pd, 3), np.float64, UNITS[DIPOLES], 1024)
    column("frames", CHARGE, (), np.int32, UNITS[CHARGE], 4096)
    column("frames", MULTIPLICITY, (), np.int32, UNITS[MULTIPLICITY], 4096)
    column("frames", "provenance", (), h5py.string_dtype(), None, 1024)
    column("atoms", "numbers", (), np.int16, None, 8192)
    column("atoms", POSITIONS, (3,), np.float64, UNITS[POSITIONS], 8192)
    column("atoms", FORCES, (n, 3), np.float64, UNITS[FORCES], 2048)
    column("atoms", NACS, (P, 3), np.float64, UNITS[NACS], 2048)
    for label in (*LABELS, *FRAME_INTEGERS):
        column("masks", label, (), bool, None, 4096)


def _append_arrays(h5: h5py.File, arrays: FrameArrays) -> None:
    def extend(name: str, values: np.ndarray) -> None:
        ds = h5[name]
        start = ds.shape[0]
        ds.resize(start + len(values), axis=0)
        if len(values):
            ds[start:] = values

    offsets = h5["frames/atom_offsets"]
    atom_base = int(offsets[-1])
    extend("frames/atom_offsets", arrays.atom_offsets[1:] + atom_base)
    for name in _FRAME_COLUMNS:
        extend(f"frames/{name}", getattr(arrays, name))
    extend("frames/provenance", np.array(arrays.provenance, dtype=object))
    for name in _ATOM_COLUMNS:
        extend(f"atoms/{name}", getattr(arrays, name))
    for label, mask in arrays.masks.items():
        extend(f"masks/{label}", mask)


def read_metadata(path: str | os.PathLike[str]) -> DatasetMetadata:
    """Metadata of an exsnn dataset file."""
    with open_h5(path) as h5:
        return _metadata_from_attrs(h5, path)


@contextmanager
def open_h5(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Open an exsnn dataset read-only, with a DataError naming the file if it is missing or not ours."""
    with open_readonly(path, FORMAT_NAME, "an exsnn dataset") as h5:
        version = int(h5.attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise DataError(path, "attrs/format_version", f"written by a newer exsnn (version {version})")
        yield h5


def _metadata_from_attrs(h5: h5py.File, path: Any) -> DatasetMetadata:
    try:
        return DatasetMetadata(
            n_states=int(h5.attrs["n_states"]),
            state_labels=json.loads(h5.attrs["state_labels"]),
            method=str(h5.attrs["method"]),
            basis=str(h5.attrs["basis"]),
            program=str(h5.attrs["program"]),
            program_version=str(h5.attrs["program_version"]),
            extra=json.loads(h5.attrs["extra"]),
        )
    except KeyError as exc:
        raise DataError(path, "attrs", f"missing metadata attribute {exc}") from None


def read_frames(path: str | os.PathLike[str], indices: Sequence[int] | np.ndarray | None = None) -> FrameArrays:
    """Read all frames, or the frames at `indices` (in that order, repeats allowed), into memory."""
    with open_h5(path) as h5:
        metadata = _metadata_from_attrs(h5, path)
        offsets = h5["frames/atom_offsets"][()]
        n_frames = len(offsets) - 1
        if indices is None:
            frame_rows: slice | np.ndarray = slice(None)
            atom_rows: slice | np.ndarray = slice(None)
            new_offsets = offsets
        else:
            requested = np.asarray(indices, dtype=np.int64)
            if len(requested) and (requested.min() < 0 or requested.max() >= n_frames):
                raise IndexError(f"{path}: frame index out of range (file has {n_frames} frames)")
            frame_rows = np.unique(requested)  # h5py reads need increasing indices
            counts = np.diff(offsets)[frame_rows]
            atom_rows = np.repeat(offsets[frame_rows] - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
            new_offsets = np.concatenate([[0], np.cumsum(counts)])

        def column(name: str, rows: slice | np.ndarray) -> np.ndarray:
            ds = h5[name]
            if isinstance(rows, np.ndarray) and len(rows) == 0:
                return ds[:0]
            return ds[rows]

        arrays = FrameArrays(
            n_states=metadata.n_states,
            atom_offsets=new_offsets,
            numbers=column("atoms/numbers", atom_rows),
            positions=column(f"atoms/{POSITIONS}", atom_rows),
            energies=column(f"frames/{ENERGIES}", frame_rows),
            forces=column(f"atoms/{FORCES}", atom_rows),
            nacs=column(f"atoms/{NACS}", atom_rows),
            dipoles=column(f"frames/{DIPOLES}", frame_rows),
            charge=column(f"frames/{CHARGE}", frame_rows),
            multiplicity=column(f"frames/{MULTIPLICITY}", frame_rows),
            masks={label: column(f"masks/{label}", frame_rows) for label in (*LABELS, *FRAME_INTEGERS)},
            provenance=[p.decode() if isinstance(p, bytes) else str(p) for p in column("frames/provenance", frame_rows)],
        )
    if indices is None:
        return arrays
    return arrays.select(np.searchsorted(frame_rows, requested))


def count_frames(path: str | os.PathLike[str]) -> int:
    """Number of committed frames in a dataset file."""
    with open_h5(path) as h5:
        return int(h5["frames/atom_offsets"].shape[0] - 1)


def append_frames(
    path: str | os.PathLike[str],
    frames: Sequence[Frame] | FrameArrays,
    metadata: DatasetMetadata | None = None,
    source: str | None = None,
) -> int:
    """Append frames to `path` in one atomic commit, creating the file (with `metadata`) if it is missing.

    Frames are validated first (shapes, finite values, known elements); a DataError names `source` (default:
    the dataset path) and the offending frame. Returns the number of frames in the file after the commit.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path):
        exists = path.exists()
        if exists:
            existing = read_metadata(path)
            if metadata is not None and metadata.n_states != existing.n_states:
                raise DataError(path, "n_states", f"file has {existing.n_states} states, new frames have {metadata.n_states}")
            metadata = existing
        elif metadata is None:
            raise DataError(path, "file", "does not exist and no metadata was given to create it")
        arrays = frames if isinstance(frames, FrameArrays) else FrameArrays.from_frames(
            [f.validated(metadata.n_states, source or str(path), f"frame {k}") for k, f in enumerate(frames)],
            metadata.n_states,
        )
        if arrays.n_states != metadata.n_states:
            raise DataError(path, "n_states", f"file has {metadata.n_states} states, new frames have {arrays.n_states}")
        if not exists:  # a new file is written whole beside `path` and renamed into place
            discard_journal(path)  # one left beside a removed file
            with atomic_h5_update(path, locked=True) as h5:
                _create_layout(h5, metadata)
                _append_arrays(h5, arrays)
                return int(h5["frames/atom_offsets"].shape[0] - 1)
        if arrays.n_frames == 0:
            return count_frames(path)
        with journaled_h5_update(path, locked=True) as h5:  # in place, through a journal: costs what it changes
            _append_arrays(h5, arrays)
            return int(h5["frames/atom_offsets"].shape[0] - 1)


def create_dataset(path: str | os.PathLike[str], metadata: DatasetMetadata, overwrite: bool = False) -> None:
    """Create an empty dataset file (atomically). Refuses to overwrite unless asked."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise DataError(path, "file", "already exists (pass overwrite=True, or --overwrite on the command line)")
        with exclusive_lock(path):
            path.unlink()
            discard_journal(path)
    append_frames(path, [], metadata)


class DatasetWriter:
    """Buffered, crash-safe appender: frames are committed in batches of `commit_every` and on `commit()`/exit.

    A frame returned from `commit()` is durable; frames still in the buffer are lost if the process dies. A commit
    costs what it writes (not a copy of the file), so small batches are fine; larger ones save fsyncs.
    """

    def __init__(self, path: str | os.PathLike[str], metadata: DatasetMetadata | None = None, commit_every: int = 64) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self.commit_every = commit_every
        self._buffer: list[Frame] = []
        if not self.path.exists():
            if metadata is None:
                raise DataError(self.path, "file", "does not exist and no metadata was given to create it")
            append_frames(self.path, [], metadata)
        self.metadata = read_metadata(self.path)

    def add(self, frame: Frame) -> None:
        self._buffer.append(frame)
        if len(self._buffer) >= self.commit_every:
            self.commit()

    def commit(self) -> int:
        """Write the buffered frames atomically; return the number of frames in the file."""
        frames, self._buffer = self._buffer, []
        return append_frames(self.path, frames)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._buffer:
            self.commit()
