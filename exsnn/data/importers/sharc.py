"""SHARC interface files: geometry from ``QM.in``, labels from ``QM.out``.

QM.out blocks used (atomic units): ``! 0`` basic information (states per multiplicity, natom), ``! 1`` Hamiltonian
(complex N x N; energies are its real diagonal), ``! 2`` dipole matrices (3 x N x N), ``! 3`` gradients (N x natom x 3,
forces = -gradient), ``! 5`` NACs ddr (N x N x natom x 3). Blocks 2, 3 and 5 are optional (their labels are then
masked); block 1 is required. Only singlet-only outputs are accepted.

QM.in: atom count, comment, then ``Element x y z [vx vy vz]`` lines, then keywords; ``unit angstrom|bohr``
(SHARC interfaces assume Angstrom when the keyword is absent).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from exsnn.data.frame import Frame
from exsnn.data.importers.common import ImportedData
from exsnn.data.properties import pair_matrix_to_upper
from exsnn.data.store import DatasetMetadata
from exsnn.errors import DataError
from exsnn.units import length_in_bohr

_BLOCK_HEADER = re.compile(r"^!\s*(\d+)\b(.*)$")


def read_qm_in(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers (n,) and positions (n, 3) in Bohr from a SHARC QM.in."""
    if not path.exists():
        raise DataError(path, "file", "does not exist (QM.in is needed for the geometry)")
    lines = path.read_text().splitlines()
    try:
        n_atoms = int(lines[0].split()[0])
    except (IndexError, ValueError):
        raise DataError(path, "line 1", "expected the number of atoms") from None
    if len(lines) < n_atoms + 2:
        raise DataError(path, "geometry", f"expected {n_atoms} atom lines, file ends after {len(lines) - 2}")
    numbers, positions = [], []
    for k, line in enumerate(lines[2 : 2 + n_atoms], start=3):
        fields = line.split()
        symbol = fields[0].capitalize() if fields else ""
        if symbol not in atomic_numbers:
            raise DataError(path, f"line {k}", f"unknown element {symbol!r}")
        try:
            positions.append([float(x) for x in fields[1:4]])
        except ValueError:
            raise DataError(path, f"line {k}", f"cannot read coordinates from {line.strip()!r}") from None
        if len(positions[-1]) != 3:
            raise DataError(path, f"line {k}", "expected three coordinates")
        numbers.append(atomic_numbers[symbol])
    unit = "angstrom"
    for line in lines[2 + n_atoms :]:
        fields = line.split()
        if len(fields) >= 2 and fields[0].lower() == "unit":
            unit = fields[1]
    try:
        factor = length_in_bohr(unit)
    except ValueError as exc:
        raise DataError(path, "unit", str(exc)) from None
    return np.array(numbers), np.array(positions) * factor


def _split_blocks(path: Path, text: str) -> dict[int, list[str]]:
    blocks: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _BLOCK_HEADER.match(line.strip())
        if match:
            current = blocks.setdefault(int(match.group(1)), [])
            continue
        if current is not None and line.strip():
            current.append(line)
    return blocks


def _matrix(path: Path, block: str, lines: list[str], start: int, rows: int, cols: int, complex_: bool) -> tuple[np.ndarray, int]:
    """Read a 'rows cols' header and the matrix below it from `lines[start:]`; return it and the next index."""
    try:
        header = [int(x) for x in lines[start].split()[:2]]
    except (IndexError, ValueError):
        header = []
    if len(header) != 2:
        raise DataError(path, block, f"expected a '{rows} {cols}' matrix header, got {lines[start].strip()!r}"
                        if start < len(lines) else f"expected a '{rows} {cols}' matrix header, the block ends")
    if header != [rows, cols]:
        raise DataError(path, block, f"expected a {rows}x{cols} matrix, header says {header[0]}x{header[1]}")
    values = []
    for k in range(rows):
        try:
            row = [float(x) for x in lines[start + 1 + k].split()]
        except IndexError:
            raise DataError(path, block, "matrix ends early (truncated file?)") from None
        except ValueError:
            raise DataError(path, block, f"non-numeric value in {lines[start + 1 + k].strip()!r}") from None
        want = 2 * cols if complex_ else cols
        if len(row) != want:
            raise DataError(path, block, f"expected {want} numbers per row, got {len(row)}")
        values.append(row)
    array = np.array(values)
    if complex_:
        array = array[:, 0::2] + 1j * array[:, 1::2]
    return array, start + 1 + rows


