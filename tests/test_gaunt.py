"""Gaunt tensor products (sphere grid and 2D FFT) and the Gaunt many-body product against
dense references built from Gaunt coefficients; equivariance, parity, gradients."""

import math

import numpy as np
import pytest
import torch
from e3nn import o3

from equinet.ops import GauntManyBodyProduct, GauntTensorProduct, gaunt, gaunt_coefficients, spherical_harmonics
from equinet.testing import assert_equivariant, assert_float32_matches_float64


def _quadrature_gaunt(l1, l2, l3):
    """int Y Y Y by a plain midpoint rule in phi and Gauss–Legendre in z (polar axis z here)."""
    z, w = np.polynomial.legendre.leggauss(20)
    phi = np.arange(41) * 2 * np.pi / 41
    rho = np.sqrt(1 - z**2)
    points = np.stack(np.broadcast_arrays(rho[:, None] * np.cos(phi), rho[:, None] * np.sin(phi), z[:, None]), -1)
    y = spherical_harmonics(max(l1, l2, l3), torch.from_numpy(points.reshape(-1, 3))).numpy()
    weights = np.repeat(w, 41) * 2 * np.pi / 41
    y1, y2, y3 = (y[:, l * l : (l + 1) ** 2] for l in (l1, l2, l3))
    return np.einsum("p,pa,pb,pc->abc", weights, y1, y2, y3)


@pytest.mark.parametrize("degrees", [(0, 2, 2), (1, 1, 2), (1, 1, 1), (2, 3, 3), (3, 4, 5), (2, 2, 6), (4, 4, 4)])
def test_gaunt_coefficients_are_integrals_of_three_harmonics(degrees):
    expected = _quadrature_gaunt(*degrees)
    np.testing.assert_allclose(gaunt_coefficients(*degrees).numpy(), expected, atol=1e-12)
    l1, l2, l3 = degrees
    torch.testing.assert_close(gaunt_coefficients(l2, l1, l3), gaunt_coefficients(l1, l2, l3).transpose(0, 1))
    torch.testing.assert_close(gaunt_coefficients(l3, l2, l1), gaunt_coefficients(l1, l2, l3).permute(2, 1, 0))


def _functions(irreps, x, weights):
    """``{l: [n, C, 2l+1]}``: the weighted coefficients of each degree, from e3nn's layout."""
    n = x.shape[0]
    return {ir.l: x[:, s].view(n, mul, ir.dim) * weights[:, i, None] for i, ((mul, ir), s) in enumerate(zip(irreps, irreps.slices()))}


def _dense_product(a, b, degrees_out):
    """``{L: (1/4pi) sum G(l1, l2, L) a_l1 b_l2}`` for L in degrees_out, explicit sums over the
    paths (skipping those that the selection rule zeroes, which the quadrature test covers)."""
    out = {}
    for L in degrees_out:
        out[L] = sum(
            torch.einsum("ijk,nci,ncj->nck", gaunt_coefficients(l1, l2, L).to(x1.dtype) / (4 * math.pi), x1, x2)
            for l1, x1 in a.items()
            for l2, x2 in b.items()
            if (l1 + l2 + L) % 2 == 0 and abs(l1 - l2) <= L <= l1 + l2
        )
    return out


def _dense_tensor_product(tp, x1, x2):
    a = _functions(tp.irreps_in1, x1, tp.weight_in1)
    b = _functions(tp.irreps_in2, x2, tp.weight_in2)
    out = _dense_product(a, b, [ir.l for _, ir in tp.irreps_out])
    return torch.cat([(out[ir.l] * tp.weight_out[:, i, None]).flatten(1) for i, (_, ir) in enumerate(tp.irreps_out)], dim=1)


def _randomize(module):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter))
    return module


def _sh_irreps(mul, degrees):
    return o3.Irreps([(mul, (l, (-1) ** l)) for l in degrees])


