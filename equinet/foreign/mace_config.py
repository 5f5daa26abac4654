"""The hyper-parameters of a mace-torch model, read from its records: the equinet ``mace``
config and data statistics that build the same architecture.

Supported: ``MACE`` and ``ScaleShiftMACE`` of mace-torch 0.3, one head of a multi-head
model, a first ``RealAgnostic[Density]InteractionBlock``,
``RealAgnostic[Density]ResidualInteractionBlock`` or
``RealAgnosticResidualNonLinearInteractionBlock`` (MACE-MH) and residual blocks of one kind
after it, linear blocks of one kind of normalisation, edge irreps (also scalars only in the
first layer), an element-agnostic product, the cutoff on the radial features or (non-linear
blocks only) on the weights, Bessel and Gaussian radial functions, the Agnesi and Soft
distance transforms, the ZBL pair repulsion, the polynomial cutoff, SiLU gates, linear
readouts per layer (or none) and a non-linear (or, with one layer, linear) readout on the
last layer, and MACE-OMOL's ``embedding_specs``: categorical embeddings of each graph's
``total_charge`` and ``total_spin``. Anything else is refused in one line that names the
option (:class:`UnsupportedMace`), never imported as a different model.
"""

from __future__ import annotations

import torch
from e3nn import o3

from .pickle_reader import Record

__all__ = ["UnsupportedMace", "embedding_specs", "head_index", "irreps_of", "mace_config"]

MODEL_CLASSES = {"mace.modules.models.MACE", "mace.modules.models.ScaleShiftMACE"}
NONLINEAR_BLOCK = "RealAgnosticResidualNonLinearInteractionBlock"
# First interaction blocks and whether they are residual; later blocks must be residual.
FIRST_BLOCKS = {
    "RealAgnosticInteractionBlock": False, "RealAgnosticResidualInteractionBlock": True,
    "RealAgnosticDensityInteractionBlock": False, "RealAgnosticDensityResidualInteractionBlock": True,
    NONLINEAR_BLOCK: True,
}  # fmt: skip
RESIDUAL_BLOCKS = ("RealAgnosticResidualInteractionBlock", "RealAgnosticDensityResidualInteractionBlock", NONLINEAR_BLOCK)
RADIAL_BASES = {"BesselBasis": "bessel", "GaussianBasis": "gaussian"}
DISTANCE_TRANSFORMS = {"AgnesiTransform": "agnesi", "SoftTransform": "soft"}
SILU, SIGMOID = "torch.nn.functional.silu", "torch.nn.functional.sigmoid"
DENSITY_HIDDEN = [64]  # the one hidden width of the non-linear blocks' density MLP
# The features of mace's embedding_specs equinet embeds, and their model config keys.
EMBEDDED_FEATURES = {"total_charge": "charge_embedding", "total_spin": "spin_embedding"}


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


def head_index(model: Record, head: str | None) -> int:
    """The index of ``head`` in the model's heads; for ``None``, its only head or the one
    named "default" (as mace-torch's calculator picks).

    Raises:
        UnsupportedMace: no such head, or several heads and none named "default".
    """
    heads = [str(name) for name in model.get("heads", None) or ["Default"]]
    if head is None:
        defaults = [i for i, name in enumerate(heads) if name.lower() == "default"]
        if len(heads) > 1 and not defaults:
            raise UnsupportedMace(f"has several heads ({', '.join(heads)}) and none named Default: pick one with head=")
        return 0 if len(heads) == 1 else defaults[0]
    if head not in heads:
        raise UnsupportedMace(f"has no head {head!r} (its heads: {', '.join(heads)})")
    return heads.index(head)


