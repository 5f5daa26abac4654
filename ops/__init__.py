"""Equivariant operators (``equinet.ops``): spherical harmonics, radial bases and
tensor products on e3nn irreps, each with a plain PyTorch reference."""

from .cg import BACKENDS, CGConvolution, ChannelwiseTensorProduct, FullyConnectedTensorProduct, Linear
from .radial import BesselBasis, CosineCutoff, GaussianBasis, PolynomialCutoff
from .sh import SphericalHarmonics, spherical_harmonics

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
    "spherical_harmonics",
]
