"""What to compute with PySCF, and the one parser of QM method strings (`exsnn label --method`, `pyscf:` potentials).

Grammar of a QM spec, one string with no commas outside the method's parentheses except between options::

    METHOD/BASIS[,OPTION=VALUE]...

    METHOD   tda-XC | tddft-XC        singlets from TDA or full TDDFT (RPA) on RHF (XC = hf) or RKS (any PySCF
                                      functional: b3lyp, pbe0, camb3lyp, ...)
             casscf(NELECAS,NCAS)     state-averaged CASSCF over all states with equal weights (also sa-casscf(...))
    BASIS    any PySCF basis name: sto-3g, 6-31g*, def2-svp, aug-cc-pvdz, ...

    OPTION   states=N                 states including S0 (default 3)
             charge=Q                 molecular charge (closed-shell singlet ground state)
             nacs=analytic|overlap|none
             etf=1|0                  electron-translation factors in the NACs (also true/false, yes/no, on/off)
             stability=1|0            follow internal instabilities of the SCF solution
             threads=T                OpenMP threads per calculation
             extra_roots=K            TDA/TDDFT roots solved on top of the kept ones and dropped
             fd_step=H                finite-difference displacement, Bohr
             cas_orbitals=LIST        SA-CASSCF active orbitals: 1-based indices of the RHF canonical orbitals, as
                                      PySCF's sort_mo(base=1) takes them; items separated by ';' or '+', ranges A-B:
                                      cas_orbitals=6-9, cas_orbitals=5;7-9, cas_orbitals=5+7+8+9
             avas=LABELS              SA-CASSCF active orbitals by projection onto atomic orbitals (AVAS, Sayfutyarova
                                      et al., J. Chem. Theory Comput. 13, 4063 (2017)): AO labels as PySCF writes
                                      them, separated by ';' or '+': avas=C 2p;N 2p, avas=C2p+N2p
             casscf_conv_tol=X        SA-CASSCF energy convergence (Hartree, default 1e-10)
             casscf_conv_tol_grad=X   SA-CASSCF orbital-gradient convergence (default 1e-6)
             casscf_max_cycle=N       SA-CASSCF macro iterations per attempt (default 100)

Examples: ``tda-hf/sto-3g,states=3``, ``tddft-b3lyp/6-31g*,charge=1,nacs=overlap``,
``casscf(6,4)/6-31g*,states=3,charge=1,avas=C 2p;N 2p``. On a command line quote the whole string (parentheses,
'*', ';' and spaces mean something to the shell): ``--method "casscf(6,4)/6-31g*,cas_orbitals=6-9"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from exsnn.errors import ConfigurationError

EXCITED_METHODS = ("tda", "tddft", "casscf")
NAC_KINDS = ("analytic", "overlap", "none")


@dataclass(frozen=True)
class QMSettings:
    """Closed-shell ground state (RHF for xc = 'hf', RKS otherwise) + TDA or full TDDFT (RPA) singlets, or
    state-averaged CASSCF singlets (excited = 'casscf', equal weights over the n_states states).

    n_states counts S0: n_states = 3 asks for S0, S1, S2. extra_roots are solved on top and dropped (the Davidson
    solver can miss a root otherwise). nacs: 'analytic' (every pair), 'overlap' (finite differences of
    (pseudo-)wavefunction overlaps at 6n displaced geometries: the independent reference) or 'none'; both with
    electron-translation factors when etf. fd_step: displacement (Bohr) of the finite differences.
    SA-CASSCF: nelecas electrons in ncas orbitals; the active orbitals are the RHF canonical orbitals around the
    HOMO/LUMO gap unless cas_orbitals (1-based RHF orbital indices) or avas (AO labels) choose them.
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
    casscf_conv_tol: float = 1e-10  # Hartree: change of the state-averaged energy between macro iterations
    casscf_conv_tol_grad: float = 1e-6  # norm of the orbital gradient at convergence (single-state energies are
    # only first-order accurate in it: finite differences of them need 1e-6)
    casscf_max_cycle: int = 100  # macro iterations per attempt (PySCF's default of 50 is often too few)
    cas_orbitals: tuple[int, ...] = ()  # 1-based RHF orbital indices of the active space (PySCF sort_mo, base=1)
    avas: tuple[str, ...] = ()  # AO labels ("C 2p", "N 2p") whose projection picks the active orbitals

    def __post_init__(self) -> None:
        object.__setattr__(self, "cas_orbitals", tuple(int(k) for k in self.cas_orbitals))
        object.__setattr__(self, "avas", tuple(str(label) for label in self.avas))
        problems = _problems(self)
        if problems:
            raise ConfigurationError("; ".join(problems))

    @property
    def method_label(self) -> str:
        if self.excited == "casscf":
            return f"SA-CASSCF({self.nelecas},{self.ncas})"
        return f"{self.excited.upper()}-{self.xc.upper()}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _problems(s: QMSettings) -> list[str]:
    """Everything impossible about the settings alone (no molecule needed), as sentences naming the option."""
    problems = []
    if s.excited not in EXCITED_METHODS:
        problems.append(f"excited-state method must be one of {', '.join(EXCITED_METHODS)}, got {s.excited!r}")
    if s.n_states < 1:
        problems.append(f"states must be at least 1 (S0), got {s.n_states}")
    if s.nacs not in NAC_KINDS:
        problems.append(f"nacs must be one of {', '.join(NAC_KINDS)}, got {s.nacs!r}")
    if s.threads < 1:
        problems.append(f"threads must be at least 1, got {s.threads}")
    if s.extra_roots < 0:
        problems.append(f"extra_roots must be 0 or more, got {s.extra_roots}")
    for name in ("fd_step", "scf_conv_tol", "scf_conv_tol_grad", "td_conv_tol", "casscf_conv_tol", "casscf_conv_tol_grad"):
        if not getattr(s, name) > 0:
            problems.append(f"{name} must be positive, got {getattr(s, name)}")
    if s.casscf_max_cycle < 1:
        problems.append(f"casscf_max_cycle must be at least 1, got {s.casscf_max_cycle}")
    if s.excited != "casscf":
        if s.cas_orbitals or s.avas:
            problems.append("cas_orbitals and avas choose SA-CASSCF active orbitals: use them with casscf(NELECAS,NCAS)/BASIS")
        return problems
    if s.ncas < 1 or s.nelecas < 1:
        problems.append("SA-CASSCF needs an active space: casscf(NELECAS,NCAS)/BASIS, e.g. casscf(2,2)/sto-3g")
    elif s.nelecas > 2 * s.ncas:
        problems.append(f"casscf({s.nelecas},{s.ncas}): {s.nelecas} electrons do not fit into {s.ncas} orbitals")
    elif s.nelecas % 2:
        problems.append(f"casscf({s.nelecas},{s.ncas}): singlets of a closed-shell molecule need an even number of active electrons")
    if s.nacs == "overlap":
        problems.append("SA-CASSCF NACs are analytic (PySCF's pyscf.nac.sacasscf): use nacs = 'analytic' or 'none'")
    if s.cas_orbitals and s.avas:
        problems.append("choose the active orbitals either by cas_orbitals or by avas, not both")
    if s.cas_orbitals:
        if len(s.cas_orbitals) != s.ncas:
            problems.append(
                f"cas_orbitals lists {len(s.cas_orbitals)} orbitals ({_ranges(s.cas_orbitals)}) for an active space of {s.ncas}"
            )
        if min(s.cas_orbitals) < 1:
            problems.append(f"cas_orbitals are 1-based orbital indices, got {_ranges(s.cas_orbitals)}")
        if len(set(s.cas_orbitals)) != len(s.cas_orbitals):
            problems.append(f"cas_orbitals repeats an orbital: {_ranges(s.cas_orbitals)}")
    if any(not label.strip() for label in s.avas):
        problems.append("avas has an empty AO label")
    return problems


