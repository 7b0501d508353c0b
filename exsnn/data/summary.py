"""What `exsnn data info` reports: sizes, labels present, value ranges per state, problems found."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from exsnn.data.check import CheckSettings, check_frames
from exsnn.data.frame import FrameArrays
from exsnn.data.properties import DIPOLES, ENERGIES, FORCES, LABELS, NACS, UNITS, dipole_pairs, state_pairs
from exsnn.data.store import DatasetMetadata
from exsnn.units import HARTREE_IN_EV


def _range(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    return [float(values.min()), float(values.max())] if values.size else None


def summarize(arrays: FrameArrays, metadata: DatasetMetadata, settings: CheckSettings | None = None) -> dict[str, Any]:
    """A JSON-ready summary of a dataset (atomic units; the unit of each range is given beside it)."""
    settings = settings or CheckSettings()
    N = metadata.n_states
    atom_mask = {label: np.repeat(arrays.masks[label], arrays.n_atoms) for label in (FORCES, NACS)}
    energies = arrays.energies[arrays.masks[ENERGIES]]
    forces = np.linalg.norm(arrays.forces[atom_mask[FORCES]], axis=-1)  # (atoms, N)
    nacs = np.linalg.norm(arrays.nacs[atom_mask[NACS]], axis=-1)  # (atoms, P)
    dipoles = np.linalg.norm(arrays.dipoles[arrays.masks[DIPOLES]], axis=-1)  # (frames, Pd)
    ranges: dict[str, Any] = {
        "energies": {
            "unit": UNITS[ENERGIES],
            "per_state": {metadata.state_labels[s]: _range(energies[:, s]) for s in range(N)},
        },
        "force_norms": {
            "unit": UNITS[FORCES],
            "per_state": {metadata.state_labels[s]: _range(forces[:, s]) for s in range(N)},
        },
        "nac_norms": {
            "unit": UNITS[NACS],
            "per_pair": {f"{i}{j}": _range(nacs[:, p]) for p, (i, j) in enumerate(state_pairs(N))},
        },
        "dipole_norms": {
            "unit": UNITS[DIPOLES],
            "per_pair": {f"{i}{j}": _range(dipoles[:, p]) for p, (i, j) in enumerate(dipole_pairs(N))},
        },
    }
    if len(energies):
        ranges["excitation_energies_eV"] = {
            metadata.state_labels[s]: _range((energies[:, s] - energies[:, 0]) * HARTREE_IN_EV) for s in range(1, N)
        }
    problems = check_frames(arrays, settings)
    failed = []
    for k, record in enumerate(arrays.provenance):
        reason = json.loads(record).get("failure")
        if reason:
            failed.append({"frame": k, "reason": reason})
    n_atoms = arrays.n_atoms
    return {
        "n_frames": arrays.n_frames,
        "n_atoms_total": int(n_atoms.sum()),
        "atoms_per_frame": [int(n_atoms.min()), int(n_atoms.max())] if len(n_atoms) else None,
        "n_states": N,
        "state_labels": metadata.state_labels,
        "method": metadata.method,
        "basis": metadata.basis,
        "program": metadata.program,
        "program_version": metadata.program_version,
        "labels": {label: int(arrays.masks[label].sum()) for label in LABELS},
        "ranges": ranges,
        "problem_counts": dict(Counter(p.kind for p in problems)),
        "problems": [p.as_dict() for p in problems],
        "failed_frames": failed,
    }


def format_summary(summary: dict[str, Any], path: str, max_problems: int = 12) -> str:
    """Human-readable text of `summarize` output."""
    lines = [
        f"{path}",
        f"  frames: {summary['n_frames']}   atoms: {summary['n_atoms_total']} "
        f"({summary['atoms_per_frame'][0]}-{summary['atoms_per_frame'][1]} per frame)"
        if summary["atoms_per_frame"]
        else f"  frames: {summary['n_frames']}",
        f"  states: {summary['n_states']} ({' '.join(summary['state_labels'])})",
        f"  method: {summary['method'] or '?'} / {summary['basis'] or '?'}   "
        f"program: {summary['program'] or '?'} {summary['program_version']}",
        "  labels present (frames): " + ", ".join(f"{k} {v}" for k, v in summary["labels"].items()),
    ]
    ranges = summary["ranges"]
    for key, title in (
        ("energies", "energy"),
        ("force_norms", "|force| per atom"),
        ("nac_norms", "|NAC| per atom"),
        ("dipole_norms", "|dipole|"),
    ):
        block = ranges[key]
        entries = block.get("per_state") or block.get("per_pair")
        shown = [f"{name} [{r[0]:.6g}, {r[1]:.6g}]" for name, r in entries.items() if r is not None]
        if shown:
            lines.append(f"  {title} ({block['unit']}): " + "; ".join(shown))
    if "excitation_energies_eV" in ranges:
        shown = [
            f"{name} [{r[0]:.3f}, {r[1]:.3f}]" for name, r in ranges["excitation_energies_eV"].items() if r is not None
        ]
        lines.append("  excitation energies (eV): " + "; ".join(shown))
    failed = summary.get("failed_frames", [])
    if failed:
        lines.append(f"  labelling failures: {len(failed)} frames (written without labels)")
        for entry in failed[:max_problems]:
            lines.append(f"    frame {entry['frame']}: {entry['reason']}")
    problems = summary["problems"]
    if not problems:
        lines.append("  data check: no problems found")
    else:
        counts = ", ".join(f"{kind} {count}" for kind, count in summary["problem_counts"].items())
        lines.append(f"  data check: {len(problems)} problems ({counts})")
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for p in problems:
            by_kind.setdefault(p["kind"], []).append(p)
        for kind, items in by_kind.items():
            lines.append(f"    {kind}: frames {_compact([p['frame'] for p in items])}")
            for p in items[: max(1, max_problems // len(by_kind))]:
                lines.append(f"      frame {p['frame']}: {p['reason']}")
    return "\n".join(lines)


def _compact(indices: list[int]) -> str:
    """'0-9, 12, 15-17' from a sorted list of integers."""
    indices = sorted(set(indices))
    parts, start = [], None
    for k, value in enumerate(indices):
        if start is None:
            start = value
        if k + 1 == len(indices) or indices[k + 1] != value + 1:
            parts.append(f"{start}" if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)
