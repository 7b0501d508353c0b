"""exsnn: excited-state non-adiabatic molecular dynamics with equivariant multi-state networks."""

__version__ = "0.1.0"
