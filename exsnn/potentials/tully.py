"""Tully's three one-dimensional two-state scattering models (J. C. Tully, J. Chem. Phys. 93, 1061 (1990)).

One particle of mass 2000 electron masses moving along x; positions are (B, 1, 3) and only the x component
matters (forces and NACs have zero y, z components). Parameters in atomic units, as published:

* tully1, simple avoided crossing: V11 = A (1 - exp(-B|x|)) sign(x), V22 = -V11, V12 = C exp(-D x^2);
  A = 0.01, B = 1.6, C = 0.005, D = 1.0
* tully2, dual avoided crossing: V11 = 0, V22 = -A exp(-B x^2) + E0, V12 = C exp(-D x^2);
  A = 0.1, B = 0.28, C = 0.015, D = 0.06, E0 = 0.05
* tully3, extended coupling with reflection: V11 = A, V22 = -A, V12 = B exp(C x) for x < 0 and
  B (2 - exp(-C x)) for x > 0; A = 6e-4, B = 0.1, C = 0.9
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from exsnn.errors import ConfigurationError
from exsnn.potentials.base import Potential, PotentialOutput
from exsnn.potentials.diabatic import adiabatic_from_diabatic

TULLY_MASS = 2000.0

# Each model maps x (B,) to (V (B, 2, 2), dV/dx (B, 2, 2)).
DiabaticModel = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _assemble(v11: torch.Tensor, v22: torch.Tensor, v12: torch.Tensor) -> torch.Tensor:
    return torch.stack([v11, v12, v12, v22], -1).view(*v11.shape, 2, 2)


def simple_avoided_crossing(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    A, B, C, D = 0.01, 1.6, 0.005, 1.0
    decay = torch.exp(-B * x.abs())
    v11 = torch.sign(x) * A * (1 - decay)
    dv11 = A * B * decay
    v12 = C * torch.exp(-D * x**2)
    dv12 = -2 * D * x * v12
    return _assemble(v11, -v11, v12), _assemble(dv11, -dv11, dv12)


def dual_avoided_crossing(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    A, B, C, D, E0 = 0.1, 0.28, 0.015, 0.06, 0.05
    zero = torch.zeros_like(x)
    gauss = A * torch.exp(-B * x**2)
    v22 = -gauss + E0
    dv22 = 2 * B * x * gauss
    v12 = C * torch.exp(-D * x**2)
    dv12 = -2 * D * x * v12
    return _assemble(zero, v22, v12), _assemble(zero, dv22, dv12)


def extended_coupling(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    A, B, C = 6e-4, 0.1, 0.9
    left = x < 0
    growth = torch.exp(C * torch.where(left, x, torch.zeros_like(x)))
    decay = torch.exp(-C * torch.where(left, torch.zeros_like(x), x))
    v12 = torch.where(left, B * growth, B * (2 - decay))
    dv12 = torch.where(left, B * C * growth, B * C * decay)
    const = torch.full_like(x, A)
    zero = torch.zeros_like(x)
    return _assemble(const, -const, v12), _assemble(zero, zero, dv12)


TULLY_MODELS: dict[str, DiabaticModel] = {
    "tully1": simple_avoided_crossing,
    "tully2": dual_avoided_crossing,
    "tully3": extended_coupling,
}


class TullyPotential(Potential):
    """One of Tully's models as a batched potential."""

    def __init__(self, name: str, device: str | torch.device = "cpu") -> None:
        if name not in TULLY_MODELS:
            raise ConfigurationError(f"unknown Tully model {name!r}; expected one of {sorted(TULLY_MODELS)}")
        self.name = name
        self.model = TULLY_MODELS[name]
        self.n_states = 2
        self.device = torch.device(device)
        self.numbers = torch.zeros(1, dtype=torch.long, device=self.device)
        self.masses = torch.full((1,), TULLY_MASS, dtype=torch.float64, device=self.device)

    def diabatic(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Diabatic matrix and its x-derivative, (B, 2, 2) each."""
        return self.model(x)

    def compute(
        self, positions: torch.Tensor, states: torch.Tensor | None = None, all_forces: bool = False, nacs: bool = True,
        trajectories: torch.Tensor | None = None,
    ) -> PotentialOutput:
        x = positions[:, 0, 0]
        hamiltonian, derivative = self.model(x)
        # work on the x component only, then pad y and z with zeros: (B, 2, 2, 1 atom, 1 component)
        out = adiabatic_from_diabatic(hamiltonian, derivative[..., None, None], states, all_forces, nacs)
        pad = lambda t: None if t is None else torch.nn.functional.pad(t, (0, 2))  # noqa: E731
        out.forces, out.all_forces, out.nacs = pad(out.forces), pad(out.all_forces), pad(out.nacs)
        return out

    def describe(self) -> str:
        return f"Tully model {self.name[-1]} ({self.model.__name__.replace('_', ' ')}), mass {TULLY_MASS:g}"


def load(prefix: str, argument: str, base_dir: Path, device: str, numbers: object = None) -> TullyPotential:
    """Registry loader (exsnn.potentials.spec): `tully1`, `tully2`, `tully3`."""
    return TullyPotential(prefix, device=device)