def _radial(model: Record) -> dict:
    embedding = model.get("radial_embedding")
    basis, cutoff = embedding.get("bessel_fn"), embedding.get("cutoff_fn")
    if basis.name == "ChebychevBasis":
        raise UnsupportedMace(
            "radial_type chebyshev is not supported: mace-torch's Chebyshev basis has no derivative in torch, "
            "so its forces leave out the radial part and are not those of its energy"
        )
    if basis.name not in RADIAL_BASES:
        raise UnsupportedMace(f"radial_type {basis.name} is not supported yet (BesselBasis or GaussianBasis)")
    if cutoff.name != "PolynomialCutoff":
        raise UnsupportedMace(f"cutoff function {cutoff.name} is not supported")
    transform = embedding.get("distance_transform")
    if transform is not None and transform.name not in DISTANCE_TRANSFORMS:
        raise UnsupportedMace(f"distance_transform {transform.name} is not supported yet (Agnesi or Soft)")
    num_basis = [tensor for name, tensor in basis.tensors().items() if name in ("bessel_weights", "gaussian_weights")]
    if len(num_basis) != 1:
        raise UnsupportedMace(f"its {basis.name} has no basis weights")
    return {
        "num_basis": num_basis[0].numel(),
        "radial_basis": RADIAL_BASES[basis.name],
        "distance_transform": None if transform is None else DISTANCE_TRANSFORMS[transform.name],
        "envelope_p": int(_only_tensor(cutoff, "p")),
        "cutoff": float(_only_tensor(cutoff, "r_max")),
    }


def _radial_hidden(interaction: Record) -> tuple[int, ...]:
    network = interaction.get("conv_tp_weights")
    if network.name == "RadialMLP":  # the non-linear blocks': widths [in, *hidden, out]
        return tuple(network.get("hs")[1:-1])
    layers = [network.children()[f"layer{i}"] for i in range(len(network.children()))]
    for layer in layers[:-1]:
        if getattr(layer.get("act").get("f"), "qualname", None) != SILU:
            raise UnsupportedMace("a radial MLP activation other than SiLU is not supported")
    return tuple(layer.get("h_out") for layer in layers[:-1])


def _check_nonlinear(block: Record) -> None:
    """A non-linear block's gate and density MLP are those equinet builds."""
    gate = block.get("equivariant_nonlin")
    acts = (getattr(gate.get("_act_scalar"), "qualname", None), getattr(gate.get("_act_gate"), "qualname", None))
    if acts != (SILU, SIGMOID) or gate.get("_layout_is_ir_mul"):
        raise UnsupportedMace("a non-linear interaction gate other than SiLU with sigmoid gates (mul_ir layout) is not supported")
    if list(block.get("density_fn").get("hs")[1:-1]) != DENSITY_HIDDEN:
        raise UnsupportedMace(f"a density MLP other than one hidden layer of {DENSITY_HIDDEN[0]} is not supported")


def _check_blocks(model: Record, interactions: list[Record], readouts: list[Record]) -> bool:
    """Whether the linear blocks normalise messages by a learned density (mace's Density blocks)."""
    if interactions[0].name not in FIRST_BLOCKS:
        raise UnsupportedMace(f"interaction_first {interactions[0].name} is not supported yet ({' or '.join(FIRST_BLOCKS)})")
    _single([block.name for block in interactions[1:]] or [RESIDUAL_BLOCKS[0]], "interaction")
    for block in interactions[1:]:
        if block.name not in RESIDUAL_BLOCKS:
            raise UnsupportedMace(f"interaction {block.name} is not supported yet ({' or '.join(RESIDUAL_BLOCKS)})")
    linear = [block for block in interactions if block.name != NONLINEAR_BLOCK]
    density = {"Density" in block.name for block in linear}
    if len(density) > 1:
        raise UnsupportedMace("density-normalised and plain interaction blocks in one model are not supported yet")
    if linear and not model.get("apply_cutoff", True):
        raise UnsupportedMace("apply_cutoff=False with linear interaction blocks is not supported yet (only with non-linear ones)")
    for block in interactions:
        for key in ("cueq_config", "oeq_config"):
            if block.get(key) is not None:
                raise UnsupportedMace(f"{key} is set (a model saved for cuEquivariance or OpenEquivariance); convert it back to e3nn first")
        if block.name == NONLINEAR_BLOCK:
            _check_nonlinear(block)
    every_layer = not model.get("use_last_readout_only", False)
    if len(readouts) != (len(interactions) if every_layer else 1) or any(r.name != "LinearReadoutBlock" for r in readouts[:-1]):
        raise UnsupportedMace("readouts other than a linear one per layer (or none) and a non-linear last one are not supported")
    if readouts[-1].name == "LinearReadoutBlock" and len(readouts) > 1:
        raise UnsupportedMace("a linear last readout after several layers is not supported yet")
    if readouts[-1].name not in ("NonLinearReadoutBlock", "LinearReadoutBlock"):
        raise UnsupportedMace(f"readout {readouts[-1].name} is not supported yet (NonLinearReadoutBlock)")
    if readouts[-1].name == "NonLinearReadoutBlock":
        acts = _list(readouts[-1].get("non_linearity").get("acts"))
        if len(acts) != 1 or getattr(acts[0].get("f"), "qualname", None) != SILU:
            raise UnsupportedMace("gate other than silu in the readout is not supported yet")
    return density.pop() if density else False


