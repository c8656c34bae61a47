"""LRF (Joo et al., AAAI 2021): replaceability, compensation, SSD300, the tool."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT, build_detector, load_config
from references import assert_same_detections, predict, run_test_tool
from fsnet_mmdet.compression import lrf
from fsnet_mmdet.compression.structure import (apply_compression, resized,
                                               resized_params)

TINY_DENSE = ROOT / 'tests' / 'configs' / 'ssd300_bn_tiny.py'
WIDTHS = [32, 64, 32, 16, 16, 16]
SMALL = dict(**{'model.backbone.widen_factor': 0.0625,
                'model.neck.in_channels': WIDTHS[:2],
                'model.neck.out_channels': WIDTHS,
                'model.bbox_head.in_channels': WIDTHS})
SMALL_ARGS = [f'{k}={v}'.replace(' ', '') for k, v in SMALL.items()]
#: Random weights: a threshold that keeps a few boxes to compare.
SCORE_THR = 0.3


# --------------------------------------------------------- pure functions
def test_replaceability_matches_explicit_least_squares():
    torch.manual_seed(0)
    f = torch.randn(6, 20, dtype=torch.float64)
    residual, coeff = lrf.replaceability(f)
    for m in range(6):
        others = [i for i in range(6) if i != m]
        sol = torch.linalg.lstsq(f[others].t(), f[m][:, None]).solution[:, 0]
        torch.testing.assert_close(coeff[m, others], sol, rtol=1e-6, atol=1e-8)
        assert coeff[m, m] == 0
        expected = (f[m] - sol @ f[others]).norm()
        assert float(residual[m]) == pytest.approx(float(expected), rel=1e-6)
        exact = lrf.combination(f @ f.t(), m)
        torch.testing.assert_close(exact[others], sol, rtol=1e-9, atol=1e-12)


def test_affine_filters_fold_scale_and_shift():
    w = torch.arange(8.0).view(2, 1, 2, 2)
    rows = lrf.affine_filters(w, torch.tensor([2.0, 0.5]), torch.tensor([1.0, -3.0]))
    assert rows.tolist() == [[0, 2, 4, 6, 1], [2, 2.5, 3, 3.5, -3]]


def test_compensate_preserves_a_linear_consumer():
    """y_3 = 0.5 y_0 - 2 y_1 (through a per-channel factor g, as L2Norm):
    the consumer after compensate() computes the same without channel 3."""
    torch.manual_seed(1)
    y = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    y[:, 3] = 0.5 * y[:, 0] - 2 * y[:, 1]
    g = torch.tensor([1.5, 0.7, 2.0, 3.0], dtype=torch.float64)
    consumer = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    coeff = torch.tensor([0.5, -2.0, 0.0, 0.0], dtype=torch.float64)
    new = lrf.compensate(consumer, 3, coeff, g)
    assert new.shape == (5, 3, 3, 3)
    before = F.conv2d(y * g.view(1, -1, 1, 1), consumer, padding=1)
    after = F.conv2d((y * g.view(1, -1, 1, 1))[:, :3], new, padding=1)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)


def _pair(relu: bool):
    """conv(3 -> 6, 3x3) -> BN(eval, random statistics) [-> ReLU] -> conv(6 -> 5)."""
    torch.manual_seed(2)
    conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=True).double()
    bn = nn.BatchNorm2d(6).double()
    conv2 = nn.Conv2d(6, 5, 3, padding=1).double()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    bn.eval()
    return nn.Sequential(conv1, bn, *([nn.ReLU()] if relu else []), conv2)


def _affine(net):
    conv1, bn = net[0], net[1]
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return s.detach(), (bn.bias + s * (conv1.bias - bn.running_mean)).detach()


def _make_dependent(net, target, combo):
    """Make channel ``target``'s BN output exactly sum_i c_i (channel i's)."""
    conv1, bn = net[0], net[1]
    s, t = _affine(net)
    with torch.no_grad():
        conv1.weight[target] = sum(c * s[i] * conv1.weight[i]
                                   for i, c in combo.items()) / s[target]
        conv1.bias[target] = 0.0
        shift = sum(c * t[i] for i, c in combo.items())
        bn.bias[target] = shift - s[target] * (0.0 - bn.running_mean[target])


def _prune_pair(net, n):
    conv1, bn, conv2 = net[0], net[1], net[-1]
    s, t = _affine(net)
    result = lrf.lrf_prune_channels(conv1.weight, [conv2.weight], n, s, t)
    kept = result.kept
    small = nn.Sequential(*[m for m in net])
    small[0] = resized(conv1, dict(out_channels=len(kept)))
    small[1] = resized(bn, dict(num_features=len(kept)))
    small[-1] = resized(conv2, dict(in_channels=len(kept)))
    with torch.no_grad():
        small[0].weight.copy_(conv1.weight[kept]), small[0].bias.copy_(conv1.bias[kept])
        for key in ('weight', 'bias', 'running_mean', 'running_var'):
            getattr(small[1], key).copy_(getattr(bn, key)[kept])
        small[-1].weight.copy_(result.consumers[0]), small[-1].bias.copy_(conv2.bias)
    small.eval()
    return small, result


def test_an_exact_combination_is_pruned_without_changing_the_output():
    """Filter 4 (BN folded, bias and shift included) = 0.7 f1 - 1.3 f2: one
    of the three goes and the network computes exactly what it did."""
    net = _pair(relu=False)
    _make_dependent(net, 4, {1: 0.7, 2: -1.3})
    small, result = _prune_pair(net, 1)
    assert result.removed[0] in (1, 2, 4) and result.residuals[0] < 1e-10
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(small(x), net(x), rtol=0, atol=1e-10)
    # Counts by hand: conv1 5x3x9 + 5, BN 2x5, conv2 5x5x9 + 5.
    assert sum(p.numel() for p in small.parameters()) == 140 + 10 + 230


def test_a_positive_multiple_is_pruned_exactly_through_relu():
    net = _pair(relu=True)
    _make_dependent(net, 5, {0: 1.7})
    small, result = _prune_pair(net, 1)
    assert result.removed[0] in (0, 5)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(small(x), net(x), rtol=0, atol=1e-10)


def test_greedy_steps_match_one_step_at_a_time():
    """Two removals = the criterion's argmin, compensate, again (explicit)."""
    torch.manual_seed(3)
    w = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    consumer = torch.randn(4, 5, 1, 1, dtype=torch.float64)
    result = lrf.lrf_prune_channels(w, [consumer], 2)
    kept, cons = list(range(5)), consumer
    for step in range(2):
        rows = lrf.affine_filters(w[kept])
        residual, coeff = lrf.replaceability(rows)
        score = [float(residual[j]) * float(cons[:, j].norm())
                 for j in range(len(kept))]
        m = min(range(len(kept)), key=lambda j: score[j])
        lam = lrf.combination(rows @ rows.t(), m)
        cons = lrf.compensate(cons, m, lam)
        assert result.removed[step] == kept.pop(m)
    assert result.kept.tolist() == kept
    torch.testing.assert_close(result.consumers[0], cons)
    with pytest.raises(ValueError, match=r'n_remove must be an int in 0 .. 4'):
        lrf.lrf_prune_channels(w, [consumer], 5)
    with pytest.raises(ValueError, match='must read the producer'):
        lrf.lrf_prune_channels(w, [consumer[:, :3]], 1)


