"""mace-torch's weights mapped onto an equinet ``mace`` model of the same architecture
(built from :func:`~equinet.foreign.mace_config.mace_config`).

Most weights are e3nn ``Linear``, ``FullyConnectedTensorProduct`` and
``FullyConnectedNet`` weights of the same irreps and layout on both sides and are copied.
These are not:

* the last readout's activation: mace's e3nn ``Activation`` scales SiLU by its
  second-moment constant ``cst``; equinet's readout has a plain SiLU, so ``cst`` moves
  into the weights of the linear map after it;
* the symmetric contraction: mace's weights multiply its redundant coupling basis
  ``U_nu [M, D, ..., D, K]``; equinet's multiply a basis of the *symmetric*
  maps. The product only sees the symmetrized U, so each of mace's basis tensors,
  symmetrized, is written in equinet's basis by a least-squares solve
  ``U_eq^T P = sym(U_mace)`` (``P: [K_eq, K]``), and ``w_eq = P w_mace / WEIGHT_SCALE``.
  The solve must leave no residual (then the map is exact); otherwise the import is refused;
* the readouts of a multi-head model: their outputs hold one column per head (and the
  last one's hidden layer one block per head, the others masked), so one head's column
  and block are taken, and the last linear map's e3nn normalisation ``1/sqrt(fan-in)``
  corrected from the width of all heads to that of one;
* the reference energies, scale and shift: one head's;
* the ZBL repulsion, which mace's ``ScaleShiftMACE`` scales with the learned energy: that
  scale becomes the repulsion's ``factor``;
* the gate of a non-linear block: mace's and e3nn's each scale their activations to unit
  second moment, by constants computed in the dtype each was built in; the ratio of the two
  moves into the linear map after the gate;
* the charge and spin embedding: mace joins its tables' rows in the order of its
  ``embedding_specs`` (MACE-OMOL-0: spin, then charge), equinet charge first; the columns of
  the map after them are reordered to match.
"""

from __future__ import annotations

import itertools
import math

import torch
from e3nn import o3

from equinet.ops import symmetric_coupling_basis
from equinet.ops.symmetric_contraction import WEIGHT_SCALE
from equinet.potentials import Potential

from .mace_config import NONLINEAR_BLOCK, UnsupportedMace, embedding_specs, head_scale_shift, irreps_of, readout_width
from .pickle_reader import Record

__all__ = ["mace_state_dict"]

# equinet's table of each embedded feature (ChargeSpinEmbedding), in the order it joins them.
_TABLES = {"total_charge": "charge_spin.charge.weight", "total_spin": "charge_spin.spin.weight"}
# Largest residual of the basis map, relative to the basis, by the dtype mace's U was computed in.
_EXACT = {torch.float64: 1e-10, torch.float32: 1e-5}


def _symmetrized(u: torch.Tensor, order: int) -> torch.Tensor:
    """``u [M, D, ..., D, K]`` averaged over the orders of its ``order`` D-axes."""
    perms = list(itertools.permutations(range(1, order + 1)))
    return sum(u.permute(0, *perm, order + 1) for perm in perms) / len(perms)


def _contraction_weights(contraction: Record, irreps_one: o3.Irreps, ir_out: o3.Irrep, correlation: int) -> dict[int, torch.Tensor]:
    """equinet's ``weight_{nu}_{ir_out}`` (``[Z, K_eq, C]``, float64) for one mace ``Contraction``.

    Raises:
        UnsupportedMace: a term of mace's product outside equinet's basis.
    """
    tensors = contraction.tensors()
    weights = {}
    for order in range(1, correlation + 1):
        u = tensors[f"U_matrix_{order}"].double()
        if u.dim() == order + 1:  # mace drops the M axis of scalar outputs
            u = u.unsqueeze(0)
        w = tensors["weights_max" if order == correlation else f"weights.{correlation - 1 - order}"].double()
        sym = _symmetrized(u, order).reshape(-1, u.shape[-1])  # [M D^nu, K]
        basis = symmetric_coupling_basis(irreps_one, ir_out, order).flatten(1)  # [K_eq, M D^nu]
        projection = torch.linalg.lstsq(basis.T, sym).solution if basis.shape[0] else basis.new_zeros(0, sym.shape[1])  # [K_eq, K]
        residual = (sym - basis.T @ projection).norm() / sym.norm().clamp_min(1e-300)
        if sym.norm() > 0 and residual > _EXACT.get(tensors[f"U_matrix_{order}"].dtype, 1e-5):
            raise UnsupportedMace(
                f"its symmetric contraction (order {order}, output {ir_out}) has terms outside equinet's basis "
                f"(residual {residual:.1e})"
            )
        if basis.shape[0]:
            weights[order] = torch.einsum("kj,zjc->zkc", projection, w) / WEIGHT_SCALE
    return weights


