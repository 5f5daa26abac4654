"""Shared fixtures. Exactness tests run in float64 (see DESIGN.md: e3nn's Wigner-D
generators follow the default dtype)."""

import contextlib
import io
import os

# Triton chooses between compiled kernels and its CPU interpreter when it is first imported
# (torch, e3nn and torch_geometric import it), so the kernel tests' TRITON_INTERPRET=1 is set
# here, before any test module is. TRITON_INTERPRET=0 in the environment keeps compiled
# kernels, for running tests/test_kernels.py on a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)


# Exports that the export command's tests and the LAMMPS tests share: tracing a model takes
# about 10 s, so each is written once per session.
EXPORT_STATISTICS = {"elements": [28, 29], "atomic_energies": {28: -4.1, 29: -3.7}, "avg_num_neighbors": 12.0, "force_rms": 0.7}
EXPORT_MEMBERS = [
    {"name": "mace", "hidden_irreps": "4x0e+4x1o", "max_ell": 1, "correlation": 2, "num_interactions": 1, "radial_hidden": [8]},
    {"name": "tensornet", "hidden_channels": 4, "num_layers": 2, "num_rbf": 4},
]
# As MACE-MPA-0: learned isolated-atom energies, which an export takes into its reference energies.
EXPORT_MPA = {
    "name": "mace", "hidden_irreps": "4x0e+4x1o", "max_ell": 2, "correlation": 3, "radial_hidden": [8],
    "first_layer_residual": True, "density_normalization": True, "pair_repulsion": True, "distance_transform": "agnesi",
}  # fmt: skip


def _export_model(config: dict, seed: int):
    from equinet.potentials import build_model

    torch.manual_seed(seed)
    return build_model({"dtype": "float64", "cutoff": 4.0, **config}, EXPORT_STATISTICS).eval()


def _export_command(argv: list[str]) -> str:
    """``equinet ARGV``, which must succeed; its standard output."""
    from equinet.cli import main

    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(argv) == 0
    return out.getvalue()


@pytest.fixture(scope="session")
def exported_committee(tmp_path_factory):
    """``equinet export committee.yaml --max-memory-gb 0.001`` of a one-layer MACE and a
    TensorNet (message-passing steps 1 and 3) for Ni and Cu, float64, its edges and atoms in
    blocks (loops of the graph; the smallest blocks, 1,024 edges and 64 atoms): (the
    exported file, the members, the output)."""
    from equinet import save_model
    from equinet.committee import write_committee

    folder = tmp_path_factory.mktemp("committee")
    members = [_export_model(config, seed) for seed, config in enumerate(EXPORT_MEMBERS)]
    paths = [folder / f"member_{i}" / "model.pt" for i in range(len(members))]
    for model, path in zip(members, paths):
        path.parent.mkdir()
        save_model(model, path)
    write_committee(folder / "committee.yaml", paths)
    out = _export_command(["export", str(folder / "committee.yaml"), "-o", str(folder / "committee-lammps.pt"), "--max-memory-gb", "0.001"])
    return folder / "committee-lammps.pt", members, out


@pytest.fixture(scope="session")
def exported_float32(tmp_path_factory):
    """``equinet export model.pt --dtype float32 --elements Cu Ni`` of a MACE-MPA-like model
    for Ni and Cu (its graph's species 0 is Cu): (the exported file, the float64 model, the
    output)."""
    from equinet import save_model

    folder = tmp_path_factory.mktemp("float32")
    model = _export_model(EXPORT_MPA, 0)
    save_model(model, folder / "model.pt")
    out = _export_command(["export", str(folder / "model.pt"), "-o", str(folder / "lammps.pt"), "--dtype", "float32", "--elements", "Cu", "Ni"])
    return folder / "lammps.pt", model, out
