"""FSConv inside MMCV/MMEngine/MMDetection: registry, ConvModule, init paths, reuse."""
import math

import pytest
import torch
from mmcv.cnn import ConvModule, build_conv_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS as ROOT_MODELS
from torch import nn

from fsnet_mmdet import FSConv


@pytest.mark.parametrize('scope', [None, 'mmdet'])
def test_registry_round_trip(scope):
    from mmengine.registry import DefaultScope

    cfg = dict(type='FSConv', preset='fsnet1', grad_reduction='sum')
    if scope is None:
        conv = build_conv_layer(cfg, 512, 512, 3, padding=1)
    else:
        with DefaultScope.overwrite_default_scope(scope):
            conv = build_conv_layer(cfg, 512, 512, 3, padding=1)
    assert type(conv) is FSConv and ROOT_MODELS.get('FSConv') is FSConv
    assert conv.geometry.sampling[2] == 16 and conv.grad_reduction == 'sum'


def test_conv_module_with_bn_and_activation():
    module = ConvModule(16, 32, 3, padding=1, conv_cfg=dict(type='FSConv'),
                        norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    assert isinstance(module.conv, FSConv) and module.conv.bias is None
    x = torch.randn(2, 16, 8, 8)
    out = module(x)
    assert out.shape == (2, 32, 8, 8) and (out >= 0).all()
    out.sum().backward()
    assert all(p.grad is not None for p in module.parameters())


def _std(conv):
    return conv.weight.std().item()


@pytest.mark.parametrize('init_cfg,expected_std', [
    # MMEngine initializers on layer='Conv2d', as in SSDVGG / SSDNeck / SSDHead.
    (dict(type='Kaiming', layer='Conv2d'), math.sqrt(2 / (64 * 9))),   # fan_out
    (dict(type='Xavier', layer='Conv2d', distribution='uniform'),
     math.sqrt(2 / (64 * 9 + 64 * 9))),
    (dict(type='Normal', layer='Conv2d', std=0.01), 0.01),
])
def test_mmengine_init_cfg_reaches_the_summary(init_cfg, expected_std):
    class Net(BaseModule):
        def __init__(self):
            super().__init__(init_cfg=init_cfg)
            # Nested in a Sequential: initializers must reach it anyway.
            self.body = nn.Sequential(FSConv(64, 64, 3))

    torch.manual_seed(0)
    net = Net()
    before = net.body[0].summary.detach().clone()
    net.init_weights()
    conv = net.body[0]
    assert not torch.equal(conv.summary, before)         # the summary changed
    assert _std(conv) == pytest.approx(expected_std, rel=0.05)
    # The dense layer under the same init has the same filter statistics.
    dense = Net.__new__(Net)
    BaseModule.__init__(dense, init_cfg=init_cfg)
    dense.body = nn.Sequential(nn.Conv2d(64, 64, 3))
    dense.init_weights()
    assert _std(conv) == pytest.approx(dense.body[0].weight.std().item(), rel=0.05)


def test_conv_module_kaiming_init_reaches_the_summary():
    torch.manual_seed(0)
    module = ConvModule(64, 128, 3, conv_cfg=dict(type='FSConv'),
                        norm_cfg=dict(type='BN'))
    # ConvModule: kaiming_normal_, fan_out, relu: std = sqrt(2 / (128 * 9)).
    assert _std(module.conv) == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.05)
    assert module.conv.bias is None


def test_pending_init_is_overridden_by_load_state_dict():
    src = FSConv(8, 8, 3)
    dst = FSConv(8, 8, 3)
    nn.init.constant_(dst.weight, 5.0)     # pending write to the dense view
    dst.load_state_dict(src.state_dict())  # the checkpoint wins
    torch.testing.assert_close(dst.summary, src.summary)
    nn.init.constant_(dst.weight, 5.0)
    assert (dst.state_dict()['summary'] == 5).all()  # saved after write-back


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(FSConv(3, 16, 3, padding=1), nn.ReLU(),
                        FSConv(16, 32, 1), FSConv(32, 12, 3, stride=2))
    net(torch.randn(2, 3, 9, 9)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mmdet_resnet_and_retinanet_head_with_fsconv():
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS

    init_default_scope('mmdet')
    fs = dict(type='FSConv')
    backbone = MODELS.build(dict(type='ResNet', depth=18, conv_cfg=fs,
                                 out_indices=(1, 2, 3)))
    head = MODELS.build(dict(
        type='RetinaHead', num_classes=3, in_channels=128, feat_channels=64,
        stacked_convs=2, conv_cfg=fs,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                              strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True),
        loss_bbox=dict(type='L1Loss')))
    n_fs = sum(isinstance(m, FSConv) for m in backbone.modules())
    n_conv = sum(isinstance(m, nn.Conv2d) for m in backbone.modules())
    assert n_fs == n_conv == 20  # stem + 16 block convs + 3 downsamples
    feats = backbone(torch.randn(2, 3, 64, 64))
    neck = nn.ModuleList(nn.Conv2d(c, 128, 1) for c in (128, 256, 512))
    cls, reg = head([n(f) for n, f in zip(neck, feats)])
    (sum(c.mean() for c in cls) + sum(r.mean() for r in reg)).backward()
    for m in backbone.modules():
        if isinstance(m, FSConv):
            assert m.summary.grad is not None
    assert all(isinstance(c, FSConv) for c in head.cls_convs.modules()
               if isinstance(c, nn.Conv2d))
