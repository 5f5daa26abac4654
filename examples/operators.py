"""A NequIP-style message-passing step with equinet.ops, checked for equivariance.

    python examples/operators.py
"""

import torch
from e3nn import o3

from equinet.ops import BesselBasis, CGConvolution, Linear, PolynomialCutoff, spherical_harmonics
from equinet.testing import assert_equivariant

torch.set_default_dtype(torch.float64)
torch.manual_seed(0)

# A random "molecule": 12 atoms, every pair closer than the cutoff is an edge.
cutoff = 4.0
pos = 2.0 * torch.randn(12, 3)
sender, receiver = torch.where((torch.cdist(pos, pos) < cutoff) & ~torch.eye(12, dtype=torch.bool))
edge_index = torch.stack([sender, receiver])

irreps_node = o3.Irreps("16x0e+8x1o+4x2e")
conv = CGConvolution(irreps_node, o3.Irreps.spherical_harmonics(3), irreps_out=irreps_node)
radial = torch.nn.Sequential(BesselBasis(cutoff, 8), torch.nn.Linear(8, conv.weight_numel))
envelope = PolynomialCutoff(cutoff)
mix = Linear(conv.irreps_out, irreps_node)


def message_passing(node_feats: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    edge_vec = positions[edge_index[1]] - positions[edge_index[0]]
    length = edge_vec.norm(dim=-1)
    edge_weights = radial(length) * envelope(length).unsqueeze(-1)
    return mix(conv(node_feats, spherical_harmonics(3, edge_vec), edge_weights, edge_index))


node_feats = irreps_node.randn(12, -1)
out = message_passing(node_feats, pos)
print(f"{edge_index.shape[1]} edges; {conv}")
print(f"output {tuple(out.shape)} with irreps {mix.irreps_out}")
error = assert_equivariant(message_passing, [node_feats, pos], [irreps_node, "1o"], irreps_node)
print(f"equivariance error under a random rotation and reflection: {error:.1e}")
