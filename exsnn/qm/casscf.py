"""State-averaged CASSCF singlets (equal weights over the states) with PySCF's analytic gradients and NACs.

What the calculation does, and records in `result.notes` (the frame's provenance):

* Active orbitals: by default the nelecas/2 highest occupied and ncas - nelecas/2 lowest virtual RHF canonical
  orbitals; `settings.cas_orbitals` picks RHF orbitals by 1-based index (PySCF's sort_mo with base=1); `settings.avas`
  projects the occupied and the virtual RHF orbitals onto atomic orbitals (AO labels such as "C 2p", "N 2p" of the
  minimal reference basis, as AVAS does: Sayfutyarova, Sun, Chan and Knizia, J. Chem. Theory Comput. 13, 4063 (2017))
  and keeps the nelecas/2 occupied and ncas - nelecas/2 virtual orbitals with the largest weights, so that the
  active space has the asked size at every geometry. The notes give the indices or the weights (kept and the largest
  left out).
* Singlets only: the CI is solved in the singlet space (PySCF's direct_spin0); PySCF's default determinant solver for
  a closed-shell reference also finds triplets, and averaging over them is not the asked state average (for
  CH2NH2+ SA-3-CASSCF(6,4) it averaged S0 with two triplets and oscillated without converging). That space also
  holds quintets where four or more electrons can be unpaired (CH2NH2+ SA-4-CASSCF(8,6) with a stretched C-N bond:
  a quintet among the four states at 10 of 40 campaign geometries), so the CI solver (`LowestSingletsCI`) asks for
  more roots than states and keeps the lowest singlets. The fallbacks, should that fail: a spin penalty (fix_spin,
  S^2 = 0) on the singlet CI; when the singlet CI fails numerically ("State not singlet"), determinants with a spin
  penalty. Every converged state is checked to be a singlet.
* The RHF only provides starting orbitals: where following its internal instabilities does not stabilise it, the last
  solution is kept as the start rather than the label failing (`exsnn.qm.scf.run_scf`).
* Convergence (settings.casscf_conv_tol, casscf_conv_tol_grad, casscf_max_cycle), attempts in order until one
  converges: from the orbitals of a nearby geometry when given (`guess_orbitals`); from the chosen RHF orbitals.
  Each runs with PySCF's orbital step (0.02), which found the lowest state average wherever starts were compared for
  CH2NH2+ (larger steps converge faster but can land on a higher solution), but can crawl over flat parts of the
  orbital landscape; an unconverged attempt is therefore continued from where it stopped with PySCF's second-order
  (Newton) solver, then with larger steps (0.05), then with smaller ones (0.005). At stretched CH2NH2+ geometries
  (C-N 1.5-2.5 Angstrom, SA-4-CASSCF(8,6)) the first-order solver circled the solution for 100 macro iterations
  (state average steady to 1e-6 Hartree, orbital gradient jumping between 2e-5 and 4e-3) where the second-order one,
  from where it stopped, converged in 1-2 s to a state average slightly below the last first-order one. Every
  attempt is noted with its macro iterations and average energy. With `avas`,
  the default window is a second start whenever its active space differs from the projected one, and the converged
  solution with the lower state-averaged energy is kept (SA-CASSCF has several solutions; the variational one is the
  lowest).
* Labels: energies, analytic gradients of every state (Lagrange multipliers checked converged), NACs of every pair
  d_ij = <psi_i | d psi_j / dR> and h_ij = (E_j - E_i) d_ij (PySCF's `nac_method`, with electron-translation factors
  when settings.etf), S0 -> Sk transition dipoles and oscillator strengths, the dipole matrix of all states (permanent
  and transition, origin at the nuclei's geometric centre), natural-orbital occupations.

References: PySCF's SA-CASSCF gradients and NACs (pyscf.grad.sacasscf, pyscf.nac.sacasscf); the NAC formulation of
Lengsfield, Saxe and Yarkony, J. Chem. Phys. 81, 4549 (1984); electron-translation factors as in Fatehi and Subotnik,
J. Phys. Chem. Lett. 3, 2039 (2012).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from exsnn.data.check import implausible_labels
from exsnn.data.properties import dipole_pairs, state_pairs
from exsnn.errors import ConfigurationError
from exsnn.qm.results import QMFailure, QMResult
from exsnn.qm.scf import build_molecule, run_scf
from exsnn.qm.settings import QMSettings

AVAS_MIN_WEIGHT = 0.1  # an active orbital chosen by AVAS must have at least this weight on the AO labels
LARGE_STEP, SMALL_STEP = 0.05, 0.005  # orbital steps of continued attempts (PySCF's default max_stepsize is 0.02)
SINGLET_TOLERANCE = 1e-4  # <S^2> of a converged state above this is not a singlet
EXTRA_ROOTS = 4  # roots the singlet CI solves for beyond the states, from which it keeps the lowest singlets
# iterations of the gradients' and NACs' Lagrange-multiplier solver (PySCF would take casscf_max_cycle): at stretched
# CH2NH2+ geometries where the second-order solver finished the SA-CASSCF, 100 were too few for 3 of 8 labels of the
# (8,6) campaign; with 400 the one tried was labelled (138 s)
LAGRANGE_MAX_CYCLE = 400
SAME_SPACE = 0.99  # smallest singular value of the overlap of two active spaces above which they count as one


def _ranges(indices: list[int]) -> str:
    """[6, 7, 8, 9, 12] -> '6-9;12'."""
    parts, start = [], None
    for k, index in enumerate(indices):
        if start is None:
            start = index
        if k + 1 == len(indices) or indices[k + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ";".join(parts)


def _active_counts(mf: Any, settings: QMSettings) -> tuple[int, int, int]:
    """(occupied RHF orbitals, active occupied, active virtual) for a closed-shell reference."""
    n_occ = int(np.count_nonzero(mf.mo_occ > 0))
    active_occ = settings.nelecas // 2
    active_vir = settings.ncas - active_occ
    n_mo = mf.mo_coeff.shape[1]
    if active_occ > n_occ or n_occ + active_vir > n_mo:
        raise ConfigurationError(f"casscf({settings.nelecas},{settings.ncas}) needs {active_occ} occupied and {active_vir} "
                                 f"virtual orbitals, but the molecule has {n_occ} occupied and {n_mo - n_occ} virtual")
    return n_occ, active_occ, active_vir


def _canonical(mf: Any, block: np.ndarray) -> np.ndarray:
    """The orbitals spanning `block` (nao, k) that diagonalise the RHF Fock operator, by increasing energy."""
    if block.shape[1] == 0:
        return block
    overlap = mf.mol.intor_symmetric("int1e_ovlp")
    in_mo = mf.mo_coeff.T @ overlap @ block  # block in the RHF orbital basis
    fock = in_mo.T @ (mf.mo_energy[:, None] * in_mo)
    _, rotation = np.linalg.eigh(fock)
    return block @ rotation


def avas_orbitals(mf: Any, labels: tuple[str, ...], settings: QMSettings) -> tuple[np.ndarray, str]:
    """RHF orbitals rotated so that the active space is the nelecas/2 occupied and ncas - nelecas/2 virtual
    combinations with the largest projection onto the AO `labels` of the minimal reference basis (AVAS, fixed size).
    Returns the orbitals (nao, nmo: core, active occupied, active virtual, external; each block canonical) and a note."""
    import scipy.linalg
    from pyscf import gto

    mol = mf.mol
    reference = mol.copy()
    reference.basis = "minao"
    reference.build(False, False)
    chosen = reference.search_ao_label(list(labels))
    if len(chosen) == 0:
        raise ConfigurationError(f"avas: no atomic orbital of the minimal basis matches {';'.join(labels)} "
                                 f"(labels such as {reference.ao_labels()[1].split(' ', 1)[1].strip()!r})")
    n_occ, active_occ, active_vir = _active_counts(mf, settings)
    s_reference = reference.intor_symmetric("int1e_ovlp")[np.ix_(chosen, chosen)]
    s_cross = gto.intor_cross("int1e_ovlp", reference, mol)[chosen] @ mf.mo_coeff  # (labels, nmo)
    projector = s_cross.T @ scipy.linalg.solve(s_reference, s_cross, assume_a="pos")  # weights in the RHF orbitals
    blocks, note = [], [f"active orbitals: AVAS projection onto {';'.join(labels)}"]
    for kind, span, n_active in (("occupied", slice(0, n_occ), active_occ), ("virtual", slice(n_occ, None), active_vir)):
        weights, vectors = np.linalg.eigh(projector[span, span])
        weights, vectors = weights[::-1], vectors[:, ::-1]  # largest weight first
        rotated = mf.mo_coeff[:, span] @ vectors
        if n_active and weights[n_active - 1] < AVAS_MIN_WEIGHT:
            raise QMFailure(f"AVAS: {';'.join(labels)} describe only {int(np.sum(weights >= AVAS_MIN_WEIGHT))} {kind} "
                            f"orbitals (weight >= {AVAS_MIN_WEIGHT}), casscf({settings.nelecas},{settings.ncas}) needs {n_active}")
        left_out = f", largest left out {weights[n_active]:.3f}" if len(weights) > n_active else ""
        note.append(f"{n_active} {kind} with weights {', '.join(f'{w:.3f}' for w in weights[:n_active])}{left_out}")
        blocks.append((rotated[:, :n_active], rotated[:, n_active:]))
    (active_o, core), (active_v, external) = blocks
    orbitals = np.hstack([_canonical(mf, core), _canonical(mf, active_o), _canonical(mf, active_v), _canonical(mf, external)])
    return orbitals, "; ".join(note)


def select_active_orbitals(mf: Any, settings: QMSettings) -> tuple[np.ndarray, str]:
    """Start orbitals (nao, nmo) with the active ones at positions ncore .. ncore + ncas, and a note saying which."""
    from pyscf import mcscf

    n_occ, active_occ, active_vir = _active_counts(mf, settings)
    if settings.avas:
        return avas_orbitals(mf, settings.avas, settings)
    if settings.cas_orbitals:
        n_mo = mf.mo_coeff.shape[1]
        if max(settings.cas_orbitals) > n_mo:
            raise ConfigurationError(f"cas_orbitals {_ranges(sorted(settings.cas_orbitals))}: the basis has {n_mo} orbitals")
        mc = mcscf.CASSCF(mf, settings.ncas, settings.nelecas)
        orbitals = mcscf.addons.sort_mo(mc, mf.mo_coeff, list(settings.cas_orbitals), base=1)
        return orbitals, f"active orbitals: RHF orbitals {_ranges(sorted(settings.cas_orbitals))} (1-based; HOMO is {n_occ})"
    first, last = n_occ - active_occ + 1, n_occ + active_vir
    return mf.mo_coeff, f"active orbitals: RHF orbitals {first}-{last} (1-based; HOMO is {n_occ}; default window)"


def _orthonormal(mf: Any, orbitals: np.ndarray) -> np.ndarray:
    """Orbitals of a nearby geometry made orthonormal here (symmetric orthonormalisation keeps their order)."""
    overlap = orbitals.T @ mf.mol.intor_symmetric("int1e_ovlp") @ orbitals
    values, vectors = np.linalg.eigh(overlap)
    return orbitals @ (vectors / np.sqrt(values)) @ vectors.T


@functools.cache
def _singlet_ci_class() -> type:
    """The singlet CI solver class (built on first use: PySCF is imported lazily)."""
    from pyscf.fci import direct_spin0

    class LowestSingletsCI(direct_spin0.FCISolver):
        """Singlet-space CI (direct_spin0) that returns the lowest `nroots` singlets: it solves for EXTRA_ROOTS more roots
        (more while too few of them are singlets, up to the whole space) and drops those with <S^2> above
        SINGLET_TOLERANCE (quintets, septets). Inside a state average every CI call (kernel and PySCF's approx_kernel,
        which falls back to kernel) goes through here, so the orbitals are optimised for the singlets alone."""

        def kernel(self, h1e: Any, eri: Any, norb: int, nelec: Any, ci0: Any = None, nroots: int | None = None,
                   **kwargs: Any) -> tuple[Any, Any]:
            from math import comb

            from pyscf.fci.spin_op import spin_square0

            wanted = nroots or self.nroots
            n_alpha = nelec // 2 if isinstance(nelec, (int, np.integer)) else nelec[0]
            size = comb(norb, n_alpha) ** 2
            asked = min(wanted + EXTRA_ROOTS, size)
            while True:
                energies, vectors = super().kernel(h1e, eri, norb, nelec, ci0=ci0, nroots=asked, **kwargs)
                energies, vectors = np.atleast_1d(energies), (vectors if isinstance(vectors, list) else [vectors])
                singlets = [k for k, vector in enumerate(vectors)
                            if spin_square0(np.asarray(vector), norb, nelec)[0] < SINGLET_TOLERANCE][:wanted]
                if len(singlets) == wanted or asked >= size:
                    break
                asked = min(2 * asked, size)
            self.eci, self.ci = energies[singlets], [vectors[k] for k in singlets]
            return (self.eci[0], self.ci[0]) if wanted == 1 else (self.eci, self.ci)

    return LowestSingletsCI


SOLVERS = (  # (name, singlet-adapted CI, spin penalty), tried in order by every attempt
    ("singlet CI", True, False),  # the lowest singlets of the singlet space (LowestSingletsCI)
    ("singlet CI with a spin penalty", True, True),  # the penalty lifts quintets too, should the above fail
    ("determinants with a spin penalty", False, True),  # where singlet CI fails numerically ("State not singlet")
)


def _sa_casscf(mf: Any, settings: QMSettings, singlet_ci: bool, penalty: bool, second_order: bool = False) -> Any:
    from pyscf import mcscf

    mc = mcscf.CASSCF(mf, settings.ncas, settings.nelecas)
    if singlet_ci:
        mc.fcisolver = _singlet_ci_class()(mf.mol)
    if penalty:
        mc.fix_spin_(ss=0)
    N = settings.n_states
    mc = mc.state_average_([1.0 / N] * N)
    if second_order:
        mc = mc.newton()
    mc.conv_tol = settings.casscf_conv_tol
    mc.conv_tol_grad = settings.casscf_conv_tol_grad
    mc.max_cycle_macro = settings.casscf_max_cycle
    mc.verbose = 0
    return mc


def _largest_spin(mc: Any, settings: QMSettings) -> float:
    """The largest <S^2> over the states of a SA-CASSCF solution."""
    from pyscf.fci.spin_op import spin_square0

    return max(float(spin_square0(np.asarray(vector), settings.ncas, settings.nelecas)[0]) for vector in mc.ci)


def _attempt(mf: Any, settings: QMSettings, name: str, orbitals: np.ndarray, ci0: Any, step: float | None,
             notes: list[str], second_order: bool = False) -> Any | None:
    """One SA-CASSCF run, with the SOLVERS in turn until one runs without raising and, if it converges, converges to
    singlets only; the PySCF object (the last one that ran, if none gave singlets), or None if all raised. Appends
    what happened to notes."""
    last = None
    for solver, singlet_ci, penalty in SOLVERS:
        mc = _sa_casscf(mf, settings, singlet_ci, penalty, second_order)
        if step is not None:
            mc.max_stepsize = step
        cycles = [0]
        mc.callback = lambda env, cycles=cycles: cycles.__setitem__(0, env.get("imacro", cycles[0]))
        try:
            mc.kernel(orbitals, ci0=ci0)
        except (ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
            notes.append(f"SA-CASSCF from {name} ({solver}): {type(exc).__name__}: {exc}")
            continue
        mc.callback = None
        state = "converged" if mc.converged else "not converged"
        notes.append(f"SA-CASSCF from {name} ({solver}): {state} after {cycles[0]} macro iterations, "
                     f"E_average = {mc.e_tot:.10f}")
        last = mc
        if mc.converged and (spin := _largest_spin(mc, settings)) > SINGLET_TOLERANCE:
            notes.append(f"a state of that solution is not a singlet (<S^2> = {spin:.4f})")
            continue
        if mc.converged and second_order:  # the first-order object, for the gradients and NACs, from its solution
            first_order = _sa_casscf(mf, settings, singlet_ci, penalty)
            first_order.kernel(mc.mo_coeff, ci0=mc.ci)
            if first_order.converged:
                return first_order
            notes.append("the first-order solver did not stay converged at the second-order solution")
            continue
        return mc
    return last


def solve_sa_casscf(mf: Any, settings: QMSettings, guess_orbitals: np.ndarray | None = None) -> tuple[Any, list[str]]:
    """Converged SA-CASSCF over settings.n_states singlets on top of the RHF solution mf, trying the starts and
    fallbacks of the module docstring; returns the PySCF object and notes. Raises QMFailure when nothing converges.
    guess_orbitals: (nao, nmo) converged SA-CASSCF orbitals of a nearby geometry (same atoms and basis)."""
    chosen, choice = select_active_orbitals(mf, settings)
    notes = [choice, f"SA-CASSCF settings: conv_tol {settings.casscf_conv_tol:g}, conv_tol_grad "
                     f"{settings.casscf_conv_tol_grad:g}, at most {settings.casscf_max_cycle} macro iterations per attempt"]
    starts = []
    if guess_orbitals is not None:
        if np.shape(guess_orbitals) == np.shape(mf.mo_coeff):
            starts.append(("the orbitals of a nearby geometry", _orthonormal(mf, np.asarray(guess_orbitals))))
        else:
            notes.append(f"orbitals of a nearby geometry ignored (shape {np.shape(guess_orbitals)}, "
                         f"expected {np.shape(mf.mo_coeff)})")
    for name, orbitals in starts:  # a nearby geometry's orbitals: its solution, when it converges (continuity)
        mc = _converge_from(mf, settings, name, orbitals, notes)
        if mc is not None:
            return mc, notes
    solutions = [mc for name, orbitals in _rhf_starts(mf, settings, chosen)
                 if (mc := _converge_from(mf, settings, name, orbitals, notes)) is not None]
    if not solutions:
        raise QMFailure("SA-CASSCF did not converge (" + "; ".join(notes[2:]) + ")")
    best = min(solutions, key=lambda mc: mc.e_tot)
    if len(solutions) > 1:
        notes.append(f"kept the lowest state average of {len(solutions)} starts: E_average = {best.e_tot:.10f}")
    return best, notes


def _converge_from(mf: Any, settings: QMSettings, name: str, orbitals: np.ndarray, notes: list[str]) -> Any | None:
    """A converged SA-CASSCF from `orbitals` (continued with larger, then smaller steps if the first run stalls), or
    None."""
    first = _attempt(mf, settings, name, orbitals, None, None, notes)
    if first is None:
        return None
    if first.converged:
        return first
    newton = _attempt(mf, settings, f"where it stopped ({name}) with the second-order solver", first.mo_coeff, first.ci,
                      None, notes, second_order=True)
    if newton is not None and newton.converged:
        return newton
    for kind, step in (("larger", LARGE_STEP), ("smaller", SMALL_STEP)):
        mc = _attempt(mf, settings, f"where it stopped ({name}) with {kind} steps", first.mo_coeff, first.ci, step, notes)
        if mc is not None and mc.converged:
            return mc
    return None


def converge_from_orbitals(mf: Any, settings: QMSettings, orbitals: np.ndarray) -> Any | None:
    """Converged SA-CASSCF on top of the RHF solution mf from `orbitals` (nao, nmo), e.g. the converged orbitals of
    another geometry (made orthonormal here), with the continued attempts of `solve_sa_casscf`; None if it does not
    converge. A screen for other solutions at one geometry."""
    mc = _converge_from(mf, settings, "given orbitals", _orthonormal(mf, np.asarray(orbitals)), [])
    return mc if mc is not None and mc.converged else None


def sa_casscf_states(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings) -> tuple[np.ndarray, np.ndarray]:
    """State energies (N,) Hartree and natural occupations of the active orbitals (ncas,), largest first, of SA-CASSCF
    started as a label is (`solve_sa_casscf`), without gradients: for comparing active spaces. Raises QMFailure."""
    mf, _ = run_scf(build_molecule(numbers, positions, settings), settings)
    mc, _ = solve_sa_casscf(mf, settings)
    occupations = np.linalg.eigvalsh(mc.fcisolver.make_rdm1(mc.ci, settings.ncas, settings.nelecas))[::-1]
    return _check_states(mc, settings), occupations


def window_state_average(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings) -> float | None:
    """The SA-CASSCF state-averaged energy (Hartree) from the default window of RHF orbitals alone, no gradients
    (about a second for CH2NH2+): a screen for stored labels that converged to a higher solution. None if it does
    not converge."""
    mf, _ = run_scf(build_molecule(numbers, positions, settings), settings)
    mc = _converge_from(mf, settings, "the default window of RHF orbitals", mf.mo_coeff, [])
    return None if mc is None else float(mc.e_tot)


def _rhf_starts(mf: Any, settings: QMSettings, chosen: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The starts from RHF orbitals: the chosen ones, and with AVAS also the default window when its active space
    is not the AVAS one (a principal angle above ~8 degrees): SA-CASSCF has several solutions, and a projection onto
    AO labels can pick an orbital of the wrong kind where the molecule is distorted (at 90 degrees twist, C 2p;N 2p
    took a sigma orbital into the CH2NH2+ active space and converged 0.13 Hartree higher in the state sum)."""
    starts = [("the chosen RHF orbitals", chosen)]
    if settings.avas:
        ncore = _active_counts(mf, settings)[0] - settings.nelecas // 2
        active = slice(ncore, ncore + settings.ncas)
        overlap = chosen[:, active].T @ mf.mol.intor_symmetric("int1e_ovlp") @ mf.mo_coeff[:, active]
        if np.linalg.svd(overlap, compute_uv=False).min() < SAME_SPACE:
            starts.append(("the default window of RHF orbitals", mf.mo_coeff))
    return starts


