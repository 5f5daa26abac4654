"""Conformance checks for equivariant operators and interatomic potentials.

Every operator and model in equinet passes these, and users can run them on their own:

Operators (any callable on tensors with declared irreps):
    :func:`assert_equivariant`, :func:`assert_float32_matches_float64`.

Potentials (any ASE calculator attached to ``atoms`` — an ``equinet.Calculator``,
or a reference such as ASE's EMT):
    :func:`assert_forces_match_finite_differences`, :func:`assert_stress_matches_finite_strain`,
    :func:`assert_rotation_equivariant`, :func:`assert_translation_invariant`,
    :func:`assert_permutation_invariant`, :func:`assert_supercell_extensive`,
    :func:`assert_calculators_agree`.

Each check returns the error it measured and raises ``AssertionError`` naming that error
and the tolerance when it is too large.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from e3nn import o3

from equinet.potentials.registry import default_dtype

__all__ = [
    "assert_calculators_agree",
    "assert_equivariant",
    "assert_float32_matches_float64",
    "assert_forces_match_finite_differences",
    "assert_permutation_invariant",
    "assert_rotation_equivariant",
    "assert_stress_matches_finite_strain",
    "assert_supercell_extensive",
    "assert_translation_invariant",
    "random_orthogonal_matrix",
]


def _check(name: str, error: float, tolerance: float, what: str = "max abs error") -> float:
    if not error <= tolerance:  # also catches NaN
        raise AssertionError(f"{name}: {what} {error:.3e} exceeds tolerance {tolerance:.1e}")
    return error


def random_orthogonal_matrix(reflection: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random rotation ``[3, 3]`` (float64), times the inversion -I when ``reflection``."""
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=generator))
    q = q * torch.sign(torch.diagonal(r))  # Haar-uniform
    if torch.det(q) < 0:
        q = -q
    return -q if reflection else q


# ----------------------------------------------------------------------------- operators


def assert_equivariant(
    fn: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    irreps_in: Sequence[o3.Irreps | str | None],
    irreps_out: o3.Irreps | str,
    atol: float = 1e-10,
    seed: int = 0,
) -> float:
    """Check ``fn(D_in(g) x) == D_out(g) fn(x)`` for a random rotation and a random reflection.

    Args:
        fn: the operator, called as ``fn(*inputs)``, returning ``[..., irreps_out.dim]``.
        inputs: its arguments; floating inputs should be float64 for an exactness test.
        irreps_in: irreps of each input (last dimension), ``None`` for inputs that do not
            transform (indices, invariant weights).
        irreps_out: irreps of the output.
        atol: tolerance on ``max|fn(Dx) - D fn(x)| / max(1, max|fn(x)|)``.

    Returns:
        The largest relative error over the two group elements.
    """
    if len(irreps_in) != len(inputs):
        raise ValueError(f"irreps_in has {len(irreps_in)} entries but there are {len(inputs)} inputs")
    irreps_in = [None if irreps is None else o3.Irreps(irreps) for irreps in irreps_in]
    irreps_out = o3.Irreps(irreps_out)
    generator = torch.Generator().manual_seed(seed)
    expected = fn(*inputs)
    scale = max(1.0, expected.detach().abs().max().item())
    worst = 0.0
    for reflection in (False, True):
        rotation = random_orthogonal_matrix(reflection, generator)
        with default_dtype(torch.float64):  # e3nn's Wigner-D generators follow it
            d_in = [None if irreps is None else irreps.D_from_matrix(rotation) for irreps in irreps_in]
            d_out = irreps_out.D_from_matrix(rotation)
        rotated = [x if d is None else x @ d.to(x).T for x, d in zip(inputs, d_in)]
        error = (fn(*rotated) - expected @ d_out.to(expected).T).detach().abs().max().item() / scale
        worst = max(worst, error)
    return _check("equivariance", worst, atol, "max relative error")


def assert_float32_matches_float64(module: torch.nn.Module, inputs: Sequence[torch.Tensor], rtol: float = 1e-4) -> float:
    """Run copies of ``module`` in float32 and float64 on the same inputs and compare.

    Returns ``max|out32 - out64| / max|out64|``.
    """

    def run(dtype):
        cast = [x.to(dtype) if x.is_floating_point() else x for x in inputs]
        return copy.deepcopy(module).to(dtype)(*cast).detach()

    out64, out32 = run(torch.float64), run(torch.float32)
    error = (out32.double() - out64).abs().max().item() / max(out64.abs().max().item(), 1e-300)
    return _check("float32 vs float64", error, rtol, "max relative error")


# ----------------------------------------------------------------------------- potentials


def _with_calculator(atoms: Atoms, source: Atoms) -> Atoms:
    atoms.calc = source.calc
    return atoms


