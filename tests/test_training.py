"""`equinet train` and `equinet evaluate` end to end on tiny data: outputs, config errors,
resume after SIGKILL, the non-finite-loss guard, and DDP on two CPU processes (resumed too)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from small_models import SMALL
from torch_geometric.loader import DataLoader

from equinet import Calculator, load_model
from equinet.cli import main
from equinet.config import LossConfig, StageTwoConfig, TrainConfig, load_config
from equinet.datasets import build_graphs, compute_statistics, read_labels
from equinet.potentials import MODELS, build_model
from equinet.training import PotentialModule, StageTwo, ema_with_warmup, refit_atomic_energies, train

EQUINET = str(Path(sys.executable).with_name("equinet"))


def _emt_frames(count: int, seed: int = 0):
    """4-atom Cu/Ni fcc cells, rattled and strained, labelled by EMT (all the same size,
    so that a loss averaged per process equals the loss averaged over the whole batch)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.symbols[rng.integers(4)] = "Ni"
        atoms.set_cell(atoms.cell.array * rng.uniform(0.97, 1.03), scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress())
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "emt.extxyz"
    write(path, _emt_frames(24))
    return path


def _config(tmp_path, data_file, **sections):
    config = {
        "data": {"train": str(data_file), "split": [16, 4, 4], "batch_size": 4, "valid_batch_size": 4},
        "model": {"name": "mace", "dtype": "float64", "cutoff": 4.0, "hidden_irreps": "4x0e+4x1o", "max_ell": 2,
                  "correlation": 2, "num_interactions": 2, "radial_hidden": [8]},
        "loss": {"forces_weight": 10.0, "stress_weight": 1.0},
        "optimizer": {"lr": 0.005},
        "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu"},
        "output": str(tmp_path / "run"),
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_train_writes_a_complete_run_folder(tmp_path, data_file, capsys):
    config = _config(tmp_path, data_file)
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "last.ckpt", "best.ckpt", "model.pt", "test.extxyz",
                 "test_metrics.json", "parity_energy.png", "parity_forces.png", "parity_stress.png"):
        assert (run / name).is_file(), name
    assert "test set (4 structures)" in out and "forces" in out and "meV/Å" in out
    checkpoint = torch.load(run / "last.ckpt", weights_only=True)  # plain data only
    assert checkpoint["equinet"]["config"]["name"] == "mace"
    assert checkpoint["equinet"]["conventions"]["units"].startswith("eV")
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics) == {"energy", "forces", "stress"} and metrics["forces"]["count"] == 4 * 4 * 3
    # model.pt is the EMA model: what the checkpoint stores as state_dict (the averaged weights).
    model_state = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    for key, value in model_state.items():
        torch.testing.assert_close(value, checkpoint["state_dict"][f"model.{key}"])
    assert any(not torch.equal(checkpoint["current_model_state"][f"model.{k}"], v) for k, v in model_state.items() if v.is_floating_point())
    atoms = _emt_frames(1, seed=5)[0]
    atoms.calc = Calculator(run / "model.pt")
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_stress().shape == (6,)

    # evaluate prints the same table for any data file and writes its plots.
    assert main(["evaluate", str(run / "model.pt"), str(run / "test.extxyz"), "--output", str(tmp_path / "eval")]) == 0
    evaluated = capsys.readouterr().out
    assert "test.extxyz (4 structures)" in evaluated
    evaluated_metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key, values in metrics.items():
        assert evaluated_metrics[key] == pytest.approx(values, rel=1e-6)
    assert (tmp_path / "eval" / "parity_forces.png").is_file()

    # A second run into the same folder is refused unless asked.
    assert main(["train", str(config)]) == 2
    assert "already holds a run; pass --resume to continue it or --overwrite" in capsys.readouterr().err


def test_stage_two_defaults_to_mace_weights_and_null_keeps_the_first_stages():
    tensorial = {"dipole": 100.0, "polarizability": 1.0}  # used by models with those outputs
    loss = LossConfig()
    assert loss.weights(False) == {"energy": 1.0, "forces": 1000.0, "stress": 0.0, **tensorial}
    assert loss.weights(True) == {"energy": 1000.0, "forces": 100.0, "stress": 0.0, **tensorial}
    loss = LossConfig(stress_weight=10.0, stage_two={"energy_weight": 100.0, "forces_weight": None, "dipole_weight": 10.0})
    assert loss.weights(True) == {"energy": 100.0, "forces": 1000.0, "stress": 10.0, "dipole": 10.0, "polarizability": 1.0}
    assert LossConfig(stage_two=None).weights(True) == {"energy": 1.0, "forces": 1000.0, "stress": 0.0, **tensorial}


