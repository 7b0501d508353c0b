"""Label every geometry of an input file with PySCF into an exsnn dataset: resumable, parallel, failure-tolerant.

Each output frame's provenance records the input file and index, the method, per-stage timings, adjacent states
closer than 1e-3 Hartree (`near_degenerate_pairs`: [i, j, gap, h] with h = gap * d_ij (n, 3) in Hartree/Bohr, finite
where d_ij is not), overlaps with the states of a reference geometry and root flips against it when one is given
(`reference_overlaps`, `root_flips`; NAC phases then follow the reference) and, for a failed geometry, the reason
(its labels are then absent and masked): nothing is dropped or silently kept. A geometry whose worker process dies
each time it is labelled (out of memory, a crash in compiled code) is such a failed frame too, after `max_attempts`. Frames already
in the output (by input index) are skipped, so a run killed at any point continues where it stopped without
duplicates. Results are committed atomically in batches.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyscf
from tqdm import tqdm

from exsnn.data import DatasetMetadata, DatasetWriter, Frame, count_frames, read_frames, read_metadata
from exsnn.data.geometries import read_structures
from exsnn.data.properties import state_pairs
from exsnn.errors import ConfigurationError, ElectronicStructureError
from exsnn.parallel.executors import DEFAULT_ATTEMPTS, WorkerDied, open_pool
from exsnn.qm.overlap_nacs import CISWavefunction
from exsnn.qm.pyscf_backend import WORKER_MODULES, label_geometry, reference_wavefunction
from exsnn.qm.results import QMFailure
from exsnn.qm.settings import QMSettings

NEAR_DEGENERATE = 1e-3  # Hartree: adjacent states closer than this are recorded in the provenance


@dataclass
class LabellingSummary:
    output: str
    labelled: int
    failed: int
    skipped: int
    seconds: float
    failures: dict[int, str]


def read_geometries(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(numbers, positions in Bohr) of every frame of an XYZ/extxyz (Angstrom unless declared) or exsnn HDF5 file."""
    return [(numbers, positions) for numbers, positions, _ in read_structures(path)]


@dataclass
class LabelJob:
    """One geometry to label: its index in the input, atoms, positions (n, 3) in Bohr, settings and reference."""

    index: int
    numbers: np.ndarray
    positions: np.ndarray
    settings: QMSettings
    reference: CISWavefunction | None


def _task(job: LabelJob) -> dict[str, Any]:
    """Worker entry point (top level so that process pools and Dask can pickle it): the QMResult's fields."""
    result = label_geometry(job.numbers, job.positions, job.settings, reference=job.reference)
    result.density = None  # not stored; keeps the message from the worker small
    return result.__dict__


def near_degenerate_pairs(result: dict[str, Any], threshold: float = 1e-3) -> list[list[Any]]:
    """[i, j, gap (Hartree), h_ij (n, 3) or None] for adjacent states closer than threshold."""
    energies = np.asarray(result["energies"])
    pairs = state_pairs(len(energies))
    close = []
    for k, gap in enumerate(np.diff(energies)):
        if gap < threshold:
            p = pairs.index((k, k + 1))
            if result["nac_numerators"] is not None:
                h = np.asarray(result["nac_numerators"])[:, p].tolist()
            elif result["nacs"] is not None:
                h = (gap * np.asarray(result["nacs"])[:, p]).tolist()
            else:
                h = None
            close.append([k, k + 1, float(gap), h])
    return close


def _reference_states(reference: str | Path, geometries: list[tuple[np.ndarray, np.ndarray]], settings: QMSettings) -> CISWavefunction:
    """The states at the first structure of `reference` (computed once, sent with every task)."""
    numbers, positions = read_geometries(reference)[0]
    if geometries and not np.array_equal(numbers, geometries[0][0]):
        raise ConfigurationError("its atoms differ from those of the input", source=reference, where="--reference")
    try:
        return reference_wavefunction(numbers, positions, settings)
    except QMFailure as exc:
        raise ElectronicStructureError(f"the reference states failed: {exc.reason}", source=reference) from None


def _died(error: WorkerDied) -> dict[str, Any]:
    """The fields of a failed QMResult for a geometry whose worker died each time."""
    return {"energies": None, "forces": None, "nacs": None, "failure": error.reason, "timings": {}, "notes": []}


def _labelled_indices(output: Path, source: str, retry_failed: bool = False) -> set[int]:
    """Input indices of `source` already in `output` (with retry_failed: only those that did not fail)."""
    if not output.exists():
        return set()
    done = set()
    for record in read_frames(output).provenance:
        data = json.loads(record)
        if data.get("input_file") == source and not (retry_failed and data.get("failure")):
            done.add(int(data["input_index"]))
    return done


