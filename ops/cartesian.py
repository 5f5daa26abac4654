"""Rank-2 Cartesian tensors and TensorNet's message passing (Simeon & De Fabritiis,
NeurIPS 2023; TorchMD-Net 2.0).

A 3 x 3 tensor splits into three irreducible parts, orthogonal in the Frobenius
inner product ``<X, Y> = sum_ab X_ab Y_ab``:

    X = I + A + S,    I = tr(X)/3 * 1            (scalar, l = 0, 1 component)
                      A = (X - X^T)/2            (skew-symmetric, l = 1, 3 components)
                      S = (X + X^T)/2 - I        (symmetric traceless, l = 2, 5 components)

Features are ``[N, C, 3, 3]``: N atoms (or edges), C channels, one 3 x 3 tensor each.

Transformation laws under an orthogonal matrix R (det R = +1 or -1):

* A tensor built from polar vectors (``u v^T``) is a true tensor: ``X -> R X R^T``,
  and so is each of its parts. The axial vector ``a`` of its skew part
  (``A w = a x w``) is a pseudovector: ``a -> det(R) R a``.
* TensorNet's edge tensors are built from the unit edge vector r: ``1``,
  ``A(r) = [r]_x`` (the cross-product matrix of r, i.e. r used as an axial vector) and
  ``S(r) = r r^T - 1/3``. ``S(Rr) = R S(r) R^T`` and ``1`` is invariant, but
  ``A(Rr) = det(R) R A(r) R^T``: under an improper rotation the skew part of every
  TensorNet feature picks up a sign, ``X -> R (I + det(R) A + S) R^T``. For the
  inversion (R = -1) that is ``X -> X^T``.

:class:`TensorMessagePassing` is equivariant under both laws: its linear maps act on
each part separately, and its products are symmetrized (``M Y + Y M``), which commutes
with the transpose. So TensorNet is O(3)-equivariant and its invariants (the norms of
I, A and S) are unchanged by rotations and reflections alike.
"""

from __future__ import annotations

import torch

from .scatter import gather_scale_scatter

__all__ = [
    "CartesianLinear",
    "TensorMessagePassing",
    "axial_vector",
    "compose_tensor",
    "decompose_tensor",
    "edge_tensors",
    "frobenius_norm_squared",
    "skew_symmetric",
    "symmetric_traceless",
]


def _check_matrices(name: str, x: torch.Tensor) -> None:
    if x.dim() < 2 or x.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must be a tensor of 3 x 3 matrices [..., 3, 3], got shape {list(x.shape)}")


def _check_vectors(name: str, v: torch.Tensor) -> None:
    if v.dim() < 1 or v.shape[-1] != 3:
        raise ValueError(f"{name} must be a tensor of 3-vectors [..., 3], got shape {list(v.shape)}")


def skew_symmetric(vector: torch.Tensor) -> torch.Tensor:
    """The cross-product matrix ``[v]_x`` with ``[v]_x w = v x w``.

    ::

        [[ 0,  -v_z,  v_y],
         [ v_z,  0,  -v_x],
         [-v_y,  v_x,  0 ]]

    Shapes: ``vector: [..., 3]`` → ``[..., 3, 3]``. Units: those of ``vector``.
    ``[Rv]_x = det(R) R [v]_x R^T``: a polar vector makes a skew tensor of the wrong parity.
    """
    _check_vectors("vector", vector)
    x, y, z = vector.unbind(-1)
    zero = torch.zeros_like(x)
    rows = (torch.stack((zero, -z, y), -1), torch.stack((z, zero, -x), -1), torch.stack((-y, x, zero), -1))
    return torch.stack(rows, dim=-2)


def axial_vector(skew: torch.Tensor) -> torch.Tensor:
    """The vector ``a`` of a skew-symmetric matrix, ``A = [a]_x`` (inverse of :func:`skew_symmetric`).

    Only the skew part of the input counts. Shapes: ``[..., 3, 3]`` → ``[..., 3]``.
    """
    _check_matrices("skew", skew)
    return 0.5 * torch.stack(
        (skew[..., 2, 1] - skew[..., 1, 2], skew[..., 0, 2] - skew[..., 2, 0], skew[..., 1, 0] - skew[..., 0, 1]), -1
    )


def symmetric_traceless(vector: torch.Tensor) -> torch.Tensor:
    """The symmetric traceless part of the outer product: ``v v^T - |v|^2 / 3 * 1``.

    Shapes: ``vector: [..., 3]`` → ``[..., 3, 3]``. Units: those of ``vector``, squared.
    """
    _check_vectors("vector", vector)
    outer = vector.unsqueeze(-1) * vector.unsqueeze(-2)
    eye = torch.eye(3, dtype=vector.dtype, device=vector.device)
    return outer - vector.square().sum(-1)[..., None, None] / 3 * eye


