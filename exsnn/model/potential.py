"""A trained network (or a committee of them) as a batched potential for dynamics and `exsnn point`.

`model:PATH` loads PATH/model.pt, a model.pt file, or a committee folder (committee.json or member_*/model.pt).
A committee drives dynamics in one of two ways (`driver`):

* "mean": every structure gets the mean over members; NAC signs of every member are first aligned to the first
  member's (the consistent state-sign vector that maximises the overlap of the NACs and transition dipoles),
  otherwise opposite signs would cancel; transition dipoles get the same signs as the NACs.
* "members": trajectory t is driven by member t mod K alone (its own energies, forces, NACs, dipoles and state
  vectors). The ensemble's populations then average over the committee's models, so the model uncertainty enters
  them, and no trajectory feels an average of surfaces that the members place differently: near an intersection
  the mean of adiabatic energies and couplings is no member's surface and smears the seam. On the SO2 LVC test
  (issue #14) four members with population errors 0.166 / 0.036 / 0.055 / 0.043 gave 0.242 as a mean-driven
  committee and 0.065 as the mean of the members' own populations.
* "hamiltonian" (members with the diabatic head): every structure gets the eigen-decomposition of the mean of the
  members' quasi-diabatic Hamiltonians H_k and of their derivatives dH_k/dR (each member's diabatic states first
  ordered and signed as member 0's, see `mean_hamiltonian`); energies, forces and NACs then follow from the averaged
  H by Hellmann-Feynman, so they are one consistent surface whose intersection seam lies where the averaged H puts
  it, instead of the mean of adiabatic quantities that smears a seam the members place differently into an avoided
  crossing. SO2 LVC test, four members on 60 Wigner labels (members alone 0.039-0.091): population error 0.056
  against 0.096 for "mean" and 0.055 for "members" (issue #14).

Networks with the diabatic head also give state vectors (the eigenvectors of member 0's Hamiltonian for "mean", of
the averaged one for "hamiltonian"), so that dynamics tracks the states' signs from step to step by their overlaps
(as on an LVC oracle) rather than from the NACs, which turn fast near an intersection. The spread over members of
the last call is kept in `last_disagreement` (energies (B, N), forces (B, n, 3), nacs (B, P, n, 3),
dipoles (B, Pd, 3)), and the members' NACs of that call, signs aligned, in `last_member_nacs` (K, B, P, n, 3).
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import schnetpack.properties as structure
import torch

from exsnn.data.phases import best_state_signs, pair_signs
from exsnn.data.properties import dipole_pairs, state_pairs
from exsnn.errors import ConfigurationError, DataError
from exsnn.model.network import MultiStateNetwork, add_forces, project_diabatic_derivatives
from exsnn.model.training import MODEL_FILE, load_network
from exsnn.potentials.base import Potential, PotentialOutput
from exsnn.potentials.spec import resolve_path
from exsnn.units import AMU_IN_ELECTRON_MASS


def model_files(path: str | Path) -> list[Path]:
    """The model.pt files behind a model path (one for a single model, several for a committee)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / "committee.json").exists():
        members = json.loads((path / "committee.json").read_text())["members"]
        files = [Path(m) if Path(m).is_absolute() else path / m for m in members]  # relative: to the committee folder
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise DataError(path / "committee.json", "members", f"member model files not found: {', '.join(missing)}")
        return files
    if (path / MODEL_FILE).exists():
        return [path / MODEL_FILE]
    members = sorted(path.glob(f"member_*/{MODEL_FILE}"))
    if not members:
        raise DataError(path, "model", f"no {MODEL_FILE} and no committee members (member_*/{MODEL_FILE}) found")
    return members


