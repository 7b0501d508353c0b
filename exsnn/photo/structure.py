"""Ground-state structure with PySCF: geometry optimisation through geomeTRIC or pyberny, Hessians and the harmonic
analysis.

* Optimisation: geomeTRIC (Wang and Song, J. Chem. Phys. 144, 214108 (2016), translation-rotation-internal
  coordinates) or pyberny (redundant internal coordinates, Berny algorithm) drive exsnn's own ground-state
  gradient: RHF/RKS through `exsnn.qm.scf.run_scf` (its retries and stability following, each step starting from the
  previous density), SA-CASSCF through `exsnn.qm.pyscf_backend.label_geometry` (the gradient of S0 of the state
  average). Convergence "tight" (default): energy change 1e-8 Hartree, rms/max gradient 1e-5 / 1.5e-5 Hartree/Bohr,
  rms/max step 4e-5 / 6e-5 Angstrom (Gaussian's opt=tight), so that the harmonic analysis finds no spurious
  imaginary modes; "normal" uses the optimisers' defaults.
* Hessian: PySCF's analytic Hessian for RHF and RKS; otherwise (or when asked) central finite differences of the
  analytic gradient, 6n gradients displaced by `step` Bohr, symmetrised, optionally on a work pool
  (`exsnn.parallel`).
* Harmonic analysis: `exsnn.photo.modes.modes_from_hessian` with the masses exsnn's dynamics uses (ASE's standard
  atomic weights), linear molecules with 5 external directions, imaginary modes an error unless allowed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from exsnn.errors import ConfigurationError, ElectronicStructureError
from exsnn.photo.modes import HarmonicModes, modes_from_hessian
from exsnn.qm.settings import QMSettings, parse_qm_spec
from exsnn.units import AMU_IN_ELECTRON_MASS

OPTIMIZERS = ("geometric", "berny")
CONVERGENCE = ("tight", "normal")
HESSIANS = ("auto", "analytic", "numerical")
_GEOMETRIC_TIGHT = {"convergence_energy": 1e-8, "convergence_grms": 1e-5, "convergence_gmax": 1.5e-5,
                    "convergence_drms": 4e-5, "convergence_dmax": 6e-5}
_BERNY_TIGHT = {"gradientmax": 1.5e-5, "gradientrms": 1e-5, "stepmax": 6e-5, "steprms": 4e-5}


def ground_state_settings(spec: str, **options: Any) -> QMSettings:
    """QM settings for ground-state work from 'hf/sto-3g', 'b3lyp/6-31g*' (RHF/RKS; any spec options may follow:
    'hf/sto-3g,charge=1'), or a full excited-state spec ('tda-hf/sto-3g', 'casscf(2,2)/sto-3g,states=2'), whose
    ground state (S0 of the state average for SA-CASSCF) is meant."""
    method = spec.split("/", 1)[0].strip().lower()
    if not method.startswith(("tda-", "tddft-", "casscf", "sa-casscf")):
        spec = "tda-" + spec.strip()
        options.setdefault("n_states", 1)
    return parse_qm_spec(spec, source="--method", **options)


def method_label(settings: QMSettings) -> str:
    if settings.excited == "casscf":
        return f"SA{settings.n_states}-CASSCF({settings.nelecas},{settings.ncas})/{settings.basis} S0"
    return f"{'RHF' if settings.xc == 'hf' else 'RKS-' + settings.xc.upper()}/{settings.basis}"


def default_masses(numbers: np.ndarray) -> np.ndarray:
    """Standard atomic weights (ASE's table, as exsnn's PySCF potential uses) in electron masses (n,)."""
    from ase.data import atomic_masses

    return atomic_masses[np.asarray(numbers)] * AMU_IN_ELECTRON_MASS


def _scf(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, guess: np.ndarray | None = None) -> Any:
    from pyscf.lib import num_threads

    from exsnn.qm.scf import build_molecule, run_scf

    num_threads(settings.threads)
    mol = build_molecule(numbers, positions, settings)
    mf, _ = run_scf(mol, settings, guess_dm=guess)
    return mf


def ground_state_gradient(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings,
                          guess: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Energy (Hartree), gradient (n, 3) Hartree/Bohr and converged density (or None) of the ground state at
    positions (n, 3) Bohr; ElectronicStructureError when the calculation fails."""
    positions = np.asarray(positions, dtype=float)
    if settings.excited == "casscf":
        from exsnn.qm.pyscf_backend import label_geometry

        result = label_geometry(np.asarray(numbers), positions, settings, nacs=False)
        if result.failure is not None or result.energies is None or result.forces is None:
            raise ElectronicStructureError(result.failure or "SA-CASSCF gave no gradient")
        return float(result.energies[0]), -np.asarray(result.forces[:, 0]), None
    mf = _scf(numbers, positions, settings, guess)
    gradient = np.asarray(mf.nuc_grad_method().kernel())
    if not np.all(np.isfinite(gradient)):
        raise ElectronicStructureError("non-finite ground-state gradient")
    return float(mf.e_tot), gradient, np.asarray(mf.make_rdm1())


