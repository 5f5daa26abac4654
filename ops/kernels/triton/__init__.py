"""The Triton backend (``backend="triton"``): fused GPU kernels registered as ``torch.library``
operators, differentiable to any order, traced as single nodes by ``torch.compile`` and
``torch.export``.

* :mod:`.cg_tables` — the sparse tables of a trilinear form (the CG convolution, the SO(2)
  convolution's steps) that drive the kernels.
* :mod:`.cg_triton` — the kernels of that form and their launchers.
* :mod:`.cg_ops` — those kernels as operators, and the channel-wise CG product and convolution.
* :mod:`.so2` — the SO(2) convolution as three passes of those operators.
* :mod:`.gaunt_grid` — the Gaunt sphere-grid product as one kernel and operator.
* :mod:`.gaunt` — the Gaunt tensor product and many-body product on that operator.

The kernels need an NVIDIA GPU, or ``TRITON_INTERPRET=1`` in the environment to run them on
CPU tensors in Triton's interpreter, for testing. Triton reads it when it is first imported
(torch, e3nn and torch_geometric import it), so set it before Python starts.
"""
