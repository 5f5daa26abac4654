"""Edge and atom blocks as loops over blocks of a fixed size, in a graph traced for export
(:mod:`equinet.export`) and in eager inference.

An edge block holds ``edges`` consecutive edges: it reads a table of its own senders' rows
and sums into the rows of its first to its last receiver (:class:`EdgeBlockSum`), so edges
sorted by receiver (as the LAMMPS plugin and the models' inference list them) make blocks
of a few atoms each; any order gives the same sums. Its backward (:class:`
EdgeBlockSumBackward`) recomputes each block's forward and adds the block's gradients into
one gradient of the atoms' features. Per-edge intermediates so exist for one block at a time.

``make_fx`` unrolls Python loops: a graph traced with its edges in blocks would hold a copy
of a block's forward and backward per block, their number fixed when traced. Instead, while
a model is traced with :class:`Looped` blocks (inside :func:`recording`), each sum over
edge blocks (:func:`.blocks.summed_over_edge_blocks`) and each per-atom step in atom blocks
(:func:`.blocks.over_node_blocks`) is one opaque operator of the graph (``equinet::
edge_blocks``, ``equinet::atom_blocks`` and their backward operators). The block's function
is traced on its own, once for its forward and once for its backward, with symbolic sizes;
:func:`as_loops` then puts the TorchScript modules that loop over the blocks in place of the
operators. The graph's size so does not depend on the structure's, nor on the blocks'. In
eager inference, :func:`eager_edge_sum` runs the same loops under autograd.
"""

import contextlib
import operator
from typing import Callable, List, NamedTuple, Sequence, Tuple

import torch
from torch import Tensor
from torch.fx.experimental.proxy_tensor import make_fx

__all__ = [
    "AtomBlocks", "AtomBlocksBackward", "EdgeBlockSum", "EdgeBlockSumBackward", "Looped", "as_loops", "atom_map", "eager_edge_sum",
    "edge_sum", "recording", "set_block_sizes",
]  # fmt: skip


class Looped(NamedTuple):
    """Blocks of ``edges`` edges and ``atoms`` atoms (``None``: all atoms at once), looped
    over at run time in a graph traced inside :func:`recording`."""

    edges: int
    atoms: int | None


class _Block(NamedTuple):
    """One blocked step, traced on its own: ``forward(inputs) -> outputs`` and
    ``backward(inputs + output gradients) -> gradients of the inputs in wants`` (``None``
    where no output is differentiable), each a graph of lists; the outputs' sizes after the
    first, and their dtypes."""

    forward: torch.fx.GraphModule
    backward: torch.fx.GraphModule | None
    tails: list[list[int]]
    dtypes: list[torch.dtype]
    wants: list[bool]


class _Recorder:
    """The blocked steps of one model call: traced one by one in an eager call
    (``tracing`` off), then called as operators in the same order in the traced call."""

    def __init__(self):
        self.blocks: list[_Block] = []
        self.tracing = False
        self.calls = 0

    def next_key(self) -> int:
        self.calls += 1
        return self.calls - 1


_recorder: _Recorder | None = None


@contextlib.contextmanager
def recording():
    """Inside: model calls with :class:`Looped` blocks, first an eager one that traces each
    blocked step, then (after ``recorder.tracing = True``) the ``make_fx`` trace."""
    global _recorder
    _recorder = _Recorder()
    try:
        yield _recorder
    finally:
        _recorder = None


def _active() -> _Recorder:
    if _recorder is None:
        raise RuntimeError("Looped blocks run only in a graph traced for export (equinet.export)")
    return _recorder


def edge_sum(messages: Callable[..., Tensor], nodes: Tensor, edge_inputs: Sequence[Tensor], edge_index: Tensor, edges: int) -> Tensor:
    """:func:`.blocks.summed_over_edge_blocks` with :class:`Looped` blocks of ``edges`` edges."""
    recorder = _active()
    if not recorder.tracing:
        senders, local_index, first, last = _edge_window(edge_index, 0, edge_index.shape[1])
        example = [nodes.detach().index_select(0, senders), *(tensor.detach() for tensor in edge_inputs), local_index, nodes.new_empty(last - first, 0)]
        recorder.blocks.append(_traced_block(_edge_block(messages), example, [nodes.requires_grad, *(tensor.requires_grad for tensor in edge_inputs)]))
        return messages(nodes, *edge_inputs, edge_index, nodes.shape[0])
    return torch.ops.equinet.edge_blocks(nodes, list(edge_inputs), edge_index, recorder.next_key(), edges)


