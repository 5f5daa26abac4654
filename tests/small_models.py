"""Small models and structures shared by the model, kernel, backend and export tests."""

import numpy as np
import torch
from ase.build import bulk, molecule

from equinet.potentials import build_model

CUTOFF = 4.0
STATISTICS = {
    "elements": [1, 6, 8, 28, 29],
    "atomic_energies": {1: -13.6, 6: -1030.0, 8: -2040.0, 28: -4.1, 29: -3.7},
    "avg_num_neighbors": 12.0,
    "force_rms": 0.7,
    "energy_per_atom_mean": 0.05,
}
# One small configuration per model (and per variant, e.g. another product); every
# test below runs on each.
SMALL = {
    "nequip": {"name": "nequip", "num_channels": 4, "l_max": 2, "num_layers": 2, "radial_hidden": [8]},
    "mace": {"name": "mace", "hidden_irreps": "4x0e+4x1o", "max_ell": 2, "correlation": 3, "num_interactions": 2, "radial_hidden": [8]},
    "tensornet": {"name": "tensornet", "hidden_channels": 8, "num_layers": 2, "num_rbf": 8},
    "escn": {"name": "escn", "num_channels": 4, "l_max": 3, "m_max": 2, "num_layers": 2, "radial_hidden": [8]},
}
SMALL["mace-gaunt"] = {**SMALL["mace"], "product": "gaunt"}
SMALL["mace-residual"] = {**SMALL["mace"], "first_layer_residual": True}  # as MACE-MP-0
# as MACE-MPA-0, with the Gaussian basis and no readout MLP besides
SMALL["mace-mpa"] = {
    **SMALL["mace-residual"], "density_normalization": True, "pair_repulsion": True, "distance_transform": "agnesi",
    "radial_basis": "gaussian", "readout_hidden": 0,
}  # fmt: skip
SMALL["escn-gate"] = {**SMALL["escn"], "nonlinearity": "gate"}
# as MACE-MH: non-linear layers, edge irreps, one product for all elements, the envelope on the weights
SMALL["mace-mh"] = {
    **SMALL["mace"], "interaction": "nonlinear", "edge_irreps": "4x0e+4x1o+4x2e", "edge_irreps_first": True,
    "agnostic_product": True, "envelope": "weights", "readout_every_layer": False,
}  # fmt: skip


# Random weights of a fresh model give energies near zero; scaling them makes them count.
# eSCN's S2 activation is a cubic per layer, so its forces grow fast with the scale (at 1.5,
# 200 eV/Å on the molecule, where finite differences stop resolving them); 1.3 gives it
# forces of a few eV/Å, as 1.5 gives the others. MACE with density normalisation divides its
# messages by about 1 instead of the mean neighbour count (12): 1.1 keeps it as realistic.
WEIGHT_SCALE = {"escn": 1.3, "mace-mpa": 1.1}


def small_model(variant, dtype="float64", **overrides):
    """The small model ``SMALL[variant]`` with seeded random weights, scaled to give energies
    and forces of a realistic size, in eval mode."""
    torch.manual_seed(0)
    model = build_model({"dtype": dtype, "cutoff": CUTOFF, **SMALL[variant], **overrides}, STATISTICS)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(WEIGHT_SCALE.get(variant, 1.5))
    return model.eval()


def triclinic_alloy():
    """Triclinic 2-atom Cu/Ni cell: far smaller than the cutoff, atoms see their images."""
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.symbols[1] = "Ni"
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.08, 0.0], [0.0, 1.04, 0.1], [0.05, 0.0, 0.97]]), scale_atoms=True)
    atoms.rattle(0.1, seed=1)
    return atoms


def ethanol():
    """A rattled ethanol molecule (no cell)."""
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    return atoms
