"""Linear vibronic coupling (LVC) models in SHARC's format (``LVC.template`` + ``V0.txt``).

Model (atomic units; SHARC's definition): positions are first aligned to the reference geometry (mass-weighted
centring and Kabsch rotation), dx = aligned - reference; for every vibrational mode i (frequency w_i > 0)

    Q_i = sqrt(w_i) * sum_j K_ji * sqrt(m_j * 1822.888486) * dx_j
    V0  = 1/2 sum_i w_i Q_i^2
    H   = diag(epsilon_s + V0 + sum_i kappa_si Q_i) + sum_i lambda_sti Q_i  (off-diagonal, symmetric)

with K the mass-weighted normal modes of V0.txt (rows: Cartesian coordinates atom by atom; columns: modes) and m
in amu. Adiabatic energies, forces and NACs follow from diagonalising H (exsnn.potentials.diabatic); dH/dR includes
the derivative of the alignment (automatic differentiation through the Kabsch rotation), so forces are the exact
gradients of the energies. Transition dipoles come from the template's constant DMX/DMY/DMZ matrices, transformed
to the adiabatic basis and rotated back to the input frame.

File format: line 1 of the template is the path of V0.txt (a path that does not exist is replaced by V0.txt beside
the template); line 2 the number of states per multiplicity (only singlets are supported); then the blocks
``epsilon``, ``kappa``, ``lambda`` (1-based multiplicity, state, mode indices), optional ``charge``, ``SOC R/I`` and
``DMX/DMY/DMZ R/I`` matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers

from exsnn.data.properties import dipole_pairs
from exsnn.errors import ConfigurationError, DataError
from exsnn.potentials.base import Potential, PotentialOutput
from exsnn.potentials.diabatic import adiabatic_from_diabatic

AMU_TO_ME = 1822.888486  # the factor SHARC's LVC definition uses


@dataclass
class ReferenceModes:
    """Contents of V0.txt: numbers (n,), positions (n, 3) Bohr, masses (n,) amu, frequencies (3n,) Hartree,
    modes (3n, 3n) mass-weighted normal modes (rows: coordinates, columns: modes)."""

    numbers: np.ndarray
    positions: np.ndarray
    masses: np.ndarray
    frequencies: np.ndarray
    modes: np.ndarray


@dataclass
class LVCParameters:
    """A singlet LVC model: epsilon (N,), kappa (N, 3n), lam (N, N, 3n) symmetric, dipoles (3, N, N) or None."""

    reference: ReferenceModes
    epsilon: np.ndarray
    kappa: np.ndarray
    lam: np.ndarray
    dipoles: np.ndarray | None
    charge: int = 0


def _floats(path: Path, line_number: int, line: str, count: int | None = None) -> list[float]:
    try:
        values = [float(x) for x in line.split()]
    except ValueError:
        raise DataError(path, f"line {line_number}", f"expected numbers, got {line.strip()!r}") from None
    if count is not None and len(values) != count:
        raise DataError(path, f"line {line_number}", f"expected {count} numbers, got {len(values)}")
    return values


def read_v0(path: str | Path) -> ReferenceModes:
    """Parse SHARC's V0.txt."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    lines = path.read_text().splitlines()
    try:
        start = next(k for k, line in enumerate(lines) if line.strip().lower() == "geometry") + 1
        freq_at = next(k for k, line in enumerate(lines) if line.strip().lower() == "frequencies")
        modes_at = next(k for k, line in enumerate(lines) if line.strip().lower().startswith("mass-weighted normal modes"))
    except StopIteration:
        raise DataError(path, "sections", "needs 'Geometry', 'Frequencies' and 'Mass-weighted normal modes'") from None
    numbers, positions, masses = [], [], []
    for k in range(start, freq_at):
        fields = lines[k].split()
        if not fields:
            continue
        symbol = fields[0].capitalize()
        if symbol not in atomic_numbers:
            raise DataError(path, f"line {k + 1}", f"unknown element {fields[0]!r}")
        values = _floats(path, k + 1, " ".join(fields[1:]), 5)
        numbers.append(atomic_numbers[symbol])
        positions.append(values[1:4])
        masses.append(values[4])
    n3 = 3 * len(numbers)
    frequencies = _floats(path, freq_at + 2, lines[freq_at + 1], n3)
    rows = [_floats(path, modes_at + 2 + r, lines[modes_at + 1 + r], n3) for r in range(n3) if modes_at + 1 + r < len(lines)]
    if len(rows) != n3:
        raise DataError(path, "Mass-weighted normal modes", f"expected {n3} rows, got {len(rows)}")
    return ReferenceModes(np.array(numbers), np.array(positions), np.array(masses), np.array(frequencies), np.array(rows))


