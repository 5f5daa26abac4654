"""Time equinet's CG convolution against the e3nn reference, side by side in one process.

    python scripts/bench_tp.py [--edges 20000 --nodes 1000 --irreps 64x0e+64x1o+64x2e --lmax 3]

Both backends get identical inputs; each is warmed up (e3nn's first call builds its
fx-compiled code) before timing, and the median of repeated runs is reported for the
forward pass and for forward + backward (gradients for node features, edge attributes
and weights, as in force training). Prints milliseconds and the e3nn/equinet ratio.

    python scripts/bench_tp.py --gaunt [--batch 10000 --channels 1,32 --lmax-range 1-8]

times the Gaunt tensor product (sphere grid and 2D FFT) against e3nn's
``FullTensorProduct``, the Clebsch–Gordan product it replaces, for inputs
``C x (0e + 1o + ... + L)`` and outputs up to the same L: see :func:`gaunt_benchmark`.
``--device cuda --triton`` adds the grid product on its Triton kernel (``backend="triton"``),
``--cpp`` on its C++ CPU kernel (``backend="cpp"``).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
from e3nn import o3

from equinet.ops import CGConvolution, GauntTensorProduct, spherical_harmonics


def times_ms(fn, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn`` after one warm-up call, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def _scaling_exponent(l_values: list[int], times: list[float]) -> float:
    """k of the least-squares fit ``time ~ l_max^k`` (log-log)."""
    x, y = [math.log(l) for l in l_values], [math.log(t) for t in times]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def gaunt_benchmark(
    batch: int, channels: list[int], l_values: list[int], repeats: int, device: str = "cpu", triton: bool = False,
    all_parities: bool = False, cpp: bool = False,
) -> None:
    """Gaunt TP (grid, FFT) against e3nn's full CG product, forward and forward + backward.

    Inputs are ``C x (0e+1o+...+L)`` twice (channel-wise), outputs ``C x (0e+1o+...+L)``.
    The e3nn reference is ``o3.FullTensorProduct`` on one channel with the C channels folded
    into the batch (``[batch * C, (L+1)^2]``, prepared outside the timing), outputs filtered
    to ``0e+1o+...+L``: exactly the paths the Gaunt product couples (``l1 + l2 + L`` even),
    each kept as its own output, which is what a CG model would compute. Backward gives the
    gradients of ``out.sum()`` for both inputs. Each method is warmed up, then the best of
    ``repeats`` runs is reported (the least disturbed one on a shared machine). The Gaunt
    products' weights are frozen, so that both codes compute the same gradients. On a GPU each
    timed call ends with a synchronisation; ``triton`` (GPU) and ``cpp`` (CPU) add the grid product
    on those kernels, printed under each row with their speed-ups over the torch grid and e3nn.
    ``all_parities`` asks both codes for the outputs of both parities up to L
    (``0e+1o+1e+2e+2o+...``, every CG path; the Gaunt product makes the odd ones by its bracket).
    """
    labels = ("grid", "fft", "e3nn")
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    results: dict[tuple[int, int], dict[str, tuple[float, float]]] = {}
    outputs = "0e+1o+1e+...+Le+Lo" if all_parities else "0e+1o+...+L"
    print(f"Gaunt TP: C x (0e+1o+...+L) (x) C x (0e+1o+...+L) -> C x ({outputs}), channel-wise, batch {batch}, "
          f"{torch.get_default_dtype()}, best of {repeats}")
    print(f"e3nn: o3.FullTensorProduct on 1 channel, channels folded into the batch, filter_ir_out = {outputs}")
    header = (f"{'C':>3}{'L':>3}{'grid pts':>10}{'fft size':>10} |{'grid':>9}{'fft':>9}{'e3nn':>10} |"
              f"{'grid':>9}{'fft':>9}{'e3nn':>10} |{'e3nn/grid':>10}{'fft/grid':>9}")
    print(f"{'':26} |{'forward (ms)':^28} |{'forward+backward (ms)':^28} |{'speed-up (f+b)':^19}")
    print(header)
    for c in channels:
        for l_max in l_values:
            irreps_sh = o3.Irreps.spherical_harmonics(l_max)
            irreps = o3.Irreps([(c, ir) for _, ir in irreps_sh])
            out_irs = [ir for _, ir in irreps_sh]
            if all_parities:
                out_irs = sorted(out_irs + [o3.Irrep(ir.l, -ir.p) for ir in out_irs[1:]], key=lambda ir: (ir.l, -ir.p * (-1) ** ir.l))
            irreps_out = o3.Irreps([(c, ir) for ir in out_irs])
            # Weights frozen: gradients for the two inputs only, as e3nn's weightless product gets.
            modules = {
                method: GauntTensorProduct(irreps, irreps, irreps_out, method=method).requires_grad_(False) for method in ("grid", "fft")
            }
            modules["e3nn"] = o3.FullTensorProduct(irreps_sh, irreps_sh, filter_ir_out=out_irs)
            x1, x2 = irreps.randn(batch, -1, device=device), irreps.randn(batch, -1, device=device)
            inputs = {"grid": (x1, x2), "fft": (x1, x2)}
            inputs["e3nn"] = tuple(irreps_sh.randn(batch * c, -1, device=device) for _ in range(2))
            kernels = [backend for backend, wanted in (("triton", triton), ("cpp", cpp)) if wanted]
            for backend in kernels:
                modules[backend] = GauntTensorProduct(irreps, irreps, irreps_out, backend=backend).requires_grad_(False)
                inputs[backend] = (x1, x2)
            row = {}
            for label in (*labels, *kernels):
                module, leaves = modules[label].to(device), inputs[label]

                def forward(module=module, leaves=leaves):
                    with torch.no_grad():
                        module(*leaves)
                    synchronize()

                def forward_backward(module=module, leaves=leaves):
                    leaves = [t.detach().requires_grad_() for t in leaves]
                    torch.autograd.grad(module(*leaves).sum(), leaves)
                    synchronize()

                row[label] = (min(times_ms(forward, repeats)), min(times_ms(forward_backward, repeats)))
            results[(c, l_max)] = row
            grid_points = "x".join(map(str, modules["grid"].grid_size))
            fft_size = "x".join(map(str, modules["fft"].fft_size))
            print(
                f"{c:3d}{l_max:3d}{grid_points:>10}{fft_size:>10} |"
                + "".join(f"{row[label][0]:{9 if label != 'e3nn' else 10}.2f}" for label in labels)
                + " |"
                + "".join(f"{row[label][1]:{9 if label != 'e3nn' else 10}.2f}" for label in labels)
                + f" |{row['e3nn'][1] / row['grid'][1]:9.1f}x{row['fft'][1] / row['grid'][1]:8.2f}x",
                flush=True,
            )
            for backend in kernels:
                print(
                    f"{'':26} | grid on the {backend} kernel: forward {row[backend][0]:.2f} ms, forward+backward "
                    f"{row[backend][1]:.2f} ms ({row['grid'][1] / row[backend][1]:.2f}x the torch grid, "
                    f"{row['e3nn'][1] / row[backend][1]:.1f}x e3nn)",
                    flush=True,
                )
    fitted = [l for l in l_values if l >= 2] or l_values
    if len(fitted) >= 2:
        print(f"\nscaling exponent k of time ~ l_max^k (least-squares fit over l_max {fitted[0]}..{fitted[-1]}):")
        print(f"{'C':>3} |" + "".join(f"{label + ' ' + kind:>11}" for kind in ("fwd", "f+b") for label in labels))
        for c in channels:
            exponents = [
                _scaling_exponent(fitted, [results[(c, l)][label][kind] for l in fitted]) for kind in (0, 1) for label in labels
            ]
            print(f"{c:3d} |" + "".join(f"{k:11.1f}" for k in exponents))
    for c in channels:
        if (c, 6) in results:
            row = results[(c, 6)]
            print(
                f"l_max 6, C={c}, forward+backward: grid is {row['e3nn'][1] / row['grid'][1]:.1f}x faster than e3nn "
                f"and {row['fft'][1] / row['grid'][1]:.2f}x faster than fft"
            )


def _int_list(text: str) -> list[int]:
    """'1,32' -> [1, 32]; '1-8' -> [1, ..., 8]."""
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--irreps", default="64x0e+64x1o+64x2e", help="node feature irreps")
    parser.add_argument("--lmax", type=int, default=3, help="degree of the edge spherical harmonics")
    parser.add_argument("--irreps-out", default="0e+1o+2e+3o", help="allowed output irreps ('all' keeps every path)")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--edges", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 10; 3 with --gaunt)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    gaunt = parser.add_argument_group("Gaunt tensor product (--gaunt)")
    gaunt.add_argument("--gaunt", action="store_true", help="time the Gaunt TP (grid, FFT) against e3nn's FullTensorProduct")
    gaunt.add_argument("--batch", type=int, default=10000)
    gaunt.add_argument("--channels", type=_int_list, default=[1, 32], help="channel counts, e.g. 1,32")
    gaunt.add_argument("--lmax-range", type=_int_list, default=list(range(1, 9)), help="degrees, e.g. 1-8 or 2,4,6")
    gaunt.add_argument("--device", default="cpu")
    gaunt.add_argument("--triton", action="store_true", help="add the grid product on its Triton kernel")
    gaunt.add_argument("--cpp", action="store_true", help="add the grid product on its C++ CPU kernel")
    gaunt.add_argument("--all-parities", action="store_true", help="outputs of both parities (the odd CG paths too)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_default_dtype(getattr(torch, args.dtype))
    torch.manual_seed(0)
    if args.gaunt:
        print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
        gaunt_benchmark(
            args.batch, args.channels, args.lmax_range, args.repeats or 3, args.device, args.triton, args.all_parities, args.cpp
        )
        return
    args.repeats = args.repeats or 10
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

        results[backend] = (
            statistics.median(times_ms(forward, args.repeats)),
            statistics.median(times_ms(forward_backward, args.repeats)),
        )

    print(f"{'':18}{'e3nn (ms)':>12}{'equinet (ms)':>14}{'speed-up':>10}")
    for i, label in enumerate(["forward", "forward+backward"]):
        reference, ours = results["e3nn"][i], results["torch"][i]
        print(f"{label:18}{reference:12.1f}{ours:14.1f}{reference / ours:9.2f}x")


if __name__ == "__main__":
    main()
