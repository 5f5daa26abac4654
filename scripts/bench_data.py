"""Graph-building throughput of equinet.datasets, side by side with ASE's neighbor list.

    python scripts/bench_data.py [--cutoff 5.0 --repeats 5]

For periodic fcc Cu of growing size (and a batch of small cells, as in training data),
times ``atoms_to_graph`` (vesin neighbor list + tensors) and, for reference, ASE's
``neighbor_list`` alone on the same structure, and prints structures/s, atoms/s and the
ratio.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from equinet.datasets import atoms_to_graph


def _median_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads; cutoff {args.cutoff} Å")
    print(f"{'system':28}{'atoms':>8}{'edges':>10}{'equinet (ms)':>14}{'ASE nl (ms)':>13}{'ratio':>8}{'atoms/s':>12}")
    cases = {
        "fcc Cu primitive x1000": ([bulk("Cu", "fcc", a=3.6)] * 1000),
        "fcc Cu 32 atoms x100": ([bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)] * 100),
        "fcc Cu 500 atoms": [bulk("Cu", "fcc", a=3.6, cubic=True) * (5, 5, 5)],
        "fcc Cu 10,192 atoms": [bulk("Cu", "fcc", a=3.6, cubic=True) * (14, 14, 13)],
        "fcc Cu 108,000 atoms": [bulk("Cu", "fcc", a=3.6, cubic=True) * (30, 30, 30)],
    }
    for name, structures in cases.items():
        for atoms in structures:
            atoms.rattle(0.05, seed=0)
        ours = _median_s(lambda: [atoms_to_graph(a, args.cutoff) for a in structures], args.repeats)
        theirs = _median_s(lambda: [ase_neighbor_list("ijS", a, args.cutoff) for a in structures], args.repeats)
        atoms_total = sum(len(a) for a in structures)
        edges = sum(atoms_to_graph(a, args.cutoff).edge_index.shape[1] for a in structures[:1]) * len(structures)
        print(
            f"{name:28}{atoms_total:8d}{edges:10d}{1e3 * ours:14.1f}{1e3 * theirs:13.1f}"
            f"{theirs / ours:7.1f}x{atoms_total / ours:12.3g}"
        )


if __name__ == "__main__":
    main()
