"""equinet's on-disk store for data sets larger than RAM, in HDF5 (h5py).

Ragged layout, one row per atom or per frame, readable by any HDF5 tool:

================  ===========  ============================================
``numbers``       ``[A]``      atomic numbers of all frames, concatenated
``positions``     ``[A, 3]``   Å
``frame_start``   ``[S + 1]``  frame i is rows ``frame_start[i]:frame_start[i+1]``
``cell``          ``[S, 3, 3]`` Å, rows are lattice vectors
``pbc``           ``[S, 3]``
``energy``        ``[S]``      eV
``stress``        ``[S, 3, 3]`` eV/Å³, ASE sign
``dipole``        ``[S, 3]``   e·Å
``polarizability`` ``[S, 3, 3]`` Å³
``charge``        ``[S]``      the structure's total charge, e (``atoms.info["charge"]``)
``spin``          ``[S]``      its spin multiplicity 2S+1 (``atoms.info["spin"]``)
``forces``        ``[A, 3]``   eV/Å
``node_energy``   ``[A]``      eV
================  ===========  ============================================

A label a frame does not have is stored as NaN (input with NaN labels is rejected when
read, so NaN only ever means "absent"). Stores written before ``dipole``,
``polarizability``, ``charge`` and ``spin`` existed lack them, and read as without those
labels, neutral and singlets. Frames are read by random access; the file is
opened lazily in each process, so several DataLoader workers can share one store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np
from ase import Atoms

from .errors import DataError
from .labels import Labels, total_charge, total_spin

H5_SUFFIXES = (".h5", ".hdf5")
FORMAT = "equinet-structures"
VERSION = 1
_PER_ATOM = {"numbers": (), "positions": (3,), "forces": (3,), "node_energy": ()}
_PER_FRAME = {"cell": (3, 3), "pbc": (3,), "energy": (), "stress": (3, 3), "dipole": (3,), "polarizability": (3, 3), "charge": (), "spin": ()}


def write_h5(path: str | Path, structures: Iterable[tuple[Atoms, Labels]], chunk_frames: int = 1024) -> int:
    """Write structures and labels to ``path``, streaming ``chunk_frames`` at a time.

    Returns the number of frames written.
    """
    with h5py.File(path, "w") as file:
        file.attrs["format"], file.attrs["version"] = FORMAT, VERSION
        for name, shape in {**_PER_ATOM, **_PER_FRAME}.items():
            dtype = {"numbers": np.int16, "pbc": bool}.get(name, np.float64)
            file.create_dataset(name, (0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=True)
        file.create_dataset("frame_start", data=np.zeros(1, dtype=np.int64), maxshape=(None,), chunks=True)
        buffer: list[tuple[Atoms, Labels]] = []
        count = 0
        for item in structures:
            buffer.append(item)
            if len(buffer) == chunk_frames:
                count += _append(file, buffer)
                buffer = []
        count += _append(file, buffer)
    return count


def _append(file: h5py.File, buffer: list[tuple[Atoms, Labels]]) -> int:
    if not buffer:
        return 0

    def label(labels: Labels, name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = getattr(labels, name)
        return np.full(shape, np.nan) if value is None else np.asarray(value, dtype=float).reshape(shape)

    columns = {
        "numbers": np.concatenate([atoms.numbers for atoms, _ in buffer]),
        "positions": np.concatenate([atoms.positions for atoms, _ in buffer]),
        "forces": np.concatenate([label(labels, "forces", (len(atoms), 3)) for atoms, labels in buffer]),
        "node_energy": np.concatenate([label(labels, "node_energy", (len(atoms),)) for atoms, labels in buffer]),
        "cell": np.stack([atoms.cell.array for atoms, _ in buffer]),
        "pbc": np.stack([atoms.pbc for atoms, _ in buffer]),
        "energy": np.array([label(labels, "energy", ()) for _, labels in buffer]),
        "stress": np.stack([label(labels, "stress", (3, 3)) for _, labels in buffer]),
        "dipole": np.stack([label(labels, "dipole", (3,)) for _, labels in buffer]),
        "polarizability": np.stack([label(labels, "polarizability", (3, 3)) for _, labels in buffer]),
        "charge": np.array([total_charge(atoms) for atoms, _ in buffer]),
        "spin": np.array([total_spin(atoms) for atoms, _ in buffer]),
    }
    for name, values in columns.items():
        dataset = file[name]
        start = dataset.shape[0]
        dataset.resize(start + len(values), axis=0)
        dataset[start:] = values
    starts = file["frame_start"]
    ends = starts[-1] + np.cumsum([len(atoms) for atoms, _ in buffer])
    starts.resize(starts.shape[0] + len(ends), axis=0)
    starts[-len(ends) :] = ends
    return len(buffer)


class H5Structures:
    """Random-access reader of a store written by :func:`write_h5`.

    ``store[i]`` is ``(atoms, labels)`` of frame i. Safe to use from several
    DataLoader workers: each process opens its own handle on first access.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        if not Path(path).is_file():
            raise DataError("file not found", self.path)
        try:
            with h5py.File(self.path, "r") as file:
                if file.attrs.get("format") != FORMAT:
                    raise DataError(f"is not an equinet store (no format='{FORMAT}' attribute)", self.path)
                self._length = file["frame_start"].shape[0] - 1
        except OSError as error:
            raise DataError(f"cannot open as HDF5 ({error})", self.path) from None
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self._length

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __getitem__(self, index: int) -> tuple[Atoms, Labels]:
        if not -self._length <= index < self._length:
            raise IndexError(f"frame {index} out of range for {self._length} frames in {self.path}")
        index %= self._length
        file = self._handle()
        start, stop = file["frame_start"][index : index + 2]
        atoms = Atoms(
            numbers=file["numbers"][start:stop],
            positions=file["positions"][start:stop],
            cell=file["cell"][index],
            pbc=file["pbc"][index],
        )
        if "charge" in file and file["charge"][index] != 0:
            atoms.info["charge"] = float(file["charge"][index])
        if "spin" in file and file["spin"][index] != 1:
            atoms.info["spin"] = float(file["spin"][index])
        values = {
            "energy": file["energy"][index],
            "stress": file["stress"][index],
            "forces": file["forces"][start:stop],
            "node_energy": file["node_energy"][start:stop],
            **{name: file[name][index] for name in ("dipole", "polarizability") if name in file},
        }
        present = {name: value for name, value in values.items() if not np.isnan(value).all()}
        if "energy" in present:
            present["energy"] = float(present["energy"])
        return atoms, Labels(**present)

    def __getstate__(self):  # h5py handles do not pickle; workers reopen
        return {**self.__dict__, "_file": None, "_pid": None}

    def elements(self) -> dict[int, int]:
        """Each atomic number in the store → the first frame that has it."""
        file = self._handle()
        numbers = file["numbers"][:]
        values, first_row = np.unique(numbers, return_index=True)
        frames = np.searchsorted(file["frame_start"][:], first_row, side="right") - 1
        return {int(z): int(frame) for z, frame in zip(values, frames)}