def _check_entry(path: Path, line_number: int, key: str, idx: list[int], states: list[int], n3: int) -> None:
    """An epsilon/kappa/lambda entry (0-based multiplicity, states..., [mode]) must name a declared multiplicity, states
    that exist in it and a mode of V0.txt (SHARC keys entries by multiplicity: a triplet line is never a singlet's)."""
    multiplicity = idx[0]
    if not 0 <= multiplicity < len(states) or states[multiplicity] == 0:
        raise DataError(path, f"line {line_number}", f"{key} entry for multiplicity {multiplicity + 1}, but line 2 declares "
                        f"states per multiplicity {states}")
    n_states = states[multiplicity]
    for state in idx[1:3] if key == "lambda" else idx[1:2]:
        if not 0 <= state < n_states:
            raise DataError(path, f"line {line_number}", f"{key} entry names state {state + 1}, but multiplicity "
                            f"{multiplicity + 1} has {n_states} states")
    if key != "epsilon" and not 0 <= idx[-1] < n3:
        raise DataError(path, f"line {line_number}", f"{key} entry names mode {idx[-1] + 1}, but V0.txt has {n3} modes")


def read_lvc_template(path: str | Path) -> LVCParameters:
    """Parse a SHARC LVC.template (and the V0.txt it names)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    lines = [line for line in path.read_text().splitlines()]
    if len(lines) < 2:
        raise DataError(path, "header", "expected the V0.txt path and the states line")
    v0_path = Path(lines[0].strip())
    if not v0_path.is_absolute():
        v0_path = path.parent / v0_path
    if not v0_path.exists():
        v0_path = path.parent / "V0.txt"
    reference = read_v0(v0_path)
    states = [int(x) for x in _floats(path, 2, lines[1])]
    if any(states[1:]):
        raise DataError(
            path,
            "line 2 (states per multiplicity)",
            f"{states}: only singlet LVC models are supported, not triplets or higher multiplicities",
        )
    N, n3 = states[0], reference.modes.shape[0]
    epsilon, kappa, lam = np.zeros(N), np.zeros((N, n3)), np.zeros((N, N, n3))
    dipoles: np.ndarray | None = None
    charge = 0
    k = 2
    while k < len(lines):
        fields = lines[k].split()
        key = fields[0].lower() if fields else ""
        if key in ("epsilon", "kappa", "lambda"):
            try:
                count = int(lines[k + 1].split()[0])
            except (IndexError, ValueError):
                raise DataError(path, f"line {k + 2}", f"expected the number of {key} entries") from None
            for e in range(count):
                line_number = k + 3 + e
                if line_number - 1 >= len(lines):
                    raise DataError(path, key, "block ends early (truncated file?)")
                values = _floats(path, line_number, lines[line_number - 1])
                idx = [int(v) - 1 for v in values[:-1]]
                expected = {"epsilon": 3, "kappa": 4, "lambda": 5}[key]
                if len(values) == expected:
                    _check_entry(path, line_number, key, idx, states, n3)
                if key == "epsilon" and len(values) == 3:
                    epsilon[idx[1]] = values[-1]
                elif key == "kappa" and len(values) == 4:
                    kappa[idx[1], idx[2]] = values[-1]
                elif key == "lambda" and len(values) == 5:
                    lam[idx[1], idx[2], idx[3]] = lam[idx[2], idx[1], idx[3]] = values[-1]
                else:
                    raise DataError(
                        path, f"line {line_number}", f"malformed {key} entry {lines[line_number - 1].strip()!r}"
                    )
            k += 2 + count
        elif key == "charge":
            charge = int(float(fields[1])) if len(fields) > 1 else 0
            k += 1
        elif key in ("soc", "dmx", "dmy", "dmz"):
            matrix = np.array([_floats(path, k + 2 + r, lines[k + 1 + r], N) for r in range(N)])
            if key == "soc" and np.any(matrix != 0):
                raise DataError(path, f"line {k + 1}", "non-zero spin-orbit couplings are not supported")
            if key.startswith("dm") and fields[1].upper() == "R":
                dipoles = np.zeros((3, N, N)) if dipoles is None else dipoles
                dipoles["xyz".index(key[2])] = matrix
            k += 1 + N
        elif key == "":
            k += 1
        else:
            raise DataError(path, f"line {k + 1}", f"unknown keyword {fields[0]!r}")
    return LVCParameters(reference, epsilon, kappa, lam, dipoles, charge)


def kabsch_align(
    positions: torch.Tensor, reference: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate mass-weighted-centred positions (B, n, 3) onto the centred reference (n, 3).

    Returns (aligned (B, n, 3), rotation (B, 3, 3)) with aligned = centred @ rotation^T. Differentiable.
    """
    w = weights / weights.sum()
    centred = positions - torch.einsum("a,bax->bx", w, positions)[:, None]
    covariance = torch.einsum("bax,a,ay->bxy", centred, weights, reference)
    u, _, vh = torch.linalg.svd(covariance)
    d = torch.sign(torch.linalg.det(vh.transpose(1, 2) @ u.transpose(1, 2)))
    correction = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    rotation = vh.transpose(1, 2) @ correction @ u.transpose(1, 2)
    return centred @ rotation.transpose(1, 2), rotation


