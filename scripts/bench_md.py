"""MD-step throughput (energy + forces) of equinet's models against their peers, on CPU.

    python scripts/bench_md.py [--model mace|mace-mp0|mace-gaunt|tensornet|escn|escn-cpp --repeats 5 --sizes 3 5
                                --threads 2 --backend auto --skip-peer]

For rattled fcc Cu supercells (``bulk("Cu", "fcc", a=3.61, cubic=True) * (k, k, k)``,
108 atoms for k=3, 500 for k=5), both codes build the same model with random weights
in float32 and time one energy + forces evaluation: atom-steps/s from the median of
``--repeats`` calls after a warm-up (e3nn and Warp build their code on the first calls).

* ``--model mace`` against mace-torch: 64x0e+64x1o, max_ell 3, correlation 3, 2
  interactions, 8 Bessel functions, radial MLP [64, 64, 64], polynomial cutoff p=5,
  r_cut 5 Å, one element. Both run on a prebuilt graph (graph construction not timed).
* ``--model mace-gaunt``: the same MACE with equinet's Gaunt many-body product
  (``product: gaunt``) against mace-torch's MACE, whose symmetric contraction it replaces.
* ``--model tensornet`` against torchmd-net's TensorNet: 128 channels, 2 layers, 32
  expnorm radial functions, r_cut 5 Å, O(3). torchmd-net builds its neighbor list
  inside the model (periodic box), so equinet's time includes building the graph too.
* ``--model mace-mp0`` against mace-torch with the *same weights*: MACE-MP-0 medium's
  architecture as ``mace_run_train`` builds it (ScaleShiftMACE, residual first and later
  blocks, 128x0e+128x1o, max_ell 3, correlation 3, 2 interactions, r_cut 6 Å, 10 Bessel
  functions, p = 5, radial MLP [64, 64, 64], MLP_irreps 16x0e, SiLU, MPtrj's 89 elements)
  with random weights: ``mace_fullsize.py``'s ``mp0-medium``, which mace-torch builds and
  saves once (``torch.save(model)``, float64, cached under ``.bench/mace_fullsize/``) and
  equinet reads through ``equinet.import_mace``. Both run it in float32. The structures are
  rattled rock-salt (Mg,Co,Ni)O, the 8-atom cubic cell repeated ``--sizes`` times along each
  axis (2: 64 atoms, 4: 512 atoms; the default). Both calculators are timed too (graph
  built at every step, stress included), and a float64 run of both on each structure must
  agree to 1e-10 (``|dE|/|E|``, ``max|dF|/max|F|``), or the script fails.
* ``--model escn``: equinet's eSCN (32 channels, l_max 6, m_max 2, 2 layers, S2 activation,
  r_cut 5 Å), alone: no peer runs on this machine (``--skip-peer`` is implied).
  ``--model escn-cpp``: the same on the fused C++ SO(2) kernel (``conv_backend: cpp``).

equinet's ASE calculator is timed too, alternating with model-only calls in one
process, to report its overhead over the model alone (the calculator rebuilds the
graph at every step, as in MD, and also computes the stress of periodic cells).
``--backend`` runs equinet's operators on other backends (``equinet.accelerate``: a name
such as ``auto``, ``cpp`` or ``e3nn`` for both roles, or ``conv=e3nn,product=torch``);
without it they run on the PyTorch reference. The backends in use are printed.

Each peer runs in its own virtual environment (mace-torch pins e3nn 0.4.4), created on
first use under ``.bench/`` (torch==2.13.0 first, then the peer). Every (code, size)
runs in a fresh subprocess of this same file (``--worker``), which reports its
timings and peak RSS as one JSON line, so that both codes are measured the same way.
On a shared machine, a timed call during which other processes took more than 10% of
the CPUs (from /proc/stat, Linux) is discarded and run again, for up to ``--max-wait``
seconds per worker (10 minutes by default).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mace_fullsize import CASES as MACE_CASES
from mace_fullsize import OUT as MACE_MODELS
from mace_fullsize import mace_reference, rock_salt
from peers import MACE_TORCH, PEER_ENV, TORCHMD_NET, busy_cpu_seconds, machine, mace_python, own_cpu_seconds, torchmd_net_python

CUTOFF = 5.0
LATTICE = 3.61
RATTLE = 0.05
WORKERS = ("equinet", "equinet-calculator", "equinet-float64", "mace", "mace-float64", "torchmd-net")
PEERS = {
    "mace": ("mace", MACE_TORCH, mace_python),
    "mace-mp0": ("mace", MACE_TORCH, mace_python),
    "mace-gaunt": ("mace", MACE_TORCH, mace_python),
    "tensornet": ("torchmd-net", TORCHMD_NET, torchmd_net_python),
    "escn": (None, None, None),
    "escn-cpp": (None, None, None),
}
WARMUP = 2  # calls before timing: e3nn builds its code on the first ones
QUIET = 0.1  # a timed round counts if other processes used < 10% of the CPUs meanwhile
MAX_WAIT_S = 600.0  # default of --max-wait: after this long, rounds are taken even if other processes were busy
MP0_CASE = "mp0-medium"  # mace_fullsize.py's case that --model mace-mp0 times
MP0_FILE = MACE_MODELS / f"{MP0_CASE}.model"
EXACT = 1e-10  # largest relative float64 difference between equinet and mace-torch on the same weights


# ---------------------------------------------------------------- worker side
# Runs under either interpreter: only the standard library is imported at the top.


def _structure(size: int, model: str):
    if model == "mace-mp0":
        return rock_salt(size, rattle=RATTLE)
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=LATTICE, cubic=True) * (size, size, size)
    atoms.rattle(RATTLE, seed=0)
    return atoms


def _cutoff(model: str) -> float:
    return MACE_CASES[MP0_CASE]["r_max"] if model == "mace-mp0" else CUTOFF


def _backend(text: str | None):
    """``--backend``'s value as ``Calculator(backend=...)`` takes it: a name or ``{role: name}``."""
    if text is None or "=" not in text:
        return text
    return dict(part.split("=", 1) for part in text.split(","))


