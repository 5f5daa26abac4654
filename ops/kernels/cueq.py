"""cuEquivariance (``cuequivariance_torch``) as ``backend="cueq"`` of the channel-wise CG
product and convolution and of MACE's symmetric contraction.

equinet writes the descriptors itself and cuEquivariance executes them
(``cuet.SegmentedPolynomial``):

* the channel-wise product is cuEquivariance's own ``uv,iu,jv,kuv+ijk`` form (``v = 1``),
  filled with equinet's paths in equinet's output order, e3nn's Wigner 3j symbols times
  ``sqrt(2 l_out + 1)`` (the normalization of the torch backend) and one weight segment of
  ``mul1`` channels per path, so ``weight_numel`` and the weight layout (path-major, then
  channel) are the torch backend's;
* the symmetric contraction takes equinet's own coupling basis (the ``U_{order}_{ir}``
  buffers) as its coefficients, so it computes the same polynomial with the same weights:
  no weight mapping onto cuEquivariance's basis, nothing fitted.

Outputs therefore equal the torch backend's to rounding, whatever cuEquivariance's own
basis and sorting conventions are. The method is cuEquivariance's CUDA kernel
``"uniform_1d"`` where cuequivariance-ops-torch is installed and every segment has the same
size (one multiplicity for all irreps), else its PyTorch implementation ``"naive"`` (what
the CPU tests run).

Layouts: cuEquivariance's kernels want ``ir_mul`` (:mod:`.layout`), equinet's features are
e3nn's ``mul_ir``. Inputs are permuted to ``ir_mul`` on the way in and outputs back to
``mul_ir`` on the way out, each by one ``index_select`` of columns with a constant
permutation; in the convolution that is on node rows, before the gather and after the
scatter. Edge attributes have multiplicity 1 and weights are per-path vectors of channels,
so neither needs one.
"""

from __future__ import annotations

import itertools
import math

import cuequivariance as cue
import cuequivariance_torch as cuet
import torch
from e3nn import o3

from ..coupling_basis import ContractionBases
from .layout import inverse_permutation, ir_mul_columns

__all__ = ["CueqChannelwise", "CueqSymmetricContraction"]

# The modes of the input operands of an order-nu contraction: letters other than those of
# the weights (w), the output components (i) and the channels (u).
_INPUT_MODES = "abcdefghjklmnopqrstvxyz"
# Entries of equinet's coupling basis below this are rounding noise of the SVD that built
# it (at most ~4e-14 up to l = 3 and order 3, where the smallest true entry is ~6e-4).
_NOISE = 1e-10


def _method(polynomial: cue.SegmentedPolynomial) -> str:
    """cuEquivariance's CUDA kernel where it can run this polynomial, else its PyTorch code."""
    try:
        import cuequivariance_ops_torch  # noqa: F401  (the CUDA kernels, GPU machines only)
    except ImportError:
        return "naive"
    flat = polynomial.flatten_coefficient_modes().squeeze_modes()
    one_mode = all(len(stp.subscripts.modes()) == 1 for _, stp in flat.operations)
    return "uniform_1d" if one_mode and flat.all_same_segment_shape() else "naive"


class CueqChannelwise(torch.nn.Module):
    """The channel-wise ("uvu") product on cuEquivariance, optionally with gather and scatter,
    with the call of the other backends of the ``cg`` family.

    Shapes: ``x1: [N, irreps_in1.dim]`` (``mul_ir``), ``x2: [E, irreps_in2.dim]``,
    ``weights: [E, weight_numel]``; with ``sender``/``receiver: [E]`` the rows of ``x1`` are
    gathered by ``sender`` and the products summed into ``num_receivers`` rows by ``receiver``
    (cuEquivariance's ``input_indices``/``output_indices``: on its CUDA kernel, no
    ``[E, irreps_out.dim]`` message tensor) → ``[N or E, irreps_out.dim]`` (``mul_ir``).
    """

    def __init__(self, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions):
        super().__init__()
        stp = cue.SegmentedTensorProduct.from_subscripts("uv,iu,jv,kuv+ijk")
        for mul, ir in irreps_in1:
            stp.add_segment(1, (ir.dim, mul))
        for _, ir in irreps_in2:
            stp.add_segment(2, (ir.dim, 1))
        # One path per instruction, in output order: `None` appends a new weight segment
        # ([mul1]) and a new output segment ([d_out, mul1]) for each.
        for i_out, (i1, i2, _) in enumerate(instructions):
            (mul1, ir1), ir2, ir_out = irreps_in1[i1], irreps_in2[i2].ir, irreps_out[i_out].ir
            cg = o3.wigner_3j(ir1.l, ir2.l, ir_out.l, dtype=torch.float64) * math.sqrt(ir_out.dim)  # [d1, d2, d_out]
            stp.add_path(None, i1, i2, None, c=cg.numpy(), dims={"u": mul1, "v": 1})
        polynomial = cue.SegmentedPolynomial.eval_last_operand(stp)
        self.polynomial = cuet.SegmentedPolynomial(polynomial, method=_method(polynomial))
        self.register_buffer("in1_columns", ir_mul_columns(irreps_in1), persistent=False)
        self.register_buffer("out_columns", inverse_permutation(ir_mul_columns(irreps_out)), persistent=False)

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        weights: torch.Tensor,
        sender: torch.Tensor | None = None,
        receiver: torch.Tensor | None = None,
        num_receivers: int = 0,
    ) -> torch.Tensor:
        x1 = x1.index_select(1, self.in1_columns)
        if receiver is None:
            [out] = self.polynomial([weights, x1, x2])
        elif x2.shape[0] == 0:
            # cuEquivariance's PyTorch code cannot scatter an empty edge set; the empty
            # products summed here keep the output in the autograd graph of the inputs.
            [messages] = self.polynomial([weights, x1.index_select(0, sender), x2])
            out = messages.new_zeros(num_receivers, messages.shape[1]).index_add_(0, receiver, messages)
        else:
            [out] = self.polynomial(
                [weights, x1, x2],
                input_indices={1: sender},
                output_indices={0: receiver},
                output_shapes={0: x1.new_empty(num_receivers, 1)},  # only its row count is read
            )
        return out.index_select(1, self.out_columns)


