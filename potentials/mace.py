"""MACE-style potential (Batatia et al., NeurIPS 2022), following mace-torch's
``ScaleShiftMACE`` with ``RealAgnosticResidualInteractionBlock``.

Each layer: a linear map of the node features, the CG convolution with the edge
spherical harmonics (up to ``max_ell``) and radial-MLP weights, a linear map divided by
the mean neighbour count (the atomic basis A), the many-body product of A up to
``correlation`` copies with element-dependent weights (``product: cg``: MACE's symmetric
contraction; ``product: gaunt``: powers of A read as a spherical function, taken pointwise
on a sphere grid — fewer couplings, far cheaper at high degree), a linear
map, and an element-dependent self-connection from the previous layer. Every layer
reads out an energy; the last one through a small MLP. The learned energy of an atom
without neighbours is exactly zero (unless ``first_layer_residual`` or a non-linear first
layer). MACE-MH's non-linear layers are in :mod:`.mace_nonlinear`. With a charge or spin
embedding (MACE-OMOL-0), each structure's total charge and spin multiplicity join the
element embedding (:mod:`.charge_spin`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3

from equinet.ops import (
    CGConvolution,
    FullyConnectedTensorProduct,
    GauntManyBodyProduct,
    Linear,
    SymmetricContraction,
    spherical_harmonics,
)

from equinet.ops.kernels import backend_names

from .base import Potential
from .heads import head_irreps, tensorial_heads
from .blocks import RadialEmbedding, conv_edge_bytes, over_node_blocks, radial_network, summed_over_edge_blocks
from .charge_spin import STRUCTURE_DEFAULTS, ChargeSpinEmbedding, check_table
from .mace_nonlinear import NonLinearInteraction, SharedSelfConnection
from .pair_radii import COVALENT_RADII, AgnesiTransform, SoftTransform, ZBLRepulsion, pair_radius_sum
from .registry import register_model

__all__ = ["MACE"]

# The many-body products: same constructor (irreps_in, irreps_out, correlation, num_elements)
# and call (A, species).
_PRODUCT_MODULES = {"cg": SymmetricContraction, "gaunt": GauntManyBodyProduct}
PRODUCTS = tuple(_PRODUCT_MODULES)
# The operator family of each product, and what its backends run (for the error of a request).
_PRODUCT_FAMILIES = {"cg": "symmetric_contraction", "gaunt": "gaunt_many_body"}
_RUNS = {"cg": "the symmetric contraction", "gaunt": "the Gaunt product on the grid kernel"}
DISTANCE_TRANSFORMS = {"agnesi": AgnesiTransform, "soft": SoftTransform}
INTERACTIONS = ("linear", "nonlinear")
ENVELOPES = ("basis", "weights")


class _Interaction(torch.nn.Module):
    """Atomic basis A of one layer: ``[n, irreps_in] → [n, C x (0e + 1o + ... + max_ell)]``.

    The node features are first mapped linearly to ``irreps_edge``, what the convolution
    reads. The summed messages are divided by the mean neighbour count, or with
    ``density_normalization`` by ``1 + rho_i``, a learned neighbour density
    ``rho_i = sum_j tanh((w · e_ij)^2)`` of the radial features ``e_ij`` (mace-torch's Density blocks).
    """

    def __init__(self, irreps_in, irreps_edge, irreps_sh, irreps_a, num_basis, radial_hidden, avg_num_neighbors, density_normalization=False):
        super().__init__()
        self.linear_up = Linear(irreps_in, irreps_edge)
        self.conv = CGConvolution(irreps_edge, irreps_sh, irreps_out=irreps_a)
        self.radial = radial_network(num_basis, radial_hidden, self.conv.weight_numel)
        self.linear = Linear(self.conv.irreps_out, irreps_a)
        self.inv_avg_num_neighbors = 1.0 / avg_num_neighbors
        self.density = radial_network(num_basis, (), 1) if density_normalization else None

    def edge_bytes(self, like: torch.Tensor) -> int:
        return conv_edge_bytes(self.conv, self.radial, like)

    def _messages(self, x_up, edge_sh, edge_features, edge_index, num_receivers):
        return self.conv(x_up, edge_sh, self.radial(edge_features), edge_index, num_receivers)

    def forward(self, x, edge_sh, edge_features, edge_index, edge_block=None):
        summed = summed_over_edge_blocks(self._messages, self.linear_up(x), (edge_sh, edge_features), edge_index, edge_block)
        messages = self.linear(summed)
        if self.density is None:
            return messages * self.inv_avg_num_neighbors
        edge_density = torch.tanh(self.density(edge_features).squeeze(-1) ** 2)
        density = edge_density.new_zeros(x.shape[0]).index_add(0, edge_index[1], edge_density)
        return messages / (1.0 + density).unsqueeze(-1)


@register_model("mace")
class MACE(Potential):
    """MACE-style potential.

    Args:
        statistics, cutoff, scale, shift: see :class:`~equinet.potentials.Potential`.
        hidden_irreps: node features between layers, one multiplicity for all irreps
            (``"64x0e+64x1o"``; the last layer keeps only its scalars, and the ``1o``/``2e``
            channels that the tensorial outputs need).
        max_ell: highest degree of the edge spherical harmonics and of A.
        correlation: body order of the product minus one (MACE's ``correlation``).
        num_interactions: number of layers.
        num_basis: functions of the radial basis.
        envelope_p: exponent of the polynomial cutoff envelope (MACE: 5).
        radial_basis: ``"bessel"`` or ``"gaussian"``.
        distance_transform: ``None``, ``"agnesi"`` or ``"soft"``: edge lengths rescaled by
            the pair's covalent radii before the radial basis (:mod:`.pair_radii`).
        radial_hidden: hidden widths of the radial MLP.
        density_normalization: divide each atom's messages by one plus a learned neighbour
            density instead of the mean neighbour count (MACE-MPA-0, OMAT-0).
        pair_repulsion: add the ZBL nuclear repulsion (:class:`.pair_radii.ZBLRepulsion`)
            to the atomic energies.
        readout_hidden: width of the last layer's readout MLP; 0 for a linear readout.
        readout_every_layer: every layer reads out an energy; ``False``: only the last one.
        interaction: the layers after the first: ``"linear"`` (MACE's interaction) or
            ``"nonlinear"`` (:class:`.mace_nonlinear.NonLinearInteraction`, MACE-MH's:
            element-aware radial weights, a learned density normalisation, a gate, and a
            self-connection shared by all elements).
        first_interaction: the first layer's, ``"linear"`` or ``"nonlinear"``; ``None``:
            as ``interaction``.
        edge_irreps: what the convolutions read, a linear map of the node features away
            (mace-torch's ``edge_irreps``); ``None``: the node features themselves.
        edge_irreps_first: the first layer's convolution reads the scalars of
            ``edge_irreps`` (mace-torch's ``use_edge_irreps_first``).
        agnostic_product: the many-body product has the same weights for every element.
        envelope: where the cutoff envelope goes: on the radial ``"basis"``, or on the
            radial MLP's output ``"weights"`` (and the density; non-linear layers only:
            mace-torch's ``apply_cutoff=False``).
        first_layer_residual: the first layer adds an element-dependent self-connection
            of the element embedding, as every later layer does (mace-torch's
            ``RealAgnosticResidualInteractionBlock`` first, as in MACE-MP-0), instead of
            mixing A by element; an isolated atom's learned energy is then not zero.
        product: the many-body product: ``"cg"`` (symmetric contraction, all couplings) or
            ``"gaunt"`` (:class:`~equinet.ops.GauntManyBodyProduct`; then every output irrep of
            the product needs the parity (-1)^l, e.g. ``"64x0e+64x1o"``, not ``"64x1e"``).
        charge_embedding: ``{classes: K, offset: o, dim: d}``: each structure's total charge Q
            (the batch's ``total_charge``: ``atoms.info["charge"]``, default 0) picks row
            ``Q + o`` of a learned table of K rows of d numbers, for the charges ``-o`` to
            ``K - 1 - o`` (MACE-OMOL-0: ``{classes: 201, offset: 100, dim: 1024}``); the rows of
            both tables, mapped linearly to the scalar channels and through SiLU, join the
            element embedding (:class:`.charge_spin.ChargeSpinEmbedding`; mace-torch's
            ``embedding_specs``). ``None``: no charge input.
        spin_embedding: the same for the spin multiplicity 2S+1 (``total_spin``:
            ``atoms.info["spin"]``, default 1; MACE-OMOL-0: ``{classes: 101, offset: 0, dim: 1024}``).
            An isolated atom's learned energy, which the reference energies take in, is that
            of a neutral singlet.
        outputs: ``energy``, ``dipole``, ``polarizability`` (:mod:`.heads`); the heads read
            every layer's features.

    Backends (:func:`equinet.accelerate`, or ``conv_backend`` / ``product_backend`` in a config):
    ``conv`` the CG convolution, ``product`` the symmetric contraction of ``product: cg`` or
    the Gaunt product of ``product: gaunt``.
    """

    isolated_energy_is_zero = True
    backend_families = {"conv": ("cg",), "product": tuple(_PRODUCT_FAMILIES.values())}

    @classmethod
    def check_backend_requests(cls, config: dict, requests: dict[str, str]) -> None:
        product, backend = config.get("product", "cg"), requests.get("product", "auto")
        if product in _PRODUCT_FAMILIES and backend != "auto" and backend not in backend_names(_PRODUCT_FAMILIES[product]):
            other = "gaunt" if product == "cg" else "cg"
            raise ValueError(
                f"model.product_backend {backend!r} runs {_RUNS[other]}: it needs model.product '{other}', not '{product}'"
            )

    def __init__(
        self,
        statistics: dict,
        cutoff: float = 5.0,
        scale: float | str = "force_rms",
        shift: float | str = 0.0,
        hidden_irreps: str = "64x0e+64x1o",
        max_ell: int = 3,
        correlation: int = 3,
        num_interactions: int = 2,
        num_basis: int = 8,
        envelope_p: int = 5,
        radial_basis: str = "bessel",
        distance_transform: str | None = None,
        radial_hidden: Sequence[int] = (64, 64, 64),
        density_normalization: bool = False,
        pair_repulsion: bool = False,
        readout_hidden: int = 16,
        readout_every_layer: bool = True,
        first_layer_residual: bool = False,
        interaction: str = "linear",
        first_interaction: str | None = None,
        edge_irreps: str | None = None,
        edge_irreps_first: bool = False,
        agnostic_product: bool = False,
        envelope: str = "basis",
        product: str = "cg",
        charge_embedding: dict[str, int] | None = None,
        spin_embedding: dict[str, int] | None = None,
        outputs: Sequence[str] = ("energy",),
    ):
        super().__init__(statistics, cutoff, scale, shift, outputs)
        hidden = o3.Irreps(hidden_irreps)
        channels = {mul for mul, _ in hidden}
        if len(channels) != 1 or not any(ir == o3.Irrep("0e") for _, ir in hidden):
            raise ValueError(f"model.hidden_irreps must have scalars and one multiplicity for all irreps (e.g. '64x0e+64x1o'), got '{hidden_irreps}'")
        if product not in PRODUCTS:
            raise ValueError(f"model.product must be one of {', '.join(PRODUCTS)}, got {product!r}")
        if product == "gaunt" and any(ir.p != (-1) ** ir.l for _, ir in hidden):
            raise ValueError(
                f"model.hidden_irreps '{hidden_irreps}' has irreps the Gaunt product never produces: with model.product "
                "'gaunt' every irrep needs the parity (-1)^l (e.g. '64x0e+64x1o+64x2e')"
            )
        if not isinstance(num_interactions, int) or num_interactions < 1:
            raise ValueError(f"model.num_interactions must be a positive integer, got {num_interactions!r}")
        if distance_transform is not None and distance_transform not in DISTANCE_TRANSFORMS:
            raise ValueError(f"model.distance_transform must be null or one of {', '.join(DISTANCE_TRANSFORMS)}, got {distance_transform!r}")
        if readout_hidden < 0:
            raise ValueError(f"model.readout_hidden must be 0 (a linear readout) or a positive width, got {readout_hidden!r}")
        kinds = [first_interaction or interaction] + [interaction] * (num_interactions - 1)
        if not set(kinds) <= set(INTERACTIONS):
            raise ValueError(f"model.interaction and model.first_interaction must be one of {', '.join(INTERACTIONS)}, got {kinds}")
        if envelope not in ENVELOPES:
            raise ValueError(f"model.envelope must be one of {', '.join(ENVELOPES)}, got {envelope!r}")
        if envelope == "weights" and "linear" in kinds:
            raise ValueError("model.envelope 'weights' needs non-linear layers only (model.interaction and first_interaction 'nonlinear')")
        num_channels = channels.pop()
        self.max_ell = max_ell
        self.first_layer_mixes_a = kinds[0] == "linear" and not first_layer_residual
        self.isolated_energy_is_zero = self.first_layer_mixes_a
        self.envelope_on_weights = envelope == "weights"
        self.agnostic_product = agnostic_product
        irreps_sh = o3.Irreps.spherical_harmonics(max_ell)
        irreps_a = o3.Irreps([(num_channels, ir) for _, ir in irreps_sh])
        elements = o3.Irreps(f"{self.num_elements}x0e")
        scalars = o3.Irreps(f"{num_channels}x0e")
        edge = None if edge_irreps is None else o3.Irreps(edge_irreps)
        first_edge = o3.Irreps(f"{edge.count('0e')}x0e") if edge is not None and edge_irreps_first else scalars

        transform = DISTANCE_TRANSFORMS[distance_transform]() if distance_transform else None
        self.radial_embedding = RadialEmbedding(cutoff, num_basis, envelope_p, radial_basis, transform, envelope_on_basis=envelope == "basis")
        self.pair_repulsion = ZBLRepulsion(self.elements, envelope_p) if pair_repulsion else None
        if transform is not None or pair_repulsion:
            self.register_buffer("covalent_radii", torch.tensor([COVALENT_RADII[z] for z in self.elements]))
        else:
            self.covalent_radii = None
        self.embedding = Linear(elements, scalars)
        tables = {
            field: None if table is None else check_table(key, table, STRUCTURE_DEFAULTS[field])
            for key, field, table in (("charge_embedding", "total_charge", charge_embedding), ("spin_embedding", "total_spin", spin_embedding))
        }
        if any(table is not None for table in tables.values()):
            self.charge_spin = ChargeSpinEmbedding(num_channels, tables["total_charge"], tables["total_spin"])
            self.structure_inputs = ("total_charge", "total_spin")
        else:
            self.charge_spin = None
        self.interactions, self.products, self.linears = torch.nn.ModuleList(), torch.nn.ModuleList(), torch.nn.ModuleList()
        self.self_connections, self.readouts = torch.nn.ModuleList(), torch.nn.ModuleList()
        make_product = _PRODUCT_MODULES[product]
        irreps_in = scalars
        for layer, kind in enumerate(kinds):
            last = layer == num_interactions - 1
            irreps_out = scalars + head_irreps(self.outputs, num_channels) if last else hidden  # tensorial heads keep 1o/2e
            irreps_edge = first_edge if layer == 0 else (edge or irreps_in)
            if kind == "nonlinear":
                interaction_block = NonLinearInteraction(irreps_in, irreps_edge, irreps_sh, irreps_a, num_basis, radial_hidden, self.num_elements)
            else:
                interaction_block = _Interaction(
                    irreps_in, irreps_edge, irreps_sh, irreps_a, num_basis, radial_hidden, self.avg_num_neighbors, density_normalization
                )
            self.interactions.append(interaction_block)
            self.products.append(make_product(irreps_a, irreps_out, correlation, 1 if agnostic_product else self.num_elements))
            self.linears.append(Linear(irreps_out, irreps_out))
            # A linear first layer mixes A by element instead (mace-torch's skip_tp), unless
            # first_layer_residual: its input is only the element embedding.
            mixes_a = layer == 0 and self.first_layer_mixes_a
            if kind == "nonlinear":
                self_connection = SharedSelfConnection(irreps_in, irreps_out)
            else:
                self_connection = FullyConnectedTensorProduct(irreps_a if mixes_a else irreps_in, elements, irreps_a if mixes_a else irreps_out)
            self.self_connections.append(self_connection)
            if last and readout_hidden:
                readout = torch.nn.Sequential(Linear(irreps_out, f"{readout_hidden}x0e"), torch.nn.SiLU(), Linear(f"{readout_hidden}x0e", "1x0e"))
            else:
                readout = Linear(irreps_out, "1x0e")
            if last or readout_every_layer:
                self.readouts.append(readout)
            irreps_in = irreps_out
        self.heads = tensorial_heads(self.outputs, [linear.irreps_out for linear in self.linears], readout_hidden)

    @property
    def message_passing_steps(self) -> int:
        return len(self.interactions)

    def edge_bytes(self) -> int:
        return max(interaction.edge_bytes(self.atomic_energies) for interaction in self.interactions)

    def set_memory_budget(self, gigabytes: float) -> int | None:
        """Edge blocks as every model, and atom blocks for the many-body product, whose
        intermediates per atom (``C x M x D^(correlation-1)`` values for each output irrep
        ``L`` of dimension ``M``) dwarf the features: half the budget each."""
        block = super().set_memory_budget(gigabytes)
        product = self.products[0]
        dim_one = sum(ir.dim for _, ir in o3.Irreps.spherical_harmonics(self.max_ell))
        widest = max(ir.dim for _, ir in product.irreps_out) * dim_one ** (product.correlation - 1)
        per_atom = 4 * product.channels * widest * self.atomic_energies.element_size()  # x2 outputs, x2 recompute
        self.atom_block_size = max(64, int(0.5 * gigabytes * 2**30 / per_atom))
        return block

    def node_terms_and_features(self, species, edge_vec, edge_index, total_charge=None, total_spin=None):
        one_hot = self.one_hot(species)
        r = edge_vec.norm(dim=-1)
        radius_sum = None if self.covalent_radii is None else pair_radius_sum(self.covalent_radii, species, edge_index)
        edge_sh = spherical_harmonics(self.max_ell, edge_vec)
        edge_features = self.radial_embedding(r, radius_sum)
        edge_scale = self.radial_embedding.envelope(r) if self.envelope_on_weights else torch.ones_like(r)
        product_species = torch.zeros_like(species) if self.agnostic_product else species
        x = self.embedding(one_hot)
        if self.charge_spin is not None:
            x = x + self.charge_spin(total_charge, total_spin, like=x)
        energy = 0.0 if self.pair_repulsion is None else self.pair_repulsion(r, radius_sum, species, edge_index) / self.scale
        features = []
        first_readout = len(self.interactions) - len(self.readouts)
        atoms_block = self._atom_blocks()
        for layer, (interaction, product, linear, self_connection) in enumerate(zip(self.interactions, self.products, self.linears, self.self_connections)):
            if isinstance(interaction, NonLinearInteraction):
                a = interaction(x, species, edge_sh, edge_features, edge_scale, edge_index, self._edge_block)
            else:
                a = interaction(x, edge_sh, edge_features, edge_index, self._edge_block)
            if layer == 0 and self.first_layer_mixes_a:
                x = linear(over_node_blocks(product, (self_connection(a, one_hot), product_species), atoms_block))
            else:
                x = linear(over_node_blocks(product, (a, product_species), atoms_block)) + self_connection(x, one_hot)
            if layer >= first_readout:
                energy = energy + self.readouts[layer - first_readout](x).squeeze(-1)
            features.append(x)
        return energy, features
