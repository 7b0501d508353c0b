import pytest

from exsnn.units import ANGSTROM_IN_BOHR, HARTREE_IN_EV, length_in_bohr, to_atomic


def test_known_conversion_factors() -> None:
    assert ANGSTROM_IN_BOHR == pytest.approx(1.8897261, rel=1e-7)
    assert HARTREE_IN_EV == pytest.approx(27.211386, rel=1e-7)
    assert to_atomic("eV/Angstrom", "force") == pytest.approx(1 / (HARTREE_IN_EV * ANGSTROM_IN_BOHR))
    assert to_atomic("Hartree/Bohr", "force") == pytest.approx(1.0)
    assert to_atomic("1/Angstrom", "nac") == pytest.approx(1 / ANGSTROM_IN_BOHR)
    assert to_atomic("Debye", "dipole") == pytest.approx(0.393430, rel=1e-5)
    assert length_in_bohr("Angstrom") == pytest.approx(ANGSTROM_IN_BOHR)


@pytest.mark.parametrize("unit, quantity", [("Hartree", "force"), ("Bohr", "energy"), ("furlong", "length")])
def test_wrong_or_unknown_units_are_refused(unit: str, quantity: str) -> None:
    with pytest.raises(ValueError, match=unit):
        to_atomic(unit, quantity)
