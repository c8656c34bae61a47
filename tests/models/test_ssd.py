"""FSNet SSD300 configs: build, parameter table (paper Table 4), train step, inference."""
import pytest
import torch
from torch import nn

from conftest import build_detector, load_config, voc_batch
from fsnet_mmdet import FSConv, count_params

CONFIGS = {
    # config: (stored params, target, tolerance)
    'configs/ssd300_bn_voc.py': (26_293_678, 26.32e6, 0.005),
    'configs/fsnet_ssd300_voc.py': (1_714_670, 1.67e6, 0.03),
    'configs/fsnet2_ssd300_voc.py': (2_571_246, 2.59e6, 0.03),
}
WQ_TARGETS = {'configs/fsnet_ssd300_voc.py': 0.45e6,
              'configs/fsnet2_ssd300_voc.py': 0.68e6}


@pytest.fixture(scope='module', params=list(CONFIGS))
def detector(request):
    cfg = load_config(request.param)
    torch.manual_seed(0)
    return request.param, cfg, build_detector(cfg)


def test_parameter_counts_match_paper_table4(detector):
    path, _, model = detector
    report = count_params(model)
    stored, target, tol = CONFIGS[path]
    assert report.stored == stored == sum(p.numel() for p in model.parameters())
    assert abs(report.stored - target) / target <= tol
    assert abs(report.dense - 26.32e6) / 26.32e6 <= 0.005  # same architecture
    if path in WQ_TARGETS:
        assert abs(report.effective_wq - WQ_TARGETS[path]) / WQ_TARGETS[path] <= 0.05


def test_every_conv_is_fs_in_fs_configs(detector):
    path, _, model = detector
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 15 + 8 + 12  # VGG16+fc6/fc7, extra layers, predictors
    n_fs = sum(isinstance(m, FSConv) for m in convs)
    assert n_fs == (0 if 'ssd300_bn' in path else len(convs))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 15 + 8  # BN after every backbone and neck conv


def test_train_step_on_real_voc_images(detector):
    _, cfg, model = detector
    data = voc_batch(cfg.test_pipeline)
    model.train()
    model.zero_grad()
    parsed = model.data_preprocessor(data, True)
    losses = model.loss(parsed['inputs'], parsed['data_samples'])
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and total > 0
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # SSD's hard-negative mining may pick no anchor of a head level on
        # two images, leaving that predictor's gradient exactly zero.
        if not name.startswith('bbox_head'):
            assert p.grad.abs().sum() > 0, name
    assert model.bbox_head.cls_convs[0][0].bias.grad.abs().sum() > 0


