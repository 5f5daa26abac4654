"""equinet.foreign.mace: mace-torch model files as equinet models, equal to mace-torch.

The files and mace-torch's predictions come from scripts/mace_reference.py (mace-torch
0.3.16, float64); this suite never needs mace-torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ase import Atoms
from torch_geometric.data import Batch

from equinet.datasets import atoms_to_graph
from equinet.foreign.mace import import_mace
from equinet.foreign.mace_config import UnsupportedMace, head_index, mace_config
from equinet.foreign.pickle_reader import read_torch_pickle
from equinet.model_io import load_model, save_model

DATA = Path(__file__).parent / "data" / "mace"
REFERENCES = json.loads((DATA / "references.json").read_text())
MODELS, STRUCTURES = REFERENCES["models"], REFERENCES["structures"]


def _atoms(structure: dict) -> Atoms:
    """A reference structure, with its total charge and spin multiplicity (if any) in ``info``."""
    atoms = Atoms(numbers=structure["numbers"], positions=structure["positions"], cell=structure["cell"], pbc=structure["pbc"])
    atoms.info.update({key: structure[key] for key in ("charge", "spin") if key in structure})
    return atoms


def _predict(model, structure: dict) -> dict[str, torch.Tensor]:
    graph = atoms_to_graph(_atoms(structure), model.cutoff, dtype=torch.float64)
    out = {key: value.detach() for key, value in model(Batch.from_data_list([graph]), forces=True, stress=True).items()}
    return {"energy": out["energy"][0], "forces": out["forces"], "node_energy": out["node_energy"], "stress": out["stress"][0]}


def _assert_close(out: dict, reference: dict, rtol: float) -> None:
    for key in ("energy", "forces", "node_energy", "stress"):
        if key in reference:
            expected = torch.tensor(reference[key], dtype=torch.float64)
            error = (out[key].detach().double() - expected).abs().max() / expected.abs().max()
            assert error < rtol, f"{key}: relative error {error:.1e}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_imported_models_reproduce_mace_torch_in_float64(name):
    model = import_mace(DATA / MODELS[name]["file"], head=MODELS[name]["head"])
    assert model.atomic_energies.dtype == torch.float64
    for key, reference in MODELS[name]["results"].items():
        _assert_close(_predict(model, STRUCTURES[key]), reference, 1e-10)


CHARGED = [key for key, structure in STRUCTURES.items() if "charge" in structure]


def test_the_omol_embedding_reads_each_structure_s_charge_and_spin():
    """MACE-OMOL's charge and spin embedding: the references hold molecules of charge -1 to 2
    and spin multiplicity 1 to 3; in one batch, each structure gets its own; another charge
    or spin (or none) is another energy; the calculator recomputes when they change."""
    import equinet

    model = import_mace(DATA / "omol.model")
    assert model.config["charge_embedding"] == {"classes": 201, "offset": 100, "dim": 3}
    assert model.config["spin_embedding"] == {"classes": 101, "offset": 0, "dim": 3}
    results = MODELS["omol"]["results"]
    assert {(STRUCTURES[key]["charge"], STRUCTURES[key]["spin"]) for key in CHARGED} == {(1, 2), (-1, 1), (0, 3), (2, 2)}
    batch = Batch.from_data_list([atoms_to_graph(_atoms(STRUCTURES[key]), model.cutoff, dtype=torch.float64) for key in CHARGED])
    energies = model(batch, forces=False)["energy"].detach()
    torch.testing.assert_close(energies, torch.tensor([results[key]["energy"] for key in CHARGED], dtype=torch.float64), rtol=1e-12, atol=0)
    for key in CHARGED:
        reference = results[key]["energy"]
        for change in ({"charge": STRUCTURES[key]["charge"] + 1}, {"spin": STRUCTURES[key]["spin"] + 2}, {"charge": 0, "spin": 1}):
            energy = float(_predict(model, {**STRUCTURES[key], **change})["energy"])
            assert abs(energy - reference) > 1e-3 * abs(reference), (key, change)
    atoms = _atoms(STRUCTURES["cation"])
    atoms.calc = equinet.Calculator(DATA / "omol.model")
    assert atoms.get_potential_energy() == pytest.approx(results["cation"]["energy"], rel=1e-12)
    atoms.info["charge"] = -1
    assert atoms.get_potential_energy() == pytest.approx(float(_predict(model, {**STRUCTURES["cation"], "charge": -1})["energy"]), rel=1e-12)
    for change, words in (({"charge": 101}, "a total charge of 101 is outside the model's -100 to 100"),
                          ({"spin": 1.5}, "a spin multiplicity of 1.5 is not a whole number")):  # fmt: skip
        with pytest.raises(ValueError, match=f"^{words}$"):
            _predict(model, {**STRUCTURES["cation"], **change})


def test_the_references_exercise_the_pair_repulsion():
    """Without the ZBL term, or unscaled where mace-torch scales it, the energies differ."""
    for name in ("mh_mixed", "mpa"):
        model = import_mace(DATA / MODELS[name]["file"])
        expected = MODELS[name]["results"]["crystal"]["energy"]
        for factor in (0.0, 1.0):
            with torch.no_grad():
                model.pair_repulsion.factor.fill_(factor)
            assert abs(float(_predict(model, STRUCTURES["crystal"])["energy"]) - expected) > 1e-3


def test_imported_models_in_float32_and_after_a_round_trip_through_model_pt(tmp_path):
    name = "mp0"
    model = import_mace(DATA / MODELS[name]["file"], dtype="float32")
    assert model.atomic_energies.dtype == torch.float32
    for key, reference in MODELS[name]["results"].items():
        _assert_close(_predict(model.double(), STRUCTURES[key]), reference, 1e-5)
    save_model(import_mace(DATA / MODELS[name]["file"]), tmp_path / "model.pt")
    reloaded = load_model(tmp_path / "model.pt")
    _assert_close(_predict(reloaded, STRUCTURES["crystal"]), MODELS[name]["results"]["crystal"], 1e-10)


def _refusal(change) -> str:
    record = read_torch_pickle(DATA / "mp0.model")
    change(record)
    with pytest.raises(UnsupportedMace) as error:
        mace_config(record)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_options_equinet_does_not_reproduce_are_refused_by_name():
    density = read_torch_pickle(DATA / "mpa.model")
    radial = lambda r: r.get("radial_embedding").state["_modules"]  # noqa: E731
    modules = lambda r, key: r.get(key).state["_modules"]  # noqa: E731
    assert "apply_cutoff" in _refusal(lambda r: r.state.update(apply_cutoff=False))
    assert "use_embedding_readout" in _refusal(lambda r: r.state["_modules"].update(embedding_readout=r.get("readouts")))
    assert "distance_transform PolynomialCutoff" in _refusal(lambda r: radial(r).update(distance_transform=radial(r)["cutoff_fn"]))
    assert "radial_type PolynomialCutoff" in _refusal(lambda r: radial(r).update(bessel_fn=radial(r)["cutoff_fn"]))
    chebyshev = read_torch_pickle(DATA / "mp0.model").get("radial_embedding").get("bessel_fn")
    chebyshev.qualname = "mace.modules.radial.ChebychevBasis"
    assert "chebyshev" in _refusal(lambda r: radial(r).update(bessel_fn=chebyshev))
    later_density = density.get("interactions").children()["1"]
    assert "density-normalised and plain" in _refusal(lambda r: modules(r, "interactions").update({"1": later_density}))
    assert "use_so3" in _refusal(lambda r: r.state.update(use_so3=True))
    nonlinear = read_torch_pickle(DATA / "mh.model").get("interactions").children()["1"]
    assert "interaction that differs" in _refusal(lambda r: modules(r, "interactions").update({"2": nonlinear}))
    gate = nonlinear.get("equivariant_nonlin")
    gate.state["_act_gate"] = gate.get("_act_scalar")  # SiLU gates
    assert "gate other than SiLU with sigmoid" in _refusal(lambda r: modules(r, "interactions").update({"1": nonlinear}))
    two_heads = read_torch_pickle(DATA / "mh.model")
    assert [head_index(two_heads, head) for head in (None, "Default", "pt_head")] == [1, 1, 0]
    two_heads.state["heads"] = ["pbe", "r2scan"]
    with pytest.raises(UnsupportedMace, match=r"^has several heads \(pbe, r2scan\) and none named Default: pick one with head=$"):
        head_index(two_heads, None)


def test_embedding_specs_equinet_does_not_embed_are_refused_by_name():
    joint = read_torch_pickle(DATA / "omol.model").get("joint_embedding")
    omol_specs = joint.get("specs")

    def refusal(name: str, **changes) -> str:
        specs = {key: dict(spec) for key, spec in omol_specs.items()}
        specs[name] = {**specs.pop(name, specs["total_charge"]), **changes}
        joint.state["specs"] = specs
        return _refusal(lambda r: r.state["_modules"].update(joint_embedding=joint))

    assert "embedding_specs feature 'temperature' is not supported" in refusal("temperature")
    assert "embedding_specs total_spin of type 'continuous' is not supported yet" in refusal("total_spin", type="continuous")
    assert "embedding_specs total_charge per 'atom' is not supported" in refusal("total_charge", per="atom")
    assert "embedding_specs total_charge offset 0.5 is not supported" in refusal("total_charge", offset=0.5)


def test_a_model_with_a_charge_embedding_is_not_exported(tmp_path):
    from equinet.export import export_model

    with pytest.raises(ValueError, match="^the model reads each structure's total_charge and total_spin .*Calculator instead$"):
        export_model(import_mace(DATA / "omol.model"), tmp_path / "omol.pt")
    assert not (tmp_path / "omol.pt").exists()


def test_a_mace_model_laid_out_otherwise_gets_one_line(monkeypatch):
    record = read_torch_pickle(DATA / "off.model")
    del record.state["_modules"]["products"]
    monkeypatch.setattr("equinet.foreign.mace.read_torch_pickle", lambda path: record)
    with pytest.raises(ValueError, match="^off.model: not a MACE model that equinet can read [^\n]*$"):
        import_mace("off.model")


def test_bad_files_heads_and_pickles_get_one_line(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "linear.model")
    (tmp_path / "text.model").write_text("not a model\n")
    cases = {
        tmp_path / "linear.model": ({}, "not a mace-torch MACE"),
        tmp_path / "text.model": ({}, "not a file that torch.save wrote"),
        DATA / "mp0.model": ({"head": "pbe"}, "no head 'pbe'"),
    }
    for path, (kwargs, words) in cases.items():
        with pytest.raises(ValueError) as error:
            import_mace(path, **kwargs)
        assert words in str(error.value) and str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_the_calculator_runs_a_mace_file_directly():
    import equinet

    atoms = _atoms(STRUCTURES["crystal"])
    atoms.calc = equinet.Calculator(DATA / "off.model")
    reference = MODELS["off"]["results"]["crystal"]
    out = {
        "energy": torch.tensor(atoms.get_potential_energy(), dtype=torch.float64),
        "forces": torch.from_numpy(atoms.get_forces()),
        "node_energy": torch.from_numpy(atoms.get_potential_energies()),
        "stress": torch.from_numpy(atoms.get_stress(voigt=False)),
    }
    _assert_close(out, reference, 1e-10)
    with pytest.raises(ValueError, match="no head 'pbe'"):
        equinet.Calculator(DATA / "off.model", head="pbe")
    atoms.calc = equinet.Calculator(DATA / "mh.model", head="pt_head")
    assert atoms.get_potential_energy() == pytest.approx(MODELS["mh:pt_head"]["results"]["crystal"]["energy"], rel=1e-12)


def test_equinet_import_mace_writes_a_model_pt_equal_to_mace_torch(tmp_path, capsys):
    from equinet.cli import main

    assert main(["import", "mace", str(DATA / "mp0.model"), "-o", str(tmp_path / "mp0.pt")]) == 0
    assert "elements H C O Cu" in capsys.readouterr().out
    model = load_model(tmp_path / "mp0.pt")
    for name, reference in MODELS["mp0"]["results"].items():
        _assert_close(_predict(model, STRUCTURES[name]), reference, 1e-10)
    assert main(["import", "mace", str(DATA / "mh.model"), "-o", str(tmp_path / "pt.pt"), "--head", "pt_head"]) == 0
    _assert_close(_predict(load_model(tmp_path / "pt.pt"), STRUCTURES["close"]), MODELS["mh:pt_head"]["results"]["close"], 1e-10)
    assert main(["import", "mace", str(DATA / "mp0.model"), "-o", str(tmp_path / "x.pt"), "--head", "nope"]) == 2
    assert "cannot import this MACE model: has no head 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_fine_tuning_an_imported_mace_model_lowers_its_validation_error(tmp_path):
    """A random-weight MACE file (MP-0's architecture) fine-tuned on EMT copper."""
    import numpy as np
    import yaml
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from equinet.cli import main

    frames = []
    for seed in range(16):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.1, seed=seed)
        atoms.set_cell(atoms.cell.array * np.random.default_rng(seed).uniform(0.97, 1.03), scale_atoms=True)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(atoms)
    write(tmp_path / "cu.extxyz", frames)
    config = {
        "data": {"train": str(tmp_path / "cu.extxyz"), "split": [10, 3, 3], "batch_size": 2},
        "model": {"init_from": str(DATA / "mp0.model")},
        "loss": {"stage_two": None},
        "optimizer": {"lr": 0.005},
        "trainer": {"max_epochs": 4, "progress_bar": False, "accelerator": "cpu"},
        "output": str(tmp_path / "run"),
    }
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "tune.yaml")]) == 0
    rows = [line.split(",") for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()]
    column = rows[0].index("val_loss")
    losses = [float(row[column]) for row in rows[1:] if row[column]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert load_model(tmp_path / "run" / "model.pt").config == import_mace(DATA / "mp0.model").config


def test_the_covalent_radii_table_is_ase_s():
    from ase.data import covalent_radii

    from equinet.potentials.pair_radii import COVALENT_RADII

    assert list(COVALENT_RADII) == covalent_radii.tolist()
