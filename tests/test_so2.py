import math

import pytest
import torch
from e3nn import o3

from equinet.ops import CGConvolution, SO2Convolution, edge_wigner_D, so2_weights_from_cg, spherical_harmonics
from equinet.testing import assert_equivariant, assert_float32_matches_float64

# Natural parities only; both classes (1e, 0o, 3e are class -1); scalars in, everything out.
CASES = [
    ("3x0e+3x1o+3x2e", 4, "0e+1o+2e"),
    ("2x0e+2x1o+2x1e+2x2e+2x0o+2x3e", 5, None),
    ("3x0e", 3, None),
]
MIXED = "2x0e+2x1o+2x1e+2x2e+2x0o+2x3o"


def _graph(irreps, num_nodes=7, num_edges=40):
    irreps = o3.Irreps(irreps)
    node_feats = irreps.randn(num_nodes, -1)
    edge_vec = torch.cat(
        [
            torch.tensor([[0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [1e-9, 1.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),
            torch.tensor([[0.5, 1 / math.sqrt(2), 0.5]]),  # on the chart boundary
            2.0 * torch.randn(num_edges - 6, 3),
        ]
    )
    edge_index = torch.randint(0, num_nodes, (2, num_edges))
    return node_feats, edge_vec, edge_index


def _sum_paths(cg_out, cg_irreps, irreps_out):
    """The CG output with the paths to each irrep added, in the order of ``irreps_out``."""
    irreps = [ir for _, ir in irreps_out]
    out = cg_out.new_zeros(cg_out.shape[0], irreps_out.dim)
    targets = irreps_out.slices()
    for piece, (_, ir) in zip(cg_irreps.slices(), cg_irreps):
        out[:, targets[irreps.index(ir)]] += cg_out[:, piece]
    return out


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("irreps, l_edge, filter_ir_out", CASES)
def test_reproduces_the_cg_convolution_with_mapped_weights(float64, irreps, l_edge, filter_ir_out, backend):
    cg = CGConvolution(irreps, o3.Irreps.spherical_harmonics(l_edge), filter_ir_out)
    node_feats, edge_vec, edge_index = _graph(irreps)
    node_feats.requires_grad_(True)
    edge_vec.requires_grad_(True)
    cg_weights = torch.randn(len(edge_vec), cg.weight_numel, requires_grad=True)
    expected = cg(node_feats, spherical_harmonics(l_edge, edge_vec), cg_weights, edge_index)
    channels = o3.Irreps(irreps)[0].mul
    unique = o3.Irreps([(channels, ir) for ir in dict.fromkeys(ir for _, ir in cg.irreps_out)])
    # One output segment per CG path, or the paths to each irrep summed (how eSCN uses it).
    for irreps_out, reference in ((cg.irreps_out, expected), (unique, _sum_paths(expected, cg.irreps_out, unique))):
        so2 = SO2Convolution(irreps, irreps_out, backend=backend)  # m_max = l_max: exact
        out = so2(node_feats, edge_vec, so2_weights_from_cg(cg_weights, cg, so2), edge_index)
        torch.testing.assert_close(out, reference, atol=1e-10, rtol=0)
        probe = torch.randn_like(out)
        leaves = (node_feats, edge_vec, cg_weights)
        for got, want in zip(torch.autograd.grad(out, leaves, probe), torch.autograd.grad(reference, leaves, probe, retain_graph=True)):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_every_weight_is_a_cg_path():
    # m_max = l_max: as many SO(2) weights per irrep pair as CG paths with edge degrees up
    # to l_in + l_out, so the weight map is invertible.
    irreps = "2x0e+2x1o+2x1e+2x2e"
    cg = CGConvolution(irreps, o3.Irreps.spherical_harmonics(4), "0e+1o+1e+2e")
    so2 = SO2Convolution(irreps, "2x0e+2x1o+2x1e+2x2e")
    assert so2.weight_numel == cg.weight_numel
    assert torch.linalg.matrix_rank(so2_weights_from_cg(torch.eye(cg.weight_numel, dtype=torch.float64), cg, so2)) == so2.weight_numel


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("m_max", [0, 1, 2, 3])
def test_equivariant_for_every_m_max(float64, m_max, backend):
    conv = SO2Convolution(MIXED, "2x0e+2x1o+2x1e+2x2e+2x0o+2x3e", m_max, backend=backend)
    node_feats, edge_vec, edge_index = _graph(MIXED)
    weights = torch.randn(len(edge_vec), conv.weight_numel)
    assert_equivariant(
        lambda x, v, w: conv(x, v, w, edge_index), [node_feats, edge_vec, weights], [MIXED, "1o", None], conv.irreps_out, atol=1e-10
    )


@pytest.mark.parametrize("m_max", [1, 2, 3])
def test_independent_of_the_gauge_of_the_edge_frame(float64, m_max):
    # Any rotation about ŷ after R (per edge) is an equally valid frame.
    conv = SO2Convolution(MIXED, MIXED, m_max)
    node_feats, edge_vec, edge_index = _graph(MIXED)
    weights = torch.randn(len(edge_vec), conv.weight_numel)
    angles = 2 * math.pi * torch.rand(len(edge_vec))
    turned = []
    for l, d in enumerate(edge_wigner_D(conv.l_max, edge_vec, m_max)):
        k = (d.shape[1] - 1) // 2
        about_y = o3.wigner_D(l, angles, torch.zeros_like(angles), torch.zeros_like(angles))
        turned.append(about_y[:, l - k : l + k + 1, l - k : l + k + 1] @ d)
    expected = conv(node_feats, edge_vec, weights, edge_index)
    torch.testing.assert_close(conv(node_feats, edge_vec, weights, edge_index, turned), expected, atol=1e-12, rtol=0)


def test_smooth_across_the_chart_boundary_and_on_the_axis(float64):
    # The frame jumps where the chart changes; the convolution must not, and its gradient
    # with respect to the edge vectors must be right there and on ±ŷ.
    conv = SO2Convolution("2x0e+2x1o+2x2e", "2x0e+2x1o+2x2e", m_max=1)
    node_feats = o3.Irreps("2x0e+2x1o+2x2e").randn(3, -1)
    edge_index = torch.tensor([[0, 1, 2, 0, 1], [1, 2, 0, 2, 0]])
    edge_vec = torch.tensor([[0.5, 1 / math.sqrt(2), 0.5], [0.0, -1.0, 0.0], [0.0, 2.0, 0.0], [0.6, -1 / math.sqrt(2), 0.0], [0.3, 0.2, -0.9]])
    weights = torch.randn(5, conv.weight_numel)
    for sign in (1, -1):
        shift = torch.zeros_like(edge_vec)
        shift[0, 1] = shift[3, 1] = sign * 1e-9
        jump = conv(node_feats, edge_vec + shift, weights, edge_index) - conv(node_feats, edge_vec - shift, weights, edge_index)
        assert jump.abs().max() < 1e-7
    assert torch.autograd.gradcheck(lambda v: conv(node_feats, v, weights, edge_index), (edge_vec.requires_grad_(True),))


def test_edge_chunks_do_not_change_the_result(float64):
    # On the CPU the edges are processed in cache-sized chunks; force many small ones.
    conv = SO2Convolution(MIXED, MIXED, m_max=2)
    node_feats, edge_vec, edge_index = _graph(MIXED)
    leaves = [node_feats.requires_grad_(True), edge_vec.requires_grad_(True), torch.randn(len(edge_vec), conv.weight_numel, requires_grad=True)]
    expected = conv(*leaves, edge_index)
    expected_grads = torch.autograd.grad(expected.square().sum(), leaves)
    conv._edge_chunk = 7
    out = conv(*leaves, edge_index)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    for got, want in zip(torch.autograd.grad(out.square().sum(), leaves), expected_grads):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_twice_differentiable(float64, backend):
    # Force training differentiates the forces, i.e. the convolution twice (backend="cpp":
    # the kernel's backward for the first derivative, the torch path's graph for the second).
    conv = SO2Convolution("1x0e+1x1o+1x2e", "1x0e+1x1o+1x2e", m_max=1, backend=backend)
    node_feats, edge_vec, _ = _graph("1x0e+1x1o+1x2e", num_nodes=3, num_edges=6)
    edge_index = torch.tensor([[0, 1, 2, 0, 1, 2], [1, 2, 0, 2, 0, 1]])
    weights = torch.randn(6, conv.weight_numel, requires_grad=True)
    projection = torch.randn(3, conv.irreps_out.dim)
    leaves = (node_feats.requires_grad_(True), edge_vec.requires_grad_(True), weights)
    assert torch.autograd.gradcheck(lambda x, v, w: conv(x, v, w, edge_index), leaves)
    assert torch.autograd.gradgradcheck(lambda x, v, w: (conv(x, v, w, edge_index) * projection).sum(), leaves)


def test_float32_matches_float64():
    conv = SO2Convolution("8x0e+8x1o+8x2e+8x3o", "8x0e+8x1o+8x2e+8x3o", m_max=2).double()
    node_feats, edge_vec, edge_index = _graph("8x0e+8x1o+8x2e+8x3o")
    weights = torch.randn(len(edge_vec), conv.weight_numel)
    assert_float32_matches_float64(conv, [node_feats.double(), edge_vec.double(), weights.double(), edge_index])


def test_weight_layout_and_isolated_nodes():
    conv = SO2Convolution("4x0e+4x1o+4x2e", "4x0e+4x1o+4x2e", m_max=1)
    assert conv.blocks == [(0, [0, 1, 2], [0, 1, 2]), (1, [1, 2], [1, 2])]
    assert conv.weight_numel == 4 * (3 * 3 + 2 * 2)
    node_feats = o3.Irreps("4x0e+4x1o+4x2e").randn(5, -1)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 0, 1, 0]])
    out = conv(node_feats, torch.randn(4, 3), torch.randn(4, conv.weight_numel), edge_index)
    assert out.shape == (5, conv.irreps_out.dim) and out[2:].abs().max() == 0
    no_edges = conv(node_feats, torch.zeros(0, 3), torch.zeros(0, conv.weight_numel), torch.zeros(2, 0, dtype=torch.long))
    assert no_edges.shape == (5, conv.irreps_out.dim) and no_edges.abs().max() == 0


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_sums_into_num_receivers_rows(float64, backend):
    # A block of receivers sums into rows of its own: receivers index the output's rows;
    # the gradients are those of the same rows of the convolution over all nodes.
    conv = SO2Convolution(MIXED, MIXED, m_max=2, backend=backend)
    node_feats, edge_vec, edge_index = _graph(MIXED, num_nodes=9)
    edge_index[1] %= 4
    leaves = [node_feats.requires_grad_(True), edge_vec.requires_grad_(True), torch.randn(len(edge_vec), conv.weight_numel, requires_grad=True)]
    out = conv(*leaves, edge_index, num_receivers=4)
    assert out.shape == (4, conv.irreps_out.dim)
    expected = conv(*leaves, edge_index)[:4]
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    for got, want in zip(torch.autograd.grad(out.square().sum(), leaves), torch.autograd.grad(expected.square().sum(), leaves)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_degree_and_channel_shorthand():
    conv = SO2Convolution((3, 4), m_max=2)
    assert conv.irreps_in == conv.irreps_out == o3.Irreps("4x0e+4x1o+4x2e+4x3o") and conv.m_max == 2
    assert SO2Convolution((2, 4), "4x0e+4x1o").irreps_out == o3.Irreps("4x0e+4x1o")
    with pytest.raises(ValueError, match=r"irreps_in as \(l_max, channels\) needs l_max >= 0 and channels >= 1, got \(2, 0\)"):
        SO2Convolution((2, 0))


@pytest.fixture
def poisoned_empty(monkeypatch):
    """Every floating ``torch.empty`` (how the cpp backend allocates the gradients it writes
    whole) comes back filled with NaN, so an element the kernel does not write shows up."""
    empty = torch.empty

    def poisoned(*args, **kwargs):
        out = empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", poisoned)


def _forward_and_grads(conv, node_feats, edge_vec, weights, edge_index, wigner_of=None):
    """The output and the gradients of a random projection of it; ``wigner_of(edge_vec)`` gives
    the Wigner matrices to pass (the convolution's own by default)."""
    leaves = [t.detach().requires_grad_(True) for t in (node_feats, edge_vec, weights)]
    out = conv(*leaves, edge_index, None if wigner_of is None else wigner_of(leaves[1]))
    probe = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    return [out, *torch.autograd.grad((out * probe).sum(), leaves)]


# (irreps_in, irreps_out, m_max): both classes, an input no output uses (0o at m_max 0), an
# output component no block writes (m = 0 of 1e), channels that are and are not whole
# 64-byte vectors in float64 (2, 3 padded to 8 and 8: slabs of 1 vector; 12 padded to 16: 2;
# 32: 4).
CPP_CASES = [
    (MIXED, "2x0e+2x1o+2x1e+2x2e+2x0o+2x3e", 2),
    ("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o+3x2e+3x3o", None),
    ("8x0e+8x1o+8x0o", "8x0e+8x1o", 0),
    ("8x0e+8x1o+8x2e", "8x0e+8x1e+8x2e", 1),
    ("32x0e+32x1o+32x2e", "32x0e+32x1o+32x2e", 1),
    ("12x0e+12x1o+12x2e+12x3o+12x4e", "12x0e+12x1o+12x2e+12x3o+12x4e", 2),
]


@pytest.mark.parametrize("irreps_in, irreps_out, m_max", CPP_CASES)
def test_cpp_kernel_matches_the_torch_convolution(float64, poisoned_empty, irreps_in, irreps_out, m_max):
    torch_conv = SO2Convolution(irreps_in, irreps_out, m_max)
    cpp_conv = SO2Convolution(irreps_in, irreps_out, m_max, backend="cpp")
    node_feats, edge_vec, edge_index = _graph(irreps_in, num_nodes=9, num_edges=60)
    edge_index[:, :5] = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 0, 0, 0]])  # repeated pairs; nodes without edges
    edge_index[edge_index == 8] = 7
    weights = torch.randn(len(edge_vec), torch_conv.weight_numel)
    expected = _forward_and_grads(torch_conv, node_feats, edge_vec, weights, edge_index)
    for got, want in zip(_forward_and_grads(cpp_conv, node_feats, edge_vec, weights, edge_index), expected):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    # Wigner matrices shared with wider convolutions (more degrees and rows) and strided weights.
    wide = lambda v: edge_wigner_D(torch_conv.l_max + 1, v, torch_conv.m_max + 1)
    strided = torch.randn(weights.shape[1], len(edge_vec)).T.copy_(weights)
    got = _forward_and_grads(cpp_conv, node_feats, edge_vec, strided, edge_index, wide)
    for got, want in zip(got, expected):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    no_edges = [torch.zeros(0, 3), torch.zeros(0, cpp_conv.weight_numel), torch.zeros(2, 0, dtype=torch.long)]
    out, *grads = _forward_and_grads(cpp_conv, node_feats, *no_edges[:2], no_edges[2])
    assert out.abs().max() == 0 and grads[0].abs().max() == 0 and grads[1].shape == (0, 3)


