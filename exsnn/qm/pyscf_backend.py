"""One labelled geometry with PySCF: SCF with retries, TDA/TDDFT roots with checks, gradients, transition dipoles,
and NACs (analytic, or from finite differences of wavefunction overlaps). Every failure is caught and returned with its
reason; nothing here raises for a bad geometry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exsnn.qm.settings import QMSettings


class QMFailure(Exception):
    """A calculation that could not give trustworthy results; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ExcitedStates:
    """Ground + excited states at one geometry: the PySCF objects and what was read from them (atomic units)."""

    mol: Any
    mf: Any
    td: Any | None
    energies: np.ndarray  # (N,)
    roots: list[int]  # indices of the kept TD roots
    scf_attempts: list[str]

    def density(self) -> np.ndarray:
        """Ground-state AO density matrix (nao, nao)."""
        return np.asarray(self.mf.make_rdm1())

    def amplitudes(self) -> tuple[np.ndarray, np.ndarray]:
        """Excitation and de-excitation amplitudes X, Y (R, nocc, nvir) of the kept roots, normalised to
        X.X - Y.Y = 1 (PySCF stores them divided by sqrt(2)); Y = 0 for TDA."""
        X, Y = [], []
        for root in self.roots:
            x, y = self.td.xy[root]
            x = np.asarray(x)
            y = np.zeros_like(x) if np.isscalar(y) else np.asarray(y)
            norm = np.sqrt(np.sum(x * x) - np.sum(y * y))
            X.append(x / norm)
            Y.append(y / norm)
        return np.array(X), np.array(Y)


@dataclass
class QMResult:
    """Labels of one geometry, or the reason it failed. Arrays in atomic units, exsnn layout."""

    energies: np.ndarray | None = None  # (N,)
    forces: np.ndarray | None = None  # (n, N, 3)
    nacs: np.ndarray | None = None  # (n, P, 3)
    nac_numerators: np.ndarray | None = None  # (n, P, 3) h_ij = (E_j - E_i) d_ij, Hartree/Bohr (analytic NACs)
    transition_dipoles: np.ndarray | None = None  # (N-1, 3) S0 -> Sk
    oscillator_strengths: np.ndarray | None = None  # (N-1,)
    failure: str | None = None
    reference_overlaps: list[float] | None = None  # |<state k at the reference|state k here>|, k = 0..N-1
    root_flips: list[list[float]] | None = None  # [state here, matching reference state, |overlap|] where they differ
    density: np.ndarray | None = None  # converged ground-state AO density (nao, nao): a start for a nearby geometry
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def build_molecule(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings) -> Any:
    from pyscf import gto

    try:
        return gto.M(atom=[(int(z), tuple(map(float, r))) for z, r in zip(numbers, positions)], unit="Bohr",
                     basis=settings.basis, charge=settings.charge, spin=0, verbose=0)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise QMFailure(f"cannot build the molecule ({type(exc).__name__}: {exc})") from None


def _mean_field(mol: Any, settings: QMSettings) -> Any:
    from pyscf import dft, scf

    if settings.xc == "hf":
        return scf.RHF(mol)
    mf = dft.RKS(mol)
    mf.xc = settings.xc
    return mf


