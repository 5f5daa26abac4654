"""GNN interatomic potentials (``equinet.potentials``) on one shared base.

    model = build_model({"name": "mace", "hidden_irreps": "64x0e+64x1o"}, statistics)
    out = model(batch, forces=True, stress=True)   # energy [B], node_energy [n], forces [n,3], stress [B,3,3]
"""

from .accelerate import accelerate
from .base import Potential
from .escn import ESCN
from .mace import MACE
from .nequip import NequIP
from .registry import MODELS, build_model, register_model
from .tensornet import TensorNet

__all__ = ["ESCN", "MACE", "MODELS", "NequIP", "Potential", "TensorNet", "accelerate", "build_model", "register_model"]
