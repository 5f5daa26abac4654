"""Time equinet's CG convolution against the e3nn reference, side by side in one process.

    python scripts/bench_tp.py [--edges 20000 --nodes 1000 --irreps 64x0e+64x1o+64x2e --lmax 3]

Both backends get identical inputs; each is warmed up (e3nn's first call builds its
fx-compiled code) before timing, and the median of repeated runs is reported for the
forward pass and for forward + backward (gradients for node features, edge attributes
and weights, as in force training). Prints milliseconds and the e3nn/equinet ratio.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from e3nn import o3

from equinet.ops import CGConvolution, spherical_harmonics


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--irreps", default="64x0e+64x1o+64x2e", help="node feature irreps")
    parser.add_argument("--lmax", type=int, default=3, help="degree of the edge spherical harmonics")
    parser.add_argument("--irreps-out", default="0e+1o+2e+3o", help="allowed output irreps ('all' keeps every path)")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--edges", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_default_dtype(getattr(torch, args.dtype))
    torch.manual_seed(0)
    irreps = o3.Irreps(args.irreps)
    irreps_sh = o3.Irreps.spherical_harmonics(args.lmax)
    irreps_out = None if args.irreps_out == "all" else args.irreps_out
    convs = {backend: CGConvolution(irreps, irreps_sh, irreps_out, backend=backend) for backend in ("e3nn", "torch")}
    conv = convs["torch"]

    node_feats = irreps.randn(args.nodes, -1)
    edge_attrs = spherical_harmonics(args.lmax, torch.randn(args.edges, 3))
    edge_weights = torch.randn(args.edges, conv.weight_numel)
    edge_index = torch.randint(0, args.nodes, (2, args.edges))
    inputs = [node_feats, edge_attrs, edge_weights]

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"conv: {conv.irreps_in1} x {conv.irreps_in2} -> {len(conv.instructions)} paths, out dim {conv.irreps_out.dim}")
    print(f"graph: {args.nodes} nodes, {args.edges} edges, {args.dtype}")

    results = {}
    for backend, module in convs.items():

        def forward(module=module):
            with torch.no_grad():
                module(*inputs, edge_index)

        def forward_backward(module=module):
            leaves = [t.detach().requires_grad_() for t in inputs]
            out = module(*leaves, edge_index)
            torch.autograd.grad(out.square().sum(), leaves)

        results[backend] = (_median_ms(forward, args.repeats), _median_ms(forward_backward, args.repeats))

    print(f"{'':18}{'e3nn (ms)':>12}{'equinet (ms)':>14}{'speed-up':>10}")
    for i, label in enumerate(["forward", "forward+backward"]):
        reference, ours = results["e3nn"][i], results["torch"][i]
        print(f"{label:18}{reference:12.1f}{ours:14.1f}{reference / ours:9.2f}x")


if __name__ == "__main__":
    main()