def test_the_learning_rate_defaults_to_the_model_family():
    def lr(model: str, **optimizer) -> float:
        return TrainConfig(data={"generate": {}}, model={"name": model}, optimizer=optimizer).optimizer.lr

    assert lr("tensornet") == MODELS["tensornet"].default_lr == 0.001
    assert lr("mace") == lr("nequip") == lr("escn") == 0.01
    assert lr("tensornet", lr=0.02) == 0.02  # a given value wins
    # Without an optimizer section each config gets its own (the default is not shared).
    assert [TrainConfig(data={"generate": {}}, model={"name": name}).optimizer.lr for name in ("tensornet", "mace")] == [0.001, 0.01]


class _FakeTimer(pl.callbacks.Timer):
    def __init__(self, elapsed: float, duration: float):
        super().__init__(duration=timedelta(seconds=duration))
        self.elapsed = elapsed

    def time_elapsed(self, stage="train"):
        return self.elapsed

    def time_remaining(self, stage="train"):
        return self._duration - self.elapsed


@pytest.mark.parametrize(
    "epoch, max_epochs, timer, due",
    [
        (2, 4, None, False),
        (3, 4, None, True),  # 3/4 of the epochs
        (1, 1000, _FakeTimer(74.0, 100.0), False),
        (1, 1000, _FakeTimer(75.0, 100.0), True),  # 3/4 of the time, before 3/4 of the epochs
        (0, -1, _FakeTimer(90.0, 100.0), False),  # never in the first epoch
        (40, -1, None, False),  # no budget to take a fraction of
    ],
)
def test_stage_two_starts_at_three_quarters_of_the_epochs_or_of_the_time(epoch, max_epochs, timer, due):
    trainer = SimpleNamespace(current_epoch=epoch, max_epochs=max_epochs, callbacks=[timer] if timer else [])
    assert StageTwo(StageTwoConfig())._due(trainer) is due
    assert StageTwo(StageTwoConfig(start_epoch=3))._due(trainer) is (epoch >= 3)


