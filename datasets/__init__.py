"""Atomic data (``equinet.datasets``): reading structures and labels, validating them,
turning them into torch_geometric graphs, storing large sets on disk, statistics for
model set-up, and the embedded default data sets."""

from .dataset import H5GraphDataset, build_graphs, check_elements, dataset_elements, load_dataset, split_dataset
from .errors import DataError
from .graph import atoms_to_graph, graph_to_atoms, neighbor_list
from .h5 import H5Structures, write_h5
from .labels import ENERGY_UNITS, Labels, read_labels
from .read import from_pymatgen, iter_structures, read_structures
from .statistics import compute_statistics, read_atomic_energies

__all__ = [
    "DataError",
    "ENERGY_UNITS",
    "H5GraphDataset",
    "H5Structures",
    "Labels",
    "atoms_to_graph",
    "build_graphs",
    "check_elements",
    "compute_statistics",
    "dataset_elements",
    "from_pymatgen",
    "graph_to_atoms",
    "iter_structures",
    "load_dataset",
    "neighbor_list",
    "read_atomic_energies",
    "read_labels",
    "read_structures",
    "split_dataset",
    "write_h5",
]
