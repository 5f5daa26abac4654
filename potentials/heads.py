"""Tensorial outputs of a potential: the dipole moment and the polarizability of a
structure, read out of the model's equivariant node features (MACE's
``AtomicDipolesMACE`` and ``AtomicDielectricMACE``, as heads shared by the families).

Each atom i gets, from its features (summed over the layers a model reads out):

* ``dipole``: a charge ``q_i`` (``0e``, e) and an atomic dipole ``p_i`` (``1o``, e·Å). The
  charges of each structure are shifted by one constant so that they add up to its total
  charge ``Q`` (``batch.total_charge``, default 0): ``q_i = q'_i + (Q - sum_j q'_j) / n``. Then

      mu = sum_i q_i r_i + sum_i p_i        [3], e·Å

  which does not change when a neutral structure is translated (it moves by ``Q t``
  otherwise), and ``sum_i d mu / d r_i = Q`` times the identity (the acoustic sum rule of
  the Born charges).
* ``polarizability``: an isotropic part ``a_i`` (``0e``) and a symmetric traceless part
  (``2e``), ``alpha_i = a_i I + S_i``; ``alpha = sum_i alpha_i`` ``[3, 3]`` is symmetric and
  rotates as ``R alpha R^T``. Unit: Å³, the polarizability volume ``alpha / (4 pi eps0)``
  (1 bohr³ = 0.148185 Å³; in e·Å²/V it is ``alpha / 14.3996``).

Periodic structures: ``mu`` is computed from the positions as given (not wrapped into the
cell). The dipole of a periodic cell is defined only up to a charge times a lattice vector
(wrapping an atom changes it by ``q_i L``), so it is meaningful for molecules, clusters and
unwrapped trajectories whose labels were computed from the same positions. The
polarizability is a sum of atomic terms and is the same either way.

Outputs are chosen by ``model.outputs`` (e.g. ``[energy, dipole]``); a model reads out of
its features the irreps the heads need (``1o`` for dipoles, ``2e`` for polarizabilities).
"""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3

from equinet.ops import Linear

from .blocks import gate

__all__ = ["OUTPUTS", "TENSORIAL_OUTPUTS", "TensorialHeads", "check_outputs", "head_irreps", "tensorial_heads"]

OUTPUTS = ("energy", "dipole", "polarizability")
TENSORIAL_OUTPUTS = ("dipole", "polarizability")
# What each atom contributes: a scalar and the tensorial part.
_PARTS = {"dipole": o3.Irreps("1x0e+1x1o"), "polarizability": o3.Irreps("1x0e+1x2e")}


def check_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
    """``outputs`` as a tuple, checked: known names, no repeats, at least one.

    Raises:
        ValueError: one line naming ``model.outputs``.
    """
    if isinstance(outputs, str) or not outputs:
        raise ValueError(f"model.outputs must be a list of one or more of {', '.join(OUTPUTS)}, got {outputs!r}")
    unknown = [name for name in outputs if name not in OUTPUTS]
    if unknown:
        raise ValueError(f"model.outputs: {unknown[0]!r} is not an output; choose from {', '.join(OUTPUTS)}")
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"model.outputs {list(outputs)} names an output twice")
    return tuple(outputs)


def head_irreps(outputs: Sequence[str], channels: int) -> o3.Irreps:
    """The non-scalar irreps, ``channels`` of each, that node features need for ``outputs``
    (``1o`` for a dipole, ``2e`` for a polarizability); empty for energy alone."""
    needed = [ir for name in outputs if name in _PARTS for _, ir in _PARTS[name] if ir.l > 0]
    return o3.Irreps([(channels, ir) for ir in needed])