def _product(prefix: str, product: Record, model_product) -> dict[str, torch.Tensor]:
    contractions = product.get("symmetric_contractions").get("contractions").children()
    irreps_one = model_product.irreps_one
    out = {}
    for index, (_, ir_out) in enumerate(model_product.irreps_out):
        contraction = contractions[str(index)]
        if irreps_of(contraction.get("coupling_irreps")) != irreps_one:
            raise UnsupportedMace(f"its symmetric contraction couples {irreps_of(contraction.get('coupling_irreps'))}, not {irreps_one}")
        for order, weight in _contraction_weights(contraction, irreps_one, ir_out, model_product.correlation).items():
            out[f"{prefix}weight_{order}_{ir_out}"] = weight
    return out


def _radial(source: dict[str, torch.Tensor], model: Potential) -> dict[str, torch.Tensor]:
    """The radial basis, the distance transform's parameters and the covalent radii."""
    state = {}
    for mace_name, name in (("bessel_weights", "frequencies"), ("gaussian_weights", "centres")):
        if f"radial_embedding.bessel_fn.{mace_name}" in source:
            state[f"radial_embedding.basis.{name}"] = source[f"radial_embedding.bessel_fn.{mace_name}"]
    if model.radial_embedding.transform is not None:
        for name, _ in model.radial_embedding.transform.named_buffers():
            state[f"radial_embedding.transform.{name}"] = source[f"radial_embedding.distance_transform.{name}"]
    if model.covalent_radii is not None:
        radii = source.get("pair_repulsion_fn.covalent_radii", source.get("radial_embedding.distance_transform.covalent_radii"))
        state["covalent_radii"] = radii[model.elements]
    return state


def _readouts(source: dict[str, torch.Tensor], mace: Record, head: int) -> dict[str, torch.Tensor]:
    """One head's readout weights (column ``head`` of the per-head outputs)."""
    readouts = mace.get("readouts").children()
    num_heads, last = len(mace.get("heads") or ["Default"]), len(readouts) - 1
    linear = range(last + 1) if readouts[str(last)].name == "LinearReadoutBlock" else range(last)
    state = {f"readouts.{i}.weight": source[f"readouts.{i}.linear.weight"].view(-1, num_heads)[:, head] for i in linear}
    if last in linear:
        return state
    width = readout_width(mace)
    block = slice(head * width, (head + 1) * width)
    cst = readouts[str(last)].get("non_linearity").get("acts").children()["0"].get("cst")
    first = source[f"readouts.{last}.linear_1.weight"].view(-1, num_heads * width)[:, block]
    second = source[f"readouts.{last}.linear_2.weight"].double().view(num_heads * width, num_heads)[block, head]
    state[f"readouts.{last}.0.weight"] = first.reshape(-1)
    state[f"readouts.{last}.2.weight"] = second * cst / num_heads**0.5
    return state


def _linear_interaction(prefix: str, source: dict[str, torch.Tensor], interaction) -> dict[str, torch.Tensor]:
    """A linear block's weights: e3nn's modules on both sides."""
    state = {f"{prefix}{name}.weight": source[f"{prefix}{name}.weight"] for name in ("linear_up", "linear")}
    layer = 0
    while f"{prefix}conv_tp_weights.layer{layer}.weight" in source:
        state[f"{prefix}radial.layer{layer}.weight"] = source[f"{prefix}conv_tp_weights.layer{layer}.weight"]
        layer += 1
    if interaction.density is not None:
        state[f"{prefix}density.layer0.weight"] = source[f"{prefix}density_fn.layer0.weight"]
    return state


def _scaled_by_input_degree(linear, weight: torch.Tensor, scalars: float, others: float) -> torch.Tensor:
    """An e3nn ``Linear``'s flat ``weight`` with the paths from scalars times ``scalars``
    and the others times ``others``."""
    pieces, start = [], 0
    for instruction in linear.instructions:
        size = math.prod(instruction.path_shape)
        factor = scalars if linear.irreps_in[instruction.i_in].ir.l == 0 else others
        pieces.append(weight[start : start + size].double() * factor)
        start += size
    return torch.cat(pieces)


