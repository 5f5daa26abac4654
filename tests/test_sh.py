import pytest
import torch
from e3nn import o3

from equinet.ops import SphericalHarmonics, spherical_harmonics
from equinet.testing import assert_equivariant, assert_float32_matches_float64


@pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_e3nn_up_to_its_limit(float64, normalization, normalize):
    vectors = torch.randn(50, 3)
    ours = spherical_harmonics(11, vectors, normalize, normalization)
    reference = o3.spherical_harmonics(list(range(12)), vectors, normalize, normalization)
    assert ours.shape == (50, 144)
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=1e-12)


def test_beyond_e3nn_is_normalized_homogeneous_and_equivariant(float64):
    l_max = 16
    vectors = torch.randn(40, 3)
    sh = spherical_harmonics(l_max, vectors)
    for l in range(l_max + 1):
        block = sh[:, l * l : (l + 1) ** 2]
        torch.testing.assert_close(block.square().sum(-1), torch.full((40,), 2.0 * l + 1))
    raw = spherical_harmonics(l_max, vectors, normalize=False)
    degrees = torch.cat([torch.full((2 * l + 1,), float(l)) for l in range(l_max + 1)])
    torch.testing.assert_close(raw, sh * vectors.norm(dim=-1, keepdim=True) ** degrees)
    assert_equivariant(lambda v: spherical_harmonics(l_max, v), [vectors], ["1o"], o3.Irreps.spherical_harmonics(l_max))


def test_integral_normalization_is_orthonormal_on_the_sphere(float64):
    # Exact quadrature: Gauss-Legendre in cos(theta) (16 nodes) times 32 equally spaced phi
    # integrates every product of two harmonics of degree <= 13 (degree <= 26) exactly.
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(16)
    phi = np.arange(32) * 2 * np.pi / 32
    cos_theta, phi = np.meshgrid(nodes, phi, indexing="ij")
    sin_theta = np.sqrt(1 - cos_theta**2)
    points = torch.tensor(np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], -1).reshape(-1, 3))
    w = torch.tensor(np.repeat(weights, 32) * 2 * np.pi / 32)
    sh = spherical_harmonics(13, points, normalization="integral")
    gram = sh.T @ (w[:, None] * sh)
    torch.testing.assert_close(gram, torch.eye(196, dtype=torch.float64), atol=1e-12, rtol=0)


def test_twice_differentiable(float64):
    # A random projection to a scalar keeps every degree in play and the check fast.
    vectors = torch.randn(4, 3, requires_grad=True)
    projection = torch.randn(4, 196)
    assert torch.autograd.gradgradcheck(lambda v: (spherical_harmonics(13, v) * projection).sum(), (vectors,))


def test_module_reports_irreps_and_rejects_bad_input():
    module = SphericalHarmonics(3)
    assert module.irreps_out == o3.Irreps("1x0e+1x1o+1x2e+1x3o")
    assert module(torch.randn(5, 3)).shape == (5, 16)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 3\]"):
        module(torch.randn(5, 4))
    with pytest.raises(ValueError, match="l_max"):
        SphericalHarmonics(-1)
    with pytest.raises(ValueError, match="normalization"):
        SphericalHarmonics(2, normalization="unit")


def test_float32_matches_float64():
    assert_float32_matches_float64(SphericalHarmonics(14), [torch.randn(100, 3, dtype=torch.float64)], rtol=1e-5)
