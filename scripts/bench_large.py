"""Energy + forces of large systems: time and peak memory, edges in blocks against all at once.

    python scripts/bench_large.py [--families mace nequip escn tensornet] [--sizes 5 10 15 20 30]
                                  [--whole-up-to 4000] [--skip-peer] [--threads 2] [--max-memory-gb 8]
                                  [--lammps] [--lammps-chunk 3000] [--export-memory-gb 8]

Rattled fcc Cu supercells ``bulk("Cu", "fcc", a=3.61, cubic=True) * (k, k, k)`` (4 k^3 atoms:
500, 4,000, 13,500, 32,000 and 108,000 for k = 5, 10, 15, 20, 30), r_cut 5 Å, float32, random
weights. Each (code, family, size) runs in a fresh subprocess of this file, which builds the
graph, evaluates energy and forces once on a 108-atom cell (warm-up: e3nn builds its code on
first use) and then once on the large cell, and reports the seconds of that call and the
process's peak RSS (``ru_maxrss``, graph and model included) as one JSON line. equinet runs
as the calculator does (``create_graph=False``): with its edges in blocks sized to
``--max-memory-gb`` ("blocked"), and, up to ``--whole-up-to`` atoms, all edges at once
("whole", the path before blocking). mace-torch (the same MACE in its own virtual
environment, ``peers.py``) runs beside equinet's MACE up to ``--whole-up-to`` atoms too. A
worker killed for memory (or past ``--timeout``) is reported as such.

With ``--lammps``, the same model, exported (TorchScript, float32; ``equinet export``), also
runs in LAMMPS on one MPI rank (``pair_style equinet chunk N``: graphs of at most
``--lammps-chunk`` local atoms, each with the atoms within message-passing steps x cutoff
around it), and up to ``--whole-up-to`` atoms without chunks; the time is that of the one MD
step of ``run 1`` (LAMMPS's loop time, after the setup's evaluation), the memory that of the
``lmp`` process. ``--export-memory-gb G`` exports the graph with its edges and per-atom steps
in blocks sized to G GiB (``equinet export --max-memory-gb``; default: all at once). The
plugin and the exports are written to ``.bench/bench_large/``.

MACE is the model of issue 39: 64x0e+64x1o, max_ell 3, correlation 3, 2 layers, radial MLP
[64, 64, 64]; NequIP 32 channels, l_max 2, 4 layers; eSCN 32 channels, l_max 6, m_max 2, 2
layers; TensorNet 128 channels, 2 layers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from peers import BENCH_DIR, MACE_TORCH, PEER_ENV, machine, mace_python

CUTOFF = 5.0
LATTICE = 3.61
OUTPUTS = BENCH_DIR / "bench_large"
CONFIGS = {
    "mace": {
        "name": "mace", "hidden_irreps": "64x0e+64x1o", "max_ell": 3, "correlation": 3, "num_interactions": 2,
        "num_basis": 8, "envelope_p": 5, "radial_hidden": [64, 64, 64],
    },
    "nequip": {"name": "nequip", "num_channels": 32, "l_max": 2, "num_layers": 4},
    "escn": {"name": "escn", "num_channels": 32, "l_max": 6, "m_max": 2, "num_layers": 2},
    "tensornet": {"name": "tensornet", "hidden_channels": 128, "num_layers": 2, "num_rbf": 32},
}  # fmt: skip


def _cell(size: int):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=LATTICE, cubic=True) * (size, size, size)
    atoms.rattle(0.05, seed=0)
    return atoms


# ---------------------------------------------------------------- workers


def _model(family: str):
    from equinet.potentials import build_model

    statistics = {"elements": [29], "atomic_energies": {29: 0.0}, "avg_num_neighbors": 42.0, "force_rms": 1.0}
    return build_model({**CONFIGS[family], "dtype": "float32", "cutoff": CUTOFF}, statistics).eval()


def _equinet(family: str, size: int, mode: str, memory_gb: float) -> dict:
    import torch
    from torch_geometric.data import Batch

    from equinet.datasets import atoms_to_graph

    model = _model(family)
    block = model.set_memory_budget(memory_gb) if mode == "blocked" else None

    def evaluate(atoms) -> tuple[float, int]:
        graph = Batch.from_data_list([atoms_to_graph(atoms, CUTOFF, dtype=torch.float32)])
        start = time.perf_counter()
        out = model(graph, forces=True, create_graph=False)
        seconds = time.perf_counter() - start
        if not (torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()):
            raise RuntimeError("energy or forces are not finite")
        return seconds, graph.edge_index.shape[1]

    evaluate(_cell(3))
    seconds, edges = evaluate(_cell(size))
    return {"seconds": seconds, "edges": edges, "edge_block": block}


def _mace_torch(size: int) -> dict:
    import numpy as np
    import torch
    from e3nn import o3
    from mace import data, modules
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable

    model = modules.ScaleShiftMACE(
        r_max=CUTOFF, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.RealAgnosticResidualInteractionBlock, interaction_cls_first=modules.RealAgnosticInteractionBlock,
        num_interactions=2, num_elements=1, hidden_irreps=o3.Irreps("64x0e+64x1o"), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(1), avg_num_neighbors=42.0, atomic_numbers=[29], correlation=3,
        gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64], atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    ).eval()  # fmt: skip

    def evaluate(atoms) -> tuple[float, int]:
        graph = data.AtomicData.from_config(data.config_from_atoms(atoms), z_table=AtomicNumberTable([29]), cutoff=CUTOFF)
        batch = torch_geometric.Batch.from_data_list([graph]).to_dict()
        start = time.perf_counter()
        out = model(batch, compute_force=True, training=False)
        seconds = time.perf_counter() - start
        if not torch.isfinite(out["forces"]).all():
            raise RuntimeError("forces are not finite")
        return seconds, batch["edge_index"].shape[1]

    evaluate(_cell(3))
    seconds, edges = evaluate(_cell(size))
    return {"seconds": seconds, "edges": edges, "edge_block": None}


def _lammps(family: str, size: int, chunk: int, threads: int) -> dict:
    """One MD step of LAMMPS on ``pair_style equinet chunk ...``; the peak RSS is lmp's."""
    from ase.io import write

    from equinet.lammps import lammps_executable

    folder = OUTPUTS / f"{family}-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "structure.data", _cell(size), format="lammps-data", specorder=["Cu"], masses=True)
    (folder / "in.lmp").write_text(
        f"units metal\natom_style atomic\nboundary p p p\nread_data structure.data\nplugin load {OUTPUTS / 'equinet_plugin.so'}\n"
        f"pair_style equinet{f' chunk {chunk}' if chunk else ''}\npair_coeff * * {OUTPUTS / family}.pt Cu\n"
        "timestep 0.001\nfix nve all nve\nrun 1\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([str(lammps_executable()), "-in", "in.lmp", "-screen", "none", "-log", "log.lammps"], cwd=folder, env=env)
    log = (folder / "log.lammps").read_text() if (folder / "log.lammps").exists() else ""
    if done.returncode != 0:
        raise RuntimeError("LAMMPS failed: " + (log.strip().splitlines() or ["killed"])[-1])
    return {
        "seconds": float(re.findall(r"Loop time of ([\d.e+-]+) on", log)[-1]),
        "edges": None,  # as the equinet rows' (same cell and cutoff)
        "edge_block": chunk or None,  # atoms per graph
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
    }


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = args.sizes[0]
    code, family, mode = args.worker.split(":")
    if code == "lammps":
        print(json.dumps(_lammps(family, size, int(mode), args.threads)))
        return
    result = _mace_torch(size) if code == "mace-torch" else _equinet(family, size, mode, args.max_memory_gb)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))


