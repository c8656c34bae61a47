"""fs_convert orders the predictors of every head it knows (issue 31).

The reference is an explicit rule per head, written out here: a predictor with
A priors of g outputs each (channel ``a * g + c``) reads, at output channel
``a * g + c``, the filter that grid order gives channel ``c * A + a``.
"""
import pytest
import torch
from torch import nn

from fsnet_mmdet import FSConv, FSLinear, convert_to_fs, count_params

NUM_CLASSES = 5


def _build(cfg):
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    return MODELS.build(cfg)


class _Detector(nn.Module):
    """A head under the name a detector gives it."""

    def __init__(self, head: nn.Module, name: str = 'bbox_head') -> None:
        super().__init__()
        self.add_module(name, head)


ANCHORS = dict(type='AnchorGenerator', octave_base_scale=4,
               scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
               strides=[8, 16, 32, 64, 128])
HEADS = {
    # head config -> {predictor: (A priors, g outputs per prior)}
    'RetinaHead': (
        dict(type='RetinaHead', num_classes=NUM_CLASSES, in_channels=16,
             stacked_convs=1, feat_channels=16, anchor_generator=ANCHORS),
        {'bbox_head.retina_cls': (9, NUM_CLASSES),
         'bbox_head.retina_reg': (9, 4)}),
    'RPNHead': (
        dict(type='RPNHead', in_channels=16, feat_channels=16,
             anchor_generator=dict(type='AnchorGenerator', scales=[8],
                                   ratios=[0.5, 1.0, 2.0],
                                   strides=[4, 8, 16, 32, 64])),
        {'bbox_head.rpn_cls': (3, 1), 'bbox_head.rpn_reg': (3, 4)}),
    'SSDHead': (
        dict(type='SSDHead', num_classes=NUM_CLASSES, in_channels=(16, 32, 8),
             anchor_generator=dict(type='SSDAnchorGenerator',
                                   scale_major=False, input_size=300,
                                   basesize_ratio_range=(0.15, 0.9),
                                   strides=[8, 16, 32],
                                   ratios=([2], [2, 3], [2, 3]))),
        {f'bbox_head.{kind}_convs.{i}.0': (a, g) for i, a in enumerate((4, 6, 6))
         for kind, g in (('cls', NUM_CLASSES + 1), ('reg', 4))}),
    'FCOSHead': (
        dict(type='FCOSHead', num_classes=NUM_CLASSES, in_channels=16,
             feat_channels=16, stacked_convs=1,
             norm_cfg=dict(type='GN', num_groups=4)),
        {'bbox_head.conv_cls': (1, NUM_CLASSES), 'bbox_head.conv_reg': (1, 4),
         'bbox_head.conv_centerness': (1, 1)}),
    'ATSSHead': (
        dict(type='ATSSHead', num_classes=NUM_CLASSES, in_channels=16,
             feat_channels=16, stacked_convs=1,
             norm_cfg=dict(type='GN', num_groups=4),
             anchor_generator=dict(type='AnchorGenerator', ratios=[1.0],
                                   octave_base_scale=8, scales_per_octave=1,
                                   strides=[8, 16, 32, 64, 128])),
        {'bbox_head.atss_cls': (1, NUM_CLASSES), 'bbox_head.atss_reg': (1, 4),
         'bbox_head.atss_centerness': (1, 1)}),
    'RTMDetSepBNHead': (
        dict(type='RTMDetSepBNHead', num_classes=NUM_CLASSES, in_channels=16,
             feat_channels=16, stacked_convs=1,
             anchor_generator=dict(type='MlvlPointGenerator', offset=0,
                                   strides=[8, 16, 32]),
             bbox_coder=dict(type='DistancePointBBoxCoder')),
        {f'bbox_head.rtm_{kind}.{i}': (1, g) for i in range(3)
         for kind, g in (('cls', NUM_CLASSES), ('reg', 4))}),
    'Shared2FCBBoxHead': (
        dict(type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=32,
             roi_feat_size=7, num_classes=NUM_CLASSES,
             reg_class_agnostic=False,
             bbox_coder=dict(type='DeltaXYWHBBoxCoder')),
        # fc_cls: one RoI, C + 1 scores; fc_reg: 4 deltas of each class.
        {'bbox_head.fc_cls': (1, NUM_CLASSES + 1),
         'bbox_head.fc_reg': (NUM_CLASSES, 4)}),
}


def _convert(cfg, **options):
    model = _Detector(_build(cfg))
    report = convert_to_fs(model, linear=dict(), **options)
    return model, report


