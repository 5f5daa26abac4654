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
    # Lebedev-free check: Monte Carlo over 200k points, tolerance from its sampling error.
    points = torch.randn(200_000, 3)
    sh = spherical_harmonics(13, points, normalization="integral")
    gram = 4 * torch.pi * sh.T @ sh / points.shape[0]
    torch.testing.assert_close(gram, torch.eye(196), atol=0.03, rtol=0)


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
