"""Gaunt tensor products (sphere grid and 2D FFT) and the Gaunt many-body product against
dense references built from Gaunt coefficients (and, for the odd paths, from integrals of
the bracket of two harmonics); equivariance, parity, gradients."""

import math
from functools import lru_cache

import numpy as np
import pytest
import torch
from e3nn import o3

from equinet.ops import GauntManyBodyProduct, GauntTensorProduct, gaunt_coefficients, spherical_harmonics
from equinet.ops.gaunt import product as gaunt  # the module that chunks the batch
from equinet.testing import assert_equivariant, assert_float32_matches_float64


def _z_polar_grid():
    """A plain rule (polar axis z here, unlike the module's y): Gauss–Legendre in z, uniform in
    phi; exact for polynomials of degree <= 39 on the sphere."""
    z, w = np.polynomial.legendre.leggauss(20)
    phi = np.arange(41) * 2 * np.pi / 41
    rho = np.sqrt(1 - z**2)
    points = np.stack(np.broadcast_arrays(rho[:, None] * np.cos(phi), rho[:, None] * np.sin(phi), z[:, None]), -1)
    return torch.from_numpy(points.reshape(-1, 3)), torch.from_numpy(np.repeat(w, 41) * 2 * np.pi / 41)


def _quadrature_gaunt(l1, l2, l3):
    """int Y Y Y by quadrature."""
    points, weights = _z_polar_grid()
    y = spherical_harmonics(max(l1, l2, l3), points).numpy()
    y1, y2, y3 = (y[:, l * l : (l + 1) ** 2] for l in (l1, l2, l3))
    return np.einsum("p,pa,pb,pc->abc", weights.numpy(), y1, y2, y3)


@lru_cache(maxsize=None)
def _bracket_integrals(l_max):
    """``B[i, j, k] = int r . (grad Y_i x grad Y_j) Y_k`` over all components up to l_max (e3nn order),
    with ``Y`` extended off the sphere as homogeneous polynomials, by quadrature."""
    points, weights = _z_polar_grid()
    gradients = torch.func.vmap(torch.func.jacrev(lambda r: spherical_harmonics(l_max, r, normalize=False)))(points)
    brackets = torch.einsum("pa,pib,pjc,abc->pij", points, gradients, gradients, _levi_civita())
    return torch.einsum("p,pij,pk->ijk", weights, brackets, spherical_harmonics(l_max, points))


def _levi_civita():
    eps = torch.zeros(3, 3, 3, dtype=torch.float64)
    for a, b, c in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
        eps[a, b, c], eps[a, c, b] = 1.0, -1.0
    return eps


def _bracket_coefficients(l1, l2, l3):
    block = [slice(l * l, (l + 1) ** 2) for l in (l1, l2, l3)]
    return _bracket_integrals(max(l1, l2, l3))[block[0], block[1], block[2]]


@pytest.mark.parametrize("degrees", [(0, 2, 2), (1, 1, 2), (1, 1, 1), (2, 3, 3), (3, 4, 5), (2, 2, 6), (4, 4, 4)])
def test_gaunt_coefficients_are_integrals_of_three_harmonics(degrees):
    expected = _quadrature_gaunt(*degrees)
    np.testing.assert_allclose(gaunt_coefficients(*degrees).numpy(), expected, atol=1e-12)
    l1, l2, l3 = degrees
    torch.testing.assert_close(gaunt_coefficients(l2, l1, l3), gaunt_coefficients(l1, l2, l3).transpose(0, 1))
    torch.testing.assert_close(gaunt_coefficients(l3, l2, l1), gaunt_coefficients(l1, l2, l3).permute(2, 1, 0))


def test_the_bracket_couples_exactly_the_odd_paths():
    """int {Y_l1, Y_l2} Y_l3 is a nonzero multiple of the Wigner-3j symbol when l1 + l2 + l3 is odd
    and the triangle holds (one invariant per odd path), and zero otherwise."""
    for l1 in range(5):
        for l2 in range(5):
            for l3 in range(5):
                b = _bracket_coefficients(l1, l2, l3)
                if (l1 + l2 + l3) % 2 == 0 or not abs(l1 - l2) <= l3 <= l1 + l2:
                    assert b.abs().max() < 1e-10, (l1, l2, l3)
                    continue
                c = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
                alpha = (b * c).sum() / c.square().sum()
                assert abs(alpha) > 0.1, (l1, l2, l3)
                torch.testing.assert_close(b, alpha * c, atol=1e-10, rtol=0)


def _functions(irreps, x, weights):
    """``{l: [n, C, 2l+1]}``: the weighted coefficients of each degree, from e3nn's layout."""
    n = x.shape[0]
    return {ir.l: x[:, s].view(n, mul, ir.dim) * weights[:, i, None] for i, ((mul, ir), s) in enumerate(zip(irreps, irreps.slices()))}