# ------------------------------------------------------------------ SSD300
@pytest.fixture(scope='module')
def small_ssd():
    cfg = load_config(TINY_DENSE, **SMALL)
    model = build_detector(cfg).eval()
    torch.manual_seed(4)
    with torch.no_grad():  # trained-looking BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    return cfg, model


def test_ssd300_groups(small_ssd):
    _, model = small_ssd
    groups = {g.producer: g for g in lrf.ssd300_channel_groups(model)}
    assert len(groups) == 15 + 8  # every backbone and neck conv
    g = groups['backbone.features.conv4_3.conv']
    assert g.norm == 'backbone.features.conv4_3.bn'
    assert g.consumers == ('backbone.features.conv5_1.conv', )
    assert g.l2norm == 'neck.l2_norm'
    assert g.scaled_consumers == ('bbox_head.cls_convs.0.0', 'bbox_head.reg_convs.0.0')
    assert groups['backbone.features.fc7.conv'].consumers == (
        'neck.extra_layers.0.0.conv', 'bbox_head.cls_convs.1.0',
        'bbox_head.reg_convs.1.0')
    assert groups['neck.extra_layers.0.0.conv'].consumers == (
        'neck.extra_layers.0.1.conv', )
    assert groups['neck.extra_layers.3.1.conv'].consumers == (
        'bbox_head.cls_convs.5.0', 'bbox_head.reg_convs.5.0')
    assert groups['backbone.features.conv1_2.conv'].consumers == (
        'backbone.features.conv2_1.conv', )


