"""Second derivatives of a potential's energy, by autograd: the Hessian, Γ-point phonon
frequencies and the elastic tensor; and the Born effective charges, the derivatives of its
dipole. No finite differences: each row of a second derivative is one backward pass through
the graph of the first, so memory stays that of a force evaluation with its graph kept.

    H = hessian(model, atoms)                 # [3n, 3n] eV/Å², atom-major (x0 y0 z0 x1 ...)
    frequencies = gamma_frequencies(H, atoms.get_masses())     # [3n] THz, imaginary < 0
    C = elastic_tensor(model, atoms)          # [6, 6] GPa, Voigt order xx yy zz yz xz xy
    Z = born_charges(model, atoms)            # [n, 3, 3] e, Z[i, a, b] = d mu_a / d r_ib
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms, units
from torch_geometric.data import Batch

from equinet.datasets import atoms_to_graph
from equinet.potentials import Potential

__all__ = ["born_charges", "elastic_tensor", "gamma_frequencies", "hessian", "require_energy"]

EV_PER_A3_IN_GPA = 1.0 / units.GPa
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _outputs_and_inputs(model: Potential, atoms: Atoms):
    """The outputs of ``model`` for ``atoms`` (:meth:`~equinet.potentials.Potential.deformed_outputs`)
    and the leaves they depend on: positions ``[n, 3]`` and strain ``[1, 3, 3]``."""
    dtype = model.atomic_energies.dtype
    device = model.atomic_energies.device
    batch = Batch.from_data_list([atoms_to_graph(atoms, model.cutoff, dtype=dtype)]).to(device)
    pos = batch.pos.to(dtype).detach().requires_grad_(True)
    strain = torch.zeros(1, 3, 3, dtype=dtype, device=device, requires_grad=True)
    return model.deformed_outputs(batch, pos, strain), pos, strain


def require_energy(model: Potential) -> None:
    """Raises a one-line ValueError if ``model`` predicts no energy (``model.outputs``)."""
    if "energy" not in model.outputs:
        raise ValueError(f"the model predicts {', '.join(model.outputs)}, not energies (model.outputs), so it has no energy derivatives")


def _energy_and_inputs(model: Potential, atoms: Atoms):
    """The energy of ``atoms`` and the leaves it depends on: positions ``[n, 3]`` and strain ``[1, 3, 3]``."""
    require_energy(model)
    out, pos, strain = _outputs_and_inputs(model, atoms)
    energy = out["energy"]
    if not torch.isfinite(energy).all():
        raise ValueError("the model's energy of this structure is not finite, so neither are its derivatives")
    return energy.sum(), pos, strain


def _jacobian_rows(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``d outputs[k] / d inputs`` for every k of the 1-D ``outputs``: ``[len(outputs), *inputs.shape]``."""
    rows = []
    for seed in torch.eye(len(outputs), dtype=outputs.dtype, device=outputs.device):
        (row,) = torch.autograd.grad(outputs, inputs, seed, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(inputs) if row is None else row)
    return torch.stack(rows)


def hessian(model: Potential, atoms: Atoms) -> np.ndarray:
    """``d²E / dr_a dr_b`` of ``atoms`` ``[3n, 3n]`` in eV/Å², symmetric; rows are atom-major
    (x, y, z of atom 0, then atom 1, ...)."""
    model.eval()
    energy, pos, _ = _energy_and_inputs(model, atoms)
    (gradient,) = torch.autograd.grad(energy, pos, create_graph=True)
    rows = _jacobian_rows(gradient.reshape(-1), pos)
    matrix = rows.reshape(3 * len(atoms), 3 * len(atoms)).detach().cpu().double().numpy()
    return 0.5 * (matrix + matrix.T)  # exact up to rounding; symmetrised


