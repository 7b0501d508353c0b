"""Label every geometry of an input file with PySCF into an exsnn dataset: resumable, parallel, failure-tolerant.

Each output frame's provenance records the input file and index, the method, per-stage timings, adjacent states
closer than 1e-3 Hartree (`near_degenerate_pairs`: their NACs are large; h = gap * d is the finite quantity) and,
for a failed geometry, the reason (its labels are then absent and masked): nothing is dropped or silently kept. Frames already
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

from exsnn.data import DatasetMetadata, DatasetWriter, Frame, read_frames
from exsnn.data.geometries import read_structures
from exsnn.parallel.executors import open_pool
from exsnn.qm.pyscf_backend import label_geometry
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


def _task(job: tuple[int, np.ndarray, np.ndarray, QMSettings]) -> tuple[int, dict[str, Any]]:
    """Worker entry point (top level so that process pools and Dask can pickle it)."""
    index, numbers, positions, settings = job
    result = label_geometry(numbers, positions, settings)
    return index, result.__dict__


def _labelled_indices(output: Path, source: str) -> set[int]:
    if not output.exists():
        return set()
    done = set()
    for record in read_frames(output).provenance:
        data = json.loads(record)
        if data.get("input_file") == source:
            done.add(int(data["input_index"]))
    return done


def label_file(
    source: str | Path, output: str | Path, settings: QMSettings, executor: str = "local", threads: int = 1,
    commit_every: int = 8, progress: bool = True,
) -> LabellingSummary:
    """Label every geometry of `source` into `output` (see module docstring)."""
    start = time.perf_counter()
    source_key = str(Path(source).resolve())
    geometries = read_geometries(source)
    output = Path(output)
    done = _labelled_indices(output, source_key)
    jobs = [(k, numbers, positions, settings) for k, (numbers, positions) in enumerate(geometries) if k not in done]
    metadata = DatasetMetadata(n_states=settings.n_states, method=settings.method_label, basis=settings.basis,
                               program="PySCF", program_version=pyscf.__version__, extra={"settings": settings.as_dict()})
    failures: dict[int, str] = {}
    labelled = 0
    with DatasetWriter(output, metadata, commit_every=commit_every) as writer, open_pool(executor, threads) as pool:
        bar = tqdm(total=len(jobs), disable=not progress, unit="geometry", desc=f"label {settings.method_label}/{settings.basis}")
        for job, (index, result) in pool.map_unordered(_task, jobs):
            numbers, positions = job[1], job[2]
            provenance = {"source": "label", "input_file": source_key, "input_index": index, "method": settings.method_label,
                          "basis": settings.basis, "timings": result["timings"], "scf": result["notes"]}
            if result["failure"] is not None:
                failures[index] = result["failure"]
                provenance["failure"] = result["failure"]
            else:
                labelled += 1
                gaps = np.diff(np.sort(np.asarray(result["energies"])))
                close = [[k, k + 1, float(g)] for k, g in enumerate(gaps) if g < NEAR_DEGENERATE]
                if close:  # couplings blow up as 1/gap here: keep the gaps beside them (h = gap * d stays finite)
                    provenance["near_degenerate_pairs"] = close
                if result["transition_dipoles"] is not None:
                    provenance["transition_dipoles"] = np.asarray(result["transition_dipoles"]).tolist()
                    provenance["oscillator_strengths"] = np.asarray(result["oscillator_strengths"]).tolist()
            writer.add(Frame(numbers=numbers, positions=positions, energies=result["energies"], forces=result["forces"],
                             nacs=result["nacs"], charge=settings.charge, multiplicity=1, provenance=provenance))
            bar.update(1)
        bar.close()
    return LabellingSummary(str(output), labelled, len(failures), len(done), time.perf_counter() - start, failures)
