"""MD steps/s of LAMMPS with ``pair_style equinet`` against ASE calculators, same model, on CPU.

    python scripts/bench_lammps.py [--model quickstart|mace-mp0 --sizes 500 4000 --steps 20 --threads 2
                                    --formats torchscript aotinductor --reuse-exports]

* ``--model quickstart`` (default sizes 500 4000): the quickstart's MACE
  (examples/quickstart.yaml: 16x0e+16x1o, max_ell 2, correlation 3, 2 interactions, cutoff
  4.5 Å, float32) with random weights for Cu/Ni (the speed does not depend on the weights),
  on rattled fcc Cu/Ni supercells, against equinet's ASE calculator.
* ``--model mace-mp0`` (default sizes 64 512): MACE-MP-0 medium's architecture with random
  weights, the mace-torch file of ``mace_fullsize.py``'s ``mp0-medium`` case (89 elements),
  imported by equinet and exported for Mg, Co, Ni and O (``equinet export --elements``),
  on rattled rock-salt (Mg,Co,Ni)O supercells, against equinet's ASE calculator and
  mace-torch's (``MACECalculator``, float32, in its own virtual environment), both on the
  same file.

Both ASE calculators run velocity Verlet; LAMMPS runs ``fix nve`` with the exported graph
(TorchScript and/or AOTInductor) on one MPI rank with ``--threads`` torch threads (LAMMPS's
time includes its neighbour lists; on one rank the plugin folds ghost atoms onto the local
atoms they image, so the model sees the periodic graph, as in ASE). All time ``--steps``
steps after two untimed ones, at 300 K, 1 fs. Exports are written to
``.bench/bench_lammps/`` (an AOTInductor compile takes minutes); ``--reuse-exports`` takes
them from there when present.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from pathlib import Path

from mace_fullsize import rock_salt
from peers import BENCH_DIR, PEER_ENV, machine, mace_python

ROOT = Path(__file__).resolve().parent.parent
EXPORTS = BENCH_DIR / "bench_lammps"
STATISTICS = {"elements": [28, 29], "atomic_energies": {28: -4.1, 29: -3.7}, "avg_num_neighbors": 40.0, "force_rms": 0.5}
MP0_ELEMENTS = ["Mg", "Co", "Ni", "O"]
FILES = {"torchscript": "model.pt", "aotinductor": "model.pt2"}


def alloy(num_atoms: int):
    """Rattled fcc Cu with 30% Ni, the cubic cell repeated to about ``num_atoms`` atoms."""
    import numpy as np
    from ase.build import bulk

    repeat = round((num_atoms / 4) ** (1 / 3))
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (repeat, repeat, repeat)
    rng = np.random.default_rng(0)
    atoms.symbols[rng.random(len(atoms)) < 0.3] = "Ni"
    atoms.rattle(0.05, seed=1)
    return atoms


def structure(model: str, num_atoms: int):
    if model == "mace-mp0":
        return rock_salt(round((num_atoms / 8) ** (1 / 3)))
    return alloy(num_atoms)


def ase_steps_per_second(calculator, atoms, steps: int) -> float:
    import numpy as np
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from ase.units import fs

    atoms = atoms.copy()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=1 * fs)
    dynamics.run(2)
    start = time.perf_counter()
    dynamics.run(steps)
    return steps / (time.perf_counter() - start)


def lammps_steps_per_second(folder: Path, plugin: Path, model: Path, atoms, elements: list[str], steps: int, threads: int) -> float:
    from ase.io import write

    from equinet.lammps import lammps_executable

    write(folder / "structure.data", atoms, format="lammps-data", specorder=elements, masses=True)
    (folder / "in.lmp").write_text(
        "units metal\natom_style atomic\nboundary p p p\nread_data structure.data\n"
        f"plugin load {plugin}\npair_style equinet\npair_coeff * * {model} {' '.join(elements)}\n"
        "velocity all create 300 1\ntimestep 0.001\nfix nve all nve\nthermo 1000\n"
        f"run 2\nrun {steps}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([str(lammps_executable()), "-in", "in.lmp", "-screen", "none", "-log", "log.lammps"], cwd=folder, env=env, timeout=3600)
    log = (folder / "log.lammps").read_text()
    if done.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{log[-2000:]}")
    seconds = float(re.findall(r"Loop time of ([\d.e+-]+) on", log)[-1])
    return steps / seconds


def mace_torch_steps_per_second(num_atoms: int, steps: int, threads: int) -> float:
    """mace-torch's ASE calculator on the mp0-medium file, in mace-torch's environment."""
    command = [str(mace_python()), __file__, "--mace-worker", str(num_atoms), "--steps", str(steps), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env={**PEER_ENV, "OMP_NUM_THREADS": str(threads)}, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"mace-torch worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])["steps_per_second"]


def mace_worker(args: argparse.Namespace) -> None:
    import torch
    from mace.calculators import MACECalculator

    from mace_fullsize import OUT

    torch.set_num_threads(args.threads)
    calculator = MACECalculator(model_paths=str(OUT / "mp0-medium.model"), device="cpu", default_dtype="float32")
    rate = ase_steps_per_second(calculator, structure("mace-mp0", args.mace_worker), args.steps)
    print(json.dumps({"steps_per_second": rate}))


def equinet_model(name: str, threads: int):
    """The model, its elements as LAMMPS types, and a description."""
    import torch
    import yaml

    import equinet
    from equinet.potentials import build_model
    from mace_fullsize import OUT, mace_reference

    if name == "mace-mp0":
        mace_reference("mp0-medium", mace_python(), threads)  # mace-torch writes the file once
        return equinet.import_mace(OUT / "mp0-medium.model", dtype="float32"), MP0_ELEMENTS, "MACE-MP-0 medium architecture (mp0-medium), float32"
    config = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())["model"]
    torch.manual_seed(0)
    return build_model(config, STATISTICS).eval(), ["Cu", "Ni"], f"examples/quickstart.yaml MACE, {config['dtype']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("quickstart", "mace-mp0"), default="quickstart")
    parser.add_argument("--sizes", type=int, nargs="+", help="atoms (default: 500 4000; 64 512 for mace-mp0)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--formats", nargs="+", choices=tuple(FILES), default=list(FILES))
    parser.add_argument("--reuse-exports", action="store_true", help=f"take the exported files from {EXPORTS} when present")
    parser.add_argument("--mace-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mace_worker:
        mace_worker(args)
        return
    import torch
    from ase.data import atomic_numbers

    from equinet import Calculator
    from equinet.export import export_model
    from equinet.lammps import build_plugin

    torch.set_num_threads(args.threads)
    sizes = args.sizes or ([64, 512] if args.model == "mace-mp0" else [500, 4000])
    model, elements, description = equinet_model(args.model, args.threads)
    folder = EXPORTS / args.model
    folder.mkdir(parents=True, exist_ok=True)
    plugin = build_plugin(folder / "equinet_plugin.so")
    for name in args.formats:
        if args.reuse_exports and (folder / FILES[name]).exists():
            continue
        start = time.perf_counter()
        export_model(model, folder / FILES[name], elements=[atomic_numbers[symbol] for symbol in elements])
        print(f"exported {name} in {time.perf_counter() - start:.0f} s", flush=True)
    peer = args.model == "mace-mp0"
    print(f"machine: {machine(args.threads)}")
    print(f"model: {description}; {args.steps} timed steps")
    header = f"{'atoms':>7}{'equinet ASE/s':>15}" + (f"{'mace-torch ASE/s':>18}" if peer else "")
    print(header + "".join(f"{'LAMMPS ' + name:>24}{'/ eq. ASE':>11}" + (f"{'/ mace':>8}" if peer else "") for name in args.formats))
    for size in sizes:
        atoms = structure(args.model, size)
        ase_rate = ase_steps_per_second(Calculator(model), atoms, args.steps)
        row = f"{len(atoms):7d}{ase_rate:15.2f}"
        if peer:
            mace_rate = mace_torch_steps_per_second(len(atoms), args.steps, args.threads)
            row += f"{mace_rate:18.2f}"
        for name in args.formats:
            rate = lammps_steps_per_second(folder, plugin, (folder / FILES[name]).resolve(), atoms, elements, args.steps, args.threads)
            row += f"{rate:24.2f}{rate / ase_rate:10.2f}x" + (f"{rate / mace_rate:7.2f}x" if peer else "")
        print(row, flush=True)


if __name__ == "__main__":
    main()
