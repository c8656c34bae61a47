"""FSConv against independent references: the paper's formula, Eq. 1, Eq. 2, F.conv2d.

The forward on named layers, the index, the multiplicities and the block fold
against loops: tests/layers/test_fsconv_properties.py (with random layers)."""
import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsnet_mmdet import FSConv, count_params
from fsnet_mmdet.layers.extraction import extract_filters
from fsnet_mmdet.layers.geometry import TABLE1_K3, default_k3, resolve_geometry
from fsnet_mmdet.layers.index import filter_index, multiplicity
from references import channel_of, slow_filters

@pytest.mark.parametrize('reduction,interleave', [('mean', 1), ('sum', 1),
                                                  ('mean', 4)])
def test_gradient_is_eq2(reduction, interleave):
    torch.manual_seed(0)
    conv = FSConv(8, 16, 3, padding=1, grad_reduction=reduction,
                  interleave=interleave).double()
    g = conv.geometry
    x = torch.randn(2, 8, 7, 7, dtype=torch.double)
    # Dense reference: gradient of every filter element, then Eq. 2 by loops.
    dense = slow_filters(conv.summary.detach(), g).requires_grad_()
    (F.conv2d(x, dense, conv.bias, padding=1) ** 2).sum().backward()
    total = torch.zeros_like(conv.summary)
    count = torch.zeros_like(conv.summary)
    (n1, n2, n3), (sx, sy, sz) = g.sampling, g.strides
    cm, hm, wm = g.summary_shape
    for k1 in range(n1):
        for k2 in range(n2):
            for k3 in range(n3):
                k = channel_of((k1 * n2 + k2) * n3 + k3, g)
                for ch in range(8):
                    for i in range(3):
                        for j in range(3):
                            pos = ((k3 * sz + ch) % cm, (k1 * sx + i) % hm,
                                   (k2 * sy + j) % wm)
                            total[pos] += dense.grad[k, ch, i, j]
                            count[pos] += 1
    expected = total / count if reduction == 'mean' else total
    (conv(x) ** 2).sum().backward()
    torch.testing.assert_close(conv.summary.grad, expected)
    assert count.min() >= 1  # every summary element is used


def test_paper_worked_example():
    # 64 filters of 64x3x3 -> summary 64x8x8, spatial stride 2, channel stride 16.
    g = resolve_geometry(64, 64, (3, 3))
    assert g.summary_shape == (64, 8, 8)
    assert g.strides == (2, 2, 16)
    assert g.ratio == 9
    conv = FSConv(64, 64, 3)
    assert conv.summary.shape == (64, 8, 8)
    assert 36864 / conv.summary.numel() == 9


@pytest.mark.parametrize('k,k3', sorted(TABLE1_K3.items()))
def test_eq1_every_table1_row(k, k3):
    c = 64
    g = resolve_geometry(c, k, (3, 3))
    assert g.sampling[2] == k3 and math.prod(g.sampling) == k
    x, y, _ = g.strides
    assert g.summary_shape[0] == c                      # Cm = C
    assert g.ratio == pytest.approx(3 * 3 / (x * y) * k3)  # Eq. 1


