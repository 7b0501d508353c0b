"""The QM spec parser (exsnn.qm.settings.parse_qm_spec) and the checks made before any calculation
(exsnn.qm.validation): cheap, no SCF."""

from __future__ import annotations

import numpy as np
import pytest

from exsnn.errors import ConfigurationError, DataError
from exsnn.qm.settings import OPTIONS, QMSettings, parse_method, parse_qm_spec, take_options
from exsnn.qm.validation import check_geometry, check_method, check_settings, singlet_configurations

ANGSTROM = 1.8897261246257702
CH2NH2 = np.array([[0, 0, 0], [0, 0, 1.28], [0, 0.94, -0.54], [0, -0.94, -0.54], [0, 0.87, 1.85], [0, -0.87, 1.85]]) * ANGSTROM
CH2NH2_NUMBERS = np.array([6, 7, 1, 1, 1, 1])
WATER = np.array([[0.0, 0.0, 0.2217], [0.0, 1.4309, -0.8867], [0.0, -1.4309, -0.8867]])
WATER_NUMBERS = np.array([8, 1, 1])


# --- the parser --------------------------------------------------------------------------------------------------


def test_every_option_of_the_grammar_reaches_its_setting() -> None:
    settings = parse_qm_spec("tddft-b3lyp/6-31g*,states=4,charge=1,nacs=overlap,etf=0,stability=off,threads=2,"
                             "extra_roots=3,fd_step=5e-4")
    assert (settings.excited, settings.xc, settings.basis) == ("tddft", "b3lyp", "6-31g*")
    assert (settings.n_states, settings.charge, settings.nacs, settings.etf, settings.check_stability) == (4, 1, "overlap", False, False)
    assert (settings.threads, settings.extra_roots, settings.fd_step) == (2, 3, 5e-4)
    cas = parse_qm_spec("casscf(6,4)/6-31g*,states=3,charge=1,cas_orbitals=5;7-9,casscf_conv_tol=1e-8,"
                        "casscf_conv_tol_grad=1e-4,casscf_max_cycle=50")
    assert (cas.excited, cas.nelecas, cas.ncas, cas.basis) == ("casscf", 6, 4, "6-31g*")
    assert cas.cas_orbitals == (5, 7, 8, 9)
    assert (cas.casscf_conv_tol, cas.casscf_conv_tol_grad, cas.casscf_max_cycle) == (1e-8, 1e-4, 50)
    assert parse_qm_spec("casscf(6,4)/6-31g*,cas_orbitals=5+7+8+9").cas_orbitals == (5, 7, 8, 9)
    assert parse_qm_spec("sa-casscf( 6, 4 )/6-31g*,cas_orbitals=6-9").cas_orbitals == (6, 7, 8, 9)


def test_avas_labels_survive_a_comma_separated_option_string() -> None:
    settings = parse_qm_spec("casscf(6,4)/6-31g*,avas=C 2p;N 2p,states=3")
    assert settings.avas == ("C 2p", "N 2p") and settings.n_states == 3
    assert parse_qm_spec("casscf(6,4)/6-31g*,avas=c2p+N2pz").avas == ("C 2p", "N 2pz")


def test_the_casscf_comma_is_not_an_option_separator() -> None:
    # the old potential parser split 'casscf(2,2)/sto-3g' at its comma and could not read it at all
    settings = parse_qm_spec("casscf(2,2)/sto-3g,states=2")
    assert (settings.nelecas, settings.ncas, settings.n_states, settings.basis) == (2, 2, 2, "sto-3g")


def test_a_caller_takes_its_own_options_out_first() -> None:
    rest, own = take_options("casscf(6,4)/6-31g*,workers=2,avas=C 2p;N 2p,executor=local:2,states=3", ("workers", "executor"))
    assert own == {"workers": "2", "executor": "local:2"}
    assert parse_qm_spec(rest) == parse_qm_spec("casscf(6,4)/6-31g*,avas=C 2p;N 2p,states=3")


def test_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as error:
        parse_qm_spec("tda-hf/sto-3g,roots=4")
    message = str(error.value)
    assert message.startswith("--method: tda-hf/sto-3g,roots=4:") and "'roots'" in message
    assert all(name in message for name in OPTIONS)