def align_committee_signs(nacs: torch.Tensor | None, dipoles: torch.Tensor | None, n_states: int) -> None:
    """Give every committee member the state signs of member 0, in place: NACs (K, B, P, n, 3) and dipoles
    (K, B, Pd, 3) of a member share one consistent state-sign vector per structure, chosen to maximise the overlap of
    all its pair quantities (NACs and transition dipoles) with member 0's."""
    stacks = [t for t in (nacs, dipoles) if t is not None]
    if not stacks or n_states < 2:
        return
    transition = [k for k, (i, j) in enumerate(dipole_pairs(n_states)) if i < j]
    for k in range(1, len(stacks[0])):
        overlaps, pairs = [], []
        if nacs is not None:
            overlaps.append((nacs[k] * nacs[0]).flatten(2).sum(-1))
            pairs += state_pairs(n_states)
        if dipoles is not None:
            overlaps.append((dipoles[k][:, transition] * dipoles[0][:, transition]).sum(-1))
            pairs += [dipole_pairs(n_states)[t] for t in transition]
        signs = best_state_signs(torch.cat(overlaps, dim=1), n_states, pairs)
        if nacs is not None:
            nacs[k] = nacs[k] * pair_signs(signs, n_states)[:, :, None, None]
        if dipoles is not None:
            dipoles[k] = dipoles[k] * pair_signs(signs, n_states, dipole_pairs(n_states))[:, :, None]


#: molecules of up to this many atoms get the all-pairs neighbour list (every ordered pair i != j of each structure,
#: built once per batch size and kept): pairs beyond the cutoff then carry exactly zero weight (the cosine cutoff
#: vanishes there and so does its derivative), so energies, forces and couplings equal those of the cutoff-filtered
#: list, without a distance filter (and its host synchronisation on a GPU) at every call
ALL_PAIRS_MAX_ATOMS = 32
NEIGHBOUR_CHOICES = ("auto", "all-pairs", "cutoff")
_CACHED_BATCH_SIZES = 8  # batch layouts kept (the engine calls with the running trajectories, hop refreshes, ...)
_OUTPUTS = ("energies", "forces", "nacs", "dipoles")  # what `compute` uses of a network's predictions
DRIVERS = ("mean", "members", "hamiltonian")


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _mean(stack: torch.Tensor) -> torch.Tensor:
    """Mean over committee members (a single member's values as they are)."""
    return stack[0].contiguous() if stack.shape[0] == 1 else stack.mean(0)


