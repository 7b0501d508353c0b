"""Train a multi-state network on an analytic model with exact NACs, then check it against the model.

Samples 2000 geometries of the SO2 linear vibronic coupling model (3 singlets, ../shared/data) from the Wigner
distribution of its ground-state modes at 3x the harmonic spread, labels them exactly (energies, forces of all
states, NACs), trains a PaiNN-based network and prints its test error table (phase-free couplings).

    .venv/bin/python examples/train_on_lvc.py [--frames 2000] [--epochs 150] [--output exsnn-output/lvc_model]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exsnn.data import DatasetMetadata, append_frames
from exsnn.dynamics.initial_conditions import wigner_harmonic
from exsnn.model.network import ArchitectureConfig
from exsnn.model.training import TrainingConfig, train
from exsnn.potentials.labelling import label_frames
from exsnn.potentials.lvc import LVCPotential

TEMPLATE = Path(__file__).resolve().parents[2] / "shared" / "data" / "schnarc" / "lvc_so2_3s" / "LVC.template"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--interactions", type=int, default=2)
    parser.add_argument("--output", default="exsnn-output/lvc_model")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "so2_lvc_wigner.h5"
    if not data.exists():
        potential = LVCPotential(TEMPLATE)
        reference, masses, frequencies, modes = potential.harmonic_modes()
        positions, _ = wigner_harmonic(reference, masses, frequencies / 9.0, modes, args.frames, seed=11)  # 3x spread
        frames = label_frames(potential, positions, {"source": "wigner", "spread": "3x harmonic"})
        append_frames(data, frames, DatasetMetadata(n_states=3, method="LVC (SO2, SchNarc parameters)", program="exsnn"))
    network = ArchitectureConfig(n_atom_basis=args.width, n_interactions=args.interactions, cutoff=8.0)
    result = train(
        TrainingConfig(
            data=str(data),
            output=str(out / "model"),
            network=network,
            max_epochs=args.epochs,
            batch_size=32,
            learning_rate=1e-3,
            progress_bar=False,
            threads=1,
        )
    )
    print(f"split {result['split']}, {result['epochs']} epochs")
    print(result["table_text"])
    print(f"model: {result['model']}; learning curve: {out / 'model' / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
