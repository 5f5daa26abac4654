"""Equivariant operators (``equinet.ops``): spherical harmonics, radial bases and
tensor products on e3nn irreps (Clebsch–Gordan and Gaunt), the MACE symmetric contraction
(and its Gaunt counterpart) and TensorNet's Cartesian
rank-2 tensors, each with a plain PyTorch reference. Faster backends (Triton and C++
kernels, cuEquivariance) are chosen with ``backend=`` or ``set_backend``, from one registry
(:mod:`equinet.ops.kernels`, ``BACKENDS``)."""

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
from .cg import CGConvolution, ChannelwiseTensorProduct, FullyConnectedTensorProduct, Linear
from .coupling_basis import symmetric_coupling_basis
from .edge_pairs import EdgePairs, one_per_pair, per_edge, reverse_edge_pairs
from .gaunt import GauntManyBodyProduct, GauntTensorProduct, gaunt_coefficients
from .kernels import BACKENDS
from .radial import BesselBasis, CosineCutoff, ExpNormalBasis, GaussianBasis, PolynomialCutoff, polynomial_envelope
from .scatter import edge_dot, gather_scale_scatter, scatter_outer
from .sh import SphericalHarmonics, spherical_harmonics
from .so2 import SO2Convolution, so2_weights_from_cg
from .symmetric_contraction import SymmetricContraction
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
    "polynomial_envelope",
    "reverse_edge_pairs",
    "scatter_outer",
    "skew_symmetric",
    "so2_weights_from_cg",
    "spherical_harmonics",
    "symmetric_coupling_basis",
    "symmetric_traceless",
    "wigner_D_from_matrix",
]
