"""Convert checkpoints: dense -> FS (least squares), FS -> compact (WQ) or stock."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from mmcv.cnn import ConvModule
from torch import Tensor, nn

from ..layers.summary import SummaryWeightMixin, error_norms

#: Indices of the convs in ``mmdet``'s ``SSDVGG(depth=16)`` ``features``
#: (conv, ReLU pairs; max pools between stages; pool5, fc6, fc7 appended),
#: in the order of FSSSD300's convs conv1_1 ... conv5_3, fc6, fc7.
STOCK_SSDVGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28,
                             31, 33)


def fs_layers(model: nn.Module) -> List[str]:
    """Names of the model's summary layers (FSConv, FSLinear)."""
    return [n for n, m in model.named_modules()
            if isinstance(m, SummaryWeightMixin)]


@dataclass(frozen=True)
class Projection:
    """How far one layer's least-squares summary is from its dense weight."""

    name: str
    dense_norm: float   # ||W||
    error_norm: float   # ||W - summary[index]||

    @property
    def relative_error(self) -> float:
        return self.error_norm / self.dense_norm if self.dense_norm else 0.0


def project_state_dict(model: nn.Module, state_dict: Dict[str, Tensor]
                       ) -> Tuple[Dict[str, Tensor], List[Projection]]:
    """A dense checkpoint's state dict made to fit an FS model.

    For every summary layer ``name`` of the model (FSConv, FSLinear) whose
    ``name.weight`` is in the state dict, that entry becomes ``name.summary``,
    the least-squares summary (each element the mean of the dense weights that
    map to it). Everything else is kept as it is.

    Args:
        model: the FS model.
        state_dict: the dense model's state dict (not modified).

    Returns:
        The new state dict and, per projected layer, its :class:`Projection`.

    Raises:
        ValueError: a dense weight fits neither the layer's dense shape nor
            its summary (names the entry); nothing is returned half-done.
    """
    state, report = dict(state_dict), []
    for name, layer in model.named_modules():
        key = f'{name}.weight'
        if not isinstance(layer, SummaryWeightMixin) or key not in state:
            continue
        dense = state.pop(key)
        summary = layer.summary_from_dense(dense, key)
        state[f'{name}.summary'] = summary
        report.append(Projection(name, *error_norms(summary, layer.index, dense)))
    return state, report


def check_state_dict(model: nn.Module, state_dict: Dict[str, Tensor],
                     filename: str) -> None:
    """Raise ValueError at the first key where a checkpoint does not fit a model.

    Args:
        model: the model built from the config.
        state_dict: the checkpoint's state dict.
        filename: the checkpoint file, named in the error.
    """
    expected = dict(model.state_dict())
    for name, layer in model.named_modules():
        # DFSNet: a checkpoint saved after the search holds each layer's
        # learned locations; loading them discretizes the layer.
        if isinstance(layer, SummaryWeightMixin) and (
                f'{name}.offsets' in state_dict):
            expected.pop(f'{name}.dfs_logits', None)
            expected[f'{name}.offsets'] = layer.index.new_empty(
                layer.offsets_shape)
    for key, value in expected.items():
        if key not in state_dict:
            raise ValueError(f'{filename}: no entry for {key!r} of the config\'s '
                             f'model {tuple(value.shape)}; the checkpoint was '
                             f'trained with another config')
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise ValueError(
                f'{filename}: {key!r} has shape {tuple(state_dict[key].shape)}, '
                f'the config\'s model expects {tuple(value.shape)}')
    extra = sorted(set(state_dict) - set(expected))
    if extra:
        raise ValueError(f'{filename}: {extra[0]!r} (and {len(extra) - 1} more) '
                         f'is not in the config\'s model')


def save_weights(filename: str, state_dict: Mapping[str, Tensor],
                 meta: Optional[dict] = None, **extra) -> int:
    """Write a weights-only checkpoint ``{'meta', 'state_dict'}`` atomically.

    ``meta`` is the training run's metadata (:func:`plain_meta` of it is
    kept: ``dataset_meta`` above all, so mmdet's ``init_detector`` /
    ``DetInferencer`` name the model's own classes); ``extra`` entries are
    added to it.

    Returns:
        The size of the written file in bytes.
    """
    from ..utils.io import save_atomic
    return save_atomic({'meta': dict(plain_meta(meta or {}), **extra),
                        'state_dict': dict(state_dict)}, filename)


def plain_meta(meta: dict) -> dict:
    """The parts of Runner metadata a weights-only file can hold."""

    def plain(value):
        if isinstance(value, (str, int, float, bool)) or value is None:
            return True
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        return False

    return {k: v for k, v in meta.items()
            if k in ('dataset_meta', 'epoch', 'iter', 'mmdet_version',
                     'mmengine_version', 'experiment_name') and plain(v)}


def _fold(conv_module: ConvModule) -> Tuple[Tensor, Tensor]:
    """Dense weight and bias of a ConvModule with its eval-mode BN folded in."""
    conv = conv_module.conv
    weight = conv.weight.detach().clone()
    bias = (conv.bias.detach().clone() if conv.bias is not None else
            torch.zeros(conv.out_channels))
    if conv_module.with_norm:
        bn = conv_module.norm
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = (bias - bn.running_mean) * scale + bn.bias.detach()
    return weight, bias


def _ssd300_layers(model: nn.Module) -> Iterator[Tuple[str, ConvModule]]:
    """(stock key prefix, ConvModule) for every conv of backbone and neck."""
    from ..models import FSSSD300

    if not isinstance(model.backbone, FSSSD300):
        raise ValueError(f'export to a stock SSD300 needs the FSSSD300 '
                         f'backbone, got {type(model.backbone).__name__}')
    convs = [m for m in model.backbone.features if isinstance(m, ConvModule)]
    for index, module in zip(STOCK_SSDVGG_CONV_INDICES, convs):
        yield f'backbone.features.{index}', module
    for i, level in enumerate(model.neck.extra_layers):
        for j, module in enumerate(level):
            yield f'neck.extra_layers.{i}.{j}.conv', module


def to_stock_ssd300(model: nn.Module) -> Dict[str, Tensor]:
    """State dict of mmdet's stock SSD300 (``SSDVGG``, ``SSDNeck``, ``SSDHead``
    without BN) equivalent to an FS or dense SSD300-BN in eval mode.

    FS filters are extracted (baked) and every BN is folded into its conv, so
    ``mmdet::pascal_voc/ssd300_voc0712.py`` loads the result with
    ``strict=True`` and computes the same outputs, without this plugin.

    Args:
        model: a detector with FSSSD300 backbone, SSDNeck and (FS)SSDHead.

    Returns:
        The stock state dict.
    """
    state = {}
    for prefix, module in _ssd300_layers(model):
        state[f'{prefix}.weight'], state[f'{prefix}.bias'] = _fold(module)
    state['neck.l2_norm.weight'] = model.neck.l2_norm.weight.detach().clone()
    for name in ('cls_convs', 'reg_convs'):
        for i, branch in enumerate(getattr(model.bbox_head, name)):
            conv = branch[-1]
            state[f'bbox_head.{name}.{i}.0.weight'] = conv.weight.detach().clone()
            state[f'bbox_head.{name}.{i}.0.bias'] = conv.bias.detach().clone()
    return state