def _accelerated(model, backend: str | None):
    from equinet import accelerate

    chosen = _backend(backend)
    if chosen is not None:
        accelerate(model, **(chosen if isinstance(chosen, dict) else {"conv": chosen, "product": chosen}))
    return model


def _timed_rounds(fns, repeats: int, max_wait_s: float) -> tuple[list[float], int]:
    """Median seconds of each of ``fns`` over ``repeats`` rounds of one call each, after a warm-up.

    On a shared machine a round is discarded and run again when other processes took
    the CPUs meanwhile, for at most ``max_wait_s``; returns the medians and the number
    of rounds that were kept although other processes were busy.
    """
    for _ in range(WARMUP):
        for fn in fns:
            fn()
    rounds, busy_rounds, deadline = [], 0, time.monotonic() + max_wait_s
    while len(rounds) < repeats:
        busy, own, start = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        times = []
        for fn in fns:
            call_start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - call_start)
        others = (busy_cpu_seconds() - busy) - (own_cpu_seconds() - own)
        quiet = others < QUIET * (time.perf_counter() - start) * os.cpu_count()
        if quiet or time.monotonic() > deadline:
            rounds.append(times)
            busy_rounds += not quiet
    return [statistics.median(column) for column in zip(*rounds)], busy_rounds


def _check(energy, forces, num_atoms: int) -> None:
    import torch

    if energy.shape != (1,) or forces.shape != (num_atoms, 3):
        raise RuntimeError(f"wrong shapes: energy {tuple(energy.shape)}, forces {tuple(forces.shape)}")
    if not (torch.isfinite(energy).all() and torch.isfinite(forces).all()):
        raise RuntimeError("energy or forces are not finite")


