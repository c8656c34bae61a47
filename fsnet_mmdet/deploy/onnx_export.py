"""ONNX export of a single-stage detector whose FS layers keep their summaries.

The graph is the detector's network, from the preprocessed image batch
(N, 3, H, W) to the head's raw outputs (per level: class scores and box
deltas, what ``model._forward`` returns; mmdeploy's "end2end" graph without
its post-processing). Every summary layer (:class:`~fsnet_mmdet.FSConv`,
:class:`~fsnet_mmdet.FSLinear`) computes its weight in the graph, with one
node of the ``fsnet`` domain::

    summary (fp32 initializer) -> fsnet.Grid(k1, k2, k3, x, y, z, ...) -> Conv
    codes (uint8), levels (lo, step: float64) -> fsnet.GridQ(...) -> Conv   (WQ)

Each such op is an ONNX *model-local function* stored once in the file
(``ModelProto.functions``): a body of standard ops (Range, Mul, Add, Mod,
Unsqueeze, Reshape, Transpose, Gather; Cast, Mul, Add in float64 to
dequantize, exactly as :func:`~fsnet_mmdet.layers.wq.dequantize`) that
builds the index from the layer's geometry, given as integer attributes,
and gathers the weight. Any runtime that reads ONNX functions runs it
(onnxruntime inlines them when it loads the model, then folds the constant
weight; ``onnx.inliner`` inlines them for one that does not). So the file
stores per FS layer its summary and a few integers, no index and no weight.

The programs (``Grid``, ``Segment``, ``Block``) and their function bodies
are in :mod:`.weight_functions`. The BatchNorm after each FS conv is folded
into it (:class:`SummaryTwin`).

Route: the model is copied, each summary layer replaced by a twin module
(:class:`SummaryTwin`) whose weight is a ``torch.autograd.Function`` with an
ONNX ``symbolic`` that emits the ``fsnet`` node, and the copy is exported by
the TorchScript exporter (``torch.onnx.export(dynamo=False)``) with constant
folding off (folding evaluates a Gather on parameters into the full-size
weight); the function bodies are added with the ``onnx`` package. Why this
route and not index tensors in the graph, graph surgery or the dynamo
exporter: ``docs/deploy.md``.

Mode ``'baked'`` is the ordinary export to compare with: summary layers baked
into dense layers (``to_conv2d``), constant folding on (BN folded into the
convs), what ``tools/bake.py`` + ``torch.onnx.export`` give.

Mode ``'summary'`` (``tools/export_onnx.py --summary-compute``) keeps the
fp32 summaries and the summary path's compute: every FSConv whose summary
path runs fewer operations than its dense conv at the export's input size
(:func:`summary_compute_layers`; ``summary_layers='all'``: every FSConv that
can, :func:`computes_from_summary`) becomes a
:class:`SummaryComputeTwin` whose forward is
:func:`~fsnet_mmdet.layers.summary_conv.summary_conv2d_unrolled`, traced into
standard ops only (stage 1: Transpose / Tile / Slice / Reshape of the summary,
which a runtime folds into the 1x1 weight once, and a 1x1 Conv; Pad, one
Concat per rolled axis, one Slice per tap, Add); other summary layers
(FSLinear, 1D layout, DFSNet-moved filters, 1x1 and most stride-2 convs)
keep the ``fsnet`` node of mode ``'fs'``. :func:`tidy_graph` then folds the
exporter's constant shape arithmetic and merges its per-axis slices, so the
file stays near the ``'fs'`` file's size.
"""
from __future__ import annotations

import copy
import importlib
import json
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..conversion.checkpoints import fs_layers
from ..layers.fsconv import FSConv
from ..layers.summary import SummaryWeightMixin
from ..layers.summary_conv import summary_conv2d_unrolled
from ..layers.wq import dequantize, quantize
from ..utils.io import atomic_path, check_output_path
from .weight_functions import (DEFAULT_OPSET, DOMAIN, WeightProgram,
                               function_name, node_attributes,
                               parse_function_name, weight_function,
                               weight_program, wq_levels)

