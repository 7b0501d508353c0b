"""PySCF as a potential for `exsnn point` and on-the-fly surface hopping:
``pyscf:METHOD/BASIS[,states=3,charge=0,nacs=analytic|overlap|none,etf=1,stability=1,threads=1,workers=W,executor=SPEC]``.

A call computes what the engine asks for and no more: the energies of all states, the gradients of `states` only
(of every state with `all_forces`; analytic couplings of excited pairs need all of them anyway) and the NACs only
when `nacs` is true. What a trajectory (the engine's `trajectories` ids) computed last is remembered: its next SCF
starts from its own converged density (and its next SA-CASSCF from its own converged orbitals, so that it follows
one continuous solution: restarting from the RHF orbitals at every step can land on another solution at distorted
geometries, a jump of up to 1 eV in the energies), and a call at the very same geometry (bit for bit: a hop refresh, a
frustrated-hop check) takes what is already there and computes only what is missing (another state's gradient, the
NACs) on the saved SCF and excited states, without solving them again. Without ids nothing carries over between calls.

The structures of one call run in parallel through `exsnn.parallel` when asked (``workers=N``: N local processes;
``executor=local:N|dask-local:N|dask:ADDRESS``), one structure per worker as in SHARC's parallel trajectories, with
the trajectory's density or saved solution sent along; the pool is started once and kept for the potential's
lifetime. The default runs in this process.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from exsnn.data.properties import n_dipole_pairs, state_pairs
from exsnn.errors import ConfigurationError
from exsnn.parallel.executors import DEFAULT_ATTEMPTS, WorkerDied, WorkPool, open_pool
from exsnn.potentials.base import Potential, PotentialOutput
from exsnn.qm.pyscf_backend import WORKER_MODULES, StructureTask, run_structure_task
from exsnn.qm.results import QMResult, SavedStates
from exsnn.qm.settings import QMSettings, parse_qm_spec, take_options
from exsnn.qm.validation import check_method
from exsnn.units import AMU_IN_ELECTRON_MASS

EXECUTOR_KINDS = ("serial", "local", "dask-local", "dask")


@dataclass(frozen=True)
class PotentialSpec:
    """A parsed `pyscf:` argument: the quantum chemistry, and where the structures of a call run."""

    settings: QMSettings
    executor: str = "serial"  # an exsnn.parallel spec
    max_attempts: int = DEFAULT_ATTEMPTS  # tries of a structure whose worker dies


def _positive(key: str, value: str, argument: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigurationError(f"{key} must be a positive integer, got {value!r}", source=f"pyscf:{argument}")
    return number


def _executor(workers: int | None, executor: str | None, argument: str) -> str:
    """The exsnn.parallel spec for `workers=` and `executor=` (default: serial, in this process)."""
    if executor is None:
        return "serial" if workers is None else f"local:{workers}"
    kind, _, count = executor.partition(":")
    if kind not in EXECUTOR_KINDS:
        raise ConfigurationError(f"executor must be serial, local[:N], dask-local[:N] or dask:ADDRESS, got {executor!r}",
                                 source=f"pyscf:{argument}")
    if workers is None:
        return executor
    if kind not in ("local", "dask-local") or (count and count != str(workers)):
        raise ConfigurationError(f"workers={workers} contradicts executor={executor}", source=f"pyscf:{argument}")
    return f"{kind}:{workers}"


def parse_spec(argument: str) -> PotentialSpec:
    """'tda-hf/sto-3g,states=3,charge=1,nacs=none,workers=2' -> PotentialSpec: the potential's own options
    (workers, executor, max_attempts) are taken out, the rest is the QM spec grammar of `exsnn.qm.settings`."""
    source = f"pyscf:{argument}"
    rest, own = take_options(argument, ("workers", "executor", "max_attempts"))
    workers = None if "workers" not in own else _positive("workers", own["workers"], argument)
    attempts = DEFAULT_ATTEMPTS if "max_attempts" not in own else _positive("max_attempts", own["max_attempts"], argument)
    settings = parse_qm_spec(rest, source=source)
    return PotentialSpec(settings, _executor(workers, own.get("executor"), argument), attempts)


@dataclass
class TrajectoryMemory:
    """What one trajectory's last calculation left: its geometry (n, 3) Bohr, converged density, saved solution and
    labels (energies (N,) Hartree, forces (n, N, 3) Hartree/Bohr with NaN where not computed, NACs (n, P, 3) or None)."""

    positions: np.ndarray
    density: np.ndarray
    saved: SavedStates | None
    energies: np.ndarray
    forces: np.ndarray
    nacs: np.ndarray | None
    dipoles: np.ndarray | None = None  # (Pd, 3) e*Bohr, when the method gives every pair (SA-CASSCF)
    orbitals: np.ndarray | None = None  # (nao, nmo) converged SA-CASSCF orbitals

    @classmethod
    def of(cls, positions: np.ndarray, result: QMResult) -> TrajectoryMemory:
        assert result.energies is not None and result.forces is not None and result.density is not None
        return cls(positions, result.density, result.saved, result.energies, result.forces, result.nacs, result.dipoles,
                   result.orbitals)

    def at(self, positions: np.ndarray) -> bool:
        """The same geometry, bit for bit."""
        return positions.shape == self.positions.shape and positions.tobytes() == self.positions.tobytes()

    def missing(self, gradients: list[int]) -> list[int]:
        return [k for k in gradients if not np.all(np.isfinite(self.forces[:, k]))]

    def completed(self, result: QMResult) -> TrajectoryMemory:
        """These labels plus what `result` computed at the same geometry."""
        forces = self.forces.copy()
        assert result.forces is not None
        forces[:, result.gradient_states] = result.forces[:, result.gradient_states]
        nacs = result.nacs if result.nacs is not None else self.nacs
        dipoles = result.dipoles if result.dipoles is not None else self.dipoles
        return TrajectoryMemory(self.positions, self.density, self.saved, self.energies, forces, nacs, dipoles,
                                self.orbitals)


class PySCFPotential(Potential):
    """PySCF labels of each structure (see module docstring). A failed calculation gives NaN for that structure and a
    warning with its reason (`exsnn point` reports it, surface hopping ends that trajectory); `last_failures` maps
    the positions in the last batch that failed to their reasons (a campaign records them in the frame's provenance).

    Counters of the work done (from what the calculations report): scf_runs (SCF + excited-state solutions),
    gradient_evaluations (state gradients), nac_evaluations (structures whose NACs were computed)."""

    def __init__(self, settings: QMSettings, numbers: np.ndarray, executor: str = "serial",
                 max_attempts: int = DEFAULT_ATTEMPTS) -> None:
        from ase.data import atomic_masses

        self.settings = settings
        self.n_states = settings.n_states
        self.numbers = torch.as_tensor(np.asarray(numbers), dtype=torch.long)
        self.masses = torch.as_tensor(atomic_masses[np.asarray(numbers)] * AMU_IN_ELECTRON_MASS, dtype=torch.float64)
        self.executor = executor
        self.max_attempts = max_attempts
        self.scf_runs = self.gradient_evaluations = self.nac_evaluations = 0
        self.last_failures: dict[int, str] = {}  # position in the last batch -> why PySCF failed there
        self._memory: dict[int, TrajectoryMemory] = {}
        self._pool: WorkPool | None = None
        self._finalizer: weakref.finalize | None = None

    def _run(self, tasks: list[StructureTask]) -> list[QMResult | WorkerDied]:
        if not tasks:
            return []
        if self.executor == "serial":
            return [run_structure_task(task) for task in tasks]
        if self._pool is None:  # started once, kept open across calls (closed by close() or at exit)
            self._pool = open_pool(self.executor, self.settings.threads, self.max_attempts, WORKER_MODULES)
            self._finalizer = weakref.finalize(self, self._pool.close)
        return self._pool.map(run_structure_task, tasks)

    def close(self) -> None:
        """End the worker pool (a later call starts a new one)."""
        if self._finalizer is not None:
            self._finalizer()
        self._pool = self._finalizer = None

    def _task(self, numbers: np.ndarray, geometry: np.ndarray, memory: TrajectoryMemory | None, gradients: list[int],
              nacs: bool) -> tuple[StructureTask | None, TrajectoryMemory | None]:
        """What a structure needs computed (None: nothing) and the memory it completes (None: a new calculation)."""
        if memory is not None and memory.at(geometry):
            missing = memory.missing(gradients)
            missing_nacs = nacs and memory.nacs is None
            if not missing and not missing_nacs:
                return None, memory
            if memory.saved is not None:
                return StructureTask(numbers, geometry, self.settings, tuple(missing), missing_nacs, saved=memory.saved), memory
        guess = None if memory is None else memory.density
        orbitals = None if memory is None else memory.orbitals
        return StructureTask(numbers, geometry, self.settings, tuple(gradients), nacs, guess_dm=guess,
                             guess_orbitals=orbitals), None

    def compute(self, positions: torch.Tensor, states: torch.Tensor | None = None, all_forces: bool = False, nacs: bool = True,
                trajectories: torch.Tensor | None = None) -> PotentialOutput:
        numbers = self.numbers.numpy()
        N, B = self.n_states, len(positions)
        geometries = positions.detach().cpu().to(torch.float64).numpy()
        ids = None if trajectories is None else [int(t) for t in trajectories.detach().cpu().tolist()]
        if ids is not None and len(ids) != B:
            raise ConfigurationError(f"{len(ids)} trajectory ids for {B} structures", source="PySCF potential")
        selected = None if states is None else [int(s) for s in states.detach().cpu().tolist()]
        want_nacs = nacs and self.settings.nacs != "none" and N > 1
        labels: list[TrajectoryMemory | None] = [None] * B
        self.last_failures = {}
        pending: list[tuple[int, StructureTask, TrajectoryMemory | None]] = []
        for b in range(B):
            gradients = list(range(N)) if all_forces else ([] if selected is None else [selected[b]])
            memory = None if ids is None else self._memory.get(ids[b])
            task, base = self._task(numbers, geometries[b].copy(), memory, gradients, want_nacs)
            if task is None:
                labels[b] = base
            else:
                pending.append((b, task, base))
        for (b, task, base), result in zip(pending, self._run([task for _, task, _ in pending])):
            if isinstance(result, WorkerDied) or result.failure is not None:  # NaN rows: the engine ends this trajectory
                failure = result.reason if isinstance(result, WorkerDied) else result.failure
                where = f"structure {b}" + ("" if ids is None else f" (trajectory {ids[b]})")
                warnings.warn(f"PySCF failed at {where}: {failure}", stacklevel=2)
                self.last_failures[b] = str(failure)
                if ids is not None:
                    self._memory.pop(ids[b], None)
                continue
            self.scf_runs += "scf_and_excited" in result.timings
            self.gradient_evaluations += len(result.gradient_states)
            self.nac_evaluations += "nacs" in result.timings
            labels[b] = base.completed(result) if base is not None else TrajectoryMemory.of(task.positions, result)
            if ids is not None:
                self._memory[ids[b]] = labels[b]  # type: ignore[assignment]
        return self._output(labels, selected, all_forces, want_nacs)

    def _output(self, labels: list[TrajectoryMemory | None], selected: list[int] | None, all_forces: bool,
                nacs: bool) -> PotentialOutput:
        N, n, P = self.n_states, self.n_atoms, len(state_pairs(self.n_states))
        energies = np.stack([np.full(N, np.nan) if m is None else m.energies for m in labels])
        forces = np.stack([np.full((N, n, 3), np.nan) if m is None else m.forces.transpose(1, 0, 2) for m in labels])
        out = PotentialOutput(energies=torch.as_tensor(energies))
        if all_forces:
            out.all_forces = torch.as_tensor(forces)
        if selected is not None:
            out.forces = torch.as_tensor(forces[np.arange(len(labels)), selected])
        if nacs:
            out.nacs = torch.as_tensor(np.stack([np.full((P, n, 3), np.nan) if m is None or m.nacs is None
                                                 else m.nacs.transpose(1, 0, 2) for m in labels]))
        if any(m is not None and m.dipoles is not None for m in labels):
            Pd = n_dipole_pairs(N)
            out.dipoles = torch.as_tensor(np.stack([np.full((Pd, 3), np.nan) if m is None or m.dipoles is None
                                                    else m.dipoles for m in labels]))
        return out

    def describe(self) -> str:
        s = self.settings
        where = "" if self.executor == "serial" else f", executor {self.executor}"
        return f"PySCF {s.method_label}/{s.basis}, {s.n_states} states, charge {s.charge}{where}"


def load(prefix: str, argument: str, base_dir: Path, device: str, numbers: np.ndarray | None = None) -> PySCFPotential:
    """Registry loader (exsnn.potentials.spec): `pyscf:METHOD/BASIS[,options]`."""
    if numbers is None:
        raise ConfigurationError("pyscf potentials need the molecule's atoms (give a geometry file)", source="potential")
    spec = parse_spec(argument)
    source = f"pyscf:{argument}"
    spread_out = np.arange(len(numbers))[:, None] * np.array([3.0, 0.0, 0.0])  # only the atoms matter for these checks
    check_method(spec.settings, np.asarray(numbers), spread_out, min_states=1,
                 options={"method": source, "charge": source, "states": source})
    return PySCFPotential(spec.settings, numbers, spec.executor, spec.max_attempts)
