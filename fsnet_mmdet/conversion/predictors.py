"""Where the weight sharing belongs in a detection head's predictors.

FS makes neighbouring filters (output channels ``k`` and ``k + 1``) share
summary elements. MMDetection's predictors lay their outputs out prior-major:
RetinaHead's ``retina_cls`` has ``A x C`` outputs read as channel ``a * C + c``
(anchor a, class c), its ``retina_reg`` ``A x 4`` as ``a * 4 + d``. In grid
order the C class scores (or 4 box deltas) of one anchor would share weights,
and those are the outputs that must differ most. With ``interleave = g``
(g = C, or 4) the same output of neighbouring anchors shares instead
(:func:`~fsnet_mmdet.layers.index.interleave_order`): channel ``a * g + c`` is
grid filter ``c * A + a``. This is what ``FSSSDHead(pred_interleave=True)``
does for SSD300 (+11.7 mAP points at the same parameter count,
docs/accuracy.md "Why FS trailed"); :func:`find_predictors` finds it for every
head this module knows, so ``fs_convert`` applies it in any detector.

The rule, per head: a predictor whose outputs come in groups of g per prior
(g = ``cls_out_channels`` for class scores, ``bbox_coder.encode_size`` for
box deltas) gets ``interleave = g``. With one prior per location (FCOS, ATSS,
RTMDet, the RoI head's ``fc_cls``) the rule is the identity: there is no other
prior to share with, and the layer stays in grid order. Class-specific box
regressors of a RoI head (``fc_reg``: ``4 C`` outputs, channel ``c * 4 + d``)
get ``interleave = 4``: the same delta of neighbouring classes shares.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from torch import nn

#: Head class name -> its predictors: (attribute, output group). Groups:
#: ``'cls'`` (``cls_out_channels`` per prior), ``'box'`` (the box coder's
#: ``encode_size`` per prior, or per class for a class-specific regressor),
#: ``'one'`` (one output per prior). A head matches through its class's MRO,
#: the most derived known class first (FSSSDHead is an SSDHead; RTMDet's
#: heads are ATSSHeads with predictors of their own names).
HEAD_PREDICTORS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    'RetinaHead': (('retina_cls', 'cls'), ('retina_reg', 'box')),
    'RPNHead': (('rpn_cls', 'cls'), ('rpn_reg', 'box')),
    'SSDHead': (('cls_convs', 'cls'), ('reg_convs', 'box')),
    'FCOSHead': (('conv_cls', 'cls'), ('conv_reg', 'box'),
                 ('conv_centerness', 'one')),
    'ATSSHead': (('atss_cls', 'cls'), ('atss_reg', 'box'),
                 ('atss_centerness', 'one')),
    'RTMDetHead': (('rtm_cls', 'cls'), ('rtm_reg', 'box'), ('rtm_obj', 'one')),
    'RTMDetSepBNHead': (('rtm_cls', 'cls'), ('rtm_reg', 'box'),
                        ('rtm_obj', 'one')),
    'BBoxHead': (('fc_cls', 'cls'), ('fc_reg', 'box')),
}
#: Values of ``fs_convert``'s ``predictor_order`` option.
PREDICTOR_ORDERS = ('auto', 'grid')


@dataclass(frozen=True)
class Predictor:
    """One predictor layer of a head and the order its outputs take.

    Attributes:
        name: the layer's module name in the model.
        head: the head's class name.
        group: g, its outputs per prior (or per class).
        interleave: the ``interleave`` it gets (1: grid order).
    """

    name: str
    head: str
    group: int
    interleave: int


def _known_class(module: nn.Module) -> str | None:
    return next((c.__name__ for c in type(module).__mro__
                 if c.__name__ in HEAD_PREDICTORS), None)


def _is_head(module: nn.Module) -> bool:
    """A detection head by mmdet's base classes (or by its name)."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    return (isinstance(module, (BaseDenseHead, BBoxHead))
            or type(module).__name__.endswith('Head'))


def _layers(module: nn.Module, prefix: str) -> List[Tuple[str, nn.Module]]:
    """The predictor layer(s) at an attribute: the layer itself, or one per
    level of a ModuleList (the last layer of each level's Sequential, as in
    SSDHead's ``cls_convs``)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return [(prefix, module)]
    out = []
    if isinstance(module, nn.ModuleList):
        for i, level in enumerate(module):
            if isinstance(level, nn.Sequential):
                i, level = f'{i}.{len(level) - 1}', level[-1]
            if isinstance(level, (nn.Conv2d, nn.Linear)):
                out.append((f'{prefix}.{i}', level))
    return out


def _group(head: nn.Module, kind: str) -> int:
    if kind == 'cls':
        return int(head.cls_out_channels) if hasattr(
            head, 'cls_out_channels') else int(head.num_classes) + 1
    if kind == 'box':
        return int(getattr(head.bbox_coder, 'encode_size', 4))
    return 1


def _out(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) \
        else layer.out_features


def find_predictors(model: nn.Module) -> Tuple[List[Predictor], List[str]]:
    """The predictors of every known head of ``model`` and their order.

    Args:
        model: a built detector (or any module holding mmdet heads).

    Returns:
        ``(predictors, unknown)``: a :class:`Predictor` for every predictor
        layer of a known head (``interleave = g`` where its outputs hold
        several groups of g, else 1); and the module names of the conv /
        linear layers that are direct children of a head this module does not
        know (they keep grid order).

    Raises:
        ValueError: a predictor whose outputs are not a multiple of its group
            (names the layer, its outputs and the group).
    """
    predictors, unknown = [], []
    for name, module in model.named_modules():
        if not name or not _is_head(module):
            continue
        known = _known_class(module)
        if known is None:
            unknown += [f'{name}.{child}' for child, m in module.named_children()
                        if isinstance(m, (nn.Conv2d, nn.Linear))]
            continue
        for attr, kind in HEAD_PREDICTORS[known]:
            if getattr(module, attr, None) is None:  # e.g. RTMDet without obj
                continue
            group = _group(module, kind)
            for layer_name, layer in _layers(getattr(module, attr),
                                             f'{name}.{attr}'):
                out = _out(layer)
                if out % group:
                    raise ValueError(
                        f'fs_convert: predictor {layer_name} '
                        f'({type(module).__name__}) has {out} outputs, not a '
                        f'multiple of its {group} outputs per prior; pass '
                        f"predictor_order='grid' or a rule with an "
                        f'interleave that divides {out}')
                predictors.append(Predictor(
                    layer_name, type(module).__name__, group,
                    group if out > group else 1))
    return predictors, unknown