def _dense_product(a, b, degrees_out, odd=False):
    """``{L: (1/4pi) sum G(l1, l2, L) a_l1 b_l2}`` for L in degrees_out (with ``odd``, the bracket
    integrals of the paths with ``l1 + l2 + L`` odd instead), explicit sums over the paths
    (skipping those that the selection rule zeroes, which the quadrature tests cover)."""
    coefficients = _bracket_coefficients if odd else gaunt_coefficients
    out = {}
    for L in degrees_out:
        out[L] = sum(
            torch.einsum("ijk,nci,ncj->nck", coefficients(l1, l2, L).to(x1.dtype) / (4 * math.pi), x1, x2)
            for l1, x1 in a.items()
            for l2, x2 in b.items()
            if (l1 + l2 + L) % 2 == int(odd) and abs(l1 - l2) <= L <= l1 + l2
        )
    return out


def _sign(irreps):
    return irreps[0].ir.p * (-1) ** irreps[0].ir.l


def _dense_tensor_product(tp, x1, x2):
    a = _functions(tp.irreps_in1, x1, tp.weight_in1)
    b = _functions(tp.irreps_in2, x2, tp.weight_in2)
    sign = _sign(tp.irreps_in1) * _sign(tp.irreps_in2)
    outs = []
    for i, (_, ir) in enumerate(tp.irreps_out):
        odd = ir.p != sign * (-1) ** ir.l
        outs.append((_dense_product(a, b, [ir.l], odd)[ir.l] * tp.weight_out[:, i, None]).flatten(1))
    return torch.cat(outs, dim=1)


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
    "all parities": lambda L: _all_parities(L, range(L + 1), sorted({1, L})),
}


def _all_parities(l_max, degrees1, degrees2):
    """Every output up to l_max in both parities that the Gaunt product or the bracket reaches."""
    irreps = []
    for L in range(l_max + 1):
        paths = {(l1 + l2 + L) % 2 for l1 in degrees1 for l2 in degrees2 if abs(l1 - l2) <= L <= l1 + l2}
        irreps += [(2, (L, (-1) ** (L + odd))) for odd in sorted(paths)]
    return _sh_irreps(2, degrees1), _sh_irreps(2, degrees2), o3.Irreps(irreps)


def _mixed(l_max, degrees1, degrees2):
    """Inputs with different, gapped, unsorted degrees; every reachable output up to l_max + 1."""
    reachable = {L for l1 in degrees1 for l2 in degrees2 for L in range(abs(l1 - l2), l1 + l2 + 1, 2)}
    return _sh_irreps(2, degrees1), _sh_irreps(2, degrees2), _sh_irreps(2, sorted(L for L in reachable if L <= l_max + 1))


# The torch methods, and the grid on the C++ kernel (compiled on first use).
METHODS_AND_BACKENDS = [("grid", "torch"), ("fft", "torch"), ("grid", "cpp")]


@pytest.mark.parametrize("method", ["grid", "fft"])
@pytest.mark.parametrize("l_max", range(1, 9))
def test_tensor_product_matches_the_dense_reference(float64, method, l_max):
    for case, irreps in CASES.items():
        tp = _randomize(GauntTensorProduct(*irreps(l_max), method=method))
        x1, x2 = tp.irreps_in1.randn(6, -1), tp.irreps_in2.randn(6, -1)
        expected = _dense_tensor_product(tp, x1, x2)
        error = (tp(x1, x2) - expected).abs().max() / expected.abs().max()
        assert error < 1e-10, f"{case}: relative error {error:.1e}"


@pytest.mark.parametrize("method, backend", METHODS_AND_BACKENDS)
def test_leading_dimensions_and_empty_batches(float64, method, backend):
    tp = _randomize(GauntTensorProduct("2x0e+2x1o", "2x0e+2x1o", "2x0e+2x1o+2x2e", method=method, backend=backend))
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
        ("3x0e+3x1o+3x2e", "3x1o+3x2e", "3x0e+3x1e+3x1o+3x2o+3x2e+3x3e+3x3o"),  # both parities: bracket too
        ("2x0o+2x1e+2x2o", "2x0e+2x1o", "2x0o+2x1o+2x1e+2x2e+2x2o+2x3e"),  # the bracket of s = -1 and s = +1
        ("2x1o+2x2e", "1o+2e", "2x1e+2x2o+2x3e"),  # the bracket alone, shared second input
    ],
)
def test_tensor_product_is_equivariant(float64, method, irreps):
    tp = _randomize(GauntTensorProduct(*irreps, method=method))
    x1, x2 = tp.irreps_in1.randn(5, -1), tp.irreps_in2.randn(5, -1)
    assert_equivariant(tp, [x1, x2], [tp.irreps_in1, tp.irreps_in2], tp.irreps_out, atol=1e-10)
    torch.testing.assert_close(tp(x1, x2), _dense_tensor_product(tp, x1, x2), atol=1e-10, rtol=1e-10)


