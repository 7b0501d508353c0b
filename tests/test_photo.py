"""exsnn.photo: optimisation and harmonic analysis with PySCF, thermal Wigner sampling, excitation and state
selection, promoted-density sampling, nuclear-ensemble spectra; each checked against physics or PySCF itself."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from exsnn.errors import ConfigurationError, DataError, ElectronicStructureError
from exsnn.photo.excitation import compute_excitations, delta_pulse_weights, read_excitations, select_states
from exsnn.photo.modes import modes_from_hessian, read_modes
from exsnn.photo.spectrum import ANGSTROM2_TO_MOLAR_ABSORPTIVITY, absorption_spectrum, cross_sections
from exsnn.photo.structure import default_masses, ground_state_gradient, ground_state_settings, harmonic_analysis, optimize_geometry
from exsnn.photo.wigner import mean_mode_energy, mode_variances, sample_wigner
from exsnn.units import AMU_IN_ELECTRON_MASS, ANGSTROM_IN_BOHR, EV_IN_HARTREE, HARTREE_IN_EV

HF = ground_state_settings("hf/sto-3g")
WATER = (np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.1], [0.0, 0.8, -0.5], [0.0, -0.75, -0.45]]) * ANGSTROM_IN_BOHR)
CO2 = (np.array([6, 8, 8]), np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.2], [0.0, 0.0, -1.2]]) * ANGSTROM_IN_BOHR)


@pytest.fixture(scope="module")
def water():
    """H2O at its HF/STO-3G minimum and its harmonic modes."""
    optimized = optimize_geometry(*WATER, HF)
    return optimized, harmonic_analysis(optimized.numbers, optimized.positions, HF)


@pytest.fixture(scope="module")
def co2():
    optimized = optimize_geometry(*CO2, HF)
    return optimized, harmonic_analysis(optimized.numbers, optimized.positions, HF)


def pyscf_frequencies(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """PySCF's own harmonic analysis (pyscf.hessian.thermo) of its analytic RHF Hessian, same masses."""
    from pyscf.hessian import thermo

    from exsnn.qm.scf import build_molecule

    mol = build_molecule(numbers, positions, HF)
    mf = mol.RHF().run(conv_tol=1e-11)
    result = thermo.harmonic_analysis(mol, mf.Hessian().kernel(), mass=default_masses(numbers) / AMU_IN_ELECTRON_MASS)
    return np.sort(np.real(result["freq_wavenumber"]))


def angular_momentum(positions: np.ndarray, velocities: np.ndarray, masses: np.ndarray) -> np.ndarray:
    centre = np.einsum("i,sij->sj", masses, positions) / masses.sum()
    return np.einsum("i,sij->sj", masses, np.cross(positions - centre[:, None], velocities))


# --------------------------------------------------------------------------------------------- structure and modes


def test_optimised_water_is_a_minimum_and_both_optimisers_agree(water) -> None:
    optimized, modes = water
    assert np.abs(optimized.gradient).max() < 1.5e-5
    berny = optimize_geometry(*WATER, HF, optimizer="berny")
    assert berny.energy == pytest.approx(optimized.energy, abs=1e-8)
    bond = lambda p: np.linalg.norm(p[1] - p[0])  # noqa: E731
    assert bond(berny.positions) == pytest.approx(bond(optimized.positions), abs=1e-4)
    assert len(modes.frequencies) == 3 and not modes.linear and np.all(modes.frequencies > 0)


def test_water_frequencies_match_pyscf_harmonic_analysis(water) -> None:
    optimized, modes = water
    reference = pyscf_frequencies(optimized.numbers, optimized.positions)
    assert np.abs(np.sort(modes.frequencies_cm1) - reference).max() < 1.0
    # finite differences of analytic gradients (the path for SA-CASSCF) agree with the analytic Hessian
    numerical = harmonic_analysis(optimized.numbers, optimized.positions, HF, hessian="numerical")
    assert np.abs(np.sort(numerical.frequencies_cm1) - reference).max() < 1.0
    # the modes are orthonormal and orthogonal to translations and rotations (mass-weighted)
    assert np.allclose(modes.modes.T @ modes.modes, np.eye(3), atol=1e-10)
    sqrt_m = np.sqrt(np.repeat(modes.masses, 3))
    for axis in range(3):
        translation = np.zeros((3, 3))
        translation[:, axis] = 1.0
        assert np.abs((translation.ravel() * sqrt_m) @ modes.modes).max() < 1e-10


