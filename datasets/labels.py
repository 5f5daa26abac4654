"""Reference labels of a structure, found under configurable keys and converted to eV/Å.

ASE (>= 3.23) turns ``energy``/``forces``/``stress``/``dipole`` columns of an extended XYZ
file into calculator results, while other codes (mace-torch) write ``REF_energy`` and
``REF_forces`` into ``atoms.info``/``atoms.arrays``: by default both are found.

The dipole moment is in e·Å (ASE's unit), 3 values; the polarizability in Å³ (the
polarizability volume, alpha / (4 pi eps0)), 9 values or a 3x3 matrix, symmetrised (a
model predicts its symmetric part). Neither is converted by ``energy_unit``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units

from .errors import DataError

LABELS = ("energy", "forces", "stress", "node_energy", "dipole", "polarizability")

# Where each label is looked for, in order, when no key is given.
_DEFAULT_KEYS = {
    "energy": ("energy", "REF_energy"),
    "forces": ("forces", "REF_forces"),
    "stress": ("stress", "REF_stress"),
    "node_energy": ("energies", "node_energy", "REF_node_energy"),
    "dipole": ("dipole", "REF_dipole"),
    "polarizability": ("polarizability", "REF_polarizability"),
}
_NOT_ENERGIES = {"dipole", "polarizability"}  # not scaled by energy_unit
_PER_ATOM = {"forces", "node_energy"}

# Multiply by these to get eV (forces and stress: per Å and per Å³ of the same unit).
ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
    "Hartree": units.Hartree,
    "Ry": units.Ry,
}


def energy_unit_factor(unit: str) -> float:
    """Factor that converts ``unit`` to eV."""
    if unit not in ENERGY_UNITS:
        raise DataError(f"unknown energy unit {unit!r}; choose one of {', '.join(ENERGY_UNITS)}")
    return ENERGY_UNITS[unit]


@dataclass
class Labels:
    """Reference values of one structure in eV, eV/Å and eV/Å³ (ASE stress sign)."""

    energy: float | None = None
    forces: np.ndarray | None = None  # [n, 3]
    stress: np.ndarray | None = None  # [3, 3]
    node_energy: np.ndarray | None = None  # [n]
    dipole: np.ndarray | None = None  # [3], e·Å
    polarizability: np.ndarray | None = None  # [3, 3], Å³, symmetric

    def as_tensors(self, num_atoms: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Every label, shaped as the graph contract wants it; NaN where absent.

        Filling absent labels with NaN keeps the keys of all graphs equal, so a batch can
        mix, say, molecules without stress and crystals with it; losses and metrics
        skip the NaN entries.
        """
        shapes = {
            "energy": (1,), "forces": (num_atoms, 3), "stress": (1, 3, 3), "node_energy": (num_atoms,),
            "dipole": (1, 3), "polarizability": (1, 3, 3),
        }  # fmt: skip
        return {
            key: torch.full(shape, float("nan"), dtype=dtype)
            if (value := getattr(self, key)) is None
            else torch.tensor(np.asarray(value), dtype=dtype).reshape(shape)
            for key, shape in shapes.items()
        }


def _lookup(atoms: Atoms, key: str):
    calc_results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    for store in (calc_results, atoms.info, atoms.arrays):
        if key in store:
            return store[key]
    return None


def _stress_matrix(value, source, frame) -> np.ndarray:
    value = np.asarray(value, dtype=float)
    if value.size == 6:  # Voigt, ASE order: xx yy zz yz xz xy
        xx, yy, zz, yz, xz, xy = value.ravel()
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if value.size == 9:
        return value.reshape(3, 3)
    raise DataError(f"stress has {value.size} values; give 6 (Voigt) or 9 (3x3)", source, frame)


def total_charge(atoms: Atoms, source: str | None = None, frame: int | None = None) -> float:
    """The charge of a structure in e: ``atoms.info["charge"]`` (as fairchem and mace-torch read it), else 0."""
    return _info_number(atoms, "charge", 0.0, "the structure's total charge in e", source, frame)


