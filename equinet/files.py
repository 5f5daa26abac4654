"""Output files that cannot cost a user data: checked before any work starts, never the
same file as an input, and written whole or not at all.

    path = output_file(args.output, "--output", inputs=[args.structure])
    with atomic_write(path) as partial:      # a hidden file beside ``path``
        write_everything(partial)            # renamed to ``path`` only when this returns

Every mistake is a :class:`UsageError`: one line naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["UsageError", "ase_format", "atomic_write", "output_file", "same_file"]


class UsageError(ValueError):
    """A mistake in a command's arguments (one line)."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` are one file (the same path, a link to it or a hard link)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def output_file(path: str | Path, option: str, inputs: Iterable[str | Path] = ()) -> Path:
    """Check that ``path`` (given as ``option``) can be written as a file, and create its
    missing parent folders.

    Raises:
        UsageError: ``path`` is a folder, is one of ``inputs``, or lies under a file.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    for source in inputs:
        if same_file(path, source):
            raise UsageError(f"{option} {path}: is the input file {source}; write the output to another file")
    parent = path.parent
    blocking = next((folder for folder in (parent, *parent.parents) if folder.exists() and not folder.is_dir()), None)
    if blocking is not None:
        raise UsageError(f"{option} {path}: {blocking} is a file, not a folder; choose another output path")
    parent.mkdir(parents=True, exist_ok=True)
    return path


def ase_format(path: Path, option: str) -> str:
    """The ASE format that ``path`` is written in, known from its name.

    Raises:
        UsageError: no format ASE can write goes by that name.
    """
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    try:
        name = filetype(path, read=False)
    except UnknownFileTypeError:
        name = None
    if name not in ioformats or not ioformats[name].can_write:
        raise UsageError(f"{option} {path}: cannot tell a format to write from its name; use .extxyz, .traj or another ASE format")
    return name


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so formats are still known by
    name) and move it onto ``path`` once the block ends without an error; after an error
    or an interruption, ``path`` is as it was and the temporary file is gone."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
