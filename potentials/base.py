"""The base every equinet potential stands on.

:class:`Potential` owns what all models share: the elements and their one-hot
encoding, per-element reference energies, the energy scale and shift, the cutoff, the
edge vectors (recomputed from ``pos``, ``cell`` and ``edge_shift`` so that forces and
stress flow through autograd) and the outputs. A concrete model only defines
:meth:`Potential.node_energy_terms`: its interaction blocks and readout.

Models that read out tensorial outputs (``outputs: [energy, dipole, polarizability]``)
define :meth:`Potential.node_terms_and_features` instead, which also returns the node
features that :class:`~.heads.TensorialHeads` reads.

A model may read per-structure inputs besides the geometry (:attr:`Potential.structure_inputs`:
the batch fields ``total_charge`` and ``total_spin``); the base hands them to it per atom.

The energy of atom i of element z is

    E_i = E0[z] + shift + scale * (f_i - f_isolated[z])

with ``f`` the learned part. ``f_isolated[z]`` is the learned part of an atom with no
neighbours, so an isolated atom has exactly its reference energy ``E0[z] + shift``;
models whose learned part vanishes without neighbours (MACE) skip that subtraction.
"""

from __future__ import annotations

import torch

from .looped import Looped
from .charge_spin import STRUCTURE_DEFAULTS
from .heads import check_outputs

__all__ = ["Potential"]

NUM_ELEMENTS_TABLE = 119  # atomic numbers 0..118


def _per_structure(batch, key: str, num_graphs: int, like: torch.Tensor) -> torch.Tensor:
    """Batch field ``key`` (``total_charge``, ``total_spin``) ``[B]`` in the dtype of ``like``;
    its default for every structure where the batch lacks it."""
    value = getattr(batch, key, None)
    return like.new_full((num_graphs,), STRUCTURE_DEFAULTS[key]) if value is None else value.view(-1).to(like.dtype)


def _symbols(numbers) -> str:
    # Atomic numbers, not symbols: potentials do not import ASE; the calculator and the
    # data checks name elements by symbol before a model ever sees them.
    return ", ".join(f"Z={int(z)}" for z in numbers)


