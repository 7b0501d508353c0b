"""The campaign input file (TOML). Every default lives in the dataclasses below; relative paths are taken from the
folder of the TOML file.

```toml
[oracle]
spec = "lvc:../shared/data/schnarc/lvc_so2_3s/LVC.template"   # any potential spec: pyscf:..., lvc:..., tully1
batch = 16                      # labels committed per atomic append

[initial]
n_frames = 40                   # Wigner samples of the oracle's harmonic modes (or frames of `file`)
spread = 1.0                    # scale of the Wigner widths (> 1 explores further)
# modes = "modes.json"          # harmonic modes to sample (exsnn frequencies, V0.txt, LVC.template) when the oracle
                                # has none of its own (pyscf:); also used for the dynamics' initial conditions
# file = "geometries.xyz"       # instead of Wigner sampling
test_fraction = 0.1             # of the initial frames held out as the first test set

[committee]
members = 4
epochs = 150                    # first iteration (from scratch)
warm_epochs = 60                # later iterations (warm-started from the previous members)
warm_start = true               # false: every iteration's members train from scratch, for `epochs`
width = 32
interactions = 2
cutoff = 8.0                    # Bohr
batch_size = 16
learning_rate = 1e-3
threads = 1
# head = "diabatic"             # members learn a quasi-diabatic Hamiltonian: NACs right around conical intersections
# indexed_couplings = true      # its couplings weighed per atom position: may change sign when equivalent atoms swap
# exchange = [[1, 2]]           # with indexed couplings: atom positions (0-based) one symmetry operation swaps...
# odd_couplings = [[1, 2]]      # ...and the state pairs whose coupling changes sign under it (zero where symmetric)
# dipoles = true                # also learn the dipole matrix (an oracle that labels it: pyscf, lvc with DMX/DMY/DMZ)
# diabatic_dipoles = true       # diabatic head: dipoles from quasi-diabatic ones and H's eigenvectors (exsnn train --diabatic-dipoles)
# checkpoint_metric = "energies_forces"  # keep / stop members on the validation energies and forces, not the whole loss
#                               # ("last": keep each member's final weights, no early stopping)

[dynamics]
n_trajectories = 100
initial_state = 2
dt_fs = 0.5
duration_fs = 30.0
# file = "initial_conditions.xyz" # frames (and velocities, if the file has them) instead of Wigner sampling
driver = "mean"                 # "members": trajectory t on member t mod K alone; "hamiltonian": mean diabatic H (diabatic head)
member_runs = true              # each member also drives the ensemble alone: model uncertainty of the populations
# ground_state_end_fs = 10.0    # end a trajectory after this long in S0 (SHARC's killafter): no labels from the hot
#                               # ground state after the photoreaction; it stays in S0 in the populations

[selection]
budget = 20                     # labels per iteration
per_trajectory = 2              # most uncertain local maxima kept per trajectory before the diversity filter
min_distance = 0.05             # Bohr (descriptor distance): closer candidates count as the same geometry
gap_ev = 0.2                    # frames whose active state is closer than this to another state are candidates
gap_share = 0.0                 # share of the budget spent first on near-gap frames (the hopping region), 0..1
test_every = 5                  # every k-th selected label joins the held-out test set

[thresholds]
mode = "calibrated"             # or "fixed" (then give energies_ev, forces_ev_a, couplings_ev_a)
k_mad = 3.0                     # lower = median + k MAD of the committee disagreement on held-out frames
upper_factor = 4.0              # upper = max(factor x lower, floor)
upper_floor_energies_ev = 0.1   # floors of the upper thresholds (eV, eV/Angstrom, eV/Angstrom)
upper_floor_forces_ev_a = 1.0
upper_floor_couplings_ev_a = 1.0
lower_cap_energies_ev = 0.544   # calibrated thresholds never rise above these caps (PyRAI2MD's record / stop values:
lower_cap_forces_ev_a = 3.085   # 0.02 / 0.05 Hartree energies, 0.06 / 0.15 Hartree/Bohr gradients and couplings),
lower_cap_couplings_ev_a = 3.085  # so a committee that is unsure everywhere does not calibrate itself loose
upper_cap_energies_ev = 1.361
upper_cap_forces_ev_a = 7.713
upper_cap_couplings_ev_a = 7.713
# stop_on = ["energies", "forces"]  # measures whose upper threshold stops a trajectory; default: all three, but with
#                               # [dynamics] member_runs only energies and forces (see ThresholdConfig.stop_on)
stop_window_ev = 1.0            # a trajectory stops on the energy spread of its active state and the states within
                                # this of it; farther states' spread only makes candidates

[seam]                          # quasi-diabatic members that cross where the oracle's states intersect (issue #14)
# pair = [1, 2]                 # label loops around this pair's intersection after the initial set (none: no loops)
loops = 1                       # how many (each from one of the initial frames with the smallest gap)
points = 16                     # oracle labels per loop
radius = 0.1                    # Bohr, in the oracle's branching plane
tolerance_ev = 0.01             # the intersection search (a few oracle calls) stops below this gap...
search_calls = 8                # ...or after this many calls
max_shift = 0.05                # Bohr: a member's own intersection, searched from the oracle's, must close within this
retrains = 2                    # a member whose seam disagrees is retrained from scratch (new seed) up to this often
# the loops feed [committee] seam_loop_weight (the training term) and each iteration's seam check: the coupling
# integral of every member around every loop against the oracle's (+-pi: crossing) and, where the oracle crosses, the
# member's own intersection within max_shift of the oracle's; "converged" needs every member to agree

[stopping]
finished_fraction = 0.95        # trajectories that reach the end without crossing the upper threshold
z = 2.0                         # populations of consecutive iterations agree within z combined standard errors...
simultaneous = true             # ...as a band over all states and times at that coverage (exsnn/active/decide.py)
max_iterations = 8
label_budget = 400

[run]
seed = 1
```
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from exsnn.errors import ConfigurationError
from exsnn.model.loss import CHECKPOINT_METRICS
from exsnn.model.network import HEADS, ArchitectureConfig
from exsnn.model.potential import DRIVERS


@dataclass
class OracleConfig:
    spec: str = ""
    batch: int = 16


@dataclass
class InitialConfig:
    n_frames: int = 40
    spread: float = 1.0
    modes: str | None = None  # a modes file for Wigner sampling (else the oracle's own harmonic modes)
    file: str | None = None
    test_fraction: float = 0.1


@dataclass
class CommitteeConfig:
    members: int = 4
    epochs: int = 150
    warm_epochs: int = 60
    warm_start: bool = True  # later iterations continue the previous members: weights, output statistics, loss scales
    width: int = 32
    interactions: int = 2
    cutoff: float = 8.0
    batch_size: int = 16
    learning_rate: float = 1e-3
    threads: int = 1
    dipoles: bool = False
    recipe: str = "exsnn-v1"  # the campaign was validated with v1 (plateau schedule, normalised losses 1/1/1)
    bootstrap: bool = False  # members on bootstrap resamples of the training frames: more diverse committees
    gap_weight: float = 0.0  # loss term on the gaps between neighbouring states (exsnn train --gap-weight); 0: off
    small_gap_weight: float = 0.0  # loss term on their relative errors (exsnn train --small-gap-weight); 0: off
    diabatic_coupling_weight: float = 0.0  # diabatic head: loss term on H's off-diagonal (--diabatic-coupling-weight)
    head: str = "adiabatic"  # or "diabatic": members learn a quasi-diabatic Hamiltonian (exsnn train --head)
    indexed_couplings: bool = False  # diabatic head: couplings weighed per atom position (exsnn train --indexed-couplings)
    exchange: list = field(default_factory=list)  # [[a, b], ...] atom positions swapped by a symmetry (exsnn train --exchange)
    odd_couplings: list = field(default_factory=list)  # [[i, j], ...] state pairs odd under it (exsnn train --odd-couplings)
    diabatic_dipoles: bool = False  # diabatic head with dipoles: quasi-diabatic dipoles (exsnn train --diabatic-dipoles)
    # "energies_forces": keep / stop members on those terms; "last": the final weights (exsnn train --checkpoint-metric)
    checkpoint_metric: str = "loss"
    seam_loop_weight: float = 0.0  # diabatic head: the seam-loop term on the [seam] loops (exsnn.model.seam_loss); 0: off


def committee_architecture(c: CommitteeConfig) -> ArchitectureConfig:
    """The members' network architecture (its own checks raise ConfigurationError naming the field)."""
    return ArchitectureConfig(n_atom_basis=c.width, n_interactions=c.interactions, cutoff=c.cutoff, dipoles=c.dipoles,
                              head=c.head, indexed_couplings=c.indexed_couplings, exchange=c.exchange,
                              odd_couplings=c.odd_couplings, diabatic_dipoles=c.diabatic_dipoles)