def test_the_methods_agree_in_float32(float64):
    irreps = "8x0e+8x1o+8x2e+8x3o"
    grid = _randomize(GauntTensorProduct(irreps, irreps, "8x0e+8x1o+8x1e+8x2e+8x2o+8x3o+8x3e"))
    fft = GauntTensorProduct(grid.irreps_in1, grid.irreps_in2, grid.irreps_out, method="fft")
    fft.load_state_dict(grid.state_dict())
    x1, x2 = grid.irreps_in1.randn(20, -1), grid.irreps_in2.randn(20, -1)
    torch.testing.assert_close(fft(x1, x2), grid(x1, x2), atol=1e-10, rtol=1e-10)
    assert_float32_matches_float64(grid, [x1, x2], rtol=1e-5)
    assert_float32_matches_float64(fft, [x1, x2], rtol=1e-5)


@pytest.mark.parametrize("method, backend", METHODS_AND_BACKENDS)
@pytest.mark.parametrize("in2", ["2x0e+2x1o", "0e+1o"])  # channel-wise and shared by all channels
@pytest.mark.parametrize("out", ["2x0e+2x1o+2x2e+2x3o", "2x0e+2x1e+2x1o+2x2o"])  # Gaunt paths; with the bracket
def test_gradients_twice(float64, method, backend, in2, out, monkeypatch):
    monkeypatch.setattr(gaunt, "_CHUNK_VALUES", 1)  # one row per chunk: the chunks must join up
    tp = _randomize(GauntTensorProduct("2x0e+2x1o+2x2e", in2, out, method=method, backend=backend))
    names = [name for name, _ in tp.named_parameters()]

    def fn(x1, x2, *weights):
        return torch.func.functional_call(tp, dict(zip(names, weights)), (x1, x2))

    inputs = [tp.irreps_in1.randn(3, -1), tp.irreps_in2.randn(3, -1), *(p.detach() for p in tp.parameters())]
    inputs = [x.clone().requires_grad_() for x in inputs]
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("method, backend", METHODS_AND_BACKENDS)
@pytest.mark.parametrize("in2", ["0e+1o+2e", "3x1o+3x2e"])
@pytest.mark.parametrize("out", ["3x0e+3x1o+3x2e", "3x0e+3x1o+3x1e+3x2e+3x2o"])  # Gaunt paths; with the bracket
def test_one_pass_and_composed_gradients_agree(float64, method, backend, in2, out):
    """A backward pass without a graph runs fused; with create_graph, as Gaunt products (brackets) again."""
    tp = _randomize(GauntTensorProduct("3x0e+3x1o+3x2e+3x3o", in2, out, method=method, backend=backend))
    x1 = tp.irreps_in1.randn(7, -1).requires_grad_()
    x2 = tp.irreps_in2.randn(7, -1).requires_grad_()
    out = tp(x1, x2)
    probe = torch.randn_like(out)
    inputs = [x1, x2, *tp.parameters()]
    fused = torch.autograd.grad(out, inputs, probe, retain_graph=True)
    composed = torch.autograd.grad(out, inputs, probe, create_graph=True)
    for a, b in zip(fused, composed):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    for a, b in zip(torch.autograd.grad(_dense_tensor_product(tp, x1, x2), inputs, probe), fused):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # Only some gradients asked for: the one pass skips the rest.
    for index in range(len(inputs)):
        (alone,) = torch.autograd.grad(tp(x1, x2), inputs[index], probe)
        torch.testing.assert_close(alone, fused[index], atol=1e-12, rtol=1e-10)


@pytest.fixture
def poisoned_empty(monkeypatch):
    """Every floating ``torch.empty`` (how the products allocate their outputs) comes back filled
    with NaN, so an element that the C++ kernel does not write shows up."""
    empty = torch.empty

    def poisoned(*args, **kwargs):
        out = empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", poisoned)


def _on_cpp(tp):
    """``tp`` on the C++ kernel, with its weights."""
    twin = GauntTensorProduct(tp.irreps_in1, tp.irreps_in2, tp.irreps_out, backend="cpp").to(tp.weight_in1.dtype)
    twin.load_state_dict(tp.state_dict())
    return twin


def _values_and_gradients(tp, x1, x2, probe):
    """The output and the gradients of ``<probe, out>`` for both inputs and every weight."""
    leaves = [x1.clone().requires_grad_(), x2.clone().requires_grad_()]
    out = tp(*leaves)
    return [out.detach(), *torch.autograd.grad(out, [*leaves, *tp.parameters()], probe)]