CASES = {
    # name: (irreps_in1, irreps_in2, irreps_out) as functions of l_max
    "full": lambda L: (_sh_irreps(3, range(L + 1)), _sh_irreps(3, range(L + 1)), _sh_irreps(3, range(L + 1))),
    "shared": lambda L: (_sh_irreps(3, range(L + 1)), _sh_irreps(1, range(L + 1)), _sh_irreps(3, range(min(2 * L, L + 2) + 1))),
    "mixed": lambda L: _mixed(L, range(L, -1, -2), sorted({1, (L + 1) // 2})),
}


def _mixed(l_max, degrees1, degrees2):
    """Inputs with different, gapped, unsorted degrees; every reachable output up to l_max + 1."""
    reachable = {L for l1 in degrees1 for l2 in degrees2 for L in range(abs(l1 - l2), l1 + l2 + 1, 2)}
    return _sh_irreps(2, degrees1), _sh_irreps(2, degrees2), _sh_irreps(2, sorted(L for L in reachable if L <= l_max + 1))


@pytest.mark.parametrize("method", ["grid", "fft"])
@pytest.mark.parametrize("l_max", range(1, 9))
def test_tensor_product_matches_the_dense_reference(float64, method, l_max):
    for case, irreps in CASES.items():
        tp = _randomize(GauntTensorProduct(*irreps(l_max), method=method))
        x1, x2 = tp.irreps_in1.randn(6, -1), tp.irreps_in2.randn(6, -1)
        expected = _dense_tensor_product(tp, x1, x2)
        error = (tp(x1, x2) - expected).abs().max() / expected.abs().max()
        assert error < 1e-10, f"{case}: relative error {error:.1e}"


@pytest.mark.parametrize("method", ["grid", "fft"])
def test_leading_dimensions_and_empty_batches(float64, method):
    tp = _randomize(GauntTensorProduct("2x0e+2x1o", "2x0e+2x1o", "2x0e+2x1o+2x2e", method=method))
    x1, x2 = tp.irreps_in1.randn(3, 4, -1), tp.irreps_in2.randn(3, 4, -1)
    torch.testing.assert_close(tp(x1, x2), tp(x1.flatten(0, 1), x2.flatten(0, 1)).view(3, 4, -1))
    assert tp(x1[:0, 0], x2[:0, 0]).shape == (0, tp.irreps_out.dim)
    # Strided inputs (a column slice, a transpose) give the same values and gradients.
    wide = torch.randn(5, tp.irreps_in1.dim + 3, requires_grad=True)
    transposed = torch.randn(tp.irreps_in2.dim, 5).T.requires_grad_()
    dense = [wide.detach()[:, 3:].clone().requires_grad_(), transposed.detach().clone().requires_grad_()]
    out, expected = tp(wide[:, 3:], transposed), tp(*dense)
    torch.testing.assert_close(out, expected)
    gradients = torch.autograd.grad(out.square().sum(), [wide, transposed])
    for gradient, reference in zip([gradients[0][:, 3:], gradients[1]], torch.autograd.grad(expected.square().sum(), dense)):
        torch.testing.assert_close(gradient, reference)


@pytest.mark.parametrize("method", ["grid", "fft"])
@pytest.mark.parametrize(
    "irreps",
    [
        ("4x0e+4x1o+4x2e+4x3o", "0e+1o+2e+3o", "4x0e+4x1o+4x2e+4x3o+4x4e"),  # spherical-harmonic parity kept
        ("2x0o+2x1e+2x2o", "2x0e+2x1o+2x2e", "2x0o+2x1e+2x2o+2x3e"),  # s = -1 times s = +1: parity -(-1)^L
        ("2x0o+2x1e+2x2o", "0o+1e", "2x0e+2x1o+2x2e+2x3o"),  # s = -1 twice: (-1)^L again
    ],
)
def test_tensor_product_is_equivariant(float64, method, irreps):
    tp = _randomize(GauntTensorProduct(*irreps, method=method))
    x1, x2 = tp.irreps_in1.randn(5, -1), tp.irreps_in2.randn(5, -1)
    assert_equivariant(tp, [x1, x2], [tp.irreps_in1, tp.irreps_in2], tp.irreps_out, atol=1e-10)
    torch.testing.assert_close(tp(x1, x2), _dense_tensor_product(tp, x1, x2), atol=1e-10, rtol=1e-10)


def test_the_methods_agree_in_float32(float64):
    grid = _randomize(GauntTensorProduct("8x0e+8x1o+8x2e+8x3o", "8x0e+8x1o+8x2e+8x3o", "8x0e+8x1o+8x2e+8x3o"))
    fft = GauntTensorProduct(grid.irreps_in1, grid.irreps_in2, grid.irreps_out, method="fft")
    fft.load_state_dict(grid.state_dict())
    x1, x2 = grid.irreps_in1.randn(20, -1), grid.irreps_in2.randn(20, -1)
    torch.testing.assert_close(fft(x1, x2), grid(x1, x2), atol=1e-10, rtol=1e-10)
    assert_float32_matches_float64(grid, [x1, x2], rtol=1e-5)
    assert_float32_matches_float64(fft, [x1, x2], rtol=1e-5)


@pytest.mark.parametrize("method", ["grid", "fft"])
@pytest.mark.parametrize("in2", ["2x0e+2x1o", "0e+1o"])  # channel-wise and shared by all channels
def test_gradients_twice(float64, method, in2, monkeypatch):
    monkeypatch.setattr(gaunt, "_CHUNK_VALUES", 1)  # one row per chunk: the chunks must join up
    tp = _randomize(GauntTensorProduct("2x0e+2x1o+2x2e", in2, "2x0e+2x1o+2x2e+2x3o", method=method))
    names = [name for name, _ in tp.named_parameters()]

    def fn(x1, x2, *weights):
        return torch.func.functional_call(tp, dict(zip(names, weights)), (x1, x2))

    inputs = [tp.irreps_in1.randn(3, -1), tp.irreps_in2.randn(3, -1), *(p.detach() for p in tp.parameters())]
    inputs = [x.clone().requires_grad_() for x in inputs]
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("method", ["grid", "fft"])
def test_one_pass_and_composed_gradients_agree(float64, method):
    """A backward pass without a graph runs fused; with create_graph, as Gaunt products again."""
    tp = _randomize(GauntTensorProduct("3x0e+3x1o+3x2e+3x3o", "0e+1o+2e", "3x0e+3x1o+3x2e", method=method))
    x1 = tp.irreps_in1.randn(7, -1).requires_grad_()
    x2 = tp.irreps_in2.randn(7, -1).requires_grad_()
    out = tp(x1, x2)
    probe = torch.randn_like(out)
    inputs = [x1, x2, *tp.parameters()]
    fused = torch.autograd.grad(out, inputs, probe, retain_graph=True)
    composed = torch.autograd.grad(out, inputs, probe, create_graph=True)
    for a, b in zip(fused, composed):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    a1, a2 = _functions(tp.irreps_in1, x1, tp.weight_in1), _functions(tp.irreps_in2, x2, tp.weight_in2)
    dense = torch.cat([(v * tp.weight_out[:, i, None]).flatten(1) for i, v in enumerate(_dense_product(a1, a2, [0, 1, 2]).values())], 1)
    for a, b in zip(torch.autograd.grad(dense, inputs, probe), fused):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_unreachable_or_malformed_irreps_are_named():
    with pytest.raises(ValueError, match=r"irreps_out has 1e, .* does not reach: degree L comes with parity \(-1\)\^L .*; use 1o"):
        GauntTensorProduct("4x0e+4x1o", "4x0e+4x1o", "4x1e")
    with pytest.raises(ValueError, match=r"irreps_out has 3o, .* does not reach"):
        GauntTensorProduct("4x0e+4x1o", "4x1o", "4x3o")
    with pytest.raises(ValueError, match="mixes parities"):
        GauntTensorProduct("4x0e+4x1e", "4x0e", "4x0e")
    with pytest.raises(ValueError, match="each degree once"):
        GauntTensorProduct("4x0e+4x1o+4x1o", "4x0e", "4x0e")
    with pytest.raises(ValueError, match="must have multiplicity 4 .* or 1"):
        GauntTensorProduct("4x0e+4x1o", "2x0e+2x1o", "4x0e")
    with pytest.raises(ValueError, match="method must be one of grid, fft"):
        GauntTensorProduct("4x0e", "4x0e", "4x0e", method="fourier")


# ----------------------------------------------------------------------------- many-body product


def _dense_many_body(module, x, species):
    """sum_nu w_nu (1/4pi) int f^nu Y_L, with f^2 and f^3 expanded through Gaunt coefficients (nu <= 3)."""
    assert module.correlation <= 3
    n, c = x.shape[0], module.channels
    a = {}
    for i, ((mul, ir), s) in enumerate(zip(module.irreps_in, module.irreps_in.slices())):
        a[ir.l] = x[:, s].view(n, mul, ir.dim) * module.weight_in[species, :, i, None] * module.normalization
    degrees_out = [ir.l for _, ir in module.irreps_out]
    band = 2 * max(a)
    square = _dense_product(a, a, range(band + 1))  # f^2 exactly: its degrees stop at 2 l_max
    powers = [{L: a.get(L, x.new_zeros(n, c, 2 * L + 1)) for L in degrees_out}, _dense_product(a, a, degrees_out)]
    powers.append(_dense_product(square, a, degrees_out))
    weights = module.weight_out * module.order_scale  # [Z, C, nu, n_out]
    out = [
        sum(weights[species, :, nu, i, None] * powers[nu][ir.l] for nu in range(module.correlation)).flatten(1)
        for i, (_, ir) in enumerate(module.irreps_out)
    ]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("correlation", [1, 2, 3])
def test_many_body_product_matches_explicit_products(float64, correlation):
    module = _randomize(GauntManyBodyProduct("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o+3x2e", correlation, num_elements=3))
    x = module.irreps_in.randn(7, -1)
    species = torch.tensor([0, 2, 2, 1, 0, 1, 2])
    expected = _dense_many_body(module, x, species)
    torch.testing.assert_close(module(x, species), expected, atol=1e-10, rtol=1e-10)


def test_many_body_product_equivariant_zero_at_zero_and_float32(float64):
    module = _randomize(GauntManyBodyProduct("4x0e+4x1o+4x2e", "4x0e+4x1o+4x2e+4x3o", correlation=4, num_elements=2))
    x = module.irreps_in.randn(9, -1)
    species = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1])
    assert_equivariant(lambda x: module(x, species), [x], [module.irreps_in], module.irreps_out, atol=1e-10)
    assert (module(torch.zeros_like(x), species) == 0).all()
    assert_float32_matches_float64(module, [x, species], rtol=1e-5)


def test_many_body_product_parity_of_pseudo_inputs(float64):
    # s = -1: odd powers give degree L the parity -(-1)^L, even powers (-1)^L.
    module = _randomize(GauntManyBodyProduct("2x0o+2x1e", "2x0e+2x1e+2x2e", 3, num_elements=1))
    assert (module.order_scale != 0).tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    x = module.irreps_in.randn(4, -1)
    species = torch.zeros(4, dtype=torch.long)
    assert_equivariant(lambda x: module(x, species), [x], [module.irreps_in], module.irreps_out, atol=1e-10)


def test_many_body_product_gradients_twice(float64):
    module = _randomize(GauntManyBodyProduct("2x0e+2x1o+2x2e", "2x0e+2x1o", correlation=3, num_elements=2))
    species = torch.tensor([1, 0, 1])
    names = [name for name, _ in module.named_parameters()]

    def fn(x, *weights):
        return torch.func.functional_call(module, dict(zip(names, weights)), (x, species))

    inputs = [module.irreps_in.randn(3, -1), *(p.detach() for p in module.parameters())]
    inputs = [x.clone().requires_grad_() for x in inputs]
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_many_body_product_bad_irreps_are_named():
    with pytest.raises(ValueError, match="one multiplicity C"):
        GauntManyBodyProduct("8x0e+4x1o", "8x0e", correlation=2, num_elements=1)
    with pytest.raises(ValueError, match=r"no Gaunt product of up to 3 copies of '4x0e\+4x1o' reaches 1e"):
        GauntManyBodyProduct("4x0e+4x1o", "4x1e", correlation=3, num_elements=1)
    with pytest.raises(ValueError, match=r"no Gaunt product of up to 1 copies .* reaches 2e"):
        GauntManyBodyProduct("4x0e+4x1o", "4x2e", correlation=1, num_elements=1)


def test_mace_names_irreps_the_gaunt_product_cannot_make():
    from equinet.potentials import build_model

    statistics = {"elements": [29], "atomic_energies": {29: -3.7}, "avg_num_neighbors": 12.0, "force_rms": 0.7}
    with pytest.raises(ValueError, match=r"model.hidden_irreps '4x0e\+4x1e' .* with model.product 'gaunt' every irrep needs the parity"):
        build_model({"name": "mace", "product": "gaunt", "hidden_irreps": "4x0e+4x1e"}, statistics)
