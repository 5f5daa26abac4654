"""Shared by the benchmark scripts: the peers' virtual environments and the machine's load.

Only the standard library is imported, so the scripts' worker halves can import this
module under a peer's interpreter too.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / ".bench"
TORCH = "torch==2.13.0"  # installed first in every peer environment, so no CUDA wheels are pulled
MACE_TORCH = "mace-torch==0.3.16"
TORCHMD_NET = "torchmd-net==3.1.0"
# e3nn 0.4.4 (pinned by mace-torch) calls torch.load on its own constants, which torch >= 2.6
# refuses under the default weights_only=True.
PEER_ENV = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def peer_python(name: str, requirement: str, module: str) -> Path:
    """The interpreter of ``.bench/<name>-venv`` holding ``requirement``, created on first use."""
    venv = BENCH_DIR / f"{name}-venv"
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} ({TORCH}, {requirement}); this takes a few minutes", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
    pip = [python, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, requirement], check=True)
    return python


def mace_python() -> Path:
    return peer_python("mace", MACE_TORCH, "mace")


def torchmd_net_python() -> Path:
    return peer_python("torchmd-net", TORCHMD_NET, "torchmdnet")


def mace_run_train(python: Path, config: dict, data: Path, epochs: int, seed: int = 0) -> list[str]:
    """``mace_run_train`` with the hyper-parameters of an equinet training config (its
    YAML as a dict, model ``mace``) on ``data/{train,valid}.extxyz`` (``REF_`` labels).

    The caller adds ``--loss`` and what else its comparison needs (stress, second stage).
    """
    model, loss, scheduler = config["model"], config["loss"], config["scheduler"]
    return [
        str(python.parent / "mace_run_train"), "--name", "mace", "--seed", str(seed), "--device", "cpu",
        "--default_dtype", model["dtype"], "--train_file", str(data / "train.extxyz"),
        "--valid_file", str(data / "valid.extxyz"), "--energy_key", "REF_energy", "--forces_key", "REF_forces",
        "--E0s", "average", "--model", "MACE", "--hidden_irreps", model["hidden_irreps"],
        "--max_ell", str(model["max_ell"]), "--correlation", str(model["correlation"]),
        "--num_interactions", str(model["num_interactions"]), "--r_max", str(model["cutoff"]),
        # equinet's defaults for these: 8 Bessel functions, envelope p = 5, readout MLP 16
        "--num_radial_basis", "8", "--num_cutoff_basis", "5", "--MLP_irreps", "16x0e",
        "--radial_MLP", str(model["radial_hidden"]),
        "--energy_weight", str(loss["energy_weight"]), "--forces_weight", str(loss["forces_weight"]),
        "--batch_size", str(config["data"]["batch_size"]), "--valid_batch_size", str(config["data"]["valid_batch_size"]),
        "--lr", str(config["optimizer"]["lr"]), "--amsgrad", "--scheduler", "ReduceLROnPlateau",
        "--lr_factor", str(scheduler["factor"]), "--scheduler_patience", str(scheduler["patience"]),
        "--ema", "--ema_decay", str(config["ema"]["decay"]), "--clip_grad", "10", "--eval_interval", "1",
        "--max_num_epochs", str(epochs), "--num_workers", "0", "--plot", "False",
    ]  # fmt: skip


def busy_cpu_seconds() -> float:
    """CPU time this machine has spent busy since boot, all processes together (Linux)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(children: bool = False) -> float:
    """CPU time of this process (or of its waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(threads: int) -> str:
    return f"{platform.platform()}, {cpu_model()}, {os.cpu_count()} cores, {threads} torch threads"
