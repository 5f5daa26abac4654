"""Time the fused Triton CG convolution against e3nn, equinet's torch and cueq backends and cuEquivariance.

    python scripts/bench_kernels.py --device cuda [--repeats 20 --nodes 5000 --edges 50000]
    TRITON_INTERPRET=1 python scripts/bench_kernels.py --device cpu --tiny   # runs the script, times nothing useful
    python scripts/bench_kernels.py --device cpu --tiny --skip triton

Two convolutions, as the models use them: MACE-medium (``128x0e+128x1o`` node features,
spherical harmonics up to l = 3, outputs ``0e+1o+2e+3o``) and NequIP (``32x0e+32x1o+32x2e``,
l <= 2, outputs ``0e+1o+2e``), in float32 and float64, forward and forward + backward
(gradients of ``out.square().sum()`` for node features, edge attributes and weights, as in
force training). Every backend gets the same inputs and is warmed up first (Triton compiles,
e3nn builds its code); the median of ``--repeats`` runs is reported, with the GPU
synchronised around each, and the peak memory of forward + backward on a GPU.

Two columns run cuEquivariance (``cuequivariance_torch``; each skipped with a note when it
cannot be built): ``cueq`` is equinet's ``CGConvolution(backend="cueq")`` (equinet's
descriptor on cuEquivariance, with the layout permutations at the boundary), ``cuet`` is
cuEquivariance's own ``ChannelWiseTensorProduct`` at its defaults, on e3nn's ``mul_ir``
layout, with its gather (``indices_1``) and scatter (``indices_out``) fused into the
product. Both use cuEquivariance's CUDA kernel where cuequivariance-ops-torch is installed
and its PyTorch code elsewhere. Their outputs are compared with the torch backend's.
``--tiny`` shrinks the graph and the channels so that the script runs end to end on a CPU
(the triton column through Triton's interpreter, or ``--skip triton``).

On a GPU the script first measures the device-to-device copy bandwidth (bytes read plus
written, a 2 GiB buffer) and prints, per case, the forward pass's floor: the fewest bytes it
must move (inputs read once, output written once) at that bandwidth, against the triton time.

``--triton-blocks 1024x4,1024x4x1,512x4`` times the Triton kernels at several GPU launch
configurations (elements per tile x warps per program, and optionally x the largest channel
alignment the kernels may promise, 1 for none: scalar loads instead of 16-byte vectors; every
one compiles without spills, ``scripts/triton_report.py``): the first is the ``triton`` row,
the others rows such as ``t1024x4x1``, each checked against the torch backend too. The
interpreter ignores them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics

import torch
from e3nn import o3

from bench_tp import times_ms  # scripts/ is on sys.path when a script in it runs
from equinet.ops import CGConvolution, spherical_harmonics

# name: (node irreps, l_max of the edge spherical harmonics, allowed output irreps)
CASES = {
    "MACE-medium": ("128x0e+128x1o", 3, "0e+1o+2e+3o"),
    "NequIP": ("32x0e+32x1o+32x2e", 2, "0e+1o+2e"),
}
EQUINET_BACKENDS = ("e3nn", "torch", "triton", "cueq")  # CGConvolution(backend=...)
BACKENDS = (*EQUINET_BACKENDS, "cuet")


def _cuet_convolution(irreps: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: str, device, dtype):
    """cuEquivariance's own channel-wise product with its fused gather and scatter, as
    ``(fn, weight_numel, out_dim)``; raises if it cannot be built."""
    import cuequivariance as cue
    import cuequivariance_torch as cuet

    # cue.O3's Clebsch–Gordan coefficients and path order are e3nn's for these cases (the
    # forward difference printed against the torch backend checks it).
    tp = cuet.ChannelWiseTensorProduct(
        cue.Irreps("O3", str(irreps)),
        cue.Irreps("O3", str(irreps_sh)),
        filter_irreps_out=[mul_ir.ir for mul_ir in cue.Irreps("O3", irreps_out)],
        layout=cue.mul_ir,
        shared_weights=False,
        internal_weights=False,
        device=device,
        dtype=dtype,
    )

    def convolution(node_feats, edge_attrs, edge_weights, edge_index):
        return tp(
            node_feats, edge_attrs, edge_weights, indices_1=edge_index[0], indices_out=edge_index[1], size_out=node_feats.shape[0]
        )

    return convolution, tp.weight_numel, tp.irreps_out.dim


@contextlib.contextmanager
def _gpu_launches(conv, tile: int, warps: int, align: int | None = None):
    """Within the block the Triton kernels launch on a GPU with ``tile``-element tiles and
    ``warps`` warps, and ``conv`` (``backend="triton"``) promises at most ``align`` channels of alignment."""
    from equinet.ops.kernels.triton import cg_triton

    dims = conv.tp._dims  # [..., channel alignment], passed to every launch
    saved = cg_triton._GPU_TILE, cg_triton._GPU_WARPS, dims[5]
    cg_triton._GPU_TILE, cg_triton._GPU_WARPS = tile, warps
    dims[5] = min(dims[5], align or dims[5])
    try:
        yield
    finally:
        cg_triton._GPU_TILE, cg_triton._GPU_WARPS, dims[5] = saved


def _copy_bandwidth_gbs(device) -> float | None:
    """GB/s of a device-to-device copy of 2 GiB (bytes read plus written; median of 10), None off a GPU."""
    if device.type != "cuda":
        return None
    source = torch.randn(2**29, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    seconds = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        target.copy_(source)
        end.record()
        torch.cuda.synchronize()
        seconds.append(start.elapsed_time(end) / 1e3)
    return 2 * source.numel() * source.element_size() / statistics.median(seconds) / 1e9


def _synchronized(fn, device):
    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def _peak_memory_mib(fn, device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def bench_case(
    irreps, l_max, irreps_out, num_nodes, num_edges, dtype, device, repeats, skip, triton_blocks, bandwidth_gbs
) -> None:
    irreps, irreps_sh = o3.Irreps(irreps), o3.Irreps.spherical_harmonics(l_max)
    generator = torch.Generator().manual_seed(0)
    node_feats = torch.randn(num_nodes, irreps.dim, generator=generator, dtype=dtype).to(device)
    edge_attrs = spherical_harmonics(l_max, torch.randn(num_edges, 3, generator=generator, dtype=dtype)).to(device)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=generator).to(device)

    convolutions, weight_numels = {}, {}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # CG coefficients built in the benchmark's dtype
    try:
        for backend in EQUINET_BACKENDS:
            if backend not in skip:
                try:
                    conv = CGConvolution(irreps, irreps_sh, irreps_out, backend=backend).to(device)
                except ImportError as error:  # an optional backend that is not installed
                    print(f"  ({backend} skipped: {error})")
                    continue
                convolutions[backend], weight_numels[backend] = conv, conv.weight_numel
                out_dim = conv.irreps_out.dim
        if "cuet" not in skip:
            try:
                cuet, weight_numels["cuet"], cuet_dim = _cuet_convolution(irreps, irreps_sh, irreps_out, device, dtype)
                if cuet_dim != out_dim:
                    raise RuntimeError(f"its output has {cuet_dim} features, ours {out_dim}")
                convolutions["cuet"] = cuet
            except Exception as error:  # not installed, or an API it does not have
                print(f"  (cuet skipped: {type(error).__name__}: {error})")
    finally:
        torch.set_default_dtype(previous)
    weights = {
        backend: torch.randn(num_edges, numel, generator=generator, dtype=dtype).to(device)
        for backend, numel in weight_numels.items()
    }

    # (row, backend, (tile, warps[, align]) or None): the Triton kernels once per --triton-blocks entry
    runs = []
    for backend in convolutions:
        if backend == "triton" and triton_blocks:
            runs += [("triton" if i == 0 else "t" + "x".join(map(str, blocks)), backend, blocks)
                     for i, blocks in enumerate(triton_blocks)]  # fmt: skip
        else:
            runs.append((backend, backend, None))

    results = {}
    for row, backend, blocks in runs:
        conv, inputs = convolutions[backend], [node_feats, edge_attrs, weights[backend]]

        def forward(conv=conv, inputs=inputs):
            with torch.no_grad():
                conv(*inputs, edge_index)

        def forward_backward(conv=conv, inputs=inputs):
            leaves = [t.detach().requires_grad_() for t in inputs]
            torch.autograd.grad(conv(*leaves, edge_index).square().sum(), leaves)

        forward, forward_backward = _synchronized(forward, device), _synchronized(forward_backward, device)
        with _gpu_launches(conv, *blocks) if blocks else contextlib.nullcontext():
            results[row] = (
                statistics.median(times_ms(forward, repeats)),
                statistics.median(times_ms(forward_backward, repeats)),
                _peak_memory_mib(forward_backward, device),
            )
            if backend in ("triton", "cueq", "cuet") and "torch" in convolutions:
                with torch.no_grad():
                    args = (node_feats, edge_attrs, weights["torch"], edge_index)
                    error = (conv(*args) - convolutions["torch"](*args)).abs().max().item()
                print(f"  {row} vs torch backend, forward: max abs difference {error:.1e}")

    reference = results.get("triton")
    print(f"  {'backend':10}{'fwd (ms)':>11}{'f+b (ms)':>11}{'f+b MiB':>9}{'fwd / triton':>14}{'f+b / triton':>14}")
    for row, (fwd, fwd_bwd, memory) in results.items():
        ratios = (f"{fwd / reference[0]:13.2f}x{fwd_bwd / reference[1]:13.2f}x") if reference else ""
        memory = f"{memory:9.0f}" if memory is not None else f"{'-':>9}"
        print(f"  {row:10}{fwd:11.2f}{fwd_bwd:11.2f}{memory}{ratios}")
    if bandwidth_gbs and reference and "torch" in convolutions:
        inputs = node_feats.numel() + edge_attrs.numel() + weights["torch"].numel()
        fewest_bytes = (inputs + num_nodes * out_dim) * node_feats.element_size() + edge_index.numel() * 8
        floor_ms = 1e3 * fewest_bytes / (bandwidth_gbs * 1e9)
        print(f"  forward floor: {fewest_bytes / 1e6:.1f} MB at {bandwidth_gbs:.0f} GB/s = {floor_ms:.3f} ms; "
              f"triton takes {reference[0] / floor_ms:.1f}x that")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the point) or cpu (with TRITON_INTERPRET=1 for triton)")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--edges", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--skip", default="", help=f"comma-separated backends to leave out, of {', '.join(BACKENDS)}")
    parser.add_argument("--tiny", action="store_true", help="4 channels, 20 nodes, 120 edges, 2 repeats: a smoke run")
    parser.add_argument(
        "--triton-blocks",
        default="",
        help="comma-separated GPU launch configurations TILExWARPS[xALIGN] for the Triton kernels, e.g. "
        "1024x4,1024x4x1,512x4 (first: the triton row; default: the kernels' own; ALIGN caps the channel alignment)",
    )
    args = parser.parse_args()
    try:
        triton_blocks = [tuple(int(n) for n in entry.split("x")) for entry in args.triton_blocks.split(",") if entry]
        if any(len(blocks) not in (2, 3) or min(blocks) < 1 for blocks in triton_blocks):
            raise ValueError
    except ValueError:
        parser.error(
            f"--triton-blocks: expected entries TILExWARPS[xALIGN] such as 1024x4 or 1024x4x1, got {args.triton_blocks!r}"
        )

    device = torch.device(args.device)
    skip = {backend for backend in args.skip.split(",") if backend}
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1" and "triton" not in skip:
        print("(triton skipped: on the CPU it needs TRITON_INTERPRET=1 in the environment)")
        skip.add("triton")
    if args.tiny:
        args.nodes, args.edges, args.repeats = 20, 120, 2
    print(f"machine: {platform.processor() or platform.machine()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", torch {torch.__version__}")  # fmt: skip
    print(f"graph: {args.nodes} nodes, {args.edges} edges; median of {args.repeats} runs")
    bandwidth_gbs = _copy_bandwidth_gbs(device)
    if bandwidth_gbs:
        print(f"device-to-device copy: {bandwidth_gbs:.0f} GB/s (bytes read + written)")
    for name in args.cases.split(","):
        irreps, l_max, irreps_out = CASES[name]
        if args.tiny:
            irreps = str(o3.Irreps([(4, ir) for _, ir in o3.Irreps(irreps)]))
        for dtype_name in args.dtypes.split(","):
            print(f"\n{name}: {irreps} x SH(l<={l_max}) -> {irreps_out}, {dtype_name}")
            bench_case(
                irreps, l_max, irreps_out, args.nodes, args.edges, getattr(torch, dtype_name), device, args.repeats, skip,
                triton_blocks, bandwidth_gbs,
            )  # fmt: skip


if __name__ == "__main__":
    main()
