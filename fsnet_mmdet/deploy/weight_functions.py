"""The weight programs of the ONNX export: an FS layer's index, rebuilt in the graph.

An FS layer's weight is ``summary.reshape(-1)[index]``; the index has as many
entries as the weight, so the export does not store it: it stores a small
*program* (:class:`WeightProgram`) that computes it, as an ONNX model-local
function of the :data:`DOMAIN` domain (:func:`weight_function`) called by one
node per layer with the program's integers as attributes:

* ``Grid``: the paper's 3D summary on the filter grid (FSConv): per summary
  axis, the positions ``(f * stride + b) mod size`` of every filter f and
  element b, combined by broadcasting, then the ``interleave`` order;
* ``Segment``: the 1D summary (FSLinear, ``FSConv(layout='1d')``): rows
  ``(k * s + j) mod L``;
* ``Block``: any layout of wrapped blocks (DFSNet's moved filters), from each
  filter's block start, a (K, ndim) int16 table: the one stored input that
  grows with the number of filters (not with the weight).

Each program is written twice, in torch (:func:`grid_index`,
:func:`segment_rows`, :func:`block_index`: what :func:`weight_program` checks
against the layer's own ``index`` before using it) and as the function body
(the tests run both and compare). With WQ the function first dequantizes the
uint8 codes exactly as :func:`~fsnet_mmdet.layers.wq.dequantize` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..layers.wq import LEVELS
from ..layers.summary import SummaryWeightMixin

#: ONNX opset of the function bodies (and of the exported graphs).
DEFAULT_OPSET = 17
#: Domain of the weight functions.
DOMAIN = 'fsnet'
#: Attributes of the weight functions, by program (``Block``: ``b0``...).
GRID_ATTRS = ('k1', 'k2', 'k3', 'x', 'y', 'z', 'c', 's1', 's2', 'g')
SEGMENT_ATTRS = ('k', 's', 'n', 'g')


# ------------------------------------------------------- index programs
def _positions(count: int, stride: int, length: int, size: int) -> Tensor:
    """(count, length): ``(f * stride + b) mod size`` for filter f, element b."""
    return (torch.arange(count).view(-1, 1) * stride
            + torch.arange(length).view(1, -1)) % size


def _interleave(index: Tensor, groups: int, shape: Sequence[int]) -> Tensor:
    """Rows of ``index`` in interleaved order (output ``a * g + c`` is row
    ``c * (K / g) + a``), reshaped to ``shape``."""
    rows = index.reshape(groups, -1, math.prod(shape[1:]))
    return rows.transpose(0, 1).reshape(tuple(shape))


def grid_index(k1: int, k2: int, k3: int, x: int, y: int, z: int, c: int,
               s1: int, s2: int, g: int) -> Tensor:
    """Flat summary index of the filters of a 3D grid layout (the ``Grid`` op).

    The same computation as :func:`~fsnet_mmdet.layers.index.filter_index`,
    written as the ONNX function body does it: per summary axis, the
    positions ``(f * stride + b) mod size`` of every filter f and element
    b, combined by broadcasting, then the interleave.

    Args:
        k1, k2, k3: sampling numbers; x, y, z: strides; c, s1, s2: the
            filter shape (C, S1, S2); g: interleave.

    Returns:
        Long tensor (K, C, S1, S2).
    """
    cm, hm, wm = k3 * z, k1 * x, k2 * y
    chan = _positions(k3, z, c, cm) * (hm * wm)
    row = _positions(k1, x, s1, hm) * wm
    col = _positions(k2, y, s2, wm)
    index = (chan.view(1, 1, k3, c, 1, 1) + row.view(k1, 1, 1, 1, s1, 1)
             + col.view(1, k2, 1, 1, 1, s2))
    return _interleave(index, g, (k1 * k2 * k3, c, s1, s2))


def segment_rows(k: int, s: int, n: int, g: int,
                 shape: Sequence[int]) -> Tensor:
    """Flat summary index of a 1D segment layout (the ``Segment`` op).

    Row r (before the interleave) is ``(r * s + j) mod (k * s)``,
    ``j < n``, as :func:`~fsnet_mmdet.layers.index.segment_index`.

    Returns:
        Long tensor of ``shape`` (K, ...), ``prod(shape[1:]) = n``.
    """
    return _interleave(_positions(k, s, n, k * s), g, shape)


def block_shape(index_shape: Sequence[int],
                summary_shape: Sequence[int]) -> Tuple[int, ...]:
    """Shape of one filter's block in the summary.

    Args:
        index_shape: the layer's dense weight shape (K, ...).
        summary_shape: the summary's shape.

    Returns:
        ``index_shape[1:]`` when the summary has one axis per filter axis
        (the 3D summary of FSConv: (C, S1, S2)); ``(prod(index_shape[1:]),)``
        for a 1D summary (FSLinear, ``FSConv(layout='1d')``).

    Raises:
        ValueError: the summary has another number of axes.
    """
    if len(summary_shape) == len(index_shape) - 1:
        return tuple(index_shape[1:])
    if len(summary_shape) == 1:
        return (math.prod(index_shape[1:]),)
    raise ValueError(f'a summary of shape {tuple(summary_shape)} does not hold '
                     f'blocks of filters of shape {tuple(index_shape[1:])}')


def block_index(starts: Tensor, summary_shape: Sequence[int],
                shape: Sequence[int]) -> Tensor:
    """Flat summary index of every filter's block (the ``Block`` op).

    Filter k reads the block of ``shape`` that starts at ``starts[k]``,
    circularly: element ``b`` reads summary element
    ``((starts[k, i] + b_i) mod D_i)_i``, flattened row-major (Horner:
    ``(p_0 * D_1 + p_1) * D_2 + p_2``).

    Args:
        starts: (K, ndim) integer block starts.
        summary_shape: the summary's shape (D_0, ..., D_{ndim-1}).
        shape: the block's shape (B_0, ..., B_{ndim-1}).

    Returns:
        Long tensor (K, B_0, ..., B_{ndim-1}).
    """
    ndim = len(summary_shape)
    index = None
    for axis, (size, length) in enumerate(zip(summary_shape, shape)):
        view = [1] * (ndim + 1)
        view[axis + 1] = length
        pos = (starts[:, axis].long().view(-1, *[1] * ndim)
               + torch.arange(length).view(view)) % size
        index = pos if index is None else index * size + pos
    return index


def block_starts(index: Tensor, summary_shape: Sequence[int]) -> Tensor:
    """Each filter's block start, and a check that the index is made of blocks.

    Args:
        index: (K, ...) flat summary indices of a summary layer.
        summary_shape: the summary's shape.

    Returns:
        Long tensor (K, ndim): the summary coordinates of each filter's first
        element; :func:`block_index` of it equals ``index``.

    Raises:
        ValueError: some filter is not a wrapped block of the summary.
    """
    shape = block_shape(index.shape, summary_shape)
    first = index.reshape(index.shape[0], -1)[:, 0].long().cpu()
    starts = torch.stack(torch.unravel_index(first, tuple(summary_shape)), 1)
    rebuilt = block_index(starts, summary_shape, shape).view(index.shape)
    differs = (rebuilt != index.long().cpu()).reshape(index.shape[0], -1).any(1)
    if differs.any():
        raise ValueError(
            f'filter {int(differs.nonzero()[0])} is not a block of shape '
            f'{shape} of the summary {tuple(summary_shape)} read with '
            f'wrap-around; the export rebuilds only such indices')
    return starts


@dataclass(frozen=True)
class WeightProgram:
    """How the graph rebuilds one layer's weight from its summary.

    Attributes:
        op: ``'Grid'``, ``'Segment'`` or ``'Block'`` (the ONNX function,
            :func:`weight_function`).
        ints: the function's integer attributes (:data:`GRID_ATTRS`,
            :data:`SEGMENT_ATTRS`; ``Block``: ``b0 ...``, the block shape).
        shape: the dense weight's shape.
        starts: ``Block`` only: (K, ndim) block starts, a graph input.
    """

    op: str
    ints: Dict[str, int]
    shape: Tuple[int, ...]
    starts: Optional[Tensor] = field(default=None, compare=False)

    def index(self, summary_shape: Sequence[int]) -> Tensor:
        """The flat index the program computes (long, of ``shape``)."""
        if self.op == 'Grid':
            return grid_index(**self.ints)
        if self.op == 'Segment':
            return segment_rows(shape=self.shape, **self.ints)
        blocks = [self.ints[f'b{i}'] for i in range(len(summary_shape))]
        return block_index(self.starts, summary_shape, blocks).reshape(
            self.shape)


def weight_program(layer: SummaryWeightMixin) -> WeightProgram:
    """The program that rebuilds a summary layer's weight, checked exactly.

    ``Grid`` for a 3D-summary FSConv, ``Segment`` for a 1D summary, each
    only if the index it computes equals the layer's ``index``; otherwise
    (DFSNet's moved filters) ``Block`` with the filters' block starts.

    Raises:
        ValueError: the layer is still searching (DFSNet), or its index is
            not made of wrapped blocks.
    """
    if layer.searching:
        raise ValueError(f'a {type(layer).__name__} still searching its '
                         f'filter locations (DFSNet) cannot be exported; call '
                         f'discretize() (or load the discretized checkpoint) '
                         f'first')
    index = layer.index.long().cpu()
    shape, summary_shape = tuple(index.shape), tuple(layer.summary.shape)
    geometry = getattr(layer, 'geometry', None)
    groups = (geometry.interleave if geometry is not None else
              getattr(layer, 'interleave', 1))  # FSLinear
    candidates = []
    if len(summary_shape) == 3 and geometry is not None:
        (k1, k2, k3), (x, y, z) = geometry.sampling, geometry.strides
        candidates.append(WeightProgram('Grid', dict(
            k1=k1, k2=k2, k3=k3, x=x, y=y, z=z, c=geometry.in_channels,
            s1=geometry.kernel_size[0], s2=geometry.kernel_size[1],
            g=groups), shape))
    if len(summary_shape) == 1 and summary_shape[0] % shape[0] == 0:
        candidates.append(WeightProgram('Segment', dict(
            k=shape[0], s=summary_shape[0] // shape[0],
            n=math.prod(shape[1:]), g=groups), shape))
    for program in candidates:
        if torch.equal(program.index(summary_shape), index):
            return program
    starts = block_starts(index, summary_shape)
    small = torch.int16 if int(starts.max()) < 2**15 else torch.int32
    blocks = block_shape(shape, summary_shape)
    return WeightProgram('Block', {f'b{i}': b for i, b in enumerate(blocks)},
                         shape, starts.to(small))


# ---------------------------------------------------- ONNX weight functions
class _Body:
    """Nodes of a function body, with generated value names."""

    def __init__(self) -> None:
        from onnx import helper
        self.helper, self.nodes, self._count = helper, [], 0

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self._count += 1
        out = f't{self._count}'
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out],
                                                **attrs))
        return out

    def attr(self, name: str, kind: str = 'int') -> str:
        """A Constant holding the function attribute ``name`` (int: 0-D
        int64; ints: 1-D int64; float: 0-D float)."""
        from onnx import AttributeProto
        value, proto = {'int': ('value_int', AttributeProto.INT),
                        'ints': ('value_ints', AttributeProto.INTS),
                        'float': ('value_float', AttributeProto.FLOAT)}[kind]
        out = self.op('Constant')
        self.nodes[-1].attribute.append(self.helper.make_attribute_ref(
            value, proto, ref_attr_name=name))
        return out

    def ints(self, *values: int) -> str:
        return self.op('Constant', value_ints=list(values))

    def scalar(self, value: int) -> str:
        return self.op('Constant', value_int=value)

    def unsqueeze(self, value: str, *axes: int) -> str:
        return self.op('Unsqueeze', value, self.ints(*axes))

    def positions(self, count: str, stride: str, length: str, size: str) -> str:
        """(count, length): ``(f * stride + b) mod size`` (:func:`_positions`)."""
        zero, one = self.scalar(0), self.scalar(1)
        filters = self.op('Mul', self.op('Range', zero, count, one), stride)
        elements = self.op('Range', zero, length, one)
        total = self.op('Add', self.unsqueeze(filters, 1),
                        self.unsqueeze(elements, 0))
        return self.op('Mod', total, size)

    def interleave(self, index: str, groups: str, row: Sequence[str],
                   shape: str) -> str:
        """:func:`_interleave`: (g, K / g, *row) -> transpose -> ``shape``."""
        split = self.op('Concat', self.unsqueeze(groups, 0), self.ints(-1),
                        *[self.unsqueeze(r, 0) for r in row], axis=0)
        perm = [1, 0] + list(range(2, 2 + len(row)))
        moved = self.op('Transpose', self.op('Reshape', index, split),
                        perm=perm)
        return self.op('Reshape', moved, shape)


def weight_function(op: str, wq: bool = False, ndim: int = 3,
                    opset: int = DEFAULT_OPSET):
    """The ONNX function (``onnx.FunctionProto``) of one weight program.

    Inputs: ``M``, the summary (float), or with ``wq`` its uint8 codes; for
    ``Block`` then ``P``, the (K, ndim) block starts; with ``wq`` last ``R``,
    the float64 pair (lo, step): the level of code 0 and the step between
    levels. Output: ``W``, the dense weight. The body mirrors
    :func:`grid_index`, :func:`segment_rows` or :func:`block_index`
    (checked against them by the tests); with ``wq`` it first dequantizes
    as :func:`~fsnet_mmdet.layers.wq.dequantize` does, ``float32(
    float64(codes) * step + lo)``, so the summary is the plugin's WQ
    summary bit for bit (float32 attributes could not carry lo and step).

    Args:
        op: ``'Grid'``, ``'Segment'`` or ``'Block'``.
        wq: take 8-bit codes (function name suffix ``Q``).
        ndim: ``Block`` only: the summary's number of axes (1 or 3; name
            suffix, e.g. ``Block3``).
        opset: the default-domain opset of the body.

    Returns:
        The FunctionProto, domain :data:`DOMAIN`, name :func:`function_name`.
    """
    from onnx import TensorProto, helper

    body = _Body()
    if wq:
        lo = body.op('Gather', 'R', body.scalar(0))
        step = body.op('Gather', 'R', body.scalar(1))
        levels = body.op('Add', body.op('Mul', body.op(
            'Cast', 'M', to=TensorProto.DOUBLE), step), lo)
        source = body.op('Cast', levels, to=TensorProto.FLOAT)
    else:
        source = 'M'
    flat = body.op('Reshape', source, body.ints(-1))
    inputs, attrs = ['M'], []
    if op == 'Grid':
        attrs = list(GRID_ATTRS)
        k1, k2, k3, x, y, z, c, s1, s2, g = (body.attr(a) for a in GRID_ATTRS)
        hm, wm = body.op('Mul', k1, x), body.op('Mul', k2, y)
        chan = body.op('Mul', body.positions(k3, z, c, body.op('Mul', k3, z)),
                       body.op('Mul', hm, wm))
        row = body.op('Mul', body.positions(k1, x, s1, hm), wm)
        col = body.positions(k2, y, s2, wm)
        index = body.op('Add', body.op(
            'Add', body.unsqueeze(chan, 0, 1, 4, 5),
            body.unsqueeze(row, 1, 2, 3, 5)), body.unsqueeze(col, 0, 2, 3, 4))
        shape = body.op('Concat', body.ints(-1), *[body.unsqueeze(v, 0)
                                                   for v in (c, s1, s2)],
                        axis=0)
        index = body.interleave(index, g, (c, s1, s2), shape)
    elif op == 'Segment':
        attrs = list(SEGMENT_ATTRS) + ['shape']
        k, s, n, g = (body.attr(a) for a in SEGMENT_ATTRS)
        rows = body.positions(k, s, n, body.op('Mul', k, s))
        index = body.interleave(rows, g, (n, ), body.attr('shape', 'ints'))
    elif op == 'Block':
        if ndim not in (1, 3):
            raise ValueError(f'ndim must be 1 or 3 for Block, got {ndim}')
        inputs.append('P')
        attrs = [f'b{i}' for i in range(ndim)] + ['shape']
        starts = body.op('Cast', 'P', to=TensorProto.INT64)
        dims = body.op('Shape', 'M')
        zero, one = body.scalar(0), body.scalar(1)
        index = None
        for axis in range(ndim):
            size = body.op('Gather', dims, body.scalar(axis))
            start = body.unsqueeze(body.op('Gather', starts, body.scalar(axis),
                                           axis=1), *range(1, ndim + 1))
            offset = body.unsqueeze(
                body.op('Range', zero, body.attr(f'b{axis}'), one),
                *[a for a in range(ndim + 1) if a != axis + 1])
            pos = body.op('Mod', body.op('Add', start, offset), size)
            index = pos if index is None else body.op(
                'Add', body.op('Mul', index, size), pos)
        index = body.op('Reshape', index, body.attr('shape', 'ints'))
    else:
        raise ValueError(f"op must be 'Grid', 'Segment' or 'Block', got {op!r}")
    body.nodes.append(helper.make_node('Gather', [flat, index], ['W'], axis=0))
    return helper.make_function(
        DOMAIN, function_name(op, wq, ndim), inputs + (['R'] if wq else []),
        ['W'], body.nodes, [helper.make_opsetid('', opset)], attributes=attrs)


def node_attributes(program: WeightProgram) -> dict:
    """The attributes of the node that calls a program's weight function.

    Returns:
        ``{name: int or list of ints}``: the program's integers and
        ``shape`` (the weight's, except for ``Grid``).
    """
    attrs = dict(program.ints)
    if program.op != 'Grid':
        attrs['shape'] = list(program.shape)
    return attrs


def wq_levels(lo: float, hi: float) -> Tensor:
    """The ``R`` input of a WQ weight function: float64 ``(lo, step)``,
    ``step = (hi - lo) / 255`` as :func:`~fsnet_mmdet.layers.wq.dequantize`
    computes it."""
    return torch.tensor([lo, (hi - lo) / (LEVELS - 1)], dtype=torch.float64)


def function_name(op: str, wq: bool = False, ndim: int = 3) -> str:
    """``Grid``, ``GridQ``, ``Segment``, ``Block3``, ``Block1Q``, ..."""
    return op + (str(ndim) if op == 'Block' else '') + ('Q' if wq else '')


def parse_function_name(name: str) -> Tuple[str, bool, int]:
    """Inverse of :func:`function_name`: (op, wq, ndim)."""
    wq = name.endswith('Q')
    base = name[:-1] if wq else name
    if base.startswith('Block'):
        return 'Block', wq, int(base[5:])
    return base, wq, 3
