"""Every potential passes the conformance suite (float64) through the ASE calculator, plus
the base-class contract: isolated atoms, batching, smooth cutoff, dtypes, round trips."""

import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import fcc111
from torch_geometric.data import Batch

from equinet import Calculator, load_model, save_model
from equinet.datasets import atoms_to_graph
from equinet.model_io import model_to_dict
from equinet.potentials import MODELS, build_model
from equinet.potentials.registry import hyperparameters
from small_models import CUTOFF, SMALL, STATISTICS, ethanol, small_model, triclinic_alloy
from equinet.testing import (
    assert_calculators_agree,
    assert_forces_match_finite_differences,
    assert_permutation_invariant,
    assert_rotation_equivariant,
    assert_stress_matches_finite_strain,
    assert_supercell_extensive,
    assert_translation_invariant,
)

def test_every_registered_model_is_tested():
    assert {config["name"] for config in SMALL.values()} == set(MODELS)


@pytest.fixture(params=sorted(SMALL), scope="module")
def calc(request):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # exactness: e3nn's Wigner-D follows the default dtype
    yield Calculator(small_model(request.param))
    torch.set_default_dtype(previous)


def _with(calc, atoms):
    atoms.calc = calc
    return atoms


def test_rotation_and_reflection_equivariance(calc):
    assert_rotation_equivariant(_with(calc, triclinic_alloy()), atol=1e-10)
    assert_rotation_equivariant(_with(calc, ethanol()), atol=1e-10)


def test_permutation_and_translation_invariance(calc):
    for atoms in (triclinic_alloy() * (2, 1, 1), ethanol()):
        assert_permutation_invariant(_with(calc, atoms), atol=1e-10)
        assert_translation_invariant(_with(calc, atoms), atol=1e-10)


def test_forces_are_minus_the_energy_gradient(calc):
    assert_forces_match_finite_differences(_with(calc, triclinic_alloy()), eps=2e-5, atol=1e-6)
    assert_forces_match_finite_differences(_with(calc, ethanol()), eps=2e-5, atol=1e-6)
    slab = fcc111("Cu", (1, 1, 3), a=3.6, vacuum=4.0)
    slab.rattle(0.1, seed=3)
    assert_forces_match_finite_differences(_with(calc, slab), eps=2e-5, atol=1e-6)


def test_stress_matches_finite_strain(calc):
    atoms = _with(calc, triclinic_alloy())
    assert np.abs(atoms.get_stress()).max() > 1e-4, "a stress this small tests nothing"
    assert_stress_matches_finite_strain(atoms, eps=1e-5, atol=1e-8)


def test_supercell_is_extensive(calc):
    atoms = _with(calc, triclinic_alloy())
    assert_supercell_extensive(atoms, repeat=(2, 2, 2), rtol=1e-10)


def test_energy_is_smooth_as_an_atom_crosses_the_cutoff(calc):
    def dimer(r):
        return _with(calc, Atoms("CuNi", positions=[[0, 0, 0], [r, 0, 0]]))

    far = dimer(CUTOFF + 1e-3).get_potential_energy()
    isolated = sum(STATISTICS["atomic_energies"][z] for z in (29, 28))
    assert far == pytest.approx(isolated, abs=1e-12)
    for delta in (1e-2, 1e-3):
        inside = dimer(CUTOFF - delta)
        # Envelope with vanishing first and second derivatives: E - E_far ~ delta^3.
        assert abs(inside.get_potential_energy() - far) < 50 * delta**3
        assert np.abs(inside.get_forces()).max() < 100 * delta**2
    # A random model's dimer energy can cross zero at any one distance: look at a few.
    interaction = max(abs(dimer(CUTOFF - d).get_potential_energy() - far) for d in (0.3, 0.5, 0.7, 0.9))
    assert interaction > 1e-4, "the dimer must interact at all"


def test_isolated_atoms_have_their_reference_energy(calc):
    for symbol, z in (("Cu", 29), ("O", 8)):
        atoms = _with(calc, Atoms(symbol, positions=[[0, 0, 0]]))
        assert atoms.get_potential_energy() == pytest.approx(STATISTICS["atomic_energies"][z], abs=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), 0.0, atol=1e-14)


