"""Tensorial heads (equinet.potentials.heads): the dipole is a vector and the polarizability a
symmetric rank-2 tensor under rotations and reflections, both are invariant under permutations,
the charges add up to the total charge, and the Born charges are the derivatives of the dipole
(central finite differences, float64) and obey the acoustic sum rule."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from scipy.spatial.transform import Rotation
from small_models import ethanol, small_model, triclinic_alloy
from torch_geometric.data import Batch

from equinet import Calculator, load_model, save_model
from equinet.datasets import atoms_to_graph
from equinet.potentials import build_model

BOTH = ["energy", "dipole", "polarizability"]
FAMILIES = ["mace", "nequip", "escn", "mace-gaunt"]


def _predict(model, *structures):
    batch = Batch.from_data_list([atoms_to_graph(atoms, model.cutoff, dtype=torch.float64) for atoms in structures])
    return {key: value.detach().numpy() for key, value in model(batch).items()}


@pytest.mark.parametrize("variant", FAMILIES)
@pytest.mark.parametrize("structure", [ethanol, triclinic_alloy], ids=["molecule", "crystal"])
def test_a_dipole_is_a_vector_and_a_polarizability_a_symmetric_tensor(variant, structure):
    model, atoms = small_model(variant, outputs=BOTH), structure()
    reference = _predict(model, atoms)
    assert np.abs(reference["dipole"]).max() > 0.1 and np.abs(reference["polarizability"]).max() > 0.1
    np.testing.assert_allclose(reference["polarizability"][0], reference["polarizability"][0].T, atol=1e-12)
    for sign in (1, -1):  # a rotation, and a rotation times the inversion
        matrix = sign * Rotation.random(random_state=3).as_matrix()
        moved = atoms.copy()
        moved.positions = atoms.positions @ matrix.T
        moved.set_cell(atoms.cell.array @ matrix.T)
        out = _predict(model, moved)
        np.testing.assert_allclose(out["dipole"][0], matrix @ reference["dipole"][0], atol=1e-10)
        np.testing.assert_allclose(out["polarizability"][0], matrix @ reference["polarizability"][0] @ matrix.T, atol=1e-10)
        np.testing.assert_allclose(out["energy"], reference["energy"], rtol=1e-12)
        np.testing.assert_allclose(out["charges"], reference["charges"], atol=1e-12)


def test_permutations_translations_and_the_total_charge():
    model, atoms = small_model("mace", outputs=BOTH), ethanol()
    reference = _predict(model, atoms)
    np.testing.assert_allclose(reference["charges"].sum(), 0.0, atol=1e-12)
    order = np.random.default_rng(0).permutation(len(atoms))
    permuted = _predict(model, atoms[order])
    np.testing.assert_allclose(permuted["dipole"], reference["dipole"], atol=1e-12)
    np.testing.assert_allclose(permuted["polarizability"], reference["polarizability"], atol=1e-12)
    np.testing.assert_allclose(permuted["charges"], reference["charges"][order], atol=1e-12)
    shift = np.array([1.5, -2.0, 0.7])
    moved = atoms.copy()
    moved.translate(shift)
    np.testing.assert_allclose(_predict(model, moved)["dipole"], reference["dipole"], atol=1e-12)  # neutral: invariant
    charged, moved_charged = atoms.copy(), moved.copy()
    charged.info["charge"] = moved_charged.info["charge"] = 1.0
    charged_out, moved_out = _predict(model, charged), _predict(model, moved_charged)
    np.testing.assert_allclose(charged_out["charges"].sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(moved_out["dipole"][0], charged_out["dipole"][0] + shift, atol=1e-12)  # moves by Q t
    # In a batch, each structure keeps its own charge and its own outputs.
    batched = _predict(model, charged, atoms)
    np.testing.assert_allclose(batched["dipole"], np.concatenate([charged_out["dipole"], reference["dipole"]]), atol=1e-12)
    np.testing.assert_allclose(batched["polarizability"][1], reference["polarizability"][0], atol=1e-12)


@pytest.mark.parametrize("variant", ["mace", "nequip"])
def test_born_charges_are_the_derivatives_of_the_dipole_and_sum_to_zero(variant):
    model, atoms = small_model(variant, outputs=["energy", "dipole"]), molecule("H2O")
    atoms.rattle(0.05, seed=4)
    calculator = Calculator(model)
    charges = calculator.get_born_charges(atoms)
    assert charges.shape == (len(atoms), 3, 3)
    step, expected = 1e-5, np.zeros_like(charges)
    for atom in range(len(atoms)):
        for axis in range(3):
            dipoles = []
            for sign in (1, -1):
                displaced = atoms.copy()
                displaced.positions[atom, axis] += sign * step
                displaced.calc = calculator
                dipoles.append(displaced.get_dipole_moment())
            expected[atom, :, axis] = (dipoles[0] - dipoles[1]) / (2 * step)
    np.testing.assert_allclose(charges, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(charges.sum(axis=0), np.zeros((3, 3)), atol=1e-12)  # acoustic sum rule
    charged = atoms.copy()
    charged.info["charge"] = -1.0
    np.testing.assert_allclose(calculator.get_born_charges(charged).sum(axis=0), -np.eye(3), atol=1e-12)


def test_the_calculator_gives_the_tensorial_properties_and_a_saved_model_the_same(tmp_path):
    model, atoms = small_model("mace", outputs=BOTH), ethanol()
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.config["outputs"] == BOTH
    for calculator in (Calculator(model), Calculator(loaded)):
        atoms.calc = calculator
        out = _predict(model, atoms)
        np.testing.assert_allclose(atoms.get_dipole_moment(), out["dipole"][0], atol=1e-12)
        np.testing.assert_allclose(calculator.get_property("polarizability", atoms), out["polarizability"][0], atol=1e-12)
        np.testing.assert_allclose(atoms.get_charges(), out["charges"], atol=1e-12)
        assert calculator.get_property("born_charges", atoms).shape == (len(atoms), 3, 3)


def test_a_model_of_dipoles_alone_and_the_energy_model_unchanged():
    dipoles = small_model("mace", outputs=["dipole"])
    out = _predict(dipoles, ethanol())
    assert set(out) == {"dipole", "charges"}
    calculator = Calculator(dipoles)
    assert calculator.implemented_properties == ["dipole", "charges", "born_charges"]
    with pytest.raises(ValueError, match="predicts dipole, not energies"):
        calculator.get_hessian(ethanol())
    energy = small_model("mace")
    assert energy.config["outputs"] == ["energy"] and energy.heads is None
    with pytest.raises(ValueError, match="Born charges need a model that predicts dipoles"):
        Calculator(energy).get_born_charges(ethanol())


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"name": "mace", "outputs": ["energy", "dipoles"]}, "model.outputs: 'dipoles' is not an output; choose from energy, dipole, polarizability"),
        ({"name": "mace", "outputs": []}, "model.outputs must be a list of one or more"),
        ({"name": "mace", "outputs": "dipole"}, "model.outputs = 'dipole'"),
        ({"name": "nequip", "l_max": 1, "outputs": ["polarizability"]}, "model.outputs: polarizability needs node features with 2e"),
        ({"name": "tensornet", "outputs": ["dipole"]}, "model.outputs is not a setting of model 'tensornet'"),
    ],
)
def test_bad_outputs_are_one_line_errors(settings, message):
    statistics = {"elements": [1], "atomic_energies": {1: 0.0}}
    with pytest.raises(ValueError) as info:
        build_model(settings, statistics)
    assert message in str(info.value) and "\n" not in str(info.value)


def _labelled_molecules(count: int):
    """Rattled H2O, CH3OH and H2CO with EMT energies and forces, and dipoles of fixed
    per-element charges made neutral (e·Å): a dipole a model can learn."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    charge_of = {1: 0.35, 6: 0.2, 8: -0.6}
    frames = []
    for index in range(count):
        atoms = molecule(("H2O", "CH3OH", "H2CO")[index % 3])
        atoms.rattle(0.1, seed=index)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        charges = np.array([charge_of[z] for z in atoms.numbers])
        charges -= charges.mean()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, dipole=charges @ atoms.positions)
        frames.append(atoms)
    return frames


