"""Bad input, tried as a new user would, across every command and the Python API: one line,
exit code 2, no traceback, and every file that existed before is still there, byte for byte.
Then the cases that used to lose data, each on its own, and kill -9 in the middle of writing."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from equinet import Calculator, load_model
from equinet.cli import main
from equinet.datasets import load_dataset, read_labels
from equinet.datasets.h5 import write_h5
from equinet.evaluation import compute_metrics, predict
from equinet.md import run_md
from equinet.potentials import build_model

EQUINET = str(Path(sys.executable).with_name("equinet"))
MACE_FILE = Path(__file__).parent / "data" / "mace" / "mp0.model"  # a random-weight mace-torch file
MODEL = {"name": "mace", "dtype": "float64", "cutoff": 4.0, "hidden_irreps": "4x0e+4x1o", "max_ell": 1,
         "correlation": 2, "num_interactions": 1, "radial_hidden": [8]}


def _frames(count: int, seed: int = 0):
    """4-atom fcc Cu3Ni cells, rattled, with EMT labels."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.symbols[rng.integers(4)] = "Ni"
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress())
        frames.append(atoms)
    return frames


def _config(folder: Path, **sections) -> dict:
    config = {
        "data": {"train": "data.extxyz", "split": [8, 2, 2], "batch_size": 4, "valid_batch_size": 4},
        "model": dict(MODEL),
        "loss": {"stage_two": None},
        "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu"},
        "output": "run",
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    return config