def _check_states(mc: Any, settings: QMSettings) -> np.ndarray:
    from pyscf.fci.spin_op import spin_square0

    energies = np.asarray(mc.e_states, dtype=float)
    if not np.all(np.isfinite(energies)):
        raise QMFailure("SA-CASSCF energies are not finite")
    if np.any(np.diff(energies) < 0):
        raise QMFailure("SA-CASSCF states are not ordered by energy")
    for k, vector in enumerate(mc.ci):
        s2 = spin_square0(np.asarray(vector), settings.ncas, settings.nelecas)[0]
        if abs(s2) > SINGLET_TOLERANCE:
            raise QMFailure(f"SA-CASSCF state {k} is not a singlet (<S^2> = {s2:.4f})")
    return energies


def _transition_dipoles(mc: Any, settings: QMSettings) -> np.ndarray:
    """<S0| sum_e r_e |Sk> (N-1, 3), Bohr (the electrons' charge left out, as PySCF's TDDFT transition_dipole)."""
    mol = mc.mol
    with mol.with_common_orig(np.zeros(3)):
        position = mol.intor_symmetric("int1e_r")  # (3, nao, nao)
    active = mc.mo_coeff[:, mc.ncore: mc.ncore + settings.ncas]
    in_active = np.einsum("xpq,pi,qj->xij", position, active, active)
    dipoles = []
    for k in range(1, settings.n_states):
        transition = mc.fcisolver.trans_rdm1(mc.ci[0], mc.ci[k], settings.ncas, settings.nelecas)
        dipoles.append(np.einsum("xij,ij->x", in_active, transition))
    return np.array(dipoles).reshape(-1, 3)