def test_an_atomic_energy_sees_atoms_up_to_message_passing_steps_hops_away(calc):
    """Atoms in a chain 0.9 cutoffs apart (each sees only the next): moving atom k changes
    atom 0's energy exactly when k <= message_passing_steps (LAMMPS sizes ghost shells by
    it). Without a dependence the arithmetic is the same, so the change is exactly zero."""
    model = calc.model
    steps = model.message_passing_steps
    chain = Atoms(f"Cu{steps + 2}", positions=[[0.9 * CUTOFF * i, 0.3 * (i % 2), 0.0] for i in range(steps + 2)])

    def energy_of_atom_0(atoms):
        return model(Batch.from_data_list([atoms_to_graph(atoms, CUTOFF, dtype=torch.float64)]), forces=False)["node_energy"][0]

    reference = energy_of_atom_0(chain)
    for k in range(1, steps + 2):
        moved = chain.copy()
        moved.positions[k] += [0.0, 0.3, -0.3]
        change = abs(float(energy_of_atom_0(moved) - reference))
        assert (change > 0.0) if k <= steps else (change == 0.0), (k, steps, change)


def test_a_batch_gives_what_each_structure_gives_alone(calc):
    model = calc.model
    structures = [triclinic_alloy(), ethanol(), triclinic_alloy() * (1, 2, 1), Atoms("Ni", cell=[5, 5, 5], pbc=True)]
    graphs = [atoms_to_graph(atoms, CUTOFF, dtype=torch.float64) for atoms in structures]
    together = model(Batch.from_data_list(graphs), stress=True)
    start = 0
    for index, graph in enumerate(graphs):
        alone = model(Batch.from_data_list([graph]), stress=True)
        stop = start + graph.num_nodes
        torch.testing.assert_close(together["energy"][index], alone["energy"][0], atol=1e-10, rtol=0)
        torch.testing.assert_close(together["forces"][start:stop], alone["forces"], atol=1e-10, rtol=0)
        torch.testing.assert_close(together["node_energy"][start:stop], alone["node_energy"], atol=1e-10, rtol=0)
        torch.testing.assert_close(together["stress"][index], alone["stress"][0], atol=1e-10, rtol=0, equal_nan=True)
        start = stop
    assert together["stress"][1].isnan().all(), "a molecule has no stress"
    assert torch.isfinite(together["stress"][[0, 2, 3]]).all()


def test_a_charge_and_spin_embedding_reads_each_structure_s_own(tmp_path):
    """MACE with MACE-OMOL's embedding of the total charge and spin multiplicity: in a batch,
    each structure gets its own (``atoms.info``); none given is a neutral singlet, whose
    isolated atoms have their reference energies; the model file keeps the tables."""
    model = small_model("mace-residual", charge_embedding={"classes": 7, "offset": 3, "dim": 2}, spin_embedding={"classes": 5, "offset": 0, "dim": 3})
    assert model.structure_inputs == ("total_charge", "total_spin")

    def energies(structures, model=model):
        graphs = [atoms_to_graph(atoms, CUTOFF, dtype=torch.float64) for atoms in structures]
        return model(Batch.from_data_list(graphs), forces=False)["energy"].detach()

    structures = []
    for charge, spin in ((0, 1), (1, 2), (-3, 1), (0, 4), (3, 4)):
        atoms = ethanol()
        atoms.info.update(charge=charge, spin=spin)
        structures.append(atoms)
    structures.append(triclinic_alloy())
    together = energies(structures)
    torch.testing.assert_close(together, torch.cat([energies([atoms]) for atoms in structures]), atol=1e-10, rtol=0)
    assert len({round(float(energy), 6) for energy in together}) == len(structures), together
    assert float(energies([ethanol()])[0]) == pytest.approx(float(together[0]), abs=1e-12)
    neutral, cation = Atoms("Cu", positions=[[0, 0, 0]]), Atoms("Cu", positions=[[0, 0, 0]], info={"charge": 1})
    assert float(energies([neutral])[0]) == pytest.approx(STATISTICS["atomic_energies"][29], abs=1e-12)
    assert abs(float(energies([cation])[0]) - STATISTICS["atomic_energies"][29]) > 1e-6
    save_model(model, tmp_path / "model.pt")
    torch.testing.assert_close(energies(structures, load_model(tmp_path / "model.pt")), together, atol=0, rtol=0)
    for key, table, words in (
        ("charge_embedding", {"classes": 3, "offset": 5, "dim": 2}, ": values -5 to -3 leave out 0, the value of a structure that gives none; "),
        ("spin_embedding", {"classes": 3, "dim": 2}, " must be {classes: K, offset: o, dim: d}, got "),
    ):
        with pytest.raises(ValueError, match=rf"^model\.{key}{re.escape(words)}[^\n]*$"):
            build_model({**SMALL["mace"], key: table}, STATISTICS)


