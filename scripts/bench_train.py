"""Training throughput (structures/s) of `equinet train` against mace-torch's `mace_run_train`, on CPU.

    python scripts/bench_train.py [--n 600 --epochs 1 4 --repeats 5 --threads 2 --skip-mace]

Both codes train the quickstart model (examples/quickstart.yaml: MACE 16x0e+16x1o,
max_ell 2, correlation 3, 2 interactions, r_cut 4.5 Å, radial MLP [32, 32], 8 Bessel
functions, batch size 8, Adam lr 0.01 AMSGrad, plateau scheduler, EMA 0.99, energy /
forces / stress weights 100 / 100 / 10, float32) on the same files: the embedded EMT
alloy data (``--n`` structures, seed 0), split 80/10 into train and validation sets,
written as extxyz with ``REF_energy``/``REF_forces``/``REF_stress`` labels. Each code
runs its command line in a fresh folder for each of the two ``--epochs`` counts, in
``--repeats`` interleaved rounds (a slow spell of a shared machine hits both codes),
after one untimed run that warms the file cache. Per round, structures/s = train
structures x (epoch difference) / (wall-time difference): start-up, data preprocessing
and the final evaluation cancel out; validation after every epoch is counted for both.
The table gives the median over rounds and the range. A run during which other
processes used more than 10% of the CPUs (from /proc/stat, Linux) is flagged NOT CLEAN.

mace-torch pins e3nn 0.4.4, so it runs in its own virtual environment, created on first
use under ``.bench/mace-venv``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from peers import MACE_TORCH, PEER_ENV, busy_cpu_seconds, machine, mace_python, mace_run_train, own_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
WORK = ROOT / ".bench" / "train"
QUIET = 0.1  # a run counts as clean if other processes used < 10% of the CPUs meanwhile


def write_data(n: int, folder: Path) -> tuple[int, int]:
    """The EMT alloy set split 80/10 into ``train.extxyz`` and ``valid.extxyz``; returns the sizes."""
    from ase.io import write

    from equinet.datasets import split_dataset
    from equinet.datasets.generate import GENERATORS

    frames = []
    for atoms in GENERATORS["emt-alloys"](n, seed=0):
        results = atoms.calc.results
        atoms.calc = None
        atoms.info["REF_energy"] = results["energy"]
        atoms.arrays["REF_forces"] = results["forces"]
        if "stress" in results:  # periodic cells only; ASE Voigt order, eV/Å^3
            atoms.info["REF_stress"] = results["stress"]
        frames.append(atoms)
    train, valid = split_dataset(frames, [0.8, 0.1], seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "train.extxyz", list(train))
    write(folder / "valid.extxyz", list(valid))
    return len(train), len(valid)


def equinet_command(data: Path, epochs: int, folder: Path) -> list[str]:
    """`equinet train` on examples/quickstart.yaml with the benchmark's data files and epochs."""
    config = yaml.safe_load(QUICKSTART.read_text())
    config["data"] = {
        "train": str(data / "train.extxyz"),
        "valid": str(data / "valid.extxyz"),
        "test": str(data / "valid.extxyz"),
        "split": [1.0, 0.0, 0.0],
        "energy_key": "REF_energy",
        "forces_key": "REF_forces",
        "stress_key": "REF_stress",
        "batch_size": config["data"]["batch_size"],
        "valid_batch_size": config["data"]["valid_batch_size"],
    }
    config["trainer"].update(max_epochs=epochs, max_time_minutes=None, progress_bar=False)
    config["loss"]["stage_two"] = None  # one stage, as mace_run_train without --swa
    config["output"] = "run"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return [str(Path(sys.executable).parent / "equinet"), "train", "config.yaml"]


def mace_command(data: Path, epochs: int, python: Path) -> list[str]:
    """`mace_run_train` with the quickstart's hyper-parameters (see examples/quickstart.yaml)."""
    config = yaml.safe_load(QUICKSTART.read_text())
    return mace_run_train(python, config, data, epochs) + [
        "--stress_key", "REF_stress", "--loss", "stress", "--stress_weight", str(config["loss"]["stress_weight"]),
        "--compute_stress", "True", "--error_table", "PerAtomMAEstressvirials",
    ]


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def timed_run(command: list[str], folder: Path, env: dict) -> tuple[float, bool]:
    """Wall seconds of ``command`` run in ``folder``, and whether the machine was quiet meanwhile."""
    busy, own, start = busy_cpu_seconds(), own_cpu_seconds(children=True), time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed in {folder}:\n{(done.stdout + done.stderr)[-3000:]}")
    others = (busy_cpu_seconds() - busy) - (own_cpu_seconds(children=True) - own)
    return seconds, others < QUIET * seconds * os.cpu_count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="structures in the EMT data set")
    parser.add_argument("--epochs", type=int, nargs=2, default=[1, 4], help="the two epoch counts")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of timed runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--skip-mace", action="store_true", help="time equinet only")
    args = parser.parse_args()
    first, last = args.epochs
    if not 0 < first < last:
        parser.error("--epochs needs two counts, the first smaller: e.g. --epochs 1 4")

    num_train, num_valid = write_data(args.n, WORK / "data")
    env = {**PEER_ENV, "OMP_NUM_THREADS": str(args.threads)}
    commands = {"equinet": lambda epochs, folder: equinet_command(WORK / "data", epochs, folder)}
    if not args.skip_mace:
        python = mace_python()
        commands["mace"] = lambda epochs, folder: mace_command(WORK / "data", epochs, python)

    for code, command in commands.items():  # untimed: the first process to import torch reads it from disk
        folder = _fresh(WORK / f"{code}-{first}")
        timed_run(command(first, folder), folder, env)
    runs = {(code, epochs): [] for code in commands for epochs in (first, last)}
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits both codes
        for (code, epochs), times in runs.items():
            folder = _fresh(WORK / f"{code}-{epochs}")
            times.append(timed_run(commands[code](epochs, folder), folder, env))
            print(f"{code}: {epochs} epochs in {times[-1][0]:.1f} s", flush=True)
    rates, notes = {}, []
    for code in commands:
        # One rate per round (its two runs were close in time), then the median over rounds.
        per_round = [
            num_train * (last - first) / (end - start)
            for (start, _), (end, _) in zip(runs[code, first], runs[code, last])
        ]
        rates[code] = (statistics.median(per_round), min(per_round), max(per_round))
        if not all(quiet for _, quiet in runs[code, first] + runs[code, last]):
            notes.append(f"NOT CLEAN: other processes were busy during a timed {code} run")

    print(f"machine: {machine(args.threads)}")
    print(f"EMT alloys: {num_train} train / {num_valid} valid structures; quickstart MACE, float32")
    print(f"{'code':10}{'structures/s':>14}{'range':>16}")
    for code, (median, low, high) in rates.items():
        print(f"{code:10}{median:14.1f}{f'{low:.1f}-{high:.1f}':>16}")
    if "mace" in rates:
        print(f"equinet / {MACE_TORCH}: {rates['equinet'][0] / rates['mace'][0]:.2f}x (medians over {args.repeats} rounds)")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
