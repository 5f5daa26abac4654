"""e3nn's ``TensorProduct`` as ``backend="e3nn"`` of the channel-wise CG product and
convolution: the reference that equinet's own PyTorch code is tested against."""

from __future__ import annotations

import torch
from e3nn import o3

__all__ = ["E3nnChannelwise"]


class E3nnChannelwise(torch.nn.Module):
    """The "uvu" product by ``e3nn.o3.TensorProduct``, with the call of the other backends.

    Shapes: ``x1: [N, irreps_in1.dim]``, ``x2: [E, irreps_in2.dim]``, ``weights: [E, weight_numel]``;
    with ``sender``/``receiver: [E]`` the rows of ``x1`` are gathered by ``sender`` and the
    products summed into ``num_receivers`` rows by ``receiver`` → ``[N or E, irreps_out.dim]``.
    """

    def __init__(self, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions):
        super().__init__()
        self.tp = o3.TensorProduct(
            irreps_in1,
            irreps_in2,
            irreps_out,
            [(i1, i2, i_out, "uvu", True) for i1, i2, i_out in instructions],
            shared_weights=False,
            internal_weights=False,
        )

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        weights: torch.Tensor,
        sender: torch.Tensor | None = None,
        receiver: torch.Tensor | None = None,
        num_receivers: int = 0,
    ) -> torch.Tensor:
        if sender is None:
            return self.tp(x1, x2, weights)
        messages = self.tp(x1[sender], x2, weights)
        return messages.new_zeros(num_receivers, messages.shape[1]).index_add_(0, receiver, messages)
