"""Terms of element pairs built on their covalent radii, as mace-torch's newer foundation
models use them (MACE-MP-0b3, MPA-0, OMAT-0):

* distance transforms, which rescale an edge length by the covalent radii of its two atoms
  before the radial basis (Agnesi, Soft), so that the basis resolves short bonds of every
  element alike;
* the ZBL screened nuclear repulsion (Ziegler, Biersack and Littmark), which keeps atoms
  apart where the training data has no structures.

All take ``radius_sum [E]``: the sum of the covalent radii of each edge's two atoms (Å),
from :func:`pair_radius_sum`.
"""

from __future__ import annotations

import torch

from equinet.ops import polynomial_envelope

__all__ = ["COVALENT_RADII", "AgnesiTransform", "SoftTransform", "ZBLRepulsion", "pair_radius_sum"]

#: Covalent radii in Å by atomic number 0..118 (Cordero et al., Dalton Trans. 2008), as in
#: ``ase.data.covalent_radii`` (0.2 for Z = 0, 2.0 where none is known); copied because
#: potentials do not import ASE.
COVALENT_RADII = (
    0.20, 0.31, 0.28, 1.28, 0.96, 0.84, 0.76, 0.71, 0.66, 0.57, 0.58, 1.66, 1.41, 1.21, 1.11,
    1.07, 1.05, 1.02, 1.06, 2.03, 1.76, 1.70, 1.60, 1.53, 1.39, 1.39, 1.32, 1.26, 1.24, 1.32,
    1.22, 1.22, 1.20, 1.19, 1.20, 1.20, 1.16, 2.20, 1.95, 1.90, 1.75, 1.64, 1.54, 1.47, 1.46,
    1.42, 1.39, 1.45, 1.44, 1.42, 1.39, 1.39, 1.38, 1.39, 1.40, 2.44, 2.15, 2.07, 2.04, 2.03,
    2.01, 1.99, 1.98, 1.98, 1.96, 1.94, 1.92, 1.92, 1.89, 1.90, 1.87, 1.87, 1.75, 1.70, 1.62,
    1.51, 1.44, 1.41, 1.36, 1.36, 1.32, 1.45, 1.46, 1.48, 1.40, 1.50, 1.50, 2.60, 2.21, 2.15,
    2.06, 2.00, 1.96, 1.90, 1.87, 1.80, 1.69, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00,
    2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00, 2.00
)

COULOMB = 14.3996  # e^2 / (4 pi eps0) in eV Å, as mace-torch
BOHR = 0.529  # Å, as mace-torch
ZBL_COEFFICIENTS = ((0.1818, 3.2), (0.5099, 0.9423), (0.2802, 0.4028), (0.02817, 0.2016))  # (c_k, d_k)


def pair_radius_sum(radii: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """``radii [num_elements]`` (Å), ``species [n]``, ``edge_index [2, E]`` → ``[E]``: R_sender + R_receiver."""
    return radii[species[edge_index[0]]] + radii[species[edge_index[1]]]


class AgnesiTransform(torch.nn.Module):
    """Agnesi transform of ACEpotentials.jl (Witt et al., JCP 2023):
    ``r → 1 / (1 + a x^q / (1 + x^(q - p)))`` with ``x = r / r0`` and ``r0`` the mean
    covalent radius of the pair; it maps [0, ∞) onto (0, 1], decreasing.

    Shapes: ``r, radius_sum: [E]`` (Å) → ``[E]``.
    """

    def __init__(self, q: float = 0.9183, p: float = 4.5791, a: float = 1.0805):
        super().__init__()
        dtype = torch.get_default_dtype()
        for name, value in (("q", q), ("p", p), ("a", a)):
            self.register_buffer(name, torch.tensor(value, dtype=dtype))

    def forward(self, r: torch.Tensor, radius_sum: torch.Tensor) -> torch.Tensor:
        x = r / (0.5 * radius_sum)
        return 1.0 / (1.0 + self.a * x.pow(self.q) / (1.0 + x.pow(self.q - self.p)))


class SoftTransform(torch.nn.Module):
    """A smooth floor on edge lengths: ``r → p0 + (r - p0) s(r)`` with
    ``s = (1 + tanh(alpha (r - m))) / 2``, ``p0 = 3R/4``, ``p1 = 4R/3``, ``m = (p0 + p1) / 2``,
    ``alpha = alpha0 / (p1 - p0)`` and ``R`` the sum of the pair's covalent radii: about
    ``p0`` for short edges and ``r`` for long ones.

    Shapes: ``r, radius_sum: [E]`` (Å) → ``[E]`` (Å).
    """

    def __init__(self, alpha: float = 4.0):
        super().__init__()
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.get_default_dtype()))

    def forward(self, r: torch.Tensor, radius_sum: torch.Tensor) -> torch.Tensor:
        p0, p1 = 0.75 * radius_sum, (4.0 / 3.0) * radius_sum
        step = 0.5 * (1.0 + torch.tanh(self.alpha / (p1 - p0) * (r - 0.5 * (p0 + p1))))
        return p0 + (r - p0) * step


class ZBLRepulsion(torch.nn.Module):
    """ZBL screened nuclear repulsion per atom, switched off smoothly at the sum of the two
    covalent radii (polynomial envelope of exponent ``envelope_p``):

        E_i = factor * 1/2 sum_j  k Z_i Z_j / r_ij  phi(r_ij / a_ij)  f(r_ij / (R_i + R_j)),
        phi(x) = sum_k c_k exp(-d_k x),   a_ij = a_prefactor * 0.529 Å / (Z_i^a_exp + Z_j^a_exp).

    ``factor`` is 1 for the physical repulsion; a MACE model that mace-torch scaled with
    the rest of its learned energy carries that scale here.

    Args:
        atomic_numbers: Z of each element index.
        envelope_p: exponent of the envelope.
        factor: multiplies the energy.

    Shapes: ``r, radius_sum: [E]`` (Å), ``species [n]``, ``edge_index [2, E]`` → ``[n]`` (eV).
    """

    def __init__(self, atomic_numbers: list[int], envelope_p: int = 5, factor: float = 1.0):
        super().__init__()
        dtype = torch.get_default_dtype()
        self.envelope_p = envelope_p
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers, dtype=dtype))
        self.register_buffer("a_exp", torch.tensor(0.300, dtype=dtype))
        self.register_buffer("a_prefactor", torch.tensor(0.4543, dtype=dtype))
        self.register_buffer("factor", torch.tensor(factor, dtype=dtype))

    def forward(self, r, radius_sum, species, edge_index) -> torch.Tensor:
        z_sender, z_receiver = self.atomic_numbers[species[edge_index[0]]], self.atomic_numbers[species[edge_index[1]]]
        screening = self.a_prefactor * BOHR / (z_sender.pow(self.a_exp) + z_receiver.pow(self.a_exp))
        phi = sum(c * torch.exp(-d * r / screening) for c, d in ZBL_COEFFICIENTS)
        pair = COULOMB * z_sender * z_receiver / r * phi * polynomial_envelope(r / radius_sum, self.envelope_p)
        return self.factor * r.new_zeros(species.shape[0]).index_add(0, edge_index[1], 0.5 * pair)

    def extra_repr(self) -> str:
        return f"envelope_p={self.envelope_p}"
