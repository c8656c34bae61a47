"""FSLinear (1D filter summary) against explicit loops, Eq. 2, least squares and nn.Linear."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsnet_mmdet import FSLinear, count_params
from fsnet_mmdet.conversion import fs_layers
from fsnet_mmdet.layers.extraction import extract_filters
from fsnet_mmdet.layers.geometry import segment_stride
from fsnet_mmdet.layers.index import multiplicity, segment_index


def slow_weight(summary, rows, length, stride):
    """Row k is the length-N segment of the summary starting at k * s, wrapping."""
    weight = torch.empty(rows, length, dtype=summary.dtype)
    for k in range(rows):
        for j in range(length):
            weight[k, j] = summary[(k * stride + j) % summary.numel()]
    return weight


CASES = [
    # in_features, out_features, options
    (64, 10, {}),                     # ratio 8: s = 8
    (20, 7, {}),                      # s = ceil(20 / 8) = 3, not dividing N
    (16, 4, {'stride': 16}),          # no sharing: a dense layer reordered
    (32, 2, {'ratio': 4}),            # 2 rows, L = 16 < N: rows wrap onto themselves
    (5, 3, {'stride': 1}),            # maximal sharing
]


@pytest.mark.parametrize('cin,cout,opts', CASES)
def test_forward_matches_linear_with_loop_weight(cin, cout, opts):
    torch.manual_seed(0)
    layer = FSLinear(cin, cout, **opts).double()
    expected_stride = opts.get('stride') or math.ceil(cin / opts.get('ratio', 8))
    assert layer.stride == expected_stride
    assert layer.summary.shape == (cout * expected_stride,)
    weight = slow_weight(layer.summary.detach(), cout, cin, layer.stride)
    torch.testing.assert_close(layer.weight, weight)
    x = torch.randn(3, 2, cin, dtype=torch.double)
    torch.testing.assert_close(layer(x), F.linear(x, weight, layer.bias))
    torch.testing.assert_close(layer.eval()(x), F.linear(x, weight, layer.bias))


@pytest.mark.parametrize('reduction', ['mean', 'sum'])
@pytest.mark.parametrize('cin,cout,opts', CASES)
def test_gradient_is_eq2(cin, cout, opts, reduction):
    """Summary gradient = mean (sum) of the weight gradients reading it."""
    torch.manual_seed(0)
    layer = FSLinear(cin, cout, grad_reduction=reduction, **opts).double()
    x = torch.randn(4, cin, dtype=torch.double)
    grad_out = torch.randn(4, cout, dtype=torch.double)
    layer(x).backward(grad_out)
    grad_weight = grad_out.t() @ x                     # dense dL/dW, (K, N)
    expected = torch.zeros_like(layer.summary)
    count = torch.zeros_like(layer.summary)
    for k in range(cout):
        for j in range(cin):
            e = (k * layer.stride + j) % layer.summary.numel()
            expected[e] += grad_weight[k, j]
            count[e] += 1
    if reduction == 'mean':
        expected /= count
    torch.testing.assert_close(layer.summary.grad, expected)
    torch.testing.assert_close(layer.bias.grad, grad_out.sum(0))


def test_sum_reduction_is_the_true_gradient():
    """Finite differences through the layer's own extraction (Eq. 2 sum)."""
    index = segment_index(5, 12, 3)
    x = torch.randn(2, 12, dtype=torch.double)
    summary = torch.randn(15, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: F.linear(x, extract_filters(s, index)), (summary,))


def test_index_and_multiplicity():
    index = segment_index(6, 8, 2)
    assert index.shape == (6, 8) and index.dtype == torch.int32
    assert index[0].tolist() == list(range(8))
    assert index[5].tolist() == [10, 11, 0, 1, 2, 3, 4, 5]   # wraps at L = 12
    assert (multiplicity(index, 12) == 4).all()              # N / s
    # Row k reads elements (k s + j) mod L: counted one by one.
    counts = [0] * 21
    for k in range(7):
        for j in range(20):
            counts[(k * 3 + j) % 21] += 1
    uneven = multiplicity(segment_index(7, 20, 3), 21)
    assert uneven.tolist() == counts and set(counts) == {6, 7}


