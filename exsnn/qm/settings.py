"""What to compute with PySCF, as the command line spells it: `tda-hf/sto-3g`, `tddft-b3lyp/6-31g*`, ..."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

EXCITED_METHODS = ("tda", "tddft", "casscf")


@dataclass(frozen=True)
class QMSettings:
    """Closed-shell ground state (RHF for xc = 'hf', RKS otherwise) + TDA or full TDDFT (RPA) singlets.

    n_states counts S0: n_states = 3 asks for S0, S1, S2. extra_roots are solved on top and dropped (the Davidson
    solver can miss a root otherwise). nacs: 'analytic' (every pair), 'overlap' (finite differences of
    (pseudo-)wavefunction overlaps at 6n displaced geometries: the independent reference) or 'none'; both with
    electron-translation factors when etf. fd_step: displacement (Bohr) of the finite differences.
    """

    excited: str = "tda"
    xc: str = "hf"
    basis: str = "sto-3g"
    n_states: int = 3
    charge: int = 0
    nacs: str = "analytic"
    etf: bool = True
    extra_roots: int = 2
    scf_conv_tol: float = 1e-10
    scf_conv_tol_grad: float = 1e-7  # orbital gradient; finite-difference references need ~1e-10
    td_conv_tol: float = 1e-7
    fd_step: float = 1e-3
    min_excitation: float = 1e-3  # Hartree: smaller or negative excitation energies are failures
    dense_limit: int = 2000  # TDA spaces up to this many excitations are diagonalised exactly (no missed roots)
    threads: int = 1
    check_stability: bool = True  # follow internal instabilities of the SCF solution (one orbital-Hessian solve)
    ncas: int = 0  # SA-CASSCF active orbitals
    nelecas: int = 0  # SA-CASSCF active electrons

    def __post_init__(self) -> None:
        if self.excited not in EXCITED_METHODS:
            raise ValueError(f"excited-state method must be one of {EXCITED_METHODS}, got {self.excited!r}")
        if self.n_states < 1:
            raise ValueError("n_states must be at least 1 (S0)")
        if self.nacs not in ("overlap", "analytic", "none"):
            raise ValueError("nacs must be 'overlap', 'analytic' or 'none'")
        if self.excited == "casscf":
            if self.ncas < 1 or self.nelecas < 1:
                raise ValueError("SA-CASSCF needs an active space: casscf(NELECAS,NCAS)/BASIS, e.g. casscf(2,2)/sto-3g")
            if self.nacs == "overlap":
                raise ValueError("SA-CASSCF NACs are analytic (PySCF's pyscf.nac.sacasscf): use nacs = 'analytic' or 'none'")
            return

    @property
    def method_label(self) -> str:
        if self.excited == "casscf":
            return f"SA-CASSCF({self.nelecas},{self.ncas})"
        return f"{self.excited.upper()}-{self.xc.upper()}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_method(spec: str, **options: Any) -> QMSettings:
    """'tda-hf/sto-3g', 'tddft-b3lyp/6-31g*' or 'casscf(2,2)/sto-3g' (SA-CASSCF over all states, equal weights)
    plus keyword options -> QMSettings. NACs are analytic unless asked otherwise."""
    method, _, basis = spec.partition("/")
    cas = re.fullmatch(r"(?:sa-)?casscf\((\d+),(\d+)\)", method.lower().replace(" ", ""))
    if cas:
        if not basis:
            raise ValueError(f"method {spec!r}: expected casscf(NELECAS,NCAS)/BASIS")
        return QMSettings(excited="casscf", xc="hf", basis=basis, nelecas=int(cas.group(1)), ncas=int(cas.group(2)), **options)
    excited, _, xc = method.lower().partition("-")
    if not basis or not xc:
        raise ValueError(f"method {spec!r}: expected EXCITED-XC/BASIS, e.g. tda-hf/sto-3g or tddft-b3lyp/6-31g*")
    return QMSettings(excited=excited, xc=xc, basis=basis, **options)
