"""MD steps/s of LAMMPS with ``pair_style equinet`` against equinet's ASE calculator, same model, on CPU.

    python scripts/bench_lammps.py [--sizes 500 4000 --steps 20 --threads 2 --formats torchscript aotinductor]

The model is the quickstart's MACE (examples/quickstart.yaml: 16x0e+16x1o, max_ell 2,
correlation 3, 2 interactions, cutoff 4.5 Å, float32) with random weights for Cu/Ni
(the speed does not depend on the weights). The structures are rattled fcc Cu/Ni
supercells of the given sizes at 300 K. ASE runs velocity Verlet with
:class:`equinet.Calculator`; LAMMPS runs ``fix nve`` with the exported graph (TorchScript
and/or AOTInductor) on one MPI rank with ``--threads`` torch threads (LAMMPS's time
includes its neighbour lists; on one rank the plugin folds ghost atoms onto the local
atoms they image, so the model sees the periodic graph, as in ASE). Both time
``--steps`` steps after two untimed ones.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from ase.build import bulk
from ase.io import write
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.units import fs

from equinet import Calculator
from equinet.export import export_model
from equinet.lammps import build_plugin, lammps_executable
from equinet.potentials import build_model
from peers import machine

ROOT = Path(__file__).resolve().parent.parent
STATISTICS = {"elements": [28, 29], "atomic_energies": {28: -4.1, 29: -3.7}, "avg_num_neighbors": 40.0, "force_rms": 0.5}


def alloy(num_atoms: int):
    repeat = round((num_atoms / 4) ** (1 / 3))
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (repeat, repeat, repeat)
    rng = np.random.default_rng(0)
    atoms.symbols[rng.random(len(atoms)) < 0.3] = "Ni"
    atoms.rattle(0.05, seed=1)
    return atoms


def ase_steps_per_second(model, atoms, steps: int) -> float:
    atoms = atoms.copy()
    atoms.calc = Calculator(model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=1 * fs)
    dynamics.run(2)
    start = time.perf_counter()
    dynamics.run(steps)
    return steps / (time.perf_counter() - start)


def lammps_steps_per_second(folder: Path, plugin: Path, model: str, atoms, steps: int, threads: int) -> float:
    write(folder / "structure.data", atoms, format="lammps-data", specorder=["Cu", "Ni"], masses=True)
    (folder / "in.lmp").write_text(
        "units metal\natom_style atomic\nboundary p p p\nread_data structure.data\n"
        f"plugin load {plugin}\npair_style equinet\npair_coeff * * {model} Cu Ni\n"
        "velocity all create 300 1\ntimestep 0.001\nfix nve all nve\nthermo 1000\n"
        f"run 2\nrun {steps}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([str(lammps_executable()), "-in", "in.lmp", "-screen", "none", "-log", "log.lammps"], cwd=folder, env=env)
    log = (folder / "log.lammps").read_text()
    if done.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{log[-2000:]}")
    seconds = float(re.findall(r"Loop time of ([\d.e+-]+) on", log)[-1])
    return steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 4000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--formats", nargs="+", choices=("torchscript", "aotinductor"), default=["torchscript", "aotinductor"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())["model"]
    torch.manual_seed(0)
    model = build_model(config, STATISTICS).eval()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        plugin = build_plugin(folder / "equinet_plugin.so")
        files = {"torchscript": "model.pt", "aotinductor": "model.pt2"}
        for name in args.formats:
            start = time.perf_counter()
            export_model(model, folder / files[name])
            print(f"exported {name} in {time.perf_counter() - start:.0f} s", flush=True)
        print(f"machine: {machine(args.threads)}")
        print(f"model: examples/quickstart.yaml MACE, {config['dtype']}; {args.steps} timed steps")
        print(f"{'atoms':>7}{'ASE steps/s':>13}" + "".join(f"{'LAMMPS ' + name:>24}{'/ ASE':>8}" for name in args.formats))
        for size in args.sizes:
            atoms = alloy(size)
            ase_rate = ase_steps_per_second(model, atoms, args.steps)
            row = f"{len(atoms):7d}{ase_rate:13.2f}"
            for name in args.formats:
                rate = lammps_steps_per_second(folder, plugin, files[name], atoms, args.steps, args.threads)
                row += f"{rate:24.2f}{rate / ase_rate:7.2f}x"
            print(row, flush=True)


if __name__ == "__main__":
    main()
