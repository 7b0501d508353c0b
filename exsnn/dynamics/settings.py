"""Settings of the surface-hopping integrator and of its output (atomic units inside; the TOML reader and the CLI
convert fs and eV). Every default lives here, in the dataclass fields; `exsnn.dynamics.config` and the CLI take
their defaults from these fields (`default_of`)."""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from exsnn.errors import ConfigurationError
from exsnn.units import EV_IN_HARTREE

RESCALE_CHOICES = ("nac", "velocity")
COUPLING_CHOICES = ("nac", "curvature")
FRUSTRATED_CHOICES = ("keep", "reflect", "reflect_gradv")
#: maximum number of electronic substeps per nuclear step chosen automatically (a trajectory needing more is
#: integrated with this many: its rotation angles then exceed `max_substep_angle`)
MAX_AUTO_SUBSTEPS = 10_000


def decoherence_choices() -> tuple[str, ...]:
    """Names of the decoherence schemes (the table `exsnn.dynamics.decoherence.SCHEMES`; imported on demand because
    it needs torch)."""
    from exsnn.dynamics.decoherence import SCHEMES

    return tuple(SCHEMES)


@dataclass
class FSSHSettings:
    """How trajectories are propagated.

    dt: nuclear time step (atomic time units). n_steps: steps to run. substeps: electronic substeps per nuclear
    step (energies and v.d interpolated linearly; None: chosen every step for each trajectory on its own, so that its
    coupling rotation |v.d| dtau and splitting-error scale sqrt(dE |v.d|) dtau stay below `max_substep_angle`; two
    states take exact fourth-order substeps sized by `electronic.auto_substeps`' error estimate).
    rescale: direction of the kinetic-energy adjustment after a hop ('nac' or 'velocity'). frustrated: 'keep' the
    velocity, 'reflect' its component along the rescaling direction, or 'reflect_gradv' (reflect only when the grad-V
    criterion of Jasper and Truhlar holds). decoherence: a name of `exsnn.dynamics.decoherence.SCHEMES`: 'edc'
    (Granucci-Persico energy-based correction with constant `edc_c` Hartree) or 'none'. forced_hop_gap: hop to S0
    when the active state lies less than this (Hartree) above S0 (None: never). box: a trajectory ends when any
    coordinate is beyond [-box, box] Bohr and moving away (None: never). max_energy_drift: a trajectory whose total
    energy moves more than this (Hartree; default 0.2 eV, as SHARC) from its start is stopped and marked failed.
    seed: drives every random number. propagate_finished: keep stepping trajectories that ended (cheaper for
    analytic models; their status and outcome stay as they were). couplings: what drives the electronic propagation:
    'nac' (T_ij = v . d_ij from the potential's NACs) or 'curvature' (time-derivative couplings from the curvature of
    the energy gaps, `exsnn.dynamics.curvature`; no NACs are asked of the potential; needs rescale = 'velocity').
    compile: fuse the electronic substeps, substep counts and decoherence through `torch.compile`
    (`exsnn.dynamics.fusion`; for GPUs, where a step is otherwise bound by kernel launches; eager where compiling fails).
    sign_bisections: for a potential without state vectors, how many times a step may be halved to follow the states'
    signs where a coupling's NACs at its two ends make a cosine below `sign_min_cosine` (`exsnn.dynamics.sign_tracking`;
    each halving costs one potential call of the unsure trajectories; 0: align the two ends directly).
    ground_state_end: a trajectory that has been in S0 for this long (atomic time units, counted from its last
    arrival there, or from the start for one started in S0) ends with status RELAXED and stays in S0 in the
    populations, as SHARC's `killafter` (None: never). It saves the hot ground-state dynamics after the photoreaction,
    which decides nothing about the excited states unless a trajectory hops back up.
    """

    dt: float
    n_steps: int
    substeps: int | None = None
    rescale: str = "nac"
    frustrated: str = "keep"
    decoherence: str = "edc"
    edc_c: float = 0.1
    forced_hop_gap: float | None = None
    box: float | None = None
    max_energy_drift: float = 0.2 * EV_IN_HARTREE
    seed: int = 0
    max_substep_angle: float = 0.05
    propagate_finished: bool = False
    couplings: str = "nac"
    compile: bool = False
    sign_bisections: int = 4
    sign_min_cosine: float = 0.97
    ground_state_end: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("couplings", self.couplings, COUPLING_CHOICES),
            ("rescale", self.rescale, RESCALE_CHOICES),
            ("frustrated", self.frustrated, FRUSTRATED_CHOICES),
            ("decoherence", self.decoherence, decoherence_choices()),
        ):
            if value not in choices:
                raise ConfigurationError(f"must be one of {choices}, got {value!r}", where=name)
        if self.couplings == "curvature" and self.rescale != "velocity":
            raise ConfigurationError("curvature-driven couplings have no coupling vector to rescale along: set rescale "
                                     "to 'velocity'", where="rescale")
        for name in ("dt", "edc_c", "forced_hop_gap", "box", "max_energy_drift", "max_substep_angle", "ground_state_end"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigurationError(f"must be a finite number, got {value!r}", where=name)
        positive = {"dt": self.dt, "box": self.box, "max_energy_drift": self.max_energy_drift,
                    "max_substep_angle": self.max_substep_angle, "ground_state_end": self.ground_state_end}
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise ConfigurationError(f"must be positive, got {value!r}", where=name)
        for name, value in (("edc_c", self.edc_c), ("forced_hop_gap", self.forced_hop_gap)):
            if value is not None and value < 0:
                raise ConfigurationError(f"must not be negative, got {value!r}", where=name)
        if self.n_steps < 0:
            raise ConfigurationError(f"must not be negative, got {self.n_steps}", where="n_steps")
        if isinstance(self.sign_bisections, bool) or not isinstance(self.sign_bisections, int) or self.sign_bisections < 0:
            raise ConfigurationError(f"must be a non-negative integer, got {self.sign_bisections!r}", where="sign_bisections")
        if not -1.0 <= self.sign_min_cosine <= 1.0:
            raise ConfigurationError(f"must lie in [-1, 1], got {self.sign_min_cosine!r}", where="sign_min_cosine")
        if self.substeps is not None and self.substeps < 1:
            raise ConfigurationError(f"must be at least 1, got {self.substeps}", where="substeps")
        if not 0 <= self.seed < 2**64:
            raise ConfigurationError(f"must be an integer in [0, 2**64), got {self.seed}", where="seed")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OutputSettings:
    """What a run file stores: records of states, populations and energies every `record_every` steps, positions
    and velocities every `geometry_every` steps, and a checkpoint (records committed with the ensemble state) every
    `checkpoint_every` steps."""

    record_every: int = 1
    geometry_every: int = 10
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"must be an integer of at least 1, got {value!r}", where=f.name)


def default_of(settings_class: type, name: str) -> Any:
    """The default of field `name` of a settings dataclass (the one place defaults are written)."""
    for f in fields(settings_class):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise KeyError(f"{settings_class.__name__}.{name} has no default")
    raise KeyError(f"{settings_class.__name__} has no field {name!r}")