def atom_map(fn: Callable[..., Tensor | tuple[Tensor, ...]], node_inputs: Sequence[Tensor], atoms: int) -> Tensor | tuple[Tensor, ...]:
    """:func:`.blocks.over_node_blocks` with :class:`Looped` blocks of ``atoms`` atoms."""
    recorder = _active()
    if not recorder.tracing:

        def as_list(inputs: List[Tensor]) -> List[Tensor]:
            outputs = fn(*inputs)
            return list(outputs) if isinstance(outputs, tuple) else [outputs]

        example = [tensor.detach() for tensor in node_inputs]
        recorder.blocks.append(_traced_block(as_list, example, [tensor.requires_grad for tensor in node_inputs]))
        return fn(*node_inputs)
    key = recorder.next_key()
    outputs = torch.ops.equinet.atom_blocks(list(node_inputs), key, atoms)
    return outputs[0] if len(recorder.blocks[key].tails) == 1 else tuple(outputs)


def _edge_block(messages: Callable[..., Tensor]) -> Callable[[List[Tensor]], List[Tensor]]:
    """The block function of :class:`EdgeBlockSum` for ``messages(table, *edge inputs,
    local edge index, num_receivers)``."""

    def block(inputs: List[Tensor]) -> List[Tensor]:  # table, edge inputs, local edge index, [receivers, 0]
        table, *block_inputs, local_index, receivers = inputs
        return [messages(table, *block_inputs, local_index, receivers.shape[0])]

    return block


def _recomputed_backward(fn: Callable[[List[Tensor]], List[Tensor]], wants: List[bool]) -> Callable[[List[Tensor]], List[Tensor]]:
    """The backward block function of ``fn``: ``fn``'s inputs and its outputs' gradients →
    the gradients of the inputs in ``wants``, with ``fn``'s forward recomputed."""

    def backward(inputs: List[Tensor]) -> List[Tensor]:
        inputs, output_grads = inputs[: len(wants)], inputs[len(wants) :]
        inputs = [tensor.detach().requires_grad_(want) for tensor, want in zip(inputs, wants)]
        wanted = [tensor for tensor, want in zip(inputs, wants) if want]
        with torch.enable_grad():
            outputs, grads = zip(*((output, grad) for output, grad in zip(fn(inputs), output_grads) if output.requires_grad))
            grads = torch.autograd.grad(outputs, wanted, grads, allow_unused=True)
        return [torch.zeros_like(tensor) if grad is None else grad for tensor, grad in zip(wanted, grads)]

    return backward


def _traced_block(fn: Callable[[List[Tensor]], List[Tensor]], example: List[Tensor], wants: List[bool]) -> _Block:
    """``fn`` and its backward for the inputs in ``wants`` (the rest take no gradient),
    traced on ``example`` with symbolic sizes."""
    wants = wants + [False] * (len(example) - len(wants))
    with torch.enable_grad():
        outputs = fn([tensor.detach().requires_grad_(want) for tensor, want in zip(example, wants)])
    has_backward = any(output.requires_grad for output in outputs)
    example_grads = [torch.ones_like(output.detach()) for output in outputs]
    return _Block(
        forward=_list_graph(fn, example),
        backward=_list_graph(_recomputed_backward(fn, wants), example + example_grads) if has_backward else None,
        tails=[list(output.shape[1:]) for output in outputs],
        dtypes=[output.dtype for output in outputs],
        wants=wants,
    )


def _list_graph(fn: Callable[[List[Tensor]], List[Tensor]], example: List[Tensor]) -> torch.fx.GraphModule:
    """``fn`` traced with symbolic sizes (no two sizes assumed equal) into a graph whose
    forward takes and returns one list of tensors, as TorchScript calls it in a loop."""
    with torch.fx.experimental._config.patch(use_duck_shape=False):
        traced = make_fx(fn, tracing_mode="symbolic", _allow_non_fake_inputs=True)(example)
    graph = traced.graph
    graph._codegen = torch.fx.graph.CodeGen()  # flat placeholders, no pytree code
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    with graph.inserting_before(placeholders[0]):
        inputs = graph.placeholder("inputs", type_expr=List[Tensor])
    for index, placeholder in enumerate(placeholders):
        with graph.inserting_before(placeholder):
            item = graph.call_function(operator.getitem, (inputs, index))
        placeholder.replace_all_uses_with(item)
        graph.erase_node(placeholder)
    output = next(node for node in graph.nodes if node.op == "output")
    output.args = (list(output.args[0]),)
    traced.recompile()
    return traced


