import pytest
import torch
from e3nn import o3

from equinet.ops import (
    CGConvolution,
    ChannelwiseTensorProduct,
    FullyConnectedTensorProduct,
    Linear,
    spherical_harmonics,
)
from equinet.testing import assert_equivariant, assert_float32_matches_float64

SH3 = o3.Irreps.spherical_harmonics(3)
# Equal and mixed multiplicities, both parities, an unsimplified repeat, scalars only.
NODE_IRREPS = ["8x0e+8x1o+8x2e", "5x0e+3x1e+4x1o+2x0o+2x3o+3x0e", "6x0e"]
FILTERS = [None, "0e+1o+2e+3o"]


def _graph(irreps, num_nodes=13, num_edges=60, requires_grad=False):
    irreps = o3.Irreps(irreps)
    node_feats = irreps.randn(num_nodes, -1, requires_grad=requires_grad)
    edge_attrs = spherical_harmonics(3, torch.randn(num_edges, 3)).requires_grad_(requires_grad)
    edge_index = torch.randint(0, num_nodes, (2, num_edges))
    return node_feats, edge_attrs, edge_index


@pytest.mark.parametrize("irreps_out", FILTERS)
@pytest.mark.parametrize("irreps", NODE_IRREPS)
def test_conv_backends_agree_with_gradients(float64, irreps, irreps_out):
    reference = CGConvolution(irreps, SH3, irreps_out, backend="e3nn")
    ours = CGConvolution(irreps, SH3, irreps_out, backend="torch")
    assert ours.irreps_out == reference.irreps_out and ours.weight_numel == reference.weight_numel
    node_feats, edge_attrs, edge_index = _graph(irreps, requires_grad=True)
    weights = torch.randn(edge_index.shape[1], ours.weight_numel, requires_grad=True)
    leaves = [node_feats, edge_attrs, weights]
    expected, out = reference(*leaves, edge_index), ours(*leaves, edge_index)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)
    probe = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, leaves, probe), torch.autograd.grad(expected, leaves, probe)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("irreps", NODE_IRREPS)
def test_channelwise_backends_agree(float64, irreps):
    reference = ChannelwiseTensorProduct(irreps, "0e+1o+2e", backend="e3nn")
    ours = ChannelwiseTensorProduct(irreps, "0e+1o+2e")
    x1 = o3.Irreps(irreps).randn(40, -1)
    x2 = torch.randn(40, 9)
    weights = torch.randn(40, ours.weight_numel)
    torch.testing.assert_close(ours(x1, x2, weights), reference(x1, x2, weights), atol=1e-10, rtol=0)


def test_output_irreps_are_sorted_paths_with_input_multiplicity():
    conv = CGConvolution("4x0e+2x1o", "0e+1o", "0e+1o+1e")
    assert conv.irreps_out == o3.Irreps("4x0e+2x0e+4x1o+2x1o+2x1e")
    assert conv.weight_numel == 4 + 2 + 4 + 2 + 2


@pytest.mark.parametrize("backend", ["torch", "e3nn"])
def test_conv_is_equivariant(float64, backend):
    irreps = "4x0e+3x1o+2x1e+2x2e+1x3o"
    conv = CGConvolution(irreps, SH3, backend=backend)
    node_feats, edge_attrs, edge_index = _graph(irreps)
    weights = torch.randn(edge_index.shape[1], conv.weight_numel)
    assert_equivariant(
        conv, [node_feats, edge_attrs, weights, edge_index], [irreps, SH3, None, None], conv.irreps_out, atol=1e-10
    )


def test_conv_is_permutation_equivariant(float64):
    irreps = "4x0e+3x1o+2x2e"
    conv = CGConvolution(irreps, SH3)
    node_feats, edge_attrs, edge_index = _graph(irreps)
    weights = torch.randn(edge_index.shape[1], conv.weight_numel)
    order = torch.randperm(node_feats.shape[0])  # new node k is old node order[k]
    new_label = torch.argsort(order)
    edge_order = torch.randperm(edge_index.shape[1])
    permuted = conv(node_feats[order], edge_attrs[edge_order], weights[edge_order], new_label[edge_index[:, edge_order]])
    torch.testing.assert_close(permuted, conv(node_feats, edge_attrs, weights, edge_index)[order])


