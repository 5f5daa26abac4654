"""Every kind of bad input gives one line naming the file, the frame and the problem."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from equinet.cli import main
from equinet.datasets import DataError, check_elements, load_dataset, read_structures


def _frame(symbols="Cu2", positions=((0, 0, 0), (1.8, 1.8, 0)), cell=(3.6, 3.6, 3.6), pbc=True, energy=-1.0, forces=True):
    atoms = Atoms(symbols, positions=positions, cell=cell, pbc=pbc)
    results = {"energy": energy}
    if forces:
        results["forces"] = np.zeros((len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _file(tmp_path, bad, name="data.extxyz"):
    frames = [_frame(), _frame(), bad, _frame()]
    write(tmp_path / name, frames)
    return tmp_path / name


def _assert_one_line(error: Exception, *parts: str):
    message = str(error)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "nope.extxyz", cutoff=4.0)
    _assert_one_line(info.value, "nope.extxyz", "file not found")


def test_unreadable_file(tmp_path):
    (tmp_path / "garbage.extxyz").write_text("this is\nnot a structure file\n")
    with pytest.raises(DataError) as info:
        read_structures(tmp_path / "garbage.extxyz")
    _assert_one_line(info.value, "garbage.extxyz", "cannot read this file")


def test_frame_missing_requested_label(tmp_path):
    path = _file(tmp_path, _frame(forces=False))
    with pytest.raises(DataError) as info:
        read_structures(path)
    _assert_one_line(info.value, "data.extxyz: frame 2: no forces label", "forces_key")
    assert len(read_structures(path, required=("energy",))) == 4


@pytest.mark.parametrize(
    "bad, problem",
    [
        (_frame(positions=((0, 0, 0), (np.nan, 1.8, 0))), "positions contain NaN or Inf"),
        (_frame(energy=np.inf), "energy contains NaN or Inf"),
        (_frame(positions=((0, 0, 0), (0.05, 0, 0))), "atoms 0 and 1 are 0.05 Å apart"),
        (_frame(cell=(3.6, 3.6, 0), pbc=True), "direction c is periodic but its cell vector has zero length"),
    ],
)
def test_invalid_frames_name_frame_and_problem(tmp_path, bad, problem):
    path = _file(tmp_path, bad)
    with pytest.raises(DataError) as info:
        load_dataset(path, cutoff=4.0)
    _assert_one_line(info.value, "data.extxyz: frame 2:", problem)


def test_atom_too_close_to_its_own_image(tmp_path):
    path = _file(tmp_path, _frame("Cu", positions=((0, 0, 0),), cell=(0.05, 3.6, 3.6)))
    with pytest.raises(DataError, match=r"frame 2: atoms 0 and 0 are 0.05 Å apart"):
        load_dataset(path, cutoff=4.0)


def test_empty_structure(tmp_path):
    path = _file(tmp_path, _frame("", positions=np.zeros((0, 3))), name="data.traj")
    with pytest.raises(DataError) as info:
        load_dataset(path, cutoff=4.0)
    _assert_one_line(info.value, "data.traj: frame 2: structure has no atoms")


def test_skip_bad_counts_what_it_leaves_out(tmp_path):
    path = _file(tmp_path, _frame(positions=((0, 0, 0), (0.01, 0, 0))))
    with pytest.warns(UserWarning, match=r"skipped 1 bad structure\(s\); first: .*frame 2"):
        graphs = load_dataset(path, cutoff=4.0, skip_bad=True)
    assert len(graphs) == 3


def test_element_the_model_was_not_built_for(tmp_path):
    path = _file(tmp_path, _frame("CuXe"))
    graphs = load_dataset(path, cutoff=4.0)
    check_elements(graphs, [29, 54])
    with pytest.raises(DataError) as info:
        check_elements(graphs, [29, 28], source=str(path))
    _assert_one_line(info.value, "frame 2", "element Xe (Z=54)", "(Ni, Cu)")


def test_unknown_energy_unit(tmp_path):
    path = _file(tmp_path, _frame())
    with pytest.raises(DataError, match="unknown energy unit 'kcal'; choose one of eV, meV, kcal/mol"):
        read_structures(path, energy_unit="kcal")


def test_command_line_reports_data_errors_in_one_line(tmp_path, capsys):
    path = _file(tmp_path, _frame(positions=((0, 0, 0), (np.inf, 0, 0))))
    assert main(["data", "convert", str(path), str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("equinet: error: ") and "frame 2: positions contain NaN or Inf" in err
    assert main(["data", "convert", str(tmp_path / "missing.xyz"), str(tmp_path / "out.h5")]) == 2
    assert "missing.xyz: file not found" in capsys.readouterr().err
    assert main(["data", "convert", str(path), str(tmp_path / "out.h5"), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 structures" in out and "skipped 1 bad ones" in out


def _with_info(**info):
    atoms = _frame()
    atoms.info.update(info)
    return atoms


@pytest.mark.parametrize(
    "bad, problem",
    [
        (_with_info(dipole=np.array([0.1, 0.2])), "dipole has 2 values; give 3 values (e·Å)"),
        (_with_info(dipole=np.array([0.1, np.nan, 0.2])), "dipole contains NaN or Inf"),
        (_with_info(polarizability=np.arange(6.0)), "polarizability has 6 values; give 9 values or a 3x3 matrix (Å³)"),
        (_with_info(polarizability=np.full(9, np.inf)), "polarizability contains NaN or Inf"),
        (_with_info(charge="minus one"), "info charge = 'minus one' is not a number"),
        (_with_info(spin="triplet"), "info spin = 'triplet' is not a number (the structure's spin multiplicity 2S+1)"),
    ],
)
def test_bad_tensorial_labels_name_file_frame_and_problem(tmp_path, capsys, bad, problem):
    path = _file(tmp_path, bad)
    with pytest.raises(DataError) as info:
        load_dataset(path, cutoff=4.0)
    _assert_one_line(info.value, "data.extxyz: frame 2:", problem)
    assert main(["data", "convert", str(path), str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "frame 2" in err and problem in err


def test_dipoles_polarizabilities_charges_and_spins_survive_an_h5_store(tmp_path):
    frames = [_with_info(dipole=np.array([0.1, -0.2, 0.3]), polarizability=np.arange(9.0), charge=-1.0, spin=2), _frame()]
    write(tmp_path / "data.extxyz", frames)
    assert main(["data", "convert", str(tmp_path / "data.extxyz"), str(tmp_path / "data.h5")]) == 0
    for path in ("data.extxyz", "data.h5"):
        first, second = load_dataset(tmp_path / path, cutoff=4.0)
        np.testing.assert_allclose(first.dipole.numpy(), [[0.1, -0.2, 0.3]])
        np.testing.assert_allclose(first.polarizability[0].numpy(), 0.5 * (np.arange(9.0).reshape(3, 3) + np.arange(9.0).reshape(3, 3).T))
        assert float(first.total_charge) == -1.0 and float(second.total_charge) == 0.0
        assert float(first.total_spin) == 2.0 and float(second.total_spin) == 1.0
        assert np.isnan(second.dipole.numpy()).all() and np.isnan(second.polarizability.numpy()).all()