@dataclass
class DynamicsSection:
    n_trajectories: int = 100
    initial_state: int = 2
    dt_fs: float = 0.5
    duration_fs: float = 30.0
    file: str | None = None  # initial conditions from this file's frames instead of Wigner sampling of the oracle
    driver: str = "mean"  # "members" / "hamiltonian": how the committee drives (exsnn.model.potential, `driver`)
    member_runs: bool = True  # every member drives the ensemble alone too (the committee spread of the populations)
    ground_state_end_fs: float | None = None  # end a trajectory after this long in S0 (FSSHSettings.ground_state_end)


#: the committee disagreement measures (exsnn.active.measure), in the order of its arrays
MEASURES = ("energies", "forces", "couplings")


@dataclass
class SelectionConfig:
    budget: int = 20
    per_trajectory: int = 2
    min_distance: float = 0.05
    gap_ev: float = 0.2
    gap_share: float = 0.0  # share of the budget for near-gap frames of the whole ensemble first (see exsnn.active.select)
    test_every: int = 5


@dataclass
class ThresholdConfig:
    mode: str = "calibrated"
    k_mad: float = 3.0
    upper_factor: float = 4.0
    # the upper thresholds never fall below these: a committee that improves tightens its candidates (lower), but a
    # trajectory stops only where the committee is unsure beyond what the dynamics can tolerate
    upper_floor_energies_ev: float = 0.1
    upper_floor_forces_ev_a: float = 1.0
    upper_floor_couplings_ev_a: float = 1.0
    # calibrated thresholds never rise above these caps: the committee's disagreement on held-out frames measures how
    # good the committee is, not how much error the dynamics tolerates; a committee unsure everywhere (members 0.5-1 eV
    # apart on typical frames) would otherwise let trajectories run on through regions no member knows. Defaults:
    # PyRAI2MD's record / stop thresholds (0.02 / 0.05 Hartree for energies, 0.06 / 0.15 Hartree/Bohr for gradients and
    # couplings; Li, Reiser, Lopez et al., Chem. Sci. 12, 5302 (2021)), in eV and eV/Angstrom
    lower_cap_energies_ev: float = 0.544
    lower_cap_forces_ev_a: float = 3.085
    lower_cap_couplings_ev_a: float = 3.085
    upper_cap_energies_ev: float = 1.361
    upper_cap_forces_ev_a: float = 7.713
    upper_cap_couplings_ev_a: float = 7.713
    energies_ev: float | None = None
    forces_ev_a: float | None = None
    couplings_ev_a: float | None = None
    # the measures whose upper threshold stops a trajectory (every measure's lower threshold makes candidates). Energies
    # and forces decide whether the classical path can be trusted. Couplings decide where it hops: near a conical
    # intersection the members' NAC directions differ however good they are (the direction turns around the seam), so
    # a coupling stop ends the trajectories exactly where the hops are decided. With [dynamics] member_runs the members
    # drive the ensemble alone and their spread of populations measures what their coupling differences do, so by
    # default (None) couplings stop trajectories only when member_runs is off
    stop_on: list | None = None
    # the energies measure that stops a trajectory is the spread of its active state's energy and of the states within
    # this many eV of it: a far state's energy error changes nothing until the gap closes, and then it counts (on the
    # shipped SO2 campaign, seed 2, iteration 3: 14 of 200 trajectories stopped on energies, 89% of them on the S0
    # spread while running in S1 about 4 eV above it)
    stop_window_ev: float = 1.0