def read_qm_out(path: Path, n_atoms: int) -> dict[str, np.ndarray]:
    """Energies (N,), forces (n, N, 3), nacs (n, P, 3), dipoles (Pd, 3) present in a QM.out (atomic units)."""
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    blocks = _split_blocks(path, path.read_text())
    if 1 not in blocks:
        raise DataError(path, "block '! 1 Hamiltonian Matrix'", "missing (energies cannot be read)")
    info = {line.split()[0].lower(): line.split()[1:] for line in blocks.get(0, []) if line.split()}
    if "states" in info:
        per_mult = [int(x) for x in info["states"]]
        if any(per_mult[1:]):
            raise DataError(path, "block '! 0 Basic information': states", f"{per_mult}: only singlet-only outputs are supported")
    if "natom" in info and int(info["natom"][0]) != n_atoms:
        raise DataError(path, "block '! 0 Basic information': natom", f"{info['natom'][0]} atoms, but QM.in has {n_atoms}")
    ham_lines = blocks[1]
    try:
        n_states = int(ham_lines[0].split()[0])
    except (IndexError, ValueError):
        raise DataError(path, "block '! 1 Hamiltonian Matrix'", "expected an 'N N' header") from None
    N = n_states
    hamiltonian, _ = _matrix(path, "block '! 1 Hamiltonian Matrix'", ham_lines, 0, N, N, complex_=True)
    off_diagonal = hamiltonian - np.diag(np.diag(hamiltonian))
    if np.abs(off_diagonal).max() > 1e-8:
        raise DataError(
            path,
            "block '! 1 Hamiltonian Matrix'",
            "has off-diagonal couplings (SOCs); only diagonal singlet Hamiltonians are supported",
        )
    labels: dict[str, np.ndarray] = {"energies": np.real(np.diag(hamiltonian)).copy()}

    if 2 in blocks:
        name = "block '! 2 Dipole Moment Matrices'"
        components, start = [], 0
        for _ in range(3):
            matrix, start = _matrix(path, name, blocks[2], start, N, N, complex_=True)
            components.append(np.real(matrix))
        labels["dipoles"] = pair_matrix_to_upper(np.stack(components, axis=-1), include_diagonal=True)
    if 3 in blocks:
        name = "block '! 3 Gradient Vectors'"
        gradients, start = [], 0
        for _ in range(N):
            matrix, start = _matrix(path, name, blocks[3], start, n_atoms, 3, complex_=False)
            gradients.append(matrix)
        labels["forces"] = -np.stack(gradients, axis=1)
    if 5 in blocks:
        name = "block '! 5 Non-adiabatic couplings (ddr)'"
        nacs = np.zeros((N, N, n_atoms, 3))
        start = 0
        for i in range(N):
            for j in range(N):
                nacs[i, j], start = _matrix(path, name, blocks[5], start, n_atoms, 3, complex_=False)
        labels["nacs"] = pair_matrix_to_upper(nacs, include_diagonal=False).transpose(1, 0, 2)
    return labels


def _find_outputs(source: Path) -> list[Path]:
    if source.is_dir():
        outputs = sorted(source.rglob("QM.out"))
        if not outputs:
            raise DataError(source, "directory", "holds no QM.out file")
        return outputs
    return [source]


def import_sharc(source: str | Path, qm_in: str | Path | None = None) -> ImportedData:
    """Import one QM.out (geometry from `qm_in`, default QM.in beside it) or every QM.out under a directory."""
    source = Path(source)
    if not source.exists():
        raise DataError(source, "file", "does not exist")
    frames: list[Frame] = []
    n_states: int | None = None
    for out_path in _find_outputs(source):
        in_path = Path(qm_in) if qm_in is not None and not source.is_dir() else out_path.with_name("QM.in")
        numbers, positions = read_qm_in(in_path)
        labels = read_qm_out(out_path, len(numbers))
        N = len(labels["energies"])
        if n_states is not None and N != n_states:
            raise DataError(out_path, "states", f"{N} states, earlier outputs had {n_states}")
        n_states = N
        frame = Frame(
            numbers=numbers,
            positions=positions,
            multiplicity=1,
            provenance={"source": "import", "format": "sharc", "file": str(out_path), "geometry_file": str(in_path)},
            **labels,
        )
        frames.append(frame.validated(N, str(out_path), "frame"))
    assert n_states is not None
    metadata = DatasetMetadata(
        n_states=n_states, program="SHARC interface", extra={"imported_from": str(source), "source_format": "sharc"}
    )
    return ImportedData(metadata=metadata, frames=frames)