def test_ssd300_counts_by_hand(small_ssd):
    _, model = small_ssd
    groups = lrf.ssd300_channel_groups(model)
    spec = lrf.lrf_structure(model, groups, {'backbone.features.conv2_1.conv': 3})
    assert spec == {'backbone.features.conv2_1.conv': dict(out_channels=5),
                    'backbone.features.conv2_1.bn': dict(num_features=5),
                    'backbone.features.conv2_2.conv': dict(in_channels=5)}
    total = sum(p.numel() for p in model.parameters())
    # 3 filters of conv2_1 (8 inputs x 9), 3 BN pairs, 3 inputs of conv2_2 (8 x 9).
    assert resized_params(model, spec) == total - 3 * (8 * 9 + 2 + 8 * 9)
    counts = lrf.removal_counts(model, groups, 0.5)
    assert counts['backbone.features.fc7.conv'] == 32  # 64 -> 32
    assert counts['neck.extra_layers.1.0.conv'] == 4   # 8 -> 4
    assert lrf.removal_counts(model, groups, 0.99)['neck.extra_layers.1.0.conv'] == 7


def test_ssd300_exact_pruning_keeps_the_detector_outputs(small_ssd):
    """conv2_1's filter 5 made 1.7 x filter 1 (BN folded): LRF removes one
    of the two, through conv2_1's ReLU, and every head output is unchanged."""
    cfg, dense = small_ssd
    model = build_detector(cfg).eval()
    model.load_state_dict(dense.state_dict())
    conv = model.backbone.features.conv2_1
    bn = conv.bn
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    t = bn.bias - s * bn.running_mean
    with torch.no_grad():
        conv.conv.weight[5] = 1.7 * s[1] / s[5] * conv.conv.weight[1]
        bn.bias[5] = 1.7 * t[1] + s[5] * bn.running_mean[5]
    groups = lrf.ssd300_channel_groups(model)
    spec, state, report = lrf.prune_model_lrf(
        model, groups, {'backbone.features.conv2_1.conv': 1})
    assert [(r.producer, r.before, r.after) for r in report] == [
        ('backbone.features.conv2_1.conv', 8, 7)]
    pruned = build_detector(cfg).eval()
    apply_compression(pruned, dict(method='lrf', layers=spec))
    pruned.load_state_dict(state)
    pruned.eval()
    x = torch.randn(1, 3, 300, 300)
    with torch.no_grad():
        a, b = model(x), pruned(x)
    for la, lb in zip(a, b):
        for ta, tb in zip(la, lb):
            torch.testing.assert_close(tb, ta, rtol=1e-4, atol=1e-5)


def test_stock_ssdvgg_groups_and_pruning():
    """mmdet's own SSD300 (SSDVGG, no BN): the same chain, biases pruned."""
    cfg = load_config('mmdet::pascal_voc/ssd300_voc0712.py')
    cfg.model.backbone.init_cfg = None
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model).eval()
    groups = lrf.ssd300_channel_groups(model)
    names = [g.producer for g in groups]
    assert names[:3] == ['backbone.features.0', 'backbone.features.2',
                         'backbone.features.5']
    conv4_3 = groups[9]
    assert conv4_3.producer == 'backbone.features.21' and conv4_3.norm is None
    assert conv4_3.consumers == ('backbone.features.24', )
    assert groups[14].producer == 'backbone.features.33'
    spec, state, _ = lrf.prune_model_lrf(model, groups, {'backbone.features.0': 4})
    apply_compression(model, dict(method='lrf', layers=spec))
    model.load_state_dict(state)
    assert model.backbone.features[0].bias.shape == (60, )
    assert model.backbone.features[2].weight.shape == (64, 60, 3, 3)


