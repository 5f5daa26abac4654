"""Subcommands of the ``equinet`` command line; each module registers one with ``register``."""

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0")
    return value


def read_structure(path: Path, index: int | str = -1):
    """Frame ``index`` of an ASE-readable file (default the last), as ``ase.Atoms`` (a list
    for a slice such as ``":"``); one line if it cannot be read."""
    import ase.io

    from equinet.datasets import DataError

    if not path.is_file():
        raise DataError("file not found", str(path))
    try:
        return ase.io.read(path, index)
    except Exception as error:  # ASE raises many types for unreadable files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"cannot read this structure ({reason})", str(path)) from None


def relaxed(atoms, fmax: float | None):
    """``atoms`` with their positions relaxed by BFGS to ``fmax`` (eV/Å), the cell fixed."""
    if fmax is not None:
        from ase.optimize import BFGS

        if not fmax > 0:
            raise ValueError(f"--relax {fmax}: give the largest force to stop at, in eV/Å (e.g. 1e-4)")
        BFGS(atoms, logfile=None).run(fmax=fmax, steps=10_000)
    return atoms
