"""`equinet export`: the graph for MD codes gives, from local atoms plus ghost atoms (as
LAMMPS hands them over), the periodic structure's energy, forces and stress; every model
family exports, and the TorchScript file reproduces the model on other sizes; a committee
exports as one graph with its mean and each member's forces."""

import copy
import importlib.util
import itertools

import numpy as np
import pytest
import torch

import equinet.export
from equinet import Calculator, save_model
from equinet.cli import main
from equinet.datasets import atoms_to_graph
from equinet.export import ExportedCommittee, ExportedForces, export_model, load_exported
from equinet.potentials import build_model
from equinet.potentials.looped import Looped, set_block_sizes
from small_models import triclinic_alloy

STATISTICS = {
    "elements": [28, 29],
    "atomic_energies": {28: -4.1, 29: -3.7},
    "avg_num_neighbors": 12.0,
    "force_rms": 0.7,
}
CUTOFF = 4.0
SMALL = {
    "nequip": {"name": "nequip", "num_channels": 4, "l_max": 2, "num_layers": 2, "radial_hidden": [8]},
    "mace": {"name": "mace", "hidden_irreps": "4x0e+4x1o", "max_ell": 2, "correlation": 3, "radial_hidden": [8]},
    "tensornet": {"name": "tensornet", "hidden_channels": 8, "num_layers": 2, "num_rbf": 8},
    "escn": {"name": "escn", "num_channels": 4, "l_max": 3, "m_max": 2, "num_layers": 2, "radial_hidden": [8]},
}
SMALL["mace-gaunt"] = {**SMALL["mace"], "product": "gaunt"}
SMALL["escn-gate"] = {**SMALL["escn"], "nonlinearity": "gate"}
SMALL["mace-mpa"] = {
    **SMALL["mace"], "first_layer_residual": True, "density_normalization": True, "pair_repulsion": True,
    "distance_transform": "agnesi",
}  # fmt: skip
SMALL["mace-mh"] = {**SMALL["mace"], "interaction": "nonlinear", "edge_irreps": "4x0e+4x1o+4x2e", "agnostic_product": True, "envelope": "weights"}


def _model(variant, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model({"dtype": "float64", "cutoff": CUTOFF, **SMALL[variant], **overrides}, STATISTICS).eval()


def with_ghosts(atoms, model):
    """The periodic ``atoms`` as a pair style sees them: the local atoms, then every periodic
    image within message_passing_steps cutoffs of them as a ghost, and all edges within
    the cutoff. Returns the graph's inputs and, for each atom, the local atom it images."""
    reach = model.message_passing_steps * model.cutoff
    local = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell.array)
    heights = atoms.cell.volume / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1)
    k = np.ceil(reach / heights).astype(int) + 1
    positions, owners = [local], [torch.arange(len(atoms))]
    for shift in itertools.product(*(range(-n, n + 1) for n in k)):
        if any(shift):
            image = local + torch.tensor(shift, dtype=local.dtype) @ cell
            near = torch.cdist(image, local).min(dim=1).values < reach
            positions.append(image[near])
            owners.append(torch.arange(len(atoms))[near])
    pos, owner = torch.cat(positions), torch.cat(owners)
    neighbours = ((pos[:, None] - pos[None]).norm(dim=-1) < model.cutoff) & ~torch.eye(len(pos), dtype=torch.bool)
    sender, receiver = neighbours.nonzero().T
    species = model.species(torch.tensor(atoms.numbers))[owner]
    return (pos[receiver] - pos[sender], species, torch.stack([sender, receiver]), torch.tensor(len(atoms))), owner


def images_folded(atoms, model):
    """The periodic ``atoms`` as the pair style sends them when it owns every atom (one MPI
    rank): each periodic image is the local atom it images, with the image's edge vector."""
    graph = atoms_to_graph(atoms, model.cutoff)
    sender, receiver = graph.edge_index
    edge_vec = graph.pos[receiver] - graph.pos[sender] + graph.edge_shift.to(graph.pos.dtype) @ graph.cell[0]
    return edge_vec, model.species(graph.z), graph.edge_index, torch.tensor(len(atoms))


@pytest.mark.parametrize("variant", sorted(SMALL))
def test_local_and_ghost_atoms_give_the_periodic_energy_forces_and_stress(variant, float64):
    model = _model(variant)
    atoms = triclinic_alloy()
    atoms.calc = Calculator(model)
    inputs, owner = with_ghosts(atoms, model)
    energy, forces, virial = ExportedForces(model)(*inputs)

    assert float(energy.sum()) == pytest.approx(atoms.get_potential_energy(), rel=1e-12, abs=1e-12)
    assert (energy[len(atoms) :] == 0).all(), "ghost atoms' energies are the caller's neighbours'"
    folded = torch.zeros(len(atoms), 3, dtype=forces.dtype).index_add(0, owner, forces)  # reverse communication
    np.testing.assert_allclose(folded.numpy(), atoms.get_forces(), atol=1e-12)
    _assert_stress(virial, atoms)


