"""Compile equinet's Triton kernels for a GPU that is not here, and report what ptxas says of them.

    python scripts/triton_report.py [--arch 90] [--dtypes float32,float64] [--cases cg,so2,gaunt] [--check] [--dump DIR]

Triton compiles ahead of time without a device: its bundled ptxas turns the kernels into
machine code for ``sm_ARCH`` (default 90, the H100/H200) on this CPU. The launches are the
ones the operators make at the benchmark sizes of ``bench_kernels.py`` (CG convolution:
MACE-medium, NequIP), ``bench_so2.py`` (SO(2) convolution, 32 channels, l_max 2/4/6, m_max
l_max and 2) and ``bench_tp.py --gaunt`` (Gaunt grid product, 32 channels, l_max 2/4/6): each
operator runs forward, backward and the double backward of force training on small CPU
tensors with every kernel launch recorded instead of run (outputs stay empty; block sizes
depend on the tables, not on the graph size). Each distinct launch (kernel, dtype, block
sizes) is compiled the way Triton's JIT would compile it (same specialization on argument
values and alignment), and a line printed: registers per thread, spilled bytes (stores/loads), stack frame, shared
memory, and how many of its global accesses in the PTX move 16 bytes at a time (``v16``).
Spills mean local-memory traffic, the first thing to rule out before a kernel is timed.

``--check`` exits 1 if a kernel does not compile or spills. Compilers differ between Triton
versions (3.6, on the lent H200s, failed on a kernel that 3.9 compiled): run it with the
version the GPU will have. ``--dump DIR`` writes each launch's PTX and cubin
(``DIR/<kernel>_<dtype>_<blocks>.ptx``, ``.cubin``); Triton's bundled ``cuobjdump -sass`` (in
``triton/backends/nvidia/bin``) shows where in the loops a spill sits. This uses Triton
internals (the JIT's binder and ``_pack_args``), checked with Triton 3.6, 3.7.1, 3.8 and 3.9.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "0"  # the kernels must be real JIT functions, not interpreted ones
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated (else it warns)

import argparse
import contextlib
import io
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
from e3nn import o3
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

from equinet.ops import CGConvolution, GauntTensorProduct, SO2Convolution, spherical_harmonics
from equinet.ops.kernels.triton import cg_ops, gaunt_grid

CG_CASES = {  # as scripts/bench_kernels.py
    "MACE-medium": ("128x0e+128x1o", 3, "0e+1o+2e+3o"),
    "NequIP": ("32x0e+32x1o+32x2e", 2, "0e+1o+2e"),
}
L_VALUES = (2, 4, 6)
CHANNELS = 32
NUM_NODES, NUM_EDGES = 40, 400


@dataclass
class Launch:
    kernel: JITFunction
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def recorded_launches():
    """Within the block, ``kernel[grid](...)`` appends a :class:`Launch` instead of running,
    and the kernels' device check lets CPU tensors through."""
    launches: list[Launch] = []
    run, checks = JITFunction.run, (cg_ops.check_device, gaunt_grid.check_device)
    JITFunction.run = lambda self, *args, grid, warmup, **kwargs: launches.append(Launch(self, args, kwargs))
    cg_ops.check_device = gaunt_grid.check_device = lambda tensor: None
    try:
        yield launches
    finally:
        JITFunction.run = run
        cg_ops.check_device, gaunt_grid.check_device = checks


def differentiate_twice(module, *inputs, extra=()) -> None:
    """Forward, backward with a graph, and the backward of that: what force training runs."""
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = module(*leaves, *extra)
    grads = torch.autograd.grad(out.sum(), leaves, create_graph=True)
    torch.autograd.grad(sum(g.sum() for g in grads), leaves, allow_unused=True)


def run_cg(dtype) -> None:
    for irreps, l_max, irreps_out in CG_CASES.values():
        irreps = o3.Irreps(irreps)
        conv = CGConvolution(irreps, o3.Irreps.spherical_harmonics(l_max), irreps_out, backend="triton").to(dtype)
        x = torch.randn(NUM_NODES, irreps.dim, dtype=dtype)
        y = spherical_harmonics(l_max, torch.randn(NUM_EDGES, 3, dtype=dtype))
        w = torch.randn(NUM_EDGES, conv.weight_numel, dtype=dtype)
        differentiate_twice(conv, x, y, w, extra=(torch.randint(0, NUM_NODES, (2, NUM_EDGES)),))


def run_so2(dtype) -> None:
    for l_max in L_VALUES:
        irreps = o3.Irreps([(CHANNELS, (l, (-1) ** l)) for l in range(l_max + 1)])
        for m_max in (None, 2):
            conv = SO2Convolution(irreps, irreps, m_max=m_max, backend="triton").to(dtype)
            x = torch.randn(NUM_NODES, irreps.dim, dtype=dtype)
            edge_vec = torch.randn(NUM_EDGES, 3, dtype=dtype)
            w = torch.randn(NUM_EDGES, conv.weight_numel, dtype=dtype)
            differentiate_twice(conv, x, edge_vec, w, extra=(torch.randint(0, NUM_NODES, (2, NUM_EDGES)),))


def run_gaunt(dtype) -> None:
    for l_max in L_VALUES:
        irreps = o3.Irreps([(CHANNELS, ir) for _, ir in o3.Irreps.spherical_harmonics(l_max)])
        product = GauntTensorProduct(irreps, irreps, irreps, backend="triton").to(dtype).requires_grad_(False)
        differentiate_twice(product, torch.randn(NUM_NODES, irreps.dim, dtype=dtype), torch.randn(NUM_NODES, irreps.dim, dtype=dtype))