def _nonlinear_interaction(prefix: str, source: dict[str, torch.Tensor], block: Record, interaction) -> dict[str, torch.Tensor]:
    """A non-linear block's weights (:class:`~equinet.potentials.mace_nonlinear.NonLinearInteraction`)."""
    state = {f"{prefix}{name}": source[f"{prefix}{name}"] for name in ("alpha", "beta")}
    linears = {"source_embedding": "source_embedding", "target_embedding": "target_embedding", "linear_up": "linear_up",
               "linear_res": "linear_residual", "linear_1": "linear_messages", "linear_2": "linear_out"}  # fmt: skip
    for mace_name, name in linears.items():
        state[f"{prefix}{name}.weight"] = source[f"{prefix}{mace_name}.weight"]
    for mace_name, name in (("conv_tp_weights", "radial"), ("density_fn", "density")):
        network = f"{prefix}{mace_name}.net."
        state.update({f"{prefix}{name}.{key[len(network):]}": value for key, value in source.items() if key.startswith(network)})
    gate, ours = block.get("equivariant_nonlin"), interaction.gate
    state[f"{prefix}linear_out.weight"] = _scaled_by_input_degree(
        interaction.linear_out,
        state[f"{prefix}linear_out.weight"],
        gate.get("_scalar_cst") / ours.act_scalars.acts[0].cst,
        gate.get("_gate_cst") / ours.act_gates.acts[0].cst,
    )
    return state


def _charge_spin(source: dict[str, torch.Tensor], mace: Record) -> dict[str, torch.Tensor]:
    """The tables of the charge and spin embedding, and the map after them with its columns
    in equinet's order (charge, then spin)."""
    specs = embedding_specs(mace)
    if not specs:
        return {}
    project = source["joint_embedding.project.0.weight"]  # [C, sum of emb_dim], mace's order
    columns, start = {}, 0
    for name, spec in specs.items():
        columns[name] = project[:, start : start + spec["emb_dim"]]
        start += spec["emb_dim"]
    ours = [name for name in _TABLES if name in specs]
    state = {"charge_spin.project.weight": torch.cat([columns[name] for name in ours], dim=1)}
    for name in ours:
        state[_TABLES[name]] = source[f"joint_embedding.embedders.{name}.weight"]
    return state


def mace_state_dict(mace: Record, model: Potential, head: int = 0) -> dict[str, torch.Tensor]:
    """Every parameter and the reference energies, scale and shift of ``model`` (equinet
    ``mace``) from head ``head`` of the mace-torch record ``mace``, as a state dict (float64)."""
    source = mace.tensors()
    scale, shift = head_scale_shift(mace, head)
    state = {
        "embedding.weight": source["node_embedding.linear.weight"],
        "atomic_energies": source["atomic_energies_fn.atomic_energies"].reshape(-1, model.num_elements)[head],
        "scale": torch.tensor(scale, dtype=torch.float64),
        "shift": torch.tensor(shift, dtype=torch.float64),
        **_radial(source, model),
        **_readouts(source, mace, head),
        **_charge_spin(source, mace),
    }
    if model.pair_repulsion is not None:
        for name in ("a_exp", "a_prefactor"):
            state[f"pair_repulsion.{name}"] = source[f"pair_repulsion_fn.{name}"]
        state["pair_repulsion.factor"] = torch.tensor(scale, dtype=torch.float64)
    blocks = mace.get("interactions").children()
    for i, product in enumerate(mace.get("products").children().values()):
        if blocks[str(i)].name == NONLINEAR_BLOCK:
            state.update(_nonlinear_interaction(f"interactions.{i}.", source, blocks[str(i)], model.interactions[i]))
        else:
            state.update(_linear_interaction(f"interactions.{i}.", source, model.interactions[i]))
        state[f"self_connections.{i}.weight"] = source[f"interactions.{i}.skip_tp.weight"]
        state[f"linears.{i}.weight"] = source[f"products.{i}.linear.weight"]
        state.update(_product(f"products.{i}.", product, model.products[i]))
    missing = [name for name, _ in model.named_parameters() if name not in state]
    if missing:
        raise UnsupportedMace(f"no mace weight maps onto equinet's {missing[0]}")
    return {key: value.double() for key, value in state.items()}
