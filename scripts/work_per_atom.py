"""Work per atom of one energy + forces call, counted rather than timed: the bytes that
PyTorch's operators write (their outputs, views excluded), per atom.

    python scripts/work_per_atom.py [--family mace] [--sizes 10 15] [--edge-block 12000] [--atom-block 2000]

On a shared machine, timings move with the load; these counts do not. A cost that grows
with atoms x blocks (a full-size tensor or gradient per edge block) shows up as bytes per
atom that grow with the size. Cells, model and evaluation as in ``bench_large.py``; the
edges (and MACE's many-body product) in blocks of a fixed size, so that every size has
many blocks.
"""

from __future__ import annotations

import argparse
import collections

import torch
from ase.build import bulk
from torch.utils._pytree import tree_leaves
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.data import Batch

from bench_large import CONFIGS, CUTOFF, LATTICE
from equinet.datasets import atoms_to_graph
from equinet.potentials import build_model


class BytesWritten(TorchDispatchMode):
    """Counts, per operator, the bytes of the outputs that do not share an input's storage."""

    def __init__(self):
        super().__init__()
        self.bytes = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.bytes[func.overloadpacket.__name__] += t.numel() * t.element_size()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(CONFIGS), default="mace")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 15], help="supercell repetitions k (4 k^3 atoms)")
    parser.add_argument("--edge-block", type=int, default=12000)
    parser.add_argument("--atom-block", type=int, default=2000, help="atoms per block of MACE's many-body product")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    statistics = {"elements": [29], "atomic_energies": {29: 0.0}, "avg_num_neighbors": 42.0, "force_rms": 1.0}
    model = build_model({**CONFIGS[args.family], "dtype": "float32", "cutoff": CUTOFF}, statistics).eval()
    model.edge_block_size = args.edge_block
    model.atom_block_size = args.atom_block
    print(f"# {args.family}, edge blocks of {args.edge_block:,}, product blocks of {args.atom_block:,} atoms")
    print("| atoms | edges | written, KB/atom | largest (KB/atom) |\n| --- | --- | --- | --- |")
    for size in args.sizes:
        atoms = bulk("Cu", "fcc", a=LATTICE, cubic=True) * (size, size, size)
        atoms.rattle(0.05, seed=0)
        graph = Batch.from_data_list([atoms_to_graph(atoms, CUTOFF, dtype=torch.float32)])
        with BytesWritten() as counter:
            model(graph, forces=True, create_graph=False)
        per_atom = {name: count / len(atoms) / 1024 for name, count in counter.bytes.most_common(6)}
        largest = ", ".join(f"{name} {value:.0f}" for name, value in per_atom.items())
        total = sum(counter.bytes.values()) / len(atoms) / 1024
        print(f"| {len(atoms):,} | {graph.edge_index.shape[1]:,} | {total:.0f} | {largest} |", flush=True)


if __name__ == "__main__":
    main()
