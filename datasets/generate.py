"""Default data sets generated on the fly, so that nothing has to be downloaded.

Each generator returns ``ase.Atoms`` whose labels (energy and free_energy in eV, forces
in eV/Å, stress in eV/Å³ for fully periodic cells, the dipole in e·Å for molecules where
the method gives one) sit in a ``SinglePointCalculator``,
so ``ase.io.write("x.extxyz", frames)`` stores them; ``atoms.info["config_type"]``
names the kind of configuration. The same seed gives identical structures and labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import cycle, islice

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc111, molecule
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, reference_states
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from tqdm import tqdm

METALS = ("Cu", "Ni", "Pd", "Ag", "Pt", "Au", "Al")
MOLECULES = ("H2O", "CH4", "CH3OH", "C2H6", "CH3CH2OH", "CH3CHO", "HCOOH", "C6H6")
MD_TEMPERATURES_K = (300, 800, 1500)

# Kinds of EMT configuration, cycled: 35 % bulk, 25 % alloy, 10 % vacancy, 10 % surface
# and 20 % MD per 20 frames, with every kind among the first five so small n gets a mix.
_EMT_KINDS = (
    "bulk", "alloy", "md", "vacancy", "surface", "bulk", "alloy", "md", "bulk", "alloy",
    "bulk", "md", "alloy", "vacancy", "bulk", "surface", "alloy", "md", "bulk", "bulk",
)  # fmt: skip

# fcc cells as (conventional cubic?, repetition), 1 to 32 atoms. The primitive cells are
# non-orthogonal and far smaller than a 5 Å cutoff sphere, so atoms see their own images.
_FCC_CELLS = (
    (False, (1, 1, 1)), (False, (2, 1, 1)), (False, (2, 2, 2)), (False, (3, 3, 3)),
    (True, (1, 1, 1)), (True, (2, 1, 1)), (True, (2, 2, 1)), (True, (2, 2, 2)),
)  # fmt: skip

_FRICTION = 0.02 / units.fs
_SNAPSHOTS_PER_RUN = 4


def _check_n(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")


def _labelled(atoms: Atoms, calc: Calculator, config_type: str) -> Atoms:
    """Copy of ``atoms`` holding ``calc``'s energy (eV), forces (eV/Å), if fully periodic,
    stress (eV/Å³), and if not periodic and ``calc`` has one, the dipole (e·Å) in a
    SinglePointCalculator."""
    atoms = atoms.copy()
    atoms.calc = calc
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    results["free_energy"] = results["energy"]
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    if not atoms.pbc.any() and "dipole" in calc.implemented_properties:
        results["dipole"] = atoms.get_dipole_moment()
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info["config_type"] = config_type
    return atoms


def _fcc_cell(rng: np.random.Generator, min_atoms: int = 1) -> Atoms:
    """fcc cell with lattice constant 1 (to be scaled by ``_occupied``)."""
    choices = [(cubic, repeat) for cubic, repeat in _FCC_CELLS if (4 if cubic else 1) * np.prod(repeat) >= min_atoms]
    cubic, repeat = choices[rng.integers(len(choices))]
    return bulk("Cu", a=1.0, cubic=cubic).repeat(repeat)


def _some_metals(rng: np.random.Generator) -> list[str]:
    """One metal or, half of the time, two different ones."""
    return list(rng.choice(METALS, size=rng.integers(1, 3), replace=False))


def _occupied(rng: np.random.Generator, lattice: Atoms, metals: list[str]) -> Atoms:
    """``lattice`` (lattice constant 1) with random sites substituted by the second metal,
    if any, and scaled to the lattice constant (Å) of Vegard's law."""
    symbols = np.full(len(lattice), metals[0])
    if len(metals) == 2 and len(lattice) > 1:
        symbols[rng.choice(len(lattice), size=rng.integers(1, len(lattice)), replace=False)] = metals[1]
    lattice.set_chemical_symbols(symbols)
    a = np.mean([reference_states[atomic_numbers[s]]["a"] for s in symbols])
    # Scaling positions directly rather than fractionally also works for a slab, whose
    # cell has no third vector before vacuum is added.
    lattice.set_cell(lattice.cell * a)
    lattice.positions *= a
    return lattice


def _strained(rng: np.random.Generator, atoms: Atoms, max_strain: float = 0.04) -> Atoms:
    """``atoms`` under a random symmetric strain; the shear parts make cubic cells triclinic."""
    strain = rng.uniform(-max_strain, max_strain, (3, 3))
    atoms.set_cell(atoms.cell @ (np.eye(3) + (strain + strain.T) / 2), scale_atoms=True)
    return atoms


def _rattled(rng: np.random.Generator, atoms: Atoms) -> Atoms:
    """``atoms`` displaced by Gaussian noise of 0.05-0.1 Å standard deviation."""
    atoms.positions += rng.normal(0.0, rng.uniform(0.05, 0.1), atoms.positions.shape)
    return atoms


def _bulk_frames(rng: np.random.Generator) -> Iterator[Atoms]:
    """Endless strained and rattled single-metal cells, labelled by EMT. The fcc cells are
    taken in turn, so every size (1 to 32 atoms) appears among the first eight."""
    for cubic, repeat in cycle(_FCC_CELLS):
        lattice = bulk("Cu", a=1.0, cubic=cubic).repeat(repeat)
        yield _labelled(_rattled(rng, _strained(rng, _occupied(rng, lattice, [rng.choice(METALS)]))), EMT(), "bulk")