@dataclass
class OptimizedStructure:
    """Result of a geometry optimisation: positions (n, 3) Bohr, energy (Hartree), gradient (n, 3) at the final
    structure, the energies of every step, whether the optimiser converged."""

    numbers: np.ndarray
    positions: np.ndarray
    energy: float
    gradient: np.ndarray
    converged: bool
    steps: int
    optimizer: str
    method: str
    energies: list[float] = field(default_factory=list)


class _Evaluator:
    """The gradient calls of one optimisation: each SCF starts from the previous density; the last result is kept."""

    def __init__(self, numbers: np.ndarray, settings: QMSettings) -> None:
        self.numbers = np.asarray(numbers)
        self.settings = settings
        self.density: np.ndarray | None = None
        self.energies: list[float] = []
        self.last: tuple[np.ndarray, float, np.ndarray] | None = None

    def __call__(self, positions: np.ndarray) -> tuple[float, np.ndarray]:
        positions = np.asarray(positions, dtype=float).reshape(-1, 3)
        energy, gradient, density = ground_state_gradient(self.numbers, positions, self.settings, self.density)
        self.density = density
        self.energies.append(energy)
        self.last = (positions.copy(), energy, gradient)
        return energy, gradient


def _run_geometric(evaluate: _Evaluator, positions: np.ndarray, max_steps: int, convergence: str, workdir: Path) -> tuple[np.ndarray, bool]:
    import geometric.engine
    import geometric.molecule
    import geometric.nifty
    import geometric.optimize
    from ase.data import chemical_symbols
    from geometric.errors import GeomOptNotConvergedError

    bohr_to_angstrom = geometric.nifty.bohr2ang

    class Engine(geometric.engine.Engine):  # type: ignore[misc]
        def calc_new(self, coords: np.ndarray, dirname: str) -> dict[str, Any]:
            energy, gradient = evaluate(np.asarray(coords).reshape(-1, 3))
            return {"energy": energy, "gradient": gradient.ravel()}

    molecule = geometric.molecule.Molecule()
    molecule.elem = [chemical_symbols[int(z)] for z in evaluate.numbers]
    molecule.xyzs = [np.asarray(positions) * bohr_to_angstrom]
    log_ini = workdir / "log.ini"
    log_ini.write_text(
        "[loggers]\nkeys=root\n[handlers]\nkeys=file\n[formatters]\nkeys=plain\n[logger_root]\nlevel=INFO\nhandlers=file\n"
        f"[handler_file]\nclass=FileHandler\nlevel=INFO\nformatter=plain\nargs=({str(workdir / 'geometric.log')!r}, 'w')\n"
        "[formatter_plain]\nformat=%(message)s\n")
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    options: dict[str, Any] = dict(_GEOMETRIC_TIGHT) if convergence == "tight" else {}
    try:
        progress = geometric.optimize.run_optimizer(customengine=Engine(molecule), input=str(workdir / "opt"),
                                                    logIni=str(log_ini), maxiter=max_steps, **options)
        converged = True
        final = np.asarray(progress.xyzs[-1]) / bohr_to_angstrom
    except GeomOptNotConvergedError:
        converged = False
        final = evaluate.last[0] if evaluate.last is not None else positions
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
    return final, converged


def _run_berny(evaluate: _Evaluator, positions: np.ndarray, max_steps: int, convergence: str) -> tuple[np.ndarray, bool]:
    from ase.data import chemical_symbols
    from berny import Berny, Geometry

    from exsnn.units import BOHR_IN_ANGSTROM

    symbols = [chemical_symbols[int(z)] for z in evaluate.numbers]
    options: dict[str, Any] = dict(_BERNY_TIGHT) if convergence == "tight" else {}
    logger = logging.getLogger("exsnn.photo.berny")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    optimizer = Berny(Geometry(symbols, np.asarray(positions) * BOHR_IN_ANGSTROM), maxsteps=max_steps, logger=logger,
                      symmetry="nowarn", **options)
    final = np.asarray(positions)
    for geometry in optimizer:
        final = np.asarray(geometry.coords) / BOHR_IN_ANGSTROM  # pyberny works in Angstrom
        energy, gradient = evaluate(final)
        optimizer.send((energy, gradient))  # pyberny: coordinates in Angstrom, gradients in Hartree/Bohr
    return final, bool(optimizer.converged)


