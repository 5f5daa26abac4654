"""``equinet export``: a trained model as one self-contained graph for MD codes (LAMMPS).

The exported graph takes the caller's neighbour list as edge vectors, with the atoms it
connects, and returns what a pair style needs::

    forward(edge_vec [E, 3] Å (pos[receiver] - pos[sender]), species [N] int64 (index
            into the exported elements), edge_index [2, E] int64 (senders, receivers),
            num_local [] int64)
        -> energy [N] eV (atomic energies; zero for atoms >= num_local),
           forces [N, 3] eV/Å, virial [6] eV

Only the first ``num_local`` atoms' energies count: ``forces`` are minus the gradient of
their sum on every atom of the graph, for the caller to add onto the atoms' owners
(LAMMPS's reverse communication with newton on). The virial is
``W = -sum over edges of r_ij ⊗ dE/dr_ij`` in LAMMPS's order xx, yy, zz, xy, xz, yz
(ASE's stress is ``-W / volume``). Edge vectors rather than positions let a periodic
image of a local atom be that atom itself (the sender index of the local atom, the edge
vector of the image): then the graph is the periodic structure's, with no ghost atoms.
Atoms owned by other MPI ranks stay separate atoms of the graph; an atom's energy depends
on atoms up to ``message_passing_steps`` edges away, so those need their own incoming
edges up to ``message_passing_steps - 1`` edges out from the local atoms.

A committee (several models with the same elements and cutoff, :mod:`equinet.committee`)
exports as one graph that runs every member and returns their means, and each member's
forces for the caller's uncertainty::

        -> energy [N], forces [N, 3], virial [6] (the members' means), member_forces [M, N, 3]

The per-atom force spread is not computed in the graph: an atom's force is summed over the
graph atoms that stand for it (the other ranks' ghosts) by the caller first, and the spread
of a sum is not the sum of the spreads; the caller adds each member's forces onto their
owners, then takes the spread (LAMMPS: ``fix pair ... equinet forces_std 0``).

The model and its autograd backward are traced together into one graph of plain tensor
operations (``make_fx`` with symbolic sizes) and saved as TorchScript (``.pt``) or
compiled ahead of time by AOTInductor (``.pt2``); libtorch runs either from C++ without
Python. The file carries ``equinet.json``: elements, cutoff, message-passing steps (a
committee's largest), number of members (1: one model), dtype, blocks (edges and atoms per
block, or none), equinet version. A graph may hold only some of the model's elements (a foundation model knows 89;
a simulation needs a few): its size and compile time grow with them.

For large systems the graph can compute its edges' messages in blocks of a fixed number of
edges, and its heavy per-atom steps (MACE's products, TensorNet's updates, eSCN's S2
activation) in blocks of atoms, sized from a memory budget as the calculator's are
(``max_memory_gb``): each blocked step is a loop of the graph that runs as many blocks as
the structure needs (:mod:`equinet.potentials.looped`), with each block's forward recomputed
in the backward, so per-edge intermediates exist for one block at a time whatever the number
of atoms. Their sizes are attributes ``size`` of the graph's submodules ``edge_blocks_<i>``
(edges) and ``atom_blocks_<i>`` (atoms), and in ``equinet.json``.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from equinet.committee import check_members
from equinet.files import atomic_write
from equinet.ops import SymmetricContraction
from equinet.potentials import Potential, accelerate
from equinet.potentials import looped

__all__ = ["ExportedCommittee", "ExportedForces", "export_model", "load_exported", "FORMATS", "METADATA_FILE"]

FORMATS = ("torchscript", "aotinductor")
METADATA_FILE = "equinet.json"


class ExportedForces(torch.nn.Module):
    """Energies of the local atoms, forces on all atoms and the virial from a neighbour
    list (the signature in the module docstring); plain PyTorch, the reference that the
    exported graph is checked against.

    Args:
        model: the model, or for export a copy prepared by :func:`traceable_copy`.
        species: the model's species index of each exported element, ``[S]``; ``None``:
            every element of the model, in its order.
    """

    def __init__(self, model: Potential, species: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("model_species", torch.arange(model.num_elements) if species is None else species)

    def forward(self, edge_vec: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor, num_local: torch.Tensor):
        sender, receiver = edge_index[0], edge_index[1]
        edge_vec = edge_vec.detach().requires_grad_(True)
        local = torch.arange(species.shape[0], device=species.device) < num_local
        energy = self.model.node_energies(self.model_species[species], edge_vec, edge_index) * local.to(edge_vec.dtype)
        (grad,) = torch.autograd.grad(energy.sum(), edge_vec)
        forces = grad.new_zeros(species.shape[0], 3).index_add(0, sender, grad).index_add(0, receiver, -grad)
        w = -edge_vec.detach().T @ grad
        w = 0.5 * (w + w.T)
        virial = torch.stack([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])
        return energy.detach(), forces, virial


class ExportedCommittee(torch.nn.Module):
    """The members' mean energies, forces and virial, and each member's forces
    ``member_forces [M, N, 3]`` eV/Å (the signature in the module docstring): the reference
    for a committee's exported graph. ``species`` as for :class:`ExportedForces`."""

    def __init__(self, models: Sequence[Potential], species: torch.Tensor | None = None):
        super().__init__()
        self.members = torch.nn.ModuleList(ExportedForces(model, species) for model in models)

    def forward(self, edge_vec: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor, num_local: torch.Tensor):
        energies, forces, virials = zip(*(member(edge_vec, species, edge_index, num_local) for member in self.members))
        member_forces = torch.stack(forces)
        return torch.stack(energies).mean(0), member_forces.mean(0), torch.stack(virials).mean(0), member_forces