@pytest.mark.parametrize('head', sorted(HEADS))
def test_known_heads_interleave_their_predictors(head):
    cfg, expected = HEADS[head]
    auto, report = _convert(cfg)
    grid, grid_report = _convert(cfg, predictor_order='grid')
    assert count_params(auto) == count_params(grid)  # same parameters
    modules, grid_modules = dict(auto.named_modules()), dict(grid.named_modules())
    assert {n for n, _ in report.interleaved} == {
        n for n, (a, g) in expected.items() if a > 1 and g > 1}
    assert sorted(grid_report.grid_order) == sorted(
        n for n, _ in report.interleaved)
    for name, (priors, group) in expected.items():
        layer, plain = modules[name], grid_modules[name]
        assert isinstance(layer, (FSConv, FSLinear)), name
        outputs = layer.index.shape[0]
        assert outputs == priors * group, name
        for a in range(priors):
            for c in range(group):
                assert torch.equal(layer.index[a * group + c],
                                   plain.index[c * priors + a]), (name, a, c)


def test_interleaved_predictor_computes_the_reordered_grid_conv():
    """Same summary: the interleaved layer's output channel a*g+c equals the
    grid layer's channel c*A+a (a dense conv with the reordered filters)."""
    cfg, _ = HEADS['RetinaHead']
    auto, _ = _convert(cfg)
    grid, _ = _convert(cfg, predictor_order='grid')
    layer, plain = auto.bbox_head.retina_cls, grid.bbox_head.retina_cls
    with torch.no_grad():
        plain.summary.copy_(layer.summary)
        plain.bias.zero_()
        layer.bias.zero_()
    x = torch.randn(2, 16, 8, 8)
    order = torch.arange(9 * NUM_CLASSES).view(NUM_CLASSES, 9).t().reshape(-1)
    torch.testing.assert_close(layer(x), plain(x)[:, order])


def test_unknown_head_is_converted_and_its_predictors_named_in_the_log():
    cfg = dict(type='GFLHead', num_classes=NUM_CLASSES, in_channels=16,
               feat_channels=16, stacked_convs=1,
               norm_cfg=dict(type='GN', num_groups=4),
               anchor_generator=dict(type='AnchorGenerator', ratios=[1.0],
                                     octave_base_scale=8, scales_per_octave=1,
                                     strides=[8, 16, 32, 64, 128]))
    model, report = _convert(cfg)
    assert all(isinstance(m, FSConv) for m in model.modules()
               if type(m) is nn.Conv2d) and report.converted
    assert sorted(report.grid_order) == ['bbox_head.gfl_cls', 'bbox_head.gfl_reg']
    assert not report.interleaved
    text = report.summary()
    assert text.count('plain grid order') == 1
    assert 'bbox_head.gfl_cls' in text and 'bbox_head.gfl_reg' in text


def test_build_hook_logs_the_grid_order_predictors_of_an_unknown_head_once():
    from unittest import mock

    from conftest import load_config
    cfg = load_config('mmdet::gfl/gfl_r50_fpn_1x_coco.py')
    cfg.model.backbone = dict(type='ResNet', depth=18, base_channels=8,
                              init_cfg=None)
    cfg.model.neck.in_channels = [8, 16, 32, 64]
    cfg.model.fs_convert = dict()
    with mock.patch('mmengine.logging.print_log') as log:
        model = _build(cfg.model)
    assert isinstance(model.bbox_head.gfl_cls, FSConv)
    texts = [call.args[0] for call in log.call_args_list
             if str(call.args[0]).startswith('fs_convert')]
    assert len(texts) == 1 and texts[0].count('plain grid order') == 1
    assert 'bbox_head.gfl_cls, bbox_head.gfl_reg' in texts[0]


def test_a_rule_interleave_wins_and_one_that_cannot_apply_names_the_layer():
    cfg, _ = HEADS['RetinaHead']
    model, report = _convert(cfg, rules=[dict(pattern='*retina_reg',
                                              interleave=12)])
    assert model.bbox_head.retina_reg.geometry.interleave == 12
    assert dict(report.interleaved) == {'bbox_head.retina_cls': NUM_CLASSES}
    with pytest.raises(ValueError, match=r'bbox_head\.retina_cls.*interleave=7'):
        _convert(cfg, rules=[dict(pattern='*retina_cls', interleave=7)])
    with pytest.raises(ValueError, match="predictor_order must be one of "
                       r"\('auto', 'grid'\), got 'anchor'"):
        _convert(cfg, predictor_order='anchor')


def test_fslinear_interleave_against_an_explicit_loop():
    layer = FSLinear(12, 8, interleave=4, ratio=4)
    s, length = layer.stride, layer.summary.numel()
    for k in range(8):
        grid_row = (k % 4) * 2 + k // 4  # channel a*4+c reads grid row c*2+a
        for j in range(12):
            assert layer.index[k, j] == (grid_row * s + j) % length
    x = torch.randn(3, 12)
    weight = layer.summary.detach()[layer.index.long()]
    torch.testing.assert_close(layer(x), x @ weight.t() + layer.bias)
    with pytest.raises(ValueError, match='interleave must be a positive '
                       'integer dividing out_features=8, got 3'):
        FSLinear(12, 8, interleave=3)