def optimize_geometry(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, optimizer: str = "geometric",
                      max_steps: int = 100, convergence: str = "tight") -> OptimizedStructure:
    """Optimise the ground state from positions (n, 3) Bohr; ElectronicStructureError if it does not converge in
    max_steps or a calculation fails."""
    if optimizer not in OPTIMIZERS:
        raise ConfigurationError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}", where="optimizer")
    if convergence not in CONVERGENCE:
        raise ConfigurationError(f"convergence must be one of {', '.join(CONVERGENCE)}, got {convergence!r}", where="convergence")
    if max_steps < 1:
        raise ConfigurationError(f"max_steps must be at least 1, got {max_steps}", where="max_steps")
    evaluate = _Evaluator(numbers, settings)
    with tempfile.TemporaryDirectory(prefix="exsnn-opt-") as workdir:
        if optimizer == "geometric":
            final, converged = _run_geometric(evaluate, np.asarray(positions, dtype=float), max_steps, convergence, Path(workdir))
        else:
            final, converged = _run_berny(evaluate, np.asarray(positions, dtype=float), max_steps, convergence)
    if not converged:
        raise ElectronicStructureError(f"the geometry optimisation ({optimizer}) did not converge in {max_steps} steps")
    if evaluate.last is not None and np.allclose(evaluate.last[0], final, atol=1e-10):
        energy, gradient = evaluate.last[1], evaluate.last[2]
    else:
        energy, gradient = evaluate(final)
    return OptimizedStructure(np.asarray(numbers), final, energy, gradient, converged, len(evaluate.energies),
                              optimizer, method_label(settings), list(evaluate.energies))


def analytic_hessian(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings) -> tuple[np.ndarray, float]:
    """PySCF's analytic Hessian (3n, 3n) Hartree/Bohr^2 of RHF/RKS, and the energy."""
    if settings.excited == "casscf":
        raise ConfigurationError("PySCF has no analytic SA-CASSCF Hessian: use the numerical one", where="hessian")
    mf = _scf(numbers, positions, settings)
    hessian = np.asarray(mf.Hessian().kernel())  # (n, n, 3, 3)
    n = len(numbers)
    return hessian.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n), float(mf.e_tot)


def _displaced_gradient(task: tuple[np.ndarray, np.ndarray, QMSettings]) -> np.ndarray:
    numbers, positions, settings = task
    return ground_state_gradient(numbers, positions, settings)[1]


def numerical_hessian(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, step: float = 5e-3,
                      executor: str = "serial") -> tuple[np.ndarray, float]:
    """Central finite differences of the analytic ground-state gradient (3n, 3n) Hartree/Bohr^2, symmetrised, from
    6n gradients at displacements of `step` Bohr (computed on the `exsnn.parallel` pool `executor`); and the energy."""
    from exsnn.parallel import open_pool
    from exsnn.parallel.executors import WorkerDied

    if not step > 0:
        raise ConfigurationError(f"the finite-difference step must be positive, got {step}", where="step")
    positions = np.asarray(positions, dtype=float)
    n = len(numbers)
    energy = ground_state_gradient(numbers, positions, settings)[0]
    tasks = []
    for k in range(3 * n):
        for sign in (1.0, -1.0):
            displaced = positions.copy().ravel()
            displaced[k] += sign * step
            tasks.append((np.asarray(numbers), displaced.reshape(n, 3), settings))
    with open_pool(executor, threads=settings.threads) as pool:
        gradients = pool.map(_displaced_gradient, tasks)
    hessian = np.empty((3 * n, 3 * n))
    for k in range(3 * n):
        plus, minus = gradients[2 * k], gradients[2 * k + 1]
        for value in (plus, minus):
            if isinstance(value, (WorkerDied, BaseException)):
                raise ElectronicStructureError(f"a displaced gradient failed ({value})")
        hessian[k] = (np.asarray(plus).ravel() - np.asarray(minus).ravel()) / (2 * step)
    return 0.5 * (hessian + hessian.T), energy


def harmonic_analysis(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, hessian: str = "auto",
                      allow_imaginary: bool = False, masses: np.ndarray | None = None, step: float = 5e-3,
                      executor: str = "serial") -> HarmonicModes:
    """Frequencies and normal modes of the ground state at positions (n, 3) Bohr (an optimised structure).
    hessian: 'analytic' (RHF/RKS), 'numerical' (finite differences of analytic gradients), 'auto' (analytic where
    PySCF has it). masses (n,) electron masses, default `default_masses`."""
    if hessian not in HESSIANS:
        raise ConfigurationError(f"hessian must be one of {', '.join(HESSIANS)}, got {hessian!r}", where="hessian")
    numbers = np.asarray(numbers)
    use_analytic = hessian == "analytic" or (hessian == "auto" and settings.excited != "casscf")
    if use_analytic:
        matrix, energy = analytic_hessian(numbers, positions, settings)
        how = "analytic Hessian (PySCF)"
    else:
        matrix, energy = numerical_hessian(numbers, positions, settings, step, executor)
        how = f"Hessian from central differences of analytic gradients (step {step:g} Bohr)"
    return modes_from_hessian(numbers, positions, default_masses(numbers) if masses is None else masses, matrix,
                              method=method_label(settings), source=how, energy=energy, allow_imaginary=allow_imaginary)


def with_states(settings: QMSettings, n_states: int) -> QMSettings:
    """The same method with n_states states (S0 included)."""
    return replace(settings, n_states=n_states)