class Potential(torch.nn.Module):
    """Base class of the GNN potentials: species, reference energies, scale/shift, outputs.

    Args:
        statistics: data-set statistics (:func:`equinet.datasets.compute_statistics`):
            ``elements``, ``atomic_energies`` ({Z: eV}), ``avg_num_neighbors``,
            ``force_rms`` (eV/Å) and ``energy_per_atom_mean`` (eV).
        cutoff: neighbour cutoff in Å.
        scale: energy scale in eV, or ``"force_rms"`` for the RMS force of the data
            times 1 Å (MACE's default), making the learned part of order one.
        shift: per-atom energy shift in eV, or ``"energy_per_atom_mean"`` for the mean
            residual energy per atom after the references.
        outputs: what the model predicts, among ``energy``, ``dipole`` and
            ``polarizability`` (:mod:`.heads`); the families with equivariant features
            (MACE, NequIP, eSCN) have the tensorial ones.

    Outputs of ``model(batch, forces=True, stress=False)``: ``energy [B]`` (eV),
    ``node_energy [n]`` (eV), ``forces [n, 3]`` (eV/Å, −∂E/∂pos) and ``stress [B, 3, 3]``
    (eV/Å³, ASE sign: (1/V) ∂E/∂strain; NaN for structures that are not periodic); with the
    heads, ``dipole [B, 3]`` (e·Å), ``charges [n]`` (e) and ``polarizability [B, 3, 3]`` (Å³).
    A model without ``energy`` in its outputs returns none of the energy outputs.
    """

    #: True where the learned part is exactly zero for an atom without neighbours.
    isolated_energy_is_zero: bool = False
    #: Adam's learning rate in `equinet train` when ``optimizer.lr`` is not given: the value
    #: that trained the family best in ``scripts/bench_accuracy.py`` (BENCHMARKS.md).
    default_lr: float = 0.01
    #: The operator families (``equinet.ops.kernels``) of each role that :func:`equinet.accelerate`
    #: switches; a config may request a backend per role (``conv_backend: triton``), which is
    #: applied when the model is built and not stored in it.
    backend_families: dict[str, tuple[str, ...]] = {}
    #: Edges per block when energies and forces are computed without a graph for training
    #: (``create_graph=False``: the calculator, MD, evaluation): per-edge intermediates then
    #: exist for one block at a time (:func:`.blocks.summed_over_edge_blocks`). ``None``: all
    #: edges at once. Not saved with the model; :meth:`set_memory_budget` chooses it.
    edge_block_size: int | None = None
    #: edge_block_size during such a call, else None; in a graph traced for export, the
    #: sizes of the blocks its loops take (:class:`.looped.Looped`).
    _edge_block: int | Looped | None = None
    #: Atoms per block of the per-atom work whose intermediates dwarf the features (MACE's
    #: many-body product, TensorNet's tensor updates, eSCN's S2 activation) in such calls
    #: on edge blocks (:func:`.blocks.over_node_blocks`); ``None``: all atoms at once. Set
    #: by :meth:`set_memory_budget` where a model has such work.
    atom_block_size: int | None = None
    #: The per-structure inputs the model reads besides the geometry: batch fields among
    #: ``total_charge`` (e) and ``total_spin`` (spin multiplicity 2S+1), handed to
    #: :meth:`node_energy_terms` per atom; a batch without one gives its default (0, 1).
    structure_inputs: tuple[str, ...] = ()

    @classmethod
    def check_backend_requests(cls, config: dict, requests: dict[str, str]) -> None:
        """A one-line ValueError for a requested backend (``{role: backend}``) that the model
        that ``config`` describes cannot run; none here."""

    def __init__(
        self, statistics: dict, cutoff: float = 5.0, scale: float | str = "force_rms", shift: float | str = 0.0, outputs=("energy",)
    ):
        super().__init__()
        self.outputs = check_outputs(outputs)
        self.heads = None  # a TensorialHeads, built by the models that have them
        if not cutoff > 0:
            raise ValueError(f"cutoff must be a positive distance in Å, got {cutoff!r}")
        self.cutoff = float(cutoff)
        self.statistics = statistics
        self.elements = [int(z) for z in statistics["elements"]]
        if not self.elements:
            raise ValueError("statistics['elements'] is empty: the model needs at least one element")
        self.num_elements = len(self.elements)
        self.avg_num_neighbors = float(statistics.get("avg_num_neighbors", 1.0)) or 1.0

        table = torch.full((NUM_ELEMENTS_TABLE,), -1, dtype=torch.long)
        table[self.elements] = torch.arange(self.num_elements)
        self.register_buffer("species_of_z", table, persistent=False)
        energies = statistics.get("atomic_energies", {})
        missing = [z for z in self.elements if z not in energies]
        if missing:
            raise ValueError(f"statistics['atomic_energies'] has no reference energy for {_symbols(missing)}")
        self.register_buffer("atomic_energies", torch.tensor([energies[z] for z in self.elements], dtype=torch.get_default_dtype()))
        self.register_buffer("scale", torch.tensor(self._from_statistics(scale, "scale", "force_rms")))
        self.register_buffer("shift", torch.tensor(self._from_statistics(shift, "shift", "energy_per_atom_mean")))

    def _from_statistics(self, value: float | str, name: str, statistic: str) -> float:
        """``value`` itself, or the data statistic it names."""
        if not isinstance(value, str):
            return float(value)
        if value != statistic:
            raise ValueError(f"model.{name} must be a number or '{statistic}', got {value!r}")
        value = float(self.statistics.get(statistic, 0.0))
        return value if name != "scale" or value > 0 else 1.0  # no forces in the data: unit scale

    # ------------------------------------------------------------------ to implement

    def node_energy_terms(self, species: torch.Tensor, edge_vec: torch.Tensor, edge_index: torch.Tensor, **structure_inputs: torch.Tensor) -> torch.Tensor:
        """The learned part of the atomic energies.

        Args:
            species: ``[n]`` element index 0..num_elements-1 (into ``self.elements``).
            edge_vec: ``[E, 3]`` vector from sender to receiver in Å (differentiable).
            edge_index: ``[2, E]`` senders (row 0) and receivers (row 1).
            structure_inputs: the model's :attr:`structure_inputs`, each ``[n]``: the value of
                each atom's structure; one not given: its default for every atom.

        Returns:
            ``[n]`` dimensionless energies, scaled by ``scale`` into eV.
        """
        return self.node_terms_and_features(species, edge_vec, edge_index, **structure_inputs)[0]

    def node_terms_and_features(
        self, species: torch.Tensor, edge_vec: torch.Tensor, edge_index: torch.Tensor, **structure_inputs: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`node_energy_terms` and the node features the tensorial heads read (one
        tensor per layer read out; see :class:`~.heads.TensorialHeads`). A model defines
        one of the two."""
        raise NotImplementedError

    def edge_bytes(self) -> int | None:
        """Bytes of per-edge intermediates per edge of a block (forward and recomputed
        backward), to size blocks from a memory budget; ``None`` where the model does not
        process its edges in blocks."""
        return None

    def _atom_blocks(self) -> int | Looped | None:
        """The blocks of this call's heavy per-atom work (:func:`.blocks.over_node_blocks`):
        the loops' sizes in a graph traced for export, :attr:`atom_block_size` atoms in other
        calls on edge blocks, else ``None`` (all atoms at once)."""
        if self._edge_block is None or isinstance(self._edge_block, Looped):
            return self._edge_block
        return self.atom_block_size

    def set_memory_budget(self, gigabytes: float) -> int | None:
        """Choose :attr:`edge_block_size` so that a block's per-edge intermediates take about
        half of ``gigabytes`` (the rest is left to per-atom tensors); returns it (``None``
        where the model does not block its edges)."""
        per_edge = self.edge_bytes()
        if per_edge is None:
            return None
        if not gigabytes > 0:
            raise ValueError(f"max_memory_gb must be positive, got {gigabytes!r}")
        self.edge_block_size = max(1024, int(0.5 * gigabytes * 2**30 / per_edge))
        return self.edge_block_size

    @property
    def message_passing_steps(self) -> int:
        """Neighbour hops an atomic energy sees: it depends on atoms up to this many
        cutoffs away (MD codes size their ghost-atom shells by it)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    def one_hot(self, species: torch.Tensor) -> torch.Tensor:
        """``[n]`` element indices → ``[n, num_elements]`` one-hot in the model's dtype."""
        return torch.nn.functional.one_hot(species, self.num_elements).to(self.atomic_energies.dtype)

    def species(self, z: torch.Tensor) -> torch.Tensor:
        """Atomic numbers ``[n]`` → element indices ``[n]``; an element the model lacks is a ``ValueError``."""
        if z.numel() and (z.min() < 0 or z.max() >= NUM_ELEMENTS_TABLE):
            raise ValueError(f"atomic numbers must be in 1..118, got values from {int(z.min())} to {int(z.max())}")
        species = self.species_of_z[z]
        if (species < 0).any():
            unknown = sorted(set(z[species < 0].tolist()))
            raise ValueError(
                f"element {_symbols(unknown)} is not one the model was built for ({_symbols(self.elements)})"
            )
        return species

    def node_energies(self, species: torch.Tensor, edge_vec: torch.Tensor, edge_index: torch.Tensor, **structure_inputs: torch.Tensor) -> torch.Tensor:
        """Atomic energies ``[n]`` in eV (arguments as for :meth:`node_energy_terms`)."""
        return self._energies_of_terms(self.node_energy_terms(species, edge_vec, edge_index, **structure_inputs), species)

    def _energies_of_terms(self, terms: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if not self.isolated_energy_is_zero:
            terms = terms - self.isolated_terms(species)
        return self.atomic_energies[species] + self.shift + self.scale * terms

    def isolated_terms(self, species: torch.Tensor) -> torch.Tensor:
        """Learned part of an isolated atom of each atom's element, ``[n]``: one isolated atom
        per element present through the model (with the default :attr:`structure_inputs`: a
        neutral singlet)."""
        elements, index = torch.unique(species, return_inverse=True)
        no_edges = torch.zeros(2, 0, dtype=torch.long, device=species.device)
        return self.node_energy_terms(elements, torch.zeros(0, 3, dtype=self.atomic_energies.dtype, device=species.device), no_edges)[index]

    def deformed_energy(self, batch, pos: torch.Tensor, strain: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies ``[B]`` and atomic energies ``[n]`` (eV) of ``batch`` with the atoms at
        ``pos`` ``[n, 3]`` (Å) and each structure deformed by ``strain`` ``[B, 3, 3]``
        (positions and cell scaled by 1 + its symmetric part; ``None``: undeformed).
        Derivatives with respect to ``pos`` and ``strain`` give forces, stress and,
        differentiated again, Hessians and elastic constants (:mod:`equinet.derivatives`)."""
        out = self.deformed_outputs(batch, pos, strain)
        return out["energy"], out["node_energy"]

    def deformed_outputs(self, batch, pos: torch.Tensor, strain: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """As :meth:`deformed_energy`, as a dict with the heads' outputs too (``dipole``,
        ``charges``, ``polarizability``); the dipole's derivative with respect to ``pos``
        gives the Born charges."""
        dtype = self.atomic_energies.dtype
        cell = batch.cell.to(dtype).view(-1, 3, 3)
        num_graphs = cell.shape[0]
        batch_index = batch.batch if getattr(batch, "batch", None) is not None else pos.new_zeros(len(pos), dtype=torch.long)
        edge_index, edge_shift = batch.edge_index, batch.edge_shift.to(dtype)
        if self._edge_block is not None:  # edges sorted by receiver: each block sums into few rows
            order = torch.argsort(edge_index[1], stable=True)
            edge_index, edge_shift = edge_index[:, order], edge_shift[order]
        if strain is not None:
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            pos = pos + torch.einsum("ni,nij->nj", pos, symmetric[batch_index])
            cell = cell + cell @ symmetric
        sender, receiver = edge_index
        edge_vec = pos[receiver] - pos[sender] + torch.einsum("ei,eij->ej", edge_shift, cell[batch_index[sender]])
        species = self.species(batch.z)
        inputs = {key: _per_structure(batch, key, num_graphs, pos)[batch_index] for key in self.structure_inputs}
        if self.heads is None:
            node_energy = self.node_energies(species, edge_vec, edge_index, **inputs)
        else:
            terms, features = self.node_terms_and_features(species, edge_vec, edge_index, **inputs)
            node_energy = self._energies_of_terms(terms, species)
        energy = node_energy.new_zeros(num_graphs).index_add(0, batch_index, node_energy)
        out = {"energy": energy, "node_energy": node_energy}
        if self.heads is not None:
            total_charge = _per_structure(batch, "total_charge", num_graphs, pos)
            out.update(self.heads(features, pos, batch_index, num_graphs, total_charge))
        return out

    def forward(
        self, batch, forces: bool = True, stress: bool = False, create_graph: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """Energies and, on request, forces and stress of a batch of graphs.

        Args:
            batch: a ``torch_geometric`` ``Batch`` (or one ``Data``) with ``pos``, ``z``,
                ``cell``, ``pbc``, ``edge_index`` and ``edge_shift`` (the graph contract).
            forces: compute ``forces = -dE/dpos``.
            stress: compute the stress of periodic structures.
            create_graph: keep the graph of the derivatives (needed to train on forces);
                defaults to ``self.training``.
        """
        dtype = self.atomic_energies.dtype
        create_graph = self.training if create_graph is None else create_graph
        if "energy" not in self.outputs:
            forces = stress = False
        pos = batch.pos.to(dtype).detach().requires_grad_(forces)
        strain = None
        if stress:  # E(strain) only when the stress is asked for: no deformation in plain steps
            strain = torch.zeros(batch.cell.view(-1, 3, 3).shape[0], 3, 3, dtype=dtype, device=pos.device, requires_grad=True)
        self._edge_block = None if create_graph else self.edge_block_size
        try:
            out = self.deformed_outputs(batch, pos, strain)
        finally:
            self._edge_block = None
        energy = out["energy"]
        if "energy" not in self.outputs:
            del out["energy"], out["node_energy"]
        inputs = [tensor for tensor in (pos, strain) if tensor is not None and tensor.requires_grad]

        if inputs:
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
            if forces:
                out["forces"] = -grads[0]
            if stress:
                volume = torch.linalg.det(batch.cell.to(dtype).view(-1, 3, 3)).abs()
                periodic = batch.pbc.view(-1, 3).all(dim=1) & (volume > 0)
                out["stress"] = torch.where(
                    periodic.view(-1, 1, 1), grads[-1] / volume.clamp_min(1e-30).view(-1, 1, 1), torch.nan
                )
        return out
