"""The ``ir_mul`` layout of irreps features that the kernel backends compute in.

equinet's features are e3nn's ``mul_ir``: in each ``mul x ir`` block, channel-major with the
``2l + 1`` components inside. ``ir_mul`` is component-major with the channels inside, so that
one component of a block is a contiguous run of ``mul`` channels, which GPU kernels load and
store as vectors (cuEquivariance's kernels and equinet's Triton kernels). The backends permute
node features to ``ir_mul`` on the way in and back on the way out, one ``index_select`` of
columns each.
"""

from __future__ import annotations

import torch
from e3nn import o3

__all__ = ["inverse_permutation", "ir_mul_columns"]


def ir_mul_columns(irreps: o3.Irreps) -> torch.Tensor:
    """Columns that reorder ``[.., irreps.dim]`` from ``mul_ir`` to ``ir_mul``:
    ``x_ir_mul = x_mul_ir[:, columns]``."""
    columns = []
    for (mul, ir), block in zip(irreps, irreps.slices()):
        columns += [block.start + u * ir.dim + i for i in range(ir.dim) for u in range(mul)]
    return torch.tensor(columns, dtype=torch.long)


def inverse_permutation(permutation: torch.Tensor) -> torch.Tensor:
    """``inverse`` with ``inverse[permutation] = arange``: ``x_mul_ir = x_ir_mul[:, inverse]``."""
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(len(permutation))
    return inverse
