"""Backends chosen when a model is run: ``equinet.accelerate``, the registry it asks, and
model files and configs from when backends were hyper-parameters."""

import sys

import pytest
import torch
from e3nn import o3
from ase.build import bulk
from torch_geometric.data import Batch

import equinet
from equinet import load_model, save_model
from equinet.datasets import atoms_to_graph
from equinet.model_io import model_to_dict
from equinet.ops import CGConvolution, SO2Convolution, SymmetricContraction
from equinet.ops.kernels import BACKENDS, backend_names, choose_backend, unavailable
from equinet.potentials import build_model
from small_models import CUTOFF, SMALL, STATISTICS


def _model(variant):
    torch.manual_seed(0)
    return build_model({"dtype": "float64", "cutoff": CUTOFF, **SMALL[variant]}, STATISTICS).eval()


def _batch():
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.symbols[1] = "Ni"
    atoms.rattle(0.1, seed=1)
    return Batch.from_data_list([atoms_to_graph(atoms, CUTOFF, dtype=torch.float64)])


def test_every_family_lists_the_reference_first():
    assert set(BACKENDS) == {"cg", "so2", "gaunt", "gaunt_many_body", "symmetric_contraction"}
    assert all(backend_names(family)[0] == "torch" for family in BACKENDS)
    assert unavailable("torch") is None and unavailable("e3nn") is None


def test_auto_is_the_reference_on_a_gpu_and_for_families_without_cpu_kernels():
    assert choose_backend("so2", "cuda") == "torch"
    assert choose_backend("cg", "cpu") == "torch"
    assert choose_backend("so2", "cpu") == ("cpp" if unavailable("cpp") is None else "torch")


def test_accelerate_swaps_in_place_and_shares_the_weights(float64):
    pytest.importorskip("ninja")
    batch = _batch()
    model = _model("escn")
    expected = model(batch)
    weights = dict(model.named_parameters())
    assert equinet.accelerate(model, conv="cpp") is model
    assert {m.backend for m in model.modules() if isinstance(m, SO2Convolution)} == {"cpp"}
    assert dict(model.named_parameters()) == weights and "conv_backend" not in model.config
    got = model(batch)
    for key in ("energy", "forces"):
        torch.testing.assert_close(got[key], expected[key], atol=1e-10, rtol=0)
    equinet.accelerate(model, conv="torch")
    assert {m.backend for m in model.modules() if isinstance(m, SO2Convolution)} == {"torch"}


def test_a_model_file_with_backend_keys_loads_with_them_as_a_request(tmp_path, float64):
    # As files were written when the backends were hyper-parameters of the model.
    model = _model("mace")
    data = model_to_dict(model)
    data["config"] = {**data["config"], "conv_backend": "e3nn", "product_backend": "torch"}
    torch.save(data, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert "conv_backend" not in loaded.config and "product_backend" not in loaded.config
    assert {m.backend for m in loaded.modules() if isinstance(m, CGConvolution)} == {"e3nn"}
    batch = _batch()
    torch.testing.assert_close(loaded(batch)["forces"], model(batch)["forces"], atol=1e-10, rtol=0)
    save_model(loaded, tmp_path / "again.pt")  # written without the request
    assert "conv_backend" not in torch.load(tmp_path / "again.pt", weights_only=True)["config"]


# Where the optional packages are missing is where these messages matter: no importorskip.
SH2 = o3.Irreps.spherical_harmonics(2)


def test_missing_cuequivariance_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuequivariance_torch", None)  # `import cuequivariance_torch` raises ImportError
    message = r"^backend='cueq' needs cuEquivariance: pip install 'equinet\[cueq\]'"
    with pytest.raises(ImportError, match=message):
        CGConvolution("2x0e", SH2, backend="cueq")
    with pytest.raises(ImportError, match=message):
        SymmetricContraction("2x0e+2x1o", "2x0e", 2, 1, backend="cueq")


def test_missing_triton_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` raises ImportError
    with pytest.raises(ImportError, match=r"^backend='triton' needs the triton package: pip install triton"):
        CGConvolution("2x0e", SH2, backend="triton")