#: settings that do not change the labels (a resumed run may choose them anew)
FREE_SETTINGS = ("threads",)


def check_resume(output: Path, settings: QMSettings) -> None:
    """A rerun into an existing output must ask for the labels the file holds: ConfigurationError listing what differs.
    A file without frames (left by a run killed before its first commit) is removed: the new run's settings apply."""
    if not output.exists():
        return
    if count_frames(output) == 0:
        output.unlink()
        return
    stored = read_metadata(output).extra.get("settings", {})
    wanted = json.loads(json.dumps(settings.as_dict()))  # as stored: tuples read back as lists
    differ = [f"{key} {stored.get(key)!r} in the file, {value!r} now" for key, value in wanted.items()
              if key not in FREE_SETTINGS and key in stored and stored[key] != value]
    if differ:
        raise ConfigurationError(f"was labelled with other settings ({'; '.join(differ)}); label into another file, "
                                 "or run with the file's settings", source=output, where="settings")


def label_file(
    source: str | Path, output: str | Path, settings: QMSettings, executor: str = "local", threads: int = 1,
    commit_every: int = 8, progress: bool = True, reference: str | Path | None = None, max_attempts: int = DEFAULT_ATTEMPTS,
    retry_failed: bool = False,
) -> LabellingSummary:
    """Label every geometry of `source` into `output` (see module docstring). reference: a geometry file whose first
    structure's states the states of every frame are matched to (root flips, NAC phases). max_attempts: how often a
    geometry whose worker process dies is tried before it is recorded as failed. retry_failed: label again the
    geometries whose earlier attempt failed (the failed frames stay in the file, marked; the new result is appended)."""
    start = time.perf_counter()
    source_key = str(Path(source).resolve())
    geometries = read_geometries(source)
    output = Path(output)
    check_resume(output, settings)
    done = _labelled_indices(output, source_key, retry_failed)
    reference_states = _reference_states(reference, geometries, settings) if reference is not None else None
    jobs = [LabelJob(k, numbers, positions, settings, reference_states)
            for k, (numbers, positions) in enumerate(geometries) if k not in done]
    metadata = DatasetMetadata(
        n_states=settings.n_states,
        method=settings.method_label,
        basis=settings.basis,
        program="PySCF",
        program_version=pyscf.__version__,
        extra={"settings": settings.as_dict()},
    )
    failures: dict[int, str] = {}
    labelled = 0
    with (
        DatasetWriter(output, metadata, commit_every=commit_every) as writer,
        open_pool(executor, threads, max_attempts, WORKER_MODULES) as pool,
    ):
        bar = tqdm(
            total=len(jobs),
            disable=not progress,
            unit="geometry",
            desc=f"label {settings.method_label}/{settings.basis}",
        )
        for job, outcome in pool.map_unordered(_task, jobs):
            index, numbers, positions = job.index, job.numbers, job.positions
            result = _died(outcome) if isinstance(outcome, WorkerDied) else outcome
            provenance = {
                "source": "label",
                "input_file": source_key,
                "input_index": index,
                "method": settings.method_label,
                "basis": settings.basis,
                "timings": result["timings"],
                "scf": result["notes"],
            }
            if result["failure"] is not None:
                failures[index] = result["failure"]
                provenance["failure"] = result["failure"]
            else:
                labelled += 1
                close = near_degenerate_pairs(result, NEAR_DEGENERATE)
                if close:  # couplings blow up as 1/gap here: keep h = gap * d (finite) and the gap beside them
                    provenance["near_degenerate_pairs"] = close
                if result["reference_overlaps"] is not None:
                    provenance["reference_overlaps"] = result["reference_overlaps"]
                    provenance["root_flips"] = result["root_flips"]
                if result["transition_dipoles"] is not None:
                    provenance["transition_dipoles"] = np.asarray(result["transition_dipoles"]).tolist()
                    provenance["oscillator_strengths"] = np.asarray(result["oscillator_strengths"]).tolist()
            writer.add(
                Frame(
                    numbers=numbers,
                    positions=positions,
                    energies=result["energies"],
                    forces=result["forces"],
                    nacs=result["nacs"],
                    dipoles=result.get("dipoles"),
                    charge=settings.charge,
                    multiplicity=1,
                    provenance=provenance,
                )
            )
            bar.update(1)
        bar.close()
    return LabellingSummary(str(output), labelled, len(failures), len(done), time.perf_counter() - start, failures)