def test_predict_returns_boxes(detector):
    """Boxes on every image, inside it; an FS detector's detections are, bit
    for bit, those of the dense SSD300-BN holding its filters when every FS
    layer runs its filters, and its raw outputs those of FSConv's default
    ``compute='auto'`` (some layers computed from the summary) up to float
    rounding."""
    path, cfg, model = detector
    model.eval()
    data = voc_batch(cfg.test_pipeline)
    if 'ssd300_bn' in path:
        with torch.no_grad():
            results = model.test_step(data)
    else:
        inputs = model.data_preprocessor(data)['inputs']
        layers = [m for m in model.modules() if isinstance(m, FSConv)]
        chosen = []
        hooks = [m.register_forward_hook(
            lambda m, args, out: chosen.append(m.computes_from_summary(args[0])))
            for m in layers]
        with torch.no_grad():
            auto = model(inputs, mode='tensor')
        for hook in hooks:
            hook.remove()
        assert all(m.compute == 'auto' for m in layers) and 0 < sum(chosen) < len(layers)
        for m in layers:
            m.compute = 'filters'
        try:
            with torch.no_grad():
                filters = model(inputs, mode='tensor')
                results = model.test_step(data)
        finally:  # the fixture's model is shared by the module's tests
            for m in layers:
                m.compute = 'auto'
        torch.testing.assert_close(auto, filters, rtol=1e-4, atol=1e-4)
    assert len(results) == 2
    for r in results:
        pred, (h, w) = r.pred_instances, r.ori_shape
        assert len(pred) > 0 and pred.bboxes.shape[-1] == 4
        assert (pred.bboxes >= 0).all()
        assert (pred.bboxes[:, 2] <= w + 1).all() and (pred.bboxes[:, 3] <= h + 1).all()
        assert (pred.scores >= cfg.model.test_cfg.score_thr).all()
        assert ((pred.labels >= 0) & (pred.labels < 20)).all()
    if 'ssd300_bn' in path:
        return
    state = dict(model.state_dict())
    for name, layer in model.named_modules():
        if isinstance(layer, FSConv):
            del state[f'{name}.summary']
            state[f'{name}.weight'] = layer.weight.detach()
    dense = build_detector(load_config('configs/ssd300_bn_voc.py'))
    dense.load_state_dict(state, strict=True)
    assert not any(isinstance(m, FSConv) for m in dense.modules())
    dense.eval()
    with torch.no_grad():
        expected = dense.test_step(data)
    for r, e in zip(results, expected):
        for key in ('labels', 'bboxes', 'scores'):
            assert torch.equal(r.pred_instances[key], e.pred_instances[key]), key


def test_fsnet_preset_k3():
    cfg = load_config('configs/fsnet_ssd300_voc.py')
    model = build_detector(cfg)
    fc6 = model.backbone.features.fc6.conv
    assert fc6.geometry.sampling[2] == 8 and fc6.dilation == (6, 6)
    assert model.backbone.features.conv5_3.conv.geometry.sampling[2] == 16
    assert model.neck.extra_layers[0][0].conv.geometry.ratio == 8  # 1x1
    assert model.bbox_head.reg_convs[0][0].geometry.sampling[2] == 8


def test_output_shapes_match_stock_ssdvgg():
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS

    init_default_scope('mmdet')
    ours = MODELS.build(dict(type='FSSSD300', conv_cfg=dict(type='FSConv')))
    stock = MODELS.build(dict(type='SSDVGG', depth=16, with_last_pool=False,
                              ceil_mode=True, out_indices=(3, 4),
                              out_feature_indices=(22, 34), init_cfg=None))
    x = torch.randn(1, 3, 300, 300)
    with torch.no_grad():
        assert [o.shape for o in ours(x)] == [o.shape for o in stock(x)]
    # Without BN, the same parameters as mmdet's SSDVGG (convs with bias).
    ours_dense = MODELS.build(dict(type='FSSSD300', norm_cfg=None))
    count = sum(p.numel() for p in ours_dense.parameters())
    assert count == sum(p.numel() for p in stock.parameters()) == 20_483_904


def test_pred_interleave_groups_each_anchors_outputs():
    demo = 'configs/demo/fsnet_ssd300_demo.py'  # width 0.25: fast to build
    cfg = load_config(demo)
    assert cfg.model.bbox_head.pred_interleave  # the FS configs' default
    head = build_detector(cfg).bbox_head
    grid_cfg = load_config(demo)
    grid_cfg.model.bbox_head.pred_interleave = False
    plain = build_detector(grid_cfg).bbox_head
    assert head.cls_out_channels == 7  # 6 shapes + background
    for branches, group in ((head.cls_convs, 7), (head.reg_convs, 4)):
        for branch in branches:
            assert branch[-1].geometry.interleave == group
    for branch in plain.cls_convs + plain.reg_convs:
        assert branch[-1].geometry.interleave == 1
    # The same summaries and parameter count: only the filter order changes.
    assert count_params(head).stored == count_params(plain).stored
    cfg.model.bbox_head.pred_conv_cfg = None
    with pytest.raises(ValueError, match='pred_interleave=True needs'):
        build_detector(cfg)
