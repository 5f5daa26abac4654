"""Molecular dynamics with an equinet potential through ASE: ``equinet md`` calls :func:`run_md`.

Ensembles: ``nve`` (velocity Verlet), ``nvt`` (Langevin) and ``npt`` (Berendsen
thermostat and barostat, isotropic). Writes the trajectory (``.traj`` or any ASE
format such as ``.extxyz``), a log table (time, energies, temperature) and a PNG plot
of the energies and temperature against time.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import Trajectory, write
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet
from tqdm.auto import tqdm

__all__ = ["ENSEMBLES", "MDResult", "run_md"]

ENSEMBLES = ("nve", "nvt", "npt")


@dataclass
class MDResult:
    """What a run recorded, every ``interval`` steps: time (fs), energies (eV), temperature
    (K) and, for a committee, the largest per-atom force standard deviation (eV/Å; NaN
    otherwise). ``stopped_early``: the spread passed ``max_force_std`` and the run stopped;
    ``uncertain_frames``: how many records past it were written to ``uncertain`` instead."""

    time_fs: np.ndarray
    potential: np.ndarray
    kinetic: np.ndarray
    temperature: np.ndarray
    max_force_std: np.ndarray
    num_atoms: int
    steps_per_second: float
    stopped_early: bool = False
    uncertain_frames: int = 0

    @property
    def total(self) -> np.ndarray:
        return self.potential + self.kinetic

    @property
    def drift_per_atom(self) -> float:
        """Total-energy change from the first to the last record, eV/atom."""
        return float(self.total[-1] - self.total[0]) / self.num_atoms


def _dynamics(atoms: Atoms, ensemble: str, timestep_fs: float, temperature_K: float, pressure_bar: float, seed: int):
    timestep = timestep_fs * units.fs
    if ensemble == "nve":
        return VelocityVerlet(atoms, timestep)
    if ensemble == "nvt":
        return Langevin(atoms, timestep, temperature_K=temperature_K, friction=0.01 / units.fs, rng=np.random.default_rng(seed))
    if not atoms.pbc.all():
        raise ValueError("npt needs a periodic cell (atoms.pbc all True); use nve or nvt for molecules")
    return NPTBerendsen(
        atoms, timestep, temperature_K=temperature_K, pressure_au=pressure_bar * units.bar,
        taut=100 * units.fs, taup=1000 * units.fs, compressibility_au=4.57e-5 / units.bar,
    )


def run_md(
    atoms: Atoms,
    ensemble: str = "nve",
    temperature_K: float = 300.0,
    timestep_fs: float = 1.0,
    steps: int = 1000,
    interval: int = 10,
    trajectory: str | Path | None = None,
    log: str | Path | None = None,
    pressure_bar: float = 1.01325,
    seed: int = 0,
    progress: bool = True,
    max_force_std: float | None = None,
    uncertain: str | Path | None = None,
    born_charges: bool = False,
) -> MDResult:
    """Run MD on ``atoms`` (calculator attached), velocities drawn at ``temperature_K``.

    Records (and writes to ``trajectory``/``log``) every ``interval`` steps, including step 0.
    The files are opened only once the settings are checked and the first energy is computed.
    With a committee calculator the log also gets the largest per-atom force standard
    deviation, and the run stops at the first record where it exceeds ``max_force_std`` (eV/Å);
    with ``uncertain`` (a file), it goes on and writes every such record's frame there.
    A model with tensorial outputs writes each frame's ``dipole`` (and atomic ``charges``) and
    ``polarizability`` too: the dipoles of a trajectory give its IR spectrum. With
    ``born_charges``, each recorded frame also gets the atoms' Born charges ``born_charges``
    (a per-atom array of 9 columns: ``Z*_i[a, b] = d mu_a / d r_ib`` in row-major order, e).
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    if steps < 1 or interval < 1 or not timestep_fs > 0:
        raise ValueError(f"steps and interval must be positive and the timestep > 0, got {steps}, {interval}, {timestep_fs}")
    if not 0 <= temperature_K < float("inf"):
        raise ValueError(f"the temperature must be 0 K or more, got {temperature_K} K")
    if not abs(pressure_bar) < float("inf"):
        raise ValueError(f"the pressure must be a finite number of bar, got {pressure_bar}")
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    dynamics = _dynamics(atoms, ensemble, timestep_fs, temperature_K, pressure_bar, seed)
    atoms.get_potential_energy()  # a structure the model cannot take fails here, before any file exists
    committee = "forces_std" in atoms.calc.results
    if max_force_std is not None and not committee:
        raise ValueError("max_force_std needs a committee: give the calculator several models")
    if uncertain is not None and max_force_std is None:
        raise ValueError("writing the uncertain frames needs a threshold: give max_force_std")
    if born_charges and "dipole" not in atoms.calc.results:
        raise ValueError("Born charges need a model that predicts dipoles (model.outputs: [energy, dipole])")
    records: list[tuple[float, float, float, float, float]] = []
    with contextlib.ExitStack() as stack:
        writer = None
        if trajectory and str(trajectory).endswith(".traj"):
            writer = stack.enter_context(Trajectory(str(trajectory), "w", atoms))
        elif trajectory:
            Path(trajectory).unlink(missing_ok=True)
        if uncertain is not None:
            Path(uncertain).unlink(missing_ok=True)
        saved = 0
        log_file = stack.enter_context(open(log, "w")) if log else None
        if log_file:
            log_file.write(f"{'time_fs':>12}{'epot_eV':>16}{'ekin_eV':>16}{'etot_eV':>16}{'T_K':>10}" + (f"{'fstd_max':>12}" if committee else "") + "\n")

        def record() -> float:
            epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
            spread = float(atoms.calc.results["forces_std"].max()) if committee else float("nan")
            row = (dynamics.nsteps * timestep_fs, epot, ekin, atoms.get_temperature(), spread)
            records.append(row)
            if log_file:
                log_file.write(f"{row[0]:12.2f}{epot:16.6f}{ekin:16.6f}{epot + ekin:16.6f}{row[3]:10.2f}" + (f"{spread:12.5f}" if committee else "") + "\n")
            atoms.info["time_fs"] = row[0]  # for spectra: equinet spectrum ir reads the spacing
            if "polarizability" in atoms.calc.results:  # not one of ASE's properties: written from info
                atoms.info["polarizability"] = atoms.calc.results["polarizability"]
            if born_charges:  # ASE's extxyz writes per-atom arrays of up to 2 dimensions
                atoms.arrays["born_charges"] = atoms.calc.get_born_charges(atoms).reshape(len(atoms), 9)
            if writer is not None:
                writer.write(atoms)
            elif trajectory:
                write(trajectory, atoms, append=True)
            return spread

        def too_uncertain(spread: float) -> bool:
            """Past the threshold: stop, or write the frame to ``uncertain`` and go on."""
            nonlocal saved
            if max_force_std is None or not spread > max_force_std:
                return False
            if uncertain is None:
                return True
            write(uncertain, atoms, append=True)
            saved += 1
            return False

        stopped = too_uncertain(record())
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"md {ensemble}", unit="step", disable=not progress) as bar:
            for done in range(0, steps, interval):
                if stopped:
                    break
                chunk = min(interval, steps - done)
                dynamics.run(chunk)
                stopped = too_uncertain(record())
                bar.update(chunk)
        elapsed = time.perf_counter() - start
    columns = np.array(records).T
    return MDResult(*columns, len(atoms), dynamics.nsteps / max(elapsed, 1e-9), stopped, saved)


def plot_md(result: MDResult, path: str | Path) -> Path:
    """Energies per atom (potential, total) and temperature against time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (energy, temperature) = plt.subplots(2, 1, figsize=(6, 5), sharex=True, layout="constrained")
    time_ps = result.time_fs / 1000
    energy.plot(time_ps, result.potential / result.num_atoms, label="potential")
    energy.plot(time_ps, result.total / result.num_atoms, label="total")
    energy.set_ylabel("energy (eV/atom)")
    energy.legend()
    temperature.plot(time_ps, result.temperature, color="tab:red")
    temperature.set_ylabel("temperature (K)")
    temperature.set_xlabel("time (ps)")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