def test_linear_co2_has_four_modes_with_a_degenerate_bend(co2) -> None:
    optimized, modes = co2
    assert modes.linear
    assert len(modes.frequencies) == 4  # 3n - 5
    bend = np.sort(modes.frequencies_cm1)[:2]
    assert bend[0] == pytest.approx(bend[1], abs=1e-3)
    assert np.abs(np.sort(modes.frequencies_cm1) - pyscf_frequencies(optimized.numbers, optimized.positions)).max() < 1.0


def test_a_harmonic_diatomic_has_one_mode_at_sqrt_k_over_mu() -> None:
    """Two masses on a spring along a tilted axis: 5 external directions, w = sqrt(k / mu), mode along the bond."""
    k, masses = 0.37, np.array([1837.0, 29000.0])
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    positions = np.array([np.zeros(3), 2.1 * axis])
    block = k * np.outer(axis, axis)
    hessian = np.block([[block, -block], [-block, block]])
    modes = modes_from_hessian(np.array([1, 8]), positions, masses, hessian)
    mu = masses.prod() / masses.sum()
    assert modes.linear and len(modes.frequencies) == 1
    assert modes.frequencies[0] == pytest.approx(np.sqrt(k / mu), rel=1e-12)
    cartesian = modes.cartesian_modes()[0]
    assert np.allclose(np.cross(cartesian, axis), 0.0, atol=1e-12)  # the atoms move along the bond
    assert np.allclose(masses @ cartesian, 0.0, atol=1e-12)  # the centre of mass stays


def test_imaginary_modes_are_an_error_unless_allowed() -> None:
    # linear H2O is a second-order saddle: the degenerate bend is imaginary
    numbers = np.array([8, 1, 1])
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]) * ANGSTROM_IN_BOHR
    with pytest.raises(ElectronicStructureError, match="imaginary"):
        harmonic_analysis(numbers, positions, HF)
    modes = harmonic_analysis(numbers, positions, HF, allow_imaginary=True)
    assert modes.linear and len(modes.frequencies) == 2 and len(modes.left_out) == 2
    assert all(entry["frequency_cm1"] < 0 and entry["reason"] == "imaginary" for entry in modes.left_out)