def _blocks_test_batch():
    """Several blocks of every kind: a supercell (blocks of a few atoms and a remainder), a
    cell smaller than the cutoff (an atom with more edges than a block) and a molecule with
    a far atom among its atoms (a receiver without edges)."""
    molecule = ethanol()
    molecule.extend(Atoms("Ni", positions=[[30.0, 0.0, 0.0]]))
    order = [0, 1, 2, len(molecule) - 1, *range(3, len(molecule) - 1)]
    structures = [molecule[order], triclinic_alloy(), triclinic_alloy() * (2, 2, 2)]
    return Batch.from_data_list([atoms_to_graph(atoms, CUTOFF, dtype=torch.float64) for atoms in structures])


@pytest.mark.parametrize("variant", sorted(v for v in SMALL if small_model(v).edge_bytes() is not None))
def test_edges_in_blocks_give_the_same_energy_forces_and_stress(variant, monkeypatch):
    """Inference edge block by edge block (recomputed in the backward) equals all edges at
    once, in float64; training keeps the one-pass graph."""
    from equinet.potentials import looped

    model, graph = small_model(variant), _blocks_test_batch()
    whole = model(graph, stress=True)
    blocks_run = []
    edge_window = looped._edge_window
    monkeypatch.setattr(looped, "_edge_window", lambda *args: blocks_run.append(1) or edge_window(*args))
    model.edge_block_size = 16  # molecule: 2 atoms a block; alloy: 19 edges an atom
    if variant.startswith(("mace", "escn")) or variant == "tensornet":
        model.atom_block_size = 5  # atoms: 27
    blocked = model(graph, stress=True)
    assert len(blocks_run) >= model.message_passing_steps * 23  # edge blocks a layer
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(blocked[key], whole[key], rtol=1e-10, atol=1e-12, equal_nan=True)
    blocks_run.clear()
    model.train()(graph, stress=True)
    assert not blocks_run


def test_the_memory_budget_sets_the_edge_blocks():
    model = small_model("mace")
    assert model.set_memory_budget(1.0) == int(0.5 * 2**30 / model.edge_bytes())
    assert model.atom_block_size == int(0.5 * 2**30 / (4 * 4 * 3 * 9**2 * 8))  # C=4, 1o out, D=9 (l<=2), correlation 3, float64
    assert model.set_memory_budget(1e-9) == 1024  # at least
    calculator = Calculator(small_model("escn"), max_memory_gb=2.0)
    assert calculator.model.edge_block_size == int(2**30 / calculator.model.edge_bytes())
    tensornet = small_model("tensornet")
    assert tensornet.set_memory_budget(1.0) == int(0.5 * 2**30 / (2 * 59 * 8 * 8))  # C=8, float64
    assert tensornet.atom_block_size == int(0.25 * 2**30 / (40 * 9 * 8 * 8))
    with pytest.raises(ValueError, match="max_memory_gb must be positive, got -1"):
        Calculator(small_model("mace"), max_memory_gb=-1)


@pytest.mark.parametrize("variant", sorted(SMALL))
def test_float32_agrees_with_float64(variant):
    atoms = triclinic_alloy()
    atoms.calc = Calculator(small_model(variant, "float64"))
    model32 = build_model({**atoms.calc.model.config, "dtype": "float32"}, STATISTICS)
    model32.load_state_dict(atoms.calc.model.state_dict())
    assert_calculators_agree(atoms, Calculator(model32), rtol=1e-4)


@pytest.mark.parametrize("variant", sorted(SMALL))
def test_model_file_round_trip(variant, tmp_path):
    model = small_model(variant)
    save_model(model, tmp_path / "model.pt")
    data = torch.load(tmp_path / "model.pt", weights_only=True)  # plain data only
    assert data["config"] == model.config and data["statistics"] == STATISTICS
    loaded = load_model(tmp_path / "model.pt")
    batch = Batch.from_data_list([atoms_to_graph(triclinic_alloy(), CUTOFF, dtype=torch.float64)])
    expected, got = model(batch, stress=True), loaded(batch, stress=True)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=0, rtol=0)