def test_pointwise_layer_compressed_8x():
    g = resolve_geometry(1024, 1024, (1, 1))
    assert g.sampling == (1, 1, 1024)
    assert g.summary_shape == (1024 * 1024 // 8, 1, 1)
    assert g.ratio == 8


def test_default_rules_for_counts_outside_table1():
    assert default_k3(1024, 512) == 8      # largest listed count below: 512
    assert default_k3(84, 512) == 4        # 64 -> 4
    assert default_k3(126, 1024) == 2      # 128? no: 64 -> 4, lowered to gcd 2
    assert default_k3(64, 3) == 1          # gcd(64, 3) = 1
    assert default_k3(8, 8) == 1           # below 12
    assert resolve_geometry(512, 84, (3, 3)).sampling == (3, 7, 4)
    assert resolve_geometry(3, 64, (3, 3)).summary_shape == (3, 16, 16)
    assert default_k3(512, 512, 'fsnet1') == 16
    assert default_k3(1024, 512, 'fsnet2') == 4


def test_k3_scale_multiplies_the_preset_before_the_divisor_rule():
    assert default_k3(64, 64, k3_scale=2) == 8
    assert default_k3(64, 64, k3_scale=0.5) == 2
    assert default_k3(64, 64, k3_scale=0.1) == 1       # at least 1
    assert default_k3(84, 512, k3_scale=2) == 4        # 8 lowered to gcd 4
    g1, g2 = (resolve_geometry(64, 64, (3, 3), k3_scale=s) for s in (1, 2))
    assert g2.ratio == 2 * g1.ratio                     # Eq. 1: ratio ~ K3
    for bad in (0, -1.0, float('nan'), True, '2'):
        with pytest.raises(ValueError, match='k3_scale must be a positive'):
            FSConv(8, 16, 3, k3_scale=bad)


def test_single_filter_axis_gets_the_full_filter_stride():
    # 28 filters, K3 = 4: K1 x K2 = 1 x 7, a head predictor's shape.
    g = resolve_geometry(8, 28, (3, 3))
    assert g.sampling == (1, 7, 4) and g.strides == (3, 2, 2)
    assert g.summary_shape == (8, 3, 14)
    index = filter_index(g).long()
    # No filter reads one summary element twice: rows 0 and 2 differ.
    flat = index.reshape(28, -1)
    assert all(len(set(row.tolist())) == row.numel() for row in flat)
    old = resolve_geometry(8, 28, (3, 3), self_wrap=True)
    assert old.strides == (2, 2, 2) and old.summary_shape == (8, 2, 14)
    index = filter_index(old)
    assert torch.equal(index[:, :, 0], index[:, :, 2])  # tied to itself
    # Both axes alone: the summary is a plain filter bank of K3 rotations.
    assert resolve_geometry(8, 4, (3, 3), sampling=(1, 1, 4)).strides == (3, 3, 2)


@pytest.mark.parametrize('kwargs,match', [
    (dict(sampling=(2, 2, 3)), 'K1 \\* K2 \\* K3 must equal'),
    (dict(sampling=(2, 2)), 'sampling must be a sequence of three'),
    (dict(k3=3), 'k3=3 must divide out_channels=16'),
    (dict(k3=0), 'k3 must be a positive int'),
    (dict(strides=(4, 2, 2)), 'x=4 exceeds the filter size 3'),
    (dict(strides=(2, 2, 9)), 'z=9 exceeds the filter size 8'),
    (dict(sampling=(2, 2, 4), k3=4), 'either sampling'),
    (dict(pointwise_ratio=2), 'pointwise_ratio applies to 1x1'),
    (dict(preset='fsnet3'), "preset='fsnet3' is unknown"),
    (dict(preset='fsnet1', k3=None, sampling=None), None),
    (dict(groups=2), 'groups=1 only'),
    (dict(grad_reduction='max'), 'grad_reduction must be one of'),
])
def test_bad_options_raise_value_error(kwargs, match):
    if match is None:  # 16 filters is listed in fsnet1: no error
        FSConv(8, 16, 3, **kwargs)
        return
    with pytest.raises(ValueError, match=match):
        FSConv(8, 16, 3, **kwargs)


def test_bad_pointwise_ratio_and_preset_entry():
    with pytest.raises(ValueError, match='pointwise_ratio=3 must divide in_channels=16'):
        FSConv(16, 8, 1, pointwise_ratio=3)
    with pytest.raises(ValueError, match="preset='fsnet1' has no K3 for a layer with 100"):
        FSConv(16, 100, 3, preset='fsnet1')
    with pytest.raises(ValueError, match='out_channels must be a positive int'):
        FSConv(16, 0, 3)


def test_state_dict_holds_summary_and_bias_only():
    conv = FSConv(8, 16, 3)
    assert list(conv.state_dict()) == ['bias', 'summary']
    assert [n for n, _ in conv.named_parameters()] == ['bias', 'summary']
    other = FSConv(8, 16, 3)
    other.load_state_dict(conv.state_dict())
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(other(x), conv(x))
    with pytest.raises(ValueError, match='summary: checkpoint summary has shape'):
        FSConv(8, 16, 3, k3=2).load_state_dict(conv.state_dict())


def test_to_conv2d_same_output():
    conv = FSConv(8, 16, 3, 2, 2, 2)
    dense = conv.to_conv2d()
    assert type(dense) is nn.Conv2d
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(dense(x), conv(x))


def test_count_params():
    model = nn.Sequential(FSConv(64, 64, 3), nn.BatchNorm2d(64),
                          nn.Conv2d(64, 8, 1), FSConv(64, 64, 1, bias=False))
    report = count_params(model)
    dense_fs3 = 64 * 64 * 9 + 64
    assert [layer.dense for layer in report.layers] == [dense_fs3, 520, 4096]
    assert [layer.stored for layer in report.layers] == [4096 + 64, 520, 512]
    assert report.stored == sum(p.numel() for p in model.parameters())
    assert report.dense == dense_fs3 + 128 + 520 + 4096
    assert report.summary == 4096 + 512
    assert report.effective_wq == report.stored - 0.75 * (4096 + 512)
    # float32 throughout: 32 bits per stored parameter, per layer and in all.
    assert [layer.bits for layer in report.layers] == [
        32 * (4096 + 64), 32 * 520, 32 * 512]
    assert report.bits == 32 * report.stored
    assert report.effective == report.stored


def test_count_params_is_the_sum_of_each_modules_storage():
    """A layer type states what it stores (StoredLayer.storage); a module
    that does not, its own parameters at their dtype's width; a buffer of
    any name (e.g. 'offsets', DFSNet's table's) counts only where the layer
    says so."""
    from fsnet_mmdet.layers.accounting import Storage, StoredLayer

    class Coded(StoredLayer, nn.Conv2d):  # stores 3 index bits per filter
        def storage(self):
            return Storage(self.bias.numel(), 32 * self.bias.numel() + 3 * 4)

    plain = nn.Conv2d(2, 3, 1).half()
    plain.register_buffer('offsets', torch.zeros(40, 2, dtype=torch.int8))
    model = nn.Sequential(Coded(2, 4, 3), plain, nn.BatchNorm2d(3))
    report = count_params(model)
    assert [(layer.dense, layer.stored, layer.bits) for layer in report.layers] == [
        (2 * 4 * 9 + 4, 4, 32 * 4 + 12), (9, 9, 16 * 9)]
    assert (report.stored, report.bits) == (4 + 9 + 6, 140 + 144 + 32 * 6)
    assert report.dense == report.stored + 72
    assert report.effective == report.bits / 32


@pytest.mark.parametrize('channels', [128, 256])
def test_default_init_is_conv2d_default(channels):
    """nn.Conv2d's kaiming_uniform_(a=sqrt(5)): filters and bias uniform in
    +-1 / sqrt(fan_in), as for the dense layer."""
    torch.manual_seed(0)
    conv = FSConv(channels, channels, 3)
    dense = nn.Conv2d(channels, channels, 3)
    bound = 1 / math.sqrt(channels * 9)
    for w in (conv.weight, dense.weight):
        assert w.abs().max() <= bound
        assert w.var().item() == pytest.approx(bound ** 2 / 3, rel=0.05)
    assert conv.bias.abs().max() <= bound
    assert conv.bias.abs().max() > 0.9 * bound  # uniform over the range


def test_eval_cache_never_stale():
    conv = FSConv(8, 16, 3, padding=1).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        first = conv(x)
        with torch.no_grad():
            conv.summary.mul_(2)  # like an optimizer step
        torch.testing.assert_close(conv(x) - conv.bias.view(1, -1, 1, 1),
                                   2 * (first - conv.bias.view(1, -1, 1, 1)))
        conv.load_state_dict({'summary': torch.zeros_like(conv.summary),
                              'bias': torch.zeros(16)})
        assert conv(x).abs().max() == 0


def test_extract_filters_gradcheck():
    g = resolve_geometry(4, 4, (3, 3), sampling=(2, 1, 2))
    index = filter_index(g)
    inv = 1.0 / multiplicity(index, math.prod(g.summary_shape)).double()
    summary = torch.randn(g.summary_shape, dtype=torch.double,
                          requires_grad=True)
    # 'sum' is the true derivative of the gather.
    assert torch.autograd.gradcheck(lambda s: extract_filters(s, index), summary)
    out = extract_filters(summary, index, inv)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(summary.grad, torch.ones_like(summary))


def eq2_mean_by_scatter(conv, x, **conv_args):
    """Eq. 2's mean without the layer's extraction: the gradient of a dense
    conv holding the layer's filters, index_add over the index, divided by
    the bincount of the index."""
    index = conv.index.reshape(-1).long()
    dense = conv.summary.detach().reshape(-1)[index].view(conv.index.shape)
    dense.requires_grad_()
    (F.conv2d(x, dense, conv.bias, **conv_args) ** 2).sum().backward()
    numel = conv.summary.numel()
    total = torch.zeros(numel, dtype=dense.dtype).index_add_(
        0, index, dense.grad.reshape(-1))
    return (total / torch.bincount(index, minlength=numel)).view_as(conv.summary)


@pytest.mark.parametrize('cin,cout,opts', [
    (512, 256, {}), (256, 512, {}),
    (1024, 256, {'k3': 4}),  # K3 = 4, z = C / 4 = 256
])
def test_large_layer_backward_is_the_block_fold(cin, cout, opts):
    from fsnet_mmdet.layers.fsconv import FOLD_MIN_FILTER_ELEMENTS

    torch.manual_seed(0)
    conv = FSConv(cin, cout, 3, padding=1, **opts).double()
    assert conv._fold is not None and conv.index.numel() >= FOLD_MIN_FILTER_ELEMENTS
    x = torch.randn(2, cin, 3, 3, dtype=torch.double)
    (conv(x) ** 2).sum().backward()
    torch.testing.assert_close(conv.summary.grad,
                               eq2_mean_by_scatter(conv, x, padding=1))


def test_small_layer_backward_is_one_sparse_product_and_copies():
    # Below the fold's threshold the Eq. 2 backward is reduction_matrix @ grad;
    # the matrix (a sparse CSR tensor) is cached on the layer, yet the layer
    # deep-copies and pickles (EMA, torch.save of a module) and follows .double().
    conv = FSConv(8, 16, 3, padding=1)
    assert conv._fold is None
    x = torch.randn(2, 8, 5, 5)
    (conv(x) ** 2).sum().backward()
    fast = conv.summary.grad.clone()
    assert conv._reduction_cache is not None
    torch.testing.assert_close(fast, eq2_mean_by_scatter(conv, x, padding=1))
    twin = copy.deepcopy(conv)
    pickle.loads(pickle.dumps(conv))
    assert twin._reduction_cache is None and conv._reduction_cache is not None
    twin.double().zero_grad()
    (twin(x.double()) ** 2).sum().backward()
    torch.testing.assert_close(twin.summary.grad, fast.double(), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize('cin,cout,ks,opts', [
    (4, 8, 3, {}), (6, 28, 3, {}), (8, 16, 1, {}), (4, 6, (3, 5), {'k3': 2}),
])
def test_projection_from_dense_is_the_least_squares_solution(cin, cout, ks, opts):
    torch.manual_seed(0)
    dense = nn.Conv2d(cin, cout, ks, padding=1).double()
    fs = FSConv.from_conv2d(dense, **opts)
    # Explicit least squares: A[t, T(t)] = 1, min ||A m - w||.
    index = fs.index.reshape(-1).long()
    a = torch.zeros(index.numel(), fs.summary.numel(), dtype=torch.double)
    a[torch.arange(index.numel()), index] = 1
    solution = torch.linalg.lstsq(a, dense.weight.detach().reshape(-1, 1)).solution
    torch.testing.assert_close(fs.summary.detach().reshape(-1), solution[:, 0])
    torch.testing.assert_close(fs.bias, dense.bias)
    assert (fs.stride, fs.padding) == (dense.stride, dense.padding)
    residual = (a @ solution)[:, 0] - dense.weight.detach().reshape(-1)
    expected = float(residual.norm() / dense.weight.detach().norm())
    assert fs.relative_error(dense.weight) == pytest.approx(expected)
    assert 0 < expected < 1
    # A dense layer that is already an FS layer is recovered exactly.
    again = FSConv.from_conv2d(fs.to_conv2d(), **opts)
    torch.testing.assert_close(again.summary, fs.summary)
    assert again.relative_error(fs.weight) < 1e-12


def test_adam_trains_mean_and_sum_reductions_alike_sgd_does_not():
    """Eq. 2's mean divides each summary element's gradient by its constant
    multiplicity; Adam normalizes every element by its own gradient scale, so
    with Adam both reductions make the same updates (up to its eps): the
    choice matters for SGD only (docs/accuracy.md)."""
    torch.manual_seed(0)
    x, target = torch.randn(4, 6, 9, 9), torch.randn(4, 12, 9, 9)
    opts = dict(sampling=(3, 2, 2), strides=(1, 2, 3))  # uneven multiplicities
    mean = FSConv(6, 12, 3, padding=1, grad_reduction='mean', **opts)
    assert len(set(mean.inv_multiplicity.tolist())) > 1

    def train(optimizer_cls, reduction, **kwargs):
        layer = FSConv(6, 12, 3, padding=1, grad_reduction=reduction, **opts)
        layer.load_state_dict(mean.state_dict())
        optimizer = optimizer_cls(layer.parameters(), **kwargs)
        for _ in range(5):
            optimizer.zero_grad()
            F.mse_loss(layer(x), target).backward()
            optimizer.step()
        return layer.summary.detach()

    adam = dict(lr=1e-2, weight_decay=1e-4)
    torch.testing.assert_close(train(torch.optim.AdamW, 'mean', **adam),
                               train(torch.optim.AdamW, 'sum', **adam),
                               rtol=1e-4, atol=1e-5)
    sgd_mean, sgd_sum = (train(torch.optim.SGD, r, lr=0.1) for r in ('mean', 'sum'))
    assert (sgd_mean - sgd_sum).abs().max() > 1e-3


def test_interleave_neighbours_same_output_of_neighbouring_anchors():
    # 4 anchors x 4 box deltas, K3 = 4: in grid order the 4 deltas of one
    # anchor are channel rotations of one block; interleaved, the same delta
    # of the 4 anchors is.
    grid, inter = (FSConv(8, 16, 3, k3=4, interleave=g) for g in (1, 4))
    assert grid.geometry.sampling == inter.geometry.sampling == (2, 2, 4)
    assert grid.summary.shape == inter.summary.shape
    inter.load_state_dict(grid.state_dict())
    w, wi = grid.weight, inter.weight
    for anchor in range(4):
        for delta in range(4):
            torch.testing.assert_close(wi[anchor * 4 + delta],
                                       w[delta * 4 + anchor])
    # Rotations of one block: the same multiset of weights.
    def same_block(a, b):
        return torch.equal(a.flatten().sort().values, b.flatten().sort().values)
    assert same_block(w[0], w[1]) and same_block(wi[0], wi[4])
    assert not same_block(wi[0], wi[1])
    assert 'interleave=4' in repr(inter) and 'interleave' not in repr(grid)


@pytest.mark.parametrize('value', [0, 5, 2.5])
def test_interleave_must_divide_out_channels(value):
    with pytest.raises(ValueError, match='interleave'):
        FSConv(8, 16, 3, interleave=value)
