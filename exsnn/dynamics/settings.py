"""Settings of the surface-hopping integrator (atomic units inside; the CLI converts fs and eV)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RESCALE_CHOICES = ("nac", "velocity")
FRUSTRATED_CHOICES = ("keep", "reflect", "reflect_gradv")
DECOHERENCE_CHOICES = ("edc", "none")


@dataclass
class FSSHSettings:
    """How trajectories are propagated.

    dt: nuclear time step (atomic time units). n_steps: steps to run. substeps: electronic substeps per nuclear
    step (energies and v.d interpolated linearly; None: chosen every step so that, for every trajectory, the
    coupling rotation |v.d| dtau and the splitting-error scale sqrt(dE |v.d|) dtau stay below `max_substep_angle`). rescale: direction of the kinetic-energy adjustment after a hop
    ('nac' or 'velocity'). frustrated: 'keep' the velocity, 'reflect' its component along the rescaling direction,
    or 'reflect_gradv' (reflect only when the grad-V criterion of Jasper and Truhlar holds). decoherence: 'edc'
    (Granucci-Persico energy-based correction with constant `edc_c` Hartree) or 'none'. forced_hop_gap: hop to S0
    when the active state lies less than this (Hartree) above S0 (None: never). box: a trajectory ends when any
    coordinate is beyond [-box, box] Bohr and moving away (None: never). max_energy_drift: a trajectory whose total energy moves more
    than this (Hartree) from its start is stopped and marked failed. seed: drives every random number. propagate_finished: keep stepping
    trajectories that ended (cheaper for analytic models; their status and outcome stay as they were).
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
    max_energy_drift: float = 1e-2
    seed: int = 0
    max_substep_angle: float = 0.05
    propagate_finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("rescale", self.rescale, RESCALE_CHOICES),
            ("frustrated", self.frustrated, FRUSTRATED_CHOICES),
            ("decoherence", self.decoherence, DECOHERENCE_CHOICES),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if self.dt <= 0 or self.n_steps < 0 or (self.substeps is not None and self.substeps < 1):
            raise ValueError("dt must be positive, n_steps >= 0 and substeps >= 1")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
