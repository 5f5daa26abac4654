import pytest
import torch

from equinet.ops import BesselBasis, CosineCutoff, ExpNormalBasis, GaussianBasis, PolynomialCutoff
from equinet.testing import assert_float32_matches_float64

CUTOFF = 4.5


def _derivatives(envelope, r):
    r = r.clone().requires_grad_()
    f = envelope(r)
    (d1,) = torch.autograd.grad(f.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    return f.detach(), d1.detach(), d2


@pytest.mark.parametrize("envelope", [PolynomialCutoff(CUTOFF), PolynomialCutoff(CUTOFF, p=3), CosineCutoff(CUTOFF)])
def test_envelopes_vanish_smoothly_at_the_cutoff(float64, envelope):
    f, d1, d2 = _derivatives(envelope, torch.tensor([CUTOFF * (1 - 1e-7), CUTOFF, CUTOFF * 1.3]))
    assert f.abs().max() < 1e-12 and d1.abs().max() < 1e-9 and d2.abs().max() < 1e-5
    f, d1, _ = _derivatives(envelope, torch.linspace(0, CUTOFF, 200))
    assert f[0] == pytest.approx(1.0)
    assert (d1 <= 1e-12).all(), "envelope must decrease monotonically"
    assert ((0 <= f) & (f <= 1)).all()


def test_plain_cosine_would_fail_the_smoothness_test(float64):
    # Guards the reason CosineCutoff is squared: Behler's form has f'' != 0 at r_c.
    r = torch.tensor([CUTOFF * (1 - 1e-7)], requires_grad=True)
    f = 0.5 * (1 + torch.cos(torch.pi * r / CUTOFF))
    (d1,) = torch.autograd.grad(f.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    assert d2.abs().item() > 0.1


def test_bessel_basis_values_and_origin(float64):
    basis = BesselBasis(CUTOFF, num_basis=6)
    r = torch.tensor([0.0, 1.0, 2.5])
    n = torch.arange(1, 7)
    expected = (2 / CUTOFF) ** 0.5 * torch.sin(n * torch.pi * r[1:, None] / CUTOFF) / r[1:, None]
    out = basis(r)
    torch.testing.assert_close(out[1:], expected)
    torch.testing.assert_close(out[0], (2 / CUTOFF) ** 0.5 * n * torch.pi / CUTOFF)  # sin(wr)/r -> w
    r = r.requires_grad_()
    (grad,) = torch.autograd.grad(basis(r).sum(), r)
    assert torch.isfinite(grad).all()


def test_trainable_bases_have_parameters():
    assert len(list(BesselBasis(CUTOFF, trainable=True).parameters())) == 1
    assert len(list(GaussianBasis(CUTOFF, trainable=True).parameters())) == 2
    assert len(list(BesselBasis(CUTOFF).parameters())) == 0


def test_gaussian_basis_peaks_at_centres(float64):
    basis = GaussianBasis(CUTOFF, num_basis=10, start=0.5)
    out = basis(basis.centres)
    torch.testing.assert_close(out.diagonal(), torch.ones(10))
    assert out.argmax(dim=1).tolist() == list(range(10))


def test_exp_normal_basis_peaks_where_exp_minus_alpha_r_meets_its_means(float64):
    basis = ExpNormalBasis(CUTOFF, num_basis=16)
    peaks = -torch.log(basis.means[1:]) / basis.alpha  # r with exp(-alpha r) = mu_k
    values = basis(peaks)
    torch.testing.assert_close(values.diagonal(offset=1), torch.ones(15))
    assert ((basis(torch.linspace(0, CUTOFF, 50)) > 0) & (basis(torch.linspace(0, CUTOFF, 50)) <= 1)).all()
    assert len(list(ExpNormalBasis(CUTOFF, trainable=True).parameters())) == 2


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: BesselBasis(0.0), "cutoff"),
        (lambda: BesselBasis(5.0, num_basis=0), "num_basis"),
        (lambda: ExpNormalBasis(-1.0), "cutoff"),
        (lambda: GaussianBasis(5.0, start=6.0), "start"),
        (lambda: GaussianBasis(5.0, width=-1.0), "width"),
        (lambda: PolynomialCutoff(5.0, p=1), "p must be"),
        (lambda: CosineCutoff(-2.0), "cutoff"),
    ],
)
def test_bad_arguments_name_the_problem(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "module", [BesselBasis(CUTOFF), GaussianBasis(CUTOFF), PolynomialCutoff(CUTOFF), CosineCutoff(CUTOFF)]
)
def test_float32_matches_float64(module):
    r = torch.linspace(0.1, CUTOFF * 1.1, 100, dtype=torch.float64)
    assert_float32_matches_float64(module, [r], rtol=1e-5)