def test_a_resumed_stage_two_keeps_its_learning_rate_and_loss_weights():
    """The stage's start is saved: resuming within stage two switches nothing again."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.0004)  # lowered by the plateau scheduler
    trainer = SimpleNamespace(current_epoch=9, max_epochs=10, callbacks=[], optimizers=[optimizer], lr_scheduler_configs=[], checkpoint_callbacks=[])
    module = SimpleNamespace(in_stage_two=False, config=SimpleNamespace(loss=LossConfig()))
    saved = StageTwo(StageTwoConfig())
    saved.started = True
    resumed = StageTwo(StageTwoConfig())
    resumed.load_state_dict(saved.state_dict())
    resumed.on_train_epoch_start(trainer, module)
    assert module.in_stage_two and optimizer.param_groups[0]["lr"] == 0.0004
    fresh = StageTwo(StageTwoConfig())  # the same epoch without the saved state: the stage begins
    fresh.on_train_epoch_start(trainer, module)
    assert module.in_stage_two and optimizer.param_groups[0]["lr"] == 0.001


def test_stage_two_switches_the_loss_weights_and_learning_rate(tmp_path, data_file):
    stage_two = {"start_epoch": 2, "energy_weight": 1e6, "lr": 0.001}
    config = _config(tmp_path, data_file, loss={"stage_two": stage_two}, trainer={"max_epochs": 3})
    assert main(["train", str(config)]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    # 4 steps per epoch; the rate is logged as each epoch starts.
    rates = {int(row["step"]) // 4: float(row["lr-Adam"]) for row in rows if row["lr-Adam"]}
    assert rates == {0: 0.005, 1: 0.005, 2: 0.001}, rates
    # The validation loss weighs energies 1e6 in stage two, so it jumps; best.ckpt is still
    # chosen afresh within stage two.
    val_loss = {int(row["epoch"]): float(row["val_loss"]) for row in rows if row["val_loss"]}
    assert val_loss[2] > max(val_loss[0], val_loss[1])
    assert torch.load(tmp_path / "run" / "best.ckpt", weights_only=True)["epoch"] == 2


def _model_and_graphs(frames):
    graphs = build_graphs([(atoms, read_labels(atoms, required=("energy", "forces"))) for atoms in frames], 4.0, dtype=torch.float64)
    config = {"name": "mace", "dtype": "float64", "cutoff": 4.0, "hidden_irreps": "4x0e+4x1o", "max_ell": 2, "correlation": 2, "num_interactions": 1}
    return build_model(config, compute_statistics(graphs)), graphs


def _predictions(model, graphs):
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    out = model(batch, forces=True)
    return out["energy"].detach(), out["forces"].detach()


def test_refit_atomic_energies_removes_a_per_element_offset_exactly():
    """Labels that are the model's energies plus a per-element offset: the refit finds the
    offset (two compositions determine both elements), forces stay, statistics follow."""
    frames = _emt_frames(6)
    for atoms, nickel in zip(frames, [1, 2, 1, 3, 2, 1]):
        atoms.symbols[:nickel] = "Ni"
    model, graphs = _model_and_graphs(frames)
    energy, forces = _predictions(model, graphs)
    offset = torch.tensor([0.25, -0.4], dtype=torch.float64)  # eV for Ni (28), Cu (29) in model.elements order
    assert model.elements == [28, 29]
    for graph, value in zip(graphs, energy):
        counts = torch.bincount(model.species(graph.z), minlength=2).double()
        graph.energy = (value + counts @ offset).reshape(1)
    change = refit_atomic_energies(model, DataLoader(graphs, batch_size=4))
    torch.testing.assert_close(change, offset, rtol=0, atol=1e-10)
    refitted_energy, refitted_forces = _predictions(model, graphs)
    torch.testing.assert_close(refitted_energy, torch.cat([graph.energy for graph in graphs]), rtol=0, atol=1e-10)
    torch.testing.assert_close(refitted_forces, forces, rtol=0, atol=1e-12)
    assert model.statistics["atomic_energies"] == dict(zip(model.elements, model.atomic_energies.tolist()))


def test_refit_atomic_energies_with_one_composition_takes_the_minimum_norm_change():
    model, graphs = _model_and_graphs(_emt_frames(5))  # Cu3Ni each
    energy, _ = _predictions(model, graphs)
    before = model.atomic_energies.clone()
    for graph, value in zip(graphs, energy):
        graph.energy = (value - 0.3).reshape(1)
    graphs[2].energy = torch.full((1,), float("nan"), dtype=torch.float64)  # no label: left out
    change = refit_atomic_energies(model, DataLoader(graphs, batch_size=2))
    counts = torch.tensor([1.0, 3.0], dtype=torch.float64)  # Ni, Cu
    torch.testing.assert_close(change, -0.3 * counts / counts.square().sum(), rtol=0, atol=1e-10)
    torch.testing.assert_close(model.atomic_energies, before + change)


def test_stage_two_refits_the_reference_energies_unless_they_are_given(tmp_path, data_file, caplog):
    config = _config(tmp_path / "fitted", data_file, loss={"stage_two": {"start_epoch": 1}})
    with caplog.at_level("INFO"):
        assert main(["train", str(config)]) == 0
    assert "Stage two: reference energies refitted to the training set, changes (Z: meV) 28: " in caplog.text
    saved = torch.load(tmp_path / "fitted" / "run" / "model.pt", weights_only=True)
    assert saved["statistics"]["atomic_energies"] == dict(zip([28, 29], saved["state_dict"]["atomic_energies"].tolist()))

    caplog.clear()
    given = {28: -0.5, 29: -0.25}
    config = _config(tmp_path / "given", data_file, data={"atomic_energies": given}, loss={"stage_two": {"start_epoch": 1}})
    with caplog.at_level("INFO"):
        assert main(["train", str(config)]) == 0
    assert "Stage two from epoch 1" in caplog.text and "refitted" not in caplog.text
    saved = torch.load(tmp_path / "given" / "run" / "model.pt", weights_only=True)
    assert saved["state_dict"]["atomic_energies"].tolist() == [-0.5, -0.25]
    assert saved["statistics"]["atomic_energies"] == given


def test_ema_warms_up_then_decays_at_the_configured_rate():
    """AveragedModel copies the weights first; the t-th average after that uses min(decay, (1 + t) / (10 + t))."""
    weights = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    averaged = torch.optim.swa_utils.AveragedModel(torch.nn.ParameterList([weights]), avg_fn=ema_with_warmup(0.99))
    expected = 0.0
    for step in range(1, 2000):
        with torch.no_grad():
            weights.fill_(float(step))
        averaged.update_parameters(torch.nn.ParameterList([weights]))
        if step == 1:
            expected = 1.0  # the first update copies
        else:
            t = step - 1  # updates already averaged
            decay = min(0.99, (1 + t) / (10 + t))
            expected = decay * expected + (1 - decay) * step
        torch.testing.assert_close(next(averaged.module.parameters()).detach(), torch.full((3,), expected, dtype=torch.float64))
    # Late on, the average lags 1 / (1 - decay) - 1 = 99 steps behind a steadily growing weight.
    assert abs((step - expected) - 99) < 1e-3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.batch_sise=4"], "unknown key 'data.batch_sise'; did you mean 'batch_size'?"),
        (["trainer.max_epoch=4"], "unknown key 'trainer.max_epoch'; did you mean 'max_epochs'?"),
        (["data.batch_size=many"], "data.batch_size = 'many': Input should be a valid integer"),
        (["data.train=missing.extxyz"], "data.train: file not found: missing.extxyz"),
        (["model.hiden_irreps=8x0e"], "model.hiden_irreps is not a setting of model 'mace'; did you mean 'hidden_irreps'?"),
        (["model.name=macee"], f"model.name must be one of {', '.join(sorted(MODELS))}, got 'macee'; did you mean 'mace'?"),
        (["optimizer.lr=-1"], "optimizer.lr = -1: Input should be greater than 0"),
        (["trainer.max_epochs"], "write it as section.key=value"),
        (["loss.stage_two={start_epoch: 0}"], "loss.stage_two.start_epoch = 0: Input should be greater than or equal to 1"),
        (["loss.stage_two={start_epoch: 5, energy_wieght: 9}"], "unknown key 'loss.stage_two.energy_wieght'; did you mean 'energy_weight'?"),
    ],
)
def test_config_mistakes_give_one_line_and_exit_2(tmp_path, data_file, capsys, overrides, message):
    config = _config(tmp_path, data_file)
    argv = ["train", str(config)]
    for override in overrides:
        argv += ["--set", override]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("equinet: error: ") and message in err, err
    assert not (tmp_path / "run").exists(), "nothing runs before the config is valid"


def test_missing_config_and_bad_yaml(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: config file not found" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "bad.yaml: not valid YAML" in capsys.readouterr().err


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path, data_file):
    epochs = 4
    reference = _config(tmp_path / "a", data_file, trainer={"max_epochs": epochs})
    assert subprocess.run([EQUINET, "train", str(reference)], capture_output=True, timeout=600).returncode == 0

    killed = _config(tmp_path / "b", data_file, trainer={"max_epochs": epochs})
    process = subprocess.Popen([EQUINET, "train", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "b" / "run" / "last.ckpt"
    deadline = time.time() + 120
    while not (last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 1) and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "b" / "run" / "model.pt").exists(), "killed before the end"

    result = subprocess.run([EQUINET, "train", str(killed), "--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    expected, resumed = _state(tmp_path / "a" / "run" / "model.pt"), _state(tmp_path / "b" / "run" / "model.pt")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], atol=1e-10, rtol=1e-8)
    # metrics.csv keeps the epochs before the kill and logs none twice.
    expected_rows, resumed_rows = (_validation_rows(tmp_path / run / "run" / "metrics.csv") for run in ("a", "b"))
    assert [epoch for epoch, _ in resumed_rows] == list(range(epochs))
    for (_, expected_loss), (_, resumed_loss) in zip(expected_rows, resumed_rows):
        assert resumed_loss == pytest.approx(expected_loss, rel=1e-8)


def _validation_rows(path: Path) -> list[tuple[int, float]]:
    """(epoch, val_loss) of every validation in a metrics.csv."""
    return [(int(row["epoch"]), float(row["val_loss"])) for row in csv.DictReader(path.open()) if row["val_loss"]]


def test_a_resumed_run_keeps_the_model_its_checkpoint_was_made_with(tmp_path, data_file, monkeypatch, capsys):
    """A setting whose default changed after the run began (EARLIER_DEFAULTS) keeps the run's
    value, a backend may change, and a config that builds other weights is refused in one line."""
    config = _config(tmp_path, data_file, trainer={"max_epochs": 1})
    assert main(["train", str(config)]) == 0
    last = tmp_path / "run" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["equinet"]["config"]["correlation"] == 2
    del checkpoint["equinet"]["config"]["correlation"]  # as if written before the setting existed
    torch.save(checkpoint, last)
    monkeypatch.setattr("equinet.model_io.EARLIER_DEFAULTS", {"mace": {"correlation": 2}})
    capsys.readouterr()

    changed = _config(tmp_path, data_file, trainer={"max_epochs": 2}, model={"num_interactions": 1})
    assert main(["train", str(changed), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.ckpt holds a model that the config's model: settings do not build (" in err, err
    assert "there, absent here); resume with the run's model settings or start a new run" in err, err

    config = yaml.safe_load(_config(tmp_path, data_file, trainer={"max_epochs": 2}, model={"conv_backend": "e3nn"}).read_text())
    del config["model"]["correlation"]  # the default is now 3: the run's weights have correlation 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "config.yaml"), "--resume"]) == 0
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert saved["config"]["correlation"] == 2 and "conv_backend" not in saved["config"]  # a request, not stored
    assert torch.load(last, weights_only=True)["epoch"] == 1


def test_non_finite_loss_stops_and_keeps_the_last_finite_weights(tmp_path, data_file, monkeypatch, capsys):
    config = load_config(_config(tmp_path, data_file, trainer={"max_epochs": 3}))
    original = PotentialModule._loss

    def poisoned(self, pairs):
        loss = original(self, pairs)
        return loss * float("nan") if self.global_step >= 6 else loss  # two epochs of 4 steps are fine

    monkeypatch.setattr(PotentialModule, "_loss", poisoned)
    assert train(config) == 1
    out = capsys.readouterr().out
    assert "training stopped: the training loss at step 6 became non-finite" in out
    assert "last.ckpt and best.ckpt hold the last weights with a finite validation loss; model.pt holds best.ckpt's (epoch 0)" in out
    for name in ("best.ckpt", "last.ckpt", "model.pt"):
        state = _state(tmp_path / "run" / name)
        assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point()), name


DDP_EPOCHS = 3
needs_distributed = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed support")


def _ddp_config(tmp_path, data_file, devices):
    """Two gloo processes with half the batch each, or one with the whole batch."""
    trainer = {"max_epochs": DDP_EPOCHS, "devices": devices, "strategy": "ddp" if devices > 1 else "auto"}
    return _config(tmp_path, data_file, data={"batch_size": 4 // devices}, trainer=trainer, ema={"enabled": False})


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, data_file):
    """The run folder of an uninterrupted two-process run."""
    folder = tmp_path_factory.mktemp("ddp")
    result = subprocess.run([EQUINET, "train", str(_ddp_config(folder, data_file, 2))], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "run"


@needs_distributed
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path, data_file, ddp_run):
    """Two processes with half the batch each take the same steps as one process."""
    result = subprocess.run([EQUINET, "train", str(_ddp_config(tmp_path, data_file, 1))], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    single, ddp = (_last_validation(folder / "metrics.csv") for folder in (tmp_path / "run", ddp_run))
    for key in ("val_energy_mae_meV", "val_forces_mae_meV", "val_stress_mae_meV", "val_loss"):
        assert float(ddp[key]) == pytest.approx(float(single[key]), rel=1e-6), key


def _last_validation(path: Path) -> dict:
    return [row for row in csv.DictReader(path.open()) if row["val_forces_mae_meV"]][-1]


@needs_distributed
def test_a_ddp_run_killed_mid_run_resumes_to_the_same_result(tmp_path, data_file, ddp_run):
    """Both processes killed after the first checkpoint; ``--resume`` on two processes ends
    where the uninterrupted two-process run ends."""
    killed = _ddp_config(tmp_path, data_file, 2)
    process = subprocess.Popen([EQUINET, "train", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = tmp_path / "run" / "last.ckpt"
    deadline = time.time() + 300
    while not (last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 1) and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and the second process it started
    process.wait()
    assert not (tmp_path / "run" / "model.pt").exists(), "killed before the end"
    step = torch.load(last, weights_only=True)["global_step"]

    result = subprocess.run([EQUINET, "train", str(killed), "--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"--resume: continuing from {last} at step {step}" in result.stderr and step > 0
    expected, resumed = _state(ddp_run / "model.pt"), _state(tmp_path / "run" / "model.pt")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], atol=1e-10, rtol=1e-8)
    expected_rows, resumed_rows = (_validation_rows(folder / "metrics.csv") for folder in (ddp_run, tmp_path / "run"))
    assert [epoch for epoch, _ in resumed_rows] == list(range(DDP_EPOCHS))
    for (_, expected_loss), (_, resumed_loss) in zip(expected_rows, resumed_rows):
        assert resumed_loss == pytest.approx(expected_loss, rel=1e-8)


@pytest.mark.parametrize("kind", ["mse", "huber"])
def test_the_validation_loss_is_the_training_loss_over_the_whole_set(kind):
    """val_loss = sum over labels of weight * mean entry loss, with the loss type of training
    (a Huber run must not be judged by its squared error), checked against torch's own losses."""
    model, graphs = _model_and_graphs(_emt_frames(6))
    graphs[1].forces = torch.full_like(graphs[1].forces, float("nan"))  # a structure without forces
    config = TrainConfig(data={"generate": {}}, model=model.config, loss={"type": kind, "huber_delta": 0.05, "forces_weight": 10.0})
    module = PotentialModule(model, config)
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    for batch in DataLoader(graphs, batch_size=4):
        module.validation_step(batch, 0)
    module.on_validation_epoch_end()

    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    out = model(batch, forces=True)
    loss = torch.nn.functional.huber_loss if kind == "huber" else torch.nn.functional.mse_loss
    options = {"delta": 0.05} if kind == "huber" else {}
    num_atoms = torch.bincount(batch.batch).double()
    keep = torch.isfinite(batch.forces)
    expected = loss(out["energy"] / num_atoms, batch.energy / num_atoms, **options) + 10.0 * loss(out["forces"][keep], batch.forces[keep], **options)
    assert logged["val_loss"] == pytest.approx(float(expected), rel=1e-10)


