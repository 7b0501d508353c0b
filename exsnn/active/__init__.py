"""Active-learning campaigns: simulate on a committee, measure its disagreement, select diverse uncertain geometries,
label them with an oracle, retrain, and stop when the populations have converged.

One module per phase: `config` (the TOML input), `layout` (the campaign directory and its state file), `sample`
(initial geometries), `label` (the oracle, idempotent appends), `train` (warm-started committees), `measure`
(committee disagreement and calibrated thresholds), `simulate` (surface hopping on the committee with per-step
disagreement), `select` (per-trajectory maxima, then farthest-point diversity), `decide` (populations with bands and
the stopping rules), `report` (Markdown + PNG per iteration) and `campaign` (the resumable loop).
"""
