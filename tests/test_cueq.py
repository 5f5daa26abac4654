"""``backend="cueq"`` (cuEquivariance) against the torch backend, in float64 to 1e-10:
the channel-wise product and convolution, the symmetric contraction, MACE and NequIP.

Without cuequivariance-ops-torch (CPU machines, CI) cuEquivariance runs its PyTorch code
on CPU tensors; with it, and a GPU, the same tests run its CUDA kernels on the GPU.
"""

import importlib.util

import pytest
import torch
from e3nn import o3
from torch_geometric.data import Batch

from equinet.config import TrainConfig
from equinet.datasets import atoms_to_graph
from equinet.ops import CGConvolution, ChannelwiseTensorProduct, SymmetricContraction, spherical_harmonics
from equinet.potentials import build_model
from small_models import CUTOFF, STATISTICS, small_model, triclinic_alloy

pytest.importorskip("cuequivariance_torch")

ON_GPU = importlib.util.find_spec("cuequivariance_ops_torch") is not None and torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
SH2, SH3 = o3.Irreps.spherical_harmonics(2), o3.Irreps.spherical_harmonics(3)
# Equal and mixed multiplicities, both parities, an unsimplified repeat, scalars only.
NODE_IRREPS = ["4x0e+4x1o+4x2e", "5x0e+3x1e+4x1o+2x0o+2x3o+3x0e", "6x0e"]
FILTERS = [None, "0e+1o+2e+3o"]


def _assert_close(got, want):
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def _pair(module, *args):
    """The same operator with the torch backend and with cuEquivariance, on DEVICE."""
    return module(*args, backend="torch").to(DEVICE), module(*args, backend="cueq").to(DEVICE)


def _graph(irreps, num_nodes=13, num_edges=60):
    node_feats = o3.Irreps(irreps).randn(num_nodes, -1).to(DEVICE)
    edge_attrs = spherical_harmonics(3, torch.randn(num_edges, 3)).to(DEVICE)
    edge_index = torch.randint(0, num_nodes, (2, num_edges)).to(DEVICE)
    return node_feats, edge_attrs, edge_index


def _outputs_and_gradients(module, leaves, *rest, probe=None):
    """``module(*leaves, *rest)`` and the gradients of ``<out, probe>`` for every leaf."""
    leaves = [t.detach().requires_grad_() for t in leaves]
    out = module(*leaves, *rest)
    probe = torch.randn_like(out) if probe is None else probe
    return [out, *torch.autograd.grad(out, leaves, probe)], probe


@pytest.mark.parametrize("irreps_out", FILTERS)
@pytest.mark.parametrize("irreps", NODE_IRREPS)
def test_conv_matches_torch_with_gradients(float64, irreps, irreps_out):
    torch_conv, cueq_conv = _pair(CGConvolution, irreps, SH3, irreps_out)
    assert cueq_conv.irreps_out == torch_conv.irreps_out and cueq_conv.weight_numel == torch_conv.weight_numel
    node_feats, edge_attrs, edge_index = _graph(irreps)
    leaves = [node_feats, edge_attrs, torch.randn(edge_index.shape[1], torch_conv.weight_numel, device=DEVICE)]
    expected, probe = _outputs_and_gradients(torch_conv, leaves, edge_index)
    got, _ = _outputs_and_gradients(cueq_conv, leaves, edge_index, probe=probe)
    for g, e in zip(got, expected):
        _assert_close(g, e)


@pytest.mark.parametrize("irreps", NODE_IRREPS)
def test_channelwise_product_matches_torch_with_gradients(float64, irreps):
    torch_tp, cueq_tp = _pair(ChannelwiseTensorProduct, irreps, SH2, "0e+1o+1e+2e")
    x1, _, _ = _graph(irreps, num_nodes=40)
    leaves = [x1, torch.randn(40, SH2.dim, device=DEVICE), torch.randn(40, torch_tp.weight_numel, device=DEVICE)]
    expected, probe = _outputs_and_gradients(torch_tp, leaves)
    got, _ = _outputs_and_gradients(cueq_tp, leaves, probe=probe)
    for g, e in zip(got, expected):
        _assert_close(g, e)


def test_conv_second_derivatives_match_torch(float64):
    # Force training differentiates the forces (through the edge attributes), i.e. the conv twice.
    irreps = "3x0e+2x1o+2x2e"
    torch_conv, cueq_conv = _pair(CGConvolution, irreps, SH3)
    node_feats, edge_attrs, edge_index = _graph(irreps, num_nodes=5, num_edges=12)
    weights = torch.randn(12, torch_conv.weight_numel, device=DEVICE)
    probe = torch.randn(5, torch_conv.irreps_out.dim, device=DEVICE)
    results = []
    for conv in (torch_conv, cueq_conv):
        x, y, w = (t.detach().requires_grad_() for t in (node_feats, edge_attrs, weights))
        (grad_y,) = torch.autograd.grad((conv(x, y, w, edge_index) * probe).sum(), y, create_graph=True)
        results.append(torch.autograd.grad(grad_y.square().sum(), (x, w)))  # grad_y is linear in y
    for got, want in zip(*reversed(results)):
        _assert_close(got, want)


