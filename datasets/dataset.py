"""Data sets of graphs: loading, validation, element checks and splits."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
from ase import Atoms
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Data
from tqdm.auto import tqdm

from .errors import DataError
from .graph import atoms_to_graph
from .h5 import H5_SUFFIXES, H5Structures
from .labels import Labels, require_labels
from .read import read_structures


class H5GraphDataset(Dataset):
    """Graphs built on access from an equinet HDF5 store (larger than RAM, any number of workers)."""

    def __init__(
        self, path: str | Path, cutoff: float, required: tuple[str, ...] = ("energy", "forces"), dtype: torch.dtype | None = None
    ):
        self.store = H5Structures(path)
        self.cutoff = cutoff
        self.required = required
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> Data:
        atoms, labels = self.store[index]
        require_labels(labels, self.required, self.store.path, index)
        return atoms_to_graph(atoms, self.cutoff, labels, self.store.path, index, self.dtype)

    def elements(self) -> dict[int, int]:
        """Each atomic number → the first frame that has it."""
        return self.store.elements()


def build_graphs(
    structures: Sequence[tuple[Atoms, Labels]],
    cutoff: float,
    source: str | None = None,
    skip_bad: bool = False,
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> list[Data]:
    """Graphs of in-memory structures, every one validated now rather than mid-training.

    With ``skip_bad`` a structure that fails validation is left out with a warning that
    counts them; otherwise the first one raises :class:`DataError`.
    """
    graphs, skipped = [], []
    for frame, (atoms, labels) in enumerate(tqdm(structures, desc="graphs", disable=not progress, leave=False)):
        try:
            graphs.append(atoms_to_graph(atoms, cutoff, labels, source, frame, dtype))
        except DataError as error:
            if not skip_bad:
                raise
            skipped.append(error)
    if skipped:
        warnings.warn(f"{source or 'data'}: skipped {len(skipped)} bad structure(s); first: {skipped[0]}", stacklevel=2)
    if not graphs:
        raise DataError("no usable structures", source)
    return graphs


def load_dataset(
    path: str | Path,
    cutoff: float,
    keys: dict[str, str | None] | None = None,
    required: tuple[str, ...] = ("energy", "forces"),
    energy_unit: str = "eV",
    skip_bad: bool = False,
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> list[Data] | H5GraphDataset:
    """Load a data file as graphs: an equinet ``.h5`` store lazily, anything else into memory.

    Args:
        path: extxyz/traj/db/... (ASE), rMD17 ``.npz`` or equinet ``.h5``.
        cutoff: neighbor cutoff in Å.
        keys: label name → key in the file; by default the usual keys are found.
        required: labels every frame must have.
        energy_unit: unit of the file's energies (converted to eV); ignored for ``.h5``,
            which is always in eV.
        skip_bad: leave out (and count) structures that fail validation instead of raising.
        dtype: floating dtype of the graphs (default: torch's default); a float64 model
            wants float64 positions.
    """
    if Path(path).suffix in H5_SUFFIXES:
        return H5GraphDataset(path, cutoff, required, dtype)
    structures = read_structures(path, keys=keys, required=required, energy_unit=energy_unit)
    return build_graphs(structures, cutoff, str(path), skip_bad, progress, dtype)


def dataset_elements(dataset: Sequence[Data] | H5GraphDataset) -> dict[int, int]:
    """Each atomic number in the data set → the first frame that has it."""
    if isinstance(dataset, H5GraphDataset):
        return dataset.elements()
    first: dict[int, int] = {}
    for frame, graph in enumerate(dataset):
        for z in graph.z.unique().tolist():
            first.setdefault(z, frame)
    return first


def check_elements(dataset: Sequence[Data] | H5GraphDataset, elements: Sequence[int], source: str | None = None) -> None:
    """Raise :class:`DataError` if the data set has an element outside ``elements`` (the model's)."""
    from ase.data import chemical_symbols

    known = set(int(z) for z in elements)
    for z, frame in sorted(dataset_elements(dataset).items()):
        if z not in known:
            names = ", ".join(chemical_symbols[k] for k in sorted(known))
            raise DataError(
                f"element {chemical_symbols[z]} (Z={z}) is not one the model was built for ({names})", source, frame
            )


def split_dataset(dataset: Sequence, sizes: Sequence[float | int], seed: int = 0) -> list[Subset]:
    """Random disjoint subsets of the given sizes: all fractions (sum <= 1) or all counts.

    ``split_dataset(data, [0.9, 0.1])`` or ``split_dataset(data, [950, 50])``; frames
    left over are unused. The same seed gives the same split.
    """
    total = len(dataset)
    if any(size < 0 for size in sizes):
        raise DataError(f"split sizes must be non-negative, got {list(sizes)}")
    if all(isinstance(size, int) for size in sizes):
        counts = list(sizes)
    elif all(0 <= size <= 1 for size in sizes) and sum(sizes) <= 1 + 1e-9:
        counts = [int(round(size * total)) for size in sizes]
        counts[-1] = min(counts[-1], total - sum(counts[:-1]))
    else:
        raise DataError(f"split sizes must be all counts or all fractions summing to at most 1, got {list(sizes)}")
    if sum(counts) > total:
        raise DataError(f"split sizes {counts} need {sum(counts)} structures but the data set has {total}")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    subsets, start = [], 0
    for count in counts:
        subsets.append(Subset(dataset, order[start : start + count]))
        start += count
    return subsets