def dipole_matrix(mc: Any, settings: QMSettings) -> np.ndarray:
    """Permanent and transition dipoles <Si| mu |Sj> (Pd, 3), e*Bohr, pairs 00, 01, ..., 11, ... (exsnn's dipole layout):
    the electrons' charge included (mu = sum_a Z_a (R_a - c) - sum_e (r_e - c)), origin c the geometric centre of the
    nuclei (the network's origin; transition dipoles do not depend on it, permanent dipoles of an ion do)."""
    mol = mc.mol
    centre = mol.atom_coords().mean(axis=0)
    with mol.with_common_orig(centre):
        position = mol.intor_symmetric("int1e_r")  # (3, nao, nao)
    nuclear = np.einsum("a,ax->x", mol.atom_charges(), mol.atom_coords() - centre)
    core = mc.mo_coeff[:, : mc.ncore]
    core_dipole = -2.0 * np.einsum("xpq,pi,qi->x", position, core, core)
    active = mc.mo_coeff[:, mc.ncore: mc.ncore + settings.ncas]
    in_active = np.einsum("xpq,pi,qj->xij", position, active, active)
    rows = []
    for i, j in dipole_pairs(settings.n_states):
        density = mc.fcisolver.trans_rdm1(mc.ci[i], mc.ci[j], settings.ncas, settings.nelecas)  # i = j: the state's
        electrons = -np.einsum("xij,ij->x", in_active, density)
        rows.append(nuclear + core_dipole + electrons if i == j else electrons)
    return np.array(rows)