def total_spin(atoms: Atoms, source: str | None = None, frame: int | None = None) -> float:
    """The spin multiplicity 2S+1 of a structure: ``atoms.info["spin"]`` (as fairchem and
    mace-torch read it), else 1."""
    return _info_number(atoms, "spin", 1.0, "the structure's spin multiplicity 2S+1", source, frame)


def _info_number(atoms: Atoms, key: str, default: float, meaning: str, source: str | None, frame: int | None) -> float:
    value = atoms.info.get(key, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DataError(f"info {key} = {value!r} is not a number ({meaning})", source, frame) from None
    if not np.isfinite(value):
        raise DataError(f"info {key} is NaN or Inf", source, frame)
    return value


def _tensor_label(name: str, value, source, frame) -> np.ndarray:
    """A dipole ``[3]`` or a polarizability ``[3, 3]`` (from 9 values, symmetrised)."""
    try:
        value = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} is not numbers ({value!r})", source, frame) from None
    size = 3 if name == "dipole" else 9
    if value.size != size:
        shape = "3 values (e·Å)" if name == "dipole" else "9 values or a 3x3 matrix (Å³)"
        raise DataError(f"{name} has {value.size} values; give {shape}", source, frame)
    if name == "dipole":
        return value.reshape(3)
    value = value.reshape(3, 3)
    return 0.5 * (value + value.T)


def read_labels(
    atoms: Atoms,
    keys: dict[str, str | None] | None = None,
    required: tuple[str, ...] = (),
    energy_unit: str = "eV",
    source: str | None = None,
    frame: int | None = None,
) -> Labels:
    """Collect the labels of ``atoms``.

    Args:
        atoms: the structure, labels in its calculator results, ``info`` or ``arrays``.
        keys: label name → key to read it from (e.g. ``{"energy": "dft_energy"}``); a
            label not named is looked for under its usual keys.
        required: labels that must be present.
        energy_unit: the unit of the stored energies (see :data:`ENERGY_UNITS`).
        source, frame: where the structure came from, for error messages.
    """
    keys = keys or {}
    factor = energy_unit_factor(energy_unit)
    total_charge(atoms, source, frame)  # inputs, not labels, but read and checked with them
    total_spin(atoms, source, frame)
    labels = Labels()
    for name in LABELS:
        candidates = (keys[name],) if keys.get(name) else _DEFAULT_KEYS[name]
        value = next((v for v in (_lookup(atoms, key) for key in candidates) if v is not None), None)
        if value is None:
            if name in required:
                looked = " or ".join(repr(key) for key in candidates)
                raise DataError(f"no {name} label (looked for {looked}); set {name}_key to the key your file uses", source, frame)
            continue
        if name == "stress":
            value = _stress_matrix(value, source, frame)
        value = _tensor_label(name, value, source, frame) if name in _NOT_ENERGIES else np.asarray(value, dtype=float) * factor
        if name in _PER_ATOM and value.shape[0] != len(atoms):
            raise DataError(f"{name} has {value.shape[0]} rows but the structure has {len(atoms)} atoms", source, frame)
        if name == "forces" and value.shape != (len(atoms), 3):
            raise DataError(f"forces must have shape [{len(atoms)}, 3], got {list(value.shape)}", source, frame)
        if not np.isfinite(value).all():
            raise DataError(f"{name} contains NaN or Inf", source, frame)
        setattr(labels, name, float(value) if name == "energy" else value)
    return labels


def require_labels(labels: Labels, required: tuple[str, ...], source: str | None = None, frame: int | None = None) -> None:
    """Raise :class:`DataError` naming the first label in ``required`` that ``labels`` lacks."""
    for name in required:
        if getattr(labels, name) is None:
            raise DataError(f"no {name} label", source, frame)