@pytest.mark.parametrize("variant", sorted(SMALL))
def test_images_folded_onto_their_atoms_give_the_periodic_energy_forces_and_stress(variant, float64):
    model = _model(variant)
    atoms = triclinic_alloy()
    atoms.calc = Calculator(model)
    energy, forces, virial = ExportedForces(model)(*images_folded(atoms, model))
    assert float(energy.sum()) == pytest.approx(atoms.get_potential_energy(), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(forces.numpy(), atoms.get_forces(), atol=1e-12)
    _assert_stress(virial, atoms)


def _assert_stress(virial, atoms):
    xx, yy, zz, xy, xz, yz = range(6)
    stress = -virial.numpy()[[xx, yy, zz, yz, xz, xy]] / atoms.get_volume()  # ASE's Voigt order
    np.testing.assert_allclose(stress, atoms.get_stress(), atol=1e-12)


@pytest.mark.parametrize("variant, blocked", [(variant, variant in ("mace", "tensornet", "escn")) for variant in sorted(SMALL)])
def test_every_model_family_exports_a_graph_equal_to_the_model(variant, blocked, tmp_path, float64):
    """Each family; MACE, TensorNet and eSCN also with their edges and per-atom steps in
    blocks (loops of the graph), run in blocks as exported and in blocks of 13 edges and 3
    atoms (a remainder: many blocks per loop), down to one edge (none in the export's own
    check). MACE's runs the triton convolution, which libtorch cannot run: the export swaps
    in the torch backend (the kernels share its weights), and the caller's model keeps triton."""
    kernels = {"conv_backend": "triton"} if variant == "mace" and importlib.util.find_spec("triton") else {}
    model = _model(variant, **kernels)
    metadata = export_model(model, tmp_path / "exported.pt", max_memory_gb=1.0 if blocked else None)
    graph, stored = load_exported(tmp_path / "exported.pt")
    assert stored == metadata
    assert stored["elements"] == [28, 29] and stored["cutoff"] == CUTOFF and stored["dtype"] == "float64"
    assert stored["message_passing_steps"] == model.message_passing_steps
    if kernels:
        assert "equinet" not in graph.code and model.interactions[0].conv.backend == "triton"
    pair = (torch.tensor([[1.5, 0.5, -1.0]]), torch.tensor([0, 1]), torch.tensor([[0], [1]]), torch.tensor(2))
    inputs, _ = with_ghosts(triclinic_alloy(), model)  # sizes unlike those the graph was traced on
    sizes = [Looped(**stored["blocks"]), Looped(13, 3)] if blocked else [None]
    assert (stored["blocks"] is None) != blocked
    for structure, size in itertools.product((inputs, pair), sizes):
        if size is not None:
            set_block_sizes(graph, size)
        for name, expected, got in zip(("energy", "forces", "virial"), ExportedForces(model)(*structure), graph(*structure)):
            torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10, msg=name)


def test_an_export_format_that_contradicts_the_suffix_is_one_line(tmp_path, capsys):
    save_model(_model("mace"), tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt"), "-o", str(tmp_path / "lammps.pt2"), "--format", "torchscript"]) == 2
    assert "a .pt2 file for format aotinductor and not .pt2 for torchscript" in capsys.readouterr().err
    with pytest.raises(ValueError, match="export format must be one of torchscript, aotinductor, got 'onnx'"):
        export_model(_model("mace"), tmp_path / "lammps.onnx", format="onnx")


def test_export_of_a_missing_or_wrong_file_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing.pt"), "-o", str(tmp_path / "out.pt")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_an_export_that_fails_its_own_check_leaves_the_old_file(tmp_path, monkeypatch, float64):
    """The written graph is loaded back and compared with the model; one that differs (here:
    forces 0.1% off) is refused and never replaces the file at the path."""
    (tmp_path / "lammps.pt").write_text("the previous export\n")
    written = equinet.export.load_exported

    def skewed(path):
        graph, metadata = written(path)
        return (lambda *inputs: [value * factor for value, factor in zip(graph(*inputs), (1.0, 1.001, 1.0))]), metadata

    monkeypatch.setattr(equinet.export, "load_exported", skewed)
    with pytest.raises(RuntimeError, match="^the exported graph's forces differs from the model's on 37 atoms: report this as a bug$"):
        export_model(_model("tensornet"), tmp_path / "lammps.pt")
    assert (tmp_path / "lammps.pt").read_text() == "the previous export\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lammps.pt"]


