"""Phonon band structures through phonopy, with force constants from the model's Hessian.

    phonon = phonopy_from_hessian(calc, unit_cell, supercell=(3, 3, 3))   # a phonopy.Phonopy
    plot_band_structure(phonon, "bands.png")                              # seekpath's path

phonopy (optional: ``pip install 'equinet[phonons]'``) builds the supercell of the unit
cell; the calculator's Hessian of that supercell (autograd, no displaced structures) gives
the force constants ``Phi[i, j, a, b] = d²E / dr_ia dr_jb`` in eV/Å², phonopy's unit, and
phonopy takes them to frequencies in THz on any q-point path. The supercell must be large
enough that the force constants vanish beyond it (a few cutoffs across).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

__all__ = ["phonopy_from_hessian", "plot_band_structure"]

INSTALL = "pip install 'equinet[phonons]' (phonopy and seekpath)"


def phonopy_from_hessian(calculator, unit_cell: Atoms, supercell: Sequence[int] = (2, 2, 2)):
    """A ``phonopy.Phonopy`` of ``unit_cell`` (periodic) whose force constants are the
    calculator's Hessian (``calculator.get_hessian``, eV/Å²) of the ``supercell`` repeat.

    Raises:
        ValueError: (one line) phonopy is not installed, or the cell is not periodic.
    """
    try:
        import phonopy
        from phonopy.structure.atoms import PhonopyAtoms
    except ImportError:
        raise ValueError(f"phonon band structures need phonopy: {INSTALL}") from None
    if not unit_cell.pbc.all():
        raise ValueError("a phonon band structure needs a periodic unit cell (atoms.pbc all True)")
    cell = PhonopyAtoms(symbols=unit_cell.get_chemical_symbols(), cell=unit_cell.cell.array, scaled_positions=unit_cell.get_scaled_positions())
    phonon = phonopy.Phonopy(cell, supercell_matrix=np.diag(supercell), primitive_matrix="auto")
    repeat = phonon.supercell
    atoms = Atoms(symbols=repeat.symbols, cell=repeat.cell, scaled_positions=repeat.scaled_positions, pbc=True)
    num_atoms = len(atoms)
    hessian = calculator.get_hessian(atoms)  # [3N, 3N], atom-major
    phonon.force_constants = hessian.reshape(num_atoms, 3, num_atoms, 3).transpose(0, 2, 1, 3)
    return phonon


def plot_band_structure(phonon, path: str | Path, points_per_segment: int = 51) -> Path:
    """The band structure along seekpath's high-symmetry path of the primitive cell, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    try:
        phonon.auto_band_structure(npoints=points_per_segment)
    except ImportError:
        raise ValueError(f"the band path comes from seekpath: {INSTALL}") from None
    figure = phonon.plot_band_structure()
    figure.savefig(path, dpi=120)
    figure.close()
    return Path(path)