def test_modes_file_round_trip_and_sharc_v0(tmp_path: Path, water, shared_data: Path) -> None:
    _, modes = water
    again = read_modes(modes.write(tmp_path / "modes.json"))
    assert np.array_equal(again.frequencies, modes.frequencies) and np.array_equal(again.modes, modes.modes)
    assert again.method == "RHF/sto-3g" and again.energy == pytest.approx(modes.energy)
    v0 = read_modes(shared_data / "schnarc" / "lvc_so2_3s" / "V0.txt")
    assert len(v0.frequencies) == 3 and np.allclose(v0.frequencies_cm1, [518.75, 1165.17, 1405.24], atol=0.01)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "exsnn-harmonic-modes", "numbers": [8]}))
    with pytest.raises(DataError, match="positions_bohr"):
        read_modes(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------------------- Wigner sampling


@pytest.mark.parametrize("temperature", [0.0, 300.0, 2000.0])
def test_wigner_moments_and_energy_per_mode_match_the_thermal_wigner_function(water, temperature: float) -> None:
    _, modes = water
    n = 20000
    sample = sample_wigner(modes, n, seed=11, temperature=temperature)
    q, p = modes.normal_coordinates(sample.positions, sample.velocities)
    var_q, var_p = mode_variances(modes.frequencies, temperature)
    tolerance = 5 * np.sqrt(2.0 / n)  # relative standard error of a variance: sqrt(2/n)
    assert np.abs(q.var(axis=0) / var_q - 1).max() < tolerance
    assert np.abs(p.var(axis=0) / var_p - 1).max() < tolerance
    energy = 0.5 * p**2 + 0.5 * modes.frequencies**2 * q**2
    expected = mean_mode_energy(modes.frequencies, temperature)  # hbar w / 2 coth(hbar w / 2kT)
    assert np.abs(energy.mean(axis=0) / expected - 1).max() < 5 * np.sqrt(1.0 / n) * 1.5
    if temperature == 2000.0:  # the thermal widths differ from the ground state's
        assert np.all(var_q > 1.05 * mode_variances(modes.frequencies, 0.0)[0])


def test_wigner_keeps_centre_of_mass_and_removes_angular_momentum_without_changing_kinetic_energy(water) -> None:
    _, modes = water
    sample = sample_wigner(modes, 2000, seed=5, temperature=300.0)
    masses = modes.masses
    centre = np.einsum("i,sij->sj", masses, sample.positions) / masses.sum()
    assert np.abs(centre - masses @ modes.positions / masses.sum()).max() < 1e-12
    assert np.abs(np.einsum("i,sij->sj", masses, sample.velocities)).max() < 1e-12
    assert np.abs(angular_momentum(sample.positions, sample.velocities, masses)).max() < 1e-10
    kinetic = 0.5 * np.einsum("i,sij->s", masses, sample.velocities**2)
    assert np.allclose(kinetic, 0.5 * np.sum(sample.p**2, axis=1), rtol=1e-12)
    # without the removal the sampled structures do rotate (second order in the displacement)
    raw = sample_wigner(modes, 2000, seed=5, temperature=300.0, remove_rotations=False)
    assert np.abs(angular_momentum(raw.positions, raw.velocities, masses)).max() > 1e-4
    # seeds: the same seed, the same structures
    again = sample_wigner(modes, 2000, seed=5, temperature=300.0)
    assert np.array_equal(again.positions, sample.positions) and np.array_equal(again.velocities, sample.velocities)


def test_wigner_of_a_linear_molecule(co2) -> None:
    """3n - 5 modes; the rotation perpendicular to the axis is removed, the bends' vibrational angular momentum along
    the axis is kept, so every mode keeps its Wigner variances (removing L along the axis took out about 40% of the
    bends' momentum variance)."""
    from exsnn.photo.wigner import molecular_axis

    _, modes = co2
    n = 20000
    sample = sample_wigner(modes, n, seed=2, temperature=300.0)
    masses = modes.masses
    axis = molecular_axis(modes.positions, masses)
    L = angular_momentum(sample.positions, sample.velocities, masses)
    assert np.abs(L - np.outer(L @ axis, axis)).max() < 1e-10
    assert np.abs(L @ axis).max() > 1e-3  # the vibrational angular momentum of the degenerate bends
    q, p = modes.normal_coordinates(sample.positions, sample.velocities)
    var_q, var_p = mode_variances(modes.frequencies, 300.0)
    assert np.abs(q.var(axis=0) / var_q - 1).max() < 5 * np.sqrt(2.0 / n)
    assert np.abs(p.var(axis=0) / var_p - 1).max() < 5 * np.sqrt(2.0 / n)
    kinetic = 0.5 * np.einsum("i,sij->s", masses, sample.velocities**2)
    assert np.allclose(kinetic, 0.5 * np.sum(sample.p**2, axis=1), rtol=1e-12)


def test_low_frequency_cutoff_leaves_modes_unsampled(water) -> None:
    _, modes = water
    lowest = float(modes.frequencies_cm1.min())
    sample = sample_wigner(modes, 100, seed=1, low_frequency_cutoff_cm1=lowest + 1.0)
    assert not sample.sampled[np.argmin(modes.frequencies)] and sample.notes
    q, _ = modes.normal_coordinates(sample.positions, sample.velocities)
    assert np.abs(q[:, np.argmin(modes.frequencies)]).max() < 1e-8
    with pytest.raises(ConfigurationError, match="every mode"):
        sample_wigner(modes, 10, seed=1, low_frequency_cutoff_cm1=1e5)


def test_sample_from_an_lvc_model_matches_its_potential_masses(shared_data: Path) -> None:
    from exsnn.potentials.lvc import LVCPotential

    template = shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template"
    modes = read_modes(template)
    potential = LVCPotential(template)
    assert np.allclose(modes.masses, potential.masses.numpy())
    sample = sample_wigner(modes, 20000, seed=3, temperature=0.0)
    q, p = modes.normal_coordinates(sample.positions, sample.velocities)
    assert np.abs(q.var(axis=0) * 2 * modes.frequencies - 1).max() < 5 * np.sqrt(2.0 / 20000)


# ----------------------------------------------------------------------------------------------------------- spectra


def si_line_strength_angstrom2_ev() -> float:
    """pi e^2 hbar / (2 eps0 m_e c) in Angstrom^2 eV, from SI constants (independent of exsnn's atomic units)."""
    from scipy import constants as c

    si = np.pi * c.e**2 * c.hbar / (2 * c.epsilon_0 * c.m_e * c.c)  # m^2 J
    return si / 1e-20 / c.e


@pytest.mark.parametrize("shape", ["gaussian", "lorentzian"])
def test_a_single_line_integrates_to_its_oscillator_strength_times_pi_e2_over_2_eps0_me_c(shape: str) -> None:
    f, centre_ev, fwhm_ev = 0.37, 6.0, 0.3
    spectrum = absorption_spectrum(np.array([[centre_ev * EV_IN_HARTREE]]), np.array([[f]]), fwhm_ev=fwhm_ev, shape=shape,
                                   energy_range_ev=(0.0, 400.0), points=400001, n_bootstrap=0)
    integral = np.trapezoid(spectrum.cross_section, spectrum.energy_ev)
    expected = f * si_line_strength_angstrom2_ev()
    inside = 1.0 if shape == "gaussian" else (np.arctan((400 - 6) / 0.15) + np.arctan(6 / 0.15)) / np.pi  # Lorentzian tails
    assert integral == pytest.approx(expected * inside, rel=1e-5)
    assert si_line_strength_angstrom2_ev() == pytest.approx(1.0975, rel=1e-3)  # the textbook 1.0975e-16 cm^2 eV per unit f
    assert spectrum.molar_absorptivity.max() == pytest.approx(spectrum.cross_section.max() * ANGSTROM2_TO_MOLAR_ABSORPTIVITY)
    assert ANGSTROM2_TO_MOLAR_ABSORPTIVITY == pytest.approx(26153, rel=1e-4)


def test_energy_factor_weights_each_line_by_de_over_e() -> None:
    """Crespo-Otero and Barbatti's dE/E factor: sigma(E) E / dE is the plain line, so it integrates to f C."""
    centre = 6.0 * EV_IN_HARTREE
    plain = absorption_spectrum(
        np.array([[centre]]), np.array([[0.2]]), fwhm_ev=0.5, energy_range_ev=(2.0, 10.0), points=8001, n_bootstrap=0
    )
    weighted = absorption_spectrum(
        np.array([[centre]]),
        np.array([[0.2]]),
        fwhm_ev=0.5,
        energy_range_ev=(2.0, 10.0),
        points=8001,
        n_bootstrap=0,
        energy_factor=True,
    )
    assert np.allclose(weighted.cross_section * plain.energy_ev / 6.0, plain.cross_section)


def test_spectrum_peaks_at_the_mean_vertical_excitation_energies() -> None:
    rng = np.random.default_rng(4)
    means_ev = np.array([5.0, 7.5])
    excitations = (means_ev + rng.normal(0, 0.25, (4000, 2))) * EV_IN_HARTREE
    strengths = np.column_stack([np.full(4000, 0.05), np.full(4000, 0.3)])
    spectrum = absorption_spectrum(
        excitations, strengths, fwhm_ev=0.4, energy_range_ev=(3.5, 9.0), points=2001, n_bootstrap=200, seed=1
    )
    peaks = spectrum.peaks_ev()
    assert np.abs(np.array(peaks) - excitations.mean(axis=0) * HARTREE_IN_EV).max() < 0.03
    # the bootstrap band holds the spectrum and is narrow where the spectrum is well sampled
    assert np.all(spectrum.band_low <= spectrum.cross_section + 1e-12) and np.all(
        spectrum.cross_section <= spectrum.band_high + 1e-12
    )
    top = np.argmax(spectrum.cross_section)
    assert (spectrum.band_high[top] - spectrum.band_low[top]) / spectrum.cross_section[top] < 0.1
    assert np.allclose(spectrum.per_state.sum(axis=1), spectrum.cross_section)


def test_spectrum_files_and_bad_input(tmp_path: Path) -> None:
    spectrum = absorption_spectrum(np.array([[0.2, 0.25]]), np.array([[0.1, 0.2]]), n_bootstrap=10)
    table = spectrum.write_table(tmp_path / "spectrum.txt")
    data = np.loadtxt(table)
    assert data.shape == (1000, 7)
    assert spectrum.plot(tmp_path / "spectrum.png").stat().st_size > 1000
    with pytest.raises(ConfigurationError, match="FWHM"):
        cross_sections(np.linspace(0, 1, 5), np.array([[0.2]]), np.array([[0.1]]), fwhm=0.0)
    with pytest.raises(ConfigurationError, match="line shape"):
        absorption_spectrum(np.array([[0.2]]), np.array([[0.1]]), shape="voigt")


# ------------------------------------------------------------------------------------------- excitation and selection


def test_f_over_de2_selection_frequencies_match_their_probabilities() -> None:
    rng = np.random.default_rng(0)
    G = 40000
    excitation = rng.uniform(0.15, 0.35, (G, 2))
    strengths = rng.exponential(0.1, (G, 2))
    selection = select_states(excitation, strengths, stochastic=True, seed=9)
    weights = delta_pulse_weights(excitation, strengths)
    probability = weights / weights.max()
    chosen = np.zeros((G, 2), dtype=bool)
    chosen[selection.geometry, selection.state - 1] = True
    edges = np.quantile(probability, np.linspace(0, 1, 11))
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (probability >= low) & (probability < high)
        expected = probability[inside].mean()
        error = np.sqrt(np.sum(probability[inside] * (1 - probability[inside]))) / inside.sum()
        assert abs(chosen[inside].mean() - expected) < 5 * error + 1e-12
    assert np.allclose(selection.probability, probability[selection.geometry, selection.state - 1])


def test_selection_criteria_combine() -> None:
    rng = np.random.default_rng(1)
    excitation = rng.uniform(4.0, 9.0, (5000, 3)) * EV_IN_HARTREE
    strengths = rng.exponential(0.1, (5000, 3))
    window = select_states(excitation, strengths, window_ev=(5.0, 7.0))
    assert np.all((window.excitation * HARTREE_IN_EV >= 5.0) & (window.excitation * HARTREE_IN_EV <= 7.0))
    assert np.all(window.probability == 1.0)
    combined = select_states(excitation, strengths, window_ev=(5.0, 7.0), states=[2, 3], stochastic=True, seed=4)
    assert set(combined.state.tolist()) <= {2, 3}
    assert np.all((combined.excitation * HARTREE_IN_EV >= 5.0) & (combined.excitation * HARTREE_IN_EV <= 7.0))
    # normalised by the maximum of f/dE^2 among the candidates left by the window and the states
    inside = (excitation >= 5.0 * EV_IN_HARTREE) & (excitation <= 7.0 * EV_IN_HARTREE)
    inside[:, 0] = False
    largest = delta_pulse_weights(excitation, strengths)[inside].max()
    chosen = delta_pulse_weights(excitation, strengths)[combined.geometry, combined.state - 1]
    assert np.allclose(combined.probability, chosen / largest)
    assert 0 < len(combined) < len(window)
    with pytest.raises(ConfigurationError, match="states"):
        select_states(excitation, strengths, states=[0])


def test_pyscf_excitations_oscillator_strengths_and_file_round_trip(tmp_path: Path, water) -> None:
    optimized, modes = water
    sample = sample_wigner(modes, 3, seed=1)
    settings = ground_state_settings("tda-hf/sto-3g,states=3")
    excitations = compute_excitations(optimized.numbers, sample.positions, settings, sample.velocities)
    assert not excitations.failures
    dE = excitations.excitation_energies
    assert np.all(dE > 0)
    assert np.allclose(excitations.strengths, 2.0 / 3.0 * dE * np.sum(excitations.transition_dipoles**2, axis=2))
    again = read_excitations(excitations.write(tmp_path / "excitations.json"))
    assert np.array_equal(again.energies, excitations.energies) and np.array_equal(again.velocities, sample.velocities)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_failed_geometries_are_recorded_not_raised(tmp_path: Path) -> None:
    numbers = np.array([8, 1, 1])
    positions = np.array([WATER[1], [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])  # two H on one spot
    excitations = compute_excitations(numbers, positions, ground_state_settings("tda-hf/sto-3g,states=2"))
    assert list(excitations.failures) == [1] and np.all(np.isnan(excitations.energies[1]))
    again = read_excitations(excitations.write(tmp_path / "x.json"))
    assert again.failures == {1: excitations.failures[1]} and np.all(np.isnan(again.strengths[1]))


def test_promoted_density_sampling_selects_the_resonant_state() -> None:
    from exsnn.photo.promoted import promoted_density

    rng = np.random.default_rng(2)
    G = 200
    excitation = np.column_stack([rng.normal(5.0, 0.1, G), rng.normal(8.0, 0.1, G)]) * EV_IN_HARTREE
    dipoles = np.ones((G, 2, 3)) * 0.5
    sample = promoted_density(excitation, dipoles, 40, omega=8.0 * EV_IN_HARTREE, fwhm_fs=10.0, seed=3)
    assert len(sample.geometry) == 40 and np.all(sample.state == 2)
    assert np.all(np.abs(sample.time_fs) < 30.0)
    again = promoted_density(excitation, dipoles, 40, omega=8.0 * EV_IN_HARTREE, fwhm_fs=10.0, seed=3)
    assert np.array_equal(again.geometry, sample.geometry)


# ----------------------------------------------------------------------------------------------------- command line


def run_cli(*args: str) -> int:
    from exsnn.cli import photo

    parser = argparse.ArgumentParser(prog="exsnn")
    photo.register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args([str(a) for a in args])
    return int(parsed.run(parsed) or 0)


def test_command_line_from_structure_to_spectrum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = tmp_path / "water.xyz"
    start.write_text("3\n\nO 0 0 0.1\nH 0 0.8 -0.5\nH 0 -0.75 -0.45\n")
    assert run_cli("optimize", start, "--method", "hf/sto-3g", "-o", tmp_path / "opt.xyz") == 0
    assert run_cli("frequencies", tmp_path / "opt.xyz", "--method", "hf/sto-3g", "-o", tmp_path / "modes.json") == 0
    modes = read_modes(tmp_path / "modes.json")
    assert len(modes.frequencies) == 3
    assert (
        run_cli(
            "sample",
            tmp_path / "modes.json",
            "-n",
            "6",
            "--seed",
            "2",
            "--temperature",
            "300",
            "-o",
            tmp_path / "wigner.xyz",
        )
        == 0
    )
    from exsnn.photo.io import read_geometries

    numbers, positions, velocities = read_geometries(tmp_path / "wigner.xyz")
    direct = sample_wigner(modes, 6, seed=2, temperature=300.0)
    assert np.allclose(positions, direct.positions, atol=1e-7) and np.allclose(
        velocities, direct.velocities, rtol=1e-5, atol=1e-9
    )
    assert (
        run_cli(
            "excite",
            tmp_path / "wigner.xyz",
            "--method",
            "tda-hf/sto-3g,states=3",
            "-o",
            tmp_path / "excite",
            "--window",
            "5:30",
            "--stochastic",
            "--seed",
            "1",
        )
        == 0
    )
    selection = json.loads((tmp_path / "excite" / "selection.json").read_text())
    assert selection["criteria"].startswith("excitation energy in [5, 30] eV")
    assert (
        run_cli(
            "spectrum",
            tmp_path / "excite" / "excitations.json",
            "-o",
            tmp_path / "spectrum",
            "--fwhm",
            "0.3",
            "--bootstrap",
            "20",
        )
        == 0
    )
    table = np.loadtxt(tmp_path / "spectrum.txt")
    assert table.shape[1] == 7 and (tmp_path / "spectrum.png").exists()
    out = capsys.readouterr().out
    assert "frequencies" in out and "spectrum" in out
    with pytest.raises(ConfigurationError, match="window"):
        run_cli("excite", tmp_path / "wigner.xyz", "--method", "tda-hf/sto-3g", "-o", tmp_path / "x", "--window", "7:5")


def test_ground_state_gradient_of_sa_casscf_matches_finite_differences() -> None:
    """The non-RHF/RKS path of optimisation and numerical Hessians: S0 of SA-CASSCF(2,2) for H2."""
    settings = ground_state_settings("casscf(2,2)/sto-3g,states=2")
    numbers = np.array([1, 1])
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.45]])
    energy, gradient, _ = ground_state_gradient(numbers, positions, settings)
    h = 1e-4
    plus = positions.copy()
    plus[1, 2] += h
    minus = positions.copy()
    minus[1, 2] -= h
    difference = (
        ground_state_gradient(numbers, plus, settings)[0] - ground_state_gradient(numbers, minus, settings)[0]
    ) / (2 * h)
    assert gradient[1, 2] == pytest.approx(difference, abs=1e-6)
    assert energy < 0