def test_training_a_dipole_model_lowers_its_validation_error_and_evaluate_reports_it(tmp_path, capsys):
    import csv

    import yaml
    from ase.io import read, write

    from equinet.cli import main

    write(tmp_path / "molecules.extxyz", _labelled_molecules(24))
    config = {
        "data": {"train": str(tmp_path / "molecules.extxyz"), "split": [16, 4, 4], "batch_size": 4, "valid_batch_size": 4},
        "model": {"name": "mace", "dtype": "float64", "cutoff": 4.0, "hidden_irreps": "4x0e+4x1o", "max_ell": 1,
                  "correlation": 2, "num_interactions": 2, "radial_hidden": [8], "outputs": ["energy", "dipole"]},
        "loss": {"forces_weight": 1.0, "dipole_weight": 100.0, "stage_two": None},
        "optimizer": {"lr": 0.01},
        "ema": {"enabled": False},
        "trainer": {"max_epochs": 6, "progress_bar": False, "accelerator": "cpu"},
        "output": str(tmp_path / "run"),
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "config.yaml")]) == 0
    with open(tmp_path / "run" / "metrics.csv") as file:
        errors = [float(row["val_dipole_mae_meA"]) for row in csv.DictReader(file) if row.get("val_dipole_mae_meA")]
    assert len(errors) == 6 and errors[-1] < 0.5 * errors[0], errors
    assert "dipole" in capsys.readouterr().out  # the test metrics
    test_frames = read(tmp_path / "run" / "test.extxyz", ":")
    assert all(frame.get_dipole_moment().shape == (3,) for frame in test_frames)
    assert main(["evaluate", str(tmp_path / "run" / "model.pt"), str(tmp_path / "run" / "test.extxyz"), "--output", str(tmp_path / "evaluation")]) == 0
    out = capsys.readouterr().out
    assert "dipole" in out and "me·Å" in out
    assert (tmp_path / "evaluation" / "parity_dipole.png").is_file()