@pytest.mark.parametrize("backend", ["torch", "e3nn"])
def test_channelwise_fully_connected_and_linear_are_equivariant(float64, backend):
    irreps = o3.Irreps("4x0e+3x1o+2x1e+2x2e")
    x1, x2 = irreps.randn(20, -1), SH3.randn(20, -1)
    tp = ChannelwiseTensorProduct(irreps, SH3, backend=backend)
    assert_equivariant(tp, [x1, x2, torch.randn(20, tp.weight_numel)], [irreps, SH3, None], tp.irreps_out)
    fc = FullyConnectedTensorProduct(irreps, SH3, "5x0e+4x1o+3x2e+2x3o")
    assert_equivariant(fc, [x1, x2], [irreps, SH3], fc.irreps_out)
    linear = Linear(irreps, "6x0e+5x1o+2x2e")
    assert_equivariant(linear, [x1], [irreps], linear.irreps_out)


@pytest.mark.parametrize("backend", ["torch", "e3nn"])
def test_conv_float32_matches_float64(backend):
    irreps = "8x0e+8x1o+8x2e"
    conv = CGConvolution(irreps, SH3, backend=backend).double()
    node_feats, edge_attrs, edge_index = _graph(irreps)
    weights = torch.randn(edge_index.shape[1], conv.weight_numel)
    assert_float32_matches_float64(conv, [node_feats.double(), edge_attrs.double(), weights.double(), edge_index])


def test_conv_is_twice_differentiable(float64):
    # Force training differentiates the forces, i.e. the conv twice.
    irreps = "2x0e+2x1o+1x2e"
    conv = CGConvolution(irreps, SH3)
    node_feats, edge_attrs, edge_index = _graph(irreps, num_nodes=4, num_edges=6, requires_grad=True)
    weights = torch.randn(6, conv.weight_numel, requires_grad=True)
    projection = torch.randn(4, conv.irreps_out.dim)
    assert torch.autograd.gradgradcheck(
        lambda x, y, w: (conv(x, y, w, edge_index) * projection).sum(), (node_feats, edge_attrs, weights)
    )


def test_conv_keeps_isolated_nodes_at_zero():
    conv = CGConvolution("3x0e+2x1o", SH3)
    node_feats, edge_attrs, _ = _graph("3x0e+2x1o", num_nodes=5, num_edges=4)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 0, 1, 0]])
    out = conv(node_feats, edge_attrs, torch.randn(4, conv.weight_numel), edge_index)
    assert out.shape == (5, conv.irreps_out.dim)
    assert out[2:].abs().max() == 0


@pytest.mark.parametrize("backend", ["torch", "e3nn"])
def test_conv_sums_into_num_receivers_rows(float64, backend):
    # A block of receivers sums into rows of its own: receivers index the output's rows.
    conv = CGConvolution("3x0e+2x1o", SH3, backend=backend)
    node_feats, edge_attrs, edge_index = _graph("3x0e+2x1o", num_nodes=9, num_edges=30)
    edge_index[1] %= 4
    weights = torch.randn(30, conv.weight_numel)
    out = conv(node_feats, edge_attrs, weights, edge_index, num_receivers=4)
    assert out.shape == (4, conv.irreps_out.dim)
    torch.testing.assert_close(out, conv(node_feats, edge_attrs, weights, edge_index)[:4], atol=1e-12, rtol=0)


@pytest.mark.parametrize("module", [CGConvolution, ChannelwiseTensorProduct])
def test_irreps_mismatch_names_both_irreps(module):
    op = module("4x0e+2x1o", SH3)
    wrong = torch.randn(5, 7)
    edge_attrs = torch.randn(5, SH3.dim)
    weights = torch.randn(5, op.weight_numel)
    args = (wrong, edge_attrs, weights) + ((torch.zeros(2, 5, dtype=torch.long),) if module is CGConvolution else ())
    with pytest.raises(ValueError, match=r"7 features but irreps_in1 '4x0e\+2x1o'.*irreps_in2 is '1x0e\+1x1o\+1x2e\+1x3o'"):
        op(*args)


def test_bad_shapes_and_arguments_are_clear():
    conv = CGConvolution("4x0e+2x1o", SH3)
    node_feats, edge_attrs, edge_index = _graph("4x0e+2x1o", num_edges=5)
    with pytest.raises(ValueError, match=rf"weights must have shape \[5, {conv.weight_numel}\]"):
        conv(node_feats, edge_attrs, torch.randn(5, 3), edge_index)
    with pytest.raises(ValueError, match=r"edge_index must have shape \[2, 5\]"):
        conv(node_feats, edge_attrs, torch.randn(5, conv.weight_numel), edge_index.T)
    with pytest.raises(ValueError, match="multiplicity 1"):
        CGConvolution("4x0e", "2x1o")
    with pytest.raises(ValueError, match="no tensor-product path"):
        CGConvolution("4x0e", "1x1o", "0e")
    with pytest.raises(ValueError, match="backend must be one of"):
        CGConvolution("4x0e", SH3, backend="cuda")
    with pytest.raises(ValueError, match="irreps_in1 must be e3nn irreps"):
        CGConvolution("4 scalars", SH3)
