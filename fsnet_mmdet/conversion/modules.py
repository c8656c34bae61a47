"""One switch: turn the conv (and linear) layers of any built model into FS layers.

In a config, one key in the model's dict::

    model = dict(fs_convert=dict(linear=dict()))   # every conv and linear layer

makes every path that builds the model from its config (``tools/train.py``,
``tools/test.py``, ``init_detector``, ``DetInferencer``, the plugin's tools)
build the detector as usual and then replace its layers in place
(:func:`convert_to_fs`): module names, and so state-dict keys, stay the
detector's own (``conv.weight`` becomes ``conv.summary``), and every
``init_cfg`` still applies. A dense checkpoint loads into the converted model
by least squares (``load_from``; ``tools/convert.py``).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..layers.fsconv import FSConv
from ..layers.fslinear import FSLinear
from ..layers.summary import SummaryWeightMixin
from ..utils.modules import replace_module
from .predictors import PREDICTOR_ORDERS, find_predictors

#: The model-config key that :func:`fsnet_mmdet.engine.build_hooks.install_build_hooks` consumes.
FS_CONVERT_KEY = 'fs_convert'


def _dense_types() -> Tuple[tuple, tuple]:
    """Conv and linear types replaced: torch's and mmcv's thin wrappers of them
    (whose forward adds only empty-input handling, which torch has)."""
    from mmcv.cnn.bricks import wrappers
    return (nn.Conv2d, wrappers.Conv2d), (nn.Linear, wrappers.Linear)


@dataclass
class ConversionReport:
    """What :func:`convert_to_fs` did.

    Attributes:
        converted: (module name, new type) of every replaced layer.
        kept_dense: (module name, reason) of every conv / linear layer that
            matched the patterns but stays as it was (grouped or depthwise
            convs, subclasses with their own forward, layers already FS).
    """

    converted: List[Tuple[str, str]] = field(default_factory=list)
    kept_dense: List[Tuple[str, str]] = field(default_factory=list)
    interleaved: List[Tuple[str, int]] = field(default_factory=list)
    grid_order: List[str] = field(default_factory=list)

    def summary(self) -> str:
        convs = sum(t != 'FSLinear' for _, t in self.converted)
        kinds = {t for _, t in self.converted} - {'FSConv', 'FSLinear'}
        kinds = '/'.join(sorted(kinds)) or 'FS'  # e.g. BSFConv
        lines = [f'fs_convert: {convs} conv and {len(self.converted) - convs} '
                 f'linear layers made {kinds}; {len(self.kept_dense)} kept as '
                 f'they were']
        lines += [f'  kept: {name} ({why})' for name, why in self.kept_dense]
        if self.interleaved:
            lines.append('  predictors interleaved (the same output of '
                         'neighbouring priors shares the summary): ' + ', '.join(
                             f'{name} (g={g})' for name, g in self.interleaved))
        if self.grid_order:
            lines.append('  predictors left in plain grid order (a head '
                         'fs_convert does not know, or predictor_order='
                         "'grid'; set a rule's interleave to order them): "
                         + ', '.join(self.grid_order))
        return '\n'.join(lines)


def _pattern_list(key: str, value) -> List[str]:
    """Patterns as a list: one string is one pattern."""
    patterns = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(p, str) for p in patterns):
        raise ValueError(f'fs_convert: {key} must be a module-name pattern or '
                         f'a list of them (strings), got {value!r}')
    return patterns


def name_matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _conv_type(name) -> type:
    """The conv class of a ``type`` option: a registered ``nn.Conv2d``
    subclass with a ``weight`` that initializers write (FSConv, BSFConv)."""
    from mmengine.registry import MODELS
    cls = MODELS.get(name) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Conv2d)
            and cls is not nn.Conv2d):
        raise ValueError(f"conv type must name a registered nn.Conv2d "
                         f"subclass, e.g. 'FSConv' (default) or 'BSFConv'; "
                         f"got {name!r}")
    return cls


def _replacement(layer: nn.Module, options: dict) -> nn.Module:
    """The FS layer of the same shape, carrying the dense layer's current
    weights as an initializer would (the first weight read by each summary
    element: the same distribution), and its bias. A conv ``type`` option
    other than FSConv (e.g. ``'BSFConv'``) builds that class instead, whose
    ``weight`` takes the dense weight its own way."""
    factory = dict(device=layer.weight.device, dtype=layer.weight.dtype)
    if isinstance(layer, nn.Conv2d):
        options = dict(options)
        conv_type = (_conv_type(options.pop('type')) if 'type' in options
                     else FSConv)
        fs = conv_type(layer.in_channels, layer.out_channels,
                       layer.kernel_size, layer.stride, layer.padding,
                       layer.dilation, 1, layer.bias is not None,
                       layer.padding_mode, **factory, **options)
    else:
        fs = FSLinear(layer.in_features, layer.out_features,
                      layer.bias is not None, **factory, **options)
    with torch.no_grad():
        fs.weight.copy_(layer.weight)
        if layer.bias is not None:
            fs.bias.copy_(layer.bias)
    fs.train(layer.training)
    return fs


def convert_to_fs(model: nn.Module,
                  include: Sequence[str] = ('*', ),
                  exclude: Sequence[str] = (),
                  conv: Optional[dict] = None,
                  linear: Optional[dict] = None,
                  rules: Sequence[dict] = (),
                  predictor_order: str = 'auto') -> ConversionReport:
    """Replace, in place, the model's conv and linear layers by FS layers.

    Every ``nn.Conv2d`` with ``groups=1`` whose module name matches an
    ``include`` pattern and no ``exclude`` pattern (``fnmatch``: ``*`` for any
    text, dots included) becomes an :class:`FSConv`; every ``nn.Linear``, an
    :class:`FSLinear` when ``linear`` is given. Grouped and depthwise convs,
    and conv / linear subclasses with a forward of their own, stay as they
    are and are listed in the report.

    Args:
        model: the built model.
        include: module-name pattern(s) of the layers to convert.
        exclude: module-name pattern(s) to leave dense.
        conv: FSConv options of every converted conv (default: FSConv's);
            with ``type='BSFConv'`` (any registered ``nn.Conv2d`` subclass),
            that layer and its options instead.
        linear: FSLinear options of every converted linear layer; None (the
            default) leaves linear layers dense.
        rules: per-pattern options, ``dict(pattern='bbox_head.*', k3=2)``;
            the first rule whose pattern matches a layer's name updates that
            layer's options (conv or linear).
        predictor_order: ``'auto'`` (default): the class / box predictors of
            every head :mod:`~fsnet_mmdet.conversion.predictors` knows get
            the ``interleave`` of their outputs per prior (RetinaHead's
            ``retina_cls`` ``C``, ``retina_reg`` 4, ...), unless a rule sets
            ``interleave``; ``'grid'``: every layer in grid order (as
            before this option; for checkpoints trained that way).

    Returns:
        The :class:`ConversionReport`.

    Raises:
        ValueError: a pattern (include, exclude or rule) that matches no
            layer; an option a layer cannot take (names the module); an
            unknown ``predictor_order``; nothing is replaced then.
    """
    if predictor_order not in PREDICTOR_ORDERS:
        raise ValueError(f'fs_convert: predictor_order must be one of '
                         f'{PREDICTOR_ORDERS}, got {predictor_order!r}')
    conv_types, linear_types = _dense_types()
    include, exclude = _pattern_list('include', include), _pattern_list(
        'exclude', exclude)
    rules = [dict(r) for r in rules]
    for rule in rules:
        if not isinstance(rule.get('pattern'), str):
            raise ValueError(f'fs_convert: every rule needs a pattern '
                             f'(a module-name pattern string), got {rule}')
    candidates = {n: m for n, m in model.named_modules()
                  if n and isinstance(m, conv_types + linear_types)}
    for kind, patterns in (('include', include), ('exclude', exclude),
                           ('rules', [r['pattern'] for r in rules])):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in candidates):
                raise ValueError(
                    f'fs_convert: {kind} pattern {pattern!r} matches no conv '
                    f'or linear layer of {type(model).__name__}; its layers '
                    f'are named like {sorted(candidates)[:3]}')

    predictors, unknown = find_predictors(model)
    orders = {p.name: p.interleave for p in predictors}
    report, new = ConversionReport(), {}
    for name, layer in candidates.items():
        if not name_matches(name, include) or name_matches(name, exclude):
            continue
        is_conv = isinstance(layer, conv_types)
        if not is_conv and linear is None:
            continue
        if isinstance(layer, SummaryWeightMixin):
            report.kept_dense.append((name, 'already FS'))
            continue
        if type(layer) not in conv_types + linear_types:
            report.kept_dense.append((name, f'{type(layer).__name__}: a '
                                      f'subclass with its own forward'))
            continue
        if is_conv and layer.groups != 1:
            report.kept_dense.append((name, f'groups={layer.groups}'))
            continue
        options = dict(conv or {}) if is_conv else dict(linear)
        rule = next((r for r in rules if fnmatch.fnmatchcase(name, r['pattern'])),
                    None)
        if rule:
            options.update({k: v for k, v in rule.items() if k != 'pattern'})
        if (orders.get(name, 1) > 1 and 'interleave' not in options
                and options.get('type', 'FSConv') == 'FSConv'):
            if predictor_order == 'auto':
                options['interleave'] = orders[name]
                report.interleaved.append((name, orders[name]))
            else:
                report.grid_order.append(name)
        elif name in unknown:
            report.grid_order.append(name)
        try:
            new[name] = _replacement(layer, options)
        except (TypeError, ValueError) as err:
            raise ValueError(f'fs_convert: {name} ({type(layer).__name__}): '
                             f'{err}') from None
    # A layer shared between modules (e.g. RTMDet's head across levels) is
    # replaced by one FS layer everywhere it appears.
    by_id = {id(candidates[name]): fs for name, fs in new.items()}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if id(module) in by_id:
            replace_module(model, name, by_id[id(module)])
    report.converted = [(name, type(fs).__name__) for name, fs in new.items()]
    return report
