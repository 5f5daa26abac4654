"""Time the eSCN SO(2) convolution against the equivalent SO(3) CG convolution, side by side.

    python scripts/bench_so2.py [--lmax 2 4 6 8 --edges 20000 --nodes 1000 --channels 32]

For each l_max, node features ``C x (0e + 1o + 2e + ... + l_max)`` are convolved with the
edges four ways, on identical inputs:

* ``e3nn CG`` and ``torch CG``: :class:`~equinet.ops.CGConvolution` (reference e3nn backend
  and ours) with the edge spherical harmonics up to ``l_max`` and outputs up to ``l_max``,
  computed from the edge vectors inside the timed region.
* ``SO(2)``: :class:`~equinet.ops.SO2Convolution` with ``m_max = l_max``, which reproduces
  that CG convolution exactly (weights converted by ``so2_weights_from_cg``, paths to one
  irrep summed; checked on a few edges before timing), Wigner matrices included.
* ``SO(2) m<=2``: the same with eSCN's truncation ``m_max = 2`` (no longer equivalent).
* with ``--cpp``, ``SO(2) cpp`` and ``SO(2) m<=2 cpp``: the same two on the fused C++ CPU
  kernel (``backend="cpp"``, compiled on first use).
* with ``--triton``, ``SO(2) triton`` and ``SO(2) m<=2 triton``: the same two on the GPU
  kernels (``backend="triton"``), for ``--device cuda``.

Each is warmed up on a small graph (e3nn builds its code on the first call), then timed on
the full graph, forward (no grad) and forward + backward (gradients for node features,
edge vectors and weights, as in force training); the median is reported. Runs slower than
``--budget`` seconds are repeated fewer times (at least once). The CG convolutions process
the edges in chunks (``--chunk-mb``) so that their per-path messages fit in memory; the
sum is the same and the chunking costs them nothing. Prints milliseconds, the ratios
SO(3)/SO(2) (and torch/cpp, torch/triton for the SO(2) backends) and the exponent k of a
least-squares fit ``time ∝ l_max^k``. On a GPU every timed call is synchronised.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
from e3nn import o3

from equinet.ops import CGConvolution, SO2Convolution, so2_weights_from_cg, spherical_harmonics

METHODS = ("e3nn CG", "torch CG", "SO(2)", "SO(2) m<=2")
CPP_METHODS = ("SO(2) cpp", "SO(2) m<=2 cpp")
TRITON_METHODS = ("SO(2) triton", "SO(2) m<=2 triton")


def _median_ms(fn, repeats: int, budget_s: float, device: torch.device) -> tuple[float, int]:
    times: list[float] = []
    while len(times) < repeats and sum(times) < budget_s:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), len(times)


def _cg_runner(conv: CGConvolution, l_max: int, chunk: int):
    """``run(x, edge_vec, weights, edge_index, probe)`` → output, or gradients when ``probe`` is given."""

    def run(node_feats, edge_vec, weights, edge_index, probe=None):
        if probe is None:
            out = 0
            for start in range(0, len(edge_vec), chunk):
                stop = start + chunk
                out = out + conv(node_feats, spherical_harmonics(l_max, edge_vec[start:stop]), weights[start:stop], edge_index[:, start:stop])
            return out
        grads = [torch.zeros_like(node_feats), [], []]
        node_feats = node_feats.detach().requires_grad_()
        for start in range(0, len(edge_vec), chunk):
            stop = start + chunk
            leaves = [node_feats, edge_vec[start:stop].detach().requires_grad_(), weights[start:stop].detach().requires_grad_()]
            out = conv(leaves[0], spherical_harmonics(l_max, leaves[1]), leaves[2], edge_index[:, start:stop])
            g_x, g_v, g_w = torch.autograd.grad((out * probe).sum(), leaves)
            grads[0] += g_x
            grads[1].append(g_v)
            grads[2].append(g_w)
        return grads[0], torch.cat(grads[1]), torch.cat(grads[2])

    return run


def _so2_runner(conv: SO2Convolution):
    def run(node_feats, edge_vec, weights, edge_index, probe=None):
        if probe is None:
            return conv(node_feats, edge_vec, weights, edge_index)
        leaves = [t.detach().requires_grad_() for t in (node_feats, edge_vec, weights)]
        out = conv(*leaves, edge_index)
        return torch.autograd.grad((out * probe).sum(), leaves)

    return run


def _check_equivalence(cg: CGConvolution, so2: SO2Convolution, irreps: o3.Irreps, l_max: int, device) -> float:
    """Relative difference of the SO(2) convolution (mapped weights) and the CG one, 200 edges."""
    node_feats, edge_vec = irreps.randn(50, -1, device=device), torch.randn(200, 3, device=device)
    edge_index = torch.randint(0, 50, (2, 200), device=device)
    cg_weights = torch.randn(200, cg.weight_numel, device=device)
    with torch.no_grad():
        expected = cg(node_feats, spherical_harmonics(l_max, edge_vec), cg_weights, edge_index)
        summed = torch.zeros(50, so2.irreps_out.dim, device=device)
        targets, irreps_out = so2.irreps_out.slices(), [ir for _, ir in so2.irreps_out]
        for piece, (_, ir) in zip(cg.irreps_out.slices(), cg.irreps_out):
            summed[:, targets[irreps_out.index(ir)]] += expected[:, piece]
        got = so2(node_feats, edge_vec, so2_weights_from_cg(cg_weights.cpu(), cg, so2).to(device), edge_index)
    return ((got - summed).abs().max() / summed.abs().max()).item()


def _fit_exponent(l_values: list[int], times: list[float]) -> float:
    xs, ys = [math.log(l) for l in l_values], [math.log(t) for t in times]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 6, 8])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--edges", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per measurement before repeats are cut")
    parser.add_argument("--chunk-mb", type=float, default=512.0, help="memory for the CG messages of one edge chunk")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cpp", action="store_true", help="add the SO(2) convolutions on the C++ CPU kernel")
    parser.add_argument("--triton", action="store_true", help="add the SO(2) convolutions on the GPU kernels")
    args = parser.parse_args()
    device = torch.device(args.device)
    methods = METHODS + (CPP_METHODS if args.cpp else ()) + (TRITON_METHODS if args.triton else ())

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_default_dtype(getattr(torch, args.dtype))
    torch.manual_seed(0)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}")
    print(f"graph: {args.nodes} nodes, {args.edges} edges, {args.channels} channels, {args.dtype}")

    table: dict[str, dict[int, tuple[float, float]]] = {method: {} for method in methods}
    for l_max in args.lmax:
        irreps = o3.Irreps([(args.channels, (l, (-1) ** l)) for l in range(l_max + 1)])
        outputs = o3.Irreps([(1, (l, (-1) ** l)) for l in range(l_max + 1)])
        convs = {
            "e3nn CG": CGConvolution(irreps, o3.Irreps.spherical_harmonics(l_max), outputs, backend="e3nn"),
            "torch CG": CGConvolution(irreps, o3.Irreps.spherical_harmonics(l_max), outputs, backend="torch"),
            "SO(2)": SO2Convolution(irreps, irreps),
            "SO(2) m<=2": SO2Convolution(irreps, irreps, m_max=2),
        }
        if args.cpp:
            convs["SO(2) cpp"] = SO2Convolution(irreps, irreps, backend="cpp")
            convs["SO(2) m<=2 cpp"] = SO2Convolution(irreps, irreps, m_max=2, backend="cpp")
        if args.triton:
            convs["SO(2) triton"] = SO2Convolution(irreps, irreps, backend="triton")
            convs["SO(2) m<=2 triton"] = SO2Convolution(irreps, irreps, m_max=2, backend="triton")
        convs = {method: conv.to(device) for method, conv in convs.items()}
        cg = convs["torch CG"]
        bytes_per_edge = 2 * (cg.irreps_out.dim + cg.weight_numel) * torch.finfo(torch.get_default_dtype()).bits // 8
        chunk = max(1, min(args.edges, int(args.chunk_mb * 2**20 / bytes_per_edge)))
        error = _check_equivalence(cg, convs["SO(2)"], irreps, l_max, device)
        print(
            f"\nl_max {l_max}: CG {len(cg.instructions)} paths, {cg.weight_numel} weights/edge, edge chunks of {chunk}; "
            f"SO(2) {convs['SO(2)'].weight_numel} weights/edge (m<=2: {convs['SO(2) m<=2'].weight_numel}); "
            f"SO(2) vs CG (mapped weights): relative difference {error:.1e}",
            flush=True,
        )
        node_feats = irreps.randn(args.nodes, -1, device=device)
        edge_vec = torch.randn(args.edges, 3, device=device)
        edge_index = torch.randint(0, args.nodes, (2, args.edges), device=device)
        probe = torch.randn(args.nodes, irreps.dim, device=device)
        for method, conv in convs.items():
            if isinstance(conv, CGConvolution):
                run = _cg_runner(conv, l_max, chunk)
                probe_m = torch.randn(args.nodes, conv.irreps_out.dim, device=device)
            else:
                run, probe_m = _so2_runner(conv), probe
            weights = torch.randn(args.edges, conv.weight_numel, device=device)
            small = (node_feats, edge_vec[:64], weights[:64], edge_index[:, :64])
            with torch.no_grad():
                run(*small)  # warm-up (e3nn code generation)
            run(*small, probe_m)

            def forward():
                with torch.no_grad():
                    run(node_feats, edge_vec, weights, edge_index)

            def forward_backward():
                run(node_feats, edge_vec, weights, edge_index, probe_m)

            fwd, n_fwd = _median_ms(forward, args.repeats, args.budget, device)
            both, n_both = _median_ms(forward_backward, args.repeats, args.budget, device)
            table[method][l_max] = (fwd, both)
            print(f"  {method:17} forward {fwd:10.1f} ms ({n_fwd}x)   forward+backward {both:10.1f} ms ({n_both}x)", flush=True)

    for index, label in enumerate(["forward", "forward+backward"]):
        print(f"\n{label} (ms)")
        ratios = {"e3nn/SO(2)": ("e3nn CG", "SO(2)"), "torch/SO(2)": ("torch CG", "SO(2)"), "torch/m<=2": ("torch CG", "SO(2) m<=2")}
        if args.cpp:
            ratios |= {"torch/cpp": ("torch CG", "SO(2) cpp"), "torch/m<=2 cpp": ("torch CG", "SO(2) m<=2 cpp"),
                       "m<=2/m<=2 cpp": ("SO(2) m<=2", "SO(2) m<=2 cpp")}
        if args.triton:
            ratios |= {"SO(2)/triton": ("SO(2)", "SO(2) triton"), "m<=2/triton": ("SO(2) m<=2", "SO(2) m<=2 triton")}
        print(f"{'l_max':>5}" + "".join(f"{m:>19}" for m in methods) + "".join(f"{r:>16}" for r in ratios))
        for l_max in args.lmax:
            t = {m: table[m][l_max][index] for m in methods}
            print(f"{l_max:>5}" + "".join(f"{t[m]:>19.1f}" for m in methods) + "".join(f"{t[a] / t[b]:>15.1f}x" for a, b in ratios.values()))
        if len(args.lmax) > 1:
            exponents = ", ".join(
                f"{m} {_fit_exponent(args.lmax, [table[m][l][index] for l in args.lmax]):.1f}" for m in methods
            )
            print(f"scaling exponent k (time ∝ l_max^k, l_max {args.lmax[0]}..{args.lmax[-1]}): {exponents}")


if __name__ == "__main__":
    main()