def test_command_line_with_an_lvc_model_gives_files_dynamics_reads(tmp_path: Path, shared_data: Path) -> None:
    from exsnn.dynamics.initial_conditions import from_file
    from exsnn.photo.io import read_geometries

    template = shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template"
    assert run_cli("sample", template, "-n", "200", "--seed", "4", "-o", tmp_path / "wigner.xyz") == 0
    assert (
        run_cli(
            "excite",
            tmp_path / "wigner.xyz",
            "--potential",
            f"lvc:{template}",
            "-o",
            tmp_path / "excite",
            "--states",
            "2",
            "--stochastic",
            "--seed",
            "3",
        )
        == 0
    )
    selection = json.loads((tmp_path / "excite" / "selection.json").read_text())["initial_conditions"]
    assert selection and all(row["state"] == 2 for row in selection)
    numbers, positions, velocities = read_geometries(tmp_path / "wigner.xyz")
    start_positions, start_velocities = from_file(tmp_path / "excite" / "initial_conditions_S2.xyz", numbers)
    chosen = [row["geometry"] for row in selection]
    assert np.allclose(start_positions.numpy(), positions[chosen], atol=1e-7)
    assert np.allclose(start_velocities.numpy(), velocities[chosen], rtol=1e-5, atol=1e-10)


