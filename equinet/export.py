"""``equinet export``: a trained model as one self-contained graph for MD codes (LAMMPS).

The exported graph takes positions, species and a neighbour list made by the caller,
ghost atoms included, and returns what a pair style needs::

    forward(pos [N, 3] Å, species [N] int64 (index into the model's elements),
            edge_index [2, E] int64 (senders, receivers), num_local [] int64)
        -> energy [N] eV (atomic energies; zero for atoms >= num_local),
           forces [N, 3] eV/Å, virial [6] eV

Only the first ``num_local`` atoms' energies count: ``forces`` are minus the gradient of
their sum on every atom, ghosts included, for the caller to add onto the ghosts' owners
(LAMMPS's reverse communication with newton on). The virial is
``W = -sum over edges of r_ij ⊗ dE/dr_ij`` in LAMMPS's order xx, yy, zz, xy, xz, yz
(ASE's stress is ``-W / volume``). An atom's energy depends on atoms up to
``message_passing_steps`` cutoffs away, so a caller with ghost atoms needs ghosts that far
out, with their own neighbours.

The model and its autograd backward are traced together into one graph of plain tensor
operations (``make_fx`` with symbolic sizes) and saved as TorchScript, which libtorch
loads from C++ without Python. The file carries ``equinet.json``: elements, cutoff,
message-passing steps, dtype, equinet version.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from equinet.potentials import Potential

__all__ = ["ExportedForces", "export_model", "load_exported", "METADATA_FILE"]

METADATA_FILE = "equinet.json"


class ExportedForces(torch.nn.Module):
    """Energies of the local atoms, forces on all atoms and the virial from a neighbour
    list (the signature in the module docstring); plain PyTorch, the reference that the
    exported graph is checked against."""

    def __init__(self, model: Potential):
        super().__init__()
        self.model = model

    def forward(self, pos: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor, num_local: torch.Tensor):
        sender, receiver = edge_index[0], edge_index[1]
        edge_vec = (pos[receiver] - pos[sender]).detach().requires_grad_(True)
        local = torch.arange(pos.shape[0], device=pos.device) < num_local
        energy = self.model.node_energies(species, edge_vec, edge_index) * local.to(pos.dtype)
        (grad,) = torch.autograd.grad(energy.sum(), edge_vec)
        forces = torch.zeros_like(pos).index_add(0, sender, grad).index_add(0, receiver, -grad)
        w = -edge_vec.detach().T @ grad
        w = 0.5 * (w + w.T)
        virial = torch.stack([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])
        return energy.detach(), forces, virial


def _example_inputs(model: Potential, num_atoms: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """A random cluster of every element with its neighbour list (all pairs within the
    cutoff) and a few trailing atoms counted as ghosts."""
    generator = torch.Generator().manual_seed(seed)
    side = model.cutoff * (num_atoms / 3) ** (1 / 3)  # 3 atoms per cutoff^3: about a dozen neighbours
    pos = torch.rand(num_atoms, 3, generator=generator, dtype=torch.float64) * side
    species = torch.arange(num_atoms) % model.num_elements
    neighbours = ((pos[:, None] - pos[None]).norm(dim=-1) < model.cutoff) & ~torch.eye(num_atoms, dtype=torch.bool)
    sender, receiver = neighbours.nonzero().T
    num_local = torch.tensor(num_atoms - num_atoms // 4)
    return pos.to(dtype), species, torch.stack([sender, receiver]), num_local


def _trace(module: ExportedForces, dtype: torch.dtype) -> torch.jit.ScriptModule:
    inputs = _example_inputs(module.model, 24, 0, dtype)
    module(*inputs)  # fills lazily built constants outside tracing
    # The model's parameters stay real tensors in the graph (constants of the trace).
    graph = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
    for node in graph.graph.nodes:  # TorchScript calls operators by name, not by overload
        if isinstance(node.target, torch._ops.OpOverload):
            node.target = node.target.overloadpacket
    graph.recompile()
    return torch.jit.script(graph)


def export_model(model: Potential, path: str | Path, dtype: torch.dtype | None = None) -> dict:
    """Write ``model`` as a TorchScript graph for MD codes to ``path``; returns its metadata.

    The graph is checked against the model on structures of other sizes than the one it
    was traced on (a ``RuntimeError`` if they differ).
    """
    from equinet import __version__

    dtype = dtype or model.atomic_energies.dtype
    model = copy.deepcopy(model).to(dtype).eval()  # the caller's model keeps its dtype
    reference = ExportedForces(model)
    exported = _trace(reference, dtype)
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    for num_atoms, seed in ((37, 1), (5, 2)):
        inputs = _example_inputs(model, num_atoms, seed, dtype)
        for name, expected, got in zip(("energy", "forces", "virial"), reference(*inputs), exported(*inputs)):
            if not torch.allclose(got, expected, rtol=tolerance, atol=tolerance):
                raise RuntimeError(f"the exported graph's {name} differs from the model's on {num_atoms} atoms: report this as a bug")
    metadata = {
        "format": "equinet-lammps",
        "equinet_version": __version__,
        "model": model.config["name"],
        "elements": model.elements,
        "cutoff": model.cutoff,
        "message_passing_steps": model.message_passing_steps,
        "dtype": str(dtype).removeprefix("torch."),
    }
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, but libtorch loads it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(exported, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return metadata


def load_exported(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    """An exported graph and its metadata."""
    files = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = torch.jit.load(str(path), _extra_files=files)
    return graph, json.loads(files[METADATA_FILE])
