"""Equivariant operators (``equinet.ops``): spherical harmonics, radial bases and
tensor products on e3nn irreps (Clebsch–Gordan and Gaunt), the MACE symmetric contraction
(and its Gaunt counterpart) and TensorNet's Cartesian
rank-2 tensors, each with a plain PyTorch reference. Fused Triton kernels
(:mod:`equinet.ops.kernels`) run the CG convolution with ``backend="triton"``;
cuEquivariance runs it and the symmetric contraction with ``backend="cueq"``."""

from .cartesian import (
    CartesianLinear,
    TensorMessagePassing,
    axial_vector,
    compose_tensor,
    decompose_tensor,
    edge_tensors,
    frobenius_norm_squared,
    skew_symmetric,
    symmetric_traceless,
)
from .cg import BACKENDS, CGConvolution, ChannelwiseTensorProduct, FullyConnectedTensorProduct, Linear
from .edge_pairs import EdgePairs, one_per_pair, per_edge, reverse_edge_pairs
from .gaunt import GauntManyBodyProduct, GauntTensorProduct, gaunt_coefficients
from .radial import BesselBasis, CosineCutoff, ExpNormalBasis, GaussianBasis, PolynomialCutoff
from .scatter import edge_dot, gather_scale_scatter, scatter_outer
from .sh import SphericalHarmonics, spherical_harmonics
from .so2 import SO2Convolution, so2_weights_from_cg
from .symmetric_contraction import SymmetricContraction, symmetric_coupling_basis
from .wigner import edge_wigner_D, wigner_D_from_matrix

__all__ = [
    "BACKENDS",
    "BesselBasis",
    "CGConvolution",
    "CartesianLinear",
    "ChannelwiseTensorProduct",
    "CosineCutoff",
    "EdgePairs",
    "ExpNormalBasis",
    "FullyConnectedTensorProduct",
    "GauntManyBodyProduct",
    "GauntTensorProduct",
    "GaussianBasis",
    "Linear",
    "PolynomialCutoff",
    "SO2Convolution",
    "SphericalHarmonics",
    "SymmetricContraction",
    "TensorMessagePassing",
    "axial_vector",
    "compose_tensor",
    "decompose_tensor",
    "edge_dot",
    "edge_tensors",
    "edge_wigner_D",
    "frobenius_norm_squared",
    "gather_scale_scatter",
    "gaunt_coefficients",
    "one_per_pair",
    "per_edge",
    "reverse_edge_pairs",
    "scatter_outer",
    "skew_symmetric",
    "so2_weights_from_cg",
    "spherical_harmonics",
    "symmetric_coupling_basis",
    "symmetric_traceless",
    "wigner_D_from_matrix",
]
