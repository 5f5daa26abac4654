"""Reading labelled structures from files and from pymatgen.

Formats, by file name:

* ``*.npz`` — rMD17 style (``nuclear_charges``, ``coords``, ``energies``, ``forces``),
  usually in kcal/mol (pass ``energy_unit="kcal/mol"``);
* ``*.h5`` / ``*.hdf5`` — equinet's streaming store (:mod:`equinet.datasets.h5`),
  read lazily;
* anything else — any format ASE reads (extxyz, traj, ASE db, VASP OUTCAR, ...).

Every problem is a one-line :class:`DataError` naming the file and the frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import ase.io
import numpy as np
from ase import Atoms

from .errors import DataError
from .h5 import H5_SUFFIXES, H5Structures
from .labels import Labels, read_labels, require_labels

RMD17_KEYS = ("nuclear_charges", "coords", "energies", "forces")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "is not a file", str(path))


def iter_frames(path: str | Path, index: str = ":") -> Iterator[Atoms]:
    """Structures of any ASE-readable file or rMD17 ``.npz``, one at a time.

    rMD17 frames carry their energies and forces in ``atoms.info["energy"]`` and
    ``atoms.arrays["forces"]`` in the file's own unit.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix == ".npz":
        yield from _iter_rmd17(path)
        return
    try:
        yield from ase.io.iread(str(path), index=index)
    except DataError:
        raise
    except Exception as error:  # ASE raises many types for unreadable files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"cannot read this file ({reason}); equinet reads any ASE format (extxyz, traj, db, ...), "
            "rMD17 .npz and equinet .h5",
            str(path),
        ) from None


def _iter_rmd17(path: Path) -> Iterator[Atoms]:
    try:
        data = np.load(path)
    except Exception as error:
        raise DataError(f"cannot read as .npz ({error})", str(path)) from None
    missing = [key for key in RMD17_KEYS if key not in data]
    if missing:
        raise DataError(f"rMD17 .npz lacks {', '.join(missing)} (has {', '.join(data.files)})", str(path))
    numbers = data["nuclear_charges"]
    for coords, energy, forces in zip(data["coords"], data["energies"], data["forces"]):
        atoms = Atoms(numbers=numbers, positions=coords)
        atoms.info["energy"] = float(energy)
        atoms.arrays["forces"] = np.asarray(forces, dtype=float)
        yield atoms


def iter_structures(
    path: str | Path,
    keys: dict[str, str | None] | None = None,
    required: tuple[str, ...] = ("energy", "forces"),
    energy_unit: str = "eV",
    index: str = ":",
) -> Iterator[tuple[Atoms, Labels]]:
    """Structures of a file with their labels (in eV, eV/Å, eV/Å³), one at a time.

    Args:
        path: the file (see the module docstring for formats).
        keys: label name → key in the file (``{"energy": "REF_energy"}``); by default
            calculator results and the ``REF_`` keys are both found.
        required: labels every frame must have.
        energy_unit: unit of the file's energies, converted to eV (an ``.h5`` store is
            always in eV).
        index: ASE frame selection (e.g. ``":100"``); not for ``.npz`` or ``.h5``.
    """
    source = str(path)
    if Path(path).suffix in H5_SUFFIXES:
        store = H5Structures(path)
        for frame in range(len(store)):
            atoms, labels = store[frame]
            require_labels(labels, required, source, frame)
            yield atoms, labels
        return
    for frame, atoms in enumerate(iter_frames(path, index)):
        yield atoms, read_labels(atoms, keys, required, energy_unit, source, frame)


def read_structures(path: str | Path, **options) -> list[tuple[Atoms, Labels]]:
    """All structures of a file with their labels; options as :func:`iter_structures`."""
    structures = list(iter_structures(path, **options))
    if not structures:
        raise DataError("contains no structures", str(path))
    return structures


def from_pymatgen(structure, energy: float | None = None, forces=None, stress=None) -> tuple[Atoms, Labels]:
    """A pymatgen ``Structure`` or ``Molecule`` and its labels (eV, eV/Å, eV/Å³ ASE sign).

    Labels not passed are taken from ``structure.properties["energy"|"stress"]`` and
    ``structure.site_properties["forces"]`` when present (pymatgen's adaptor carries them).
    """
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)  # an ase.Atoms subclass; keeps site properties as arrays
    for key, value in (("energy", energy), ("stress", stress)):
        if value is not None:
            atoms.info[key] = value
    if forces is not None:
        atoms.arrays["forces"] = np.asarray(forces, dtype=float)
    return atoms, read_labels(atoms, source=f"pymatgen {structure.formula}")
