"""The multi-state equivariant network: representation + heads, phase-free loss, training, the model as a potential."""