def _pair_repulsion(model: Record, envelope_p: int) -> bool:
    if not model.get("pair_repulsion", False):
        return False
    zbl = model.get("pair_repulsion_fn")
    if zbl is None or zbl.name != "ZBLBasis":
        raise UnsupportedMace("pair_repulsion other than ZBLBasis is not supported")
    if int(_only_tensor(zbl, "p")) != envelope_p:
        raise UnsupportedMace("a ZBL envelope exponent other than the radial cutoff's is not supported")
    return True


def _check_options(model: Record) -> None:
    if model.get("use_so3", False):
        raise UnsupportedMace("use_so3=True is not supported yet")
    if model.get("embedding_readout") is not None:
        raise UnsupportedMace("use_embedding_readout is not supported yet")
    sh = model.get("spherical_harmonics")
    if sh.get("normalize") is not True or sh.get("normalization") != "component":
        raise UnsupportedMace("spherical harmonics other than normalized, component-normalized ones are not supported")


def embedding_specs(model: Record) -> dict[str, dict]:
    """The ``embedding_specs`` of mace's joint embedding (``{}`` without one), in the order it
    joins the features, checked: categorical, per graph, ``total_charge`` or ``total_spin``."""
    joint = model.get("joint_embedding")
    if joint is None:
        return {}
    if joint.name != "GenericJointEmbedding":
        raise UnsupportedMace(f"joint_embedding {joint.name} is not supported (GenericJointEmbedding)")
    specs = joint.get("specs")
    for name, spec in specs.items():
        if name not in EMBEDDED_FEATURES:
            raise UnsupportedMace(f"embedding_specs feature {name!r} is not supported (only {' and '.join(EMBEDDED_FEATURES)})")
        if spec.get("per") != "graph":
            raise UnsupportedMace(f"embedding_specs {name} per {spec.get('per')!r} is not supported (per graph only)")
        if spec.get("type") != "categorical":
            raise UnsupportedMace(f"embedding_specs {name} of type {spec.get('type')!r} is not supported yet (categorical only)")
        if spec.get("offset", 0) != int(spec.get("offset", 0)):
            raise UnsupportedMace(f"embedding_specs {name} offset {spec['offset']!r} is not supported (whole numbers only)")
    return dict(specs)


def _charge_spin(model: Record) -> dict:
    """The ``charge_embedding`` and ``spin_embedding`` config of mace's embedding_specs."""
    config = dict.fromkeys(EMBEDDED_FEATURES.values())
    for name, spec in embedding_specs(model).items():
        config[EMBEDDED_FEATURES[name]] = {"classes": int(spec["num_classes"]), "offset": int(spec.get("offset", 0)), "dim": int(spec["emb_dim"])}
    return config


def _single(values: list, option: str):
    if len(set(values)) != 1:
        raise UnsupportedMace(f"{option} that differs between layers ({values}) is not supported yet")
    return values[0]


def check_model_class(model) -> None:
    """Raises UnsupportedMace unless ``model`` is a record of mace-torch's MACE or ScaleShiftMACE."""
    if not isinstance(model, Record) or model.qualname not in MODEL_CLASSES:
        found = model.qualname if isinstance(model, Record) else type(model).__name__
        raise UnsupportedMace(f"not a mace-torch MACE or ScaleShiftMACE model (it holds {found})")


