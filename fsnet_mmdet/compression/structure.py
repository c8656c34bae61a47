"""A compressed model's structure in its config: the ``compression`` model key.

A KSE or LRF model differs from the detector it came from only in some
layers' shapes, which a checkpoint alone cannot tell the builder. The
config's model dict records them in one key::

    model = dict(..., compression=dict(
        method='lrf',   # or 'kse'
        layers={'backbone.features.conv1_1.conv': dict(out_channels=12),
                'backbone.features.conv1_1.bn': dict(num_features=12),
                'backbone.features.conv1_2.conv': dict(in_channels=12), ...},
        settings=dict(...)))   # how it was made; informational

Every path that builds the model from its config (``tools/train.py``,
``tools/test.py``, ``init_detector``, the plugin's tools) builds the detector
as usual and then, once importing this package has installed the hook,
applies the key (:func:`apply_compression`): ``'lrf'`` rebuilds each listed
conv / BatchNorm / L2Norm with the listed sizes (:func:`resized`), ``'kse'``
replaces each listed conv by a :class:`~fsnet_mmdet.compression.kse.KSEConv`
with the listed ``q``. Module names, and so state-dict keys, stay the
detector's own; the checkpoint written with the config loads strictly.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from ..utils.modules import replace_module

#: The model-config key :func:`fsnet_mmdet.engine.build_hooks.install_build_hooks` consumes.
COMPRESSION_KEY = 'compression'
METHODS = ('kse', 'lrf')
_RESIZABLE = {'conv': ('in_channels', 'out_channels'),
              'norm': ('num_features', ), 'l2norm': ('n_dims', )}


def _kind(module: nn.Module) -> Optional[str]:
    from mmcv.cnn.bricks import wrappers
    from mmdet.models.necks.ssd_neck import L2Norm
    from torch.nn.modules.batchnorm import _BatchNorm
    if type(module) in (nn.Conv2d, wrappers.Conv2d):
        return 'conv'  # dense convs (mmcv's wrapper only adds empty inputs)
    if isinstance(module, _BatchNorm):
        return 'norm'
    if isinstance(module, L2Norm):
        return 'l2norm'
    return None


def resized(module: nn.Module, dims: Mapping[str, int],
            device=None) -> nn.Module:
    """A fresh module of ``module``'s type and options with new channel counts.

    Args:
        module: a dense conv (``in_channels``, ``out_channels``), a
            BatchNorm (``num_features``) or mmdet's SSD ``L2Norm``
            (``n_dims``).
        dims: the sizes to change, e.g. ``dict(out_channels=12)``.
        device: device of the new module (default: ``module``'s); ``'meta'``
            builds it without memory (counting).

    Raises:
        ValueError: another module type, or a size it does not have.
    """
    kind = _kind(module)
    if kind is None:
        raise ValueError(f'cannot resize a {type(module).__name__}; allowed: '
                         f'nn.Conv2d, BatchNorm, L2Norm')
    unknown = sorted(set(dims) - set(_RESIZABLE[kind]))
    bad = [k for k, v in dims.items()
           if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if unknown or bad:
        raise ValueError(f'{type(module).__name__} sizes: allowed '
                         f'{list(_RESIZABLE[kind])}, each an int >= 1; got '
                         f'{dict(dims)}')
    first = next(iter(module.parameters()), None)
    if device is None and first is not None:
        device = first.device
    dtype = first.dtype if first is not None else None
    if kind == 'conv':
        if module.groups != 1:
            raise ValueError(f'cannot resize a grouped conv (groups='
                             f'{module.groups})')
        new = type(module)(dims.get('in_channels', module.in_channels),
                           dims.get('out_channels', module.out_channels),
                           module.kernel_size, module.stride, module.padding,
                           module.dilation, 1, module.bias is not None,
                           module.padding_mode, device=device, dtype=dtype)
    elif kind == 'norm':
        new = type(module)(dims.get('num_features', module.num_features),
                           module.eps, module.momentum, module.affine,
                           module.track_running_stats, device=device,
                           dtype=dtype)
    else:
        new = type(module)(dims.get('n_dims', module.n_dims), module.scale,
                           module.eps)
        new = new.to(device=device, dtype=dtype)
    new.train(module.training)
    return new


def _get(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f'{COMPRESSION_KEY}: no module {name!r} in '
                         f'{type(model).__name__}') from None


def check_spec(spec: Mapping) -> Tuple[str, Dict[str, dict]]:
    """``(method, layers)`` of a ``compression`` dict; ValueError if malformed."""
    if not isinstance(spec, Mapping):
        raise ValueError(f'{COMPRESSION_KEY} must be a dict, got {spec!r}')
    unknown = sorted(set(spec) - {'method', 'layers', 'settings'})
    if unknown:
        raise ValueError(f'{COMPRESSION_KEY}.{unknown[0]} is not a key; '
                         f'allowed: method, layers, settings')
    method = spec.get('method')
    if method not in METHODS:
        raise ValueError(f'{COMPRESSION_KEY}.method must be one of {METHODS}, '
                         f'got {method!r}')
    layers = spec.get('layers')
    if not isinstance(layers, Mapping) or not all(
            isinstance(v, Mapping) for v in layers.values()):
        raise ValueError(f'{COMPRESSION_KEY}.layers must map module names to '
                         f'dicts, got {type(layers).__name__}')
    return method, {str(k): dict(v) for k, v in layers.items()}


def apply_compression(model: nn.Module, spec: Mapping) -> nn.Module:
    """Give, in place, the model the structure a ``compression`` dict records.

    ``'lrf'``: every listed module is rebuilt by :func:`resized` (fresh
    weights: load the checkpoint after). ``'kse'``: every listed conv becomes
    a ``KSEConv`` with ``q`` (``dict(q=[...])``).

    Returns:
        The model.

    Raises:
        ValueError: a bad spec, a name the model does not have, or a module
            that cannot take the listed shape (the message names it).
    """
    from .kse import KSEConv

    method, layers = check_spec(spec)
    new = {}
    for name, dims in layers.items():
        module = _get(model, name)
        try:
            if method == 'lrf':
                new[name] = resized(module, dims)
            else:
                if _kind(module) != 'conv' or set(dims) != {'q'}:
                    raise ValueError(f'kse takes dense convs and dict(q=[...]),'
                                     f' got a {type(module).__name__} and '
                                     f'{sorted(dims)}')
                first = module.weight
                new[name] = KSEConv(
                    module.in_channels, module.out_channels, module.kernel_size,
                    module.stride, module.padding, module.dilation,
                    module.groups, module.bias is not None, module.padding_mode,
                    device=first.device, dtype=first.dtype, q=dims['q'])
                new[name].train(module.training)
        except (TypeError, ValueError) as err:
            raise ValueError(f'{COMPRESSION_KEY}: {name}: {err}') from None
    for name, module in new.items():
        replace_module(model, name, module)
    return model


def resized_params(model: nn.Module, layers: Mapping[str, Mapping[str, int]]) -> int:
    """Parameters of the model once ``layers`` (an ``'lrf'`` spec) are resized.

    Counted from meta-device copies of the resized modules: no memory, the
    same count ``apply_compression`` would give.
    """
    total = sum(p.numel() for p in model.parameters())
    for name, dims in layers.items():
        module = model.get_submodule(name)
        new = resized(module, dims, device='meta')
        total += sum(p.numel() for p in new.parameters()) - sum(
            p.numel() for p in module.parameters())
    return total


def model_flops(model: nn.Module, image_size: Tuple[int, int] = (300, 300)) -> int:
    """FLOPs of one (1, 3, H, W) image through the model's ``forward`` in
    tensor mode (backbone, neck, head; no NMS), counted by
    ``mmengine.analysis`` as mmdet's ``tools/analysis_tools/get_flops.py``
    counts them: one multiply-add is one FLOP, an eval-mode BatchNorm 2
    per element (12.6M of the dense demo model's 2.06G); ops it has no
    rule for (indexing, elementwise additions) count 0. An FSConv that
    computes from its summary on this input (``compute='auto'`` or
    ``'summary'``) counts what it runs: stage 1's multiply-adds
    (:func:`~fsnet_mmdet.layers.summary_conv.summary_macs`; stage 2's
    additions count 0, as every elementwise addition here) instead of the
    dense conv's, which the trace records (:func:`summary_path_correction`)."""
    from mmengine.analysis import FlopAnalyzer
    from mmengine.logging import MMLogger

    was_training = model.training
    model.eval()
    first = next(iter(model.parameters()))
    inputs = torch.zeros(1, 3, *image_size, device=first.device,
                         dtype=first.dtype)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')  # one warning per op it does not count
    try:
        with torch.no_grad():
            # What get_model_complexity_info(model, inputs=...)['flops'] is.
            return int(FlopAnalyzer(model, inputs).total()) + \
                summary_path_correction(model, inputs)
    finally:
        logger.setLevel(level)
        model.train(was_training)


def summary_path_correction(model: nn.Module, inputs: Tensor) -> int:
    """Multiply-adds to add to a traced count of ``model(inputs)``
    for its FSConvs that compute from the summary: a trace records their
    filters path (the dense conv's ``K C S1 S2`` per output pixel); they run
    stage 1's ``C K x y`` per input position they use (0 when no FSConv
    takes the summary path)."""
    from ..layers.fsconv import FSConv

    correction = 0

    def count(layer: FSConv, args, output) -> None:
        nonlocal correction
        x = args[0]
        if layer.computes_from_summary(x):
            filters, summary = layer.path_macs(tuple(x.shape[-2:]),
                                               tuple(output.shape[-2:]))
            correction += x.shape[0] * (summary.macs - filters.macs)

    # Layers with compute='filters' run what the trace
    # records: no hook, and no extra forward when every layer is one.
    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, FSConv) and m.compute != 'filters']
    if not handles:
        return 0
    try:
        with torch.no_grad():
            model(inputs)  # as FlopAnalyzer calls it (detectors: tensor mode)
    finally:
        for handle in handles:
            handle.remove()
    return correction


__all__ = ['COMPRESSION_KEY', 'METHODS', 'apply_compression', 'check_spec',
           'model_flops', 'resized', 'resized_params',
           'summary_path_correction']
