"""Active learning: the frames of a trajectory that a committee is least sure about, to be
labelled next (``equinet select``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

__all__ = ["committee_force_spread", "rmsd", "select_uncertain"]


def committee_force_spread(frames: Sequence[Atoms], calculator) -> np.ndarray:
    """``[F]`` eV/Å: the largest per-atom force std of a committee calculator on each frame."""
    spreads = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calculator
        atoms.get_forces()
        spreads.append(float(calculator.results["forces_std"].max()))
    return np.array(spreads)


def rmsd(a: Atoms, b: Atoms) -> float:
    """Root-mean-square displacement (Å) between two frames of the same atoms, by the
    minimum image in ``a``'s cell where it is periodic; ``inf`` for different atoms."""
    if len(a) != len(b) or (a.numbers != b.numbers).any():
        return float("inf")
    displacement = b.positions - a.positions
    if a.pbc.any():
        displacement, _ = find_mic(displacement, a.cell, a.pbc)
    return float(np.sqrt((displacement**2).sum(-1).mean()))


def select_uncertain(frames: Sequence[Atoms], spread: np.ndarray, count: int, min_rmsd: float) -> list[int]:
    """Indices of up to ``count`` frames, largest ``spread`` first, each at least ``min_rmsd``
    Å (RMSD) from every frame picked before it."""
    picked: list[int] = []
    for index in np.argsort(-spread, kind="stable"):
        if len(picked) == count:
            break
        if all(rmsd(frames[other], frames[index]) >= min_rmsd for other in picked):
            picked.append(int(index))
    return picked