@dataclass
class SeamConfig:
    pair: list = field(default_factory=list)
    loops: int = 1
    points: int = 16
    radius: float = 0.1
    tolerance_ev: float = 0.01
    search_calls: int = 8
    max_shift: float = 0.05
    retrains: int = 2


@dataclass
class StoppingConfig:
    finished_fraction: float = 0.95
    z: float = 2.0
    # the populations' band is simultaneous over states and times (its critical value from the bootstrap, at the
    # coverage of +-z standard errors), not z at every one of them (exsnn.active.decide)
    simultaneous: bool = True
    # largest standard error (trajectory bootstrap and committee spread combined) of any state's population at any
    # time that still counts as converged
    max_band: float = 0.1
    # a kinetic network ("S2->S1->S0", grammar of exsnn.analysis.kinetics) whose fitted time constants must also agree
    # between consecutive iterations within z combined standard errors; "" (default): populations alone
    kinetics: str = ""
    max_iterations: int = 8
    label_budget: int = 400


@dataclass
class RunSection:
    seed: int = 1


@dataclass
class CampaignConfig:
    path: Path
    text: str
    oracle: OracleConfig = field(default_factory=OracleConfig)
    initial: InitialConfig = field(default_factory=InitialConfig)
    committee: CommitteeConfig = field(default_factory=CommitteeConfig)
    dynamics: DynamicsSection = field(default_factory=DynamicsSection)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    seam: SeamConfig = field(default_factory=SeamConfig)
    stopping: StoppingConfig = field(default_factory=StoppingConfig)
    run: RunSection = field(default_factory=RunSection)

    def resolve(self, relative: str) -> Path:
        """A path from the file, relative to the TOML file's folder."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.path.parent / path

    def oracle_spec(self) -> str:
        """The oracle spec with a relative path argument (lvc:...) made absolute."""
        prefix, sep, argument = self.oracle.spec.partition(":")
        if prefix == "lvc" and argument:
            return f"lvc:{self.resolve(argument)}"
        return self.oracle.spec


_CLASSES = {"oracle": OracleConfig, "initial": InitialConfig, "committee": CommitteeConfig, "dynamics": DynamicsSection,
            "selection": SelectionConfig, "thresholds": ThresholdConfig, "seam": SeamConfig, "stopping": StoppingConfig,
            "run": RunSection}


def _section(path: Path, name: str, table: Any) -> Any:
    cls = _CLASSES[name]
    if not isinstance(table, dict):
        raise ConfigurationError(f"expected a table, got {table!r}", source=path, where=f"[{name}]")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigurationError(f"unknown key; expected one of {sorted(known)}", source=path, where=f"[{name}] {key}")
        default = getattr(cls(), key)
        kind = type(default) if default is not None else {"file": str, "modes": str, "stop_on": list}.get(key, float)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigurationError(f"expected {kind.__name__}, got {value!r}", source=path, where=f"[{name}] {key}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(f"must be finite, got {value!r}", source=path, where=f"[{name}] {key}")
        values[key] = value
    return cls(**values)


def _check(config: CampaignConfig) -> None:
    path = config.path

    def need(condition: bool, where: str, problem: str) -> None:
        if not condition:
            raise ConfigurationError(problem, source=path, where=where)

    need(bool(config.oracle.spec), "[oracle] spec", "missing (e.g. 'lvc:PATH/LVC.template' or 'pyscf:tda-hf/sto-3g')")
    need(config.oracle.batch >= 1, "[oracle] batch", "must be at least 1")
    need(config.initial.n_frames >= 5, "[initial] n_frames", "must be at least 5 (train, validation and test need frames)")
    need(config.initial.spread > 0, "[initial] spread", "must be positive")
    need(0 < config.initial.test_fraction < 0.5, "[initial] test_fraction", "must lie in (0, 0.5)")
    need(config.committee.members >= 2, "[committee] members", "a committee needs at least 2 members to disagree")
    for key in ("epochs", "warm_epochs", "width", "interactions", "batch_size", "threads"):
        need(getattr(config.committee, key) >= 1, f"[committee] {key}", "must be at least 1")
    need(config.committee.gap_weight >= 0, "[committee] gap_weight", "must be >= 0")
    need(config.committee.small_gap_weight >= 0, "[committee] small_gap_weight", "must be >= 0")
    need(config.committee.diabatic_coupling_weight >= 0, "[committee] diabatic_coupling_weight", "must be >= 0")
    need(config.committee.diabatic_coupling_weight == 0 or config.committee.head == "diabatic",
         "[committee] diabatic_coupling_weight", "needs head = 'diabatic'")
    need(0 <= config.selection.gap_share <= 1, "[selection] gap_share", "must lie in [0, 1]")
    need(config.committee.head in HEADS, "[committee] head", f"must be one of {HEADS}, got {config.committee.head!r}")
    need(config.committee.checkpoint_metric in CHECKPOINT_METRICS, "[committee] checkpoint_metric",
         f"must be one of {list(CHECKPOINT_METRICS)}, got {config.committee.checkpoint_metric!r}")
    need(not config.committee.indexed_couplings or config.committee.head == "diabatic", "[committee] indexed_couplings",
         "needs head = 'diabatic'")
    try:
        committee_architecture(config.committee)
    except ConfigurationError as exc:
        raise ConfigurationError(exc.problem, source=path, where=f"[committee] {exc.where}") from None
    need(config.committee.cutoff > 0 and config.committee.learning_rate > 0, "[committee] cutoff/learning_rate",
         "must be positive")
    need(config.dynamics.n_trajectories >= 2, "[dynamics] n_trajectories", "must be at least 2")
    need(config.dynamics.initial_state >= 0, "[dynamics] initial_state", "must be a state index (0 = S0)")
    need(config.dynamics.driver in DRIVERS, "[dynamics] driver", f"must be one of {DRIVERS}, got {config.dynamics.driver!r}")
    need(config.dynamics.driver != "hamiltonian" or config.committee.head == "diabatic", "[dynamics] driver",
         "'hamiltonian' averages the members' diabatic Hamiltonians: it needs [committee] head = 'diabatic'")
    need(config.dynamics.ground_state_end_fs is None or config.dynamics.ground_state_end_fs > 0,
         "[dynamics] ground_state_end_fs", "must be positive (leave it out to never end trajectories in S0)")
    need(config.dynamics.dt_fs > 0 and config.dynamics.duration_fs >= config.dynamics.dt_fs, "[dynamics] dt_fs/duration_fs",
         "need 0 < dt_fs <= duration_fs")
    need(config.selection.budget >= 1 and config.selection.per_trajectory >= 1 and config.selection.test_every >= 2,
         "[selection]", "budget >= 1, per_trajectory >= 1 and test_every >= 2 are needed")
    need(config.selection.min_distance >= 0 and config.selection.gap_ev >= 0, "[selection] min_distance/gap_ev", "must be >= 0")
    need(config.thresholds.mode in ("calibrated", "fixed"), "[thresholds] mode", "must be 'calibrated' or 'fixed'")
    if config.thresholds.mode == "fixed":
        for key in ("energies_ev", "forces_ev_a", "couplings_ev_a"):
            value = getattr(config.thresholds, key)
            need(value is not None and value > 0, f"[thresholds] {key}", "needed (positive) with mode = 'fixed'")
    need(config.thresholds.k_mad > 0 and config.thresholds.upper_factor > 1, "[thresholds] k_mad/upper_factor",
         "need k_mad > 0 and upper_factor > 1")
    for measure in ("energies_ev", "forces_ev_a", "couplings_ev_a"):
        lower_cap, upper_cap = (getattr(config.thresholds, f"{kind}_cap_{measure}") for kind in ("lower", "upper"))
        floor = getattr(config.thresholds, f"upper_floor_{measure}")
        need(0 < lower_cap <= upper_cap and upper_cap >= floor, f"[thresholds] upper_cap_{measure}",
             f"caps must be positive with lower_cap <= upper_cap and upper_cap >= upper_floor (got {lower_cap:g}, "
             f"{upper_cap:g}, floor {floor:g})")
    need(config.thresholds.stop_window_ev >= 0, "[thresholds] stop_window_ev", "must be >= 0 (eV)")
    stop_on = config.thresholds.stop_on
    need(stop_on is None or (all(isinstance(m, str) and m in MEASURES for m in stop_on) and len(set(stop_on)) == len(stop_on)),
         "[thresholds] stop_on", f"must list distinct measures out of {list(MEASURES)}, got {stop_on!r}")
    seam = config.seam
    need(not seam.pair or (len(seam.pair) == 2 and all(isinstance(s, int) and not isinstance(s, bool) for s in seam.pair)
                           and 0 <= seam.pair[0] < seam.pair[1]),
         "[seam] pair", f"must be two states [i, j] with 0 <= i < j, got {seam.pair!r}")
    need(seam.loops >= 1 and seam.points >= 8 and seam.search_calls >= 1 and seam.retrains >= 0,
         "[seam] loops/points/search_calls/retrains", "need loops >= 1, points >= 8, search_calls >= 1 and retrains >= 0")
    need(seam.radius > 0 and seam.tolerance_ev > 0 and seam.max_shift > 0, "[seam] radius/tolerance_ev/max_shift",
         "must be positive")
    need(config.committee.seam_loop_weight >= 0, "[committee] seam_loop_weight", "must be >= 0")
    need(config.committee.seam_loop_weight == 0 or (bool(seam.pair) and config.committee.head == "diabatic"),
         "[committee] seam_loop_weight", "needs [seam] pair (the loops it trains on) and head = 'diabatic'")
    need(0 < config.stopping.finished_fraction <= 1, "[stopping] finished_fraction", "must lie in (0, 1]")
    need(config.stopping.max_iterations >= 1 and config.stopping.label_budget >= config.initial.n_frames,
         "[stopping] max_iterations/label_budget", "need max_iterations >= 1 and label_budget >= [initial] n_frames")
    need(config.stopping.z > 0, "[stopping] z", "must be positive")
    need(0 < config.stopping.max_band <= 1, "[stopping] max_band", "must lie in (0, 1]")


def parse_config(text: str, path: Path) -> CampaignConfig:
    """A checked CampaignConfig from TOML text (`path` names the file in errors and anchors relative paths)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"invalid TOML ({exc})", source=path) from None
    unknown = sorted(set(data) - set(_CLASSES))
    if unknown:
        raise ConfigurationError(f"unknown section; expected {sorted(_CLASSES)}", source=path, where=f"[{unknown[0]}]")
    config = CampaignConfig(path=path, text=text, **{name: _section(path, name, table) for name, table in data.items()})
    _check(config)
    if config.thresholds.stop_on is None:
        config.thresholds.stop_on = ["energies", "forces"] if config.dynamics.member_runs else list(MEASURES)
    return config


def load_config(path: str | Path) -> CampaignConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError("does not exist", source=path, where="file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigurationError("not a text (TOML) file", source=path, where="file") from None
    return parse_config(text, path.resolve())
