"""``equinet spectrum ir TRAJECTORY -o ir.png``: the IR spectrum of an MD trajectory from its
dipole autocorrelation (:mod:`equinet.spectra`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    parser = commands.add_parser("spectrum", help="IR spectrum of an MD trajectory with dipoles (equinet md with a dipole model)")
    parser.add_argument("kind", choices=("ir",), help="ir: the dipole autocorrelation's Fourier transform")
    parser.add_argument("trajectory", type=Path, help="frames with dipoles, equally spaced in time (equinet md writes them)")
    parser.add_argument("-o", "--output", type=Path, default=Path("ir.png"), help="the plot (default ir.png); the spectrum goes beside it as .csv")
    parser.add_argument("--dt", type=float, default=None, metavar="FS",
                        help="fs between frames (default: from the frames' time_fs, which equinet md writes)")  # fmt: skip
    parser.add_argument("--max-wavenumber", type=float, default=4000.0, help="cm⁻¹, the plot's range (default 4000)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from equinet.files import UsageError, atomic_write
    from equinet.spectra import SPEED_OF_LIGHT_CM_PER_FS, ir_spectrum, plot_ir, read_dipoles

    dipoles, spacing = read_dipoles(args.trajectory)
    dt = args.dt if args.dt is not None else spacing
    if dt is None:
        raise UsageError(f"{args.trajectory}: its frames carry no time_fs; give the time between frames with --dt FS (md's --timestep x --interval)")
    wavenumbers, intensity = ir_spectrum(dipoles, dt)
    nyquist = 0.5 / dt / SPEED_OF_LIGHT_CM_PER_FS
    csv = args.output.with_suffix(".csv")
    with atomic_write(csv) as partial:
        np.savetxt(partial, np.column_stack([wavenumbers, intensity]), delimiter=",", header="wavenumber_cm-1,intensity", comments="")
    with atomic_write(args.output) as partial:
        plot_ir(wavenumbers, intensity, partial, min(args.max_wavenumber, nyquist), title=f"{args.trajectory.name}: {len(dipoles)} frames, {dt:g} fs apart")
    print(f"IR spectrum of {len(dipoles)} frames {dt:g} fs apart (resolution {wavenumbers[1]:.1f} cm⁻¹, up to {nyquist:.0f} cm⁻¹): {args.output}, {csv}")
    return 0
