"""The many-body product of MACE: a symmetric contraction of atomic features with
element-dependent weights (Batatia et al., NeurIPS 2022).

For each channel c and each output irrep L (components M),

    B[n, c, M] = sum_{nu=1..N} sum_k w_nu[z_n, k, c] sum_{i1..i_nu} U_nu[M, i1, .., i_nu, k] A[n, c, i1] ... A[n, c, i_nu]

where ``A[n, c, :]`` stacks the irreps of channel c (e.g. 0e+1o+2e+3o, 16 components)
and ``U_nu[..., k]`` is an orthonormal basis of the equivariant maps from the
*symmetric* nu-fold tensor power of A to L (generalized Clebsch–Gordan coefficients).

The basis comes from :mod:`equinet.ops.coupling_basis`. The contraction runs Horner-style,
highest order first, as MACE does, with the atoms grouped by element and each element's
weights folded into U once per call, so the cost per atom is independent of the number of
basis elements. Only the elements present are folded: a foundation model knows 89 elements,
a structure holds a few.
"""

from __future__ import annotations

import torch
from e3nn import o3

from .coupling_basis import ContractionBases, symmetric_coupling_basis
from .kernels import build, constants_only

__all__ = ["SymmetricContraction", "WEIGHT_SCALE"]

# The weights are stored divided by this and multiplied back in use: the same initial
# product, but Adam's steps (about lr per parameter) move it 3x faster, as mace-torch's
# redundant coupling paths do (BENCHMARKS.md, "Design notes moved out of the code").
WEIGHT_SCALE = 3.0