CASES = {"cg": run_cg, "so2": run_so2, "gaunt": run_gaunt}


def compile_launch(launch: Launch, target: GPUTarget):
    """Compile as ``JITFunction.run`` would (same specialization on values and alignment):
    ``(compiled kernel, ptxas's log)``."""
    backend = make_backend(target)
    kwargs = dict(launch.kwargs, debug=False)
    binder = create_function_from_signature(launch.kernel.signature, launch.kernel.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = launch.kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # dump_ptxas_log prints ptxas's -v report
        compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs), target=target, options=options.__dict__)
    return compiled, log.getvalue()


def resources(ptxas_log: str) -> dict[str, int]:
    """Registers, spill bytes and stack from ptxas's -v log; -1 where missing (``--check`` fails then)."""
    numbers = {}
    for key, pattern in {
        "registers": r"Used (\d+) registers",
        "spill stores": r"(\d+) bytes spill stores",
        "spill loads": r"(\d+) bytes spill loads",
        "stack": r"(\d+) bytes stack frame",
    }.items():
        match = re.search(pattern, ptxas_log)
        numbers[key] = int(match.group(1)) if match else -1
    return numbers


def vector_accesses(ptx: str) -> int:
    """Global accesses of 16 bytes in a kernel's PTX: loads and stores of 4 x 32 or 2 x 64 bits,
    and asynchronous copies to shared memory (``cp.async``, which tl.dot tiles load through)."""
    loads_and_stores = re.findall(r"\b(?:ld|st)\.global\.(?:v4\.b32|v2\.b64)\b", ptx)
    copies = re.findall(r"\bcp\.async\.\w+\.shared\.global \[[^]]*\], \[[^]]*\], 0x10\b", ptx)
    return len(loads_and_stores) + len(copies)


def dump(compiled, stem: Path) -> None:
    """``stem.ptx`` and ``stem.cubin`` of a compiled kernel."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".ptx").write_text(compiled.asm["ptx"])
    stem.with_suffix(".cubin").write_bytes(compiled.asm["cubin"])


def describe(launch: Launch) -> tuple[str, str, str]:
    """(kernel, floating dtypes, block sizes) of a launch."""
    dtypes = {str(a.dtype).removeprefix("torch.") for a in launch.args if isinstance(a, torch.Tensor) and a.is_floating_point()}
    blocks = " ".join(f"{k.removeprefix('BLOCK_')}={v}" for k, v in launch.kwargs.items() if k.startswith("BLOCK_"))
    return launch.kernel.__name__.strip("_"), "/".join(sorted(dtypes)), blocks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--check", action="store_true", help="exit 1 if a kernel fails to compile or spills")
    parser.add_argument("--dump", type=Path, metavar="DIR", help="write each launch's PTX and cubin into DIR")
    args = parser.parse_args()
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"--cases: unknown {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")

    target = GPUTarget("cuda", args.arch, 32)
    distinct: dict[tuple[str, str, str], tuple[list[str], Launch]] = {}  # describe(): (cases that launch it, a launch)
    with recorded_launches() as launches:
        for case in args.cases.split(","):
            for dtype_name in args.dtypes.split(","):
                start = len(launches)
                CASES[case](getattr(torch, dtype_name))
                for launch in launches[start:]:
                    cases, _ = distinct.setdefault(describe(launch), ([], launch))
                    cases += [] if case in cases else [case]

    print(f"triton {triton.__version__}, target sm_{args.arch}: {len(distinct)} distinct launches")
    print(
        f"{'cases':14}{'kernel':33}{'dtype':9}{'blocks':30}{'warps':>6}{'regs':>6}{'spill st/ld (B)':>17}{'stack':>7}"
        f"{'smem':>7}{'v16':>5}{'s':>5}"
    )
    failures = 0
    with tempfile.TemporaryDirectory() as cache:  # a fresh cache: ptxas runs (and reports) for every kernel
        triton.knobs.cache.dir, triton.knobs.nvidia.dump_ptxas_log = cache, True
        for (kernel_name, dtype, blocks), (cases, launch) in distinct.items():
            case = ",".join(cases)
            start = time.perf_counter()
            try:
                compiled, log = compile_launch(launch, target)
            except Exception as error:  # the report goes on; --check fails at the end
                print(f"{case:14}{kernel_name:33}{dtype:9}{blocks:30}  does not compile: {str(error).splitlines()[0]}")
                failures += 1
                continue
            numbers = resources(log)
            if args.dump:
                dump(compiled, args.dump / "_".join([kernel_name, dtype.replace("/", "-"), blocks.replace(" ", "_")]))
            spills = f"{numbers['spill stores']}/{numbers['spill loads']}"
            failures += numbers["spill stores"] != 0 or numbers["spill loads"] != 0
            print(
                f"{case:14}{kernel_name:33}{dtype:9}{blocks:30}{compiled.metadata.num_warps:6}{numbers['registers']:6}"
                f"{spills:>17}{numbers['stack']:7}{compiled.metadata.shared:7}{vector_accesses(compiled.asm['ptx']):5}"
                f"{time.perf_counter() - start:5.1f}",
                flush=True,
            )
    if args.check and failures:
        print(f"{failures} of {len(distinct)} launches do not compile or spill")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