def test_export_command_writes_float32_for_some_of_the_models_elements(exported_float32, tmp_path, capsys):
    """``--dtype float32 --elements Cu Ni`` exports the Ni/Cu model in float32 for those
    elements, in that order: the graph's species index 0 is Cu. The model learns
    isolated-atom energies (as mace-mpa), which the graph takes into its reference energies."""
    path, model, out = exported_float32
    assert "float32, elements Cu Ni, cutoff 4.0" in out and "pair_coeff * *" in out
    graph, metadata = load_exported(path)
    assert metadata["elements"] == [29, 28] and metadata["dtype"] == "float32"
    assert not model.isolated_energy_is_zero
    model = copy.deepcopy(model).to(torch.float32)
    inputs, _ = with_ghosts(triclinic_alloy(), model)
    inputs = (inputs[0].float(), *inputs[1:])  # edge vectors in the graph's dtype
    as_exported = (inputs[0], 1 - inputs[1], *inputs[2:])  # Ni (model species 0) is the graph's 1
    outputs = graph(*as_exported)
    assert outputs[0].dtype == torch.float32
    for name, expected, got in zip(("energy", "forces", "virial"), ExportedForces(model)(*inputs), outputs):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=name)

    save_model(_model("tensornet"), tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt"), "-o", str(tmp_path / "out.pt"), "--elements", "Cu", "O"]) == 2
    assert capsys.readouterr().err.strip().endswith("elements [29, 8]: give distinct atomic numbers from the model's (28, 29)")
    assert main(["export", str(tmp_path / "model.pt"), "-o", str(tmp_path / "out.pt"), "--elements", "Qq"]) == 2
    assert "--elements: 'Qq' is not a chemical symbol (e.g. Cu, O)" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


def test_a_committee_graph_gives_the_mean_and_each_member_s_forces(float64):
    """From local and ghost atoms: the committee's mean energy, forces and stress, and, once
    each member's forces are added onto the atoms' owners, the calculator's per-atom force
    std."""
    members = [_model("mace"), _model("mace", seed=1), _model("nequip")]
    atoms = triclinic_alloy()
    atoms.calc = Calculator(members)
    inputs, owner = with_ghosts(atoms, members[0])
    energy, forces, virial, member_forces = ExportedCommittee(members)(*inputs)

    assert member_forces.shape == (3, len(inputs[1]), 3)
    assert float(energy.sum()) == pytest.approx(atoms.get_potential_energy(), rel=1e-12, abs=1e-12)
    torch.testing.assert_close(forces, member_forces.mean(0), atol=1e-14, rtol=0)
    folded = torch.zeros(3, len(atoms), 3, dtype=forces.dtype).index_add(1, owner, member_forces)  # reverse communication
    np.testing.assert_allclose(folded.mean(0).numpy(), atoms.get_forces(), atol=1e-12)
    forces_std = folded.var(0, unbiased=False).sum(-1).sqrt()
    np.testing.assert_allclose(forces_std.numpy(), atoms.calc.results["forces_std"], atol=1e-12)
    assert forces_std.min() > 1e-3  # the members disagree
    _assert_stress(virial, atoms)


def test_export_command_writes_a_committee_as_one_graph(exported_committee, float64):
    path, members, out = exported_committee
    assert "(a committee of 2: mace, tensornet, float64, elements Ni Cu, cutoff 4.0 Å)" in out
    assert "fix std all pair 1 equinet forces_std 0" in out
    assert "in blocks of 1,024 edges and 64 atoms (--max-memory-gb 0.001)" in out
    graph, metadata = load_exported(path)
    assert metadata["members"] == 2 and metadata["message_passing_steps"] == 3  # MACE's 1, TensorNet's 3
    assert metadata["blocks"] == {"edges": 1024, "atoms": 64}
    inputs = images_folded(triclinic_alloy(), members[1])  # the export checked ghost atoms itself
    outputs = ("energy", "forces", "virial", "member forces")
    for name, expected, got in zip(outputs, ExportedCommittee(members)(*inputs), graph(*inputs), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10, msg=name)


def test_committee_members_with_other_elements_or_cutoffs_do_not_export(tmp_path, capsys):
    save_model(_model("tensornet"), tmp_path / "a.pt")
    save_model(_model("tensornet", cutoff=5.0), tmp_path / "cutoff.pt")
    torch.manual_seed(0)
    save_model(build_model({"dtype": "float64", "cutoff": CUTOFF, **SMALL["tensornet"]}, {**STATISTICS, "elements": [29]}), tmp_path / "cu.pt")
    for other, message in (
        ("cutoff.pt", "elements [28, 29] and cutoff 5.0 Å against [28, 29] and 4.0 Å"),
        ("cu.pt", "elements [29] and cutoff 4.0 Å against [28, 29] and 4.0 Å"),
    ):
        assert main(["export", str(tmp_path / "a.pt"), str(tmp_path / other), "-o", str(tmp_path / "out.pt")]) == 2
        err = capsys.readouterr().err
        assert err == f"equinet: error: committee members differ: {message}; a committee needs the same elements and cutoff\n"
    assert not (tmp_path / "out.pt").exists()
    with pytest.raises(ValueError, match="^an empty committee: give at least one model to export$"):
        export_model([], tmp_path / "out.pt")
