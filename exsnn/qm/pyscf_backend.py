"""One labelled geometry with PySCF: SCF with retries, TDA/TDDFT roots with checks, gradients (all states or those
asked for), transition dipoles, and NACs (analytic, or from finite differences of wavefunction overlaps). A solution
saved from an earlier call at the same geometry is rebuilt instead of solved again. Every failure is caught and
returned with its reason; nothing here raises for a bad geometry."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, replace

import numpy as np

from exsnn.errors import ConfigurationError
from exsnn.qm.analytic_nacs import analytic_nacs, excited_gradient_tool
from exsnn.qm.casscf import label_casscf
from exsnn.qm.excited import excited_states, restore_states
from exsnn.qm.overlap_nacs import CISWavefunction, cis_wavefunction, finite_difference_nacs, state_overlaps
from exsnn.qm.results import ExcitedStates, QMFailure, QMResult, SavedStates
from exsnn.qm.settings import QMSettings

# what a worker imports on start (exsnn.parallel preload): this module and the PySCF parts every calculation uses
WORKER_MODULES = ("exsnn.qm.pyscf_backend", "pyscf.scf", "pyscf.dft", "pyscf.tdscf", "pyscf.grad", "pyscf.hessian.rhf")

__all__ = ["QMFailure", "QMResult", "ExcitedStates", "StructureTask", "excited_states", "follow_reference", "label_geometry",
           "reference_wavefunction", "run_structure_task"]


def follow_reference(states: ExcitedStates, reference: CISWavefunction, result: QMResult) -> None:
    """Match the states to those of a reference geometry by wavefunction overlaps: record the overlaps and any root
    flip (a state whose best match at the reference is another state), and fix each state's sign so that its overlap
    with its match is positive (NACs then carry the reference's phases)."""
    overlaps = state_overlaps(reference, cis_wavefunction(states))  # (N, N): reference state, state here
    matches = np.abs(overlaps).argmax(axis=0)
    result.reference_overlaps = [float(abs(overlaps[k, k])) for k in range(len(overlaps))]
    result.root_flips = [[k, int(m), float(abs(overlaps[m, k]))] for k, m in enumerate(matches) if m != k]
    for k in range(1, len(overlaps)):
        if overlaps[matches[k], k] < 0:
            root = states.roots[k - 1]
            x, y = states.td.xy[root]
            states.td.xy[root] = (-np.asarray(x), -np.asarray(y) if not np.isscalar(y) else y)


def reference_wavefunction(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings) -> CISWavefunction:
    """The CIS-like states at a reference geometry, for `label_geometry(..., reference=...)`."""
    if settings.excited == "casscf":
        raise ConfigurationError("following states against a reference geometry needs TDA or TDDFT states (not SA-CASSCF)")
    return cis_wavefunction(excited_states(numbers, positions, settings))


def gradients_to_compute(settings: QMSettings, asked: Collection[int] | None, nacs: bool) -> list[int]:
    """The states whose gradients a calculation computes: those asked for (None: all), plus every state when the
    analytic couplings of excited pairs need them (h_IJ uses the gradients of S0, I and J)."""
    N = settings.n_states
    if asked is None or (nacs and settings.nacs == "analytic" and N > 2):
        return list(range(N))
    wanted = sorted({int(k) for k in asked})
    if wanted and (wanted[0] < 0 or wanted[-1] >= N):
        raise ConfigurationError(f"gradients of states {wanted} asked for, but there are {N} states (0 to {N - 1})")
    return wanted


def label_geometry(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, reference: CISWavefunction | None = None,
                   guess_dm: np.ndarray | None = None, gradients: Collection[int] | None = None, nacs: bool = True,
                   saved: SavedStates | None = None, keep_states: bool = False,
                   guess_orbitals: np.ndarray | None = None) -> QMResult:
    """Everything the settings ask for at one geometry (positions (n, 3) in Bohr); failures are returned, not raised.

    reference: the states at a reference geometry (`reference_wavefunction`) to detect root flips against and take
    phases from; its density is also the SCF's second starting point. guess_dm: the SCF's first starting point (AO
    density). gradients: the states whose gradients to compute (None: all; the others are NaN). nacs: False skips the
    couplings. saved: the solution of an earlier call at exactly these positions, rebuilt instead of solving the SCF
    and the excited states again (TDA/TDDFT). keep_states: return the solution as `result.saved`. guess_orbitals:
    SA-CASSCF only, the converged orbitals of the previous geometry of a path (`result.orbitals`) as the first start,
    so that a trajectory stays on one continuous SA-CASSCF solution instead of restarting from the RHF orbitals."""
    result = QMResult()
    start = time.perf_counter()
    N, n = settings.n_states, len(numbers)
    if settings.excited == "casscf":  # PySCF's SA-CASSCF gradients come together: all states
        try:
            label_casscf(numbers, positions, settings if nacs else replace(settings, nacs="none"), result,
                         guess_orbitals=guess_orbitals)
            result.gradient_states = list(range(N))
        except QMFailure as exc:
            result.failure, result.energies, result.forces, result.nacs = exc.reason, None, None, None
        except (np.linalg.LinAlgError, RuntimeError, ValueError) as exc:
            result.failure, result.energies, result.forces, result.nacs = (
                f"SA-CASSCF failed ({type(exc).__name__}: {exc})",
                None,
                None,
                None,
            )
        result.timings["total"] = time.perf_counter() - start
        return result
    want_nacs = nacs and settings.nacs != "none" and N > 1
    wanted = gradients_to_compute(settings, gradients, want_nacs)
    try:
        if saved is not None:
            states = restore_states(numbers, positions, settings, saved)
            result.timings["restore"] = time.perf_counter() - start
            result.notes.append("SCF and excited states reused from the saved solution at this geometry")
        else:
            states = excited_states(
                numbers,
                positions,
                settings,
                guess_dm=guess_dm,
                previous_dm=None if reference is None else reference.density(),
            )
            result.timings["scf_and_excited"] = time.perf_counter() - start
            result.notes += states.scf_attempts
            if reference is not None and states.td is not None:
                follow_reference(states, reference, result)
        result.energies = states.energies
        result.density = states.density()
        t = time.perf_counter()
        all_gradients = np.full((n, N, 3), np.nan)
        if 0 in wanted:
            all_gradients[:, 0] = states.mf.nuc_grad_method().kernel()
        if states.td is not None:
            excited = [k for k in wanted if k > 0]
            if excited:
                td_gradient = excited_gradient_tool(states)  # the same Z-vector tolerance as the pair couplings
                for k in excited:
                    all_gradients[:, k] = td_gradient.kernel(state=k)
            result.transition_dipoles = np.asarray(states.td.transition_dipole())[: N - 1]
            result.oscillator_strengths = np.asarray(states.td.oscillator_strength())[: N - 1]
        result.forces = -all_gradients
        result.gradient_states = wanted
        result.timings["gradients"] = time.perf_counter() - t
        if want_nacs and settings.nacs == "analytic":
            t = time.perf_counter()
            couplings = analytic_nacs(states, all_gradients, etf=settings.etf)
            result.nacs, result.nac_numerators = couplings.nacs, couplings.numerators
            result.timings["nacs"] = time.perf_counter() - t
        if want_nacs and settings.nacs == "overlap":
            t = time.perf_counter()
            result.nacs = finite_difference_nacs(numbers, positions, settings, states)
            result.timings["nacs"] = time.perf_counter() - t
        if not (np.all(np.isfinite(result.energies)) and np.all(np.isfinite(result.forces[:, wanted]))):
            raise QMFailure("non-finite energies or gradients")
        if result.nacs is not None and not np.all(np.isfinite(result.nacs)):
            raise QMFailure("non-finite NACs (degenerate states)")
        if keep_states:
            result.saved = states.save()
    except QMFailure as exc:
        result.failure = exc.reason
    except (np.linalg.LinAlgError, RuntimeError, ValueError, ArithmeticError) as exc:  # inside PySCF: keep the frame
        result.failure = f"{settings.method_label} failed ({type(exc).__name__}: {exc})"
    if result.failure is not None:
        result.energies = result.forces = result.nacs = result.nac_numerators = result.density = result.saved = None
        result.gradient_states = []
    result.timings["total"] = time.perf_counter() - start
    return result


@dataclass
class StructureTask:
    """One structure of a potential call, as sent to a worker: the labels asked for (`label_geometry`'s gradients
    and nacs), and what the structure's trajectory brings from its previous calculation: the converged density of
    its last geometry (guess_dm; guess_orbitals for SA-CASSCF) or, at an unchanged geometry, the saved solution
    itself (saved)."""

    numbers: np.ndarray  # (n,)
    positions: np.ndarray  # (n, 3) Bohr
    settings: QMSettings
    gradients: tuple[int, ...] | None = None
    nacs: bool = True
    guess_dm: np.ndarray | None = None
    saved: SavedStates | None = None
    guess_orbitals: np.ndarray | None = None


def run_structure_task(task: StructureTask) -> QMResult:
    """`label_geometry` for one task, keeping the solution (result.saved) for later calls at the same geometry; a
    failure that started from a guess density is retried once from PySCF's own guess (the trajectory may have moved
    far). Top level, so that process pools and Dask can send it to workers."""
    result = label_geometry(
        task.numbers,
        task.positions,
        task.settings,
        guess_dm=task.guess_dm,
        gradients=task.gradients,
        nacs=task.nacs,
        saved=task.saved,
        keep_states=True,
        guess_orbitals=task.guess_orbitals,
    )
    if result.failure is not None and task.guess_dm is not None and task.saved is None:
        retried = label_geometry(
            task.numbers, task.positions, task.settings, gradients=task.gradients, nacs=task.nacs, keep_states=True
        )
        retried.notes.insert(0, f"from the trajectory's previous density: {result.failure}; retried from PySCF's guess")
        return retried
    return result
