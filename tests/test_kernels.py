"""The Triton kernels of ``backend="triton"`` against the reference operators.

On a CPU they run in Triton's interpreter, chosen by the TRITON_INTERPRET=1 that
conftest.py sets before anything imports triton. With ``TRITON_INTERPRET=0`` and a GPU,
the same tests run the compiled kernels on the GPU. The interpreter is slow: shapes are small.
"""

import functools
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from e3nn import o3
from torch.fx.experimental.proxy_tensor import make_fx
from torch_geometric.data import Batch

from equinet.datasets import atoms_to_graph
from equinet.ops import (
    CGConvolution,
    ChannelwiseTensorProduct,
    GauntManyBodyProduct,
    GauntTensorProduct,
    SO2Convolution,
    edge_wigner_D,
    spherical_harmonics,
)
from equinet.potentials.registry import hyperparameters
from equinet.testing import assert_equivariant
from small_models import CUTOFF, SMALL, small_model, triclinic_alloy

pytest.importorskip("triton")

ON_GPU = os.environ.get("TRITON_INTERPRET") == "0" and torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
SH2, SH3 = o3.Irreps.spherical_harmonics(2), o3.Irreps.spherical_harmonics(3)
TORCH_OPS = ("cg_conv", "cg_conv_transpose", "cg_conv_grad_attrs", "cg_conv_grad_weights")


@pytest.fixture(scope="module", autouse=True)
def cg_triton():
    """The kernel module, whose kernels must run where the tensors of these tests live."""
    from equinet.ops.kernels.triton import cg_triton

    if cg_triton.INTERPRETED == ON_GPU:
        pytest.fail(f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r} does not fit tests on {DEVICE}")
    return cg_triton


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Every floating ``torch.empty`` (how the kernels allocate their outputs) comes back
    filled with NaN, so an element a kernel does not write shows up."""
    empty = torch.empty

    def poisoned(*args, **kwargs):
        out = empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", poisoned)


def _assert_matches(got, want, dtype):
    tol = TOLERANCE[dtype]
    scale = want.abs().max().item() if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * max(scale, 1.0))


def _randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(DEVICE)


def _graph(irreps, sh, num_nodes, num_edges, dtype=torch.float64):
    """Random ``node_feats``, spherical-harmonic ``edge_attrs`` and ``edge_index`` on DEVICE."""
    node_feats = _randn(num_nodes, o3.Irreps(irreps).dim, dtype=dtype, seed=0)
    edge_attrs = spherical_harmonics(o3.Irreps(sh).lmax, _randn(num_edges, 3, dtype=dtype, seed=1))
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    return node_feats, edge_attrs, edge_index


def _pair(irreps, sh, irreps_out=None, module=CGConvolution, dtype=torch.float64):
    """The triton module and the torch reference (``module(*first three arguments, backend=)``,
    e.g. CG or SO(2) convolutions), with coefficients built in ``dtype``."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return (module(irreps, sh, irreps_out, backend="triton").to(DEVICE),
                module(irreps, sh, irreps_out, backend="torch").to(DEVICE))  # fmt: skip
    finally:
        torch.set_default_dtype(previous)


def _forward_and_grads(module, leaves, edge_index, probe):
    """``[out, d out.probe / d leaf for each leaf]``."""
    leaves = [t.detach().requires_grad_() for t in leaves]
    out = module(*leaves) if edge_index is None else module(*leaves, edge_index)
    return [out.detach(), *torch.autograd.grad(out, leaves, probe)]


def _assert_same(triton, reference, leaves, edge_index, dtype):
    """Forward and the gradients of all three inputs agree (run under ``poisoned_outputs``)."""
    with torch.no_grad():
        shape = (reference(*leaves) if edge_index is None else reference(*leaves, edge_index)).shape
    probe = _randn(*shape, dtype=dtype, seed=3)
    expected = _forward_and_grads(reference, leaves, edge_index, probe)
    got = _forward_and_grads(triton, leaves, edge_index, probe)
    for name, g, e in zip(["out", "d node_feats", "d edge_attrs", "d edge_weights"], got, expected):
        assert g.shape == e.shape, name
        _assert_matches(g, e, dtype)