def traceable_copy(model: Potential, species: list[int], dtype: torch.dtype) -> Potential:
    """A copy of ``model`` in ``dtype`` whose sizes do not depend on the data, for the
    elements of species indices ``species``: its operators run the PyTorch reference (the
    triton, cueq and cpp kernels are not part of libtorch, and the backends share the
    weights), the many-body products run those elements whatever the structure holds, the
    learned energies of isolated atoms are taken into the reference energies (the same
    energies, without running isolated atoms through the model at every step), and its
    weights do not require grad."""
    model = accelerate(copy.deepcopy(model), conv="torch", product="torch").to(dtype).eval()
    # Weights that require grad become graph constants that do: a caller in grad mode (the
    # LAMMPS plugin) would then record autograd history and keep every intermediate alive.
    model.requires_grad_(False)
    if not model.isolated_energy_is_zero:
        chosen = torch.tensor(species)
        with torch.no_grad():
            model.atomic_energies[chosen] -= model.scale * model.isolated_terms(chosen)
        model.isolated_energy_is_zero = True
    for module in model.modules():
        if isinstance(module, SymmetricContraction):  # per element of the model, or element-agnostic
            module.traced_elements = list(species) if module.num_elements == model.num_elements else list(range(module.num_elements))
    return model


def _example_inputs(num_elements: int, cutoff: float, num_atoms: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """A random cluster of ``num_elements`` exported elements with its neighbour list (all
    pairs within ``cutoff``, Å) and a few trailing atoms counted as ghosts."""
    generator = torch.Generator().manual_seed(seed)
    side = cutoff * (num_atoms / 3) ** (1 / 3)  # 3 atoms per cutoff^3: about a dozen neighbours
    pos = torch.rand(num_atoms, 3, generator=generator, dtype=torch.float64) * side
    species = torch.arange(num_atoms) % num_elements
    neighbours = ((pos[:, None] - pos[None]).norm(dim=-1) < cutoff) & ~torch.eye(num_atoms, dtype=torch.bool)
    sender, receiver = neighbours.nonzero().T
    num_local = torch.tensor(num_atoms - num_atoms // 4)
    return (pos[receiver] - pos[sender]).to(dtype), species, torch.stack([sender, receiver]), num_local


def _trace(module: ExportedForces | ExportedCommittee, inputs: tuple[torch.Tensor, ...], blocks: looped.Looped | None) -> torch.fx.GraphModule:
    """The forward and backward as one graph of aten operations, with symbolic sizes; with
    ``blocks``, their blocked steps as loops (:mod:`equinet.potentials.looped`)."""
    module(*inputs)  # fills lazily built constants outside tracing
    # The model's parameters stay real tensors in the graph (constants of the trace).
    trace = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)
    if blocks is None:
        return trace(*inputs)
    models = [submodule for submodule in module.modules() if isinstance(submodule, Potential)]
    for model in models:
        model._edge_block = blocks
    try:
        with looped.recording() as recorder:
            module(*inputs)  # traces each blocked step on its own
            recorder.tracing = True
            graph = trace(*inputs)
    finally:
        for model in models:
            model._edge_block = None
    return looped.as_loops(graph, recorder)


def _save_torchscript(graph: torch.fx.GraphModule, path: Path, metadata: dict) -> None:
    for module in graph.modules():  # with the blocks' graphs
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:  # TorchScript calls operators by name, not by overload
                if isinstance(node.target, torch._ops.OpOverload):
                    node.target = node.target.overloadpacket
            module.recompile()
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, but libtorch loads it
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "The TorchScript type system doesn't support instance-level annotations")  # torch.fx's own GraphModule
        torch.jit.save(torch.jit.script(graph), str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})