CPP_CASES = {
    **CASES,
    # Channel blocks of 4 with a partial one, channel-wise and shared second inputs, both parities.
    "six channels": lambda L: tuple(_sh_irreps(6, range(L + 1)) for _ in range(3)),
    "five, shared": lambda L: (
        _sh_irreps(5, range(L + 1)),
        _sh_irreps(1, range(L + 1)),
        o3.Irreps([(5, ir) for _, ir in _all_parities(L, range(L + 1), range(L + 1))[2]]),
    ),
}


@pytest.mark.parametrize("l_max", range(1, 9))
def test_cpp_kernel_matches_the_torch_product(float64, poisoned_empty, l_max):
    for case, irreps in CPP_CASES.items():
        tp = _randomize(GauntTensorProduct(*irreps(l_max)))
        x1, x2 = tp.irreps_in1.randn(9, -1), tp.irreps_in2.randn(9, -1)
        probe = tp.irreps_out.randn(9, -1)
        for name, got, want in zip(
            ["out", "x1", "x2", "weight_in1", "weight_in2", "weight_out"],
            _values_and_gradients(_on_cpp(tp), x1, x2, probe),
            _values_and_gradients(tp, x1, x2, probe),
        ):
            error = (got - want).abs().max() / want.abs().max()
            assert error < 1e-10, f"{case}, {name}: relative error {error:.1e}"


def test_cpp_kernel_in_float32_on_two_threads(float64):
    """MACE-like sizes (several vector tiles per matrix), rows split between threads (the
    weight gradients are summed over them), float32 against the float64 result."""
    irreps = _sh_irreps(32, range(7))
    tp = _randomize(GauntTensorProduct(irreps, irreps, irreps))
    x1, x2, probe = irreps.randn(150, -1), irreps.randn(150, -1), irreps.randn(150, -1)  # >= 64 rows per thread
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = _values_and_gradients(tp, x1, x2, probe)
        results = _values_and_gradients(_on_cpp(tp).float(), x1.float(), x2.float(), probe.float())
    finally:
        torch.set_num_threads(threads)
    for got, want in zip(results, expected):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_cpp_backend_errors_are_one_line(float64, monkeypatch):
    with pytest.raises(ValueError, match="backend='cpp' runs the sphere grid: it needs method='grid'"):
        GauntTensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", method="fft", backend="cpp")
    tp = GauntTensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="cpp")
    with pytest.raises(ValueError, match="backend='cpp' runs on the CPU, but the inputs are on meta"):
        tp(torch.empty(3, 8, device="meta"), torch.empty(3, 4, device="meta"))
    with pytest.raises(ValueError, match="needs float32 or float64 inputs of the weights' dtype, got torch.float32 and"):
        tp(torch.randn(3, 8, dtype=torch.float32), torch.randn(3, 4))
    # A machine where the kernel does not build: the compiler's error in one line, and the way out.
    from torch.utils import cpp_extension

    from equinet.ops.kernels.cpp import build as cpp_build

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension 'equinet_cpu_kernels'\n... long build log ...\ng++: not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    cpp_build.load_cpp.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"^backend='cpp' compiles the C\+\+ CPU kernels \(gaunt_cpp.cpp, so2_cpp.cpp, bindings.cpp\) "
                           r"on first use, which failed \(g\+\+: not found\); it needs g\+\+ and ninja \(pip install ninja\), or use backend='torch'$"):
            tp(tp.irreps_in1.randn(3, -1), tp.irreps_in2.randn(3, -1))
    finally:
        cpp_build.load_cpp.cache_clear()


def test_unreachable_or_malformed_irreps_are_named():
    odd = r"\|l1 - l2\| < L < l1 \+ l2 with l1 \+ l2 \+ L odd; reachable: 0e\+1o\+1e\+2e$"
    with pytest.raises(ValueError, match=r"^irreps_out has 0o, which the product of '4x0e\+4x1o' and '4x0e\+4x1o' .*" + odd):
        GauntTensorProduct("4x0e+4x1o", "4x0e+4x1o", "4x0o")
    with pytest.raises(ValueError, match=r"irreps_out has 3o, .* does not reach: .* even; reachable: 0e\+1o\+1e\+2e$"):
        GauntTensorProduct("4x0e+4x1o", "4x1o", "4x3o")
    with pytest.raises(ValueError, match="mixes parities"):
        GauntTensorProduct("4x0e+4x1e", "4x0e", "4x0e")
    with pytest.raises(ValueError, match="each degree once"):
        GauntTensorProduct("4x0e+4x1o+4x1o", "4x0e", "4x0e")
    with pytest.raises(ValueError, match=r"irreps_out '4x1e\+4x1e' must have one multiplicity C for every irrep and each degree once"):
        GauntTensorProduct("4x1o", "4x1o", "4x1e+4x1e")
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
