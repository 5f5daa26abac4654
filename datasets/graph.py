"""Atomic structures as graphs: ``ase.Atoms`` → ``torch_geometric.data.Data``.

One graph per structure, with

==============  ===========  =================================================
``pos``         ``[n, 3]``   Cartesian positions, Å
``z``           ``[n]``      atomic numbers (int64)
``cell``        ``[1, 3, 3]`` lattice vectors as rows, Å (zeros without a cell)
``pbc``         ``[1, 3]``   periodic directions (bool)
``edge_index``  ``[2, e]``   row 0 senders j, row 1 receivers i (full list)
``edge_shift``  ``[e, 3]``   integer cell shifts S (int64)
``total_charge`` ``[1]``     the structure's charge in e (``atoms.info["charge"]``, else 0)
``total_spin``  ``[1]``      its spin multiplicity 2S+1 (``atoms.info["spin"]``, else 1)
==============  ===========  =================================================

and, when labels are given, ``energy [1]`` (eV), ``forces [n, 3]`` (eV/Å), ``stress
[1, 3, 3]`` (eV/Å³, ASE sign), ``node_energy [n]`` (eV), ``dipole [1, 3]`` (e·Å) and
``polarizability [1, 3, 3]`` (Å³), NaN where a label is absent
(so that structures with and without, say, stress batch together). The edge vector is
``pos[receiver] - pos[sender] + edge_shift @ cell``; models recompute it from these
fields so that forces and stress flow through autograd.

Neighbor lists come from vesin: all periodic images within the cutoff, so an atom in a
cell smaller than the cutoff sees its own images; mixed periodicity (slabs) and
molecules without a cell are handled.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin
from ase import Atoms
from torch_geometric.data import Data

from .errors import DataError
from .labels import Labels, total_charge, total_spin

MIN_DISTANCE = 0.1  # Å; closer atoms are a broken structure, not physics


def neighbor_list(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbor list within ``cutoff`` (Å), with all periodic images.

    Returns ``(sender, receiver, shift, distance)`` such that the edge vector
    ``positions[receiver] - positions[sender] + shift @ cell`` has length ``distance``.
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = atoms.cell.array if pbc.any() else np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    sender, receiver, shift, distance = calculator.compute(
        points=atoms.positions, box=cell, periodic=pbc, quantities="ijSd"
    )
    return sender.astype(np.int64), receiver.astype(np.int64), shift.astype(np.int64), distance


def check_structure(atoms: Atoms, source: str | None = None, frame: int | None = None) -> None:
    """Raise :class:`DataError` for a structure no model can use (before any neighbor search)."""
    if len(atoms) == 0:
        raise DataError("structure has no atoms", source, frame)
    if not np.isfinite(atoms.positions).all():
        raise DataError("positions contain NaN or Inf", source, frame)
    lengths = atoms.cell.lengths()
    for axis in np.flatnonzero(atoms.pbc):
        if lengths[axis] < 1e-8:
            raise DataError(
                f"direction {'abc'[axis]} is periodic but its cell vector has zero length; "
                "set a cell or make that direction non-periodic",
                source,
                frame,
            )
    if atoms.pbc.all() and abs(atoms.cell.volume) < 1e-8:
        raise DataError("periodic cell has zero volume (its vectors are linearly dependent)", source, frame)


def atoms_to_graph(
    atoms: Atoms,
    cutoff: float,
    labels: Labels | None = None,
    source: str | None = None,
    frame: int | None = None,
    dtype: torch.dtype | None = None,
) -> Data:
    """Build the graph of one structure.

    Args:
        atoms: the structure (any periodicity).
        cutoff: neighbor cutoff in Å.
        labels: reference values to attach (NaN for those absent); ``None`` attaches none.
        source, frame: where the structure came from, for error messages.
        dtype: floating dtype of positions, cell and labels (default: torch's default).

    Raises:
        DataError: empty structure, non-finite positions, a periodic direction without
            a cell vector, or two atoms (or an atom and an image) closer than 0.1 Å.
    """
    if not cutoff > 0:
        raise ValueError(f"cutoff must be a positive distance in Å, got {cutoff!r}")
    check_structure(atoms, source, frame)
    sender, receiver, shift, distance = neighbor_list(atoms, cutoff)
    if len(distance) and distance.min() < MIN_DISTANCE:
        k = int(distance.argmin())
        raise DataError(
            f"atoms {sender[k]} and {receiver[k]} are {distance[k]:.3g} Å apart (< {MIN_DISTANCE} Å); "
            "the structure is broken or its cell is wrong",
            source,
            frame,
        )
    dtype = dtype or torch.get_default_dtype()
    pbc = np.asarray(atoms.pbc, dtype=bool)
    data = Data(
        pos=torch.tensor(atoms.positions, dtype=dtype),
        z=torch.tensor(atoms.numbers, dtype=torch.long),
        cell=torch.tensor(atoms.cell.array, dtype=dtype).unsqueeze(0),
        pbc=torch.tensor(pbc).unsqueeze(0),
        edge_index=torch.from_numpy(np.stack([sender, receiver])),
        edge_shift=torch.from_numpy(shift),
        total_charge=torch.tensor([total_charge(atoms, source, frame)], dtype=dtype),
        total_spin=torch.tensor([total_spin(atoms, source, frame)], dtype=dtype),
    )
    if labels is not None:
        for key, value in labels.as_tensors(len(atoms), dtype).items():
            data[key] = value
    return data


def graph_to_atoms(graph: Data) -> Atoms:
    """The structure and labels of a graph as ``ase.Atoms`` (labels in a
    ``SinglePointCalculator``, absent ones left out), e.g. to write a split to extxyz."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress

    atoms = Atoms(
        numbers=graph.z.numpy(),
        positions=graph.pos.double().numpy(),
        cell=graph.cell.view(3, 3).double().numpy(),
        pbc=graph.pbc.view(3).numpy(),
    )
    results = {}
    for key, name in (("energy", "energy"), ("forces", "forces"), ("node_energy", "energies")):
        value = graph[key].double().numpy() if key in graph else None
        if value is not None and np.isfinite(value).all():
            results[name] = float(value[0]) if key == "energy" else value
    if "stress" in graph and torch.isfinite(graph.stress).all():
        results["stress"] = full_3x3_to_voigt_6_stress(graph.stress.view(3, 3).double().numpy())
    if "dipole" in graph and torch.isfinite(graph.dipole).all():
        results["dipole"] = graph.dipole.view(3).double().numpy()
    if "polarizability" in graph and torch.isfinite(graph.polarizability).all():
        atoms.info["polarizability"] = graph.polarizability.view(3, 3).double().numpy()
    if "total_charge" in graph and float(graph.total_charge[0]) != 0:
        atoms.info["charge"] = float(graph.total_charge[0])
    if "total_spin" in graph and float(graph.total_spin[0]) != 1:
        atoms.info["spin"] = float(graph.total_spin[0])
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