def run_scf(mol: Any, settings: QMSettings, guess_dm: np.ndarray | None = None,
            previous_dm: np.ndarray | None = None, check_stability: bool | None = None) -> tuple[Any, list[str]]:
    """Converge the ground state: from guess_dm (default: PySCF's guess), then from previous_dm (a converged density
    of a nearby geometry, e.g. the reference's or the previous step's) when given, then with a level shift, damping
    and the second-order solver; then follow internal instabilities (settings.check_stability unless given)."""
    if check_stability is None:
        check_stability = settings.check_stability
    attempts: list[str] = []
    strategies: list[tuple[str, np.ndarray | None, dict[str, Any] | None]] = [("default", guess_dm, {})]
    if previous_dm is not None:
        strategies.append(("previous density", previous_dm, {}))
    strategies += [("level shift 0.3", guess_dm, {"level_shift": 0.3}),
                   ("damping 0.5", guess_dm, {"damp": 0.5, "diis_start_cycle": 4}), ("second order", guess_dm, None)]
    for name, start, options in strategies:
        mf = _mean_field(mol, settings)
        mf.conv_tol = settings.scf_conv_tol
        mf.conv_tol_grad = settings.scf_conv_tol_grad
        mf.max_cycle = 100
        if options is None:
            mf = mf.newton()
        else:
            for key, value in options.items():
                setattr(mf, key, value)
        try:
            mf.kernel(dm0=start)
        except (np.linalg.LinAlgError, RuntimeError, ValueError) as exc:
            attempts.append(f"{name}: {type(exc).__name__}")
            continue
        attempts.append(f"{name}: {'converged' if mf.converged else 'not converged'}")
        if mf.converged and np.isfinite(mf.e_tot):
            if getattr(mf, "level_shift", 0):  # a level shift biases nothing at convergence, but recheck without it
                mf.level_shift = 0
            if check_stability:
                mf = follow_internal_instabilities(mf, mol, settings, attempts)
            return mf, attempts
    raise QMFailure("SCF did not converge (" + "; ".join(attempts) + ")")


def follow_internal_instabilities(mf: Any, mol: Any, settings: QMSettings, attempts: list[str], max_follow: int = 2) -> Any:
    """Check the converged closed-shell solution for an internal (RHF -> RHF / RKS -> RKS) instability, a saddle point
    of the energy whose excited states would be meaningless; rotate the orbitals along the unstable direction and
    converge again, at most max_follow times. Raises QMFailure if it stays unstable."""
    for _ in range(max_follow + 1):
        # only the lowest orbital-Hessian eigenvalue matters: one Davidson root (PySCF's default of three costs 2x)
        rotated, _, stable, _ = mf.stability(internal=True, external=False, return_status=True, nroots=1)
        if stable:
            return mf
        if len([a for a in attempts if a.startswith("internal instability")]) >= max_follow:
            break
        energy = mf.e_tot
        follow = _mean_field(mol, settings)
        follow.conv_tol, follow.conv_tol_grad, follow.max_cycle = settings.scf_conv_tol, settings.scf_conv_tol_grad, 100
        follow.kernel(dm0=mf.make_rdm1(rotated, mf.mo_occ))
        attempts.append(f"internal instability at E = {energy:.8f}: followed, "
                        f"{'converged' if follow.converged else 'not converged'} at E = {follow.e_tot:.8f}")
        if not follow.converged:
            break
        mf = follow
    raise QMFailure("SCF solution internally unstable (" + "; ".join(attempts) + ")")


def excited_states(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, guess_dm: np.ndarray | None = None,
                   previous_dm: np.ndarray | None = None, check_stability: bool | None = None) -> ExcitedStates:
    """SCF + the lowest n_states - 1 singlet roots, checked (stable reference, converged, enough roots, positive
    excitations)."""
    from pyscf.lib import num_threads

    num_threads(settings.threads)
    mol = build_molecule(numbers, positions, settings)
    mf, attempts = run_scf(mol, settings, guess_dm, previous_dm, check_stability)
    n_roots = settings.n_states - 1
    if n_roots == 0:
        return ExcitedStates(mol, mf, None, np.array([mf.e_tot]), [], attempts)
    n_occ = int((mf.mo_occ > 0).sum())
    available = n_occ * (len(mf.mo_occ) - n_occ)
    if n_roots > available:
        raise QMFailure(f"{n_roots} excited states asked, but only {available} singlet excitations exist in this basis")
    if settings.excited == "tda":
        td = mf.TDA()
    else:
        td = mf.TDHF() if settings.xc == "hf" else mf.TDDFT()  # full TDHF / TDDFT (RPA)
    td.nstates = min(n_roots + settings.extra_roots, available)
    td.conv_tol = settings.td_conv_tol
    td.max_cycle = 200
    if settings.excited == "tda" and available <= settings.dense_limit:
        _diagonalise_tda_exactly(td, n_occ, available)
    else:
        td.kernel()
    converged = np.atleast_1d(td.converged)
    if len(td.e) < n_roots or not np.all(converged[:n_roots]):
        raise QMFailure(f"excited-state roots not converged ({int(np.sum(converged[:n_roots]))} of {n_roots})")
    excitations = np.asarray(td.e[:n_roots])
    if np.any(~np.isfinite(excitations)) or excitations.min() < settings.min_excitation:
        raise QMFailure(f"excitation energy {excitations.min():.2e} Hartree below {settings.min_excitation} (instability or a broken reference)")
    return ExcitedStates(mol, mf, td, np.concatenate([[mf.e_tot], mf.e_tot + excitations]), list(range(n_roots)), attempts)