def _block_inputs(nodes: Tensor, edge_inputs: List[Tensor], edge_index: Tensor, start: int, stop: int) -> Tuple[List[Tensor], Tensor, int, int]:
    """The inputs of the block function for edges ``start .. stop`` (:class:`EdgeBlockSum`),
    the block's senders, and its receivers' rows ``first``, ``last``."""
    senders, local_index, first, last = _edge_window(edge_index, start, stop)
    inputs = [nodes.index_select(0, senders)] + [tensor[start:stop] for tensor in edge_inputs]
    return inputs + [local_index, nodes.new_empty([last - first, 0])], senders, first, last


def _edge_window(edge_index: Tensor, start: int, stop: int) -> Tuple[Tensor, Tensor, int, int]:
    """Edges ``start .. stop`` as a block: its senders (sorted, distinct), its edge index
    into those and into its receivers ``first .. last - 1``, and ``first``, ``last``."""
    sender, receiver = edge_index[0, start:stop], edge_index[1, start:stop]
    senders, local_sender = torch.unique(sender, sorted=True, return_inverse=True)
    first = int(receiver.min())
    last = int(receiver.max()) + 1
    return senders, torch.stack([local_sender, receiver - first]), first, last


class EdgeBlockSum(torch.nn.Module):
    """The sum over edges of a block function ``block([table, *edge inputs, local edge
    index, [receivers, 0]]) -> [sum]``, ``size`` edges at a time (:func:`_edge_window`);
    the sum's rows are ``tail``-shaped, of ``dtype``.

    Shapes: ``nodes [n, ...]``, ``edge_inputs [E, ...]`` each, ``edge_index [2, E]`` →
    ``[n, *tail]``."""

    tail: List[int]

    def __init__(self, block: torch.nn.Module, size: int, tail: List[int], dtype: torch.dtype):
        super().__init__()
        self.block, self.size, self.tail = block, size, tail
        self.register_buffer("like", torch.empty(0, dtype=dtype), persistent=False)

    def forward(self, nodes: Tensor, edge_inputs: List[Tensor], edge_index: Tensor) -> Tensor:
        num_edges = edge_index.shape[1]
        total = self.like.new_zeros([nodes.shape[0]] + self.tail)
        for start in range(0, num_edges, self.size):
            stop = min(start + self.size, num_edges)
            inputs, _, first, last = _block_inputs(nodes, edge_inputs, edge_index, start, stop)
            total[first:last] += self.block(inputs)[0]
        return total


class EdgeBlockSumBackward(torch.nn.Module):
    """The gradients of :class:`EdgeBlockSum`'s sum for the inputs in ``wants`` (``nodes``,
    then each edge input) from that of the sum, ``grad [n, *tail]``, block by block with
    the backward block function ``block(forward inputs + [grad rows]) -> gradients``."""

    wants: List[bool]

    def __init__(self, block: torch.nn.Module, size: int, wants: List[bool]):
        super().__init__()
        self.block, self.size, self.wants = block, size, wants

    def forward(self, grad: Tensor, nodes: Tensor, edge_inputs: List[Tensor], edge_index: Tensor) -> List[Tensor]:
        num_edges = edge_index.shape[1]
        grad_nodes = torch.zeros_like(nodes)
        pieces: List[List[Tensor]] = [[] for _ in edge_inputs]
        for start in range(0, num_edges, self.size):
            stop = min(start + self.size, num_edges)
            inputs, senders, first, last = _block_inputs(nodes, edge_inputs, edge_index, start, stop)
            grads = self.block(inputs + [grad[first:last]])
            taken = 0
            if self.wants[0]:
                grad_nodes.index_add_(0, senders, grads[0])
                taken = 1
            for index in range(len(edge_inputs)):
                if self.wants[index + 1]:
                    pieces[index].append(grads[taken])
                    taken += 1
        out = [grad_nodes] if self.wants[0] else []
        for index in range(len(edge_inputs)):
            if self.wants[index + 1]:
                out.append(torch.cat(pieces[index]) if len(pieces[index]) > 0 else torch.zeros_like(edge_inputs[index]))
        return out


class AtomBlocks(torch.nn.Module):
    """A per-atom block function ``block(inputs) -> outputs`` (rows in, rows out), ``size``
    atoms at a time; the outputs' rows concatenated."""

    def __init__(self, block: torch.nn.Module, size: int):
        super().__init__()
        self.block, self.size = block, size

    def forward(self, inputs: List[Tensor]) -> List[Tensor]:
        pieces: List[List[Tensor]] = []
        for start in range(0, max(inputs[0].shape[0], 1), self.size):  # no atoms: one empty block
            pieces.append(self.block([tensor[start : start + self.size] for tensor in inputs]))
        return [torch.cat([piece[index] for piece in pieces]) for index in range(len(pieces[0]))]