EQUINET_CONFIGS = {
    "mace": {
        "name": "mace", "dtype": "float32", "cutoff": CUTOFF, "hidden_irreps": "64x0e+64x1o", "max_ell": 3,
        "correlation": 3, "num_interactions": 2, "num_basis": 8, "envelope_p": 5, "radial_hidden": [64, 64, 64],
    },
    "tensornet": {
        "name": "tensornet", "dtype": "float32", "cutoff": CUTOFF, "hidden_channels": 128, "num_layers": 2,
        "num_rbf": 32, "radial_basis": "expnorm",
    },
    "escn": {"name": "escn", "dtype": "float32", "cutoff": CUTOFF, "num_channels": 32, "l_max": 6, "m_max": 2, "num_layers": 2},
}  # fmt: skip
EQUINET_CONFIGS["mace-gaunt"] = {**EQUINET_CONFIGS["mace"], "product": "gaunt"}
EQUINET_CONFIGS["escn-cpp"] = {**EQUINET_CONFIGS["escn"], "conv_backend": "cpp"}


def _equinet_model(args: argparse.Namespace):
    """equinet's model of ``args.model`` in float32, on ``args.backend``."""
    if args.model == "mace-mp0":
        from equinet import import_mace

        return _accelerated(import_mace(MP0_FILE, dtype="float32"), args.backend)
    from equinet.potentials import build_model

    config = EQUINET_CONFIGS[args.model]
    statistics_ = {"elements": [29], "atomic_energies": {29: 0.0}, "avg_num_neighbors": args.avg_num_neighbors, "force_rms": 1.0}
    return _accelerated(build_model(config, statistics_).eval(), args.backend)


def _run_equinet(atoms, args: argparse.Namespace) -> dict:
    import e3nn
    import torch
    from torch_geometric.data import Batch

    from equinet.datasets import atoms_to_graph
    from equinet.potentials.accelerate import backends_in_use

    model = _equinet_model(args)
    cutoff = _cutoff(args.model)
    batch = Batch.from_data_list([atoms_to_graph(atoms, cutoff, dtype=torch.float32)])
    out = model(batch, forces=True)
    _check(out["energy"], out["forces"], len(atoms))
    rebuild = args.model == "tensornet"  # torchmd-net builds its neighbor list in every call: so does equinet then

    def step():
        graph = Batch.from_data_list([atoms_to_graph(atoms, cutoff, dtype=torch.float32)]) if rebuild else batch
        return model(graph, forces=True)

    (seconds,), busy_rounds = _timed_rounds([step], args.repeats, args.max_wait)
    return {
        "seconds": seconds, "busy_rounds": busy_rounds, "edges": batch.edge_index.shape[1], "e3nn": e3nn.__version__,
        "backends": backends_in_use(model),
    }  # fmt: skip


def _run_equinet_calculator(atoms, args: argparse.Namespace) -> dict:
    """ASE calculator steps (tiny move, graph rebuilt) alternating with model-only calls."""
    import numpy as np
    import torch
    from torch_geometric.data import Batch

    from equinet import Calculator
    from equinet.datasets import atoms_to_graph

    if args.model == "mace-mp0":  # a mace-torch file, as users pass it
        atoms.calc = Calculator(str(MP0_FILE), dtype="float32", backend=_backend(args.backend))
        model = atoms.calc.model
    else:
        model = _equinet_model(args)
        atoms.calc = Calculator(model)
    batch = Batch.from_data_list([atoms_to_graph(atoms, _cutoff(args.model), dtype=torch.float32)])
    rng = np.random.default_rng(0)

    def step():
        atoms.rattle(1e-3, rng=rng)
        atoms.get_forces()

    (step_seconds, model_seconds), busy_rounds = _timed_rounds([step, lambda: model(batch, forces=True)], args.repeats, args.max_wait)
    return {"seconds": step_seconds, "model_seconds": model_seconds, "busy_rounds": busy_rounds}