def test_zero_edges_and_isolated_nodes(float64):
    torch_conv, cueq_conv = _pair(CGConvolution, "4x0e+2x1o", SH3)
    node_feats, edge_attrs, edge_index = _graph("4x0e+2x1o", num_nodes=5, num_edges=0)
    leaves = [node_feats, edge_attrs, torch.randn(0, torch_conv.weight_numel, device=DEVICE)]
    got, probe = _outputs_and_gradients(cueq_conv, leaves, edge_index)
    assert got[0].shape == (5, torch_conv.irreps_out.dim) and got[0].abs().max() == 0
    expected, _ = _outputs_and_gradients(torch_conv, leaves, edge_index, probe=probe)
    for g, e in zip(got, expected):
        _assert_close(g, e)
    node_feats, edge_attrs, _ = _graph("4x0e+2x1o", num_nodes=5, num_edges=4)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 0, 1, 0]], device=DEVICE)
    out = cueq_conv(node_feats, edge_attrs, torch.randn(4, torch_conv.weight_numel, device=DEVICE), edge_index)
    assert out[2:].abs().max() == 0


# (irreps_in, irreps_out, correlation); in the last, 1e is reached only at order 3 (an
# output with no path at some orders).
CONTRACTIONS = [
    ("4x0e+4x1o+4x2e", "4x0e+4x1o+4x2e", 1),
    ("3x0e+3x1o+3x2e", "3x0e+3x1o+3x2e", 2),
    ("2x0e+2x1o+2x2e", "2x0e+2x1o+2x1e", 3),
]


@pytest.mark.parametrize("irreps_in, irreps_out, correlation", CONTRACTIONS)
def test_symmetric_contraction_matches_torch_with_gradients(float64, irreps_in, irreps_out, correlation):
    reference, cueq = _pair(SymmetricContraction, irreps_in, irreps_out, correlation, 3)
    cueq.load_state_dict(reference.state_dict())
    x = reference.irreps_in.randn(11, -1).to(DEVICE)
    species = torch.tensor([0, 2, 2, 1, 0, 0, 2, 1, 1, 0, 2], device=DEVICE)
    outputs = []
    for module in (reference, cueq):
        leaf = x.detach().requires_grad_()
        out = module(leaf, species)
        parameters = [leaf, *module.parameters()]
        outputs.append([out, *torch.autograd.grad(out.square().sum(), parameters)])
    assert len(outputs[0]) == len(outputs[1]) > 2
    for got, want in zip(outputs[1], outputs[0]):
        _assert_close(got, want)


def test_symmetric_contraction_follows_the_bases_of_a_loaded_state_dict(float64):
    # A model saved by another version may carry another (equivalent) basis: the loaded one counts.
    reference, cueq = _pair(SymmetricContraction, "2x0e+2x1o", "2x0e+2x1o", 2, 2)
    state = reference.state_dict()
    state["U_2_0e"] = 2 * state["U_2_0e"]
    reference.load_state_dict(state)
    cueq.load_state_dict(state)
    x, species = reference.irreps_in.randn(6, -1).to(DEVICE), torch.tensor([0, 1, 1, 0, 1, 0], device=DEVICE)
    _assert_close(cueq(x, species), reference(x, species))


@pytest.mark.parametrize(
    "variant, backends",
    [("mace", {"conv_backend": "cueq", "product_backend": "cueq"}), ("nequip", {"conv_backend": "cueq"})],
)
def test_models_with_cueq_backends_match_torch_and_share_state_dicts(float64, variant, backends):
    batch = Batch.from_data_list([atoms_to_graph(triclinic_alloy(), CUTOFF, dtype=torch.float64)]).to(DEVICE)
    reference = small_model(variant).to(DEVICE)
    cueq = small_model(variant, **backends).to(DEVICE)
    assert {m.backend for m in cueq.modules() if isinstance(m, (CGConvolution, SymmetricContraction))} == {"cueq"}
    assert cueq.state_dict().keys() == reference.state_dict().keys()
    cueq.load_state_dict(reference.state_dict())
    expected, got = reference(batch), cueq(batch)
    for key in ("energy", "forces"):
        _assert_close(got[key], expected[key])
    # and back: a model trained with cuEquivariance loads with the torch backends
    with torch.no_grad():
        for parameter in cueq.parameters():
            parameter.mul_(0.9)
    reference.load_state_dict(cueq.state_dict())
    _assert_close(reference(batch)["energy"], cueq(batch)["energy"])


def test_config_accepts_the_backends_and_names_a_bad_value():
    model = {"name": "mace", "conv_backend": "cueq", "product_backend": "cueq"}
    TrainConfig.model_validate({"data": {"generate": {"name": "emt-alloys", "n": 4}}, "model": model})
    with pytest.raises(ValueError, match=r"^model.product_backend must be one of torch, cueq, triton, got 'cuda'$"):
        build_model({"name": "mace", "product_backend": "cuda"}, STATISTICS)
    with pytest.raises(ValueError, match=r"^model.conv_backend must be one of torch, e3nn, triton, cueq, got 'cueqq'$"):
        build_model({"name": "mace", "conv_backend": "cueqq"}, STATISTICS)
    with pytest.raises(ValueError, match=r"model.product_backend 'cueq' runs the symmetric contraction: it needs model.product 'cg'"):
        build_model({"name": "mace", "product": "gaunt", "product_backend": "cueq"}, STATISTICS)
    message = r"model.product_backend 'triton' runs the Gaunt product on the grid kernel: it needs model.product 'gaunt'"
    with pytest.raises(ValueError, match=message):
        build_model({"name": "mace", "product_backend": "triton"}, STATISTICS)
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'cueq'\), got 'triton'"):
        SymmetricContraction("2x0e+2x1o", "2x0e", 2, 1, backend="triton")
