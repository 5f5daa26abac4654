"""Equivariant operators (``equinet.ops``): spherical harmonics, radial bases and
tensor products on e3nn irreps and the MACE symmetric contraction, each with a plain PyTorch reference."""

from .cg import BACKENDS, CGConvolution, ChannelwiseTensorProduct, FullyConnectedTensorProduct, Linear
from .radial import BesselBasis, CosineCutoff, GaussianBasis, PolynomialCutoff
from .sh import SphericalHarmonics, spherical_harmonics
from .symmetric_contraction import SymmetricContraction, symmetric_coupling_basis

__all__ = [
    "BACKENDS",
    "BesselBasis",
    "CGConvolution",
    "ChannelwiseTensorProduct",
    "CosineCutoff",
    "FullyConnectedTensorProduct",
    "GaussianBasis",
    "Linear",
    "PolynomialCutoff",
    "SphericalHarmonics",
    "SymmetricContraction",
    "spherical_harmonics",
    "symmetric_coupling_basis",
]
