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
from exsnn.potentials.diabatic import two_state_components

TULLY_MASS = 2000.0

# Each model maps x (B,) to (V (B, 2, 2), dV/dx (B, 2, 2)).
DiabaticModel = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: a model's matrix elements at x (B,): V11, V12, V22, dV11/dx, dV12/dx, dV22/dx
Components = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _assemble(v11: torch.Tensor, v22: torch.Tensor, v12: torch.Tensor) -> torch.Tensor:
    return torch.stack([v11, v12, v12, v22], -1).view(*v11.shape, 2, 2)


def simple_avoided_crossing_elements(x: torch.Tensor) -> Components:
    A, B, C, D = 0.01, 1.6, 0.005, 1.0
    decay = torch.exp(-B * x.abs())
    v11 = torch.sign(x) * A * (1 - decay)
    dv11 = A * B * decay
    v12 = C * torch.exp(-D * x**2)
    dv12 = -2 * D * x * v12
    return v11, v12, -v11, dv11, dv12, -dv11


def dual_avoided_crossing_elements(x: torch.Tensor) -> Components:
    A, B, C, D, E0 = 0.1, 0.28, 0.015, 0.06, 0.05
    zero = torch.zeros_like(x)
    gauss = A * torch.exp(-B * x**2)
    v22 = -gauss + E0
    dv22 = 2 * B * x * gauss
    v12 = C * torch.exp(-D * x**2)
    dv12 = -2 * D * x * v12
    return zero, v12, v22, zero, dv12, dv22


def extended_coupling_elements(x: torch.Tensor) -> Components:
    A, B, C = 6e-4, 0.1, 0.9
    left = x < 0
    growth = torch.exp(C * torch.where(left, x, torch.zeros_like(x)))
    decay = torch.exp(-C * torch.where(left, torch.zeros_like(x), x))
    v12 = torch.where(left, B * growth, B * (2 - decay))
    dv12 = torch.where(left, B * C * growth, B * C * decay)
    const = torch.full_like(x, A)
    zero = torch.zeros_like(x)
    return const, v12, -const, zero, dv12, zero


def _matrices(elements: Callable[[torch.Tensor], Components]) -> DiabaticModel:
    def model(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v11, v12, v22, dv11, dv12, dv22 = elements(x)
        return _assemble(v11, v22, v12), _assemble(dv11, dv22, dv12)

    model.__name__ = elements.__name__.removesuffix("_elements")
    return model


simple_avoided_crossing = _matrices(simple_avoided_crossing_elements)
dual_avoided_crossing = _matrices(dual_avoided_crossing_elements)
extended_coupling = _matrices(extended_coupling_elements)

TULLY_ELEMENTS: dict[str, Callable[[torch.Tensor], Components]] = {
    "tully1": simple_avoided_crossing_elements,
    "tully2": dual_avoided_crossing_elements,
    "tully3": extended_coupling_elements,
}
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
        self.elements = TULLY_ELEMENTS[name]
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
        B = len(x)
        v11, v12, v22, dv11, dv12, dv22 = self.elements(x)
        # the closed-form two-state case on the x component only; y and z are padded with zeros
        lower, upper, vectors, (g00, g01, g11), gap = two_state_components(v11, v12, v22, dv11[:, None], dv12[:, None],
                                                                           dv22[:, None])
        out = PotentialOutput(energies=torch.stack([lower, upper], dim=-1), state_vectors=vectors)
        pad = torch.nn.functional.pad
        if states is not None:
            out.forces = pad(-torch.where((states == 0)[:, None], g00, g11), (0, 2)).view(B, 1, 3)
        if all_forces:
            out.all_forces = pad(-torch.stack([g00, g11], 1), (0, 2)).view(B, 2, 1, 3)
        if nacs:
            out.nacs = pad(g01 / gap[:, None], (0, 2)).view(B, 1, 1, 3)
        return out

    def describe(self) -> str:
        return f"Tully model {self.name[-1]} ({self.model.__name__.replace('_', ' ')}), mass {TULLY_MASS:g}"


def load(prefix: str, argument: str, base_dir: Path, device: str, numbers: object = None) -> TullyPotential:
    """Registry loader (exsnn.potentials.spec): `tully1`, `tully2`, `tully3`."""
    return TullyPotential(prefix, device=device)
