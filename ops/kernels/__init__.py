"""The faster backends of equinet's operators (``equinet.ops.kernels``), chosen with
``backend=``: Triton kernels registered with ``torch.library`` (``backend="triton"``),
cuEquivariance (``backend="cueq"``) and C++ CPU kernels of the Gaunt product and the SO(2)
convolution (``backend="cpp"``).

* :mod:`.layout` — the ``ir_mul`` layout that the kernel backends compute in, and the
  permutations to and from e3nn's ``mul_ir``.
* :mod:`.cg_tables` — the sparse Clebsch–Gordan tables that drive the kernels (pure torch).
* :mod:`.cg_triton` — the kernels of the fused CG convolution (gather → channel-wise CG
  product with per-edge weights → segmented sum at the receivers) and of its derivatives.
* :mod:`.cg_ops` — those kernels as ``torch.library`` operators with fake (shape)
  implementations and autograd formulas closed under differentiation.
* :mod:`.so2_ops` — the SO(2) convolution of eSCN as three passes of those operators.
* :mod:`.gaunt_grid` — the Gaunt sphere-grid product (synthesis, pointwise product,
  quadrature) as one kernel and operator, closed under differentiation.
* :mod:`.cpp_build` — the Gaunt sphere-grid product and the SO(2) convolution as fused C++
  CPU kernels (``backend="cpp"``), compiled on first use with torch's extension builder.
* :mod:`.cueq` — equinet's channel-wise product and symmetric contraction as
  cuEquivariance polynomials (``cuequivariance_torch``, the optional extra ``cueq``): its
  CUDA kernels on a GPU with cuequivariance-ops-torch, its PyTorch code elsewhere.

The Triton kernels need an NVIDIA GPU, or ``TRITON_INTERPRET=1`` in the environment to run them
on CPU tensors in Triton's interpreter, for testing. Triton reads it when it is first
imported (torch, e3nn and torch_geometric import it), so set it before Python starts.
"""

from __future__ import annotations

from e3nn import o3

__all__ = ["cpp_gaunt_product", "cpp_so2", "cueq_channelwise", "cueq_symmetric_contraction", "triton_channelwise", "triton_gaunt_grid_product", "triton_so2"]


def _require_triton() -> None:
    """An ImportError of one line naming the fix when triton is not installed."""
    try:
        import triton  # noqa: F401
    except ImportError:
        raise ImportError(
            "backend='triton' needs the triton package: pip install triton (or pip install 'equinet[triton]')"
        ) from None


def triton_channelwise(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions):
    """The ``backend="triton"`` implementation of the channel-wise product and convolution
    (:class:`~equinet.ops.kernels.cg_ops.TritonChannelwise`).

    Raises:
        ImportError: triton is not installed (one line naming the fix).
    """
    _require_triton()
    from .cg_ops import TritonChannelwise

    return TritonChannelwise(irreps_in1, irreps_in2, irreps_out, instructions)


def triton_so2(conv):
    """The ``backend="triton"`` implementation of an ``SO2Convolution`` ``conv``
    (:class:`~equinet.ops.kernels.so2_ops.TritonSO2`).

    Raises:
        ImportError: triton is not installed (one line naming the fix).
    """
    _require_triton()
    from .so2_ops import TritonSO2

    return TritonSO2(conv)


def triton_gaunt_grid_product():
    """The ``backend="triton"`` Gaunt sphere-grid product, the operator
    :func:`~equinet.ops.kernels.gaunt_grid.gaunt_grid_product`.

    Raises:
        ImportError: triton is not installed (one line naming the fix).
    """
    _require_triton()
    from .gaunt_grid import gaunt_grid_product

    return gaunt_grid_product


def cpp_gaunt_product():
    """The ``backend="cpp"`` Gaunt sphere-grid product: the compiled function ``gaunt_product`` of
    ``gaunt_cpp.cpp`` (:mod:`.cpp_build`, built on first use).

    Raises:
        RuntimeError: the kernel does not compile here (one line naming what is needed).
    """
    from .cpp_build import load_cpp

    return load_cpp("gaunt_cpp").gaunt_product


def cpp_so2():
    """The ``backend="cpp"`` SO(2) convolution: the compiled module of ``so2_cpp.cpp``
    (:mod:`.cpp_build`, built on first use), with functions ``so2_forward`` and ``so2_backward``.

    Raises:
        RuntimeError: the kernel does not compile here (one line naming what is needed).
    """
    from .cpp_build import load_cpp

    return load_cpp("so2_cpp")


def _cueq():
    """:mod:`.cueq`, or an ImportError of one line naming the fix."""
    try:
        import cuequivariance_torch  # noqa: F401
    except ImportError:
        raise ImportError(
            "backend='cueq' needs cuEquivariance: pip install 'equinet[cueq]' (or pip install cuequivariance-torch)"
        ) from None
    from . import cueq

    return cueq


def cueq_channelwise(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions):
    """The ``backend="cueq"`` implementation of the channel-wise product and convolution
    (:class:`~equinet.ops.kernels.cueq.CueqChannelwise`).

    Raises:
        ImportError: cuequivariance-torch is not installed (one line naming the fix).
    """
    return _cueq().CueqChannelwise(irreps_in1, irreps_in2, irreps_out, instructions)


def cueq_symmetric_contraction() -> type:
    """The class that ``SymmetricContraction(..., backend="cueq")`` builds
    (:class:`~equinet.ops.kernels.cueq.CueqSymmetricContraction`).

    Raises:
        ImportError: cuequivariance-torch is not installed (one line naming the fix).
    """
    return _cueq().CueqSymmetricContraction
