"""The committee of an iteration: K members with different seeds, warm-started from the previous iteration's members,
on one split in which the test set is the held-out one of the campaign (the initial test fraction, then only labels
from dynamics, so test errors measure where the dynamics goes).

A member counts as trained when its model.pt exists. A member whose training was interrupted is trained again from
the start (not from its last checkpoint), so a resumed campaign gives the same weights as an uninterrupted one. When
the architecture in campaign.toml was changed between iterations (e.g. `head = "diabatic"`), the previous members
cannot start the new ones: they start from the newest earlier iteration whose members have the new architecture, or
from scratch (with the first iteration's epochs) when there is none.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from exsnn.active.config import CampaignConfig, committee_architecture
from exsnn.data import read_frames
from exsnn.data.check import check_frames
from exsnn.data.splits import save_split
from exsnn.data.store import open_h5
from exsnn.model.network import ArchitectureConfig
from exsnn.model.training import MODEL_FILE, TrainingConfig, load_network, train


def campaign_split(path: Path, seed: int, val_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """train/val/test indices: test = frames tagged "test", the other labelled frames shuffled with `seed` into
    validation (a tenth, at least one) and training. Frames whose labelling failed are left out, and so are frames
    whose labels the data check finds implausible (`exsnn.data.check`, e.g. forces of a failed orbital response)."""
    with open_h5(path) as h5:
        records = [json.loads(r) for r in h5["frames/provenance"].asstr()[:]]
    implausible = {p.frame for p in check_frames(read_frames(path)) if p.kind == "implausible_label"}
    usable = [k for k, r in enumerate(records) if not r.get("failure") and k not in implausible]
    test = np.array([k for k in usable if r_split(records[k]) == "test"], dtype=np.int64)
    rest = np.array([k for k in usable if r_split(records[k]) != "test"], dtype=np.int64)
    rest = rest[np.random.default_rng(seed).permutation(len(rest))]
    n_val = max(1, int(round(val_fraction * len(rest))))
    return {"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]), "test": np.sort(test)}


def test_frames_of_iteration(path: Path, iteration: int) -> np.ndarray:
    """The held-out frames iteration `iteration`'s committee is tested on (its test errors): the test frames of the
    initial set and of the selections made before it. The selection of iteration i carries provenance iteration i + 1
    and joins the test set only after the iteration's errors were measured."""
    with open_h5(path) as h5:
        records = [json.loads(r) for r in h5["frames/provenance"].asstr()[:]]
    test = campaign_split(path, seed=0)["test"]
    return test[[int(records[k].get("campaign", {}).get("iteration", 0)) <= iteration for k in test]]


def r_split(record: dict) -> str:
    return str(record.get("campaign", {}).get("split", "train"))


#: the committee's record of members retrained from scratch because their seams disagreed with the oracle's
#: (`exsnn.active.seam`): {"k": attempts}
SEAM_RETRAINS_FILE = "seam_retrains.json"


def member_seed(config: CampaignConfig, iteration: int, member: int, attempt: int = 0) -> int:
    """The seed of a member; each retraining from scratch (`attempt` >= 1) has its own."""
    return config.run.seed * 10_000 + iteration * 100 + member + 1_000_000 * attempt


def seam_retrains(folder: Path) -> dict[str, int]:
    """How often each member of a committee folder has been retrained from scratch (member index as text -> count)."""
    path = folder / SEAM_RETRAINS_FILE
    return {k: int(v) for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def committee_folder(iteration_dir: Path) -> Path:
    return iteration_dir / "committee"


def same_architecture(model_file: Path, architecture: ArchitectureConfig) -> bool:
    """Whether a saved member has the architecture asked for (so that its weights can start a new member)."""
    stored = load_network(model_file).config.as_dict()
    return all(stored.get(key) == value for key, value in architecture.as_dict().items())


def warm_start_from(earlier: Sequence[Path] | None, member: int, architecture: ArchitectureConfig,
                    warm_start: bool) -> Path | None:
    """The model file that starts member `member`: that member of the newest earlier iteration (`earlier`, newest
    first) whose members have the architecture asked for, so a campaign that changed its architecture for a while and
    changed it back continues its earlier members; None (from scratch) in the first iteration, with `[committee]
    warm_start = false`, or when no earlier member has this architecture."""
    if not earlier or not warm_start:
        return None
    for folder in earlier:
        candidate = committee_folder(folder) / f"member_{member}" / MODEL_FILE
        if candidate.exists() and same_architecture(candidate, architecture):
            return candidate
    return None


def member_training(config: CampaignConfig, data: Path, output: Path, seed: int, previous: Path | None) -> TrainingConfig:
    """How one committee member trains: from scratch for `[committee] epochs`, or warm-started from `previous` for
    `warm_epochs` with early stopping after half of them (at least 20), none when members keep their final weights
    (`checkpoint_metric = "last"`)."""
    c = config.committee
    return TrainingConfig(
        data=str(data), output=str(output), recipe=c.recipe, bootstrap=c.bootstrap,
        network=committee_architecture(c),
        batch_size=c.batch_size, learning_rate=c.learning_rate,
        max_epochs=c.epochs if previous is None else c.warm_epochs,
        patience=0 if c.checkpoint_metric == "last" else max(20, c.warm_epochs // 2),
        seed=seed, threads=c.threads, progress_bar=False,
        init_from=None if previous is None else str(previous), accelerator="cpu",
        weights={name: value for name, value in (("gaps", c.gap_weight), ("small_gaps", c.small_gap_weight),
                                                 ("diabatic_couplings", c.diabatic_coupling_weight),
                                                 ("seam_loops", c.seam_loop_weight))
                 if value > 0} or None,
        checkpoint_metric=c.checkpoint_metric,
    )


def train_committee(data: Path, iteration_dir: Path, earlier: Sequence[Path] | None, config: CampaignConfig,
                    iteration: int) -> Path:
    """Train the members that are not trained yet, warm-started from the earlier iterations' folders `earlier` (newest
    first; None: from scratch) unless the seam check had them retrained (then from scratch with that attempt's seed);
    return the committee folder (loadable as `model:FOLDER`)."""
    folder = committee_folder(iteration_dir)
    c = config.committee
    retrains = seam_retrains(folder)
    split = campaign_split(data, seed=config.run.seed * 7919 + iteration)
    for k in range(c.members):
        member = folder / f"member_{k}"
        if (member / MODEL_FILE).exists():
            continue
        if member.exists():
            shutil.rmtree(member)  # interrupted: start this member again from the beginning
        member.mkdir(parents=True)
        save_split(split, member / "split.npz")
        attempt = retrains.get(str(k), 0)
        previous = None if attempt else warm_start_from(earlier, k, committee_architecture(c), c.warm_start)
        training = member_training(config, data, member, member_seed(config, iteration, k, attempt), previous)
        # model.pt is written last: a member killed before it is retrained from the start on resume
        train(training, resume=False)
    (folder / "committee.json").write_text(json.dumps({"members": [f"member_{k}/{MODEL_FILE}" for k in range(c.members)]}))
    return folder