class AtomBlocksBackward(torch.nn.Module):
    """The gradients of :class:`AtomBlocks`'s outputs for its inputs in ``wants``, block by
    block with the backward block function ``block(inputs + output gradients)``."""

    def __init__(self, block: torch.nn.Module, size: int):
        super().__init__()
        self.block, self.size = block, size

    def forward(self, grads: List[Tensor], inputs: List[Tensor]) -> List[Tensor]:
        pieces: List[List[Tensor]] = []
        for start in range(0, max(inputs[0].shape[0], 1), self.size):
            stop = start + self.size
            pieces.append(self.block([tensor[start:stop] for tensor in inputs] + [grad[start:stop] for grad in grads]))
        return [torch.cat([piece[index] for piece in pieces]) for index in range(len(pieces[0]))]


#: The loop module of each blocked-step operator, from its traced block and block size.
_LOOPS = {
    "edge_blocks": lambda block, size: EdgeBlockSum(block.forward, size, block.tails[0], block.dtypes[0]),
    "edge_blocks_backward": lambda block, size: EdgeBlockSumBackward(block.backward, size, block.wants),
    "atom_blocks": lambda block, size: AtomBlocks(block.forward, size),
    "atom_blocks_backward": lambda block, size: AtomBlocksBackward(block.backward, size),
}


@torch.library.custom_op("equinet::edge_blocks", mutates_args=())
def _edge_blocks(nodes: Tensor, edge_inputs: List[Tensor], edge_index: Tensor, key: int, size: int) -> Tensor:
    return _LOOPS["edge_blocks"](_active().blocks[key], size)(nodes, edge_inputs, edge_index)


@_edge_blocks.register_fake
def _(nodes, edge_inputs, edge_index, key, size):
    block = _active().blocks[key]
    return nodes.new_empty([nodes.shape[0], *block.tails[0]], dtype=block.dtypes[0])


@torch.library.custom_op("equinet::edge_blocks_backward", mutates_args=())
def _edge_blocks_backward(grad: Tensor, nodes: Tensor, edge_inputs: List[Tensor], edge_index: Tensor, key: int, size: int) -> List[Tensor]:
    return _LOOPS["edge_blocks_backward"](_active().blocks[key], size)(grad, nodes, edge_inputs, edge_index)


@_edge_blocks_backward.register_fake
def _(grad, nodes, edge_inputs, edge_index, key, size):
    return [torch.empty_like(tensor) for tensor, want in zip([nodes, *edge_inputs], _active().blocks[key].wants) if want]


def _node_and_edge_grads(grads: List[Tensor], wants: List[bool], num_edge_inputs: int) -> tuple[Tensor | None, list[Tensor | None]]:
    """:class:`EdgeBlockSumBackward`'s gradients (of the wanted inputs only) as autograd
    takes them: the nodes', and a list with each edge input's, ``None`` where not wanted."""
    taken = iter(grads)
    node_grad = next(taken) if wants[0] else None
    return node_grad, [next(taken) if want else None for want in wants[1 : 1 + num_edge_inputs]]