def test_init_matches_dense_default_and_initializers_reach_the_summary():
    torch.manual_seed(0)
    layer, dense = FSLinear(1024, 512), nn.Linear(1024, 512)
    bound = 1 / math.sqrt(1024)
    for w in (layer.weight, dense.weight):
        assert w.abs().max() <= bound
        assert w.var().item() == pytest.approx(bound ** 2 / 3, rel=0.05)
    from mmengine.model import initialize
    initialize(layer, dict(type='Normal', layer='Linear', std=0.01, bias=0.5))
    assert layer.summary.std().item() == pytest.approx(0.01, rel=0.05)
    assert (layer.bias == 0.5).all()
    nn.init.constant_(layer.weight, 0.25)
    assert (layer.summary == 0.25).all()


def test_projection_from_linear_is_the_least_squares_solution():
    torch.manual_seed(0)
    dense = nn.Linear(20, 7).double()
    layer = FSLinear.from_linear(dense)
    # Independent reference: min_f ||A f - vec(W)|| with A the 0/1 matrix of
    # which summary element each weight element reads.
    index = layer.index.long().reshape(-1)
    a = torch.zeros(index.numel(), layer.summary.numel(), dtype=torch.double)
    a[torch.arange(index.numel()), index] = 1
    reference = torch.linalg.lstsq(a, dense.weight.detach().reshape(-1, 1)).solution
    torch.testing.assert_close(layer.summary.detach(), reference.view(-1))
    torch.testing.assert_close(layer.bias, dense.bias)
    error = layer.relative_error(dense.weight)
    assert 0 < error < 1
    w = dense.weight.detach().reshape(-1, 1)
    assert error == pytest.approx(float((a @ reference - w).norm() / w.norm()))


def test_to_linear_state_dict_wq_and_counts():
    layer = FSLinear(64, 10)
    x = torch.randn(3, 64)
    baked = layer.to_linear()
    assert type(baked) is nn.Linear
    torch.testing.assert_close(baked(x), layer(x))
    assert list(layer.state_dict()) == ['bias', 'summary']
    with pytest.raises(ValueError, match=r'expects \(40,\) \(stride=4\)'):
        FSLinear(64, 10, stride=4).load_state_dict(layer.state_dict())
    wq = FSLinear(64, 10, wq=True)
    wq.load_state_dict(layer.state_dict())
    assert wq.summary.unique().numel() <= 256
    torch.testing.assert_close(wq.summary, layer.summary, atol=(
        layer.summary.max() - layer.summary.min()).item() / 255, rtol=0)

    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), layer)
    report = count_params(model)
    assert [(l.dense, l.stored, l.summary) for l in report.layers] == [
        (64 * 64 + 64, 64 * 64 + 64, 0), (640 + 10, 80 + 10, 80)]
    assert report.stored == sum(p.numel() for p in model.parameters())
    assert report.dense == 64 * 64 + 64 + 650
    assert fs_layers(model) == ['2']


@pytest.mark.parametrize('kwargs,match', [
    (dict(ratio=0.5), 'ratio must be >= 1'),
    (dict(ratio=float('nan')), 'ratio must be a positive finite number'),
    (dict(stride=0), 'stride must be a positive int'),
    (dict(stride=17), r'stride must be an int in \[1, in_features = 16\]'),
    (dict(grad_reduction='max'), 'grad_reduction must be one of'),
])
def test_bad_options_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FSLinear(16, 4, **kwargs)


def test_segment_stride_rounds_up():
    assert segment_stride(1024) == 128
    assert segment_stride(20) == 3 and segment_stride(3) == 1
    assert segment_stride(20, stride=20) == 20


