"""The run folder of ``equinet train``: what it may hold, and replacing it safely.

A folder becomes a run folder when a run starts in it: equinet writes the marker file
:data:`MARKER` first. ``--overwrite`` replaces only a marked folder, and there only the
files in :data:`RUN_FILES`; anything else in it (a user's notes, ``equinet md`` output)
stays. A folder that holds the run's config or data, or files of the user's, is never
replaced, and the old run is removed only once the new one has been checked and is about to
start (:func:`clear_run`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from equinet.config import ConfigError

__all__ = ["MARKER", "RUN_FILES", "check_run_folder", "clear_run", "mark_run"]

MARKER = ".equinet-run"
# Everything `equinet train` writes into its folder (CSVLogger and TensorBoard included).
RUN_FILES = (
    MARKER, "config.yaml", "metrics.csv", "hparams.yaml", "tensorboard", "last.ckpt", "best.ckpt", "model.pt",
    "test.extxyz", "test_metrics.json", "parity_energy.png", "parity_forces.png", "parity_stress.png",
)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def check_run_folder(output: Path, inputs: Iterable[Path], resume: bool, overwrite: bool) -> Path | None:
    """Check that a run may start (or, with ``resume``, go on) in ``output``, whose config and
    data are ``inputs``. Deletes nothing. Returns the checkpoint to resume from, if any.

    Raises:
        ConfigError: in one line, saying what the folder holds and what to do.
    """
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} is a file; give a folder for the run")
    marked = (output / MARKER).is_file()
    last = output / "last.ckpt"
    if resume:
        if last.is_file():
            return last
        if marked:
            raise ConfigError(f"--resume: {output} holds a run that stopped before its first checkpoint; start it again with --overwrite")
        raise ConfigError(f"--resume: {last} does not exist; start a new run without --resume")
    for source in inputs:
        if _inside(source, output):
            raise ConfigError(f"output folder {output} holds the run's input {source}; choose an output folder of its own")
    entries = sorted(path.name for path in output.iterdir()) if output.is_dir() else []
    if not entries:
        return None
    if not marked:
        raise ConfigError(
            f"output folder {output} holds files that equinet train did not write ({entries[0]}, ...); "
            "choose a new or empty folder (--set output=...)"
        )
    if overwrite:
        return None
    if last.is_file():
        raise ConfigError(f"output folder {output} already holds a run; pass --resume to continue it or --overwrite to start over")
    raise ConfigError(f"output folder {output} holds a run that stopped before its first checkpoint; pass --overwrite to start over")


def clear_run(output: Path) -> list[str]:
    """Delete the files of the earlier run in the marked folder ``output`` (only those of
    :data:`RUN_FILES`); returns the names of the entries left in place."""
    if not (output / MARKER).is_file():
        return []
    for name in RUN_FILES:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return sorted(path.name for path in output.iterdir())


def mark_run(output: Path) -> None:
    """Create ``output`` (if needed) and mark it as a run folder."""
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("a run folder of equinet train: --overwrite replaces the files it wrote here, nothing else\n")
