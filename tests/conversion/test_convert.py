"""Dense -> FS: least-squares summaries from a dense state dict, in code and tools/convert.py."""
import fnmatch

import pytest
import torch
from torch import nn

from conftest import ROOT, build_detector, load_config, run_tool, voc_batch
from references import assert_projected, fs_layers, projection_residual_loop
from fsnet_mmdet import FSConv, FSLinear
from fsnet_mmdet.conversion import project_state_dict

DEMO = ROOT / 'configs' / 'demo' / 'fsnet_ssd300_demo.py'


def pair():
    """A dense model and its FS twin (same module names)."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.Flatten(),
                          nn.Linear(16, 10))
    fs = nn.Sequential(FSConv(8, 16, 3, interleave=4), nn.BatchNorm2d(16),
                       nn.Flatten(), FSLinear(16, 10, stride=3))
    return dense, fs


def test_projected_state_dict_is_each_layers_least_squares_fit():
    dense, fs = pair()
    source = dense.state_dict()
    keys = list(source)
    state, report = project_state_dict(fs, source)
    assert list(source) == keys                    # the input is left alone
    assert '0.weight' not in state and '3.weight' not in state
    # Each summary element the mean of its dense weights (an explicit loop);
    # biases and BN as they were.
    assert assert_projected(fs, source, state) == 2
    fs.load_state_dict(state)                      # strict: every key fits
    assert [p.name for p in report] == ['0', '3']
    for p, i in zip(report, (0, 3)):
        weight = dense[i].weight.detach()
        expected = (projection_residual_loop(weight, fs[i].index)
                    / float(weight.double().pow(2).sum())) ** 0.5
        assert p.relative_error == pytest.approx(expected, rel=1e-5)
        assert 0 < p.relative_error < 1


def test_mmengine_load_of_a_dense_checkpoint_projects_onto_the_summaries():
    """`load_from` a dense checkpoint: no missing or unexpected keys."""
    from mmengine.runner.checkpoint import load_state_dict
    dense, fs = pair()
    load_state_dict(fs, dense.state_dict(), strict=True)
    assert assert_projected(fs, dense.state_dict(), fs.state_dict()) == 2


def test_a_weight_of_another_shape_is_refused_naming_it():
    dense, fs = pair()
    state = dense.state_dict()
    state['3.weight'] = torch.zeros(10, 17)
    before = fs.state_dict()
    with pytest.raises(ValueError, match=r"3.weight: dense weight of shape "
                       r"\(10, 17\) fits neither this FSLinear's dense shape "
                       r"\(10, 16\) nor its summary \(30,\)"):
        project_state_dict(fs, state)
    with pytest.raises(ValueError, match='3.weight: dense weight of shape'):
        fs.load_state_dict(state)
    for key, value in before.items():   # the loader raised before copying
        if key.startswith('3.'):
            torch.testing.assert_close(fs.state_dict()[key], value)


@pytest.mark.e2e
def test_convert_tool_turns_a_dense_detector_into_its_fs_model(tmp_path):
    dense_cfg = tmp_path / 'dense.py'
    dense_cfg.write_text(
        f"_base_ = {str(DEMO)!r}\n"
        "conv = dict(_delete_=True, type='Conv2d')\n"
        "model = dict(backbone=dict(conv_cfg=conv), neck=dict(conv_cfg=conv),\n"
        "             bbox_head=dict(pred_conv_cfg=conv, pred_interleave=False))\n")
    torch.manual_seed(0)
    dense = build_detector(load_config(dense_cfg))
    torch.save({'meta': {'iter': 7}, 'state_dict': dense.state_dict()},
               tmp_path / 'dense.pth')
    out = tmp_path / 'fs.pth'
    result = run_tool('tools/convert.py', DEMO, tmp_path / 'dense.pth', out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'layers projected; all of them: 0.' in result.stdout
    # Every summary the group mean of the dense weights (an explicit loop
    # over all 35 layers), the rest of the state dict as it was.
    fs = build_detector(load_config(DEMO))
    saved = torch.load(out, weights_only=True)
    assert saved['meta'] == {'iter': 7, 'source': 'dense.pth'}
    assert assert_projected(fs, dense.state_dict(), saved['state_dict']) == 35
    fs.load_state_dict(saved['state_dict'])
    # The printed total: sqrt(sum ||W - P(W)||^2 / sum ||W||^2), by loops.
    residual = norm = 0.0
    for name, layer in fs_layers(fs).items():
        weight = dense.get_submodule(name).weight.detach()
        residual += projection_residual_loop(weight, layer.index)
        norm += float(weight.double().pow(2).sum())
    line = next(l for l in result.stdout.splitlines() if 'all of them' in l)
    assert line.startswith('35 layers projected; all of them: ')
    assert float(line.rsplit(':', 1)[1]) == pytest.approx(
        (residual / norm) ** 0.5, abs=1e-4)

    state = dense.state_dict()
    state['bbox_head.cls_convs.0.0.weight'] = torch.zeros(3, 3)
    torch.save({'state_dict': state}, tmp_path / 'bad.pth')
    bad = run_tool('tools/convert.py', DEMO, tmp_path / 'bad.pth',
                   tmp_path / 'bad_fs.pth')
    assert bad.returncode != 0
    assert "bbox_head.cls_convs.0.0.weight: dense weight of shape (3, 3)" in bad.stderr
    assert not (tmp_path / 'bad_fs.pth').exists()


# ------------------------------------------------------------ fs_convert
def small_model():
    from mmcv.cnn import ConvModule
    from mmcv.cnn.bricks.conv2d_adaptive_padding import Conv2dAdaptivePadding
    torch.manual_seed(0)
    shared = nn.Conv2d(16, 16, 3, padding=1)
    return nn.ModuleDict(dict(
        stem=ConvModule(3, 16, 3, padding=1, norm_cfg=dict(type='BN')),
        depthwise=nn.Conv2d(16, 16, 3, groups=16),
        padded=Conv2dAdaptivePadding(16, 16, 3),
        level0=nn.Sequential(shared), level1=nn.Sequential(shared),
        fc=nn.Linear(64, 10)))


def test_convert_replaces_dense_layers_in_place_and_lists_the_rest():
    from fsnet_mmdet import convert_to_fs
    from fsnet_mmdet.layers.index import representatives
    model = small_model()
    dense_keys = set(model.state_dict())
    stem_weight = model['stem'].conv.weight.detach().clone()
    report = convert_to_fs(model, include='*', linear=dict(stride=2),
                           rules=[dict(pattern='level*', k3=2)])
    assert report.converted == [('stem.conv', 'FSConv'), ('level0.0', 'FSConv'),
                                ('fc', 'FSLinear')]
    assert report.kept_dense == [
        ('depthwise', 'groups=16'),
        ('padded', 'Conv2dAdaptivePadding: a subclass with its own forward')]
    assert model['level1'][0] is model['level0'][0]          # still shared
    assert model['level0'][0].geometry.sampling[2] == 2      # the rule's k3
    assert model['fc'].stride == 2
    # Module names stay: only converted weights become summaries.
    renamed = {k.replace('.weight', '.summary') for k in dense_keys
               if k.split('.weight')[0] in ('stem.conv', 'level0.0',
                                            'level1.0', 'fc')}
    kept = {k for k in dense_keys if k.split('.weight')[0] not in
            ('stem.conv', 'level0.0', 'level1.0', 'fc') or 'weight' not in k}
    assert set(model.state_dict()) == renamed | kept
    # The FS layer starts from the dense layer's draws (one per summary element).
    conv = model['stem'].conv
    rep = representatives(conv.index, conv.summary.numel())
    torch.testing.assert_close(conv.summary.reshape(-1),
                               stem_weight.reshape(-1)[rep])


def test_convert_errors_name_the_pattern_or_module_and_change_nothing():
    from fsnet_mmdet import convert_to_fs
    model = small_model()
    before = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(ValueError, match=r"exclude pattern 'head\.\*' matches "
                       r"no conv or linear layer of ModuleDict"):
        convert_to_fs(model, exclude=['head.*'])
    with pytest.raises(ValueError, match=r"fs_convert: fc \(Linear\): .*k3"):
        convert_to_fs(model, linear=dict(), rules=[dict(pattern='fc', k3=2)])
    with pytest.raises(ValueError, match='every rule needs a pattern'):
        convert_to_fs(model, rules=[dict(k3=2)])
    with pytest.raises(ValueError, match='include must be a module-name pattern'):
        convert_to_fs(model, include=[3])
    assert {n: type(m) for n, m in model.named_modules()} == before


def test_runner_registry_builds_the_converted_model():
    """MMEngine's Runner builds through the root MODELS registry."""
    from mmengine.registry import MODELS, init_default_scope
    cfg = load_config(ROOT / 'configs' / 'fsnet_rtmdet-tiny_coco.py')
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone.stem[0].conv, FSConv)
    assert type(model.bbox_head.rtm_cls[0]) is nn.Conv2d  # exclude=['bbox_head.*']
    assert model.bbox_head.cls_convs[1][0].conv is model.bbox_head.cls_convs[0][0].conv
    assert 'fs_convert' in cfg.model   # the config itself is left as it was