def _ranges(indices: tuple[int, ...]) -> str:
    return ";".join(str(k) for k in indices)


# ---------------------------------------------------------------------------------------------------------------------
# the parser


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {value!r}")


def _orbital_list(value: str) -> tuple[int, ...]:
    """'6-9' -> (6, 7, 8, 9); '5;7-9' or '5+7+8+9' -> (5, 7, 8, 9)."""
    indices: list[int] = []
    for item in re.split(r"[;+]", value):
        item = item.strip()
        if not item:
            continue
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", item)
        if not match:
            raise ValueError(f"expected 1-based orbital indices and ranges such as 6-9 or 5;7-9, got {item!r}")
        if match.group(3):
            indices.append(int(match.group(3)))
            continue
        first, last = int(match.group(1)), int(match.group(2))
        if last < first:
            raise ValueError(f"range {item!r} runs backwards")
        indices.extend(range(first, last + 1))
    if not indices:
        raise ValueError("no orbital indices given")
    return tuple(indices)


def _ao_labels(value: str) -> tuple[str, ...]:
    """'C 2p;N 2p' or 'C2p+N2p' -> ('C 2p', 'N 2p'): element symbol capitalised, a space before the shell."""
    labels = []
    for item in re.split(r"[;+]", value):
        item = item.strip()
        if not item:
            continue
        match = re.fullmatch(r"([A-Za-z][a-z]?)\s*(\d[spdfgh][a-z0-9^-]*)", item)
        if not match:
            raise ValueError(f"expected AO labels such as 'C 2p' or 'N 2pz' separated by ';' or '+', got {item!r}")
        labels.append(f"{match.group(1).capitalize()} {match.group(2)}")
    if not labels:
        raise ValueError("no AO labels given")
    return tuple(labels)