class SymmetricContraction(torch.nn.Module):
    """MACE's element-dependent symmetric contraction, orders 1..``correlation``.

    Args:
        irreps_in: ``C x (ir_1 + ir_2 + ...)``: the same multiplicity C for every irrep
            (e.g. ``64x0e+64x1o+64x2e+64x3o``).
        irreps_out: ``C x (L_1 + ...)`` with the same C (e.g. ``64x0e+64x1o``).
        correlation: highest order N of the product (MACE uses 3).
        num_elements: number of elements; every element has its own weights.
        backend: ``"torch"`` (this class's code, the reference) or ``"cueq"`` (cuEquivariance,
            :class:`~equinet.ops.kernels.cueq.CueqSymmetricContraction`: the same weights and
            bases, its kernels; ``pip install 'equinet[cueq]'``). A state dict moves between
            the backends both ways.

    Shapes: ``x: [n, irreps_in.dim]``, ``species: [n]`` (0..num_elements-1) →
    ``[n, irreps_out.dim]``.

    The weights ``weight_{N}_{L}`` (times ``WEIGHT_SCALE``) have shape ``[num_elements, K, C]`` and the
    (buffered) bases ``U_{N}_{L}`` are stored with the model, so a loaded model never
    depends on how the basis was computed.
    """

    family = "symmetric_contraction"  # in the backend registry, equinet.ops.kernels
    #: The elements (indices) to fold and run whatever the species, so that no size depends
    #: on them (set on the copy of a model that is traced for export); ``None``: those present.
    traced_elements: list[int] | None = None

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int, *, backend: str = "torch"):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        channels = {mul for mul, _ in self.irreps_in} | {mul for mul, _ in self.irreps_out}
        if len(channels) != 1 or len(self.irreps_in) != len({ir for _, ir in self.irreps_in}):
            raise ValueError(
                f"irreps_in '{self.irreps_in}' and irreps_out '{self.irreps_out}' must have one multiplicity C "
                "for every irrep, each irrep once (e.g. '64x0e+64x1o+64x2e' -> '64x0e+64x1o')"
            )
        if not isinstance(correlation, int) or correlation < 1:
            raise ValueError(f"correlation must be a positive integer, got {correlation!r}")
        self.channels, self.correlation, self.num_elements = channels.pop(), correlation, num_elements
        self.irreps_one = o3.Irreps([(1, ir) for _, ir in self.irreps_in])
        self.dim_one = self.irreps_one.dim
        dtype = torch.get_default_dtype()
        self._outputs = []  # per output irrep: (dim, [orders that have a basis])
        for _, ir_out in self.irreps_out:
            orders = []
            for order in range(1, correlation + 1):
                basis = symmetric_coupling_basis(self.irreps_one, ir_out, order)
                if basis.shape[0] == 0:
                    continue
                orders.append(order)
                # Stored as [M * D^(order-1), D, K] so that folding in the weights is one matmul.
                u = basis.reshape(basis.shape[0], -1, self.dim_one).permute(1, 2, 0).contiguous()
                self.register_buffer(f"U_{order}_{ir_out}", u.to(dtype))
                weight = torch.randn(num_elements, basis.shape[0], self.channels) / basis.shape[0] / WEIGHT_SCALE
                self.register_parameter(f"weight_{order}_{ir_out}", torch.nn.Parameter(weight))
            if not orders:
                raise ValueError(
                    f"no product of up to {correlation} copies of '{self.irreps_one}' reaches {ir_out}; "
                    "raise the correlation or the degrees of irreps_in"
                )
            self._outputs.append((ir_out, orders))
        # The weights in the order of the backends' weight operand (order-major, then output irrep).
        self._weight_names = [
            f"weight_{order}_{ir_out}" for order in range(1, correlation + 1) for ir_out, orders in self._outputs if order in orders
        ]
        self.set_backend(backend)
        self.register_load_state_dict_post_hook(SymmetricContraction._rebuild_backend)

    def set_backend(self, backend: str) -> None:
        """Compute with ``backend`` (see the class docstring) from now on: same weights, same
        result. The backend is built from the bases buffers (its constants are not module state)."""
        kernels = build(self.family, backend, self.bases())
        self.kernels = None if kernels is None else constants_only(kernels).to(next(self.buffers()).device)
        self.backend = backend

    def bases(self) -> ContractionBases:
        """What this contraction computes, with its current basis buffers."""
        bases = {(order, ir_out): getattr(self, f"U_{order}_{ir_out}") for ir_out, orders in self._outputs for order in orders}
        return ContractionBases(
            self.irreps_in, self.irreps_out, self.dim_one, self.channels, self.correlation, list(self._outputs), bases
        )

    def _rebuild_backend(self, incompatible_keys) -> None:
        """A loaded state dict may bring other (equivalent) bases than the backend was built from."""
        if self.kernels is not None and not self.kernels.built_from(self.bases()):
            self.set_backend(self.backend)

    def _folded(self, ir_out, orders, element: int) -> dict[int, torch.Tensor]:
        """The bases contracted with one element's weights: order → ``[C, M D^(order-1), D]``."""
        return {
            order: torch.einsum("xdk,kc->cxd", getattr(self, f"U_{order}_{ir_out}"), getattr(self, f"weight_{order}_{ir_out}")[element] * WEIGHT_SCALE)
            for order in orders
        }

    def forward(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"x has {x.shape[-1]} features but irreps_in '{self.irreps_in}' has dim {self.irreps_in.dim}")
        if self.kernels is not None:
            weights = torch.cat([getattr(self, name).flatten(1) for name in self._weight_names], dim=1) * WEIGHT_SCALE
            return self.kernels(x, species, weights)
        num_nodes, c, d = x.shape[0], self.channels, self.dim_one
        blocks = x.split([mul * ir.dim for mul, ir in self.irreps_in], dim=1)
        a = torch.cat([block.view(num_nodes, c, ir.dim) for block, (_, ir) in zip(blocks, self.irreps_in)], dim=2)  # [n, C, D]
        # Every element's atoms get two zero rows of padding: a group then never has a single
        # atom, which compilers that treat sizes as unknowns (AOTInductor) would ask about.
        a = torch.cat([a, a.new_zeros(2, c, d)])
        padding = torch.arange(2, device=x.device) + num_nodes
        elements = self.traced_elements if self.traced_elements is not None else torch.unique(species).tolist()
        groups = []
        for element in elements:
            nodes = (species == element).nonzero().squeeze(1)
            groups.append((element, nodes, torch.cat([nodes, padding])))
        pieces = []
        for ir_out, orders in self._outputs:
            m = ir_out.dim
            out = x.new_zeros(num_nodes, c, m)
            for element, nodes, padded in groups:
                folded = self._folded(ir_out, orders, element)
                a_e = a.index_select(0, padded).transpose(0, 1)  # [C, n_e + 2, D]
                result = None  # [C, n_e + 2, M D^order] before the Horner step of each order
                for order in range(self.correlation, 0, -1):
                    if order not in folded and result is None:
                        continue
                    if result is None:  # highest order: one matmul for all atoms of the element
                        result = torch.matmul(a_e, folded[order].transpose(1, 2))  # [C, n_e, M D^(order-1)]
                    else:  # (result + W_order) . A, contracting one D-axis
                        result = result.view(c, -1, m * d ** (order - 1), d)
                        if order in folded:
                            result = result + folded[order].unsqueeze(1)
                        result = torch.matmul(result, a_e.unsqueeze(-1)).squeeze(-1)
                out = out.index_copy(0, nodes, result.view(c, -1, m)[:, : nodes.shape[0]].transpose(0, 1))
            pieces.append(out.reshape(num_nodes, c * m))
        return torch.cat(pieces, dim=1)
