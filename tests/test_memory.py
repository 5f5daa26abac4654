"""Memory of an energy and forces step in inference: with its edges in blocks (a memory
budget), a step's peak stays far below that of all edges at once, in Python and in the
exported graph's loops.

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

# 256 atoms of fcc Cu in float32, with the config and cutoff of each family (argv[1]), and
# the peak resident set of a call beyond what the process held before it.
SETUP = textwrap.dedent(
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

    def peak_mib(call):
        before = status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as reset:
            reset.write("5")  # the peak resident set starts again from the current one
        call()
        return (status_bytes("VmHWM") - before) / 2**20

    torch.set_num_threads(1)
    config = json.loads(sys.argv[1])
    model = build_model(config, {"elements": [29], "atomic_energies": {29: 0.0}, "avg_num_neighbors": 42.0}).eval()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (4, 4, 4)
    atoms.rattle(0.05, seed=0)
    """
)
STEP = SETUP + textwrap.dedent(
    """
    graph = Batch.from_data_list([atoms_to_graph(atoms, config["cutoff"], dtype=torch.float32)])
    model(Batch.from_data_list([atoms_to_graph(atoms[:4], config["cutoff"], dtype=torch.float32)]), create_graph=False)  # first-call set-up
    for budget_gb in (0.1, None):  # blocked first: what it leaves in the heap cannot shrink the other's peak much
        model.edge_block_size = None
        if budget_gb is not None:
            model.set_memory_budget(budget_gb)
        print(peak_mib(lambda: model(graph, forces=True, create_graph=False)))
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


# The exported graph of FAMILIES["mace"] on the same atoms (argv[2]: the folder to export to),
# its loops in blocks of 1,000 edges and 64 atoms, then in one block each, as LAMMPS runs it.
EXPORTED_STEP = SETUP + textwrap.dedent(
    """
    from equinet.export import export_model, load_exported
    from equinet.potentials.looped import Looped, set_block_sizes

    export_model(model, sys.argv[2] + "/mace.pt", max_memory_gb=1.0)
    graph, _ = load_exported(sys.argv[2] + "/mace.pt")
    data = atoms_to_graph(atoms, config["cutoff"], dtype=torch.float32)
    sender, receiver = data.edge_index
    edge_vec = data.pos[receiver] - data.pos[sender] + data.edge_shift.to(torch.float32) @ data.cell.view(3, 3)
    inputs = (edge_vec, torch.zeros(len(atoms), dtype=torch.long), data.edge_index, torch.tensor(len(atoms)))
    with torch.no_grad():  # as the LAMMPS plugin runs it
        graph(*inputs)
        for sizes in (Looped(1000, 64), Looped(10**9, 10**9)):
            set_block_sizes(graph, sizes)
            print(peak_mib(lambda: graph(*inputs)))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak resident set")
def test_the_exported_graphs_loops_bound_the_peak_memory_of_a_step(tmp_path):
    config = json.dumps({**FAMILIES["mace"], "dtype": "float32"})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    done = subprocess.run([sys.executable, "-c", EXPORTED_STEP, config, str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    blocked, whole = (float(line) for line in done.stdout.split())
    assert blocked < 50, f"in blocks of 1,000 edges the step took {blocked:.0f} MiB"  # 21 MiB when written
    assert whole > 100, f"in one block the step took only {whole:.0f} MiB: the bound above no longer tells the loops apart"  # 131 MiB
