"""Memory of an energy and forces step in inference: with its edges in blocks (a memory
budget), a step's peak stays far below that of all edges at once.

Measured as the operating system sees it, in a fresh process: the peak resident set of the
step alone (Linux's high-water mark ``VmHWM``, reset through ``/proc/self/clear_refs`` just
before it), not a time, so load on the machine cannot change the verdict. glibc's allocator
is told to give every freed chunk over 128 KiB back at once: otherwise the heap that the
first step grows is reused by the second, and the resident set tells the order of the steps
more than their memory."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# 256 atoms of fcc Cu in float32, with the config and cutoff of each family (argv[1]).
STEP = textwrap.dedent(
    """
    import json
    import sys

    import torch
    from ase.build import bulk
    from torch_geometric.data import Batch
    from equinet.datasets import atoms_to_graph
    from equinet.potentials import build_model

    def status_bytes(key):
        line = next(line for line in open("/proc/self/status") if line.startswith(key + ":"))
        return int(line.split()[1]) * 1024

    torch.set_num_threads(1)
    config = json.loads(sys.argv[1])
    model = build_model(config, {"elements": [29], "atomic_energies": {29: 0.0}, "avg_num_neighbors": 42.0}).eval()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (4, 4, 4)
    atoms.rattle(0.05, seed=0)
    graph = Batch.from_data_list([atoms_to_graph(atoms, config["cutoff"], dtype=torch.float32)])
    model(Batch.from_data_list([atoms_to_graph(atoms[:4], config["cutoff"], dtype=torch.float32)]), create_graph=False)  # first-call set-up
    for budget_gb in (0.1, None):  # blocked first: what it leaves in the heap cannot shrink the other's peak much
        model.edge_block_size = None
        if budget_gb is not None:
            model.set_memory_budget(budget_gb)
        before = status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as reset:
            reset.write("5")  # the peak resident set starts again from the current one
        model(graph, forces=True, create_graph=False)
        print((status_bytes("VmHWM") - before) / 2**20)
    """
)

FAMILIES = {
    # 10,964 edges; messages of 32 channels and l <= 3
    "mace": {"name": "mace", "hidden_irreps": "32x0e+32x1o", "max_ell": 3, "correlation": 3, "num_interactions": 2,
             "radial_hidden": [32, 32], "cutoff": 5.0},
    # 19,968 edges, 78 an atom: with fewer, the per-atom tensors (9 x 64 numbers each, kept for
    # the backward in both paths) make much of the peak
    "tensornet": {"name": "tensornet", "hidden_channels": 64, "num_layers": 2, "num_rbf": 32, "cutoff": 6.0},
}  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak resident set")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_edge_blocks_bound_the_peak_memory_of_a_step(family):
    config = json.dumps({**FAMILIES[family], "dtype": "float32"})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    done = subprocess.run([sys.executable, "-c", STEP, config], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    blocked, whole = (float(line) for line in done.stdout.split())  # MiB beyond what the process held before the step
    assert blocked < 100, f"with a 0.1 GiB budget the step took {blocked:.0f} MiB"
    assert whole > 150, f"all edges at once took only {whole:.0f} MiB: the bound above no longer tells the paths apart"