def mace_config(model: Record, head: int = 0) -> tuple[dict, dict]:
    """The equinet ``mace`` config (without ``dtype``) and the data statistics
    (elements, reference energies, mean neighbour count) of head ``head`` (an index,
    :func:`head_index`) of a mace-torch model record.

    Raises:
        UnsupportedMace: not a MACE model, or one with an option equinet does not reproduce.
    """
    check_model_class(model)
    _check_options(model)
    interactions, products, readouts = (_list(model.get(key)) for key in ("interactions", "products", "readouts"))
    density_normalization = _check_blocks(model, interactions, readouts)
    hidden = irreps_of(interactions[0].get("hidden_irreps"))
    if any(ir.p != (-1) ** ir.l for _, ir in hidden):
        raise UnsupportedMace(f"hidden_irreps {hidden} has irreps of parity other than (-1)^l, which is not supported yet")
    last_hidden = irreps_of(interactions[-1].get("hidden_irreps"))
    if any(ir.l > 0 for _, ir in last_hidden):
        raise UnsupportedMace("keep_last_layer_irreps (non-scalar features after the last layer) is not supported yet")
    contractions = [_list(p.get("symmetric_contractions").get("contractions")) for p in products]
    correlation = _single([c.get("correlation") for layer in contractions for c in layer], "correlation")
    avg_num_neighbors = _single([block.get("avg_num_neighbors") for block in interactions], "avg_num_neighbors")
    elements = _only_tensor(model, "atomic_numbers").tolist()
    energies = _only_tensor(model.get("atomic_energies_fn"), "atomic_energies").reshape(-1, len(elements))[head].tolist()
    scale, shift = head_scale_shift(model, head)
    radial = _radial(model)
    last_readout = readouts[-1]
    config = {
        "name": "mace",
        **radial,
        "density_normalization": density_normalization,
        "pair_repulsion": _pair_repulsion(model, radial["envelope_p"]),
        "scale": scale,
        "shift": shift,
        "hidden_irreps": str(hidden),
        "max_ell": irreps_of(model.get("spherical_harmonics").get("irreps_out")).lmax,
        "correlation": correlation,
        "num_interactions": len(interactions),
        "radial_hidden": list(_single([_radial_hidden(block) for block in interactions], "radial_MLP")),
        "readout_hidden": 0 if last_readout.name == "LinearReadoutBlock" else readout_width(model),
        "readout_every_layer": not model.get("use_last_readout_only", False),
        "first_layer_residual": FIRST_BLOCKS[interactions[0].name],
        "interaction": _kind(interactions[-1]),
        "first_interaction": _kind(interactions[0]),
        **_edge_irreps(model),
        "agnostic_product": bool(model.get("use_agnostic_product", False)),
        "envelope": "basis" if model.get("apply_cutoff", True) else "weights",
        "product": "cg",
        **_charge_spin(model),
    }
    statistics = {
        "elements": elements,
        "atomic_energies": dict(zip(elements, energies)),
        "avg_num_neighbors": float(avg_num_neighbors),
    }
    return config, statistics


def _kind(block: Record) -> str:
    return "nonlinear" if block.name == NONLINEAR_BLOCK else "linear"


def _edge_irreps(model: Record) -> dict:
    edge = model.get("edge_irreps", None)
    return {"edge_irreps": None if edge is None else str(irreps_of(edge)), "edge_irreps_first": bool(model.get("use_edge_irreps_first", False))}


def head_scale_shift(model: Record, head: int) -> tuple[float, float]:
    """mace's energy scale and shift of one head (1 and 0 for the ``MACE`` class)."""
    scale_shift = model.get("scale_shift")
    if scale_shift is None:
        return 1.0, 0.0
    scale, shift = (_only_tensor(scale_shift, key).reshape(-1) for key in ("scale", "shift"))
    return float(scale[head if len(scale) > 1 else 0]), float(shift[head if len(shift) > 1 else 0])


def readout_width(model: Record) -> int:
    """The width of one head's hidden layer in the last, non-linear readout (mace's
    ``MLP_irreps``; the layer holds one such block per head)."""
    readout = _list(model.get("readouts"))[-1]
    num_heads = len(model.get("heads", None) or ["Default"])
    return irreps_of(readout.get("linear_1").get("irreps_out")).num_irreps // num_heads