def edge_tensors(edge_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TensorNet's edge tensors of the unit vectors ``r = edge_vec / |edge_vec|``.

    Returns ``(1, [r]_x, r r^T - 1/3)``: the identity, the skew-symmetric and the
    symmetric traceless tensor, each ``[E, 3, 3]`` and dimensionless, from
    ``edge_vec: [E, 3]`` (Å; must not be zero). See the module docstring for how each
    transforms under rotations and reflections.
    """
    _check_vectors("edge_vec", edge_vec)
    unit = edge_vec / edge_vec.norm(dim=-1, keepdim=True)
    eye = torch.eye(3, dtype=edge_vec.dtype, device=edge_vec.device).expand(*edge_vec.shape[:-1], 3, 3)
    return eye, skew_symmetric(unit), symmetric_traceless(unit)


def decompose_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``X → (I, A, S)``: the scalar, skew-symmetric and symmetric traceless parts.

    ``I = tr(X)/3 * 1``, ``A = (X - X^T)/2``, ``S = (X + X^T)/2 - I``; exact
    (``I + A + S == X`` up to rounding) and mutually orthogonal (Frobenius).

    Shapes: ``x: [..., 3, 3]`` → three ``[..., 3, 3]``.
    """
    _check_matrices("x", x)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    identity = x.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None] * eye
    transpose = x.transpose(-2, -1)
    return identity, 0.5 * (x - transpose), 0.5 * (x + transpose) - identity


def compose_tensor(identity: torch.Tensor, skew: torch.Tensor, traceless: torch.Tensor) -> torch.Tensor:
    """``(I, A, S) → X = I + A + S``, the inverse of :func:`decompose_tensor`.

    Shapes: three ``[..., 3, 3]`` (broadcast) → ``[..., 3, 3]``.
    """
    return identity + skew + traceless


def frobenius_norm_squared(x: torch.Tensor) -> torch.Tensor:
    """``|X|^2 = sum_ab X_ab^2`` of each matrix (TorchMD-Net's ``tensor_norm``).

    Invariant under ``X -> R X R^T`` and under transposition; for the parts of one
    tensor, ``|X|^2 = |I|^2 + |A|^2 + |S|^2``. Shapes: ``[..., 3, 3]`` → ``[...]``.
    """
    _check_matrices("x", x)
    return x.square().sum((-2, -1))