def _results(atoms: Atoms, stress: bool) -> dict[str, np.ndarray]:
    results = {"energy": np.array(atoms.get_potential_energy()), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress(voigt=False)
    return results


def _is_periodic(atoms: Atoms) -> bool:
    return bool(atoms.pbc.all()) and atoms.cell.rank == 3


def assert_forces_match_finite_differences(atoms: Atoms, eps: float = 1e-4, atol: float = 1e-4) -> float:
    """Forces equal −dE/dx by central finite differences with step ``eps`` (Å); ``atol`` in eV/Å."""
    numerical = calculate_numerical_forces(atoms, eps)
    error = np.abs(atoms.get_forces() - numerical).max()
    return _check("forces vs -dE/dx (finite differences)", error, atol)


def assert_stress_matches_finite_strain(atoms: Atoms, eps: float = 1e-5, atol: float = 1e-5) -> float:
    """Stress equals (1/V) dE/d(strain) by central finite strain ``eps``; ``atol`` in eV/Å³."""
    if not _is_periodic(atoms):
        raise ValueError("stress needs a periodic cell (atoms.pbc all True and a full-rank cell)")
    numerical = calculate_numerical_stress(atoms, eps, voigt=False, force_consistent=False)
    error = np.abs(atoms.get_stress(voigt=False) - numerical).max()
    return _check("stress vs finite strain", error, atol)


def assert_rotation_equivariant(atoms: Atoms, atol: float = 1e-6, reflection: bool = True, seed: int = 0) -> float:
    """Rotating (and reflecting) the structure leaves E unchanged and rotates F and the stress."""
    stress = _is_periodic(atoms)
    reference = _results(atoms, stress)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for mirror in (False, True) if reflection else (False,):
        q = random_orthogonal_matrix(mirror, generator).numpy()
        moved = _with_calculator(atoms.copy(), atoms)
        moved.set_positions(atoms.positions @ q.T)
        moved.set_cell(atoms.cell.array @ q.T)
        result = _results(moved, stress)
        errors = [
            abs(result["energy"] - reference["energy"]),
            np.abs(result["forces"] - reference["forces"] @ q.T).max(),
        ]
        if stress:
            errors.append(np.abs(result["stress"] - q @ reference["stress"] @ q.T).max())
        worst = max(worst, *errors)
    return _check("rotation equivariance", worst, atol)


def assert_translation_invariant(atoms: Atoms, atol: float = 1e-6, seed: int = 0) -> float:
    """Translating every atom by one random vector changes neither energy nor forces."""
    reference = _results(atoms, stress=False)
    moved = _with_calculator(atoms.copy(), atoms)
    moved.translate(np.random.default_rng(seed).normal(size=3) * 3.0)
    result = _results(moved, stress=False)
    error = max(abs(result["energy"] - reference["energy"]), np.abs(result["forces"] - reference["forces"]).max())
    return _check("translation invariance", error, atol)


def assert_permutation_invariant(atoms: Atoms, atol: float = 1e-6, seed: int = 0) -> float:
    """Reordering the atoms leaves the energy unchanged and reorders the forces."""
    reference = _results(atoms, stress=False)
    order = np.random.default_rng(seed).permutation(len(atoms))
    if (order == np.arange(len(atoms))).all():
        order = order[::-1].copy()  # never test the identity
    moved = _with_calculator(atoms[order], atoms)
    result = _results(moved, stress=False)
    error = max(abs(result["energy"] - reference["energy"]), np.abs(result["forces"] - reference["forces"][order]).max())
    return _check("permutation invariance", error, atol)


def assert_supercell_extensive(atoms: Atoms, repeat: tuple[int, int, int] = (2, 1, 1), rtol: float = 1e-6) -> float:
    """A periodic supercell has n times the energy, the same forces per image and the same stress.

    Returns the largest error relative to ``max(1, |value|)`` of energy per cell, forces and stress.
    """
    if not _is_periodic(atoms):
        raise ValueError("supercell extensivity needs a periodic cell (atoms.pbc all True and a full-rank cell)")
    reference = _results(atoms, stress=True)
    copies = int(np.prod(repeat))
    big = _with_calculator(atoms.repeat(repeat), atoms)
    result = _results(big, stress=True)
    # ase.Atoms.repeat stacks whole copies of the cell, atom order kept within each copy.
    errors = [
        abs(result["energy"] / copies - reference["energy"]) / max(1.0, abs(reference["energy"])),
        np.abs(result["forces"] - np.tile(reference["forces"], (copies, 1))).max() / max(1.0, np.abs(reference["forces"]).max()),
        np.abs(result["stress"] - reference["stress"]).max() / max(1.0, np.abs(reference["stress"]).max()),
    ]
    return _check(f"supercell {repeat} extensivity", max(errors), rtol, "max relative error")


def assert_calculators_agree(atoms: Atoms, other, rtol: float = 1e-4) -> float:
    """``atoms.calc`` and ``other`` (e.g. a float32 and a float64 model) give the same results.

    Returns the largest error relative to the scale of each property (energy, forces and,
    for periodic cells, stress).
    """
    stress = _is_periodic(atoms)
    reference = _results(atoms, stress)
    moved = atoms.copy()
    moved.calc = other
    result = _results(moved, stress)
    errors = [
        np.abs(result[key] - reference[key]).max() / max(np.abs(reference[key]).max(), 1e-12) for key in reference
    ]
    return _check("calculator agreement", max(errors), rtol, "max relative error")
