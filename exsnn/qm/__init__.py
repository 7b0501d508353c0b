"""Quantum-chemistry labelling with PySCF: ground and excited states, gradients, couplings, failure handling."""