def test_cpp_kernel_in_float32_on_two_threads(poisoned_empty):
    # Many edges into few nodes: the threads' edge ranges end where the node changes.
    irreps = "16x0e+16x1o+16x2e+16x3o"
    torch_conv, cpp_conv = SO2Convolution(irreps, irreps, 2), SO2Convolution(irreps, irreps, 2, backend="cpp")
    node_feats, edge_vec, _ = _graph(irreps, num_nodes=12, num_edges=3000)
    edge_index = torch.randint(0, 12, (2, 3000))
    weights = torch.randn(3000, torch_conv.weight_numel)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = _forward_and_grads(cpp_conv, node_feats, edge_vec, weights, edge_index)
    finally:
        torch.set_num_threads(threads)
    for got, want in zip(got, _forward_and_grads(torch_conv, node_feats, edge_vec, weights, edge_index)):
        torch.testing.assert_close(got, want, atol=2e-5 * want.abs().max().item(), rtol=0)


def test_cpp_backend_errors_are_one_line():
    conv = SO2Convolution("2x0e+2x1o", "2x0e+2x1o", m_max=1, backend="cpp")
    edge_index = torch.randint(0, 3, (2, 5))
    with pytest.raises(ValueError, match=r"^backend='cpp' runs on the CPU, but got node_feats on meta, edge_weights on meta"):
        conv(torch.empty(3, 8, device="meta"), torch.randn(5, 3), torch.empty(5, conv.weight_numel, device="meta"), edge_index)
    with pytest.raises(ValueError, match=r"^backend='cpp' needs float32 or float64 inputs of one dtype, got torch.float64 "
                       r"\(node_feats\), torch.float32 \(edge_weights\), torch.float32 \(edge_vec\)$"):
        conv(torch.randn(3, 8, dtype=torch.float64), torch.randn(5, 3), torch.randn(5, conv.weight_numel), edge_index)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same multiplicity"):
        SO2Convolution("4x0e+2x1o", "4x0e+4x1o")
    with pytest.raises(ValueError, match=r"output irreps 0o of '2x0e\+2x0o' receive nothing"):
        SO2Convolution("2x0e+2x1o", "2x0e+2x0o", m_max=0)
    with pytest.raises(ValueError, match="m_max must be a non-negative integer"):
        SO2Convolution("2x0e", "2x0e", m_max=-1)
    with pytest.raises(ValueError, match="irreps_in must be e3nn irreps"):
        SO2Convolution("2 scalars", "2x0e")
    conv = SO2Convolution("2x0e+2x1o", "2x0e+2x1o", m_max=1)
    node_feats, edge_vec, edge_index = o3.Irreps("2x0e+2x1o").randn(3, -1), torch.randn(5, 3), torch.randint(0, 3, (2, 5))
    with pytest.raises(ValueError, match=r"node_feats has 7 features but irreps_in '2x0e\+2x1o' has dim 8"):
        conv(torch.randn(3, 7), edge_vec, torch.randn(5, conv.weight_numel), edge_index)
    with pytest.raises(ValueError, match=rf"edge_weights must have shape \[5, {conv.weight_numel}\]"):
        conv(node_feats, edge_vec, torch.randn(5, 3), edge_index)
    with pytest.raises(ValueError, match=r"edge_index must have shape \[2, 5\]"):
        conv(node_feats, edge_vec, torch.randn(5, conv.weight_numel), edge_index.T)
    with pytest.raises(ValueError, match=r"wigner must be edge_wigner_D\(l_max >= 1, edge_vec, m_max >= 1\)"):
        conv(node_feats, edge_vec, torch.randn(5, conv.weight_numel), edge_index, edge_wigner_D(1, edge_vec, m_max=0))
    cg = CGConvolution("2x0e+2x1o", o3.Irreps.spherical_harmonics(2), "0e+1o")
    with pytest.raises(ValueError, match=r"needs m = 1 but the SO\(2\) convolution keeps m <= 0"):
        so2_weights_from_cg(torch.randn(5, cg.weight_numel), cg, SO2Convolution("2x0e+2x1o", "2x0e+2x1o", m_max=0))