def _alloy(rng: np.random.Generator) -> Atoms:
    metals = list(rng.choice(METALS, size=2, replace=False))
    return _rattled(rng, _strained(rng, _occupied(rng, _fcc_cell(rng, min_atoms=4), metals)))


def _vacancy(rng: np.random.Generator) -> Atoms:
    atoms = _occupied(rng, _fcc_cell(rng, min_atoms=8), _some_metals(rng))
    del atoms[int(rng.integers(len(atoms)))]
    return _rattled(rng, atoms)


def _surface(rng: np.random.Generator) -> Atoms:
    """(111) or (100) slab of 3-5 layers, 2x2 in plane, 6 Å vacuum on each side."""
    build = (fcc111, fcc100)[rng.integers(2)]
    atoms = _occupied(rng, build("Cu", size=(2, 2, int(rng.integers(3, 6))), a=1.0), _some_metals(rng))
    atoms.center(vacuum=6.0, axis=2)
    atoms.info.pop("adsorbate_info", None)  # a dict that extxyz cannot store
    return _rattled(rng, atoms)


_EMT_MAKERS = {"alloy": _alloy, "vacancy": _vacancy, "surface": _surface}


def _langevin_snapshots(
    atoms: Atoms,
    calculator: Callable[[], Calculator],
    rng: np.random.Generator,
    temperature_K: float,
    timestep_fs: float,
    interval: int,
    config_type: str,
) -> Iterator[Atoms]:
    """Labelled snapshots every ``interval`` steps of one Langevin trajectory, after a
    burn-in of two intervals. Each snapshot is labelled by a fresh calculator, so its
    labels do not depend on the trajectory (tblite reuses the last SCF as its guess)."""
    atoms.calc = calculator()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    # fixcm=True is deprecated; a drifting centre of mass does not change the labels.
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K, friction=_FRICTION, fixcm=False, rng=rng)
    dyn.run(2 * interval)
    for _ in range(_SNAPSHOTS_PER_RUN):
        dyn.run(interval)
        yield _labelled(atoms, calculator(), config_type)


def _emt_md_snapshots(rng: np.random.Generator) -> Iterator[Atoms]:
    """Endless EMT snapshots: one short trajectory per random 8-32 atom fcc supercell,
    cycling the temperatures so that each gets the same share."""
    for temperature in cycle(MD_TEMPERATURES_K):
        atoms = _rattled(rng, _occupied(rng, _fcc_cell(rng, min_atoms=8), _some_metals(rng)))
        yield from _langevin_snapshots(atoms, EMT, rng, temperature, 2.0, 5, f"md_{temperature}K")


def generate_emt_alloys(n: int, seed: int = 0, progress: bool = True) -> list[Atoms]:
    """``n`` fcc Cu/Ni/Pd/Ag/Pt/Au/Al structures (pure and random binary alloys: strained
    and rattled bulk, vacancies, slabs, Langevin MD at 300/800/1500 K) labelled by EMT
    (eV, eV/Å, eV/Å³)."""
    _check_n(n)
    rng = np.random.default_rng(seed)
    streams = {"bulk": _bulk_frames(rng), "md": _emt_md_snapshots(rng)}
    frames = []
    for kind in tqdm(islice(cycle(_EMT_KINDS), n), total=n, disable=not progress, desc="emt-alloys"):
        frames.append(next(streams[kind]) if kind in streams else _labelled(_EMT_MAKERS[kind](rng), EMT(), kind))
    return frames


def _xtb_md_snapshots(rng: np.random.Generator, calculator: Callable[[], Calculator]) -> Iterator[Atoms]:
    """Endless snapshots of 300-600 K trajectories, cycling the molecules in a random order."""
    for name in cycle(rng.permutation(MOLECULES)):
        atoms = molecule(str(name))
        atoms.positions += rng.normal(0.0, 0.02, atoms.positions.shape)  # breaks the symmetry
        yield from _langevin_snapshots(atoms, calculator, rng, rng.uniform(300, 600), 0.5, 20, "md_molecule")


def generate_xtb_molecules(n: int, seed: int = 0, progress: bool = True) -> list[Atoms]:
    """``n`` Langevin MD snapshots of small organic molecules (no cell, no pbc) labelled by
    GFN2-xTB (tblite): energy in eV, forces in eV/Å, and the molecular dipole moment that
    tblite reports for the same SCF, in e·Å."""
    _check_n(n)
    try:
        from tblite.ase import TBLite
    except ImportError as error:
        raise ImportError("generating xtb-molecules needs tblite: pip install 'equinet[xtb]'") from error

    def gfn2() -> Calculator:
        return TBLite(method="GFN2-xTB", verbosity=0)

    rng = np.random.default_rng(seed)
    snapshots = islice(_xtb_md_snapshots(rng, gfn2), n)
    return list(tqdm(snapshots, total=n, disable=not progress, desc="xtb-molecules"))


GENERATORS: dict[str, Callable[..., list[Atoms]]] = {
    "emt-alloys": generate_emt_alloys,
    "xtb-molecules": generate_xtb_molecules,
}