#: Export modes: summaries in fp32, summaries as 8-bit codes (WQ), dense,
#: summaries in fp32 with the FS convs computed from them (standard ops).
MODES = ('fs', 'wq', 'baked', 'summary')
#: Which FSConvs mode ``'summary'`` computes from their summaries:
#: ``'fewer-ops'`` those whose summary path runs fewer operations at the
#: export's input size (:func:`summary_compute_layers`), ``'all'`` every one
#: that can (:func:`computes_from_summary`).
SUMMARY_LAYERS = ('fewer-ops', 'all')
#: The command that installs what this module needs.
INSTALL_HINT = "pip install -e '.[deploy]'  (the onnx and onnxruntime packages)"
#: Name of the graph's input.
INPUT_NAME = 'inputs'
#: Names of the head's output groups, in ``bbox_head.forward``'s order.
OUTPUT_GROUP_NAMES = ('cls_score', 'bbox_pred', 'score_factor')
#: Metadata keys written into the model (``metadata_props``).
META_MODE = 'fsnet_mmdet.mode'
META_GROUPS = 'fsnet_mmdet.output_groups'
META_FS_LAYERS = 'fsnet_mmdet.fs_layers'


class MissingDeployDependency(RuntimeError):
    """An optional deployment package (onnx, onnxruntime) is not installed."""


def require(module: str, what: str):
    """Import an optional package, or say how to install it.

    Args:
        module: the package to import (``'onnx'``, ``'onnxruntime'``).
        what: what needs it, for the message.

    Raises:
        MissingDeployDependency: the package is missing; the message gives
            :data:`INSTALL_HINT`.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDeployDependency(
            f'{what} needs the optional package {module!r}, which is not '
            f'installed ({err}); install the deploy extras: '
            f'{INSTALL_HINT}') from None


# ------------------------------------------------------------ export modules
@dataclass(frozen=True, eq=False)
class _Node:
    """What a twin's weight op needs: the program, the function's name, the
    layer's index (for the eager forward, which only the trace runs) and the
    WQ range."""

    program: WeightProgram
    name: str
    index: Tensor
    lo: float = 0.0
    hi: float = 0.0


class _WeightOp(torch.autograd.Function):
    """The weight of a summary layer; exported as one ``fsnet`` node."""

    @staticmethod
    def forward(ctx, node: _Node, source: Tensor, *extra: Tensor) -> Tensor:
        summary = (dequantize(source, node.lo, node.hi, torch.float32)
                   if source.dtype == torch.uint8 else source)
        return summary.reshape(-1).index_select(
            0, node.index.reshape(-1)).view(node.program.shape)

    @staticmethod
    def symbolic(g, node: _Node, source, *extra):
        attrs = {f'{k}_i': v for k, v in node_attributes(node.program).items()}
        out = g.op(f'{DOMAIN}::{node.name}', source, *extra, **attrs)
        out.setType(source.type().with_dtype(torch.float32).with_sizes(
            list(node.program.shape)))
        return out


class SummaryTwin(nn.Module):
    """Export stand-in of a summary layer: its weight computed from the summary.

    Holds the summary (fp32 parameter ``summary``) or, with ``wq``, its 8-bit
    codes (uint8 buffer ``codes``, :func:`~fsnet_mmdet.layers.wq.quantize`,
    as ``tools/quantize.py`` writes them) and their levels (float64 buffer
    ``levels``: lo, step; :func:`wq_levels`), for a ``Block`` program the
    block starts (buffer ``starts``), and the bias; the forward computes the weight
    (exported as one ``fsnet`` node, :func:`weight_function`) and applies the
    layer's own conv (``_conv_forward``: stride, padding, padding mode,
    dilation) or linear map.

    With ``norm`` (the eval-mode BatchNorm right after the conv) the BN is
    folded in: ``scale = gamma / sqrt(var + eps)`` multiplies the computed
    weight per filter (buffer ``scale``, (K, 1, 1, 1)) and the bias becomes
    ``(bias - mean) * scale + beta``, so the graph holds 2 vectors per layer
    instead of the BN's 4 and no BN node; the summary stays as it is (WQ
    quantizes the summary only).

    Args:
        layer: an FSConv or FSLinear, not searching (DFSNet: discretize first).
        wq: store 8-bit codes instead of the fp32 summary.
        norm: a BatchNorm in eval mode to fold in (convs only), or None.
    """

    def __init__(self, layer: SummaryWeightMixin, wq: bool = False,
                 norm: Optional[nn.Module] = None) -> None:
        super().__init__()
        program = weight_program(layer)
        summary = layer.summary.detach().float().cpu()
        lo = hi = 0.0
        if wq:
            codes, lo, hi = quantize(summary)
            self.register_buffer('codes', codes)
            self.register_buffer('levels', wq_levels(lo, hi))
        else:
            self.summary = nn.Parameter(summary.clone(), requires_grad=False)
        if program.starts is not None:
            self.register_buffer('starts', program.starts)
        bias = (None if layer.bias is None else
                layer.bias.detach().float().cpu().clone())
        if norm is not None:
            scale, shift = bn_affine(norm)
            self.register_buffer('scale', scale.view(-1, 1, 1, 1))
            bias = shift if bias is None else bias * scale + shift
        self.bias = (None if bias is None else
                     nn.Parameter(bias, requires_grad=False))
        self._node = _Node(program, function_name(
            program.op, wq, summary.dim()), layer.index.cpu(), lo, hi)
        self._layer = (layer, )  # a tuple: not registered, not exported

    def weight(self) -> Tensor:
        """The dense weight of the layer's shape, from the summary."""
        source = self.codes if self._node.name.endswith('Q') else self.summary
        extra = (self.starts, ) if self._node.program.starts is not None else ()
        if self._node.name.endswith('Q'):
            extra += (self.levels, )
        weight = _WeightOp.apply(self._node, source, *extra)
        return weight * self.scale if hasattr(self, 'scale') else weight

    def forward(self, x: Tensor) -> Tensor:
        layer = self._layer[0]
        if isinstance(layer, nn.Conv2d):
            return layer._conv_forward(x, self.weight(), self.bias)
        return nn.functional.linear(x, self.weight(), self.bias)


