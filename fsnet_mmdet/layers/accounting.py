"""One accounting protocol for every layer type: parameters, bits, effective.

What a model stores is the sum of what each of its modules stores itself
(its own tensors, not its children's): a :class:`Storage`. A module stores
its own parameters at their dtype's width unless it is a
:class:`StoredLayer` that says otherwise: a summary layer (its summary, bias
and DFSNet's int8 location table), a BSF layer (one bit per bank sign,
``ceil(log2 M)`` per selection index), a KSE layer (its centroids and their
index bits). :func:`count_params` adds them up for a model and
:func:`layer_params` reports one conv or linear layer; the tools, the
benchmarks and the docs scripts read their numbers from these two.

Three numbers per layer or model (:class:`ParamCounts`):

* ``stored``: stored parameters, the elements of the trained tensors (an
  int8 table counts a quarter per entry, as an 8-bit summary does);
* ``bits``: the exact bits of what is stored;
* ``effective`` = ``bits / 32``: fp32-equivalent parameters, the number that
  compares methods storing different widths. ``effective_wq`` is the same
  with every summary stored in 8 bits (FSNet-WQ).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, List

from torch import Tensor, nn


@dataclass(frozen=True)
class Storage:
    """What one module stores itself.

    Attributes:
        params: stored parameters (tensor elements; an 8-bit table's entries
            count a quarter each, rounded up).
        bits: exact stored bits.
        summary: summary elements (the part FSNet-WQ stores in 8 bits).
    """

    params: int
    bits: int
    summary: int = 0

    def __add__(self, other: 'Storage') -> 'Storage':
        return Storage(self.params + other.params, self.bits + other.bits,
                       self.summary + other.summary)


def tensor_storage(tensors: Iterable[Tensor]) -> Storage:
    """Tensors stored as they are: every element at its dtype's width."""
    params = bits = 0
    for t in tensors:
        params += t.numel()
        bits += t.numel() * t.element_size() * 8
    return Storage(params, bits)


def table_storage(table: Tensor) -> Storage:
    """An integer table (e.g. DFSNet's int8 offsets): its bits; as
    parameters, a byte counts a quarter."""
    size = table.numel() * table.element_size()
    return Storage(-(-size // 4), size * 8)


class StoredLayer:
    """Mixin of a layer whose storage is not its own parameters at their
    dtype's width: override :meth:`storage`."""

    def storage(self) -> Storage:
        """What the layer stores itself (default: its own parameters)."""
        return tensor_storage(self.parameters(recurse=False))


def module_storage(module: nn.Module) -> Storage:
    """What ``module`` stores itself (children not included)."""
    if isinstance(module, StoredLayer):
        return module.storage()
    return tensor_storage(module.parameters(recurse=False))


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a layer or a model.

    Attributes:
        dense: parameters with every compressed layer made dense (weight +
            bias).
        stored: parameters actually stored (:attr:`Storage.params`).
        summary: summary elements (0 for dense convs); the part WQ quantizes.
        bits: exact stored bits (:attr:`Storage.bits`).
    """

    dense: int
    stored: int
    summary: int
    bits: int = 0

    @property
    def ratio(self) -> float:
        return self.dense / self.stored

    @property
    def effective(self) -> float:
        """fp32-equivalent parameters: ``bits / 32``."""
        return self.bits / 32

    @property
    def effective_wq(self) -> float:
        """Effective parameters with 8-bit summaries (a byte counts 1/4),
        the rest as stored."""
        return self.stored - self.summary + self.summary / 4


@dataclass(frozen=True)
class LayerParams(ParamCounts):
    """Parameter counts of one conv or linear layer, named as in the model."""

    name: str = ''


@dataclass(frozen=True)
class ModelParams(ParamCounts):
    """Parameter counts of a model; non-conv parameters count in both totals."""

    layers: List[LayerParams] = field(default_factory=list)


def dense_params(layer: nn.Module) -> int:
    """Weight and bias elements of the dense ``nn.Conv2d`` / ``nn.Linear``
    of ``layer``'s shape."""
    bias = layer.bias.numel() if layer.bias is not None else 0
    if isinstance(layer, nn.Linear):
        return layer.out_features * layer.in_features + bias
    return (layer.out_channels * layer.in_channels // layer.groups *
            math.prod(layer.kernel_size) + bias)


def layer_params(name: str, layer: nn.Module) -> LayerParams:
    """Parameter counts of one conv (``nn.Conv2d`` and its compressed
    subclasses) or linear layer: its dense equivalent and
    :func:`module_storage`."""
    own = module_storage(layer)
    return LayerParams(dense_params(layer), own.params, own.summary, own.bits,
                       name=name)


def count_params(model: nn.Module) -> ModelParams:
    """Dense-equivalent, stored and summary parameters and stored bits of a
    model: the sum of :func:`module_storage` over its modules.

    ``layers`` lists every conv and linear layer; other parameters (BN, ...)
    count the same in both totals. Buffers (BatchNorm statistics) are not
    counted, except a layer's own stored tables (DFSNet's locations).
    """
    layers = [layer_params(n, m) for n, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = Storage(0, 0)
    for module in model.modules():
        total = total + module_storage(module)
    saved = sum(layer.dense - layer.stored for layer in layers)
    return ModelParams(total.params + saved, total.params, total.summary,
                       total.bits, layers=layers)


__all__ = ['LayerParams', 'ModelParams', 'ParamCounts', 'Storage',
           'StoredLayer', 'count_params', 'dense_params', 'layer_params',
           'module_storage', 'table_storage', 'tensor_storage']