def _outer_products_as_products(graph: torch.fx.GraphModule) -> None:
    """Writes every ``mm`` of an ``[n, 1]`` by a ``[1, m]`` matrix (e.g. the backward of a
    readout to one energy) as the broadcast product it is. Inductor rewrites small ones so
    itself, but decides "small" on the traced sizes and so limits the compiled graph to
    sizes near them (torch 2.13)."""
    for node in graph.graph.nodes:
        if node.target is torch.ops.aten.mm.default:
            inner = node.args[0].meta["val"].shape[-1]
            if isinstance(inner, int) and inner == 1:  # a size known when traced, not a symbol
                node.target = torch.ops.aten.mul.Tensor
    graph.recompile()


def _save_aotinductor(graph: torch.fx.GraphModule, inputs: tuple[torch.Tensor, ...], path: Path, metadata: dict) -> None:
    """Compiles the graph to C++ for this machine's CPU (AOTInductor), any numbers of
    atoms and edges, zero included."""
    _outer_products_as_products(graph)
    num_atoms, num_edges = torch.export.Dim("num_atoms", min=0), torch.export.Dim("num_edges", min=0)
    program = torch.export.export(graph, inputs, dynamic_shapes=({0: num_edges}, {0: num_atoms}, {1: num_edges}, None), strict=False)
    options = {"aot_inductor.metadata": {METADATA_FILE: json.dumps(metadata)}}
    torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=options)