class _EagerEdgeBlockSum(torch.autograd.Function):
    """:class:`EdgeBlockSum` as one differentiable step of an eager call: the forward keeps
    no graph, the backward recomputes each block (:class:`EdgeBlockSumBackward`)."""

    @staticmethod
    def forward(ctx, block, size: int, wants: List[bool], nodes: Tensor, edge_index: Tensor, *edge_inputs: Tensor) -> Tensor:
        ctx.save_for_backward(nodes, edge_index, *edge_inputs)
        ctx.block, ctx.size, ctx.wants = block, size, wants
        row = block(_block_inputs(nodes, list(edge_inputs), edge_index, 0, 1)[0])[0]  # one edge: the sum's row shape and dtype
        return EdgeBlockSum(block, size, list(row.shape[1:]), row.dtype)(nodes, list(edge_inputs), edge_index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        nodes, edge_index, *edge_inputs = ctx.saved_tensors
        backward = EdgeBlockSumBackward(_recomputed_backward(ctx.block, ctx.wants), ctx.size, ctx.wants)
        node_grad, edge_grads = _node_and_edge_grads(backward(grad, nodes, edge_inputs, edge_index), ctx.wants, len(edge_inputs))
        return None, None, None, node_grad, None, *edge_grads


def eager_edge_sum(messages: Callable[..., Tensor], nodes: Tensor, edge_inputs: Sequence[Tensor], edge_index: Tensor, edges: int) -> Tensor:
    """:func:`.blocks.summed_over_edge_blocks` in blocks of ``edges`` edges in an eager
    inference call: the loops of an exported graph, run by autograd."""
    wants = [nodes.requires_grad, *(tensor.requires_grad for tensor in edge_inputs), False, False]  # no index, no receivers
    return _EagerEdgeBlockSum.apply(_edge_block(messages), edges, wants, nodes, edge_index, *edge_inputs)


def _edge_blocks_setup(ctx, inputs, output):
    nodes, edge_inputs, edge_index, ctx.key, ctx.size = inputs
    ctx.save_for_backward(nodes, edge_index, *edge_inputs)


def _edge_blocks_grad(ctx, grad):
    nodes, edge_index, *edge_inputs = ctx.saved_tensors
    grads = torch.ops.equinet.edge_blocks_backward(grad, nodes, edge_inputs, edge_index, ctx.key, ctx.size)
    return *_node_and_edge_grads(grads, _active().blocks[ctx.key].wants, len(edge_inputs)), None, None, None


_edge_blocks.register_autograd(_edge_blocks_grad, setup_context=_edge_blocks_setup)


@torch.library.custom_op("equinet::atom_blocks", mutates_args=())
def _atom_blocks(inputs: List[Tensor], key: int, size: int) -> List[Tensor]:
    return _LOOPS["atom_blocks"](_active().blocks[key], size)(inputs)


@_atom_blocks.register_fake
def _(inputs, key, size):
    block = _active().blocks[key]
    return [inputs[0].new_empty([inputs[0].shape[0], *tail], dtype=dtype) for tail, dtype in zip(block.tails, block.dtypes)]


@torch.library.custom_op("equinet::atom_blocks_backward", mutates_args=())
def _atom_blocks_backward(grads: List[Tensor], inputs: List[Tensor], key: int, size: int) -> List[Tensor]:
    return _LOOPS["atom_blocks_backward"](_active().blocks[key], size)(grads, inputs)


@_atom_blocks_backward.register_fake
def _(grads, inputs, key, size):
    return [torch.empty_like(tensor) for tensor, want in zip(inputs, _active().blocks[key].wants) if want]


def _atom_blocks_setup(ctx, inputs, output):
    node_inputs, ctx.key, ctx.size = inputs
    ctx.save_for_backward(*node_inputs)


def _atom_blocks_grad(ctx, grads):
    taken = iter(torch.ops.equinet.atom_blocks_backward(list(grads), list(ctx.saved_tensors), ctx.key, ctx.size))
    return [next(taken) if want else None for want in _active().blocks[ctx.key].wants], None, None


_atom_blocks.register_autograd(_atom_blocks_grad, setup_context=_atom_blocks_setup)


def as_loops(graph: torch.fx.GraphModule, recorder: _Recorder) -> torch.fx.GraphModule:
    """``graph`` (traced inside ``recorder``) with its blocked-step operators replaced by
    the modules that loop over the blocks: submodules ``edge_blocks_<i>`` (an
    :class:`EdgeBlockSum` or its backward) and ``atom_blocks_<i>`` (:class:`AtomBlocks` or
    its backward)."""
    modules = {getattr(torch.ops.equinet, name).default: loop for name, loop in _LOOPS.items()}
    for index, node in enumerate(list(graph.graph.nodes)):
        if node.op != "call_function" or node.target not in modules:
            continue
        *inputs, key, size = node.args
        name = f"{'edge' if 'edge' in node.target.name() else 'atom'}_blocks_{index}"
        graph.add_submodule(name, modules[node.target](recorder.blocks[key], size))
        with graph.graph.inserting_before(node):
            looped = graph.graph.call_module(name, tuple(inputs))
        node.replace_all_uses_with(looped)
        graph.graph.erase_node(node)
    graph.recompile()
    return graph


def set_block_sizes(graph: torch.nn.Module, sizes: Looped) -> None:
    """Sets the sizes of the blocks that the loops of ``graph`` (from :func:`as_loops`, or
    loaded from TorchScript) take: ``sizes.edges`` edges, ``sizes.atoms`` atoms."""
    for name, module in graph.named_children():
        if name.startswith("edge_blocks_"):
            module.size = sizes.edges
        elif name.startswith("atom_blocks_") and sizes.atoms is not None:
            module.size = sizes.atoms