def test_bad_structures_are_refused(small_ssd):
    cfg, _ = small_ssd
    model = build_detector(cfg)
    with pytest.raises(ValueError, match="no module 'backbone.nope'"):
        apply_compression(model, dict(method='lrf', layers={'backbone.nope': {}}))
    with pytest.raises(ValueError, match=r"method must be one of \('kse', 'lrf'\)"):
        apply_compression(model, dict(method='prune', layers={}))
    with pytest.raises(ValueError, match='allowed'):
        apply_compression(model, dict(method='lrf', layers={
            'backbone.features.conv1_1.bn': dict(out_channels=3)}))
    with pytest.raises(ValueError, match='ratio must be a number in'):
        lrf.removal_counts(model, lrf.ssd300_channel_groups(model), 1.0)
    from fsnet_mmdet.conversion import convert_to_fs
    convert_to_fs(model, include=['backbone.features.conv2_2.conv'])
    with pytest.raises(ValueError, match='LRF prunes dense convs; '
                       'backbone.features.conv2_2.conv is a FSConv'):
        lrf.ssd300_channel_groups(model)


# -------------------------------------------------------------- the tool
@pytest.mark.e2e
def test_tool_lrf_end_to_end(tmp_path, capsys, small_ssd):
    """tools/compress.py --method lrf: a physically smaller dense model
    (fewer parameters and FLOPs); config + checkpoint load in tools/test.py."""
    from fsnet_mmdet.tools.compress import main

    _, dense = small_ssd
    source = tmp_path / 'dense.pth'
    torch.save(dict(state_dict=dense.state_dict()), source)
    out = tmp_path / 'lrf'
    main([str(TINY_DENSE), str(source), '--method', 'lrf', '--lrf-ratio', '0.5',
          '--out-dir', str(out), '--cfg-options', *SMALL_ARGS])
    printed = capsys.readouterr().out
    assert 'LRF: ratio 0.5 (given); 23 of 23 conv outputs pruned' in printed
    report = json.loads((out / 'report.json').read_text())
    before, after = report['before'], report['after']
    assert before['flops'] > 2 * after['flops']
    assert before['params'] > 2 * after['params']
    state = torch.load(out / 'checkpoint.pth', weights_only=True)['state_dict']
    assert state['backbone.features.fc7.conv.weight'].shape == (32, 32, 1, 1)
    assert state['neck.l2_norm.weight'].shape == (16, )
    assert state['bbox_head.cls_convs.0.0.weight'].shape == (84, 16, 3, 3)
    assert sum(v.numel() for k, v in state.items()
               if 'running' not in k and 'num_batches' not in k) == after['params']
    # The model rebuilt from the written config only: every conv halved.
    model = build_detector(load_config(out / 'config.py'))
    assert model.backbone.features.conv1_1.conv.out_channels == 4
    assert model.neck.extra_layers[1][0].conv.out_channels == 4
    # tools/test.py on the written files: the detections of the written
    # config's model holding the checkpoint, predicted here.
    _, theirs = run_test_tool(out / 'config.py', out / 'checkpoint.pth',
                              tmp_path / 'test',
                              f'model.test_cfg.score_thr={SCORE_THR}')
    cfg = load_config(out / 'config.py',
                      **{'model.test_cfg.score_thr': SCORE_THR})
    model = build_detector(cfg)
    model.load_state_dict(torch.load(out / 'checkpoint.pth', weights_only=True)[
        'state_dict'], strict=True)
    assert_same_detections(predict(model, cfg), theirs)
    # Fine-tuning loads it (tools/train.py reads load_from from the config).
    assert load_config(out / 'config.py').load_from == str(out / 'checkpoint.pth')