def test_md_writes_the_dipole_and_polarizability_of_every_frame(tmp_path):
    from ase.io import read

    from equinet.md import run_md

    atoms = molecule("H2O")
    atoms.calc = Calculator(small_model("mace", outputs=BOTH))
    run_md(atoms, steps=4, interval=2, timestep_fs=0.2, trajectory=tmp_path / "md.extxyz", progress=False)
    frames = read(tmp_path / "md.extxyz", ":")
    assert len(frames) == 3
    for frame in frames:
        assert frame.calc.results["dipole"].shape == (3,) and frame.info["polarizability"].shape == (3, 3)


def test_md_writes_the_born_charges_of_every_frame_and_needs_a_dipole_model(tmp_path, capsys):
    """``--born-charges``: each frame's per-atom array of 9 columns is the calculator's
    ``[n, 3, 3]`` Born charges at that frame's positions, row-major."""
    from ase.io import read, write

    from equinet.cli import main

    model = small_model("mace", outputs=BOTH)
    save_model(model, tmp_path / "model.pt")
    write(tmp_path / "water.xyz", molecule("H2O"))
    argv = ["md", str(tmp_path / "model.pt"), str(tmp_path / "water.xyz"), "--steps", "4", "--interval", "2", "--timestep", "0.2"]
    assert main([*argv, "--born-charges", "--output", str(tmp_path / "md.extxyz")]) == 0
    frames = read(tmp_path / "md.extxyz", ":")
    assert len(frames) == 3
    calculator = Calculator(model)
    for frame in frames:
        expected = calculator.get_born_charges(frame)
        np.testing.assert_allclose(frame.arrays["born_charges"].reshape(-1, 3, 3), expected, rtol=1e-5, atol=1e-6)
        assert np.abs(expected).max() > 0.01

    save_model(small_model("mace"), tmp_path / "energy.pt")
    assert main(["md", str(tmp_path / "energy.pt"), *argv[2:], "--born-charges", "--output", str(tmp_path / "e.extxyz")]) == 2
    assert "Born charges need a model that predicts dipoles (model.outputs: [energy, dipole])" in capsys.readouterr().err
    assert not (tmp_path / "e.extxyz").exists()


