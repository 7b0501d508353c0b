"""An ASE calculator around a trained exsnn model (or committee): eV and Angstrom at the edge, atomic units inside.

Parameters (ASE's rules: `calc.set(state=2)` or `calc.state = 2` changes them and drops cached results):
``state``, the adiabatic state whose ``energy`` and ``forces`` ASE sees (default 0, S0).

Properties: ``energy`` and ``forces`` of `state`; ``state_energies`` (N,) of every state in eV (not ASE's
``energies``, which means per-atom energies there); ``state_forces`` (N, n, 3) in eV/Angstrom; ``nacs`` (P, n, 3) in
1/Angstrom (pairs 01, 02, ..., 12, ...); ``dipoles`` (Pd, 3) in e*Angstrom when the model predicts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ase.calculators.calculator import Calculator, all_changes

from exsnn.errors import ConfigurationError
from exsnn.model.potential import ModelPotential
from exsnn.units import ANGSTROM_IN_BOHR, HARTREE_IN_EV


class ExsnnCalculator(Calculator):
    implemented_properties = ["energy", "forces", "state_energies", "state_forces", "nacs", "dipoles"]
    default_parameters = {"state": 0}
    discard_results_on_any_change = True  # a new state must not return the old state's cached energy

    def __init__(self, model: str | Path, state: int = 0, device: str = "cpu", **kwargs: Any) -> None:
        self.model_path = Path(model)
        self.device = device
        self._potential: ModelPotential | None = None
        super().__init__(state=state, **kwargs)

    @property
    def state(self) -> int:
        return int(self.parameters["state"])

    @state.setter
    def state(self, value: int) -> None:
        self.set(state=value)

    def _potential_for(self, numbers: Any) -> ModelPotential:
        if self._potential is None or self._potential.numbers.cpu().tolist() != list(numbers):
            self._potential = ModelPotential(self.model_path, numbers, self.device)
        return self._potential

    def calculate(self, atoms: Any = None, properties: Any = ("energy",), system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        potential = self._potential_for(self.atoms.numbers)
        if not 0 <= self.state < potential.n_states:
            raise ConfigurationError(f"state {self.state} does not exist: the model has {potential.n_states} states",
                                     source="ExsnnCalculator", where="state")
        positions = torch.as_tensor(self.atoms.positions * ANGSTROM_IN_BOHR, dtype=torch.float64)[None]
        out = potential.compute(positions, all_forces=True, nacs=True)
        energies = out.energies[0].cpu().numpy() * HARTREE_IN_EV
        forces = out.all_forces[0].cpu().numpy() * HARTREE_IN_EV * ANGSTROM_IN_BOHR  # type: ignore[union-attr]
        self.results = {
            "state_energies": energies,
            "state_forces": forces,
            "energy": float(energies[self.state]),
            "forces": forces[self.state],
        }
        if out.nacs is not None:
            self.results["nacs"] = out.nacs[0].cpu().numpy() * ANGSTROM_IN_BOHR
        if out.dipoles is not None:
            self.results["dipoles"] = out.dipoles[0].cpu().numpy() / ANGSTROM_IN_BOHR