class CartesianLinear(torch.nn.Module):
    """Channel mixing of the three parts, each by its own weight matrix:

        I'_d = sum_c W^I_dc I_c,   A'_d = sum_c W^A_dc A_c,   S'_d = sum_c W^S_dc S_c

    No bias: a bias on A or S would pick a direction and break equivariance (one on I
    would not, but TensorNet has none). Mixing channels commutes with ``R X R^T`` and
    keeps each part in its subspace, so the map is equivariant under both laws of the
    module docstring. Weights initialized as ``torch.nn.Linear``'s.

    Shapes: three ``[N, in_channels, 3, 3]`` → three ``[N, out_channels, 3, 3]``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.identity = torch.nn.Linear(in_channels, out_channels, bias=False)
        self.skew = torch.nn.Linear(in_channels, out_channels, bias=False)
        self.traceless = torch.nn.Linear(in_channels, out_channels, bias=False)

    def _mix(self, linear: torch.nn.Linear, x: torch.Tensor, name: str) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.in_channels, 3, 3):
            raise ValueError(f"{name} must have shape [N, {self.in_channels}, 3, 3] (in_channels = {self.in_channels}), got {list(x.shape)}")
        # Channels last for the matmul, then back: [N, C, 3, 3] → [N, 3, 3, C] → [N, C', 3, 3].
        return linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(
        self, identity: torch.Tensor, skew: torch.Tensor, traceless: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            self._mix(self.identity, identity, "identity"),
            self._mix(self.skew, skew, "skew"),
            self._mix(self.traceless, traceless, "traceless"),
        )

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"


_TRANSPOSE = torch.tensor([0, 3, 6, 1, 4, 7, 2, 5, 8])  # X.flatten(-2)[..., _TRANSPOSE] = X^T.flatten(-2)


class TensorMessagePassing(torch.nn.Module):
    """One TensorNet interaction (the O(3) variant of TorchMD-Net's ``Interaction``).

    For atom i with feature ``X_i`` and neighbours j (edges j → i):

        X_i  <- X_i / (|X_i|^2 + 1)                                    per channel
        Y_i   = W^I I_i + W^A A_i + W^S S_i                            (I, A, S) = parts of X_i
        M_i   = sum_j  f^I_ji W^I I_j + f^A_ji W^A A_j + f^S_ji W^S S_j
        P_i   = (M_i Y_i + Y_i M_i) / (|M_i Y_i + Y_i M_i|^2 + 1)
        dX_i  = W'^I I(P_i) + W'^A A(P_i) + W'^S S(P_i)
        out_i = X_i + dX_i + dX_i dX_i

    with matrix products per channel, ``|.|^2`` the squared Frobenius norm, ``W, W'``
    :class:`CartesianLinear` maps and ``f_ji`` invariant per-edge, per-channel weights
    (in TensorNet a radial MLP times the cutoff envelope). The residual adds the
    normalized ``X_i``, as TorchMD-Net does. The symmetrized product ``M Y + Y M`` makes
    the layer equivariant under reflections for both transformation laws of the module
    docstring.

    ``forward`` runs :meth:`node_tensors` (``X_i``, ``Y_i``), :meth:`summed_messages`
    (``M_i``, the only sum over edges) and :meth:`update` in turn; a caller that sums the
    edges block by block calls the three itself.

    Args:
        channels: C, the number of tensor channels.

    Shapes: ``x: [n, C, 3, 3]``, ``edge_weights: [E, 3, C]`` (the factors f^I, f^A, f^S
    of each edge, dimensionless), ``edge_index: [2, E]`` (row 0 senders j, row 1
    receivers i) → ``[n, C, 3, 3]``.
    """

    def __init__(self, channels: int):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.channels = channels
        self.linear_in = CartesianLinear(channels, channels)
        self.linear_out = CartesianLinear(channels, channels)

    def forward(self, x: torch.Tensor, edge_weights: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x, y = self.node_tensors(x)
        return self.update(x, y, self.summed_messages(y, edge_weights, edge_index, x.shape[0]))

    def _check_features(self, name: str, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1:] != (self.channels, 3, 3):
            raise ValueError(f"{name} must have shape [n, {self.channels}, 3, 3] (channels = {self.channels}), got {list(x.shape)}")

    def node_tensors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first step: the normalized ``X_i / (|X_i|^2 + 1)`` and ``Y_i``.

        Shapes: ``x: [n, C, 3, 3]`` → two ``[n, C, 3, 3]`` (``Y`` contiguous).
        """
        self._check_features("x", x)
        x = x / (frobenius_norm_squared(x) + 1)[..., None, None]
        # contiguous: CartesianLinear's outputs are permuted views, and gathers of strided rows are slow
        return x, compose_tensor(*self.linear_in(*decompose_tensor(x))).contiguous()

    def summed_messages(self, y: torch.Tensor, edge_weights: torch.Tensor, edge_index: torch.Tensor, num_receivers: int) -> torch.Tensor:
        """The sum over edges: ``M_i = sum_j f^I_ji I(Y_j) + f^A_ji A(Y_j) + f^S_ji S(Y_j)``.

        Senders (row 0 of ``edge_index``) index the rows of ``y``, receivers (row 1) the
        ``num_receivers`` rows of the output, so that a block of edges can read a table of
        its senders' rows and sum into rows of its own receivers.

        Shapes: ``y: [n_s, C, 3, 3]``, ``edge_weights: [E, 3, C]``, ``edge_index: [2, E]``
        → ``[num_receivers, C, 3, 3]``.
        """
        channels = self.channels
        self._check_features("y", y)
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E] (senders, receivers), got {list(edge_index.shape)}")
        if edge_weights.shape != (edge_index.shape[1], 3, channels):
            raise ValueError(
                f"edge_weights must have shape [E, 3, {channels}] = {[edge_index.shape[1], 3, channels]} "
                f"(one factor per edge, part I/A/S and channel), got {list(edge_weights.shape)}"
            )
        sender, receiver = edge_index
        # f^I I + f^A A + f^S S of Y_j's parts is a Y_j + b Y_j^T + c tr(Y_j) 1, so the
        # messages need Y_j alone (not one gather per part). The sums of a Y_j and b Y_j
        # are formed at the receivers (gather_scale_scatter, channels last: no
        # [E, 9, C] tensors) and the second is transposed there, on n (not E) matrices,
        # by permuting its 9 entries; the trace term is summed as scalars.
        f_i, f_a, f_s = edge_weights.unbind(1)  # [E, C] each
        n, y_entries = num_receivers, y.flatten(-2).transpose(1, 2).contiguous()  # [n_s, 9, C]
        m_a = gather_scale_scatter(y_entries, 0.5 * (f_a + f_s), sender, receiver, n)
        m_b = gather_scale_scatter(y_entries, 0.5 * (f_s - f_a), sender, receiver, n)
        trace = y.diagonal(dim1=-2, dim2=-1).sum(-1).unsqueeze(1)  # [n_s, 1, C]
        m_trace = gather_scale_scatter(trace, (f_i - f_s) / 3, sender, receiver, n)  # [n, 1, C]
        shape = (n, channels, 3, 3)
        m_b_transposed = m_b.index_select(1, _TRANSPOSE.to(y.device)).transpose(1, 2).reshape(shape)
        m_a, m_trace = m_a.transpose(1, 2).reshape(shape), m_trace.view(n, -1, 1, 1)
        return m_a + m_b_transposed + m_trace * torch.eye(3, dtype=y.dtype, device=y.device)

    def update(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """The last step: ``P_i``, ``dX_i`` and ``out_i = X_i + dX_i + dX_i dX_i`` from the
        normalized ``X_i`` and ``Y_i`` (:meth:`node_tensors`) and ``M_i`` (:meth:`summed_messages`).

        Shapes: three ``[n, C, 3, 3]`` → ``[n, C, 3, 3]``.
        """
        product = m @ y + y @ m
        product = product / (frobenius_norm_squared(product) + 1)[..., None, None]
        dx = compose_tensor(*self.linear_out(*decompose_tensor(product)))
        return x + dx + dx @ dx

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