def _run_equinet_float64(atoms, args: argparse.Namespace) -> dict:
    """Energy and forces of equinet's import of the mace-torch file, float64, on ``args.backend``."""
    from equinet import Calculator, import_mace

    atoms.calc = Calculator(_accelerated(import_mace(MP0_FILE, dtype="float64"), args.backend))
    return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().tolist()}


def _mace_model(name: str, avg_num_neighbors: float):
    """mace-torch's model of ``--model mace`` or ``mace-gaunt`` (random weights), or the file of ``mace-mp0``."""
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    if name == "mace-mp0":
        return torch.load(MP0_FILE, weights_only=False).float().eval()
    return modules.ScaleShiftMACE(
        r_max=CUTOFF,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=modules.RealAgnosticResidualInteractionBlock,
        # mace_run_train's default model ("MACE") forces this block on the first layer.
        interaction_cls_first=modules.RealAgnosticInteractionBlock,
        num_interactions=2,
        num_elements=1,
        hidden_irreps=o3.Irreps("64x0e+64x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(1),
        avg_num_neighbors=avg_num_neighbors,
        atomic_numbers=[29],
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    ).eval()


def _run_mace(atoms, args: argparse.Namespace) -> dict:
    """mace-torch's model on a prebuilt graph; for ``mace-mp0`` also its ASE calculator
    (graph rebuilt at every step, stress of the periodic cell), alternating with the model."""
    import e3nn
    import numpy as np
    from mace import data
    from mace.calculators import MACECalculator
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable

    model = _mace_model(args.model, args.avg_num_neighbors)
    z_table = AtomicNumberTable([int(z) for z in model.atomic_numbers])
    graph = data.AtomicData.from_config(data.config_from_atoms(atoms), z_table=z_table, cutoff=_cutoff(args.model))
    batch = torch_geometric.Batch.from_data_list([graph]).to_dict()
    out = model(batch, compute_force=True, training=False)
    _check(out["energy"], out["forces"], len(atoms))
    result = {"edges": batch["edge_index"].shape[1], "e3nn": e3nn.__version__}
    if args.model != "mace-mp0":
        (result["seconds"],), result["busy_rounds"] = _timed_rounds([lambda: model(batch, compute_force=True, training=False)], args.repeats, args.max_wait)
        return result
    atoms.calc = MACECalculator(model_paths=str(MP0_FILE), device="cpu", default_dtype="float32")
    rng = np.random.default_rng(0)

    def step():
        atoms.rattle(1e-3, rng=rng)
        atoms.get_forces()

    (result["seconds"], result["calculator_seconds"]), result["busy_rounds"] = _timed_rounds(
        [lambda: model(batch, compute_force=True, training=False), step], args.repeats, args.max_wait
    )
    return result


def _run_mace_float64(atoms, args: argparse.Namespace) -> dict:
    """Energy and forces of the mace-torch file through mace-torch's calculator, float64."""
    from mace.calculators import MACECalculator

    atoms.calc = MACECalculator(model_paths=str(MP0_FILE), device="cpu", default_dtype="float64")
    return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().tolist()}


def _run_torchmd_net(atoms, args: argparse.Namespace) -> dict:
    import torch
    from torchmdnet.models.model import create_model

    hparams = {
        "model": "tensornet", "embedding_dimension": 128, "num_layers": 2, "num_rbf": 32, "rbf_type": "expnorm",
        "trainable_rbf": False, "activation": "silu", "cutoff_lower": 0.0, "cutoff_upper": CUTOFF, "max_z": 100,
        "max_num_neighbors": 64, "equivariance_invariance_group": "O(3)", "static_shapes": False, "derivative": True,
        "atom_filter": -1, "prior_model": None, "output_model": "Scalar", "reduce_op": "add", "precision": 32,
        "box_vecs": atoms.cell.array.tolist(),
    }  # fmt: skip
    model = create_model(hparams)
    z = torch.tensor(atoms.numbers)
    pos = torch.tensor(atoms.positions, dtype=torch.float32)
    batch = torch.zeros_like(z)
    energy, forces = model(z, pos, batch)
    _check(energy.view(1), forces, len(atoms))
    edge_index, _, _ = model.representation_model.distance(pos, batch)
    (seconds,), busy_rounds = _timed_rounds([lambda: model(z, pos, batch)], args.repeats, args.max_wait)
    edges = int((edge_index[0] != edge_index[1]).sum())  # without its self-loops
    return {"seconds": seconds, "busy_rounds": busy_rounds, "edges": edges, "e3nn": None}