def test_mmdet_bbox_head_predictors_from_config():
    """Built where mmdet builds a linear layer from a config; mmdet's own
    init_cfg (Normal, std 0.01 / 0.001 by name) reaches the summaries."""
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
    torch.manual_seed(0)
    head = Shared2FCBBoxHead(
        in_channels=8, fc_out_channels=256, roi_feat_size=3, num_classes=5,
        cls_predictor_cfg=dict(type='FSLinear'),
        reg_predictor_cfg=dict(type='FSLinear', ratio=4))
    head.init_weights()
    assert isinstance(head.fc_cls, FSLinear) and isinstance(head.fc_reg, FSLinear)
    assert head.fc_reg.ratio == 4
    assert head.fc_cls.weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert head.fc_reg.weight.std().item() == pytest.approx(0.001, rel=0.2)
    cls_score, bbox_pred = head(torch.randn(4, 8, 3, 3))
    assert cls_score.shape == (4, 6) and bbox_pred.shape == (4, 20)
    (cls_score.sum() + bbox_pred.sum()).backward()
    assert all(p.grad is not None and p.grad.isfinite().all()
               for p in head.parameters())


# ------------------------------------------------- FSConv(layout='1d')
CONV_CASES = [
    # in, out, kernel, stride, padding, fs options
    (8, 16, 3, 1, 1, {}),
    (3, 12, 3, 2, 1, {}),
    (16, 24, 1, 1, 0, {}),
    (8, 24, 3, 1, 1, {'interleave': 4}),
    (8, 16, 3, 1, 1, {'k3_scale': 2.0}),
]


def slow_conv_filters(conv):
    """Output channel a g + c is grid row p = c K / g + a; its filter is the
    flattened segment of length C S1 S2 starting at p s, wrapping."""
    k, c, s1, s2 = conv.geometry.filter_shape
    g, s = conv.geometry.interleave, conv.segment_stride
    flat = slow_weight(conv.summary.detach(), k, c * s1 * s2, s)
    rows = [(ch % g) * (k // g) + ch // g for ch in range(k)]
    return flat[rows].view(k, c, s1, s2)


@pytest.mark.parametrize('cin,cout,ks,stride,pad,opts', CONV_CASES)
def test_conv_1d_layout_matches_loop_filters(cin, cout, ks, stride, pad, opts):
    from fsnet_mmdet import FSConv
    torch.manual_seed(0)
    conv = FSConv(cin, cout, ks, stride, pad, layout='1d', **opts).double()
    grid = FSConv(cin, cout, ks, stride, pad, **opts)
    n = cin * ks * ks
    assert conv.segment_stride == math.ceil(n / grid.geometry.ratio)
    assert conv.summary.shape == (cout * conv.segment_stride,)
    filters = slow_conv_filters(conv)
    torch.testing.assert_close(conv.weight, filters)
    x = torch.randn(2, cin, 7, 7, dtype=torch.double)
    torch.testing.assert_close(conv(x), F.conv2d(x, filters, conv.bias, stride, pad))

    grad_out = torch.randn_like(conv(x))
    conv(x).backward(grad_out)
    dense = filters.clone().requires_grad_()
    F.conv2d(x, dense, conv.bias, stride, pad).backward(grad_out)
    index = conv.index.long().reshape(-1)
    expected = torch.zeros_like(conv.summary).index_add_(
        0, index, dense.grad.reshape(-1))
    expected /= torch.bincount(index, minlength=conv.summary.numel())
    torch.testing.assert_close(conv.summary.grad, expected)


def test_conv_1d_layout_errors_name_the_layout():
    from fsnet_mmdet import FSConv
    with pytest.raises(ValueError, match=r"layout must be one of \('3d', '1d'\)"):
        FSConv(8, 16, 3, layout='2d')
    with pytest.raises(ValueError, match="layout='1d', segment_stride="):
        FSConv(8, 16, 3, layout='1d').load_state_dict(
            FSConv(8, 16, 3).state_dict())