class LVCPotential(Potential):
    """A SHARC-format singlet LVC model as a batched potential (float64, CPU or GPU)."""

    def __init__(self, template: str | Path, device: str | torch.device = "cpu") -> None:
        self.path = Path(template)
        self.parameters = read_lvc_template(self.path)
        ref = self.parameters.reference
        self.device = torch.device(device)
        t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=self.device)  # noqa: E731
        self.n_states = len(self.parameters.epsilon)
        self.numbers = torch.as_tensor(ref.numbers, dtype=torch.long, device=self.device)
        self.masses = t(ref.masses * AMU_TO_ME)
        vib = np.flatnonzero(ref.frequencies > 1e-8)
        self._frequencies = t(ref.frequencies[vib])  # (M,)
        mass_per_coordinate = np.repeat(ref.masses, 3) * AMU_TO_ME
        # Q = dx_flat @ transform, transform (3n, M)
        self._transform = t(
            ref.modes[:, vib] * np.sqrt(mass_per_coordinate)[:, None] * np.sqrt(ref.frequencies[vib])[None]
        )
        self._epsilon = t(self.parameters.epsilon)
        self._kappa = t(self.parameters.kappa[:, vib])  # (N, M)
        self._lambda = t(self.parameters.lam[:, :, vib])  # (N, N, M)
        self._weights = t(ref.masses)
        self._reference = t(ref.positions - (ref.masses[:, None] * ref.positions).sum(0) / ref.masses.sum())
        self._dipoles = None if self.parameters.dipoles is None else t(self.parameters.dipoles)

    def normal_coordinates(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dimensionless normal coordinates Q (B, M) and the alignment rotation (B, 3, 3)."""
        aligned, rotation = kabsch_align(positions, self._reference, self._weights)
        dx = (aligned - self._reference).reshape(len(positions), -1)
        return dx @ self._transform, rotation

    def diabatic(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """H (B, N, N) and dH/dQ (B, N, N, M) at normal coordinates q (B, M)."""
        N = self.n_states
        v0 = 0.5 * (self._frequencies * q**2).sum(-1)  # (B,)
        diagonal = self._epsilon + v0[:, None] + q @ self._kappa.T  # (B, N)
        hamiltonian = torch.diag_embed(diagonal) + torch.einsum("stm,bm->bst", self._lambda, q)
        eye = torch.eye(N, dtype=q.dtype, device=q.device)
        dh_dq = (
            eye[None, :, :, None] * (self._frequencies * q)[:, None, None, :]
            + torch.diag_embed(self._kappa.T).permute(1, 2, 0)[None]
            + self._lambda[None]
        )
        return hamiltonian, dh_dq

    def compute(
        self,
        positions: torch.Tensor,
        states: torch.Tensor | None = None,
        all_forces: bool = False,
        nacs: bool = True,
        trajectories: torch.Tensor | None = None,
    ) -> PotentialOutput:
        positions = positions.detach().to(torch.float64).requires_grad_(True)
        with torch.enable_grad():
            q, rotation = self.normal_coordinates(positions)
            # Jacobian dQ/dR (B, M, n, 3): one backward pass per mode (each structure's Q depends only on itself)
            jacobian = torch.stack(
                [torch.autograd.grad(q[:, m].sum(), positions, retain_graph=True)[0] for m in range(q.shape[1])], dim=1
            )
        q, rotation = q.detach(), rotation.detach()
        hamiltonian, dh_dq = self.diabatic(q)
        gradient = torch.einsum("bstm,bmax->bstax", dh_dq, jacobian)
        out = adiabatic_from_diabatic(hamiltonian, gradient, states, all_forces, nacs)
        if self._dipoles is not None:
            vectors = out.state_vectors  # the eigenvectors behind the NACs: dipoles and NACs share each state's sign
            adiabatic = torch.einsum("bki,ckl,blj->bijc", vectors, self._dipoles, vectors)  # reference frame
            lab = torch.einsum("bijc,bcd->bijd", adiabatic, rotation)  # rotate back: v_lab = rotation^T v_ref
            pairs = torch.tensor(dipole_pairs(self.n_states), device=self.device)
            out.dipoles = lab[:, pairs[:, 0], pairs[:, 1]]
        return out

    def harmonic_modes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Reference geometry (n, 3) Bohr, masses (n,) electron masses, vibrational frequencies (M,) Hartree and
        mass-weighted normal modes (3n, M) of the model's ground state (for Wigner sampling)."""
        ref = self.parameters.reference
        vib = np.flatnonzero(ref.frequencies > 1e-8)
        return ref.positions.copy(), ref.masses * AMU_TO_ME, ref.frequencies[vib], ref.modes[:, vib]

    def reference_positions(self) -> torch.Tensor:
        """The reference geometry (n, 3) in Bohr, as given in V0.txt."""
        return torch.as_tensor(self.parameters.reference.positions, dtype=torch.float64, device=self.device)

    def describe(self) -> str:
        return f"LVC model {self.path} ({self.n_states} singlets, {self.n_atoms} atoms)"


def load(prefix: str, argument: str, base_dir: Path, device: str, numbers: object = None) -> LVCPotential:
    """Registry loader (exsnn.potentials.spec): `lvc:PATH/TO/LVC.template`."""
    from exsnn.potentials.spec import resolve_path

    if not argument:
        raise ConfigurationError("lvc needs the template's path: lvc:PATH/TO/LVC.template", source="potential")
    return LVCPotential(resolve_path(argument, base_dir), device=device)