def _diagonalise_tda_exactly(td: Any, n_occ: int, dimension: int) -> None:
    """Fill td.e, td.xy, td.converged from a dense diagonalisation of the TDA matrix A (singlets)."""
    a_matrix, _ = td.get_ab()
    energies, vectors = np.linalg.eigh(np.asarray(a_matrix).reshape(dimension, dimension))
    n_vir = dimension // n_occ
    keep = td.nstates
    td.e = energies[:keep]
    td.xy = [(vectors[:, k].reshape(n_occ, n_vir) * np.sqrt(0.5), 0) for k in range(keep)]  # PySCF: sum X^2 = 1/2
    td.converged = np.ones(keep, dtype=bool)


def _label_casscf(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, result: QMResult) -> None:
    """SA-CASSCF (equal weights over n_states) energies, analytic gradients and NACs (PySCF's own)."""
    from pyscf import mcscf

    from exsnn.data.properties import state_pairs

    mol = build_molecule(numbers, positions, settings)
    mf, attempts = run_scf(mol, settings)
    result.notes += attempts
    N = settings.n_states
    t = time.perf_counter()
    mc = mcscf.CASSCF(mf, settings.ncas, settings.nelecas).state_average_([1.0 / N] * N)
    mc.conv_tol = settings.scf_conv_tol
    mc.kernel()
    if not mc.converged:
        raise QMFailure("SA-CASSCF did not converge")
    result.energies = np.asarray(mc.e_states)
    if np.any(np.diff(result.energies) < 0):
        raise QMFailure("SA-CASSCF states are not ordered by energy")
    result.timings["scf_and_excited"] = time.perf_counter() - t
    t = time.perf_counter()
    gradient = mc.nuc_grad_method()
    result.forces = -np.stack([gradient.kernel(state=k) for k in range(N)], axis=1)
    result.timings["gradients"] = time.perf_counter() - t
    if settings.nacs == "analytic" and N > 1:
        t = time.perf_counter()
        coupling = mc.nac_method()
        coupling.use_etfs = settings.etf
        result.nacs = np.stack([coupling.kernel(state=(i, j)) for i, j in state_pairs(N)], axis=1)
        result.timings["nacs"] = time.perf_counter() - t


def follow_reference(states: ExcitedStates, reference: Any, result: QMResult) -> None:
    """Match the states to those of a reference geometry by wavefunction overlaps: record the overlaps and any root
    flip (a state whose best match at the reference is another state), and fix each state's sign so that its overlap
    with its match is positive (NACs then carry the reference's phases)."""
    from exsnn.qm.overlap_nacs import cis_wavefunction, state_overlaps

    overlaps = state_overlaps(reference, cis_wavefunction(states))  # (N, N): reference state, state here
    matches = np.abs(overlaps).argmax(axis=0)
    result.reference_overlaps = [float(abs(overlaps[k, k])) for k in range(len(overlaps))]
    result.root_flips = [[k, int(m), float(abs(overlaps[m, k]))] for k, m in enumerate(matches) if m != k]
    for k in range(1, len(overlaps)):
        if overlaps[matches[k], k] < 0:
            root = states.roots[k - 1]
            x, y = states.td.xy[root]
            states.td.xy[root] = (-np.asarray(x), -np.asarray(y) if not np.isscalar(y) else y)


