"""Data-set statistics that set up a model: reference energies, scale and neighbor count."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from torch_geometric.data import Data

from .errors import DataError
from .read import iter_structures


def compute_statistics(graphs: Iterable[Data], atomic_energies: dict[int, float] | None = None) -> dict:
    """Statistics of a training set, as plain Python data (stored in checkpoints).

    Args:
        graphs: the training graphs (with ``energy`` and ideally ``forces``).
        atomic_energies: per-element reference energies (eV), e.g. from isolated-atom
            calculations; ``None`` fits them by least squares, ``E_s ≈ sum_z n_z(s) e_z``.

    Returns:
        ``elements`` (sorted atomic numbers), ``atomic_energies`` ({Z: eV}),
        ``avg_num_neighbors``, ``force_rms`` (eV/Å; 0 without forces), and the mean and
        standard deviation of the residual energy per atom (eV) after the references.
    """
    counts, energies, num_edges, num_atoms, force_squares, num_forces = [], [], 0, 0, 0.0, 0
    for graph in graphs:
        counts.append(np.bincount(graph.z.numpy(), minlength=119))
        energies.append(float(graph.energy) if "energy" in graph else np.nan)
        num_edges += graph.edge_index.shape[1]
        num_atoms += graph.num_nodes
        if "forces" in graph:  # NaN marks frames without forces
            forces = graph.forces.double()
            force_squares += float(forces.nan_to_num(0.0).square().sum())
            num_forces += int(forces.isfinite().sum())
    if not counts:
        raise DataError("cannot compute statistics of an empty training set")
    counts, energies = np.array(counts, dtype=float), np.array(energies)
    elements = [int(z) for z in np.flatnonzero(counts.sum(axis=0))]
    labelled = np.isfinite(energies)
    if atomic_energies is None:
        if not labelled.any():
            raise DataError("no training structure has an energy: cannot fit reference energies")
        solution, *_ = np.linalg.lstsq(counts[labelled][:, elements], energies[labelled], rcond=None)
        atomic_energies = {z: float(e) for z, e in zip(elements, solution)}
    missing = [z for z in elements if z not in atomic_energies]
    if missing:
        raise DataError(f"no reference energy for element(s) Z={missing}; add them to the isolated-atoms data")
    reference = counts[:, elements] @ np.array([atomic_energies[z] for z in elements])
    residual = (energies - reference)[labelled] / counts[labelled].sum(axis=1)
    return {
        "elements": elements,
        "atomic_energies": {int(z): float(atomic_energies[z]) for z in elements},
        "avg_num_neighbors": num_edges / num_atoms,
        "force_rms": float(np.sqrt(force_squares / num_forces)) if num_forces else 0.0,
        "energy_per_atom_mean": float(residual.mean()) if residual.size else 0.0,
        "energy_per_atom_std": float(residual.std()) if residual.size else 0.0,
    }


def read_atomic_energies(path: str | Path, keys=None, energy_unit: str = "eV") -> dict[int, float]:
    """Reference energies (eV) from a file of isolated atoms, one atom per frame."""
    energies = {}
    for frame, (atoms, labels) in enumerate(iter_structures(path, keys=keys, required=("energy",), energy_unit=energy_unit)):
        if len(atoms) != 1:
            raise DataError(f"has {len(atoms)} atoms; an isolated-atoms file has one atom per frame", str(path), frame)
        energies[int(atoms.numbers[0])] = labels.energy
    return energies