# Mixed multiplicities and parities; with the filter, no path leaves 0o (its gradient rows
# are empty) and 1e reaches only some outputs.
CASES = [
    ("4x0e+4x1o+2x2e", SH2, None),
    ("3x0e+2x1e+4x1o+2x0o", SH3, "0e+1o+2e"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("irreps, sh, irreps_out", CASES)
def test_conv_matches_reference(poisoned_outputs, irreps, sh, irreps_out, dtype):
    triton, reference = _pair(irreps, sh, irreps_out, dtype=dtype)
    node_feats, edge_attrs, edge_index = _graph(irreps, sh, num_nodes=11, num_edges=37, dtype=dtype)
    edge_weights = _randn(37, triton.weight_numel, dtype=dtype)
    _assert_same(triton, reference, [node_feats, edge_attrs, edge_weights], edge_index, dtype)


def test_strided_inputs_and_gradients(poisoned_outputs):
    # Transposed and sliced views, a transposed edge_index, and out.sum()'s stride-0 gradient.
    irreps, dtype = "4x0e+4x1o+2x2e", torch.float64
    triton, reference = _pair(irreps, SH2)
    node_feats, edge_attrs, edge_index = _graph(irreps, SH2, num_nodes=9, num_edges=30)
    node_feats = node_feats.T.contiguous().T
    edge_attrs = torch.cat([edge_attrs, edge_attrs], dim=1)[:, ::2]
    edge_weights = _randn(triton.weight_numel, 30).T
    edge_index = edge_index.T.contiguous().T
    assert not any(t.is_contiguous() for t in (node_feats, edge_attrs, edge_weights, edge_index))
    leaves = [node_feats, edge_attrs, edge_weights]
    got, expected = [], []
    for module, results in ((triton, got), (reference, expected)):
        inputs = [t.detach().requires_grad_() for t in leaves]
        out = module(*inputs, edge_index)
        results += [out.detach(), *torch.autograd.grad(out.sum(), inputs)]
    for g, e in zip(got, expected):
        _assert_matches(g, e, dtype)


def test_small_blocks_cover_partial_tiles(poisoned_outputs, cg_triton, monkeypatch):
    # The interpreter puts everything in one tile; force GPU-like small blocks so that nodes,
    # rows, entries and (edge, row) pairs span several programs and loop iterations with
    # partial last blocks (5 nodes in pairs, 11 conv rows in pairs, up to 5 entries in
    # chunks of 2, a node with 6 edges next to nodes with fewer).
    monkeypatch.setattr(cg_triton, "_node_blocks", lambda num_nodes, entries, max_mul: (2, 2, 2, 4))
    monkeypatch.setattr(cg_triton, "_edge_blocks", lambda num_edges, entries, max_mul: (8, 2, 4))
    irreps = "3x0e+3x1o"
    triton, reference = _pair(irreps, SH2, "0e+1o+1e")
    node_feats, edge_attrs, edge_index = _graph(irreps, SH2, num_nodes=5, num_edges=13)
    edge_index[1, :6] = 0
    edge_weights = _randn(13, triton.weight_numel)
    _assert_same(triton, reference, [node_feats, edge_attrs, edge_weights], edge_index, torch.float64)


def test_the_gpu_block_sizes_compute_the_same_conv(poisoned_outputs, cg_triton, monkeypatch):
    # The block sizes a GPU gets (one node per program, whose edges the conv kernel reads as
    # scalars; one entry at a time; 1024-element tiles), here in the interpreter: 16 channels
    # make tiles of up to 64 rows or (edge, row) pairs.
    def on_a_gpu(blocks):
        def choose(*args):
            with monkeypatch.context() as patch:
                patch.setattr(cg_triton, "INTERPRETED", False)
                return blocks(*args)

        return choose

    monkeypatch.setattr(cg_triton, "_node_blocks", on_a_gpu(cg_triton._node_blocks))
    monkeypatch.setattr(cg_triton, "_edge_blocks", on_a_gpu(cg_triton._edge_blocks))
    irreps = "16x0e+16x1o"
    triton, reference = _pair(irreps, SH2, "0e+1o+2e")
    node_feats, edge_attrs, edge_index = _graph(irreps, SH2, num_nodes=6, num_edges=17)
    edge_index[edge_index == 5] = 0  # node 5 has no edges: its program must still write zeros
    edge_weights = _randn(17, triton.weight_numel)
    _assert_same(triton, reference, [node_feats, edge_attrs, edge_weights], edge_index, torch.float64)


@pytest.mark.parametrize("irreps, irreps_out, expected", [
    ("128x0e+128x1o", "0e+1o+2e+3o", 16),  # MACE-medium: 16 is the most the kernels ask for
    ("16x0e+8x1o", None, 8),  # ir_mul starts of x 0, 16, 24, 32; weight starts multiples of 8
    ("6x0e+6x1o", None, 2),  # starts 0, 6, 12, ...
    ("3x0e+5x1o", None, 1),
])  # fmt: skip
def test_channel_alignment_divides_every_start_and_multiplicity(irreps, irreps_out, expected):
    # The kernels promise Triton (tl.multiple_of) that channel runs and channel masks come in
    # aligned groups of this many channels; the interpreter ignores the promise, a GPU would
    # load misaligned vectors if it were wrong.
    from equinet.ops.kernels.triton.cg_tables import TABLE_NAMES, channel_alignment

    conv = CGConvolution(irreps, SH3, irreps_out, backend="triton")
    tables = {name: getattr(conv.tp, name) for name in TABLE_NAMES}
    assert channel_alignment(tables) == conv.tp._dims[5] == expected


@pytest.mark.parametrize("channels, expected", [(32, 16), (6, 2), (3, 1)])
def test_so2_steps_get_the_channel_alignment(channels, expected):
    irreps = f"{channels}x0e+{channels}x1o+{channels}x2e"
    so2 = SO2Convolution(irreps, f"{channels}x0e+{channels}x1o", 1, backend="triton")
    assert {step: dims[5] for step, dims in so2.kernels._dims.items()} == dict.fromkeys(so2.kernels._dims, expected)


def test_zero_edges_and_isolated_nodes(poisoned_outputs):
    triton, reference = _pair("4x0e+2x1o", SH2)
    node_feats, edge_attrs, edge_index = _graph("4x0e+2x1o", SH2, num_nodes=5, num_edges=0)
    leaves = [node_feats, edge_attrs, _randn(0, triton.weight_numel)]
    _assert_same(triton, reference, leaves, edge_index, torch.float64)
    out = triton(*leaves, edge_index)
    assert out.shape == (5, triton.irreps_out.dim) and out.abs().max() == 0


def test_channelwise_product_matches_reference(poisoned_outputs):
    irreps = "4x0e+3x1o+2x2e"
    triton, reference = _pair(irreps, SH2, module=ChannelwiseTensorProduct)
    x1, x2, _ = _graph(irreps, SH2, num_nodes=19, num_edges=19)
    _assert_same(triton, reference, [x1, x2, _randn(19, triton.weight_numel)], None, torch.float64)


def test_conv_is_equivariant(float64):
    irreps = "3x0e+2x1o+2x2e"
    conv = CGConvolution(irreps, SH2, backend="triton").to(DEVICE)
    node_feats, edge_attrs, edge_index = _graph(irreps, SH2, num_nodes=6, num_edges=20)
    inputs = [node_feats, edge_attrs, _randn(20, conv.weight_numel), edge_index]
    assert_equivariant(conv, inputs, [irreps, SH2, None, None], conv.irreps_out, atol=1e-10)


def test_gradcheck_and_gradgradcheck(float64):
    # Every derivative of the four operators is one of them (cg_ops' docstring): gradcheck
    # checks cg_conv's formulas, gradgradcheck those of the three operators in its backward,
    # so every formula, hence every order of derivative, is covered.
    irreps = "2x0e+2x1o"
    conv = CGConvolution(irreps, SH2, backend="triton").to(DEVICE)
    node_feats, edge_attrs, edge_index = _graph(irreps, SH2, num_nodes=4, num_edges=7)
    leaves = tuple(t.requires_grad_() for t in (node_feats, edge_attrs, _randn(7, conv.weight_numel)))

    def fn(*leaves):
        return conv(*leaves, edge_index)

    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, leaves, fast_mode=True)


def test_operators_pass_opcheck(float64, cg_triton):
    # Schema, fake (meta) implementation, autograd registration and AOT dispatch of each op.
    from equinet.ops.kernels.triton import cg_ops

    conv = CGConvolution("2x0e+2x1o", SH2, backend="triton").to(DEVICE)
    x, y, edge_index = _graph("2x0e+2x1o", SH2, num_nodes=4, num_edges=6)
    w = _randn(6, conv.weight_numel)
    graph = cg_ops.edge_graph(edge_index[0], edge_index[1], 4, 4)
    tables = [getattr(conv.tp, name) for name in cg_ops.TABLE_NAMES]
    dims = conv.tp._dims
    g = _randn(4, conv.irreps_out.dim)
    arguments = {
        "cg_conv": (x, y, w),
        "cg_conv_transpose": (g, y, w),
        "cg_conv_grad_attrs": (x, w, g),
        "cg_conv_grad_weights": (x, y, g),
    }
    for name in TORCH_OPS:
        inputs = [t.clone().requires_grad_() for t in arguments[name]]
        # AOT dispatch (compile's path) is the slow check under the interpreter: once is enough.
        checks = ("test_schema", "test_autograd_registration", "test_faketensor")
        checks += ("test_aot_dispatch_dynamic",) if name == "cg_conv" else ()
        torch.library.opcheck(getattr(torch.ops.equinet, name), (*inputs, graph, tables, dims), test_utils=checks)


def test_traces_with_fake_tensors_compile_and_export(float64):
    irreps = "2x0e+2x1o"
    conv = CGConvolution(irreps, SH2, backend="triton").to(DEVICE)
    node_feats, edge_attrs, edge_index = _graph(irreps, SH2, num_nodes=5, num_edges=9)
    inputs = (node_feats, edge_attrs, _randn(9, conv.weight_numel), edge_index)

    def energy_and_forces(x, y, w, edge_index):
        x = x.detach().requires_grad_()
        energy = conv(x, y, w, edge_index).square().sum()
        return energy, torch.autograd.grad(energy, x, create_graph=True)[0]

    # make_fx with fake tensors runs only the registered fake implementations.
    traced = make_fx(energy_and_forces, tracing_mode="fake", _allow_non_fake_inputs=True)(*inputs)
    called = {node.target.name() for node in traced.graph.nodes if isinstance(node.target, torch._ops.OpOverload)}
    assert {"equinet::cg_conv", "equinet::cg_conv_transpose"} <= called
    for got, want in zip(traced(*inputs), energy_and_forces(*inputs)):
        _assert_matches(got, want, torch.float64)

    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    leaves = [t.clone().requires_grad_() for t in inputs[:3]]
    probe = _randn(5, conv.irreps_out.dim)
    expected = _forward_and_grads(conv, inputs[:3], edge_index, probe)
    out = compiled(*leaves, edge_index)
    for got, want in zip([out, *torch.autograd.grad(out, leaves, probe)], expected):
        _assert_matches(got.detach(), want, torch.float64)

    exported = torch.export.export(conv, inputs)
    assert "torch.ops.equinet.cg_conv.default" in exported.graph_module.code
    _assert_matches(exported.module()(*inputs), conv(*inputs), torch.float64)


def _so2_inputs(conv, num_nodes, num_edges, dtype=torch.float64):
    """Random ``[node_feats, edge_vec, edge_weights]`` and ``edge_index`` on DEVICE."""
    leaves = [_randn(num_nodes, conv.irreps_in.dim, dtype=dtype, seed=0), _randn(num_edges, 3, dtype=dtype, seed=1),
              _randn(num_edges, conv.weight_numel, dtype=dtype, seed=2)]  # fmt: skip
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    return leaves, edge_index


# Mixed parities (class -1 irreps, 1e here, take the quarter turn); outputs whose m = 0 row
# no block writes (1e: no input of its class); truncation below the degrees, with an input
# no block uses (2o: no output of its class at m = 0).
SO2_CASES = [
    ("3x0e+3x1o+3x2e", "3x0e+3x1o+3x2e", 1),
    ("2x0e+2x1o+2x3o", "2x0e+2x1o+2x2e+2x1e", None),
    ("3x0e+3x1o+3x2o", "3x0e+3x1o", 0),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("irreps_in, irreps_out, m_max", SO2_CASES)
def test_so2_conv_matches_reference(poisoned_outputs, irreps_in, irreps_out, m_max, dtype):
    triton, reference = _pair(irreps_in, irreps_out, m_max, module=SO2Convolution, dtype=dtype)
    leaves, edge_index = _so2_inputs(reference, num_nodes=9, num_edges=31, dtype=dtype)
    _assert_same(triton, reference, leaves, edge_index, dtype)


def test_so2_conv_with_strided_inputs_shared_wigner_and_small_blocks(poisoned_outputs, cg_triton, monkeypatch):
    # Views for every input, Wigner matrices of a higher l_max and m_max than the
    # convolution's (as a model shares them), and GPU-like blocks with partial last tiles.
    monkeypatch.setattr(cg_triton, "_node_blocks", lambda num_nodes, entries, max_mul: (2, 2, 2, 4))
    monkeypatch.setattr(cg_triton, "_edge_blocks", lambda num_edges, entries, max_mul: (8, 2, 4))
    triton, reference = _pair("3x0e+3x1o+3x2e", "3x0e+3x1o+3x2e", 1, module=SO2Convolution)
    (node_feats, edge_vec, edge_weights), edge_index = _so2_inputs(reference, num_nodes=5, num_edges=13)
    node_feats, edge_weights = node_feats.T.contiguous().T, edge_weights.T.contiguous().T
    edge_index[1, :6] = 0
    edge_index = edge_index.T.contiguous().T
    assert not any(t.is_contiguous() for t in (node_feats, edge_weights, edge_index))
    got, expected = [], []
    for module, results in ((triton, got), (reference, expected)):
        leaves = [t.detach().requires_grad_() for t in (node_feats, edge_vec, edge_weights)]
        wigner = edge_wigner_D(3, leaves[1], 2)
        out = module(leaves[0], leaves[1], leaves[2], edge_index, wigner)
        results += [out.detach(), *torch.autograd.grad(out.square().sum(), leaves)]
    for g, e in zip(got, expected):
        _assert_matches(g, e, torch.float64)


def test_so2_conv_sums_into_num_receivers_rows(poisoned_outputs):
    triton, reference = _pair("3x0e+3x1o+3x2e", "3x0e+3x1o+3x2e", 1, module=SO2Convolution)
    leaves, edge_index = _so2_inputs(reference, num_nodes=9, num_edges=31)
    edge_index[1] %= 4
    _assert_same(functools.partial(triton, num_receivers=4), functools.partial(reference, num_receivers=4), leaves, edge_index, torch.float64)
    assert triton(*leaves, edge_index, num_receivers=4).shape == (4, triton.irreps_out.dim)


def test_so2_conv_without_edges(poisoned_outputs):
    triton, reference = _pair("2x0e+2x1o", "2x0e+2x1o", 1, module=SO2Convolution)
    leaves, edge_index = _so2_inputs(reference, num_nodes=4, num_edges=0)
    _assert_same(triton, reference, leaves, edge_index, torch.float64)
    assert triton(*leaves, edge_index).abs().max() == 0


def test_so2_conv_gradcheck_and_gradgradcheck(float64):
    conv = SO2Convolution("2x0e+2x1o+2x2e", "2x0e+2x1o", 1, backend="triton").to(DEVICE)
    leaves, edge_index = _so2_inputs(conv, num_nodes=3, num_edges=5)
    leaves = tuple(t.requires_grad_() for t in leaves)

    def fn(*leaves):
        return conv(*leaves, edge_index)

    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, leaves, fast_mode=True)


def test_so2_backend_must_be_known():
    with pytest.raises(ValueError, match=r"^backend must be one of \('torch', 'triton', 'cpp'\), got 'cuda'$"):
        SO2Convolution("2x0e", "2x0e", backend="cuda")


def _gaunt_pair(irreps_in1, irreps_in2, irreps_out):
    """The Gaunt grid product on the kernel and the torch reference, with the same random weights."""
    triton = GauntTensorProduct(irreps_in1, irreps_in2, irreps_out, backend="triton").to(DEVICE)
    reference = GauntTensorProduct(irreps_in1, irreps_in2, irreps_out).to(DEVICE)
    with torch.no_grad():
        for seed, (a, b) in enumerate(zip(triton.parameters(), reference.parameters())):
            a.copy_(_randn(*a.shape, dtype=a.dtype, seed=10 + seed))
            b.copy_(a)
    return triton, reference


def _assert_gaunt_same(triton, reference, leading, dtype):
    """Output and the gradients of both inputs and all weights agree (run under ``poisoned_outputs``)."""
    x1 = _randn(*leading, triton.irreps_in1.dim, dtype=dtype, seed=0)
    x2 = _randn(*leading, triton.irreps_in2.dim, dtype=dtype, seed=1)
    probe = _randn(*leading, triton.irreps_out.dim, dtype=dtype, seed=2)
    results = []
    for module in (triton, reference):
        module.to(dtype)
        leaves = [x1.clone().requires_grad_(), x2.clone().requires_grad_()]
        out = module(*leaves)
        results.append([out.detach(), *torch.autograd.grad(out, [*leaves, *module.parameters()], probe)])
    for got, want in zip(*results):
        _assert_matches(got, want, dtype)


# Channel-wise and shared second inputs, pseudo-parity inputs, outputs of some degrees only,
# outputs of both parities (the odd ones by the bracket, three kernel products).
GAUNT_CASES = [
    ("4x0e+4x1o+4x2e", "0e+1o+2e", "4x0e+4x1o+4x2e"),
    ("3x0e+3x1o", "3x0e+3x1o+3x2e+3x3o", "3x1o+3x2e"),
    ("2x0o+2x1e", "1x0e+1x1o", "2x0o+2x1e+2x2o"),
    ("3x0e+3x1o+3x2e", "1x1o+1x2e", "3x0e+3x1e+3x1o+3x2o+3x3e"),
    ("2x1o+2x2e", "2x1o", "2x1e+2x2o"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("irreps_in1, irreps_in2, irreps_out", GAUNT_CASES)
def test_gaunt_grid_product_matches_reference(poisoned_outputs, irreps_in1, irreps_in2, irreps_out, dtype):
    triton, reference = _gaunt_pair(irreps_in1, irreps_in2, irreps_out)
    _assert_gaunt_same(triton, reference, (13,), dtype)


def test_gaunt_grid_product_leading_dims_partial_tiles_and_empty_batch(poisoned_outputs, monkeypatch):
    from equinet.ops.kernels.triton import gaunt_grid

    # GPU-like tiles: rows (63) and grid points (24) span several programs and loop steps.
    monkeypatch.setattr(gaunt_grid, "_blocks", lambda rows, d1, d2, d3, points: (16, 16, 16, 16, 16))
    triton, reference = _gaunt_pair("3x0e+3x1o+3x2e", "3x0e+3x1o", "3x0e+3x1o+3x2e")
    _assert_gaunt_same(triton, reference, (3, 7), torch.float64)
    _assert_gaunt_same(triton, reference, (0,), torch.float64)


def test_gaunt_grid_product_gradcheck_and_gradgradcheck(float64):
    triton, _ = _gaunt_pair("2x0e+2x1o", "1x0e+1x1o", "2x0e+2x1o")
    leaves = (_randn(3, triton.irreps_in1.dim).requires_grad_(), _randn(3, triton.irreps_in2.dim).requires_grad_())
    assert torch.autograd.gradcheck(triton, leaves, fast_mode=True)
    assert torch.autograd.gradgradcheck(triton, leaves, fast_mode=True)


def test_gaunt_grid_operator_passes_opcheck(float64):
    # Schema, fake implementation, autograd registration and AOT dispatch (compile's path).
    from equinet.ops.gaunt.matrices import full_grid_transforms
    from equinet.ops.kernels.triton.gaunt_grid import gaunt_grid_product

    (s1, _), (s2, _), (_, a3) = (full_grid_transforms(degrees, 3) for degrees in ((0, 1), (0, 1), (0, 1)))
    x1, x2 = _randn(4, 2, 4).requires_grad_(), _randn(4, 1, 4).requires_grad_()
    checks = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(gaunt_grid_product, (x1, x2, *(t.to(DEVICE) for t in (s1, s2, a3))), test_utils=checks)


# Pseudo-parity inputs 0o+1e+2o: order nu gives degree L the parity (-1)^nu (-1)^L, so each
# output set needs the top order (the 3e of correlation 3 only order 3 reaches) and degrees
# above the inputs' come from the higher orders.
MANY_BODY_OUTPUTS = {1: "3x0o+3x1e+3x2o", 2: "3x0e+3x1o+3x2e+3x3o", 3: "3x0e+3x1e+3x2e+3x3e"}


@pytest.mark.parametrize("correlation", [1, 2, 3])
def test_gaunt_many_body_product_on_the_kernel_matches_reference(poisoned_outputs, float64, correlation):
    irreps_in, irreps_out = "3x0o+3x1e+3x2o", MANY_BODY_OUTPUTS[correlation]
    triton = GauntManyBodyProduct(irreps_in, irreps_out, correlation, num_elements=2, backend="triton").to(DEVICE)
    reference = GauntManyBodyProduct(irreps_in, irreps_out, correlation, num_elements=2).to(DEVICE)
    with torch.no_grad():
        for seed, (a, b) in enumerate(zip(triton.parameters(), reference.parameters())):
            a.copy_(_randn(*a.shape, seed=10 + seed))
            b.copy_(a)
    x = _randn(11, triton.irreps_in.dim)
    species = torch.randint(0, 2, (11,), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    probe = _randn(11, triton.irreps_out.dim, seed=5)
    results = []
    for module in (triton, reference):
        leaf = x.clone().requires_grad_()
        out = module(leaf, species)
        results.append([out.detach(), *torch.autograd.grad(out, [leaf, *module.parameters()], probe)])
    for got, want in zip(*results):
        _assert_matches(got, want, torch.float64)


def test_gaunt_many_body_product_on_the_kernel_differentiates_twice(float64):
    triton = GauntManyBodyProduct("2x0e+2x1o", "2x0e+2x1o", 3, num_elements=1, backend="triton").to(DEVICE)
    species = torch.zeros(3, dtype=torch.long, device=DEVICE)
    x = _randn(3, triton.irreps_in.dim).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: triton(x, species), (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda x: triton(x, species), (x,), fast_mode=True)


def test_gaunt_triton_backend_needs_the_grid():
    with pytest.raises(ValueError, match=r"^backend='triton' runs the sphere grid: it needs method='grid', not 'fft'$"):
        GauntTensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", method="fft", backend="triton")
    with pytest.raises(ValueError, match=r"^backend must be one of torch, triton, cpp, got 'cuda'$"):
        GauntTensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="cuda")
    with pytest.raises(ValueError, match=r"^backend must be one of torch, triton, got 'cpp'$"):  # not the many-body product
        GauntManyBodyProduct("2x0e+2x1o", "2x0e+2x1o", correlation=2, num_elements=1, backend="cpp")


# Every model with a triton convolution, and MACE-Gaunt with its product on the kernel.
KERNEL_BACKENDS = [(v, "conv_backend") for v, c in sorted(SMALL.items()) if "conv_backend" in hyperparameters(c["name"])]
KERNEL_BACKENDS.append(("mace-gaunt", "product_backend"))


@pytest.mark.parametrize("variant, backend_key", KERNEL_BACKENDS)
def test_models_with_triton_kernels_match(float64, variant, backend_key):
    batch = Batch.from_data_list([atoms_to_graph(triclinic_alloy(), CUTOFF)]).to(DEVICE)
    reference = small_model(variant, **{backend_key: "torch"}).to(DEVICE)
    ours = small_model(variant, **{backend_key: "triton"}).to(DEVICE)
    ours.load_state_dict(reference.state_dict())
    expected, got = reference(batch), ours(batch)
    for key in ("energy", "forces"):
        _assert_matches(got[key], expected[key], torch.float64)


def test_cpu_without_interpreter_is_one_clear_line():
    script = textwrap.dedent("""
        import torch
        from equinet.ops import CGConvolution
        conv = CGConvolution("2x0e", "0e+1o", backend="triton")
        conv(torch.randn(3, 2), torch.randn(4, 4), torch.randn(4, conv.weight_numel), torch.zeros(2, 4, dtype=torch.long))
    """)
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "RuntimeError: backend='triton' needs an NVIDIA GPU (tensors are on cpu); use backend='torch' on the CPU, "
        "or set TRITON_INTERPRET=1 in the environment to run the kernels in Triton's interpreter (for testing)"
    )
