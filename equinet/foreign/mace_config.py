"""The hyper-parameters of a mace-torch model, read from its records: the equinet ``mace``
config and data statistics that build the same architecture.

Supported: ``MACE`` and ``ScaleShiftMACE`` of mace-torch 0.3 with one head, a first
``RealAgnosticInteractionBlock`` or ``RealAgnosticResidualInteractionBlock`` and residual
blocks after it, Bessel radial functions, the polynomial cutoff, SiLU gates, the
non-linear readout on the last layer. Anything else is refused in one line that names
the option (:class:`UnsupportedMace`), never imported as a different model.
"""

from __future__ import annotations

import torch
from e3nn import o3

from .pickle_reader import Record

__all__ = ["UnsupportedMace", "irreps_of", "mace_config"]

MODEL_CLASSES = {"mace.modules.models.MACE", "mace.modules.models.ScaleShiftMACE"}
PLAIN_BLOCK = "RealAgnosticInteractionBlock"
RESIDUAL_BLOCK = "RealAgnosticResidualInteractionBlock"
SILU = "torch.nn.functional.silu"
# Model attributes whose values other than these build an architecture equinet does not have.
_PLAIN_OPTIONS = {
    "apply_cutoff": True, "edge_irreps": None, "use_edge_irreps_first": False, "use_agnostic_product": False,
    "use_so3": False, "use_last_readout_only": False,
}  # fmt: skip


class UnsupportedMace(ValueError):
    """A MACE model with an option equinet cannot reproduce (yet); the message names it."""


def irreps_of(value) -> o3.Irreps:
    """e3nn irreps from a pickled ``Irreps`` record (or a string)."""
    if isinstance(value, str):
        return o3.Irreps(value)
    if not (isinstance(value, Record) and value.name == "Irreps"):
        raise UnsupportedMace(f"expected e3nn irreps, found {value!r}")
    pairs = []
    for mul_ir in value.args[0]:
        mul, irrep = mul_ir.args[0]
        pairs.append((mul, irrep.args[0]))
    return o3.Irreps(pairs)


def _list(record: Record) -> list:
    """The items of a pickled ``ModuleList``, in order."""
    children = record.children()
    return [children[str(i)] for i in range(len(children))]


def _only_tensor(record: Record, name: str) -> torch.Tensor:
    tensor = record.get(name)
    if not isinstance(tensor, torch.Tensor):
        raise UnsupportedMace(f"its {record.name} has no tensor {name!r}")
    return tensor


def _radial(model: Record) -> dict:
    embedding = model.get("radial_embedding")
    if embedding.get("distance_transform") is not None:
        raise UnsupportedMace(f"distance_transform {embedding.get('distance_transform').name} is not supported yet")
    basis, cutoff = embedding.get("bessel_fn"), embedding.get("cutoff_fn")
    if basis.name != "BesselBasis":
        raise UnsupportedMace(f"radial_type {basis.name} is not supported yet (only BesselBasis)")
    if cutoff.name != "PolynomialCutoff":
        raise UnsupportedMace(f"cutoff function {cutoff.name} is not supported")
    return {
        "num_basis": _only_tensor(basis, "bessel_weights").numel(),
        "envelope_p": int(_only_tensor(cutoff, "p")),
        "cutoff": float(_only_tensor(cutoff, "r_max")),
    }


def _radial_hidden(interaction: Record) -> tuple[int, ...]:
    network = interaction.get("conv_tp_weights")
    layers = [network.children()[f"layer{i}"] for i in range(len(network.children()))]
    for layer in layers[:-1]:
        if getattr(layer.get("act").get("f"), "qualname", None) != SILU:
            raise UnsupportedMace("a radial MLP activation other than SiLU is not supported")
    return tuple(layer.get("h_out") for layer in layers[:-1])


def _check_blocks(interactions: list[Record], readouts: list[Record]) -> None:
    if interactions[0].name not in (PLAIN_BLOCK, RESIDUAL_BLOCK):
        raise UnsupportedMace(f"interaction_first {interactions[0].name} is not supported yet ({PLAIN_BLOCK} or {RESIDUAL_BLOCK})")
    for block in interactions[1:]:
        if block.name != RESIDUAL_BLOCK:
            raise UnsupportedMace(f"interaction {block.name} is not supported yet ({RESIDUAL_BLOCK})")
    for block in interactions:
        for key in ("cueq_config", "oeq_config"):
            if block.get(key) is not None:
                raise UnsupportedMace(f"{key} is set (a model saved for cuEquivariance or OpenEquivariance); convert it back to e3nn first")
    if len(readouts) != len(interactions) or any(r.name != "LinearReadoutBlock" for r in readouts[:-1]):
        raise UnsupportedMace("readouts other than a linear one per layer and a non-linear last one are not supported")
    if readouts[-1].name != "NonLinearReadoutBlock":
        raise UnsupportedMace(f"readout {readouts[-1].name} is not supported yet (NonLinearReadoutBlock)")
    acts = _list(readouts[-1].get("non_linearity").get("acts"))
    if len(acts) != 1 or getattr(acts[0].get("f"), "qualname", None) != SILU:
        raise UnsupportedMace("gate other than silu in the readout is not supported yet")