def _orderings(order: int, dim: int) -> torch.Tensor:
    """``[dim] * order``: how many orderings each non-decreasing index tuple has, 0 elsewhere."""
    counts = torch.zeros([dim] * order, dtype=torch.float64)
    for index in itertools.combinations_with_replacement(range(dim), order):
        counts[index] = len(set(itertools.permutations(index)))
    return counts


def _symmetric_contraction_polynomial(contraction: ContractionBases) -> cue.SegmentedPolynomial:
    """The contraction with its own basis buffers as coefficients.

    Operands: weights ``[sum over orders and output irreps of K * C]`` (order-major, then
    output irrep, then ``[K, C]``: the module's weights flattened in that order), the input
    ``[D * C]`` and the output ``[sum M * C]``, both ``ir_mul`` with multiplicity C.
    Every order is one ``w, a, b, .., i`` product (``U[a, b, .., M=i, k=w]``); as the basis is
    symmetric in its input axes and ``A_a A_b ..`` is the same monomial for each ordering of
    ``(a, b, ..)``, only non-decreasing index tuples are kept, each with the sum of its
    orderings' coefficients: the same polynomial (and derivatives) with ~1/order! of the paths.
    """
    dim, channels = contraction.dim, contraction.channels
    polynomials = []
    for order in range(1, contraction.correlation + 1):
        if not any(order in orders for _, orders in contraction.outputs):
            continue  # no path at this order (cuEquivariance's PyTorch code refuses a product without any)
        modes = _INPUT_MODES[:order]
        stp = cue.SegmentedTensorProduct.from_subscripts(f"w_{'_'.join(modes)}_i+{modes}iw")
        for operand in range(1, order + 1):
            stp.add_segment(operand, (dim,))
        orderings = _orderings(order, dim)[..., None, None]
        for ir_out, orders in contraction.outputs:
            if order not in orders:  # an output segment with no path, so every order has all outputs
                stp.add_segment(order + 1, {"i": ir_out.dim})
                continue
            u = contraction.bases[order, ir_out].detach().to("cpu", torch.float64)  # [M D^(order-1), D, K]
            basis = u.reshape(ir_out.dim, *[dim] * order, -1)  # [M, D, .., D, K]
            coefficients = basis.movedim(0, order) * orderings  # [D, .., D, M, K]
            coefficients[coefficients.abs() < _NOISE] = 0
            stp.add_path(None, *[0] * order, None, c=coefficients.numpy())
        stp = stp.flatten_coefficient_modes().append_modes_to_all_operands("u", {"u": channels})
        operation = cue.Operation([0] + [1] * order + [2])
        polynomials.append(cue.SegmentedPolynomial(stp.operands[:2], stp.operands[-1:], [(operation, stp)]))
    # Weights stacked (one segment per order and output irrep), input shared, outputs summed.
    return cue.SegmentedPolynomial.stack(polynomials, [True, False, False])


class CueqSymmetricContraction(torch.nn.Module):
    """The ``backend="cueq"`` implementation behind :class:`~equinet.ops.SymmetricContraction`,
    built from its bases.

    Shapes: ``x: [n, irreps_in.dim]`` (``mul_ir``), ``species: [n]``, ``weights: [num_elements,
    sum of K * C]`` (the module's weights, flattened in the order of the polynomial's weight
    operand) → ``[n, irreps_out.dim]``.
    """

    def __init__(self, contraction: ContractionBases):
        super().__init__()
        polynomial = _symmetric_contraction_polynomial(contraction)
        self.contraction = cuet.SegmentedPolynomial(polynomial, method=_method(polynomial))
        self.register_buffer("in_columns", ir_mul_columns(contraction.irreps_in), persistent=False)
        self.register_buffer("out_columns", inverse_permutation(ir_mul_columns(contraction.irreps_out)), persistent=False)
        self.bases = {key: basis.detach().clone() for key, basis in contraction.bases.items()}  # what it was built from

    def built_from(self, contraction: ContractionBases) -> bool:
        """Whether the polynomial was built from the bases of ``contraction``."""
        return all(torch.equal(contraction.bases[key], basis.to(contraction.bases[key])) for key, basis in self.bases.items())

    def forward(self, x: torch.Tensor, species: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        [out] = self.contraction([weights, x.index_select(1, self.in_columns)], input_indices={0: species})
        return out.index_select(1, self.out_columns)
