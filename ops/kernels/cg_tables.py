"""Sparse Clebsch–Gordan tables that drive the Triton kernels of the channel-wise convolution.

The convolution is trilinear in the node features ``x [N, D1]``, the edge attributes
``y [E, D2]`` and the edge weights ``w [E, W]``. With ``g [N, Dout]`` standing for a
gradient at the receivers, every kernel computes one partial derivative of the form

    F(x, y, w, g) = sum_e sum_(path k, u, m1, m2, mo) c(k, m1, m2, mo)
                    * x[src e, x_k(u, m1)] * y[e, y_k(m2)] * w[e, w_k + u] * g[dst e, o_k(u, mo)]

where ``c = sqrt(2 l_out + 1) * wigner_3j(l1, l2, l_out)[m1, m2, mo]`` over the nonzero
coefficients only, and ``x_k(u, m1) = offset + u * (2 l1 + 1) + m1`` is e3nn's layout (one
segment ``mul x (2l+1)``, channel-major). The four derivatives are:

===============  =====================  ==========================  ===================
table            one row per            entries of a row            computes
===============  =====================  ==========================  ===================
``conv``         output row (k, mo)     (m1, m2) of path k          dF/dg, at receivers
``transpose``    input row (i, m1)      (k, m2, mo), k leaving i    dF/dx, at senders
``attrs``        edge attribute b       (k, m1, mo), k using b      dF/dy, per edge
``weights``      path k                 (m1, m2, mo) of path k      dF/dw, per edge
===============  =====================  ==========================  ===================

A "row" is one output column family: its elements are ``start + u * stride`` for the
channels ``u < mul`` (for ``attrs`` the channels are summed, so a row is one column).
Each table is padded to the longest row, so a kernel can load a block of rows times a
block of entries as one 2D tile; padding entries have ``count`` masking them out and a
coefficient of 0.

Tables (all int32 except the coefficients, which take the default dtype):

* ``*_rows [R, F]`` row fields, ``*_entries [R, J, G]`` entry fields, ``*_coeffs [R, J]``.
* ``conv`` and ``transpose`` share one layout, so one kernel serves both:
  rows ``(out_start, out_stride, mul, count)``, entries ``(a_start, a_stride, y_index, w_start)``
  where ``a`` is the gathered operand (``x`` for conv, ``g`` for transpose).
* ``attrs``: rows ``(count,)`` (row ``b`` is column ``b`` of ``y``), entries
  ``(x_start, x_stride, g_start, g_stride, w_start, mul)``.
* ``weights``: rows ``(w_start, mul, count)``, entries ``(x_start, x_stride, y_index, g_start, g_stride)``.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

__all__ = ["TABLE_NAMES", "cg_kernel_tables"]

# The order in which the tables travel to the custom ops (one flat list of tensors).
TABLE_NAMES = tuple(
    f"{kind}_{part}" for kind in ("conv", "transpose", "attrs", "weights") for part in ("rows", "entries", "coeffs")
)


def _pad(rows: list[list[int]], entries: list[list[tuple[tuple[int, ...], float]]], num_fields: int):
    """Stack ragged per-row entry lists into ``[R, J, G]`` fields and ``[R, J]`` coefficients."""
    longest = max(1, max((len(row) for row in entries), default=0))  # J >= 1: no zero-size blocks
    padding = ((0,) * num_fields, 0.0)
    padded = [row + [padding] * (longest - len(row)) for row in entries]
    fields = torch.tensor([[entry for entry, _ in row] for row in padded], dtype=torch.int32)
    coeffs = torch.tensor([[c for _, c in row] for row in padded], dtype=torch.float64)
    row_fields = torch.tensor(rows, dtype=torch.int32).reshape(len(rows), -1)
    return row_fields, fields, coeffs


def cg_kernel_tables(
    irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions: list[tuple[int, int, int]]
) -> dict[str, torch.Tensor]:
    """The four tables of the module docstring, by the names of :data:`TABLE_NAMES`.

    Args:
        irreps_in1: node feature irreps (any multiplicities).
        irreps_in2: edge attribute irreps, multiplicity 1 each.
        irreps_out: one segment ``mul1 x ir_out`` per path, in path order.
        instructions: ``(i1, i2, i_out)`` per path, ``i_out`` counting up from 0.

    Coefficients are computed in float64 and returned in torch's default dtype.
    """
    offsets1 = [irreps_in1[:i].dim for i in range(len(irreps_in1))]
    offsets2 = [irreps_in2[:i].dim for i in range(len(irreps_in2))]
    offsets_out = [irreps_out[:i].dim for i in range(len(irreps_out))]
    weight_starts = [sum(irreps_in1[i1].mul for i1, _, _ in instructions[:k]) for k in range(len(instructions))]

    # Every nonzero coefficient once: (path, m1, m2, mo, c). e3nn's zeros are exact zeros.
    nonzeros: list[tuple[int, int, int, int, float]] = []
    for k, (i1, i2, i_out) in enumerate(instructions):
        l1, l2, l_out = irreps_in1[i1].ir.l, irreps_in2[i2].ir.l, irreps_out[i_out].ir.l
        block = o3.wigner_3j(l1, l2, l_out, dtype=torch.float64) * math.sqrt(2 * l_out + 1)
        for m1, m2, mo in block.nonzero().tolist():
            nonzeros.append((k, m1, m2, mo, block[m1, m2, mo].item()))

    # (start, stride) of the channels of x[:, segment of path k, :, m1] and of its output.
    def x_row(k, m1):
        return offsets1[instructions[k][0]] + m1, irreps_in1[instructions[k][0]].ir.dim

    def out_row(k, mo):
        return offsets_out[instructions[k][2]] + mo, irreps_out[instructions[k][2]].ir.dim

    def y_index(k, m2):
        return offsets2[instructions[k][1]] + m2

    def mul(k):
        return irreps_in1[instructions[k][0]].mul

    tables: dict[str, torch.Tensor] = {}

    # conv: one row per output column family (k, mo), in output order.
    conv_rows, conv_entries = [], []
    row_of = {}
    for k, (_, _, i_out) in enumerate(instructions):
        for mo in range(irreps_out[i_out].ir.dim):
            row_of[k, mo] = len(conv_rows)
            conv_rows.append([*out_row(k, mo), mul(k), 0])
            conv_entries.append([])
    for k, m1, m2, mo, c in nonzeros:
        conv_entries[row_of[k, mo]].append(((*x_row(k, m1), y_index(k, m2), weight_starts[k]), c))

    # transpose: one row per input column family (i, m1) of irreps_in1, including
    # segments that no path leaves (their rows stay empty and the kernel writes zeros).
    transpose_rows, transpose_entries = [], []
    row_of = {}
    for i, (mul_i, ir) in enumerate(irreps_in1):
        for m1 in range(ir.dim):
            row_of[i, m1] = len(transpose_rows)
            transpose_rows.append([offsets1[i] + m1, ir.dim, mul_i, 0])
            transpose_entries.append([])
    for k, m1, m2, mo, c in nonzeros:
        row = row_of[instructions[k][0], m1]
        transpose_entries[row].append(((*out_row(k, mo), y_index(k, m2), weight_starts[k]), c))

    # attrs: one row per edge attribute column b.
    attrs_entries: list[list] = [[] for _ in range(irreps_in2.dim)]
    for k, m1, m2, mo, c in nonzeros:
        attrs_entries[y_index(k, m2)].append(((*x_row(k, m1), *out_row(k, mo), weight_starts[k], mul(k)), c))
    attrs_rows = [[0] for _ in range(irreps_in2.dim)]

    # weights: one row per path.
    weights_entries: list[list] = [[] for _ in instructions]
    for k, m1, m2, mo, c in nonzeros:
        weights_entries[k].append(((*x_row(k, m1), y_index(k, m2), *out_row(k, mo)), c))
    weights_rows = [[weight_starts[k], mul(k), 0] for k in range(len(instructions))]

    dtype = torch.get_default_dtype()
    for kind, rows, entries, num_fields in (
        ("conv", conv_rows, conv_entries, 4),
        ("transpose", transpose_rows, transpose_entries, 4),
        ("attrs", attrs_rows, attrs_entries, 6),
        ("weights", weights_rows, weights_entries, 5),
    ):
        for row, row_entries in zip(rows, entries):
            row[-1] = len(row_entries)  # count is the last row field
        row_fields, entry_fields, coeffs = _pad(rows, entries, num_fields)
        tables[f"{kind}_rows"] = row_fields
        tables[f"{kind}_entries"] = entry_fields
        tables[f"{kind}_coeffs"] = coeffs.to(dtype)
    return tables