def test_the_ir_spectrum_of_two_oscillating_dipoles_peaks_at_their_wavenumbers():
    from equinet.spectra import SPEED_OF_LIGHT_CM_PER_FS, ir_spectrum

    time = np.arange(2000) * 1.0  # fs
    dipoles = np.stack([np.sin(2 * np.pi * 1000 * SPEED_OF_LIGHT_CM_PER_FS * time), 0.3 * np.cos(2 * np.pi * 3000 * SPEED_OF_LIGHT_CM_PER_FS * time), 0 * time], axis=1)
    wavenumbers, intensity = ir_spectrum(dipoles, timestep_fs=1.0)
    resolution = wavenumbers[1]
    assert abs(wavenumbers[np.argmax(intensity)] - 1000) < resolution
    high = wavenumbers > 2000
    assert abs(wavenumbers[high][np.argmax(intensity[high])] - 3000) < resolution and intensity[high].max() > 0.5


def test_equinet_spectrum_ir_plots_the_dipoles_of_an_md_run(tmp_path, capsys):
    from ase.io import write

    from equinet.cli import main
    from equinet.md import run_md

    atoms = molecule("H2O")
    atoms.calc = Calculator(small_model("mace", outputs=["energy", "dipole"]))
    run_md(atoms, steps=32, interval=1, timestep_fs=0.5, trajectory=tmp_path / "md.extxyz", progress=False)
    assert main(["spectrum", "ir", str(tmp_path / "md.extxyz"), "-o", str(tmp_path / "ir.png")]) == 0
    assert "33 frames 0.5 fs apart" in capsys.readouterr().out
    assert (tmp_path / "ir.png").is_file() and np.loadtxt(tmp_path / "ir.csv", delimiter=",", skiprows=1).shape[1] == 2
    write(tmp_path / "plain.extxyz", [molecule("H2O")] * 10)
    assert main(["spectrum", "ir", str(tmp_path / "plain.extxyz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plain.extxyz: frame 0: has no dipole" in err


def test_the_training_loss_weighs_every_output_the_model_predicts(tmp_path):
    from equinet.config import TrainConfig
    from equinet.datasets import read_labels
    from equinet.export import export_model
    from equinet.training import PotentialModule

    model = small_model("mace", outputs=BOTH)
    atoms = ethanol()
    atoms.info.update(dipole=np.array([0.1, 0.2, -0.3]), polarizability=np.eye(3) * 5.0)
    batch = Batch.from_data_list([atoms_to_graph(atoms, model.cutoff, read_labels(atoms), dtype=torch.float64)])
    losses = {}
    for key in ("dipole", "polarizability"):
        weights = {f"{label}_weight": float(label == key) for label in ("energy", "forces", "dipole", "polarizability")}
        config = TrainConfig(data={"generate": {}}, model=model.config, loss=weights)
        module = PotentialModule(model, config)
        pairs = module._pairs(batch)
        assert set(pairs) == {"energy", "forces", "dipole", "polarizability"}
        losses[key] = float(module._loss(pairs))
        expected = ((pairs[key][0] - pairs[key][1]) ** 2).mean()
        assert losses[key] == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ValueError, match="nothing for an MD code to run"):
        export_model(small_model("mace", outputs=["dipole"]), tmp_path / "model.pt")
