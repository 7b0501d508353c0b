"""SA-CASSCF labels (exsnn.qm.casscf) through label_geometry: singlets only, converged to the CASSCF tolerances,
chosen active orbitals recorded, gradients against finite differences of the energies, NACs against finite
differences of wavefunction overlaps. The CH2NH2+ SA-3-CASSCF(6,4)/6-31G* checks are slow (about a minute each)."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from exsnn.data.properties import state_pairs
from exsnn.qm.casscf import label_casscf, reference_orbitals, solve_sa_casscf
from exsnn.qm.pyscf_backend import label_geometry
from exsnn.qm.results import QMFailure, QMResult
from exsnn.qm.scf import build_molecule, run_scf
from exsnn.qm.settings import QMSettings, parse_qm_spec

ANGSTROM = 1.8897261246257702
HARTREE_IN_EV = 27.211386245988
NUMBERS = np.array([6, 7, 1, 1, 1, 1])
# planar, equilibrium-like CH2NH2+ (Angstrom in the brief, Bohr here)
PLANAR = np.array([[0, 0, 0], [0, 0, 1.28], [0, 0.94, -0.54], [0, -0.94, -0.54], [0, 0.87, 1.85], [0, -0.87, 1.85]]) * ANGSTROM


def twisted(degrees: float) -> np.ndarray:
    """PLANAR with the NH2 group rotated about the C-N axis."""
    a = np.radians(degrees)
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    positions = PLANAR.copy()
    positions[4:] = positions[4:] @ rotation.T
    return positions


def solve(positions: np.ndarray, settings: QMSettings, guess: np.ndarray | None = None):
    """The converged PySCF SA-CASSCF object at positions (Bohr)."""
    mol = build_molecule(NUMBERS, positions, settings)
    mf, _ = run_scf(mol, settings)
    return solve_sa_casscf(mf, settings, guess)[0]


def wavefunction_overlaps(bra, ket, settings: QMSettings) -> np.ndarray:
    """<Psi_i(bra geometry)|Psi_j(ket geometry)> (N, N) of two SA-CASSCF solutions, from the determinant expansion
    (core orbitals in every determinant) and the AO overlap between the two geometries: the basis functions move with
    the atoms, so finite differences of this give the full derivative coupling (no electron-translation factors)."""
    from pyscf import gto
    from pyscf.fci import cistring

    ncore, ncas = bra.ncore, settings.ncas
    occupied = ncore + ncas
    s_mo = bra.mo_coeff[:, :occupied].T @ gto.intor_cross("int1e_ovlp", bra.mol, ket.mol) @ ket.mo_coeff[:, :occupied]
    strings = cistring.make_strings(range(ncas), settings.nelecas // 2)
    orbitals = [list(range(ncore)) + [ncore + k for k in range(ncas) if s >> k & 1] for s in strings]
    D = np.array([[np.linalg.det(s_mo[np.ix_(a, b)]) for b in orbitals] for a in orbitals])
    return np.array([[np.sum(np.asarray(ci) * (D @ np.asarray(cj) @ D.T)) for cj in ket.ci] for ci in bra.ci])


# --- cheap: casscf(2,2)/sto-3g -------------------------------------------------------------------------------------


def test_states_are_singlets() -> None:
    """Regression: PySCF's default CI solver also finds triplets, and the old code averaged S0 with the lowest
    triplet and called it S1. The energies must be those of a singlet-only state average (here: PySCF's spin
    penalty, an independent way to keep triplets out for two states)."""
    from pyscf import mcscf

    settings = parse_qm_spec("casscf(2,2)/sto-3g,states=2,charge=1,nacs=none")
    result = label_geometry(NUMBERS, PLANAR, settings)
    assert result.failure is None, result.failure
    mol = build_molecule(NUMBERS, PLANAR, settings)
    mf, _ = run_scf(mol, settings)
    independent = mcscf.CASSCF(mf, 2, 2).fix_spin_(ss=0).state_average_([0.5, 0.5])
    independent.conv_tol = 1e-10
    independent.kernel()
    np.testing.assert_allclose(result.energies, independent.e_states, atol=1e-7)
    triplet_average = mcscf.CASSCF(mf, 2, 2).state_average_([0.5, 0.5])
    triplet_average.kernel()  # what the old code did: S1 is the triplet, 6.6 eV lower
    assert result.energies[1] - triplet_average.e_states[1] > 0.2


def test_cheap_labels_gradients_and_couplings() -> None:
    settings = parse_qm_spec("casscf(2,2)/sto-3g,states=3,charge=1,casscf_conv_tol=1e-11,casscf_conv_tol_grad=1e-7")
    positions = twisted(30.0)
    positions[2] += [0.05, -0.03, 0.04]  # no symmetry
    result = label_geometry(NUMBERS, positions, settings)
    assert result.failure is None, result.failure
    assert np.all(np.diff(result.energies) > 0) and np.all(np.isfinite(result.forces))
    assert result.forces.shape == (6, 3, 3) and result.nacs.shape == (6, 3, 3) and result.nac_numerators.shape == (6, 3, 3)
    gaps = np.array([result.energies[j] - result.energies[i] for i, j in state_pairs(3)])
    np.testing.assert_allclose(result.nac_numerators, result.nacs * gaps[None, :, None], atol=1e-12)
    np.testing.assert_allclose(result.nacs.sum(axis=0), 0.0, atol=1e-8)  # electron-translation factors
    assert result.oscillator_strengths.shape == (2,) and np.all(result.oscillator_strengths >= 0)
    assert any(note.startswith("active orbitals: RHF orbitals 8-9") for note in result.notes)
    assert any("converged after" in note for note in result.notes)
    h = 1e-3
    for atom, axis in ((1, 2), (2, 0)):
        energies = []
        for sign in (1, -1):
            displaced = positions.copy()
            displaced[atom, axis] += sign * h
            energies.append(solve(displaced, settings).e_states)
        np.testing.assert_allclose(-result.forces[atom, :, axis], (np.array(energies[0]) - energies[1]) / (2 * h), atol=1e-6)


def test_chosen_active_orbitals_by_index_and_by_projection_are_recorded() -> None:
    base = "casscf(2,2)/sto-3g,states=2,charge=1,nacs=none"
    by_index = label_geometry(NUMBERS, PLANAR, parse_qm_spec(base + ",cas_orbitals=8-9"))
    default = label_geometry(NUMBERS, PLANAR, parse_qm_spec(base))
    np.testing.assert_allclose(by_index.energies, default.energies, atol=1e-7)  # 8-9 is the default window here
    assert "active orbitals: RHF orbitals 8-9 (1-based; HOMO is 8)" in by_index.notes
    other = label_geometry(NUMBERS, PLANAR, parse_qm_spec(base + ",cas_orbitals=7;9"))
    assert other.failure is None and "active orbitals: RHF orbitals 7;9 (1-based; HOMO is 8)" in other.notes
    assert abs(other.energies[1] - default.energies[1]) > 1e-3  # another active space, other states
    projected = label_geometry(NUMBERS, PLANAR, parse_qm_spec(base + ",avas=C 2p;N 2p"))
    assert projected.failure is None, projected.failure
    note = next(n for n in projected.notes if n.startswith("active orbitals: AVAS"))
    assert "1 occupied with weights" in note and "1 virtual with weights" in note and "largest left out" in note


def test_starting_from_the_orbitals_of_a_nearby_geometry() -> None:
    settings = parse_qm_spec("casscf(2,2)/sto-3g,states=3,charge=1,nacs=none")
    guess = reference_orbitals(NUMBERS, twisted(20.0), settings)
    from_guess, fresh = QMResult(), QMResult()
    label_casscf(NUMBERS, twisted(22.0), settings, from_guess, guess_orbitals=guess)
    label_casscf(NUMBERS, twisted(22.0), settings, fresh)
    np.testing.assert_allclose(from_guess.energies, fresh.energies, atol=1e-7)
    np.testing.assert_allclose(from_guess.forces, fresh.forces, atol=1e-5)
    assert any(n.startswith("SA-CASSCF from the orbitals of a nearby geometry (singlet CI): converged") for n in from_guess.notes)
    ignored = QMResult()
    label_casscf(NUMBERS, twisted(22.0), settings, ignored, guess_orbitals=guess[:, :5])
    assert any(n.startswith("orbitals of a nearby geometry ignored") for n in ignored.notes) and ignored.energies is not None


def test_converging_from_another_geometrys_solution_finds_the_same_solution_there() -> None:
    from exsnn.qm.casscf import converge_from_orbitals

    settings = parse_qm_spec("casscf(2,2)/sto-3g,states=3,charge=1,nacs=none")
    mf, _ = run_scf(build_molecule(NUMBERS, twisted(22.0), settings), settings)
    mc = converge_from_orbitals(mf, settings, reference_orbitals(NUMBERS, twisted(20.0), settings))
    assert mc is not None and mc.converged
    np.testing.assert_allclose(mc.e_states, solve(twisted(22.0), settings).e_states, atol=1e-7)


def test_where_a_quintet_lies_among_the_states_the_lowest_singlets_are_averaged() -> None:
    """A stretched H4 chain: the singlet CI space (direct_spin0) holds the quintet, which lies among its four lowest
    roots. The solver keeps the four lowest singlets: converged at once, without the spin-penalty fallbacks, with
    forces and couplings that are the derivatives of its energies and wavefunctions (central differences; couplings
    without electron-translation factors, as the overlaps give them)."""
    from pyscf import fci
    from pyscf.fci.spin_op import spin_square0

    settings = parse_qm_spec("casscf(4,4)/sto-3g,states=4,charge=0,etf=0")
    hydrogens = np.ones(4, dtype=int)
    chain = np.array([[0.0, 0.01 * k * k, 2.0 * k] for k in range(4)]) * ANGSTROM  # slightly bent: no symmetry

    def chain_solution(positions: np.ndarray):
        return solve_sa_casscf(run_scf(build_molecule(hydrogens, positions, settings), settings)[0], settings)[0]

    result = QMResult()
    label_casscf(hydrogens, chain, settings, result)
    assert any(n.startswith("SA-CASSCF from the chosen RHF orbitals (singlet CI): converged") for n in result.notes)
    assert not any("not a singlet" in n or "spin penalty" in n for n in result.notes), result.notes
    mc = chain_solution(chain)
    assert max(spin_square0(np.asarray(c), 4, 4)[0] for c in mc.ci) < 1e-4
    h1, core = mc.get_h1eff()
    plain = fci.direct_spin0.FCISolver(mc.mol)
    roots, vectors = plain.kernel(h1, mc.get_h2eff(), 4, 4, nroots=4, ecore=core)
    spins = [spin_square0(np.asarray(v), 4, 4)[0] for v in vectors]
    assert max(spins) > 5.9 and roots[np.argmax(spins)] < mc.e_states[3]  # plain singlet CI: a quintet among the four
    h = 1e-3
    for atom, axis in ((1, 2), (2, 1)):
        shifted = []
        for sign in (1, -1):
            positions = chain.copy()
            positions[atom, axis] += sign * h
            shifted.append(chain_solution(positions))
        np.testing.assert_allclose(-(np.asarray(shifted[0].e_states) - shifted[1].e_states) / (2 * h),
                                   result.forces[atom, :, axis], atol=2e-5)
        overlaps = [wavefunction_overlaps(mc, moved, settings) for moved in shifted]
        overlaps = [o * np.sign(np.diag(o))[None, :] for o in overlaps]  # each moved state in phase with its reference
        numerical = (overlaps[0] - overlaps[1]) / (2 * h)  # <i | d j / dR>
        for p, (i, j) in enumerate(state_pairs(4)):
            np.testing.assert_allclose(result.nacs[atom, p, axis], numerical[i, j], atol=2e-3 * max(1.0, abs(numerical[i, j])))


def test_an_unconverged_first_order_run_is_finished_by_the_second_order_solver() -> None:
    """Two first-order macro iterations do not converge SA-3-CASSCF(2,2) at a twisted CH2NH2+; from where they stopped
    PySCF's second-order solver does (at stretched CH2NH2+ geometries of the (8,6) campaign the first-order solver
    circled its solution for 100 iterations, and the label was lost). The labels then come from a first-order object
    at that solution: the same energies and forces as a first-order run given enough iterations."""
    from pyscf.mcscf import newton_casscf

    quick = parse_qm_spec("casscf(2,2)/sto-3g,states=3,charge=1,casscf_max_cycle=2,nacs=none")
    mc, notes = solve_sa_casscf(run_scf(build_molecule(NUMBERS, twisted(30.0), quick), quick)[0], quick)
    assert any(n.startswith("SA-CASSCF from the chosen RHF orbitals (singlet CI): not converged after 2") for n in notes)
    assert any("with the second-order solver (singlet CI): converged" in n for n in notes)
    assert mc.converged and not isinstance(mc, newton_casscf.CASSCF)  # the object the gradient and NAC code expects
    finished = label_geometry(NUMBERS, twisted(30.0), quick)
    reference = label_geometry(NUMBERS, twisted(30.0), parse_qm_spec("casscf(2,2)/sto-3g,states=3,charge=1,nacs=none"))
    assert finished.failure is None and reference.failure is None
    np.testing.assert_allclose(finished.energies, reference.energies, atol=1e-8)
    np.testing.assert_allclose(finished.forces, reference.forces, atol=1e-5)


def test_a_calculation_that_does_not_converge_is_a_recorded_failure_with_every_attempt() -> None:
    settings = parse_qm_spec("casscf(2,2)/sto-3g,states=3,charge=1,casscf_max_cycle=1,nacs=none")
    result = label_geometry(NUMBERS, twisted(30.0), settings)
    assert result.failure is not None and result.failure.startswith("SA-CASSCF did not converge")
    assert "from the chosen RHF orbitals (singlet CI): not converged after 1 macro iterations" in result.failure
    assert "with the second-order solver" in result.failure
    assert "with larger steps" in result.failure and "with smaller steps" in result.failure
    assert result.energies is None and result.forces is None
    with pytest.raises(QMFailure):
        reference_orbitals(NUMBERS, twisted(30.0), settings)


# --- slow: CH2NH2+ SA-3-CASSCF(6,4)/6-31G* ---------------------------------------------------------------------------


@pytest.mark.slow
def test_ch2nh2_sa3_casscf_6_4_labels_a_planar_geometry() -> None:
    """Regression: 'SA-CASSCF did not converge' at every geometry (the SCF tolerance as the CASSCF tolerance, 50 macro
    iterations, triplets in the average). Now: converged singlets, gradients and NACs of all three pairs; the
    excitation energies of a valence sigma-pi* (dark) and pi-pi* (bright) state, above the MR-CISD/aug-cc-pVDZ
    reference (8.7 and 9.5 eV at a near-planar point of the SchNarc set) as CASSCF without diffuse functions is."""
    settings = parse_qm_spec("casscf(6,4)/6-31g*,states=3,charge=1")
    result = label_geometry(NUMBERS, PLANAR, settings)
    assert result.failure is None, result.failure
    assert np.all(np.diff(result.energies) > 0)
    assert np.all(np.isfinite(result.forces)) and np.all(np.isfinite(result.nacs))
    assert result.nacs.shape == (6, 3, 3)
    np.testing.assert_allclose(result.nacs.sum(axis=0), 0.0, atol=1e-7)
    excitations = (result.energies[1:] - result.energies[0]) * HARTREE_IN_EV
    assert 8.5 < excitations[0] < 9.6 and 10.0 < excitations[1] < 11.0, excitations
    assert result.oscillator_strengths[0] < 1e-3 and result.oscillator_strengths[1] > 0.3  # dark S1, bright S2
    assert "active orbitals: RHF orbitals 6-9 (1-based; HOMO is 8; default window)" in result.notes
    assert any(n.startswith("SA-CASSCF natural occupations") for n in result.notes)


@pytest.mark.slow
def test_ch2nh2_gradients_and_a_coupling_against_finite_differences() -> None:
    """Analytic SA-CASSCF gradients against central differences of the state energies, and the NACs (without
    electron-translation factors) against central differences of wavefunction overlaps, along two coordinates of a
    structure without symmetry (every pair couples along them). Phases: the overlaps use their own states, so the
    comparison allows a sign per state, which cannot turn d_ij into d_ji for all three pairs at once."""
    settings = parse_qm_spec("casscf(6,4)/6-31g*,states=3,charge=1,etf=0")  # default tolerances
    positions = twisted(30.0)
    positions[2] += [0.05, -0.03, 0.04]
    result = label_geometry(NUMBERS, positions, settings)
    assert result.failure is None, result.failure
    centre = solve(positions, settings)
    np.testing.assert_allclose(centre.e_states, result.energies, atol=1e-8)  # the same solution
    h = 1e-3
    fd_gradients, fd_nacs = [], []
    for atom, axis in ((1, 2), (3, 0)):
        displaced = []
        for sign in (1, -1):
            moved = positions.copy()
            moved[atom, axis] += sign * h
            displaced.append(solve(moved, settings, guess=centre.mo_coeff))
        fd_gradients.append((np.array(displaced[0].e_states) - displaced[1].e_states) / (2 * h))
        overlaps = []
        for mc in displaced:
            S = wavefunction_overlaps(centre, mc, settings)
            overlaps.append(S * np.sign(np.diag(S))[None, :])  # the ket states' phases follow the centre's
        fd_nacs.append((overlaps[0] - overlaps[1]) / (2 * h))  # d_ij = <i|d j/dR>, (N, N)
        # the state average to 1e-6; single states to ~4e-5 (1e-4 of the largest component), a difference that
        # tighter orbital, CI and Lagrange-multiplier tolerances do not change
        np.testing.assert_allclose(-result.forces[atom, :, axis].mean(), fd_gradients[-1].mean(), atol=5e-6)
        np.testing.assert_allclose(-result.forces[atom, :, axis], fd_gradients[-1], atol=6e-5)
    pairs = state_pairs(3)
    analytic = np.array([[result.nacs[atom, p, axis] for p in range(3)] for atom, axis in ((1, 2), (3, 0))])  # (2, P)
    reference = np.array([[d[i, j] for i, j in pairs] for d in fd_nacs])
    assert np.abs(reference).min() > 1e-2  # every pair couples along both coordinates
    np.testing.assert_allclose([d + d.T for d in fd_nacs], 0.0, atol=1e-4)  # antisymmetric
    errors = {}
    for p1, p2 in product((1, -1), repeat=2):
        phase = np.array([1, p1, p2])
        signs = np.array([phase[i] * phase[j] for i, j in pairs])
        errors[(p1, p2)] = np.abs(analytic - signs * reference).max()
    best = min(errors, key=errors.get)
    assert errors[best] < 1e-3, errors  # about 3e-4 (0.3 % of the smallest coupling) with h = 1e-3 Bohr
    assert all(error > 0.1 for key, error in errors.items() if key != best)  # d_ji in place of d_ij would not match


@pytest.mark.slow
def test_ch2nh2_twisted_geometry_and_orbitals_chosen_by_projection() -> None:
    """At 90 degrees twist S1 comes down to S0 (the S1/S0 crossing region of CH2NH2+). There the projection onto
    C 2p;N 2p takes a sigma orbital into the active space and converges to a higher solution (PySCF 2.14: 0.13 Hartree
    in the state sum); the labeller also starts from the default window and keeps the lower state average."""
    window = label_geometry(NUMBERS, twisted(90.0), parse_qm_spec("casscf(6,4)/6-31g*,states=3,charge=1,nacs=none"))
    projected = label_geometry(NUMBERS, twisted(90.0), parse_qm_spec("casscf(6,4)/6-31g*,states=3,charge=1,nacs=none,avas=C 2p;N 2p"))
    assert window.failure is None and projected.failure is None, (window.failure, projected.failure)
    np.testing.assert_allclose(projected.energies, window.energies, atol=1e-6)
    excitations = (window.energies[1:] - window.energies[0]) * HARTREE_IN_EV
    assert excitations[0] < 1.0 and 4.0 < excitations[1] < 7.0, excitations
    assert any(n.startswith("active orbitals: AVAS projection onto C 2p;N 2p; 3 occupied") for n in projected.notes)
    assert any(n.startswith("kept the lowest state average of 2 starts") for n in projected.notes), projected.notes
    # the screen for stored labels of a higher solution: the window's state average, without gradients
    from exsnn.qm.casscf import window_state_average

    average = window_state_average(NUMBERS, twisted(90.0), parse_qm_spec("casscf(6,4)/6-31g*,states=3,charge=1"))
    assert average is not None and abs(average - np.mean(window.energies)) < 1e-6


def test_dipole_matrix_against_state_densities_and_transition_dipoles() -> None:
    """The SA-CASSCF dipole matrix (the labels a dipole head learns): permanent dipoles equal PySCF's dipole moment of
    each state's density about the nuclei's geometric centre, transition dipoles equal minus the charge-free S0 -> Sk
    ones behind the oscillator strengths, and the matrix is symmetric in the state pair (real states)."""
    from pyscf import fci, scf

    from exsnn.data.properties import dipole_pairs
    from exsnn.qm.casscf import _transition_dipoles, dipole_matrix

    settings = parse_qm_spec("casscf(2,2)/sto-3g,states=3,charge=1,nacs=none")
    positions = twisted(30.0) - twisted(30.0).mean(axis=0)  # geometric centre at the origin: PySCF's origin
    mol = build_molecule(NUMBERS, positions, settings)
    mf, _ = run_scf(mol, settings)
    mc = solve_sa_casscf(mf, settings)[0]
    matrix = dipole_matrix(mc, settings)
    pairs = dipole_pairs(3)
    assert matrix.shape == (len(pairs), 3)
    for p, (i, j) in enumerate(pairs):
        if i == j:
            active_density = fci.direct_spin1.make_rdm1(mc.ci[i], settings.ncas, settings.nelecas)
            core, active = mc.mo_coeff[:, : mc.ncore], mc.mo_coeff[:, mc.ncore: mc.ncore + settings.ncas]
            density = 2 * core @ core.T + active @ active_density @ active.T
            expected = scf.hf.dip_moment(mol, density, unit="AU", verbose=0)
            np.testing.assert_allclose(matrix[p], expected, atol=1e-6)
    transition = _transition_dipoles(mc, settings)
    np.testing.assert_allclose(matrix[[pairs.index((0, 1)), pairs.index((0, 2))]], -transition, atol=1e-10)
    result = label_geometry(NUMBERS, positions, settings)
    np.testing.assert_allclose(np.abs(result.dipoles), np.abs(matrix), atol=1e-5)