def reference_wavefunction(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings) -> Any:
    """The CIS-like states at a reference geometry, for `label_geometry(..., reference=...)`."""
    from exsnn.qm.overlap_nacs import cis_wavefunction

    if settings.excited == "casscf":
        raise ValueError("following states against a reference geometry needs TDA or TDDFT states (not SA-CASSCF)")
    return cis_wavefunction(excited_states(numbers, positions, settings))


def label_geometry(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, reference: Any = None,
                   guess_dm: np.ndarray | None = None) -> QMResult:
    """Everything the settings ask for at one geometry; failures are returned, not raised. reference: the states at a
    reference geometry (`reference_wavefunction`) to detect root flips against and take phases from; its
    density is also the SCF's second starting point. guess_dm: the SCF's first starting point (AO density)."""
    result = QMResult()
    start = time.perf_counter()
    if settings.excited == "casscf":
        try:
            _label_casscf(numbers, positions, settings, result)
        except QMFailure as exc:
            result.failure, result.energies, result.forces, result.nacs = exc.reason, None, None, None
        except (np.linalg.LinAlgError, RuntimeError, ValueError) as exc:
            result.failure, result.energies, result.forces, result.nacs = f"SA-CASSCF failed ({type(exc).__name__}: {exc})", None, None, None
        result.timings["total"] = time.perf_counter() - start
        return result
    try:
        states = excited_states(numbers, positions, settings, guess_dm=guess_dm,
                                previous_dm=None if reference is None else reference.density())
        result.timings["scf_and_excited"] = time.perf_counter() - start
        result.energies = states.energies
        result.density = states.density()
        result.notes += states.scf_attempts
        if reference is not None and states.td is not None:
            follow_reference(states, reference, result)
        N, n = settings.n_states, len(numbers)
        t = time.perf_counter()
        gradients = np.zeros((n, N, 3))
        gradients[:, 0] = states.mf.nuc_grad_method().kernel()
        if states.td is not None:
            from exsnn.qm.analytic_nacs import excited_gradient_tool

            td_gradient = excited_gradient_tool(states)  # the same Z-vector tolerance as the pair couplings
            for k in range(1, N):
                gradients[:, k] = td_gradient.kernel(state=k)
            dipoles = np.asarray(states.td.transition_dipole())[: N - 1]
            result.transition_dipoles = dipoles
            result.oscillator_strengths = np.asarray(states.td.oscillator_strength())[: N - 1]
        result.forces = -gradients
        result.timings["gradients"] = time.perf_counter() - t
        if settings.nacs == "analytic" and N > 1:
            from exsnn.qm.analytic_nacs import analytic_nacs

            t = time.perf_counter()
            couplings = analytic_nacs(states, gradients, etf=settings.etf)
            result.nacs, result.nac_numerators = couplings.nacs, couplings.numerators
            result.timings["nacs"] = time.perf_counter() - t
        if settings.nacs == "overlap" and N > 1:
            from exsnn.qm.overlap_nacs import finite_difference_nacs

            t = time.perf_counter()
            result.nacs = finite_difference_nacs(numbers, positions, settings, states)
            result.timings["nacs"] = time.perf_counter() - t
        if not (np.all(np.isfinite(result.energies)) and np.all(np.isfinite(result.forces))):
            raise QMFailure("non-finite energies or gradients")
        if result.nacs is not None and not np.all(np.isfinite(result.nacs)):
            raise QMFailure("non-finite NACs (degenerate states)")
    except QMFailure as exc:
        result.failure = exc.reason
    except (np.linalg.LinAlgError, RuntimeError, ValueError, ArithmeticError) as exc:  # inside PySCF: keep the frame
        result.failure = f"{settings.method_label} failed ({type(exc).__name__}: {exc})"
    if result.failure is not None:
        result.energies = result.forces = result.nacs = result.nac_numerators = result.density = None
    result.timings["total"] = time.perf_counter() - start
    return result