def _prepare_lammps(families: list[str], memory_gb: float | None) -> None:
    """The plugin and each family's float32 TorchScript export, in blocks sized to
    ``memory_gb`` (``None``: none), under .bench/bench_large/."""
    import torch

    from equinet.export import export_model
    from equinet.lammps import build_plugin

    OUTPUTS.mkdir(parents=True, exist_ok=True)
    build_plugin(OUTPUTS / "equinet_plugin.so")
    for family in families:
        torch.manual_seed(0)
        export_model(_model(family), OUTPUTS / f"{family}.pt", dtype=torch.float32, max_memory_gb=memory_gb)


# ---------------------------------------------------------------- driver


def _measure(python: Path, label: str, size: int, args: argparse.Namespace) -> dict | str:
    command = [
        str(python), __file__, "--worker", label, "--sizes", str(size), "--threads", str(args.threads),
        "--max-memory-gb", str(args.max_memory_gb),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=PEER_ENV, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return f"over {args.timeout:.0f} s"
    if done.returncode == -9:
        return "killed (out of memory)"
    if done.returncode != 0:
        return "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=sorted(CONFIGS), default=["mace"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 15, 20, 30], help="supercell repetitions k (4 k^3 atoms)")
    parser.add_argument("--whole-up-to", type=int, default=4000, help="atoms up to which the all-edges path and mace-torch run too")
    parser.add_argument("--skip-peer", action="store_true", help="no mace-torch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-memory-gb", type=float, default=8.0, help="equinet's memory budget per evaluation")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker")
    parser.add_argument("--lammps", action="store_true", help="also run the exported model in LAMMPS on one rank")
    parser.add_argument("--lammps-chunk", type=int, default=3000, help="local atoms per graph in LAMMPS (pair_style equinet chunk N)")
    parser.add_argument("--export-memory-gb", type=float, default=None, help="blocks of the exported graph (equinet export --max-memory-gb)")
    parser.add_argument("--skip-python", action="store_true", help="no equinet-in-Python or mace-torch rows (with --lammps)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.lammps:
        _prepare_lammps(args.families, args.export_memory_gb)
    print(f"# {machine(args.threads)}; float32; equinet's budget {args.max_memory_gb} GiB", flush=True)
    print("| family | code | atoms | edges | edge block (LAMMPS: atoms per graph) | E+F time | µs/atom | peak RSS | KB/atom |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for family in args.families:
        for size in args.sizes:
            atoms = 4 * size**3
            runs = []
            if not args.skip_python:
                runs.append(("equinet blocked", sys.executable, f"equinet:{family}:blocked"))
                if atoms <= args.whole_up_to:
                    runs.append(("equinet whole", sys.executable, f"equinet:{family}:whole"))
                    if family == "mace" and not args.skip_peer:
                        runs.append((MACE_TORCH, mace_python(), "mace-torch:mace:-"))
            if args.lammps:
                runs.append(("LAMMPS chunked", sys.executable, f"lammps:{family}:{args.lammps_chunk}"))
                if atoms <= args.whole_up_to:
                    runs.append(("LAMMPS whole", sys.executable, f"lammps:{family}:0"))
            for name, python, label in runs:
                result = _measure(python, label, size, args)
                if isinstance(result, str):
                    print(f"| {family} | {name} | {atoms:,} | | | {result} | | | |", flush=True)
                    continue
                block = f"{result['edge_block']:,}" if result["edge_block"] else "all"
                edges = f"{result['edges']:,}" if result["edges"] else ""
                print(
                    f"| {family} | {name} | {atoms:,} | {edges} | {block} | {result['seconds']:.2f} s "
                    f"| {1e6 * result['seconds'] / atoms:.0f} | {result['peak_rss_gib']:.2f} GiB "
                    f"| {result['peak_rss_gib'] * 2**20 / atoms:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