def export_model(
    model: Potential | Sequence[Potential],
    path: str | Path,
    dtype: torch.dtype | None = None,
    format: str | None = None,
    elements: list[int] | None = None,
    max_memory_gb: float | None = None,
) -> dict:
    """Write ``model``, or the committee of a list of models, as one graph for MD codes to
    ``path``; returns its metadata.

    Args:
        model: one model, or several with the same elements and cutoff (a committee: the
            graph returns their mean and each member's forces; see the module docstring).
        format: ``"torchscript"`` (a ``.pt`` file, written in seconds) or ``"aotinductor"``
            (a ``.pt2`` package compiled ahead of time to C++ for this machine's CPU:
            minutes to write); by default, aotinductor for a ``.pt2`` path.
        dtype: the graph's precision; by default the (first) model's.
        elements: atomic numbers of the elements the graph takes (a subset of the model's,
            in this order); ``None``: all of the model's.
        max_memory_gb: memory for the blocks of edges and atoms, in GiB, as the
            calculator's (:meth:`~equinet.potentials.Potential.set_memory_budget`): the
            graph computes its edges and heavy per-atom steps block by block, each block
            recomputed in the backward, so that large systems run in bounded memory;
            ``None``: all at once (fastest for small systems). TorchScript only.

    The written file is loaded back and checked against the model on structures of other
    sizes than the one it was traced on (a ``RuntimeError`` if they differ). Only the energy
    and its derivatives are exported; a model without ``energy`` in its outputs is refused,
    and so is one that reads each structure's total charge or spin (the graph takes none).
    """
    from equinet import __version__

    models = list(model) if isinstance(model, Sequence) else [model]
    if not models:
        raise ValueError("an empty committee: give at least one model to export")
    for member in models:
        if "energy" not in member.outputs:
            raise ValueError(f"the model predicts {', '.join(member.outputs)}, not energies (model.outputs): there is nothing for an MD code to run")
        if member.structure_inputs:
            raise ValueError(
                f"the model reads each structure's {' and '.join(member.structure_inputs)} (a charge or spin embedding, as MACE-OMOL-0's), "
                "which the exported graph has no input for yet; run it through equinet.Calculator instead"
            )
    check_members(models)
    path = Path(path)
    format = format or ("aotinductor" if path.suffix == ".pt2" else "torchscript")
    if format not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {format!r}")
    if (path.suffix == ".pt2") != (format == "aotinductor"):
        raise ValueError(f"{path}: an exported model is a .pt2 file for format aotinductor and not .pt2 for torchscript (LAMMPS tells them apart by the suffix)")
    first = models[0]
    elements = list(first.elements) if elements is None else [int(z) for z in elements]
    if not elements or len(set(elements)) != len(elements) or not set(elements) <= set(first.elements):
        raise ValueError(f"elements {elements}: give distinct atomic numbers from the model's ({', '.join(map(str, first.elements))})")
    species = [first.elements.index(z) for z in elements]
    if max_memory_gb is not None and format == "aotinductor":  # torch.export takes no TorchScript loop
        raise ValueError(f"{path}: a graph in blocks (max_memory_gb) exports as TorchScript (a .pt file) only, not AOTInductor")
    dtype = dtype or first.atomic_energies.dtype
    models = [traceable_copy(member, species, dtype) for member in models]  # copies: the caller's models are unchanged
    blocks = None if max_memory_gb is None else _block_sizes(models, max_memory_gb)
    metadata = {
        "format": "equinet-lammps",
        "equinet_version": __version__,
        "model": ", ".join(dict.fromkeys(member.config["name"] for member in models)),
        "elements": elements,
        "cutoff": first.cutoff,
        # Members may see different distances; the caller's ghost atoms must reach the farthest.
        "message_passing_steps": max(member.message_passing_steps for member in models),
        "members": len(models),
        "dtype": str(dtype).removeprefix("torch."),
        "blocks": None if blocks is None else blocks._asdict(),
    }
    exported_species = torch.tensor(species)
    reference = ExportedForces(models[0], exported_species) if len(models) == 1 else ExportedCommittee(models, exported_species)
    outputs = ("energy", "forces", "virial", "member forces")
    inputs = _example_inputs(len(species), first.cutoff, 24, 0, dtype)
    graph = _trace(reference, inputs, blocks)
    with atomic_write(path) as partial:  # only a checked graph reaches ``path``
        if format == "aotinductor":
            _save_aotinductor(graph, inputs, partial, metadata)
        else:
            _save_torchscript(graph, partial, metadata)
        exported, _ = load_exported(partial)
        tolerance = 1e-9 if dtype == torch.float64 else 1e-4
        # Sizes other than the traced 24, down to one atom; with blocks, also in blocks of a
        # few edges and atoms, to run the loops over many.
        checks = [(37, 1, blocks), (5, 2, blocks), (1, 3, blocks)]
        if blocks is not None:
            checks += [(37, 4, looped.Looped(50, 7)), (5, 5, looped.Looped(50, 7))]
        for num_atoms, seed, sizes in checks:
            if sizes is not None:
                looped.set_block_sizes(exported, sizes)
            inputs = _example_inputs(len(species), first.cutoff, num_atoms, seed, dtype)
            for name, expected, got in zip(outputs, reference(*inputs), exported(*inputs)):
                if not torch.allclose(got, expected, rtol=tolerance, atol=tolerance):
                    raise RuntimeError(f"the exported graph's {name} differs from the model's on {num_atoms} atoms: report this as a bug")
    return metadata


def _block_sizes(models: list[Potential], gigabytes: float) -> looped.Looped:
    """Edges and atoms per block for ``gigabytes``: the smallest a member asks for."""
    edges, atoms = [], []
    for model in models:
        edges.append(model.set_memory_budget(gigabytes))
        atoms.append(model.atom_block_size)
    edges, atoms = [size for size in edges if size is not None], [size for size in atoms if size is not None]
    return looped.Looped(min(edges) if edges else 2**31 - 1, min(atoms) if atoms else None)


def load_exported(path: str | Path) -> tuple[Callable, dict]:
    """An exported graph (TorchScript, or AOTInductor for a ``.pt2`` file) and its metadata."""
    if Path(path).suffix == ".pt2":
        compiled = torch._inductor.aoti_load_package(str(path))
        return compiled, json.loads(compiled.get_metadata()[METADATA_FILE])
    files = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = torch.jit.load(str(path), _extra_files=files)
    return graph, json.loads(files[METADATA_FILE])