@pytest.mark.parametrize(("text", "words"), [
    ("tda-hf", "METHOD/BASIS"),
    ("cis/sto-3g", "tda-XC"),
    ("casscf(6)/sto-3g", "casscf(NELECAS,NCAS)"),
    ("tda-hf/sto-3g,states", "needs a value"),
    ("tda-hf/sto-3g,states=three", "states"),
    ("tda-hf/sto-3g,states=0", "at least 1"),
    ("tda-hf/sto-3g,etf=maybe", "true/false"),
    ("tda-hf/sto-3g,nacs=fd", "analytic, overlap, none"),
    ("tda-hf/sto-3g,states=3,states=4", "twice"),
    ("tda-hf/sto-3g,cas_orbitals=1-2", "casscf"),
    ("casscf(6,4)/6-31g*,cas_orbitals=6-8", "3 orbitals"),
    ("casscf(6,4)/6-31g*,cas_orbitals=0-3", "1-based"),
    ("casscf(6,4)/6-31g*,cas_orbitals=9-6", "backwards"),
    ("casscf(6,4)/6-31g*,cas_orbitals=6;6;7;8", "repeats"),
    ("casscf(6,4)/6-31g*,avas=2p", "AO labels"),
    ("casscf(6,4)/6-31g*,avas=C 2p,cas_orbitals=6-9", "not both"),
    ("casscf(10,4)/6-31g*", "do not fit"),
    ("casscf(3,4)/6-31g*", "even number"),
    ("casscf(2,2)/sto-3g,nacs=overlap", "analytic"),
    ("casscf(2,2)/sto-3g,casscf_conv_tol=0", "positive"),
])
def test_malformed_or_impossible_specs_are_configuration_errors(text: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as error:
        parse_qm_spec(text)
    assert words in str(error.value) and str(error.value).startswith("--method: ")


def test_overrides_fill_in_and_must_not_contradict_the_text() -> None:
    settings = parse_qm_spec("tda-hf/sto-3g,charge=1", n_states=5, stability=False, charge=None, scf_conv_tol=1e-9)
    assert (settings.n_states, settings.check_stability, settings.charge, settings.scf_conv_tol) == (5, False, 1, 1e-9)
    assert parse_qm_spec("tda-hf/sto-3g,states=4", states=4).n_states == 4  # the same value twice is fine
    assert parse_qm_spec("casscf(6,4)/6-31g*", cas_orbitals="6-9").cas_orbitals == (6, 7, 8, 9)
    with pytest.raises(ConfigurationError, match="give it once"):
        parse_qm_spec("tda-hf/sto-3g,states=4", n_states=3)
    with pytest.raises(TypeError):
        parse_qm_spec("tda-hf/sto-3g", not_a_setting=1)


def test_parse_method_and_settings_raise_configuration_errors() -> None:
    assert parse_method("tda-hf/sto-3g", n_states=3, nacs="none") == QMSettings(n_states=3, nacs="none")
    assert parse_method("casscf(2,2)/sto-3g", n_states=2).method_label == "SA-CASSCF(2,2)"
    for bad in (lambda: QMSettings(excited="cis"), lambda: QMSettings(nacs="fd"), lambda: QMSettings(n_states=0),
                lambda: parse_method("tda-hf", n_states=3)):
        with pytest.raises(ConfigurationError):
            bad()


def test_settings_with_chosen_orbitals_survive_a_round_trip_through_as_dict() -> None:
    settings = parse_qm_spec("casscf(6,4)/6-31g*,avas=C 2p;N 2p")
    assert QMSettings(**settings.as_dict()) == settings
    assert hash(settings) == hash(QMSettings(**settings.as_dict()))


# --- the checks before any work ----------------------------------------------------------------------------------


def test_weyl_counts_singlet_configurations() -> None:
    assert singlet_configurations(2, 2) == 3 and singlet_configurations(4, 6) == 10 and singlet_configurations(4, 4) == 20
    assert singlet_configurations(3, 6) == 1 and singlet_configurations(4, 3) == 0


def test_good_settings_pass() -> None:
    check_settings(parse_qm_spec("tda-b3lyp/6-31g*", n_states=3), WATER_NUMBERS, WATER, "water.xyz")
    check_settings(parse_qm_spec("casscf(6,4)/6-31g*,avas=C 2p;N 2p", n_states=3, charge=1), CH2NH2_NUMBERS, CH2NH2, "eq.xyz")


@pytest.mark.parametrize(("spec", "options", "source", "words"), [
    ("tda-notafunctional/sto-3g", {}, "--method", "functional: unknown exchange-correlation functional 'notafunctional'"),
    ("tda-hf/not-a-basis", {}, "--method", "basis: basis set 'not-a-basis'"),
    ("tda-hf/sto-3g", {"charge": 1}, "--charge", "9 electrons, an odd number"),
    ("tda-hf/sto-3g", {"charge": 10}, "--charge", "leaves 0 electrons"),
    ("tda-hf/sto-3g", {"n_states": 1}, "--states", "at least 2"),
    ("tda-hf/sto-3g", {"n_states": 12}, "--states", "only 10 singlet excitations"),
    ("casscf(12,6)/sto-3g", {"n_states": 2}, "--method", "12 active electrons, but the molecule has 10"),
    ("casscf(2,8)/sto-3g", {"n_states": 2}, "--method", "but sto-3g has only 7 basis functions"),
    ("casscf(2,2)/sto-3g", {"n_states": 4}, "--states", "only 3 singlet configurations"),
    ("casscf(2,2)/sto-3g,cas_orbitals=5;9", {"n_states": 2}, "--method", "cas_orbitals: cas_orbitals up to 9"),
    ("casscf(2,2)/sto-3g,avas=C 2p", {"n_states": 2}, "--method", "avas: no atomic orbital of the molecule matches C 2p"),
])
def test_impossible_settings_name_the_option(spec: str, options: dict, source: str, words: str) -> None:
    settings = parse_qm_spec(spec, **options)
    with pytest.raises(ConfigurationError) as error:
        check_settings(settings, WATER_NUMBERS, WATER, "water.xyz")
    assert str(error.value).startswith(f"{source}: ") and words in str(error.value), str(error.value)


def test_an_impossible_method_is_caught_before_pyscf_raises_a_traceback() -> None:
    """The regression: an unknown functional used to reach PySCF and end in a KeyError traceback."""
    from pyscf import dft, gto

    mf = dft.RKS(gto.M(atom="H 0 0 0; H 0 0 0.74", basis="sto-3g", verbose=0))
    mf.xc = "notafunctional"
    with pytest.raises(KeyError):
        mf.kernel()
    with pytest.raises(ConfigurationError, match="functional"):
        check_method(parse_qm_spec("tda-notafunctional/sto-3g"), np.array([1, 1]), np.array([[0, 0, 0], [0, 0, 1.4]]))


def test_option_names_follow_the_caller() -> None:
    settings = parse_qm_spec("tda-hf/sto-3g", charge=1)
    with pytest.raises(ConfigurationError, match=r"^pyscf:tda-hf/sto-3g,charge=1: charge"):
        check_method(settings, WATER_NUMBERS, WATER, options={"charge": "pyscf:tda-hf/sto-3g,charge=1"})


@pytest.mark.parametrize(
    ("numbers", "positions", "field", "words"),
    [
        (
            WATER_NUMBERS,
            np.where(np.arange(9).reshape(3, 3) == 4, np.nan, WATER),
            "frame 7: positions",
            "non-finite coordinates of atom(s) 1 (H)",
        ),
        (
            WATER_NUMBERS,
            np.array([[0, 0, 0], [0, 0, 0.3], [0, 1.4, -0.9]]),
            "frame 7: positions",
            "atoms 0 (O) and 1 (H) are 0.300 Bohr apart",
        ),
        (WATER_NUMBERS, WATER[:2], "frame 7: positions", "expected shape (3, 3)"),
        (np.array([8, 1, 0]), WATER, "frame 7: numbers", "unknown atomic numbers [0]"),
    ],
)
def test_bad_coordinates_name_the_file_frame_and_field(
    numbers: np.ndarray, positions: np.ndarray, field: str, words: str
) -> None:
    with pytest.raises(DataError) as error:
        check_settings(parse_qm_spec("tda-hf/sto-3g"), numbers, positions, "traj.xyz", frame=7)
    assert str(error.value).startswith(f"traj.xyz: {field}: ") and words in str(error.value), str(error.value)


def test_coordinates_converted_twice_are_overlapping_atoms() -> None:
    """The CH2NH2+ geometry read as Bohr although it is in Angstrom: C-N 1.28 Bohr is far too short."""
    with pytest.raises(DataError, match=r"atoms 0 \(C\) and 1 \(N\) are 1.280 Bohr apart"):
        check_geometry(CH2NH2_NUMBERS, CH2NH2 / ANGSTROM, "eq.xyz")
    check_geometry(CH2NH2_NUMBERS, CH2NH2, "eq.xyz")


def test_a_basis_without_one_of_the_elements_names_it() -> None:
    xenon_hydride = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 3.2], [0.0, 3.2, 0.0]])
    with pytest.raises(ConfigurationError, match=r"^--method: basis: .*not found for Xe in 6-31g\*"):
        check_settings(parse_qm_spec("tda-hf/6-31g*"), np.array([54, 1, 1]), xenon_hydride, "xeh2.xyz")
