"""What a photochemist does before a surface-hopping run, as seeded, scriptable steps.

==============  ========================================================================================
modes           harmonic modes (frequencies, mass-weighted normal modes, level of theory) from a Cartesian
                Hessian, from SHARC's V0.txt or an LVC model; the modes file (JSON) that the steps share
structure       PySCF ground-state geometry optimisation (geomeTRIC or pyberny), Hessians (analytic for
                RHF/RKS, finite differences of analytic gradients otherwise) and the harmonic analysis
wigner          Wigner sampling of the harmonic modes at 0 K or at a temperature, rotations removed
excitation      excitation energies and oscillator strengths per geometry (PySCF or any potential with
                transition dipoles) and the choice of initial states (window, states, f/dE^2), all combinable
promoted        promoted-density sampling for a laser pulse through `promdens`
spectrum        nuclear-ensemble absorption spectra with bootstrap bands, PNG and table
==============  ========================================================================================

Atomic units inside (Hartree, Bohr, electron masses, atomic time); files and printouts convert at the edges.
"""
