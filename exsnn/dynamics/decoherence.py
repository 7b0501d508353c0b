"""Decoherence corrections of surface hopping, behind one small interface.

A scheme is a `Decoherence` subclass with a `name`, built from the integrator settings, whose `correct` returns the
coefficients after the step's hops from a `DecoherenceInput` (everything a scheme may need about the step). The
engine looks the scheme up by `settings.decoherence` in `SCHEMES`; a new one (augmented FSSH, another energy-based
rule) is a subclass added to that table.

* 'none': FSSH as Tully wrote it.
* 'edc': the energy-based decoherence correction of Granucci and Persico, J. Chem. Phys. 126, 134114 (2007):
  every inactive coefficient decays as c_k *= exp(-dt / tau_ka), tau_ka = (1 + C / E_kin) / |E_k - E_a|
  (C = `settings.edc_c`, Hartree; hbar = 1), and the active one is rescaled to keep the norm.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from exsnn.dynamics.fusion import Fused
from exsnn.dynamics.state import kinetic_energy, row_sum

if TYPE_CHECKING:  # settings look the schemes up here by name: no import back at run time
    from exsnn.dynamics.settings import FSSHSettings


@dataclass(frozen=True)
class DecoherenceInput:
    """The step as a decoherence scheme sees it, after the hops (B trajectories, N states, n atoms, P pairs)."""

    coefficients: torch.Tensor  # (B, N) complex128
    active: torch.Tensor  # (B,) long, after this step's hops
    previous_active: torch.Tensor  # (B,) long, before them
    energies: torch.Tensor  # (B, N) Hartree at the new positions
    velocities: torch.Tensor  # (B, n, 3) after hop rescaling
    forces: torch.Tensor  # (B, n, 3) of the state that was active before the hops
    nacs: torch.Tensor  # (B, P, n, 3) sign-aligned
    masses: torch.Tensor  # (n,) electron masses
    dt: float  # atomic time units


class Decoherence(ABC):
    """A decoherence correction applied once per nuclear step, after the hops."""

    name: ClassVar[str]

    def __init__(self, settings: FSSHSettings) -> None:
        self.settings = settings

    @abstractmethod
    def correct(self, step: DecoherenceInput) -> torch.Tensor:
        """The corrected coefficients (B, N) complex128 (a new tensor; the input is left as it is)."""


class NoDecoherence(Decoherence):
    """Plain FSSH: the coefficients are left as they are."""

    name = "none"

    def correct(self, step: DecoherenceInput) -> torch.Tensor:
        return step.coefficients


def energy_based_decoherence(
    coefficients: torch.Tensor, active: torch.Tensor, energies: torch.Tensor, kinetic: torch.Tensor, dt: float,
    constant: float, damp: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Granucci-Persico damping of coefficients (B, N) complex128 over a step dt, given the active states (B,),
    energies (B, N) Hartree, kinetic energies (B,) Hartree and the constant C (Hartree). Real arithmetic per
    trajectory (batch-independent); the active coefficient keeps its phase and takes the norm the others gave up.
    `damp`: the real arithmetic (default `damped_parts`; the engine may pass a fused one)."""
    X = torch.view_as_real(coefficients.resolve_conj())  # (B, N, 2)
    return torch.view_as_complex((damp or damped_parts)(X, active, energies, kinetic, dt, constant))


def damped_parts(X: torch.Tensor, active: torch.Tensor, energies: torch.Tensor, kinetic: torch.Tensor, dt: float,
                 constant: float) -> torch.Tensor:
    """`energy_based_decoherence` on real and imaginary parts X (B, N, 2); returns them contiguous."""
    B, N, _ = X.shape
    is_active = torch.arange(N, device=active.device)[None, :] == active[:, None]  # (B, N): masks, not index_put (which
    # waits for a GPU), pick and replace the active entries
    gaps = (energies - energies.gather(1, active[:, None])).abs()
    tau = (1.0 + constant / kinetic.clamp_min(1e-12))[:, None] / gaps.clamp_min(1e-300)
    damping = torch.where(is_active, 1.0, torch.exp(-dt / tau))
    X = X * damping[:, :, None]
    populations = row_sum(X.square())  # (B, N)
    others = row_sum(populations) - populations.gather(1, active[:, None])[:, 0]
    x_active = X.gather(1, active[:, None, None].expand(B, 1, 2))[:, 0]  # (B, 2)
    magnitude = row_sum(x_active.square()).sqrt()
    real_one = X.new_zeros(2)
    real_one[0] = 1.0  # a fill on the device (a tensor built from a list would be copied from the host)
    unit = torch.where((magnitude > 0)[:, None], x_active / magnitude.clamp_min(1e-300)[:, None], real_one)
    new_active = unit * torch.sqrt((1.0 - others).clamp_min(0.0))[:, None]
    return torch.where(is_active[:, :, None], new_active[:, None, :], X).contiguous()


class EnergyBasedDecoherence(Decoherence):
    """EDC of Granucci and Persico (2007) with the constant `settings.edc_c` (Hartree)."""

    name = "edc"

    def __init__(self, settings: FSSHSettings) -> None:
        super().__init__(settings)
        self._damp = Fused(damped_parts, settings.compile, "decoherence")

    def correct(self, step: DecoherenceInput) -> torch.Tensor:
        kinetic = kinetic_energy(step.velocities, step.masses)
        return energy_based_decoherence(step.coefficients, step.active, step.energies, kinetic, step.dt, self.settings.edc_c,
                                        self._damp)


#: name (settings.decoherence) -> scheme
SCHEMES: dict[str, type[Decoherence]] = {scheme.name: scheme for scheme in (NoDecoherence, EnergyBasedDecoherence)}


def make_decoherence(settings: FSSHSettings) -> Decoherence:
    """The scheme that `settings.decoherence` names."""
    return SCHEMES[settings.decoherence](settings)
