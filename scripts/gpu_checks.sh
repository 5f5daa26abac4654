#!/usr/bin/env bash
# Every GPU check of the kernels in one call, for a lent NVIDIA machine (short leases).
#
#   make gpu-wheels                      # here, once: the wheels the GPU image lacks, in .gpu-wheels/
#   bash scripts/gpu_checks.sh [OUTDIR]  # there, with .gpu-wheels carried along
#
# The GPU image has torch, triton, e3nn, torch_geometric and lightning, but not ase, vesin,
# pydantic or cuEquivariance: they are installed from .gpu-wheels/ (no index is reachable there;
# cuEquivariance's CUDA ops come as cueq-ops.tar.xz, the contents of their wheels), with equinet
# itself, into .gpu-site/ under the repository. Then, each step logged to OUTDIR
# (default $OUT, else gpu-checks/), with a time limit per step so that one hang cannot eat the lease:
#   1. the kernel tests on the device (TRITON_INTERPRET=0): tests/test_kernels.py, tests/test_cueq.py;
#   2. scripts/bench_kernels.py --device cuda (CG convolution: triton, torch, e3nn, cuEquivariance),
#      the Triton kernels at five launch configurations (tile elements x warps; x1: scalar loads);
#   3. scripts/bench_so2.py --device cuda --triton (SO(2) convolution, torch and triton backends);
#   4. scripts/bench_tp.py --gaunt --device cuda --triton (Gaunt grid product, torch and triton);
#   5. scripts/triton_report.py --check: every launch compiles for sm_90 with the device's Triton
#      and keeps its values in registers (no spills; the answer depends on the Triton version,
#      so it is checked here and not in the test suite).
# The tests run with PYTHONSAFEPATH=1 (python -P, inherited by their subprocesses) so that the
# checkout's equinet/ folder does not shadow the installed package (the scripts import their
# neighbours in scripts/, so they run without it).
# The summary at the end (the last lines of each log) is what a short reply carries.
#
# Rehearsal here, without a GPU: a Python 3.12 venv with the device's torch 2.11.0, triton 3.6.0,
# e3nn, torch_geometric, lightning and pytest; `PYTHON=that/python bash scripts/gpu_checks.sh /tmp/out`
# installs as on the device (the GPU steps then fail at once); then, with numpy < 2.4 (Triton
# 3.6's interpreter), TRITON_INTERPRET=1 PYTHONSAFEPATH=1 PYTHONPATH=$PWD/.gpu-site that/python
# -m pytest tests/test_kernels.py tests/test_cueq.py, and that/python scripts/triton_report.py --check.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-checks}}"
mkdir -p "$out"
python="${PYTHON:-python3}"

export PYTHONPATH="$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_INTERPRET=0
if [ -d .gpu-wheels ]; then
    "$python" -m pip install --quiet --no-deps --no-index --target .gpu-site .gpu-wheels/*.whl >"$out/install.log" 2>&1 \
        || echo "installing .gpu-wheels failed: see $out/install.log"
    if [ -f .gpu-wheels/cueq-ops.tar.xz ]; then
        "$python" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='tar')" \
            .gpu-wheels/cueq-ops.tar.xz .gpu-site >>"$out/install.log" 2>&1 \
            || echo "unpacking cuEquivariance's ops failed: see $out/install.log"
    fi
fi
"$python" -m pip install --quiet --no-deps --no-build-isolation --no-index --target .gpu-site . >>"$out/install.log" 2>&1 \
    || echo "installing equinet failed: see $out/install.log"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$python" -c "import torch, triton, e3nn; print('torch', torch.__version__, 'triton', triton.__version__, 'e3nn', e3nn.__version__)"
    # torch first: libcue_ops.so finds libnvrtc and libcublas only among the libraries torch has loaded
    "$python" -c "import torch, cuequivariance_ops_torch as ops; print('cuequivariance_ops_torch', ops.__version__)" 2>&1 | tail -n 1
} >"$out/versions.log" 2>&1

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    # SIGINT at the limit: pytest still prints its summary of the tests that ran (KILL 10 s later)
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    echo "$name: exit $? in $((SECONDS - start)) s" >>"$out/steps.log"
}

step tests 170 env PYTHONSAFEPATH=1 "$python" -m pytest -q -p no:cacheprovider --durations=10 tests/test_kernels.py tests/test_cueq.py
step bench_kernels 210 "$python" scripts/bench_kernels.py --device cuda --repeats 10 --triton-blocks 1024x4,1024x4x1,512x4,1024x8,2048x8
step bench_so2 90 "$python" scripts/bench_so2.py --device cuda --triton --lmax 2 4 6 --repeats 5 --budget 10
step bench_gaunt 70 "$python" scripts/bench_tp.py --gaunt --device cuda --triton --lmax-range 2,4,6 --channels 1,32
step triton_report 60 "$python" scripts/triton_report.py --check

cat "$out/versions.log" "$out/steps.log"
for name in tests bench_kernels bench_so2 bench_gaunt triton_report; do
    echo "== $name"
    tail -n 12 "$out/$name.log"
done
