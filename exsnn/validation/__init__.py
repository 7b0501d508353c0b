"""Exact reference solutions for model problems, used to validate the surface-hopping engine."""