def label_casscf(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, result: QMResult,
                 guess_orbitals: np.ndarray | None = None) -> None:
    """SA-CASSCF (equal weights over n_states singlets) energies, analytic gradients and NACs at positions (n, 3)
    Bohr, into result (exsnn layout, atomic units); notes and timings as the module docstring says. guess_orbitals:
    converged orbitals of a nearby geometry to start from (`reference_orbitals`). Raises QMFailure."""
    from pyscf.lib import num_threads

    num_threads(settings.threads)
    start = time.perf_counter()
    mol = build_molecule(numbers, positions, settings)
    mf, attempts = run_scf(mol, settings)
    result.notes += attempts
    mc, notes = solve_sa_casscf(mf, settings, guess_orbitals)
    result.notes += notes
    energies = _check_states(mc, settings)
    occupations = np.linalg.eigvalsh(mc.fcisolver.make_rdm1(mc.ci, settings.ncas, settings.nelecas))[::-1]
    result.notes.append("SA-CASSCF natural occupations: " + ", ".join(f"{x:.4f}" for x in occupations))
    N, n = settings.n_states, len(numbers)
    dipoles = strengths = None
    if N > 1:
        dipoles = _transition_dipoles(mc, settings)
        strengths = 2.0 / 3.0 * (energies[1:] - energies[0]) * np.sum(dipoles ** 2, axis=1)
    result.timings["scf_and_excited"] = time.perf_counter() - start
    t = time.perf_counter()
    gradient = mc.nuc_grad_method()
    gradient.max_cycle = LAGRANGE_MAX_CYCLE  # PySCF takes the CASSCF's macro-iteration limit otherwise
    gradients = np.zeros((n, N, 3))
    for k in range(N):
        gradients[:, k] = gradient.kernel(state=k)
        if not gradient.converged:
            raise QMFailure(f"SA-CASSCF gradient of state {k}: Lagrange multipliers not converged")
    if not np.all(np.isfinite(gradients)):
        raise QMFailure("non-finite SA-CASSCF gradients")
    result.timings["gradients"] = time.perf_counter() - t
    nacs = numerators = None
    if settings.nacs == "analytic" and N > 1:
        t = time.perf_counter()
        coupling = mc.nac_method()
        coupling.max_cycle = LAGRANGE_MAX_CYCLE
        coupling.use_etfs = settings.etf
        pairs = state_pairs(N)
        numerators = np.zeros((n, len(pairs), 3))  # h_ij (n, P, 3), Hartree/Bohr
        for p, (i, j) in enumerate(pairs):
            # PySCF's state = (a, b) gives <a| d b / dR> (its docstring names the pair the other way round; the sign
            # is checked against finite differences of wavefunction overlaps in tests/test_casscf.py), and with
            # mult_ediff (E_b - E_a) <a| d b / dR>: here h_ij, finite at degeneracies
            numerators[:, p] = coupling.kernel(state=(i, j), mult_ediff=True)
            if not coupling.converged:
                raise QMFailure(f"SA-CASSCF coupling of states {i} and {j}: Lagrange multipliers not converged")
        gaps = np.array([energies[j] - energies[i] for i, j in pairs])
        with np.errstate(divide="ignore", invalid="ignore"):
            nacs = numerators / gaps[None, :, None]
        if not np.all(np.isfinite(nacs)):
            raise QMFailure("non-finite NACs (degenerate states)")
        result.timings["nacs"] = time.perf_counter() - t
    implausible = implausible_labels(-gradients, energies, nacs)
    if implausible:
        raise QMFailure(f"implausible SA-CASSCF labels: {implausible}")
    # only a complete calculation leaves labels in result
    result.nacs, result.nac_numerators = nacs, numerators
    result.energies, result.forces = energies, -gradients
    result.transition_dipoles, result.oscillator_strengths = dipoles, strengths
    result.dipoles = dipole_matrix(mc, settings)
    result.density = np.asarray(mf.make_rdm1())  # RHF density: an SCF start for a nearby geometry
    result.orbitals = np.asarray(mc.mo_coeff)  # SA-CASSCF orbitals: the start that keeps a trajectory on its solution


def reference_orbitals(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings) -> np.ndarray:
    """Converged SA-CASSCF orbitals (nao, nmo) at a reference geometry (positions (n, 3) Bohr): a start for
    `label_casscf(..., guess_orbitals=...)` at nearby geometries. Raises QMFailure."""
    mol = build_molecule(numbers, positions, settings)
    mf, _ = run_scf(mol, settings)
    mc, _ = solve_sa_casscf(mf, settings)
    return np.asarray(mc.mo_coeff)