class TensorialHeads(torch.nn.Module):
    """Per-atom charges, atomic dipoles and polarizabilities from node features, summed into
    the structure's dipole and polarizability (see the module docstring).

    Args:
        feature_irreps: the irreps of each feature tensor the model passes (one per layer it
            reads out; MACE all its layers, NequIP and eSCN their last).
        outputs: ``model.outputs``; the tensorial ones get a head.
        hidden: channels of the gated readout of the last features (0: a linear readout).

    Call: ``heads(features, pos [n, 3], batch_index [n], num_graphs, total_charge [B])`` →
    ``{"dipole" [B, 3], "charges" [n]}`` and/or ``{"polarizability" [B, 3, 3]}``.

    Raises:
        ValueError: (one line) the features lack an irrep an output needs.
    """

    def __init__(self, feature_irreps: Sequence, outputs: Sequence[str], hidden: int = 16):
        super().__init__()
        self.outputs = tuple(name for name in outputs if name in TENSORIAL_OUTPUTS)
        feature_irreps = [o3.Irreps(irreps) for irreps in feature_irreps]
        available = {ir for irreps in feature_irreps for _, ir in irreps}
        for name in self.outputs:
            missing = [str(ir) for _, ir in _PARTS[name] if ir not in available]
            if missing:
                raise ValueError(
                    f"model.outputs: {name} needs node features with {missing[0]}, which these settings do not give "
                    f"(features {feature_irreps[-1]}); raise the model's degree"
                )
        self.irreps_out = sum((_PARTS[name] for name in self.outputs), o3.Irreps(""))
        readouts = [Linear(irreps, self.irreps_out) for irreps in feature_irreps[:-1]]
        last = feature_irreps[-1]
        if hidden:
            activation = gate(o3.Irreps(f"{hidden}x0e") + head_irreps(self.outputs, hidden))
            last_readout = torch.nn.Sequential(Linear(last, activation.irreps_in), activation, Linear(activation.irreps_out, self.irreps_out))
        else:
            last_readout = Linear(last, self.irreps_out)
        self.readouts = torch.nn.ModuleList([*readouts, last_readout])
        # Symmetric traceless 3x3 matrices of the five 2e components: an intertwiner, so
        # alpha rotates as R alpha R^T (e3nn's 1o basis is x, y, z).
        self.register_buffer("traceless", o3.wigner_3j(1, 1, 2) * 5**0.5, persistent=False)

    def forward(self, features: Sequence[torch.Tensor], pos: torch.Tensor, batch_index: torch.Tensor, num_graphs: int, total_charge: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = sum(readout(x) for readout, x in zip(self.readouts, features))
        out, start = {}, 0
        for name in self.outputs:
            scalar, tensor = parts[:, start], parts[:, start + 1 : start + _PARTS[name].dim]
            start += _PARTS[name].dim
            if name == "dipole":
                charges = self._constrained(scalar, batch_index, num_graphs, total_charge)
                atomic = charges.unsqueeze(-1) * pos + tensor
                out["charges"] = charges
                out["dipole"] = atomic.new_zeros(num_graphs, 3).index_add(0, batch_index, atomic)
            else:
                eye = torch.eye(3, dtype=parts.dtype, device=parts.device)
                atomic = scalar.view(-1, 1, 1) * eye + torch.einsum("ijm,nm->nij", self.traceless.to(parts.dtype), tensor)
                out["polarizability"] = atomic.new_zeros(num_graphs, 3, 3).index_add(0, batch_index, atomic)
        return out

    @staticmethod
    def _constrained(charges: torch.Tensor, batch_index: torch.Tensor, num_graphs: int, total_charge: torch.Tensor) -> torch.Tensor:
        """``charges`` [n] shifted per structure so that they add up to ``total_charge`` [B]."""
        ones = charges.new_ones(charges.shape[0])
        count = charges.new_zeros(num_graphs).index_add(0, batch_index, ones)
        excess = charges.new_zeros(num_graphs).index_add(0, batch_index, charges) - total_charge.to(charges.dtype)
        return charges - (excess / count)[batch_index]


def tensorial_heads(outputs: Sequence[str], feature_irreps: Sequence, hidden: int = 16) -> TensorialHeads | None:
    """The heads of the tensorial ``outputs`` reading ``feature_irreps``; ``None`` for energy alone."""
    if not any(name in TENSORIAL_OUTPUTS for name in outputs):
        return None
    return TensorialHeads(feature_irreps, outputs, hidden)