def test_unknown_fs_convert_key_is_refused():
    cfg = load_config(ROOT / 'configs' / 'fsnet_rtmdet-tiny_coco.py')
    cfg.model.fs_convert = dict(lineer=dict())
    with pytest.raises(ValueError, match='fs_convert: .*lineer.*allowed keys: '
                       'include, exclude, conv, linear, rules'):
        build_detector(cfg)


@pytest.mark.parametrize('config,stored,dense,kept,interleaved,score_thr', [
    ('configs/fsnet_retinanet_r50_fpn_voc.py', 3_930_712, 36_723_992, 0,
     {'bbox_head.retina_cls': 20, 'bbox_head.retina_reg': 4},
     'model.test_cfg.score_thr'),
    ('configs/fsnet_faster-rcnn_r50_fpn_voc.py', 4_641_620, 41_445_556, 0,
     {'rpn_head.rpn_reg': 4, 'roi_head.bbox_head.fc_reg': 4},
     'model.test_cfg.rcnn.score_thr'),
    ('configs/fsnet_rtmdet-tiny_coco.py', 923_820, 4_896_168, 8,  # depthwise
     {},  # one prior per location: grid order
     'model.test_cfg.score_thr'),
])
def test_detectors_switched_by_fs_convert(config, stored, dense, kept,
                                          interleaved, score_thr, tmp_path):
    from fsnet_mmdet import count_params
    from mmdet.apis import inference_detector, init_detector
    # Untrained: no score threshold, so that there are boxes to compare.
    cfg = load_config(ROOT / config, **{score_thr: 0.0})
    model = build_detector(cfg)
    report = count_params(model)
    assert (report.stored, report.dense) == (stored, dense)
    # fs_convert alone orders the predictors (issue 31).
    orders = {n: (m.geometry.interleave if isinstance(m, FSConv) else
                  m.interleave) for n, m in model.named_modules()
              if isinstance(m, (FSConv, FSLinear))}
    assert {n: g for n, g in orders.items() if g > 1} == interleaved
    # Left dense: the grouped convs, and the head where the config excludes
    # it (RTMDet: exclude=['bbox_head.*']).
    excluded = tuple(cfg.model.fs_convert.get('exclude', ()))
    dense_left = [m for n, m in model.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear))
                  and not isinstance(m, (FSConv, FSLinear))
                  and not any(fnmatch.fnmatchcase(n, p) for p in excluded)]
    assert len(dense_left) == kept and all(m.groups > 1 for m in dense_left)
    assert all(not isinstance(m, (FSConv, FSLinear)) for n, m in
               model.named_modules()
               if any(fnmatch.fnmatchcase(n, p) for p in excluded))
    pipeline = [dict(t, scale=(320, 320)) if t['type'] == 'Resize' else t
                for t in cfg.test_pipeline]  # smaller images: CPU time
    data = voc_batch(pipeline)
    model.train()
    parsed = model.data_preprocessor(data, True)
    total, _ = model.parse_losses(model.loss(parsed['inputs'], parsed['data_samples']))
    total.backward()
    assert torch.isfinite(total)
    for name, p in model.named_parameters():
        if p.requires_grad:   # ResNet's frozen stem and stage 1 do not
            assert p.grad is not None and p.grad.isfinite().all(), name

    # Untrained RTMDet regresses distances of about 1e-6: no box of positive
    # size survives. One stride each way instead (its regression biases).
    biases = [p for n, p in model.named_parameters()
              if n.startswith('bbox_head.rtm_reg.') and n.endswith('.bias')]
    assert len(biases) == (3 if 'rtmdet' in config else 0)
    with torch.no_grad():
        for bias in biases:
            bias.fill_(1.0)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, tmp_path / 'w.pth')
    cfg.test_dataloader.dataset.pipeline = pipeline
    detector = init_detector(cfg, str(tmp_path / 'w.pth'), device='cpu')
    assert sum(isinstance(m, (FSConv, FSLinear)) for m in detector.modules()) == \
        sum(isinstance(m, (FSConv, FSLinear)) for m in model.modules())
    # mmdet's inference API on the checkpoint: the detections of the model
    # predicting here on the same image (VOC2007 000001, alone in its batch).
    image = ROOT / 'tests' / 'data' / 'VOCdevkit' / 'VOC2007' / 'JPEGImages' \
        / '000001.jpg'
    result = inference_detector(detector, str(image)).pred_instances
    model.eval()
    with torch.no_grad():
        ours = model.test_step(dict(inputs=data['inputs'][:1],
                                    data_samples=data['data_samples'][:1]))
    assert ours[0].img_path == str(image)
    ours = ours[0].pred_instances
    assert len(ours) > 0 and ours.bboxes.shape[-1] == 4
    for key in ('labels', 'bboxes', 'scores'):
        assert torch.equal(result[key], ours[key]), key