def mean_hamiltonian(outputs: list[dict[str, torch.Tensor]], idx_m: torch.Tensor, n_states: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The committee mean of the diabatic-head members' Hamiltonians H (B, N, N) and derivatives dH/dR (A, N, N, 3),
    float64, each member first put into member 0's diabatic gauge: per structure, the order of its diabatic states
    (a permutation) and their signs that bring its H closest to member 0's (Frobenius norm), the signs for each order
    chosen by the overlap of the off-diagonal elements of H and dH/dR (Hartree, and Hartree/Bohr summed over atoms).
    Only the adiabatic labels are fitted, so independently trained members may order and sign their diabatic states
    differently; a continuous rotation between their gauges is not undone (`diabatic_coupling_weight` in training
    keeps the gauges close to the adiabatic one)."""
    hamiltonians = [out["hamiltonian"].detach().double() for out in outputs]
    derivatives = [out["hamiltonian_derivative"].detach().double() for out in outputs]
    reference_h, reference_d = hamiltonians[0], derivatives[0]
    pairs = state_pairs(n_states)
    rows, cols = [i for i, _ in pairs], [j for _, j in pairs]
    total_h, total_d = reference_h.clone(), reference_d.clone()
    for h, d in zip(hamiltonians[1:], derivatives[1:]):
        best_h, best_d, best_distance = h, d, None
        for order in itertools.permutations(range(n_states)):
            index = list(order)
            hp, dp = h[:, index][:, :, index], d[:, index][:, :, index]
            overlap = hp[:, rows, cols] * reference_h[:, rows, cols]  # (B, P)
            atomwise = (dp[:, rows, cols] * reference_d[:, rows, cols]).sum(-1)  # (A, P)
            overlap = overlap + torch.zeros_like(overlap).index_add_(0, idx_m, atomwise)
            signs = best_state_signs(overlap, n_states)  # (B, N)
            flip = signs[:, :, None] * signs[:, None, :]  # (B, N, N)
            hp, dp = flip * hp, flip[idx_m][..., None] * dp
            distance = (hp - reference_h).pow(2).sum((1, 2))  # (B,)
            if best_distance is None:
                best_h, best_d, best_distance = hp, dp, distance
                continue
            closer = distance < best_distance
            best_h = torch.where(closer[:, None, None], hp, best_h)
            best_d = torch.where(closer[idx_m][:, None, None, None], dp, best_d)
            best_distance = torch.minimum(distance, best_distance)
        total_h += best_h
        total_d += best_d
    return total_h / len(outputs), total_d / len(outputs)


def _pick(stack: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Structure b's values from member members[b]: (K, B, ...) -> (B, ...)."""
    return stack[members, torch.arange(stack.shape[1], device=stack.device)]


class ModelPotential(Potential):
    """Network potential for one molecule (atomic numbers fixed at construction).

    neighbours: 'all-pairs' (every pair; see ALL_PAIRS_MAX_ATOMS), 'cutoff' (pairs within the cutoff, filtered at
    every call), or 'auto' (all-pairs up to ALL_PAIRS_MAX_ATOMS atoms). compile: evaluate the networks' force-free
    part through `torch.compile` (forces by autograd through the compiled graph); where compiling fails (no C++
    compiler, an unsupported operation) the potential warns once and evaluates eagerly. flush_denormal: on the CPU,
    flush denormal floats to zero during network evaluation (the Gaussian radial basis underflows into them, and
    arithmetic on denormals is slow; the values change by less than 1e-37). driver: how a committee drives
    ("mean" or "members", see the module docstring; a single model ignores it).
    """

    def __init__(
        self, path: str | Path, numbers: np.ndarray, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
        neighbours: str = "auto", compile: bool = False, flush_denormal: bool = True, driver: str = "mean",
    ) -> None:
        """`dtype` (torch.float32 or torch.float64) casts the networks; default: as trained."""
        from ase.data import atomic_masses, chemical_symbols

        if neighbours not in NEIGHBOUR_CHOICES:
            raise ConfigurationError(f"must be one of {NEIGHBOUR_CHOICES}, got {neighbours!r}", where="neighbours")
        if driver not in DRIVERS:
            raise ConfigurationError(f"must be one of {DRIVERS}, got {driver!r}", where="driver")
        self.driver = driver
        self.device = torch.device(device)
        self.networks = [load_network(p, self.device) for p in model_files(path)]
        if driver == "hamiltonian" and not all(getattr(network, "diabatic", False) for network in self.networks):
            raise ConfigurationError("needs committee members with the diabatic head (exsnn train --head diabatic)",
                                     source=str(path), where="driver")
        if dtype is not None:
            self.networks = [network.to(dtype) for network in self.networks]
        self.n_states = self.networks[0].n_states
        trained = set(self.networks[0].config.elements)
        unseen = sorted(set(int(z) for z in np.asarray(numbers)) - trained) if trained else []
        if unseen:
            raise ConfigurationError(
                f"the structure holds {', '.join(chemical_symbols[z] for z in unseen)}, but the model was trained on "
                f"{', '.join(chemical_symbols[z] for z in sorted(trained))} only", source=str(path), where="elements")
        molecule = self.networks[0].config.molecule
        if molecule and list(np.asarray(numbers)) != molecule:
            raise ConfigurationError(
                f"the model was trained with indexed couplings on atoms {molecule} in this order; the structure has "
                f"{[int(z) for z in np.asarray(numbers)]}", source=str(path), where="atom order")
        self.numbers = torch.as_tensor(np.asarray(numbers), dtype=torch.long, device=self.device)
        self.masses = torch.as_tensor(atomic_masses[np.asarray(numbers)] * AMU_IN_ELECTRON_MASS, dtype=torch.float64, device=self.device)
        self.cutoff = self.networks[0].config.cutoff
        self.dtype = next(self.networks[0].parameters()).dtype
        n = len(numbers)
        pairs = torch.nonzero(~torch.eye(n, dtype=torch.bool, device=self.device))
        self._pair_i, self._pair_j = pairs[:, 0], pairs[:, 1]
        self.all_pairs = neighbours == "all-pairs" or (neighbours == "auto" and n <= ALL_PAIRS_MAX_ATOMS)
        self._layouts: dict[int, dict[str, torch.Tensor]] = {}  # batch size -> the inputs that do not move
        self.compile = compile
        self._compiled: dict[torch.nn.Module, Callable[..., dict[str, torch.Tensor]] | None] = {}
        self.flush_denormal = flush_denormal and self.device.type == "cpu"
        self.last_disagreement: dict[str, torch.Tensor] = {}
        self.last_member_nacs: torch.Tensor | None = None  # (K, B, P, n, 3) of the last call, signs aligned to member 0
        self.path = Path(path)

    def _layout(self, B: int) -> dict[str, torch.Tensor]:
        """The inputs of a batch of B structures that do not depend on the positions (the all-pairs neighbour list
        among them), built once per batch size."""
        layout = self._layouts.get(B)
        if layout is not None:
            return layout
        n = self.n_atoms
        offsets = (torch.arange(B, device=self.device) * n)[:, None]
        idx_i = (self._pair_i[None] + offsets).reshape(-1)
        idx_j = (self._pair_j[None] + offsets).reshape(-1)
        layout = {
            structure.Z: self.numbers.repeat(B),
            structure.n_atoms: torch.full((B,), n, dtype=torch.long, device=self.device),
            structure.idx_m: torch.arange(B, device=self.device).repeat_interleave(n),
            structure.idx_i: idx_i,
            structure.idx_j: idx_j,
            structure.offsets: torch.zeros((len(idx_i), 3), dtype=self.dtype, device=self.device),
            structure.cell: torch.zeros((B, 3, 3), dtype=self.dtype, device=self.device),
            structure.pbc: torch.zeros((B, 3), dtype=torch.bool, device=self.device),
        }
        if len(self._layouts) >= _CACHED_BATCH_SIZES:
            self._layouts.pop(next(iter(self._layouts)))
        self._layouts[B] = layout
        return layout

    def batch(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """SchNetPack inputs for B copies of the molecule at positions (B, n, 3), with the neighbour list."""
        B, n, _ = positions.shape
        flat = positions.reshape(B * n, 3).to(self.dtype)
        layout = self._layout(B)
        if self.all_pairs:
            return {**layout, structure.R: flat}
        idx_i, idx_j = layout[structure.idx_i], layout[structure.idx_j]
        keep = torch.linalg.vector_norm(flat[idx_j] - flat[idx_i], dim=1) < self.cutoff
        idx_i, idx_j = idx_i[keep], idx_j[keep]
        return {**layout, structure.R: flat, structure.idx_i: idx_i, structure.idx_j: idx_j,
                structure.offsets: torch.zeros((len(idx_i), 3), dtype=self.dtype, device=self.device)}

    def _compiled_predict(self, network: torch.nn.Module) -> Callable[..., dict[str, torch.Tensor]] | None:
        if not self.compile or not isinstance(network, MultiStateNetwork) or network.diabatic:
            return None  # the diabatic head's couplings are derivatives too: evaluated eagerly
        if network not in self._compiled:
            self._compiled[network] = torch.compile(network.predict, dynamic=True)
        return self._compiled[network]

    def _evaluate(self, network: torch.nn.Module, batch: dict[str, torch.Tensor], mode: str | None,
                  states: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One member's predictions (forces as `mode` asks), compiled where asked and possible."""
        predict = self._compiled_predict(network)
        if predict is not None:
            try:
                positions = batch[structure.R].detach().requires_grad_(mode is not None)
                with torch.set_grad_enabled(mode is not None):
                    out = predict({**batch, structure.R: positions})
                    add_forces(out, positions, mode, states, False, network.n_states)
                return out
            except Exception as exc:  # no compiler, an unsupported operation: evaluate eagerly from now on
                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); the network is evaluated eagerly",
                              RuntimeWarning, stacklevel=3)
                self._compiled[network] = None
        return network(batch, forces=mode, states=states)

    def evaluate(self, batch: dict[str, torch.Tensor], mode: str | None, states: torch.Tensor | None = None
                 ) -> list[dict[str, torch.Tensor]]:
        """Every member's raw predictions on a `batch`, forces as `mode` asks (None, 'selected' of `states`, 'all'),
        as `compute` evaluates them (compiled where asked, denormals flushed on the CPU)."""
        if self.flush_denormal:
            torch.set_flush_denormal(True)
        try:
            return [self._evaluate(network, batch, mode, states) for network in self.networks]
        finally:
            if self.flush_denormal:
                torch.set_flush_denormal(False)

    def compute(
        self, positions: torch.Tensor, states: torch.Tensor | None = None, all_forces: bool = False, nacs: bool = True,
        trajectories: torch.Tensor | None = None,
    ) -> PotentialOutput:
        B, n, _ = positions.shape
        mode = "all" if all_forces else ("selected" if states is not None else None)
        batch = self.batch(positions.to(self.device))
        outputs = self.evaluate(batch, mode, states)  # one neighbour list for all
        members = [{k: v.detach().to(torch.float64) for k, v in out.items() if k in _OUTPUTS} for out in outputs]
        committee = len(members) > 1
        driving = None  # driver "members": the member that drives each structure's trajectory
        if committee and self.driver == "members":
            ids = torch.arange(B, device=self.device) if trajectories is None else trajectories.to(self.device)
            driving = ids % len(members)

        def combine(stack: torch.Tensor) -> torch.Tensor:
            return _mean(stack) if driving is None else _pick(stack, driving)

        energies = _stack([m["energies"] for m in members])
        vectors = None  # diabatic head: the eigenvectors track the states' signs (member 0's for the mean)
        if "state_vectors" in outputs[0]:
            vectors = outputs[0]["state_vectors"].detach().to(torch.float64) if driving is None else _pick(
                _stack([out["state_vectors"].detach().to(torch.float64) for out in outputs]), driving)
        result = PotentialOutput(energies=combine(energies), state_vectors=vectors)
        disagreement = {"energies": energies.std(0) if committee else torch.zeros_like(result.energies)}
        if mode is not None:
            forces = _stack([m["forces"] for m in members])
            if mode == "all":
                forces = forces.reshape(len(members), B, n, self.n_states, 3).permute(0, 1, 3, 2, 4)
                result.all_forces = combine(forces)
                if states is not None:
                    result.forces = result.all_forces[torch.arange(B, device=self.device), states]
            else:
                forces = forces.reshape(len(members), B, n, 3)
                result.forces = combine(forces)
            if committee:
                disagreement["forces"] = forces.std(0)
        nac_stack = dipole_stack = None
        if nacs and "nacs" in members[0]:
            nac_stack = _stack([m["nacs"].reshape(B, n, -1, 3).permute(0, 2, 1, 3) for m in members])  # (K, B, P, n, 3)
        if "dipoles" in members[0]:
            dipole_stack = _stack([m["dipoles"] for m in members])  # (K, B, Pd, 3)
        if driving is not None:  # each member's own signs, consistent with its own state vectors
            result.nacs = None if nac_stack is None else _pick(nac_stack, driving)
            result.dipoles = None if dipole_stack is None else _pick(dipole_stack, driving)
        align_committee_signs(nac_stack, dipole_stack, self.n_states)
        self.last_member_nacs = nac_stack if committee else None
        if nac_stack is not None:
            if driving is None:
                result.nacs = _mean(nac_stack)
            if committee:
                disagreement["nacs"] = nac_stack.std(0)
        if dipole_stack is not None:
            if driving is None:
                result.dipoles = _mean(dipole_stack)
            if committee:
                disagreement["dipoles"] = dipole_stack.std(0)
        if committee and self.driver == "hamiltonian":
            self._drive_by_mean_hamiltonian(result, outputs, batch[structure.idx_m], mode, states, nacs)
        self.last_disagreement = disagreement
        return result

    def _drive_by_mean_hamiltonian(self, result: PotentialOutput, outputs: list[dict[str, torch.Tensor]],
                                   idx_m: torch.Tensor, mode: str | None, states: torch.Tensor | None, nacs: bool) -> None:
        """Energies, state vectors, forces and NACs of `result` from the committee's mean diabatic Hamiltonian."""
        hamiltonian, derivative = mean_hamiltonian(outputs, idx_m, self.n_states)
        finite = torch.isfinite(hamiltonian).all(-1).all(-1)[:, None, None]  # NaN positions: NaN out, as the members
        identity = torch.eye(self.n_states, dtype=hamiltonian.dtype, device=hamiltonian.device)
        energies, vectors = torch.linalg.eigh(torch.where(finite, hamiltonian, identity))
        energies, vectors = torch.where(finite[:, :, 0], energies, torch.nan), torch.where(finite, vectors, torch.nan)
        out = {"energies": energies}
        project_diabatic_derivatives(out, derivative, vectors, idx_m, mode, states, self.networks[0])
        B, n = energies.shape[0], self.n_atoms
        result.energies, result.state_vectors = energies, vectors
        if mode == "all":
            result.all_forces = out["forces"].reshape(B, n, self.n_states, 3).permute(0, 2, 1, 3)
            if states is not None:
                result.forces = result.all_forces[torch.arange(B, device=self.device), states]
        elif mode == "selected":
            result.forces = out["forces"].reshape(B, n, 3)
        if nacs and "nacs" in out:
            result.nacs = out["nacs"].reshape(B, n, -1, 3).permute(0, 2, 1, 3)

    def describe(self) -> str:
        kind = f"committee of {len(self.networks)}" if len(self.networks) > 1 else "model"
        if len(self.networks) > 1 and self.driver == "members":
            kind += " (each trajectory driven by one member)"
        return f"exsnn {kind} {self.path} ({self.n_states} states)"


_SPEC_OPTIONS = ("compile", "neighbours", "driver")


def parse_model_spec(argument: str) -> tuple[str, dict[str, object]]:
    """`DIR[,compile=1][,neighbours=all-pairs|cutoff|auto][,driver=mean|members|hamiltonian]` -> (DIR, ModelPotential options).
    Only trailing `key=value` parts with these keys are options, so a path holding commas still works."""
    options: dict[str, object] = {}
    parts = argument.split(",")
    while len(parts) > 1 and parts[-1].partition("=")[0].strip() in _SPEC_OPTIONS and "=" in parts[-1]:
        key, _, value = parts.pop().partition("=")
        key, value = key.strip(), value.strip()
        if key == "compile":
            if value.lower() not in ("0", "1", "true", "false", "yes", "no"):
                raise ConfigurationError(f"compile must be 0 or 1, got {value!r}", source="potential", where="compile")
            options[key] = value.lower() in ("1", "true", "yes")
        else:
            options[key] = value
    return ",".join(parts), options


def load(prefix: str, argument: str, base_dir: Path, device: str, numbers: np.ndarray | None = None) -> ModelPotential:
    """Registry loader (exsnn.potentials.spec): `model:DIR[,compile=1][,neighbours=all-pairs|cutoff|auto]
    [,driver=mean|members|hamiltonian]`."""
    if numbers is None:
        raise ConfigurationError("model potentials need the molecule's atoms (give a geometry file)", source="potential")
    path, options = parse_model_spec(argument)
    try:
        return ModelPotential(resolve_path(path, base_dir), numbers, device, **options)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        if exc.source is not None:
            raise
        raise ConfigurationError(exc.problem, source=f"{prefix}:{argument}", where=exc.where) from None  # name the spec
