"""Vibrational spectra from MD trajectories: the IR spectrum from the dipole autocorrelation.

    wavenumbers, intensity = ir_spectrum(dipoles, timestep_fs=2.0)   # [T, 3] e·Å, fs between frames

The IR absorption (classical, up to a constant and the quantum correction factor) is the
Fourier transform of the autocorrelation of the dipole's time derivative,

    I(w) ∝ ∫ <mu'(0) · mu'(t)> e^{-iwt} dt = w² ∫ <mu(0) · mu(t)> e^{-iwt} dt,

taken here with the derivative by central differences, the autocorrelation by FFT (zero
padded, unbiased over the lags), and a Hann window over the lags to damp the truncation
ripples. The frames must be equally spaced in time: run ``equinet md`` with a model that
predicts dipoles (``model.outputs: [energy, dipole]``) in NVE, and sample often enough
(``timestep x interval`` ≤ 4 fs resolves 4000 cm⁻¹).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["dipole_autocorrelation", "ir_spectrum", "plot_ir", "read_dipoles"]

SPEED_OF_LIGHT_CM_PER_FS = 2.99792458e-5  # cm/fs


def dipole_autocorrelation(dipoles: np.ndarray) -> np.ndarray:
    """``C(k) = <x(0) · x(k)>`` ``[T]`` of ``dipoles`` ``[T, 3]`` (or any ``[T, d]``),
    averaged over the ``T - k`` time origins of each lag ``k``."""
    values = np.asarray(dipoles, dtype=float)
    steps = values.shape[0]
    size = 1 << int(np.ceil(np.log2(2 * steps)))  # zero padding: no wrap-around
    spectrum = np.fft.rfft(values, n=size, axis=0)
    correlation = np.fft.irfft((spectrum * spectrum.conj()).real, n=size, axis=0)[:steps].sum(axis=1)
    return correlation / np.arange(steps, 0, -1)


def ir_spectrum(dipoles: np.ndarray, timestep_fs: float, max_lag_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The IR spectrum of a dipole trajectory ``[T, 3]`` (e·Å) sampled every ``timestep_fs``:
    ``(wavenumbers [K] in cm⁻¹, intensity [K])``, the intensity scaled to a maximum of 1.

    ``max_lag_fraction``: the autocorrelation is used up to this fraction of the trajectory
    (longer lags average over few time origins and only add noise).
    """
    dipoles = np.asarray(dipoles, dtype=float)
    if dipoles.ndim != 2 or dipoles.shape[1] != 3:
        raise ValueError(f"dipoles must be [T, 3], got shape {list(dipoles.shape)}")
    if dipoles.shape[0] < 8:
        raise ValueError(f"an IR spectrum needs at least 8 frames with dipoles, got {dipoles.shape[0]}")
    if not timestep_fs > 0:
        raise ValueError(f"the time between frames must be positive, got {timestep_fs} fs")
    derivative = np.gradient(dipoles, timestep_fs, axis=0)  # e·Å/fs
    lags = max(4, int(max_lag_fraction * dipoles.shape[0]))
    correlation = dipole_autocorrelation(derivative)[:lags]
    windowed = correlation * np.hanning(2 * lags + 1)[lags:-1]  # from 1 at lag 0 towards 0
    intensity = 2 * np.fft.rfft(windowed, n=4 * lags).real - windowed[0]  # cosine transform of the even extension
    frequencies = np.fft.rfftfreq(4 * lags, d=timestep_fs)  # 1/fs
    wavenumbers = frequencies / SPEED_OF_LIGHT_CM_PER_FS
    intensity = np.clip(intensity, 0.0, None)
    peak = intensity.max()
    return wavenumbers, intensity / peak if peak > 0 else intensity


def read_dipoles(path: str | Path, index: str = ":") -> tuple[np.ndarray, float | None]:
    """The dipole of every frame of a trajectory file ``[T, 3]`` (e·Å), as ``equinet md``
    writes it, and the time between frames in fs from their ``time_fs`` (``None`` without it).

    Raises:
        DataError: (one line) a frame without a dipole, or frames not equally spaced in time.
    """
    from equinet.datasets import DataError
    from equinet.datasets.read import iter_frames

    dipoles, times = [], []
    for frame, atoms in enumerate(iter_frames(path, index)):
        times.append(atoms.info.get("time_fs"))
        results = atoms.calc.results if atoms.calc is not None else {}
        value = results.get("dipole", atoms.info.get("dipole"))
        if value is None or np.size(value) != 3:
            raise DataError("has no dipole (3 values); write the trajectory with equinet md and a model with model.outputs [energy, dipole]", str(path), frame)
        dipoles.append(np.asarray(value, dtype=float).reshape(3))
    if not dipoles:
        raise DataError("contains no frames", str(path))
    if len(times) < 2 or any(time is None for time in times):
        return np.array(dipoles), None
    steps = np.diff(np.asarray(times, dtype=float))
    if not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9) or not steps[0] > 0:
        frame = int(np.flatnonzero(~np.isclose(steps, steps[0], rtol=1e-6, atol=1e-9))[0]) + 1 if steps[0] > 0 else 1
        raise DataError(f"time_fs is not equally spaced (frames {steps[0]:g} fs apart before this one); give one MD run", str(path), frame)
    return np.array(dipoles), float(steps[0])


def plot_ir(wavenumbers: np.ndarray, intensity: np.ndarray, path: str | Path, max_wavenumber: float = 4000.0, title: str = "") -> Path:
    """The spectrum as a PNG, up to ``max_wavenumber`` (cm⁻¹)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = wavenumbers <= max_wavenumber
    figure, axes = plt.subplots(figsize=(6, 3.5), layout="constrained")
    axes.plot(wavenumbers[keep], intensity[keep], linewidth=1.0)
    axes.set_xlabel("wavenumber (cm⁻¹)")
    axes.set_ylabel("IR intensity (arb. units)")
    axes.set_xlim(0, max_wavenumber)
    axes.set_title(title, fontsize=9)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
