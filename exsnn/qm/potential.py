"""PySCF as a potential for `exsnn point` and on-the-fly surface hopping: `pyscf:tda-hf/sto-3g[,states=3,charge=0,nacs=analytic]`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from exsnn.data.properties import state_pairs
from exsnn.errors import ConfigurationError
from exsnn.potentials.base import Potential, PotentialOutput
from exsnn.qm.pyscf_backend import label_geometry
from exsnn.qm.settings import QMSettings, parse_method
from exsnn.units import AMU_IN_ELECTRON_MASS

_INTEGER_OPTIONS = ("states", "charge", "threads", "extra_roots")


def parse_spec(argument: str) -> QMSettings:
    """'tda-hf/sto-3g,states=3,charge=1,nacs=none' -> QMSettings."""
    method, *options = [part.strip() for part in argument.split(",") if part.strip()]
    values: dict[str, object] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key in _INTEGER_OPTIONS:
            values["n_states" if key == "states" else key] = int(value)
        elif key in ("nacs",):
            values[key] = value
        elif key in ("etf", "stability"):
            values["check_stability" if key == "stability" else key] = value.lower() in ("1", "true", "yes")
        elif key == "fd_step":
            values[key] = float(value)
        else:
            raise ValueError(f"unknown pyscf option {key!r}; expected states, charge, nacs, etf, stability, threads, extra_roots, fd_step")
    return parse_method(method, **values)  # type: ignore[arg-type]


class PySCFPotential(Potential):
    """Labels each structure with PySCF (one after another); a failed calculation gives NaN for that structure and a
    warning with its reason (`exsnn point` reports it, surface hopping ends that trajectory). The SCF
    of structure k starts from the converged density of structure k of the previous call (consecutive steps of a
    trajectory ensemble), falling back to PySCF's own guess."""

    def __init__(self, settings: QMSettings, numbers: np.ndarray) -> None:
        from ase.data import atomic_masses

        self.settings = settings
        self.n_states = settings.n_states
        self.numbers = torch.as_tensor(np.asarray(numbers), dtype=torch.long)
        self.masses = torch.as_tensor(atomic_masses[np.asarray(numbers)] * AMU_IN_ELECTRON_MASS, dtype=torch.float64)
        self._densities: dict[int, np.ndarray] = {}

    def compute(self, positions: torch.Tensor, states: torch.Tensor | None = None, all_forces: bool = False, nacs: bool = True,
                trajectories: torch.Tensor | None = None) -> PotentialOutput:
        numbers = self.numbers.numpy()
        energies, forces, couplings = [], [], []
        for k in range(len(positions)):
            geometry = positions[k].detach().cpu().numpy().astype(np.float64)
            result = label_geometry(numbers, geometry, self.settings, guess_dm=self._densities.get(k))
            if result.failure is not None and k in self._densities:  # the previous density may belong elsewhere
                result = label_geometry(numbers, geometry, self.settings)
            if result.failure is not None:  # NaN rows: the surface-hopping engine ends this trajectory
                warnings.warn(f"PySCF failed at structure {k}: {result.failure}", stacklevel=2)
                self._densities.pop(k, None)
                energies.append(np.full(self.n_states, np.nan))
                forces.append(np.full((self.n_states, len(numbers), 3), np.nan))
                if self.settings.nacs != "none" and self.n_states > 1:
                    couplings.append(np.full((len(state_pairs(self.n_states)), len(numbers), 3), np.nan))
                continue
            self._densities[k] = result.density  # type: ignore[assignment]
            energies.append(result.energies)
            forces.append(result.forces.transpose(1, 0, 2))  # type: ignore[union-attr]
            if result.nacs is not None:
                couplings.append(result.nacs.transpose(1, 0, 2))
        all_f = torch.as_tensor(np.array(forces))
        out = PotentialOutput(energies=torch.as_tensor(np.array(energies)))
        if all_forces:
            out.all_forces = all_f
        if states is not None:
            out.forces = all_f[torch.arange(len(positions)), states.cpu()]
        if nacs and couplings:
            out.nacs = torch.as_tensor(np.array(couplings))
        return out

    def describe(self) -> str:
        s = self.settings
        return f"PySCF {s.method_label}/{s.basis}, {s.n_states} states, charge {s.charge}"


def load(prefix: str, argument: str, base_dir: Path, device: str, numbers: np.ndarray | None = None) -> PySCFPotential:
    """Registry loader (exsnn.potentials.spec): `pyscf:METHOD/BASIS[,options]`."""
    if numbers is None:
        raise ConfigurationError("pyscf potentials need the molecule's atoms (give a geometry file)", source="potential")
    return PySCFPotential(parse_spec(argument), numbers)
