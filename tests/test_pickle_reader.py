"""equinet.foreign.pickle_reader: torch.save files read into records, nothing in them run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from equinet.foreign.pickle_reader import Record, read_torch_pickle

MACE_DATA = Path(__file__).parent / "data" / "mace"


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_mace_files_read_into_records_with_their_weights():
    model = read_torch_pickle(MACE_DATA / "mp0.model")
    assert isinstance(model, Record) and model.qualname == "mace.modules.models.ScaleShiftMACE"
    assert "mace" not in sys.modules
    tensors = model.tensors()
    assert tensors["atomic_energies_fn.atomic_energies"].shape == (4,)
    assert tensors["atomic_energies_fn.atomic_energies"].dtype == torch.float64
    assert tensors["interactions.0.conv_tp_weights.layer0.weight"].shape == (6, 8)
    assert tensors["products.0.symmetric_contractions.contractions.1.U_matrix_3"].shape == (3, 4, 4, 4, 6)
    assert tensors["products.0.symmetric_contractions.contractions.1.weights_max"].shape == (4, 6, 3)
    interaction = model.get("interactions").children()["1"]
    assert interaction.name == "RealAgnosticResidualInteractionBlock"
    assert interaction.get("avg_num_neighbors") == 7.5
    irreps = interaction.get("node_feats_irreps")
    assert irreps.qualname == "e3nn.o3._irreps.Irreps" and isinstance(irreps.args[0], tuple)
    for name, first in (("off", "RealAgnosticInteractionBlock"), ("plain", "RealAgnosticInteractionBlock")):
        assert read_torch_pickle(MACE_DATA / f"{name}.model").get("interactions").children()["0"].name == first


def test_a_torch_module_reads_as_a_record_of_its_state(tmp_path):
    linear = torch.nn.Linear(3, 2).double()
    torch.save(linear, tmp_path / "linear.pt")
    record = read_torch_pickle(tmp_path / "linear.pt")
    assert record.qualname == "torch.nn.modules.linear.Linear"
    assert torch.equal(record.tensors()["weight"], linear.weight.detach())
    assert record.get("in_features") == 3


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": _Exploit(marker)}, tmp_path / "evil.model")
    with pytest.raises(ValueError) as error:
        read_torch_pickle(tmp_path / "evil.model")
    message = str(error.value)
    assert "\n" not in message and "system" in message and "refused" in message
    assert not marker.exists()


def test_truncated_and_foreign_files_get_one_line(tmp_path):
    data = (MACE_DATA / "off.model").read_bytes()
    (tmp_path / "truncated.model").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.model").write_text("not a model\n")
    for name in ("truncated.model", "text.model"):
        with pytest.raises(ValueError) as error:
            read_torch_pickle(tmp_path / name)
        assert str(error.value).startswith(str(tmp_path / name)) and "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError):
        read_torch_pickle(tmp_path / "missing.model")
