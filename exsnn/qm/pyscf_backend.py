"""One labelled geometry with PySCF: SCF with retries, TDA/TDDFT roots with checks, gradients, transition dipoles,
and NACs (analytic, or from finite differences of wavefunction overlaps). Every failure is caught and returned with its
reason; nothing here raises for a bad geometry."""

from __future__ import annotations

import time

import numpy as np

from exsnn.errors import ConfigurationError
from exsnn.qm.analytic_nacs import analytic_nacs, excited_gradient_tool
from exsnn.qm.casscf import label_casscf
from exsnn.qm.excited import excited_states
from exsnn.qm.overlap_nacs import CISWavefunction, cis_wavefunction, finite_difference_nacs, state_overlaps
from exsnn.qm.results import ExcitedStates, QMFailure, QMResult
from exsnn.qm.settings import QMSettings

__all__ = ["QMFailure", "QMResult", "ExcitedStates", "excited_states", "follow_reference", "label_geometry", "reference_wavefunction"]


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


def label_geometry(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, reference: CISWavefunction | None = None,
                   guess_dm: np.ndarray | None = None) -> QMResult:
    """Everything the settings ask for at one geometry; failures are returned, not raised. reference: the states at a
    reference geometry (`reference_wavefunction`) to detect root flips against and take phases from; its
    density is also the SCF's second starting point. guess_dm: the SCF's first starting point (AO density)."""
    result = QMResult()
    start = time.perf_counter()
    if settings.excited == "casscf":
        try:
            label_casscf(numbers, positions, settings, result)
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
            td_gradient = excited_gradient_tool(states)  # the same Z-vector tolerance as the pair couplings
            for k in range(1, N):
                gradients[:, k] = td_gradient.kernel(state=k)
            dipoles = np.asarray(states.td.transition_dipole())[: N - 1]
            result.transition_dipoles = dipoles
            result.oscillator_strengths = np.asarray(states.td.oscillator_strength())[: N - 1]
        result.forces = -gradients
        result.timings["gradients"] = time.perf_counter() - t
        if settings.nacs == "analytic" and N > 1:
            t = time.perf_counter()
            couplings = analytic_nacs(states, gradients, etf=settings.etf)
            result.nacs, result.nac_numerators = couplings.nacs, couplings.numerators
            result.timings["nacs"] = time.perf_counter() - t
        if settings.nacs == "overlap" and N > 1:
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