@pytest.mark.slow
def test_sa_casscf_optimisation_and_numerical_hessian_end_to_end(tmp_path: Path) -> None:
    """`exsnn frequencies --optimize` on S0 of SA-2-CASSCF(2,2) water (the path the CH2NH2+ modes take): the structure is
    a minimum, and every frequency equals the curvature of the SA-CASSCF S0 energy along its own normal mode, from
    central differences of energies alone (independent of the analytic gradients the Hessian is built from)."""

    start = tmp_path / "start.xyz"
    start.write_text("3\nwater\nO 0.0 0.0 0.0\nH 0.0 0.78 0.55\nH 0.0 -0.78 0.55\n")
    spec = "casscf(2,2)/sto-3g,states=2"
    run_cli("frequencies", start, "--method", spec, "--optimize", "-o", tmp_path / "modes.json")
    modes = read_modes(tmp_path / "modes.json")
    assert len(modes.frequencies) == 3 and np.all(modes.frequencies > 0)
    settings = ground_state_settings(spec)
    energy, gradient, _ = ground_state_gradient(modes.numbers, modes.positions, settings)
    assert np.abs(gradient).max() < 5e-4
    step = 0.05  # normal coordinate, sqrt(electron mass) Bohr
    for k, omega in enumerate(modes.frequencies):
        displacement = (modes.modes[:, k] / np.sqrt(np.repeat(modes.masses, 3))).reshape(-1, 3) * step
        plus = ground_state_gradient(modes.numbers, modes.positions + displacement, settings)[0]
        minus = ground_state_gradient(modes.numbers, modes.positions - displacement, settings)[0]
        curvature = (plus - 2 * energy + minus) / step**2
        assert np.sqrt(curvature) == pytest.approx(omega, rel=0.01), k