def _write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A user's folder: data, a config, a trained run, model files good and bad, and a
    folder of the user's own files."""
    root = tmp_path_factory.mktemp("user")
    write(root / "data.extxyz", _frames(12))
    xenon = _frames(2)
    for atoms in xenon:
        atoms.symbols[0] = "Xe"
    write(root / "xenon.extxyz", xenon)
    write(root / "cu.extxyz", _frames(1)[0])
    _write_config(root / "cfg.yaml", _config(root))
    result = subprocess.run([EQUINET, "train", "cfg.yaml"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = torch.load(root / "run" / "model.pt", weights_only=True)
    torch.save({key: value for key, value in saved.items() if key != "statistics"}, root / "nostats.pt")
    torch.save({**saved, "config": {**saved["config"], "max_ell": 2}}, root / "mismatch.pt")
    for key, value in saved["state_dict"].items():
        if value.is_floating_point() and key != "atomic_energies":
            value.fill_(float("nan"))
    torch.save(saved, root / "nan.pt")
    torch.save({"payload": _Payload()}, root / "pickled.pt")
    (root / "victim").mkdir()
    shutil.copy(root / "data.extxyz", root / "victim" / "mydata.extxyz")
    (root / "holder").mkdir()
    shutil.copy(root / "data.extxyz", root / "holder" / "data.extxyz")
    _write_config(root / "holder" / "cfg.yaml", _config(root, data={"train": "holder/data.extxyz"}, output="holder"))
    (root / "afile").write_text("a file, not a folder\n")
    (root / "binary.yaml").write_bytes(bytes(range(256)))
    (root / "bad.yaml").write_text("data: [unclosed\n")
    (root / "config_dir").mkdir()
    assert main(["data", "convert", str(root / "data.extxyz"), str(root / "data.h5")]) == 0
    os.link(root / "data.h5", root / "hardlink.h5")
    return root


class _Payload:
    """Pickles to a call of os.system: loading it must never run it."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


TRAIN = ["train", "cfg.yaml"]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
CASES = [
    # equinet train: the config file
    (["train", "config_dir"], "config_dir: is a folder"),
    (["train", "missing.yaml"], "missing.yaml: config file not found"),
    (["train", "binary.yaml"], "binary.yaml: not a text file"),
    (["train", "bad.yaml"], "bad.yaml: not valid YAML (line 2)"),
    ([*TRAIN, "--set", "trainer.max_epochs={a"], "--set 'trainer.max_epochs={a': the value is not valid YAML"),
    ([*TRAIN, "--set", "trainer.max_epochs"], "write it as section.key=value"),
    ([*TRAIN, "--set", "data.batch_sise=4"], "unknown key 'data.batch_sise'; did you mean 'batch_size'?"),
    ([*TRAIN, "--set", "data.train=missing.extxyz"], "data.train: file not found: missing.extxyz"),
    ([*TRAIN, "--set", "data.split=[1.2,-0.1,-0.1]"], "data.split [1.2, -0.1, -0.1]: sizes must be 0 or more"),
    ([*TRAIN, "--set", "data.split=[0.8,0.5,0.1]"], "the fractions add up to more than 1"),
    ([*TRAIN, "--set", "data.split=[1.5,3,2]"], "give either fractions (all at most 1) or whole counts"),
    ([*TRAIN, "--set", "data.split=[30,4,4]", "--set", "output=new"], "need 38 structures but the data set has 12"),
    ([*TRAIN, "--set", "model.name=macee"], "model.name must be one of"),
    ([*TRAIN, "--set", "model.dtype=float16"], "model.dtype must be one of float32, float64, got 'float16'"),
    ([*TRAIN, "--set", "model.radial_hidden=abc"], "model.radial_hidden = 'abc'"),
    ([*TRAIN, "--set", "model.max_ell=-1"], "model.max_ell = -1: must be 0 or more"),
    ([*TRAIN, "--set", "model.max_ell=2.5"], "model.max_ell = 2.5"),
    ([*TRAIN, "--set", "model.hidden_irreps=abc"], "model.hidden_irreps = 'abc': not irreps"),
    ([*TRAIN, "--set", "model.cutoff=0"], "model.cutoff = 0.0: must be a positive distance"),
    ([*TRAIN, "--set", "optimizer.lr=-1"], "optimizer.lr = -1: Input should be greater than 0"),
    ([*TRAIN, "--set", "trainer.max_epochs=0"], "trainer.max_epochs = 0: Input should be greater than or equal to 1"),
    ([*TRAIN, "--set", "trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val = -1: Input should be greater than 0"),
    pytest.param([*TRAIN, "--set", "trainer.accelerator=gpu", "--set", "output=new"], "trainer: accelerator 'gpu'", marks=NO_GPU),
    ([*TRAIN, "--set", "trainer.devices=many", "--set", "output=new"], "trainer: accelerator 'cpu', devices 'many'"),
    # equinet train: fine-tuning a trained model
    ([*TRAIN, "--set", "model={init_from: missing.pt}"], "model.init_from: file not found: missing.pt"),
    ([*TRAIN, "--set", "model={init_from: run/model.pt, max_ell: 2}", "--set", "output=new"], "model.max_ell: the model comes from model.init_from"),
    ([*TRAIN, "--set", "model.freeze=1"], "model.freeze keeps layers of a trained model fixed: it needs model.init_from"),
    ([*TRAIN, "--set", "data.dispersion={damping: d4}"], "data.dispersion.damping = 'd4': Input should be 'd3bj', 'd3zero', 'd3bjm' or 'd3zerom'"),
    ([*TRAIN, "--set", "model.head=pbe"], "model.head picks a head of a trained model: it needs model.init_from"),
    ([*TRAIN, "--set", "model={init_from: run/model.pt, head: 3}"], "model.head = 3: give the name of a head of the model file"),
    ([*TRAIN, "--set", "model={init_from: run/model.pt, head: pbe}", "--set", "output=new"], "model.head picks a head of a mace-torch .model file; run/model.pt is an equinet model"),
    ([*TRAIN, "--set", "model={init_from: run/model.pt, freeze: -1}"], "model.freeze = -1: give how many message-passing layers"),
    ([*TRAIN, "--set", "model={init_from: run/model.pt, freeze: 5}", "--set", "output=new"], "model.freeze = 5: the model of model.init_from has only 1"),
    ([*TRAIN, "--set", "model={init_from: run/model.pt}", "--set", "data.train=xenon.extxyz", "--set", "data.valid=xenon.extxyz", "--set", "data.split=[1.0,0,0]", "--set", "output=new"],
     "train set (for the model of model.init_from): frame 0: element Xe (Z=54) is not one the model was built for (Ni, Cu)"),
    ([*TRAIN, "--set", "model={init_from: run/model.pt}", "--set", "output=run", "--overwrite"], "output folder run holds the run's input run/model.pt"),
    # equinet train: the output folder
    ([*TRAIN, "--set", "output=victim", "--overwrite"], "output folder victim holds files that equinet train did not write (mydata.extxyz"),
    ([*TRAIN, "--set", "output=victim"], "output folder victim holds files that equinet train did not write"),
    ([*TRAIN, "--set", "output=.", "--overwrite"], "output folder . holds the run's input cfg.yaml"),
    (["train", "holder/cfg.yaml", "--overwrite"], "output folder holder holds the run's input holder/cfg.yaml"),
    ([*TRAIN, "--set", "data.train=run/test.extxyz", "--overwrite"], "output folder run holds the run's input run/test.extxyz"),
    ([*TRAIN, "--set", "output=afile"], "output afile is a file"),
    (TRAIN, "output folder run already holds a run; pass --resume to continue it or --overwrite"),
    ([*TRAIN, "--set", "output=new", "--resume"], "--resume: new/last.ckpt does not exist; start a new run without --resume"),
    # equinet evaluate
    (["evaluate", "missing.pt", "data.extxyz"], "missing.pt: model file not found"),
    (["evaluate", "data.extxyz", "data.extxyz"], "data.extxyz: cannot read as an equinet model"),
    (["evaluate", "pickled.pt", "data.extxyz"], "pickled.pt: holds pickled Python objects, not an equinet model; equinet never loads pickled code"),
    (["evaluate", "nostats.pt", "data.extxyz"], "nostats.pt: a damaged equinet file: it lacks its statistics"),
    (["evaluate", "mismatch.pt", "data.extxyz"], "mismatch.pt: its weights do not fit the model its config describes (size mismatch"),
    (["evaluate", "nan.pt", "data.extxyz", "--output", "evaluated"], "nan.pt: the model predicts non-finite energy per atom for 12 of 12 structures"),
    (["evaluate", "run/model.pt", "data.extxyz", "--device", "bogus"], "device 'bogus' is not a torch device"),
    pytest.param(["evaluate", "run/model.pt", "data.extxyz", "--device", "cuda"], "torch sees no CUDA GPU here", marks=NO_GPU),
    (["evaluate", "run/model.pt", "data.extxyz", "--output", "afile"], "--output afile: is a file"),
    (["evaluate", "run/model.pt", "missing.extxyz"], "missing.extxyz: file not found"),
    (["evaluate", "run/model.pt", "xenon.extxyz"], "element Xe (Z=54)"),
    (["evaluate", "run/model.pt", "data.extxyz", "--batch-size", "0"], "argument --batch-size: 0 must be at least 1"),
    # equinet md
    (["md", "run/model.pt", "cu.extxyz", "--temperature", "-100", "--output", "md/a.extxyz"], "the temperature must be 0 K or more, got -100.0 K"),
    (["md", "run/model.pt", "cu.extxyz", "--timestep", "nan", "--output", "md/a.extxyz"], "the timestep > 0"),
    (["md", "run/model.pt", "cu.extxyz", "--output", "cu.extxyz"], "--output cu.extxyz: is the input file cu.extxyz"),
    (["md", "cfg.yaml", "cu.extxyz", "--output", "md/c.extxyz"], "cfg.yaml: not a committee file (it needs 'format: equinet-committee' and a list of members)"),
    (["select", "cu.extxyz", "--committee", "run/model.pt", "-n", "2", "-o", "pick.extxyz"], "--committee: give a committee file or two or more models; one model has no spread"),
    (["select", "cu.extxyz", "--committee", "run/model.pt", "run/model.pt", "-n", "2", "-o", "pick.extxyz", "--min-rmsd", "-1"], "--min-rmsd -1.0: give a distance in Å, 0 or more"),
    (["md", "run/model.pt", "cu.extxyz", "--output", "md/a.foo"], "--output md/a.foo: cannot tell a format to write from its name"),
    (["md", "run/model.pt", "cu.extxyz", "--output", "afile/a.extxyz"], "afile is a file, not a folder"),
    (["md", "run/model.pt", "cu.extxyz", "--steps", "0"], "argument --steps: 0 must be at least 1"),
    (["md", "run/model.pt", "missing.extxyz", "--output", "md/a.extxyz"], "missing.extxyz: file not found"),
    (["md", "run/model.pt", "xenon.extxyz", "--output", "md/a.extxyz"], "element Xe is not one the model was built for"),
    (["md", "run/model.pt", "cu.extxyz", "--device", "bogus", "--output", "md/a.extxyz"], "device 'bogus' is not a torch device"),
    (["md", "run/model.pt", "cu.extxyz", "--backend", "bogus", "--output", "md/a.extxyz"], "backend must be one of"),
    (["md", "run/model.pt", "cu.extxyz", "--max-force-std", "0.1", "--output", "md/a.extxyz"], "--max-force-std 0.1: give a positive threshold in eV/Å and two or more models"),
    (["md", "run/model.pt", "mismatch.pt", "cu.extxyz", "--output", "md/a.extxyz"], "mismatch.pt: its weights do not fit"),
    # equinet phonons and elastic
    (["phonons", "run/model.pt", "missing.extxyz"], "missing.extxyz: file not found"),
    (["phonons", "run/model.pt", "xenon.extxyz"], "element Xe is not one the model was built for"),
    (["elastic", "run/model.pt", "cu.extxyz", "--relax", "-1"], "--relax -1.0: give the largest force to stop at"),
    (["elastic", "nan.pt", "cu.extxyz", "--clamped"], "the model's energy of this structure is not finite"),
    # equinet export
    (["export", "run/model.pt", "-o", "run/model.pt"], "--output run/model.pt: is the input file run/model.pt"),
    (["export", "run/model.pt", "-o", "afile/m.pt"], "afile is a file, not a folder"),
    (["export", "run/model.pt", "-o", "m.pt", "--format", "aotinductor"], "m.pt: an exported model is a .pt2 file for format aotinductor"),
    (["export", "pickled.pt", "-o", "m.pt"], "equinet never loads pickled code"),
    (["export", "run/model.pt", "-o", "m.pt", "--max-memory-gb", "0"], "argument --max-memory-gb: 0 must be a finite number above 0"),
    (["export", "run/model.pt", "-o", "m.pt", "--max-memory-gb", "inf"], "argument --max-memory-gb: inf must be a finite number above 0"),
    (["export", "run/model.pt", "-o", "m.pt", "--max-memory-gb", "lots"], "argument --max-memory-gb: 'lots' is not a number"),
    (["export", "run/model.pt", "-o", "m.pt2", "--max-memory-gb", "2"], "m.pt2: a graph in blocks (max_memory_gb) exports as TorchScript (a .pt file) only"),
    # equinet data
    (["data", "convert", "data.h5", "data.h5"], "output data.h5: is the input file data.h5"),
    (["data", "convert", "data.h5", "hardlink.h5"], "output hardlink.h5: is the input file data.h5"),
    (["data", "convert", "data.h5", "out.xyzz"], "output out.xyzz: cannot tell a format to write from its name"),
    (["data", "convert", "data.h5", "afile/out.h5"], "afile is a file, not a folder"),
    (["data", "convert", "data.h5", "victim"], "output victim: is a folder"),
    (["data", "convert", "missing.extxyz", "out.h5"], "missing.extxyz: file not found"),
    (["data", "generate", "emt-alloys", "out.extxyz", "--n", "0"], "argument --n: 0 must be at least 1"),
    (["data", "generate", "emt-alloys", "out.xyzz", "--n", "2"], "output out.xyzz: cannot tell a format"),
    # equinet import mace
    (["import", "mace", "pickled.pt", "-o", "m.pt"], "pickled.pt:"),
    (["import", "mace", "data.extxyz", "-o", "m.pt"], "data.extxyz: not a file that torch.save wrote"),
    (["import", "mace", "run/model.pt", "-o", "m.pt"], "run/model.pt:"),
    (["import", "mace", str(MACE_FILE), "-o", "m.pt", "--head", "nope"], "cannot import this MACE model: has no head 'nope'"),
    (["import", "mace", str(MACE_FILE), "-o", "afile/m.pt"], "afile is a file, not a folder"),
    (["import", "mace", "missing.model", "-o", "m.pt"], "missing.model"),
    # equinet lammps
    (["lammps", "build-plugin", "-o", "afile/plugin.so"], "afile is a file, not a folder"),
]


@pytest.mark.parametrize("argv, message", CASES)
def test_bad_input_gets_one_line_exit_2_and_costs_no_data(workspace, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(workspace)
    before = _snapshot(workspace)
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if ": error: " in line]  # after Lightning's and tqdm's lines, if any
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert message in errors[0], err
    assert _snapshot(workspace) == before, "a file was changed, removed or added"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda root: Calculator(root / "run" / "model.pt", device="bogus"), "device 'bogus' is not a torch device"),
        (lambda root: Calculator(root / "run" / "model.pt", dtype="float16"), "dtype must be 'float32' or 'float64'"),
        (lambda root: load_model(root / "pickled.pt"), "equinet never loads pickled code"),
        (lambda root: load_model(root / "mismatch.pt"), "its weights do not fit"),
        (lambda root: build_model({**MODEL, "hidden_irreps": "abc"}, {}), "model.hidden_irreps = 'abc': not irreps"),
        (lambda root: run_md(Calculator(root / "run" / "model.pt").atoms_for(read(root / "cu.extxyz")), temperature_K=-5), "0 K or more"),
    ],
)
def test_the_python_api_refuses_bad_input_in_one_line(workspace, call, message):
    with pytest.raises(ValueError) as info:
        call(workspace)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (workspace / "pwned").exists()


# ---------------------------------------------------------------------------- the data-loss cases


def _trained_copy(workspace: Path, folder: Path) -> Path:
    """A copy of the workspace's data, config and trained run in ``folder``."""
    folder.mkdir()
    for name in ("data.extxyz", "cfg.yaml"):
        shutil.copy(workspace / name, folder / name)
    shutil.copytree(workspace / "run", folder / "run")
    return folder


def test_overwrite_replaces_only_what_equinet_train_wrote(workspace, tmp_path, monkeypatch):
    folder = _trained_copy(workspace, tmp_path / "user")
    monkeypatch.chdir(folder)
    (folder / "run" / "notes.txt").write_text("mine\n")
    (folder / "run" / "md").mkdir()
    (folder / "run" / "md" / "nve.extxyz").write_text("mine too\n")
    old = torch.load(folder / "run" / "model.pt", weights_only=True)
    assert main([*TRAIN, "--overwrite", "--set", "data.seed=1"]) == 0
    assert (folder / "run" / "notes.txt").read_text() == "mine\n"
    assert (folder / "run" / "md" / "nve.extxyz").read_text() == "mine too\n"
    new = torch.load(folder / "run" / "model.pt", weights_only=True)
    assert any(not torch.equal(new["state_dict"][k], v) for k, v in old["state_dict"].items()), "the run was not replaced"


def test_overwrite_keeps_the_old_run_until_the_new_one_is_checked(workspace, tmp_path, monkeypatch, capsys):
    """The data fails only when read: the earlier run must still be there, byte for byte."""
    folder = _trained_copy(workspace, tmp_path / "user")
    monkeypatch.chdir(folder)
    before = _snapshot(folder)
    assert main([*TRAIN, "--overwrite", "--set", "data.split=[30,4,4]"]) == 2
    assert "need 38 structures" in capsys.readouterr().err
    assert _snapshot(folder) == before


def test_a_run_stopped_before_its_first_checkpoint_gets_one_consistent_advice(workspace, tmp_path, monkeypatch, capsys):
    folder = _trained_copy(workspace, tmp_path / "user")
    monkeypatch.chdir(folder)
    for name in ("last.ckpt", "best.ckpt", "model.pt"):
        (folder / "run" / name).unlink()
    assert main(TRAIN) == 2
    assert "stopped before its first checkpoint; pass --overwrite to start over" in capsys.readouterr().err
    assert main([*TRAIN, "--resume"]) == 2
    assert "stopped before its first checkpoint; start it again with --overwrite" in capsys.readouterr().err
    assert main([*TRAIN, "--overwrite"]) == 0


def test_a_failed_conversion_leaves_the_old_output_as_it_was(workspace, tmp_path, capsys):
    frames = _frames(4)
    frames[3].positions[1, 0] = np.nan
    write(tmp_path / "bad.extxyz", frames)
    output = tmp_path / "out.h5"
    shutil.copy(workspace / "data.h5", output)
    before = output.read_bytes()
    assert main(["data", "convert", str(tmp_path / "bad.extxyz"), str(output)]) == 2
    assert "frame 3" in capsys.readouterr().err
    assert output.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.extxyz", "out.h5"], "no partial file left behind"


def test_metrics_count_the_structures_they_are_taken_over(workspace, tmp_path):
    """Two of five structures lack forces. Checked against errors computed independently
    (the ASE calculator, one structure at a time): energy MAE and RMSE per atom over all
    five, force-component MAE and RMSE over the three with forces."""
    model = load_model(workspace / "run" / "model.pt")
    frames = _frames(5, seed=3)
    for atoms in frames[:2]:
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy())
    write(tmp_path / "partial.extxyz", frames)
    dataset = load_dataset(tmp_path / "partial.extxyz", model.cutoff, required=("energy",), dtype=torch.float64)
    metrics = compute_metrics(predict(model, dataset, batch_size=2))
    assert metrics["energy"]["structures"] == metrics["energy"]["count"] == 5
    assert metrics["forces"]["structures"] == 3 and metrics["forces"]["count"] == 3 * 4 * 3
    calculator = Calculator(model)
    errors = np.array([(calculator.get_potential_energy(atoms.copy()) - atoms.get_potential_energy()) / 4 for atoms in frames])
    assert metrics["energy"]["mae"] == pytest.approx(1000 * np.abs(errors).mean(), rel=1e-9)
    assert metrics["energy"]["rmse"] == pytest.approx(1000 * np.sqrt((errors**2).mean()), rel=1e-9)
    force_errors = np.concatenate([(calculator.get_forces(atoms.copy()) - atoms.get_forces()).ravel() for atoms in frames[2:]])
    assert metrics["forces"]["mae"] == pytest.approx(1000 * np.abs(force_errors).mean(), rel=1e-9)
    assert metrics["forces"]["rmse"] == pytest.approx(1000 * np.sqrt((force_errors**2).mean()), rel=1e-9)


def test_a_non_finite_validation_loss_never_wins_best_ckpt(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(workspace / "data.extxyz", tmp_path / "data.extxyz")
    _write_config(tmp_path / "cfg.yaml", _config(tmp_path, optimizer={"lr": 1e30}, trainer={"max_epochs": 3}))
    assert main(TRAIN) == 1
    out = capsys.readouterr().out
    assert "became non-finite (lower optimizer.lr or check the data)" in out
    for name in ("best.ckpt", "last.ckpt", "model.pt"):
        path = tmp_path / "run" / name
        if path.exists():  # whatever was saved holds finite weights only
            state = torch.load(path, weights_only=True)["state_dict"]
            assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point()), name
        else:
            assert "no checkpoint and no model.pt were written" in out


def test_a_failed_md_run_writes_no_files(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(workspace)
    assert main(["md", "run/model.pt", "xenon.extxyz", "--output", str(tmp_path / "md.extxyz")]) == 2
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- kill -9 while writing


def _kill_when(process: subprocess.Popen, appears: Path, pattern: str, timeout: float = 120.0) -> None:
    """SIGKILL ``process`` as soon as a file matching ``pattern`` appears in ``appears``."""
    deadline = time.time() + timeout
    while not list(appears.glob(pattern)):
        assert process.poll() is None, "the command ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_killing_a_conversion_leaves_the_old_output_whole(tmp_path):
    atoms = _frames(1)[0]
    write_h5(tmp_path / "big.h5", [(atoms, read_labels(atoms))] * 20000)
    before = _snapshot(tmp_path)
    output = tmp_path / "out.h5"
    output.write_bytes(b"the user's earlier store\n")
    process = subprocess.Popen([EQUINET, "data", "convert", "big.h5", "out.h5"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(process, tmp_path, ".out.partial-*.h5")
    assert output.read_bytes() == b"the user's earlier store\n"
    assert {name: digest for name, digest in _snapshot(tmp_path).items() if name == "big.h5"} == before


def test_killing_an_export_leaves_the_old_file_whole(workspace, tmp_path):
    output = tmp_path / "model-lammps.pt"
    output.write_bytes(b"an earlier export\n")
    process = subprocess.Popen([EQUINET, "export", str(workspace / "run" / "model.pt"), "-o", str(output)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(process, tmp_path, ".model-lammps.partial-*.pt")
    assert output.read_bytes() == b"an earlier export\n"


def test_resume_checks_the_checkpoint_record_as_loading_a_model_does(workspace, tmp_path, monkeypatch, capsys):
    folder = _trained_copy(workspace, tmp_path / "user")
    monkeypatch.chdir(folder)
    checkpoint = torch.load(folder / "run" / "last.ckpt", weights_only=True)
    assert checkpoint["equinet"].keys() == torch.load(folder / "run" / "model.pt", weights_only=True).keys() - {"state_dict"}
    checkpoint["equinet"]["conventions"]["units"] = "kcal/mol, Å"
    torch.save(checkpoint, folder / "run" / "last.ckpt")
    before = _snapshot(folder)
    assert main([*TRAIN, "--resume", "--set", "trainer.max_epochs=2"]) == 2
    assert "--resume: run/last.ckpt: made under other conventions than this equinet's ({'units': 'kcal/mol, Å'})" in capsys.readouterr().err
    assert _snapshot(folder) == before