def test_escn_model_files_from_before_the_s2_default_load_with_the_gate(tmp_path):
    model = small_model("escn-gate")
    data = model_to_dict(model)
    del data["config"]["nonlinearity"]  # as files written before the key existed
    torch.save(data, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.config["nonlinearity"] == "gate"
    batch = Batch.from_data_list([atoms_to_graph(triclinic_alloy(), CUTOFF, dtype=torch.float64)])
    torch.testing.assert_close(loaded(batch)["forces"], model(batch)["forces"], atol=0, rtol=0)


def test_conv_backends_give_the_same_model(float64):
    batch = Batch.from_data_list([atoms_to_graph(triclinic_alloy(), CUTOFF)])
    for variant, config in sorted(SMALL.items()):
        if "conv_backend" not in hyperparameters(config["name"]) or config["name"] == "escn":
            continue  # escn's SO(2) convolution has no e3nn reference backend (tests/test_so2.py checks it)
        reference = small_model(variant, conv_backend="e3nn")
        ours = small_model(variant, conv_backend="torch")
        ours.load_state_dict(reference.state_dict())
        a, b = reference(batch), ours(batch)
        torch.testing.assert_close(b["energy"], a["energy"], atol=1e-10, rtol=0)
        torch.testing.assert_close(b["forces"], a["forces"], atol=1e-10, rtol=0)


def test_escn_on_the_cpp_kernel_is_the_same_model(float64):
    # Energy, forces and stress for MD (eval mode: the kernel's own backward gives the forces
    # and stress), and a force loss's parameter gradients for training (training mode: the
    # kernel's backward builds no graph, so force training differentiates the torch path).
    batch = Batch.from_data_list([atoms_to_graph(triclinic_alloy(), CUTOFF)])
    reference, ours = small_model("escn").eval(), small_model("escn", conv_backend="cpp").eval()
    ours.load_state_dict(reference.state_dict())
    a, b = reference(batch, stress=True), ours(batch, stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(b[key], a[key], atol=1e-10, rtol=0)
    reference.train(), ours.train()
    a, b = reference(batch, stress=True), ours(batch, stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(b[key], a[key], atol=1e-10, rtol=0)
    a["forces"].square().sum().backward()
    b["forces"].square().sum().backward()
    for (name, p), q in zip(reference.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-10, rtol=0, msg=name)


def test_training_mode_keeps_the_graph_for_force_losses():
    """A force loss's gradient with respect to the weights (a double backward) equals
    central finite differences of the loss."""
    model = small_model("mace").train()
    batch = Batch.from_data_list([atoms_to_graph(triclinic_alloy(), CUTOFF, dtype=torch.float64)])

    def loss() -> torch.Tensor:
        return model(batch)["forces"].square().sum()

    loss().backward()
    parameters, h = dict(model.named_parameters()), 1e-6
    for name, index in (("products.0.weight_1_0e", (0, 0, 1)), ("interactions.1.radial.layer0.weight", (5, 1))):
        weight, values = parameters[name], []
        for step in (h, -2 * h, h):  # up, down, back
            with torch.no_grad():
                weight[index] += step
            values.append(float(loss()))
        assert weight.grad[index].item() == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-5, abs=1e-9), name


def test_unknown_element_is_named():
    batch = Batch.from_data_list([atoms_to_graph(Atoms("CuXe", positions=[[0, 0, 0], [2.5, 0, 0]]), CUTOFF)])
    with pytest.raises(ValueError, match=r"element Z=54 is not one the model was built for \(Z=1, Z=6"):
        small_model("mace", "float32")(batch)
    calc = Calculator(small_model("mace", "float32"))
    with pytest.raises(ValueError, match=r"element Xe is not one the model was built for \(H, C, O, Ni, Cu\)"):
        _with(calc, Atoms("CuXe", positions=[[0, 0, 0], [2.5, 0, 0]])).get_potential_energy()


def test_config_mistakes_name_the_key():
    known = ", ".join(sorted(MODELS))
    with pytest.raises(ValueError, match=rf"model.name must be one of {known}, got 'maze'; did you mean 'mace'\?"):
        build_model({"name": "maze"}, STATISTICS)
    with pytest.raises(ValueError, match=r"model.num_channel is not a setting of model 'nequip'; did you mean 'num_channels'\?"):
        build_model({"name": "nequip", "num_channel": 8}, STATISTICS)
    with pytest.raises(ValueError, match=r"model.dtype must be one of float32, float64, got 'half'"):
        build_model({"name": "mace", "dtype": "half"}, STATISTICS)
    with pytest.raises(ValueError, match=r"model.product must be one of cg, gaunt, got 'fourier'"):
        build_model({"name": "mace", "product": "fourier"}, STATISTICS)
    with pytest.raises(ValueError, match=r"model.nonlinearity must be one of gate, s2, got 'silu'"):
        build_model({"name": "escn", "nonlinearity": "silu"}, STATISTICS)


def test_calculator_refuses_a_device_it_does_not_have():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU here; use device='cpu'"):
        Calculator(small_model("mace", "float32"), device="cuda")