class SummaryComputeTwin(nn.Module):
    """Export stand-in of an FSConv that computes the conv from its summary.

    The forward is :func:`~fsnet_mmdet.layers.summary_conv.
    summary_conv2d_unrolled` (stage 1: a 1x1 Conv whose weight is tiled and
    sliced from the summary; stage 2: one Slice of the summary response per
    tap, summed by Add), so the exported graph holds the summary (fp32
    parameter ``summary``) and the bias, no dense weight and no ``fsnet``
    node, and runs the summary path's smaller multiply-add count instead of
    the dense conv's.

    With ``norm`` (the eval-mode BatchNorm right after the conv) the BN is
    folded in after the sum: the output is multiplied per channel by
    ``scale = gamma / sqrt(var + eps)`` (buffer ``scale``, (K, 1, 1): one Mul
    node; a filter's scale cannot go into the summary, whose elements the
    filters share) and the bias becomes ``(bias - mean) * scale + beta``, as
    :class:`SummaryTwin` folds it.

    Args:
        layer: an FSConv that can compute from its summary (3D layout, on
            its grid: ``layer._summary_blocker() is None``).
        norm: a BatchNorm in eval mode to fold in, or None.
    """

    def __init__(self, layer: FSConv, norm: Optional[nn.Module] = None) -> None:
        super().__init__()
        blocker = layer._summary_blocker()
        if blocker is not None:
            raise ValueError(f'this FSConv cannot compute from its summary: '
                             f'{blocker}')
        self.summary = nn.Parameter(layer.summary.detach().float().cpu().clone(),
                                    requires_grad=False)
        bias = (None if layer.bias is None else
                layer.bias.detach().float().cpu().clone())
        if norm is not None:
            scale, shift = bn_affine(norm)
            self.register_buffer('scale', scale.view(-1, 1, 1))
            bias = shift if bias is None else bias * scale + shift
        self.bias = (None if bias is None else
                     nn.Parameter(bias, requires_grad=False))
        self.geometry = layer.geometry
        self.conv_args = (layer.stride, layer.padding, layer.dilation,
                          layer.padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        if not hasattr(self, 'scale'):
            return summary_conv2d_unrolled(x, self.summary, self.geometry,
                                           self.bias, *self.conv_args)
        out = summary_conv2d_unrolled(x, self.summary, self.geometry, None,
                                      *self.conv_args) * self.scale
        return out if self.bias is None else out + self.bias.view(-1, 1, 1)


def bn_affine(norm: nn.Module) -> Tuple[Tensor, Tensor]:
    """An eval-mode BatchNorm as ``x * scale + shift`` per channel.

    Returns:
        ``(scale, shift)``, float32 on the CPU: ``scale = gamma /
        sqrt(running_var + eps)``, ``shift = beta - running_mean * scale``.
    """
    scale = torch.rsqrt(norm.running_var.detach().double() + norm.eps)
    shift = -norm.running_mean.detach().double() * scale
    if norm.weight is not None:
        scale = scale * norm.weight.detach().double()
        shift = shift * norm.weight.detach().double()
    if norm.bias is not None:
        shift = shift + norm.bias.detach().double()
    return scale.float().cpu(), shift.float().cpu()


def foldable_norms(model: nn.Module) -> Dict[str, Tuple[nn.Module, str]]:
    """The BatchNorms that follow a summary conv in a ``ConvModule``.

    Returns:
        ``{conv name: (ConvModule, norm attribute name)}`` for every mmcv
        ``ConvModule`` whose conv is an FSConv followed directly by a
        BatchNorm (any ``_BatchNorm``: BN, SyncBN) in eval mode that tracks
        running statistics.
    """
    from mmcv.cnn import ConvModule
    from torch.nn.modules.batchnorm import _BatchNorm

    folds = {}
    for name, module in model.named_modules():
        if not (isinstance(module, ConvModule) and module.with_norm
                and isinstance(module.conv, SummaryWeightMixin)
                and isinstance(module.conv, nn.Conv2d)):
            continue
        norm, order = module.norm, list(module.order)
        if (isinstance(norm, _BatchNorm) and not norm.training
                and norm.running_var is not None
                and order.index('norm') == order.index('conv') + 1):
            folds[f'{name}.conv' if name else 'conv'] = (module,
                                                         module.norm_name)
    return folds


class RawOutputs(nn.Module):
    """A single-stage detector as a function: image batch -> head outputs, flat.

    ``forward(inputs)`` returns the tensors of ``detector._forward(inputs)``
    (a tuple of per-level lists: class scores, box deltas, ...) as one flat
    tuple, group after group.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        return tuple(t for group in self.detector._forward(inputs)
                     for t in group)


def exportable(model: nn.Module, mode: str = 'fs',
               input_shape: Sequence[int] = (1, 3, 300, 300),
               summary_layers: str = 'fewer-ops') -> RawOutputs:
    """A copy of the model, in eval mode, as the module :func:`export_onnx` traces.

    Args:
        model: a single-stage detector (FS layers are found by type).
        mode: ``'fs'`` or ``'wq'``: every summary layer becomes a
            :class:`SummaryTwin` (fp32 summary or 8-bit codes), with the
            BatchNorm that follows it folded in (:func:`foldable_norms`);
            ``'summary'``: the FSConvs ``summary_layers`` picks become
            :class:`SummaryComputeTwin`, the other summary layers (FSLinear,
            1D layout, DFSNet-moved filters, and with ``'fewer-ops'`` the
            FSConvs whose summary path costs more, e.g. 1x1 and stride-2
            layers) :class:`SummaryTwin` as in ``'fs'``, BNs folded alike;
            ``'baked'``: a dense ``nn.Conv2d`` / ``nn.Linear`` with the
            extracted weight (the exporter folds the BN).
        input_shape: (N, 3, H, W) of the example input (mode ``'summary'``
            with ``'fewer-ops'``: the layers' input sizes follow from it).
        summary_layers: one of :data:`SUMMARY_LAYERS` (mode ``'summary'``).

    Returns:
        :class:`RawOutputs` of the copy (the model itself is not changed).
    """
    _check_mode(mode)
    if summary_layers not in SUMMARY_LAYERS:
        raise ValueError(f'summary_layers must be one of {SUMMARY_LAYERS}, '
                         f'got {summary_layers!r}')
    twin = copy.deepcopy(model).cpu().float().eval()
    computed = set()
    if mode == 'summary':
        computed = (set(summary_compute_layers(twin, input_shape))
                    if summary_layers == 'fewer-ops' else
                    {n for n, m in twin.named_modules()
                     if computes_from_summary(m)})
    folds = foldable_norms(twin) if mode != 'baked' else {}
    for name in fs_layers(twin):
        layer = twin.get_submodule(name)
        if mode == 'baked':
            new = (layer.to_conv2d() if isinstance(layer, nn.Conv2d)
                   else layer.to_linear())
        else:
            module, norm_name = folds.get(name, (None, None))
            norm = getattr(module, norm_name) if module is not None else None
            new = (SummaryComputeTwin(layer, norm=norm) if name in computed
                   else SummaryTwin(layer, wq=mode == 'wq', norm=norm))
            if module is not None:  # folded into the twin
                setattr(module, norm_name, nn.Identity())
                module.efficient_conv_bn_eval_forward = None
        twin.set_submodule(name, new.eval())
    return RawOutputs(twin).eval()


def computes_from_summary(layer: nn.Module) -> bool:
    """Whether mode ``'summary'`` computes ``layer`` from its summary: an
    FSConv of the 3D layout whose filters are on the grid (not searching,
    no DFSNet-moved filters; FSConv's ``_summary_blocker``)."""
    return isinstance(layer, FSConv) and layer._summary_blocker() is None


def summary_compute_layers(detector: nn.Module,
                           input_shape: Sequence[int]) -> List[str]:
    """The FSConvs whose summary path runs fewer operations than their filters.

    Runs the detector's network once on zeros of ``input_shape`` and keeps
    each FSConv that can compute from its summary
    (:func:`computes_from_summary`) where, at the input size it sees,
    :func:`~fsnet_mmdet.layers.summary_conv.summary_macs` (stage 1's
    multiply-adds plus stage 2's additions) is below
    :func:`~fsnet_mmdet.layers.summary_conv.filter_macs` (the dense conv's
    multiply-adds), at every call of a layer shared between calls. 1x1
    layers never qualify (stage 1 alone is the dense conv's count); stride-2
    layers rarely (stage 1 runs at every input position, 4x the outputs).
    A count of operations, not a timing: how fast a runtime runs each graph
    is what ``benchmarks/bench_onnx.py`` measures.

    Args:
        detector: a single-stage detector (``_forward`` gives its network).
        input_shape: (N, 3, H, W).

    Returns:
        Module names, in the model's order.
    """
    names = {m: n for n, m in detector.named_modules()
             if computes_from_summary(m)}
    fewer: Dict[str, bool] = {}

    def count(layer: FSConv, args, output) -> None:
        filters, summary = layer.path_macs(tuple(args[0].shape[-2:]),
                                           tuple(output.shape[-2:]))
        name = names[layer]
        fewer[name] = fewer.get(name, True) and summary.total < filters.total

    handles = [m.register_forward_hook(count) for m in names]
    try:
        with torch.no_grad():
            detector._forward(torch.zeros(tuple(input_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return [n for n in names.values() if fewer.get(n, False)]


def output_groups(detector: nn.Module, inputs: Tensor) -> List[int]:
    """Number of levels in each output group of ``detector._forward``."""
    with torch.no_grad():
        outputs = detector._forward(inputs)
    if not isinstance(outputs, (tuple, list)) or not all(
            isinstance(g, (tuple, list)) and all(isinstance(t, Tensor) for t in g)
            for g in outputs):
        raise ValueError(f'{type(detector).__name__}: its head returns '
                         f'{type(outputs).__name__}, not a tuple of per-level '
                         f'tensor lists; it cannot be exported here')
    return [len(g) for g in outputs]


def output_names(groups: Sequence[int]) -> List[str]:
    """``cls_score_0 ... bbox_pred_0 ...``: one name per output tensor."""
    names = (OUTPUT_GROUP_NAMES if len(groups) <= len(OUTPUT_GROUP_NAMES)
             else [f'output{g}' for g in range(len(groups))])
    return [f'{names[g]}_{level}' for g, n in enumerate(groups)
            for level in range(n)]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')


def check_exportable(model: nn.Module, mode: str) -> List[str]:
    """The model's summary layers; ValueError where the export cannot serve.

    Raises:
        ValueError: not a single-stage detector; mode ``'fs'`` / ``'wq'`` on
            a model without summary layers (nothing to compress).
    """
    from mmdet.models.detectors import SingleStageDetector

    _check_mode(mode)
    if not isinstance(model, SingleStageDetector):
        raise ValueError(f'{type(model).__name__} is not a single-stage '
                         f'detector (SSD, RetinaNet, FCOS, RTMDet, ...); only '
                         f'those export here (their network ends at the '
                         f'head\'s raw outputs)')
    layers = fs_layers(model)
    if mode != 'baked' and not layers:
        raise ValueError(f'the {type(model).__name__} has no FSConv or '
                         f'FSLinear layer: nothing to compress (mode '
                         f"{mode!r}); a dense model exports with mode='baked' "
                         f'(tools/export_onnx.py --baked)')
    return layers


# ------------------------------------------------------------- the file
def compact_names(graph, strip_prefix: str = '') -> None:
    """Shorten a graph's node and value names, in place.

    The exporter names every node and value after its module path
    (``/backbone/features/conv1_1/conv/Conv_output_0``): in a small model
    those names are several percent of the file. Nodes lose their names
    (optional in ONNX), intermediate values are numbered (hexadecimal);
    inputs and outputs keep theirs, initializers theirs without
    ``strip_prefix`` (they are the model's parameter names,
    ``backbone...conv.summary``). Shape annotations of intermediate values
    are dropped (runtimes infer them).

    Args:
        graph: an ``onnx.GraphProto`` without subgraphs.
        strip_prefix: removed from the start of initializer names.
    """
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    rename: Dict[str, str] = {}
    for tensor in graph.initializer:
        if strip_prefix and tensor.name.startswith(strip_prefix):
            rename[tensor.name] = tensor.name = tensor.name[len(strip_prefix):]
        keep.add(tensor.name)
    count = 0
    for node in graph.node:  # topologically sorted: producers come first
        if any(a.g.node or a.graphs for a in node.attribute):
            raise ValueError(f'{node.op_type} node with a subgraph: names '
                             f'not compacted')
        node.name, node.doc_string = '', ''
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
        for i, name in enumerate(node.output):
            if name and name not in keep:
                rename[name] = node.output[i] = format(count, 'x')
                count += 1
    del graph.value_info[:]


#: Ops :func:`tidy_graph` evaluates where every input is a constant.
FOLDABLE_OPS = frozenset({
    'Add', 'Cast', 'Concat', 'ConstantOfShape', 'Div', 'Equal', 'Expand',
    'Gather', 'Greater', 'Identity', 'Less', 'Max', 'Min', 'Mod', 'Mul',
    'Neg', 'Range', 'Reshape', 'Shape', 'Slice', 'Squeeze', 'Sub',
    'Transpose', 'Unsqueeze', 'Where'})
#: ... when its inputs and outputs are integer (or bool) tensors of at most
#: this many elements: shape arithmetic, exact; never a weight.
FOLD_MAX_ELEMENTS = 256


def tidy_graph(graph, opset: int = DEFAULT_OPSET) -> Dict[str, int]:
    """Fold the exporter's shape arithmetic, merge slice chains, in place.

    With constant folding off (it would fold the summaries into dense
    weights), the TorchScript exporter writes every Python slice of a
    tensor as one ``Slice`` per axis whose starts, ends, axes and steps are
    ``Unsqueeze`` nodes of scalar ``Constant`` nodes, and sizes as ``Shape``
    arithmetic: in mode ``'summary'`` (one multi-axis slice per tap and
    layer) most of the file. This pass, on a graph without subgraphs:

    1. evaluates (``onnx.reference``) every standard-domain node of
       :data:`FOLDABLE_OPS` whose inputs are all ``Constant`` outputs and
       whose inputs and outputs are integer or bool tensors of at most
       :data:`FOLD_MAX_ELEMENTS` elements, replacing it by a ``Constant``;
       never a node that reads an initializer or the graph input, nor a
       float computation (no rounding of its own);
    2. makes a ``Slice`` of a ``Slice`` (constant starts, ends, axes and
       steps, disjoint non-negative axes) one ``Slice`` of the inner one's
       input (the inner one stays where something else reads it): one
       copy per tap instead of a chain of them;
    3. keeps one ``Constant`` per distinct value, first in the graph;
    4. drops nodes whose outputs nothing reads.

    The graph computes the same values, from the same initializers.

    Args:
        graph: an ``onnx.GraphProto``.
        opset: its standard-domain opset (the folded nodes' semantics).

    Returns:
        ``{'folded': nodes folded, 'merged': slices merged, 'nodes':
        (before, after)}``.
    """
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    def small_ints(value) -> bool:
        return (isinstance(value, np.ndarray) and value.size <= FOLD_MAX_ELEMENTS
                and (np.issubdtype(value.dtype, np.integer)
                     or value.dtype == np.bool_))

    def constant(name: str, value):
        return helper.make_node('Constant', [], [name],
                                value=numpy_helper.from_array(np.asarray(value)))

    known: Dict[str, object] = {}  # Constant outputs -> value
    nodes, count = [], dict(folded=0, merged=0)
    for node in graph.node:
        if any(a.g.node or a.graphs for a in node.attribute):
            raise ValueError(f'{node.op_type} node with a subgraph: not tidied')
        if node.op_type == 'Constant' and not node.domain and len(
                node.attribute) == 1 and node.attribute[0].name == 'value':
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif (not node.domain and node.op_type in FOLDABLE_OPS
              and all(n in known for n in node.input if n)
              and all(small_ints(known[n]) for n in node.input if n)):
            try:
                values = ReferenceEvaluator(node, opsets={'': opset}).run(
                    None, {n: known[n] for n in node.input if n})
            except Exception:  # not evaluated: kept as it is
                values = None
            if values is not None and all(small_ints(v) for v in values):
                for name, value in zip(node.output, values):
                    known[name] = value
                    nodes.append(constant(name, value))
                count['folded'] += 1
                continue
        nodes.append(node)

    # Slice chains -> one Slice.
    producers = {out: node for node in nodes for out in node.output}

    def slice_args(node):
        if (node.op_type != 'Slice' or node.domain or len(node.input) < 3
                or not all(n in known for n in node.input[1:] if n)):
            return None
        starts, ends = known[node.input[1]], known[node.input[2]]
        axes = (known[node.input[3]] if len(node.input) > 3 and node.input[3]
                else np.arange(len(starts)))
        steps = (known[node.input[4]] if len(node.input) > 4 and node.input[4]
                 else np.ones(len(starts), np.int64))
        args = [np.asarray(v, np.int64).reshape(-1)
                for v in (starts, ends, axes, steps)]
        return args if (args[2] >= 0).all() else None

    taken = ({v.name for v in graph.input} | {v.name for v in graph.output}
             | {t.name for t in graph.initializer}
             | {name for node in nodes for name in node.output})
    extra, fresh = [], 0
    for node in nodes:
        outer = slice_args(node)
        inner_node = producers.get(node.input[0]) if outer else None
        inner = slice_args(inner_node) if inner_node is not None else None
        if inner is None or set(inner[2].tolist()) & set(outer[2].tolist()):
            continue
        names = []
        for a, b in zip(inner, outer):
            while f'tidy_slice_{fresh}' in taken:
                fresh += 1
            names.append(f'tidy_slice_{fresh}')
            taken.add(names[-1])
            known[names[-1]] = np.concatenate([a, b])
            extra.append(constant(names[-1], known[names[-1]]))
        node.input[:] = [inner_node.input[0], *names]
        count['merged'] += 1
    nodes = extra + nodes

    # One Constant per value, Constants first (they read nothing).
    firsts: Dict[tuple, str] = {}
    rename: Dict[str, str] = {}
    constants, others = [], []
    outputs = {out.name for out in graph.output}
    for node in nodes:
        if (node.op_type == 'Constant' and node.output[0] in known
                and node.output[0] not in outputs):
            value = np.asarray(known[node.output[0]])
            key = (value.dtype.str, value.shape, value.tobytes())
            if key in firsts:
                rename[node.output[0]] = firsts[key]
                continue
            firsts[key] = node.output[0]
            constants.append(node)
        else:
            others.append(node)
    for node in others:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)

    # Unread nodes, last to first.
    used = set(outputs)
    kept = []
    for node in reversed(constants + others):
        if any(name in used for name in node.output):
            used.update(node.input)
            kept.append(node)
    count['nodes'] = (len(graph.node), len(kept))
    del graph.node[:]
    graph.node.extend(reversed(kept))
    return count


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        mode: ``'fs'``, ``'wq'``, ``'baked'`` or ``'summary'``.
        bytes: its size.
        fs_layers: summary layers in the model (computed in the graph unless
            ``mode == 'baked'``).
        functions: the weight functions the file defines, by name.
        input_shape: the example input's shape (the batch axis is dynamic).
        output_names: the graph's outputs, in order.
        output_groups: number of levels in each output group.
        summary_compute: FS convs computed from their summaries in standard
            ops (mode ``'summary'``; the other FS layers' weights are
            computed by the ``functions``).
    """

    path: str
    mode: str
    bytes: int
    fs_layers: int
    functions: List[str]
    input_shape: Tuple[int, ...]
    output_names: List[str]
    output_groups: List[int]
    summary_compute: int = 0


def export_onnx(model: nn.Module,
                out: str,
                mode: str = 'fs',
                input_shape: Sequence[int] = (1, 3, 300, 300),
                opset: int = DEFAULT_OPSET,
                summary_layers: str = 'fewer-ops') -> ExportReport:
    """Export a single-stage detector's network to ONNX, atomically.

    Args:
        model: the detector, weights loaded (not changed).
        out: the ONNX file to write.
        mode: ``'fs'`` (summaries in fp32), ``'wq'`` (8-bit summaries,
            FSNet-WQ), ``'baked'`` (dense weights, BN folded) or
            ``'summary'`` (summaries in fp32; the FSConvs
            ``summary_layers`` picks are computed from their summaries in
            standard ops, :class:`SummaryComputeTwin`; the graph tidied by
            :func:`tidy_graph`).
        input_shape: (N, 3, H, W) of the example input; N is dynamic in the
            graph, H and W are fixed.
        opset: the ONNX opset (at least 15: model-local functions).
        summary_layers: mode ``'summary'``: ``'fewer-ops'`` (default) the
            FSConvs whose summary path runs fewer operations at this input
            size (:func:`summary_compute_layers`), ``'all'`` every FSConv
            that can (:func:`computes_from_summary`).

    Returns:
        The :class:`ExportReport`.

    Raises:
        ValueError: a bad mode, opset or input shape, a model that is not a
            single-stage detector, or one without summary layers in mode
            ``'fs'`` / ``'wq'`` / ``'summary'``; nothing is written.
        OSError: ``out`` cannot be written; nothing is left there.
        MissingDeployDependency: ``onnx`` is not installed.
    """
    onnx = require('onnx', 'ONNX export')
    check_output_path(out)
    layers = check_exportable(model, mode)
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f'input_shape must be four positive ints (N, C, H, '
                         f'W), got {input_shape!r}')
    if isinstance(opset, bool) or not isinstance(opset, int) or not (
            15 <= opset <= 20):
        raise ValueError(f'opset must be an int in 15..20 (ONNX functions '
                         f'need 15), got {opset!r}')
    module = exportable(model, mode, shape, summary_layers)
    computed = sum(isinstance(m, SummaryComputeTwin) for m in module.modules())
    # Mode 'summary' imports the fsnet domain only where a node uses it
    # (the exporter prints a warning on an unused one); the other modes as
    # they always have.
    custom = ({} if mode == 'summary' and not any(
        isinstance(m, SummaryTwin) for m in module.modules()) else {DOMAIN: 1})
    example = torch.zeros(shape)
    groups = output_groups(module.detector, example)
    names = output_names(groups)
    dynamic = {name: {0: 'batch'} for name in [INPUT_NAME, *names]}
    with atomic_path(out) as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter's deprecation notice and its notes on
            # the custom domain: the graph is checked below instead.
            warnings.simplefilter('ignore')
            torch.onnx.export(
                module, (example, ), tmp, dynamo=False,
                input_names=[INPUT_NAME], output_names=names,
                dynamic_axes=dynamic, opset_version=opset,
                do_constant_folding=mode == 'baked',
                custom_opsets=custom)
        proto = onnx.load(tmp)
        if mode == 'summary':
            tidy_graph(proto.graph, opset)
        used = sorted({n.op_type for n in proto.graph.node
                       if n.domain == DOMAIN})
        proto.functions.extend(
            weight_function(*parse_function_name(name), opset=opset)
            for name in used)
        compact_names(proto.graph, strip_prefix='detector.')
        for key, value in ((META_MODE, mode), (META_GROUPS, json.dumps(groups)),
                           (META_FS_LAYERS, str(len(layers)))):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        size = os.path.getsize(tmp)
    return ExportReport(os.path.abspath(out), mode, size, len(layers), used,
                        shape, names, groups, computed)


def read_output_groups(proto_or_meta) -> List[int]:
    """The output groups written by :func:`export_onnx` (model metadata).

    Args:
        proto_or_meta: an ``onnx.ModelProto`` or its metadata as a dict
            (onnxruntime: ``session.get_modelmeta().custom_metadata_map``).

    Raises:
        ValueError: the model was not written by :func:`export_onnx`.
    """
    meta = (proto_or_meta if isinstance(proto_or_meta, dict) else
            {p.key: p.value for p in proto_or_meta.metadata_props})
    if META_GROUPS not in meta:
        raise ValueError(f'not an ONNX file written by fsnet_mmdet\'s export '
                         f'(no {META_GROUPS!r} metadata); export it with '
                         f'tools/export_onnx.py')
    return [int(n) for n in json.loads(meta[META_GROUPS])]


def payload_bytes(model: nn.Module, mode: str) -> Dict[str, int]:
    """Bytes of the tensors an export of ``model`` must hold, by kind.

    Args:
        model: the detector.
        mode: ``'fs'`` (summaries at 4 bytes per element), ``'wq'`` (1 byte)
            or ``'baked'`` (the dense weights instead of the summaries).

    Returns:
        ``{'summaries': bytes, 'other': bytes, 'total': bytes}``; ``other``
        is every other tensor of the state dict (biases, BN parameters and
        running statistics; DFSNet's offsets), without
        ``num_batches_tracked``.
    """
    _check_mode(mode)
    summaries = other = 0
    layers = set(fs_layers(model))
    for key, value in model.state_dict().items():
        if key.endswith('num_batches_tracked'):
            continue
        owner = key.rsplit('.', 1)[0]
        if key.endswith('.summary') and owner in layers:
            if mode == 'baked':
                summaries += (model.get_submodule(owner).index.numel()
                              * value.element_size())
            else:
                summaries += value.numel() * (1 if mode == 'wq' else
                                              value.element_size())
        else:
            other += value.numel() * value.element_size()
    return dict(summaries=summaries, other=other, total=summaries + other)