def _nacs(value: str) -> str:
    if value.strip().lower() not in NAC_KINDS:
        raise ValueError(f"expected one of {', '.join(NAC_KINDS)}, got {value!r}")
    return value.strip().lower()


# option name in a spec -> (QMSettings field, converter of the text value)
OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "states": ("n_states", int),
    "charge": ("charge", int),
    "nacs": ("nacs", _nacs),
    "etf": ("etf", _boolean),
    "stability": ("check_stability", _boolean),
    "threads": ("threads", int),
    "extra_roots": ("extra_roots", int),
    "fd_step": ("fd_step", float),
    "cas_orbitals": ("cas_orbitals", _orbital_list),
    "avas": ("avas", _ao_labels),
    "casscf_conv_tol": ("casscf_conv_tol", float),
    "casscf_conv_tol_grad": ("casscf_conv_tol_grad", float),
    "casscf_max_cycle": ("casscf_max_cycle", int),
}
_FIELD_CONVERTERS = {field: convert for field, convert in OPTIONS.values()}
_SETTINGS_FIELDS = {f.name for f in fields(QMSettings)}


def _split_options(text: str) -> list[str]:
    """Split at the commas outside parentheses: 'casscf(6,4)/6-31g*,states=3' -> ['casscf(6,4)/6-31g*', 'states=3']."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def _method_fields(method: str, basis: str) -> dict[str, Any]:
    if not basis.strip():
        raise ValueError("expected METHOD/BASIS, e.g. tda-hf/sto-3g, tddft-b3lyp/6-31g* or casscf(6,4)/6-31g*")
    compact = method.lower().replace(" ", "")
    cas = re.fullmatch(r"(?:sa-)?casscf\((\d+),(\d+)\)", compact)
    if cas:
        return {
            "excited": "casscf",
            "xc": "hf",
            "basis": basis.strip(),
            "nelecas": int(cas.group(1)),
            "ncas": int(cas.group(2)),
        }
    if compact.startswith(("casscf", "sa-casscf")):
        raise ValueError(f"expected casscf(NELECAS,NCAS), e.g. casscf(6,4), got {method!r}")
    excited, _, xc = compact.partition("-")
    if excited not in ("tda", "tddft") or not xc:
        raise ValueError(
            f"expected tda-XC, tddft-XC or casscf(NELECAS,NCAS) before the '/', got {method!r} "
            "(e.g. tda-hf, tddft-b3lyp)"
        )
    return {"excited": excited, "xc": xc, "basis": basis.strip()}


def parse_qm_spec(text: str, *, source: str | None = "--method", **overrides: Any) -> QMSettings:
    """'METHOD/BASIS[,OPTION=VALUE,...]' (grammar in the module docstring) -> QMSettings.

    overrides: QMSettings fields (n_states=3, check_stability=False, scf_conv_tol=...) or option names (states=3,
    stability=0) set by the caller, e.g. from command-line flags; None means "not given". A value given both in the
    text and as an override must agree. source names where the text came from in error messages (an option such as
    '--method', or a file). Raises ConfigurationError for anything malformed or impossible, listing the known options
    for an unknown one."""
    method_part, *option_parts = _split_options(text.strip())
    method, _, basis = method_part.partition("/")
    try:
        values = _method_fields(method, basis)
    except ValueError as exc:
        raise ConfigurationError(str(exc), source=source, where=text) from None
    from_text: dict[str, Any] = {}
    for part in option_parts:
        if not part:
            continue
        key, equals, raw = part.partition("=")
        key = key.strip().lower()
        if key not in OPTIONS:
            raise ConfigurationError(
                f"unknown option {key!r}; known options: {', '.join(OPTIONS)}", source=source, where=text
            )
        if not equals or not raw.strip():
            raise ConfigurationError(f"option {key!r} needs a value ({key}=VALUE)", source=source, where=text)
        field, convert = OPTIONS[key]
        if field in from_text:
            raise ConfigurationError(f"option {key!r} given twice", source=source, where=text)
        try:
            from_text[field] = convert(raw.strip())
        except ValueError as exc:
            raise ConfigurationError(f"option {key}: {exc}", source=source, where=text) from None
    for key, value in overrides.items():
        if value is None:
            continue
        field = OPTIONS[key][0] if key in OPTIONS else key
        if field not in _SETTINGS_FIELDS:
            raise TypeError(f"parse_qm_spec() got an unknown setting {key!r}")
        if isinstance(value, str) and field in _FIELD_CONVERTERS:
            try:
                value = _FIELD_CONVERTERS[field](value)
            except ValueError as exc:
                raise ConfigurationError(f"{key}: {exc}", source=source, where=text) from None
        elif field in ("cas_orbitals", "avas"):
            value = tuple(value)
        if field in from_text and from_text[field] != value:
            raise ConfigurationError(
                f"{field} is {from_text[field]!r} in the method string but {value!r} elsewhere "
                "(e.g. a command-line flag): give it once",
                source=source,
                where=text,
            )
        from_text[field] = value
    values.update(from_text)
    try:
        return QMSettings(**values)
    except ConfigurationError as exc:
        raise ConfigurationError(exc.problem, source=source, where=text) from None


def take_options(text: str, keys: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Remove the options named in keys (a caller's own, e.g. a potential's workers=2) from a spec:
    ('casscf(6,4)/6-31g*,workers=2,states=3', ('workers',)) -> ('casscf(6,4)/6-31g*,states=3', {'workers': '2'}).
    The rest goes to `parse_qm_spec`."""
    method, *options = _split_options(text.strip())
    kept, taken = [method], {}
    for part in options:
        key, _, value = part.partition("=")
        if key.strip().lower() in keys:
            taken[key.strip().lower()] = value.strip()
        elif part:
            kept.append(part)
    return ",".join(kept), taken


def parse_method(spec: str, **options: Any) -> QMSettings:
    """'tda-hf/sto-3g', 'tddft-b3lyp/6-31g*' or 'casscf(2,2)/sto-3g' plus keyword options (QMSettings fields) ->
    QMSettings: `parse_qm_spec` (options may also follow the method in the string). NACs are analytic unless asked
    otherwise."""
    return parse_qm_spec(spec, source=None, **options)