def born_charges(model: Potential, atoms: Atoms) -> np.ndarray:
    """The Born effective charges ``Z[i, a, b] = d mu_a / d r_ib`` ``[n, 3, 3]`` in e of a
    model that predicts dipoles (``model.outputs`` with ``dipole``; see
    :mod:`equinet.potentials.heads`). Their sum over atoms is the total charge times the
    identity (zero for a neutral structure: the acoustic sum rule)."""
    if "dipole" not in model.outputs:
        raise ValueError(f"Born charges need a model that predicts dipoles; this one predicts {', '.join(model.outputs)} (model.outputs)")
    model.eval()
    out, pos, _ = _outputs_and_inputs(model, atoms)
    dipole = out["dipole"].reshape(-1)
    if not torch.isfinite(dipole).all():
        raise ValueError("the model's dipole of this structure is not finite, so neither are its derivatives")
    rows = _jacobian_rows(dipole, pos)  # [3, n, 3]: d mu_a / d r_ib
    return rows.permute(1, 0, 2).detach().cpu().double().numpy()


def gamma_frequencies(hessian_matrix: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Γ-point phonon frequencies ``[3n]`` in THz, ascending, of the Hessian (eV/Å²) of a
    cell with ``masses`` (amu); imaginary modes (unstable directions) are negative."""
    inverse_sqrt = 1.0 / np.sqrt(np.repeat(np.asarray(masses, dtype=float), 3))
    dynamical = hessian_matrix * inverse_sqrt[:, None] * inverse_sqrt[None, :]  # eV/(Å² amu)
    eigenvalues = np.linalg.eigvalsh(0.5 * (dynamical + dynamical.T))
    angular = np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * np.sqrt(units._e / units._amu) * 1e10  # rad/s
    return angular / (2 * np.pi * 1e12)


def elastic_tensor(model: Potential, atoms: Atoms, relaxed_ions: bool = True) -> np.ndarray:
    """The elastic tensor ``C [6, 6]`` in GPa (Voigt order xx, yy, zz, yz, xz, xy; ASE's
    stress sign) of a periodic cell at its current positions.

    ``C = (1/V) d²E/dε dε`` with the atoms moving with the strain (clamped ions); with
    ``relaxed_ions`` the inner relaxation is subtracted, ``(1/V) Λᵀ H⁺ Λ``, where ``Λ`` is
    ``d²E / dr dε`` and ``H⁺`` the pseudo-inverse of the Hessian without the three rigid
    translations. The atoms should be at a minimum of the energy for the given cell.
    """
    if not atoms.pbc.all():
        raise ValueError("the elastic tensor needs a periodic cell (atoms.pbc all True)")
    model.eval()
    energy, pos, strain = _energy_and_inputs(model, atoms)
    (gradient,) = torch.autograd.grad(energy, strain, create_graph=True)
    gradient = gradient.reshape(-1)  # dE/dε_ij, [9]
    strain_rows = _jacobian_rows(gradient, strain).reshape(3, 3, 3, 3).detach().cpu().double().numpy()
    volume = abs(np.linalg.det(atoms.cell.array))
    clamped = np.array([[strain_rows[i, j, k, l] for k, l in VOIGT] for i, j in VOIGT]) / volume
    if not relaxed_ions or len(atoms) == 1:  # one atom per cell has no inner relaxation
        return clamped * EV_PER_A3_IN_GPA
    mixed = _jacobian_rows(gradient, pos).reshape(3, 3, 3 * len(atoms)).detach().cpu().double().numpy()
    coupling = np.stack([mixed[i, j] for i, j in VOIGT], axis=1)  # Λ [3n, 6], eV/Å
    hessian_matrix = hessian(model, atoms)
    translations = np.kron(np.ones((len(atoms), 1)), np.eye(3)) / np.sqrt(len(atoms))  # [3n, 3]
    projector = np.eye(3 * len(atoms)) - translations @ translations.T
    inverse = np.linalg.pinv(projector @ hessian_matrix @ projector, rcond=1e-10)
    relaxation = coupling.T @ inverse @ coupling / volume
    return (clamped - relaxation) * EV_PER_A3_IN_GPA