def test_fine_tuning_starts_from_a_trained_model_refits_its_energies_and_keeps_frozen_layers(tmp_path, data_file, capsys):
    assert main(["train", str(_config(tmp_path / "base", data_file, trainer={"max_epochs": 1}))]) == 0
    pretrained_file = tmp_path / "base" / "run" / "model.pt"
    write(tmp_path / "new.extxyz", _emt_frames(16, seed=9))
    config = {
        "data": {"train": str(tmp_path / "new.extxyz"), "split": [10, 3, 3], "batch_size": 2},
        "model": {"init_from": str(pretrained_file), "freeze": 1},
        "loss": {"stage_two": None},
        "optimizer": {"lr": 0.002},
        "trainer": {"max_epochs": 4, "progress_bar": False, "accelerator": "cpu"},
        "output": str(tmp_path / "tuned"),
    }
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "tune.yaml")]) == 0
    pretrained, tuned = _state(pretrained_file), _state(tmp_path / "tuned" / "model.pt")
    assert torch.load(tmp_path / "tuned" / "model.pt", weights_only=True)["config"] == torch.load(pretrained_file, weights_only=True)["config"]
    for key, _ in load_model(pretrained_file).named_parameters():
        fixed = key.startswith("embedding.") or key.split(".")[1] == "0"  # the embedding and layer 0
        assert torch.equal(tuned[key], pretrained[key]) == fixed, key
    assert not torch.equal(tuned["atomic_energies"], pretrained["atomic_energies"]), "reference energies refitted"
    losses = [loss for _, loss in _validation_rows(tmp_path / "tuned" / "metrics.csv")]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_an_ensemble_trains_a_committee_that_evaluate_md_and_select_use(tmp_path, data_file, capsys):
    """trainer.ensemble: 2 trains two members differing only in seed and writes the committee
    file; evaluate reports the Spearman correlation of spread and error (checked against the
    calculator's own spread per structure); select picks the most uncertain distinct frames."""
    from scipy.stats import spearmanr

    config = _config(tmp_path, data_file, trainer={"max_epochs": 1, "ensemble": 2, "seed": 4})
    assert main(["train", str(config)]) == 0
    assert "committee of 2 written to" in capsys.readouterr().out
    run = tmp_path / "run"
    assert yaml.safe_load((run / "committee.yaml").read_text()) == {"format": "equinet-committee", "members": ["member_0/model.pt", "member_1/model.pt"]}
    seeds = [yaml.safe_load((run / f"member_{i}" / "config.yaml").read_text())["trainer"]["seed"] for i in range(2)]
    assert seeds == [4, 5]
    calculator = Calculator(run / "committee.yaml")
    assert len(calculator.models) == 2

    frames = read(data_file, ":")
    assert main(["evaluate", str(run / "committee.yaml"), str(data_file), "--output", str(tmp_path / "eval")]) == 0
    assert "Spearman correlation of force spread and force error over 24 structures" in capsys.readouterr().out
    committee = json.loads((tmp_path / "eval" / "metrics.json").read_text())["committee"]
    spread, error = [], []
    for atoms in frames:
        reference = atoms.get_forces()
        calculator.get_forces(atoms)
        spread.append(calculator.results["forces_std"].mean())
        error.append(np.sqrt(((calculator.results["forces"] - reference) ** 2).mean()))
    assert committee["spearman_force_spread_error"] == pytest.approx(spearmanr(spread, error).statistic, abs=1e-9)
    assert committee["mean_force_spread"] == pytest.approx(np.mean(spread), rel=1e-9)

    trajectory = [frames[0], frames[1], frames[1].copy(), frames[2]]  # frame 2 repeats frame 1
    write(tmp_path / "traj.extxyz", trajectory)
    assert main(["select", str(tmp_path / "traj.extxyz"), "--committee", str(run / "committee.yaml"), "-n", "3", "-o", str(tmp_path / "pick.extxyz")]) == 0
    picked = read(tmp_path / "pick.extxyz", ":")
    largest = []
    for atoms in trajectory:
        calculator.get_forces(atoms)
        largest.append(calculator.results["forces_std"].max())
    order = sorted(range(len(trajectory)), key=lambda i: -largest[i])  # stable: frame 1 before its repeat
    assert [a.info["source_frame"] for a in picked] == [i for i in order if i != 2][:3]
    assert picked[0].info["committee_force_std_max"] == pytest.approx(max(largest), rel=1e-9)