def _check_options(model: Record) -> None:
    for key, plain in _PLAIN_OPTIONS.items():
        value = model.get(key, plain)
        if value != plain:
            raise UnsupportedMace(f"{key}={value!r} is not supported yet")
    for key, option in (("pair_repulsion", "pair_repulsion (ZBL)"), ("joint_embedding", "embedding_specs")):
        if model.get(key) is not None:
            raise UnsupportedMace(f"{option} is not supported yet")
    heads = model.get("heads", ["Default"])
    if len(heads) != 1:
        raise UnsupportedMace(f"multi-head models (heads {heads}) are not supported yet")
    sh = model.get("spherical_harmonics")
    if sh.get("normalize") is not True or sh.get("normalization") != "component":
        raise UnsupportedMace("spherical harmonics other than normalized, component-normalized ones are not supported")


def _single(values: list, option: str):
    if len(set(values)) != 1:
        raise UnsupportedMace(f"{option} that differs between layers ({values}) is not supported yet")
    return values[0]


def mace_config(model: Record) -> tuple[dict, dict]:
    """The equinet ``mace`` config (without ``dtype``) and the data statistics
    (elements, reference energies, mean neighbour count) of a mace-torch model record.

    Raises:
        UnsupportedMace: not a MACE model, or one with an option equinet does not reproduce.
    """
    if not isinstance(model, Record) or model.qualname not in MODEL_CLASSES:
        found = model.qualname if isinstance(model, Record) else type(model).__name__
        raise UnsupportedMace(f"not a mace-torch MACE or ScaleShiftMACE model (it holds {found})")
    _check_options(model)
    interactions, products, readouts = (_list(model.get(key)) for key in ("interactions", "products", "readouts"))
    if len(interactions) < 2:
        raise UnsupportedMace("num_interactions=1 is not supported yet")
    _check_blocks(interactions, readouts)
    hidden = irreps_of(interactions[0].get("hidden_irreps"))
    if any(ir.p != (-1) ** ir.l for _, ir in hidden):
        raise UnsupportedMace(f"hidden_irreps {hidden} has irreps of parity other than (-1)^l, which is not supported yet")
    last_hidden = irreps_of(interactions[-1].get("hidden_irreps"))
    if any(ir.l > 0 for _, ir in last_hidden):
        raise UnsupportedMace("keep_last_layer_irreps (non-scalar features after the last layer) is not supported yet")
    contractions = [_list(p.get("symmetric_contractions").get("contractions")) for p in products]
    correlation = _single([c.get("correlation") for layer in contractions for c in layer], "correlation")
    avg_num_neighbors = _single([block.get("avg_num_neighbors") for block in interactions], "avg_num_neighbors")
    energies = _only_tensor(model.get("atomic_energies_fn"), "atomic_energies").reshape(-1).tolist()
    elements = _only_tensor(model, "atomic_numbers").tolist()
    scale_shift = model.get("scale_shift")
    scale, shift = (1.0, 0.0) if scale_shift is None else (float(_only_tensor(scale_shift, k).reshape(-1)[0]) for k in ("scale", "shift"))
    config = {
        "name": "mace",
        **_radial(model),
        "scale": scale,
        "shift": shift,
        "hidden_irreps": str(hidden),
        "max_ell": irreps_of(model.get("spherical_harmonics").get("irreps_out")).lmax,
        "correlation": correlation,
        "num_interactions": len(interactions),
        "radial_hidden": list(_single([_radial_hidden(block) for block in interactions], "radial_MLP")),
        "readout_hidden": irreps_of(readouts[-1].get("linear_1").get("irreps_out")).num_irreps,
        "first_layer_residual": interactions[0].name == RESIDUAL_BLOCK,
        "product": "cg",
    }
    statistics = {
        "elements": elements,
        "atomic_energies": dict(zip(elements, energies)),
        "avg_num_neighbors": float(avg_num_neighbors),
    }
    return config, statistics