def worker(args: argparse.Namespace) -> None:
    """One (code, size) measurement; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    float64 = args.worker.endswith("-float64")
    torch.set_default_dtype(torch.float64 if float64 else torch.float32)
    torch.manual_seed(0)
    atoms = _structure(args.sizes[0], args.model)
    run = {
        "equinet": _run_equinet, "equinet-calculator": _run_equinet_calculator, "equinet-float64": _run_equinet_float64,
        "mace": _run_mace, "mace-float64": _run_mace_float64, "torchmd-net": _run_torchmd_net,
    }  # fmt: skip
    result = run[args.worker](atoms, args)
    result["atoms"] = len(atoms)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["torch"] = torch.__version__
    print(json.dumps(result))


# ---------------------------------------------------------------- driver side


def _measure(python: Path, code: str, size: int, avg_num_neighbors: float, args: argparse.Namespace) -> dict:
    command = [
        python, __file__, "--worker", code, "--model", args.model, "--sizes", str(size), "--repeats", str(args.repeats),
        "--threads", str(args.threads), "--avg-num-neighbors", repr(avg_num_neighbors), "--max-wait", str(args.max_wait),
    ]  # fmt: skip
    if args.backend:
        command += ["--backend", args.backend]
    done = subprocess.run(command, capture_output=True, text=True, env=PEER_ENV)
    if done.returncode != 0:
        raise RuntimeError(f"{code} worker ({size}x{size}x{size}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _avg_num_neighbors(size: int, model: str) -> float:
    from ase.neighborlist import neighbor_list

    atoms = _structure(size, model)
    return len(neighbor_list("i", atoms, _cutoff(model))) / len(atoms)


def _float64_differences(ours: dict, theirs: dict) -> tuple[float, float]:
    """``|dE|/|E|`` and ``max|dF|/max|F|`` of equinet's float64 results against mace-torch's."""
    forces = [abs(a - b) for row_a, row_b in zip(ours["forces"], theirs["forces"]) for a, b in zip(row_a, row_b)]
    scale = max(abs(f) for row in theirs["forces"] for f in row)
    return abs(ours["energy"] - theirs["energy"]) / abs(theirs["energy"]), max(forces) / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(PEERS), default="mace", help="which model, against which peer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--sizes", type=int, nargs="+",
        help="supercell repetitions of the cubic cell: 4-atom fcc Cu (default 3 5), 8-atom rock salt for mace-mp0 (default 2 4)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--backend", help="equinet's operator backends: a name (auto, cpp, e3nn, ...) or conv=...,product=...")
    parser.add_argument("--max-wait", type=float, default=MAX_WAIT_S, help="seconds per worker to wait for quiet CPUs")
    parser.add_argument("--skip-peer", action="store_true", help="time equinet only")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--avg-num-neighbors", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = [2, 4] if args.model == "mace-mp0" else [3, 5]
    if args.worker:
        worker(args)
        return

    peer, peer_version, peer_python = PEERS[args.model]
    peer_interpreter = None if args.skip_peer or peer is None else peer_python()
    if args.model == "mace-mp0":  # mace-torch writes the model file that both codes run
        mace_reference(MP0_CASE, mace_python(), args.threads)
    rows = []
    for size in args.sizes:
        avg = _avg_num_neighbors(size, args.model)
        row = {"size": size}
        row["equinet"] = _measure(Path(sys.executable), "equinet", size, avg, args)
        row["atoms"] = row["equinet"]["atoms"]
        row["calculator"] = _measure(Path(sys.executable), "equinet-calculator", size, avg, args)
        if peer_interpreter:
            row["peer"] = _measure(peer_interpreter, peer, size, avg, args)
            if row["peer"]["edges"] != row["equinet"]["edges"]:
                raise RuntimeError(f"the graphs differ: {row['equinet']['edges']} vs {row['peer']['edges']} edges")
        if args.model == "mace-mp0" and peer_interpreter:
            ours = _measure(Path(sys.executable), "equinet-float64", size, avg, args)
            theirs = _measure(mace_python(), "mace-float64", size, avg, args)
            row["float64"] = _float64_differences(ours, theirs)
        rows.append(row)

    first = rows[0]
    versions = f"torch {first['equinet']['torch']}, e3nn {first['equinet']['e3nn']}"
    if peer_interpreter:
        versions += f"; {peer_version}" + (f" with e3nn {first['peer']['e3nn']}" if first["peer"]["e3nn"] else "")
    system = "(Mg,Co,Ni)O rock salt" if args.model == "mace-mp0" else "fcc Cu"
    print(f"machine: {machine(args.threads)}")
    print(f"{versions}; {args.model}, float32, r_cut {_cutoff(args.model)} Å, median of {args.repeats}")
    print(f"equinet backends: {first['equinet']['backends'] or 'none'}" + ("" if args.backend else " (the reference; see --backend)"))
    print(f"{'system':28}{'atoms':>7}{'edges':>8}{'equinet/s':>11}{'peer/s':>10}{'ratio':>8}{'RSS eq (MiB)':>14}{'RSS peer (MiB)':>16}")
    for row in rows:
        ours = row["atoms"] / row["equinet"]["seconds"]
        theirs = row["atoms"] / row["peer"]["seconds"] if "peer" in row else float("nan")
        peer_rss = row["peer"]["peak_rss_mib"] if "peer" in row else float("nan")
        print(
            f"{system + ' ' + 'x'.join([str(row['size'])] * 3):28}{row['atoms']:7d}{row['equinet']['edges']:8d}"
            f"{ours:11.0f}{theirs:10.0f}{ours / theirs:7.2f}x{row['equinet']['peak_rss_mib']:14.0f}{peer_rss:16.0f}"
        )
    print("atom-steps/s = atoms / (median seconds of one energy + forces call)")
    for row in rows:
        for code in ("equinet", "calculator", "peer"):
            if code in row and row[code]["busy_rounds"]:
                print(f"NOT CLEAN: {row[code]['busy_rounds']} timed rounds of {code}, {row['atoms']} atoms, overlapped other processes")
    for row in rows:
        model, step = row["calculator"]["model_seconds"], row["calculator"]["seconds"]
        print(
            f"calculator overhead, {row['atoms']} atoms: model {1e3 * model:.1f} ms, "
            f"calculator step {1e3 * step:.1f} ms -> {100 * (1 - model / step):.1f}%"
        )
    for row in rows:
        if "calculator_seconds" in row.get("peer", {}):
            ours, theirs = row["atoms"] / row["calculator"]["seconds"], row["atoms"] / row["peer"]["calculator_seconds"]
            print(f"calculators (graph, energy, forces, stress), {row['atoms']} atoms: equinet {ours:.0f}/s, mace-torch {theirs:.0f}/s -> {ours / theirs:.2f}x")
    inexact = []
    for row in rows:
        if "float64" in row:
            energy, forces = row["float64"]
            print(f"float64, same weights, {row['atoms']} atoms: |dE|/|E| = {energy:.1e}, max|dF|/max|F| = {forces:.1e} (must be <= {EXACT:.0e})")
            if not (energy <= EXACT and forces <= EXACT):
                inexact.append(row["atoms"])
    if inexact:
        sys.exit(f"FAILED: equinet's import differs from mace-torch by more than {EXACT:.0e} in float64 ({inexact} atoms)")


if __name__ == "__main__":
    main()