@pytest.mark.parametrize("family, dtype", [("nequip", "float64"), ("escn", "float64"), ("tensornet", "float32")])
def test_every_model_family_learns_from_generated_data(tmp_path, family, dtype):
    """A few epochs lower the validation force error of each family (MACE's: the fine-tuning
    tests), on data from ``data.generate`` as ``make demo`` trains, once in float32."""
    config = {
        "data": {"generate": {"name": "emt-alloys", "n": 24, "seed": 0}, "split": [16, 8, 0], "batch_size": 4},
        "model": {**SMALL[family], "dtype": dtype, "cutoff": 4.0},
        "loss": {"forces_weight": 10.0, "stage_two": None},
        "optimizer": {"lr": 0.02},
        "trainer": {"max_epochs": 6, "progress_bar": False, "accelerator": "cpu"},
        "output": str(tmp_path / "run"),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "config.yaml")]) == 0
    with open(tmp_path / "run" / "metrics.csv") as file:
        errors = [float(row["val_forces_mae_meV"]) for row in csv.DictReader(file) if row["val_forces_mae_meV"]]
    assert len(errors) == 6 and errors[-1] < 0.8 * errors[0], errors


def test_max_time_minutes_ends_training_and_writes_the_model(tmp_path, data_file):
    config = _config(tmp_path, data_file, trainer={"max_epochs": 500, "max_time_minutes": 0.1}, loss={"stage_two": None})
    assert main(["train", str(config)]) == 0
    with open(tmp_path / "run" / "metrics.csv") as file:
        epochs = {int(row["epoch"]) for row in csv.DictReader(file) if row["val_loss"]}
    assert 1 <= len(epochs) < 500  # stopped by the clock, after at least one validated epoch
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "run" / "test_metrics.json").is_file()
