"""The many-body product of MACE: a symmetric contraction of atomic features with
element-dependent weights (Batatia et al., NeurIPS 2022).

For each channel c and each output irrep L (components M),

    B[n, c, M] = sum_{nu=1..N} sum_k w_nu[z_n, k, c] sum_{i1..i_nu} U_nu[M, i1, .., i_nu, k] A[n, c, i1] ... A[n, c, i_nu]

where ``A[n, c, :]`` stacks the irreps of channel c (e.g. 0e+1o+2e+3o, 16 components)
and ``U_nu[..., k]`` is an orthonormal basis of the equivariant maps from the
*symmetric* nu-fold tensor power of A to L (generalized Clebsch–Gordan coefficients).

The basis is built here from e3nn's Wigner-3j symbols: a symmetric map of order nu+1 is
the symmetrization of a symmetric map of order nu (to any intermediate irrep) coupled
with one more copy of A, so the bases grow order by order and never enumerate every
coupling tree. The contraction runs Horner-style, highest order first, as MACE does,
with the per-element weights folded into U once per call and the atoms grouped by
element, so the cost per atom is independent of the number of basis elements.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import torch
from e3nn import o3

__all__ = ["BACKENDS", "SymmetricContraction", "symmetric_coupling_basis"]

BACKENDS = ("torch", "cueq")

# The weights are stored divided by this and multiplied back in use: the same initial
# product, but Adam's steps (about lr per parameter) move it 3x faster. mace-torch gets
# the same effect from its redundant coupling paths (23 weights per channel and element
# for the 8 independent order-3 invariants of 0e+1o+2e+3o). Measured on rMD17 uracil after
# 8 epochs (scripts/bench_accuracy.py): test force MAE 47.5 -> 43.2 meV/Å (mace-torch 42.9).
WEIGHT_SCALE = 3.0


def _orthonormal_rows(matrix: torch.Tensor, atol: float = 1e-8) -> torch.Tensor:
    """An orthonormal basis (rows) of the row space of ``matrix [P, F]``.

    The rows are averages of unit-norm tensors, so a singular value below ``atol`` is
    rounding noise (an absolute threshold: a relative one would keep the noise of a
    matrix that is zero, e.g. symmetrized antisymmetric couplings).
    """
    if matrix.shape[0] == 0:
        return matrix
    _, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = int((s > atol).sum())
    basis = vh[:rank]
    # Fix the sign of each vector (first large entry positive) so the basis is reproducible.
    pivots = (basis.abs() > 1e-6).float().argmax(dim=1)
    signs = torch.sign(basis.gather(1, pivots.unsqueeze(1)))
    return basis * signs


def _symmetrize(tensor: torch.Tensor, order: int) -> torch.Tensor:
    """Average ``tensor [P, M, D, ..., D]`` (``order`` D-axes) over all orderings of its D-axes."""
    perms = list(itertools.permutations(range(2, 2 + order)))
    return sum(tensor.permute(0, 1, *perm) for perm in perms) / len(perms)


@lru_cache(maxsize=None)
def _symmetric_bases(irreps_in: o3.Irreps, correlation: int) -> dict[tuple[int, o3.Irrep], torch.Tensor]:
    """``{(nu, ir): U [K, ir.dim, D, ..., D]}`` for nu = 1..correlation, float64 on CPU.

    Rows of each U are orthonormal (Frobenius) equivariant maps from the symmetric
    nu-th power of ``irreps_in`` (multiplicity 1 each, dimension D) to ``ir``.
    """
    dim = irreps_in.dim
    bases: dict[tuple[int, o3.Irrep], torch.Tensor] = {}
    for (_, ir), piece in zip(irreps_in, irreps_in.slices()):
        selection = torch.zeros(1, ir.dim, dim, dtype=torch.float64)
        selection[0, :, piece] = torch.eye(ir.dim, dtype=torch.float64)
        bases[(1, ir)] = selection
    for order in range(2, correlation + 1):
        candidates: dict[o3.Irrep, list[torch.Tensor]] = {}
        for (nu, ir_a), u_a in list(bases.items()):
            if nu != order - 1:
                continue
            for (_, ir_b), piece in zip(irreps_in, irreps_in.slices()):
                for ir_c in ir_a * ir_b:
                    w3j = o3.wigner_3j(ir_a.l, ir_b.l, ir_c.l, dtype=torch.float64)  # [a, b, c]
                    # coupled[p, c, I, j] = sum_ab w3j[a, b, c] u_a[p, a, I] delta(b, j in piece)
                    coupled = torch.zeros(u_a.shape[0], ir_c.dim, *u_a.shape[2:], dim, dtype=torch.float64)
                    coupled[..., piece] = torch.einsum("abc,paI->pcIb", w3j, u_a.flatten(2)).reshape(
                        u_a.shape[0], ir_c.dim, *u_a.shape[2:], ir_b.dim
                    )
                    candidates.setdefault(ir_c, []).append(_symmetrize(coupled, order))
        for ir_c, tensors in candidates.items():
            stacked = torch.cat(tensors)
            rows = _orthonormal_rows(stacked.flatten(1))
            if rows.shape[0]:
                bases[(order, ir_c)] = rows.view(-1, *stacked.shape[1:])
    return bases


def symmetric_coupling_basis(irreps_in, ir_out, order: int) -> torch.Tensor:
    """Orthonormal basis of the equivariant maps from Sym^order(irreps_in) to ``ir_out``.

    Args:
        irreps_in: irreps of one channel, multiplicity 1 each (e.g. ``0e+1o+2e+3o``).
        ir_out: the output irrep.
        order: the correlation order nu (number of copies of the input).

    Returns:
        ``U: [K, ir_out.dim, D, ..., D]`` (``order`` axes of size ``D = irreps_in.dim``),
        float64, symmetric in the D-axes, ``K = 0`` when no such map exists.
    """
    irreps_in, ir_out = o3.Irreps(irreps_in), o3.Irrep(ir_out)
    bases = _symmetric_bases(irreps_in, order)
    empty = torch.zeros(0, ir_out.dim, *([irreps_in.dim] * order), dtype=torch.float64)
    return bases.get((order, ir_out), empty).clone()


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
            bases, its kernels; ``pip install 'equinet[cueq]'``).

    Shapes: ``x: [n, irreps_in.dim]``, ``species: [n]`` (0..num_elements-1) →
    ``[n, irreps_out.dim]``.

    The weights ``weight_{N}_{L}`` (times ``WEIGHT_SCALE``) have shape ``[num_elements, K, C]`` and the
    (buffered) bases ``U_{N}_{L}`` are stored with the model, so a loaded model never
    depends on how the basis was computed.
    """

    def __new__(cls, *args, backend: str = "torch", **kwargs):
        # backend="cueq" builds the subclass whose forward runs cuEquivariance, so that this
        # class's forward stays the plain reference every backend is tested against.
        if cls is SymmetricContraction and backend == "cueq":
            from .kernels import cueq_symmetric_contraction

            cls = cueq_symmetric_contraction()
        return super().__new__(cls)

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int, *, backend: str = "torch"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
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

    def _folded(self, ir_out, orders) -> dict[int, torch.Tensor]:
        """The bases contracted with every element's weights: order → ``[Z, C, M D^(order-1), D]``."""
        return {
            order: torch.einsum("xdk,zkc->zcxd", getattr(self, f"U_{order}_{ir_out}"), getattr(self, f"weight_{order}_{ir_out}") * WEIGHT_SCALE)
            for order in orders
        }

    def forward(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"x has {x.shape[-1]} features but irreps_in '{self.irreps_in}' has dim {self.irreps_in.dim}")
        num_nodes, c, d = x.shape[0], self.channels, self.dim_one
        blocks = x.split([mul * ir.dim for mul, ir in self.irreps_in], dim=1)
        a = torch.cat([block.view(num_nodes, c, ir.dim) for block, (_, ir) in zip(blocks, self.irreps_in)], dim=2)  # [n, C, D]
        # Every element's atoms get two zero rows of padding: a group then never has a single
        # atom, which compilers that treat sizes as unknowns (AOTInductor) would ask about.
        a = torch.cat([a, a.new_zeros(2, c, d)])
        padding = torch.arange(2, device=x.device) + num_nodes
        groups = []
        for element in range(self.num_elements):
            nodes = (species == element).nonzero().squeeze(1)
            groups.append((element, nodes, torch.cat([nodes, padding])))
        pieces = []
        for ir_out, orders in self._outputs:
            m = ir_out.dim
            folded = self._folded(ir_out, orders)
            out = x.new_zeros(num_nodes, c, m)
            for element, nodes, padded in groups:
                a_e = a.index_select(0, padded).transpose(0, 1)  # [C, n_e + 2, D]
                result = None  # [C, n_e + 2, M D^order] before the Horner step of each order
                for order in range(self.correlation, 0, -1):
                    if order not in folded and result is None:
                        continue
                    if result is None:  # highest order: one matmul for all atoms of the element
                        result = torch.matmul(a_e, folded[order][element].transpose(1, 2))  # [C, n_e, M D^(order-1)]
                    else:  # (result + W_order) . A, contracting one D-axis
                        result = result.view(c, -1, m * d ** (order - 1), d)
                        if order in folded:
                            result = result + folded[order][element].unsqueeze(1)
                        result = torch.matmul(result, a_e.unsqueeze(-1)).squeeze(-1)
                out = out.index_copy(0, nodes, result.view(c, -1, m)[:, : nodes.shape[0]].transpose(0, 1))
            pieces.append(out.reshape(num_nodes, c * m))
        return torch.cat(pieces, dim=1)
