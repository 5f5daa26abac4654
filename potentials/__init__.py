"""GNN interatomic potentials (``equinet.potentials``) on one shared base.

    model = build_model({"name": "mace", "hidden_irreps": "64x0e+64x1o"}, statistics)
    out = model(batch, forces=True, stress=True)   # energy [B], node_energy [n], forces [n,3], stress [B,3,3]
"""

from .base import Potential
from .mace import MACE
from .nequip import NequIP
from .registry import MODELS, build_model, register_model

__all__ = ["MACE", "MODELS", "NequIP", "Potential", "build_model", "register_model"]
