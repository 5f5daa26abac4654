"""Triton kernels of equinet's operators, registered with ``torch.library``
(``equinet.ops.kernels``), chosen with ``backend="triton"``.

* :mod:`.cg_tables` — the sparse Clebsch–Gordan tables that drive the kernels (pure torch).
* :mod:`.cg_triton` — the kernels of the fused CG convolution (gather → channel-wise CG
  product with per-edge weights → segmented sum at the receivers) and of its derivatives.
* :mod:`.cg_ops` — those kernels as ``torch.library`` operators with fake (shape)
  implementations and autograd formulas closed under differentiation.

The kernels need an NVIDIA GPU, or ``TRITON_INTERPRET=1`` in the environment to run them
on CPU tensors in Triton's interpreter, for testing. Triton reads it when it is first
imported (torch, e3nn and torch_geometric import it), so set it before Python starts.
"""

from __future__ import annotations

from e3nn import o3

__all__ = ["triton_channelwise"]


def triton_channelwise(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions):
    """The ``backend="triton"`` implementation of the channel-wise product and convolution
    (:class:`~equinet.ops.kernels.cg_ops.TritonChannelwise`).

    Raises:
        ImportError: triton is not installed (one line naming the fix).
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        raise ImportError(
            "backend='triton' needs the triton package: pip install triton (or pip install 'equinet[triton]')"
        ) from None
    from .cg_ops import TritonChannelwise

    return TritonChannelwise(irreps_in1, irreps_in2, irreps_out, instructions)
