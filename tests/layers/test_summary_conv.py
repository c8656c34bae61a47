"""The FS conv computed from its summary (layers/summary_conv.py) against
independent references: ``F.conv2d`` with the extracted filters, and the
equation by an explicit float64 loop over (k1, k2, k3, u, v); its gradients
against FSConv's filters path (Eq. 2, mean and sum); FSConv's ``compute``
option; the operation counts against hand counts from the geometry."""
import copy
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fsnet_mmdet.layers.fsconv as fsconv_module
from fsnet_mmdet import FSConv, FSLinear
from fsnet_mmdet.layers.geometry import resolve_geometry
from fsnet_mmdet.layers.index import filter_index
from fsnet_mmdet.layers.summary_conv import (MIN_CHANNELS, MIN_MAC_RATIO,
                                             product_sharing,
                                             _layout, choose_compute,
                                             filter_macs, summary_conv2d,
                                             summary_conv2d_unrolled,
                                             summary_macs, summary_weight,
                                             summary_weight_tiled)
from fsnet_mmdet.layers.wq import fake_quantize
from references import channel_of

#: (in, out, kernel, FS options): each case's geometry.
GEOMETRIES = [
    (8, 16, 3, {}),                                   # 3x3, K1 x K2 = 2 x 4
    (12, 20, 5, {'sampling': (2, 5, 2)}),             # 5x5
    (8, 12, (1, 3), {}),                              # 1x3
    (3, 12, 3, {}),                                   # C = 3
    (16, 24, 1, {}),                                  # 1x1, ratio 8
    (8, 4, 3, {'sampling': (2, 1, 2), 'strides': (2, 3, 2)}),  # Cm = 4 < C
    (8, 8, 3, {'strides': (1, 3, 4)}),                # x = 1, y = 3
    (8, 24, 3, {'interleave': 4}),
    (8, 28, 3, {'interleave': 7}),
    (16, 64, 3, {'preset': 'fsnet1'}),
    (16, 64, 3, {'preset': 'fsnet2'}),
]
#: (stride, padding, dilation, padding_mode) of the convs.
SETTINGS = [
    (1, 0, 1, 'zeros'),
    (1, 1, 1, 'zeros'),
    (2, 1, 1, 'zeros'),
    (1, 2, 2, 'zeros'),
    (2, 0, 2, 'zeros'),
    ((2, 1), (1, 2), (1, 2), 'zeros'),
    (1, 'same', 2, 'zeros'),
    (2, 2, 1, 'reflect'),
    (1, 1, 2, 'circular'),
    (1, 1, 1, 'replicate'),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_pads(kernel, padding, dilation):
    """((top, bottom), (left, right)) as nn.Conv2d pads."""
    if padding == 'same':
        totals = [d * (k - 1) for k, d in zip(kernel, _pair(dilation))]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _pair(padding))


def padded(x, kernel, padding, dilation, mode):
    (top, bottom), (left, right) = torch_pads(kernel, padding, dilation)
    return F.pad(x, (left, right, top, bottom),
                 mode='constant' if mode == 'zeros' else mode)


def dense_reference(x, summary, g, bias, stride, padding, dilation, mode):
    """F.conv2d with the extracted filters, on the padded input."""
    filters = summary.reshape(-1)[filter_index(g).long()]
    return F.conv2d(padded(x, g.kernel_size, padding, dilation, mode),
                    filters, bias, stride, 0, dilation)


def loop_reference(x, summary, g, bias, stride, padding, dilation, mode):
    """The equation, one (filter, tap) at a time, in float64::

        y_(k1,k2,k3)(p) = sum_(u,v) sum_c x_c(p s + (u, v) d)
                          * M[(k3 z + c) mod Cm, (k1 x + u) mod Hm, (k2 y + v) mod Wm]
    """
    xp = padded(x.double(), g.kernel_size, padding, dilation, mode)
    m = summary.double()
    (n1, n2, n3), (sx, sy, sz) = g.sampling, g.strides
    cm, hm, wm = g.summary_shape
    (s1, s2), (st1, st2), (d1, d2) = g.kernel_size, _pair(stride), _pair(dilation)
    ho = (xp.shape[2] - d1 * (s1 - 1) - 1) // st1 + 1
    wo = (xp.shape[3] - d2 * (s2 - 1) - 1) // st2 + 1
    out = torch.zeros(x.shape[0], g.num_filters, ho, wo, dtype=torch.float64)
    for k1, k2, k3 in itertools.product(range(n1), range(n2), range(n3)):
        k = channel_of((k1 * n2 + k2) * n3 + k3, g)
        chans = [(k3 * sz + c) % cm for c in range(g.in_channels)]
        for u, v in itertools.product(range(s1), range(s2)):
            w = m[chans, (k1 * sx + u) % hm, (k2 * sy + v) % wm]  # (C,)
            patch = xp[:, :, u * d1:u * d1 + (ho - 1) * st1 + 1:st1,
                       v * d2:v * d2 + (wo - 1) * st2 + 1:st2]
            out[:, k] += torch.einsum('nchw,c->nhw', patch, w)
    if bias is not None:
        out += bias.double().view(1, -1, 1, 1)
    return out


def _geometry(cin, cout, kernel, opts):
    kernel = _pair(kernel)
    return resolve_geometry(cin, cout, kernel, **opts)


def _float64_inputs(case, g, cout, with_bias):
    """Seeded float64 input (2, C, 9, 10), summary and optional bias."""
    gen = torch.Generator().manual_seed(case)
    x = torch.randn(2, g.in_channels, 9, 10, generator=gen, dtype=torch.float64)
    summary = torch.randn(g.summary_shape, generator=gen, dtype=torch.float64)
    bias = torch.randn(cout, generator=gen, dtype=torch.float64) if with_bias else None
    return x, summary, bias


@pytest.mark.parametrize('case', range(len(GEOMETRIES)))
@pytest.mark.parametrize('setting', SETTINGS, ids=str)
def test_equals_dense_conv_and_the_loop_float64(case, setting):
    cin, cout, kernel, opts = GEOMETRIES[case]
    g = _geometry(cin, cout, kernel, opts)
    stride, padding, dilation, mode = setting
    x, summary, bias = _float64_inputs(case, g, cout, with_bias=bool(case % 2))
    out = summary_conv2d(x, summary, g, bias, stride, padding, dilation, mode)
    args = (x, summary, g, bias, stride, padding, dilation, mode)
    torch.testing.assert_close(out, dense_reference(*args), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, loop_reference(*args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('case', range(len(GEOMETRIES)))
@pytest.mark.parametrize('with_bias', [False, True])
def test_equals_dense_conv_float32(case, with_bias):
    cin, cout, kernel, opts = GEOMETRIES[case]
    g = _geometry(cin, cout, kernel, opts)
    torch.manual_seed(case)
    x, summary = torch.randn(2, cin, 11, 8), torch.randn(g.summary_shape)
    bias = torch.randn(cout) if with_bias else None
    for stride, padding, dilation, mode in SETTINGS[:3] + SETTINGS[-3:]:
        args = (x, summary, g, bias, stride, padding, dilation, mode)
        out = summary_conv2d(*args)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, dense_reference(*args), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(out.double(), loop_reference(*args),
                                   rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('cin,cout,hw,strategy', [
    (3, 12, (24, 20), 'pad_input'),     # 3 channels to copy, 48 responses
    (64, 4, (9, 10), 'pad_summary'),    # 64 channels to copy, 16 responses
])
@pytest.mark.parametrize('setting', [(1, 1, 1), (2, 2, 1), ((1, 2), (2, 1), (2, 1))],
                         ids=str)
@pytest.mark.parametrize('mode', ['reflect', 'replicate', 'circular'])
def test_padding_modes_pad_the_input_or_the_summary_response(
        cin, cout, hw, strategy, setting, mode):
    """Padding modes other than zeros pad x (before stage 1) or Z (after
    it), whichever touches fewer elements: both against the references."""
    stride, padding, dilation = setting
    g = resolve_geometry(cin, cout, (3, 3))
    assert _layout(g, hw, _pair(stride), padding, _pair(dilation), mode).mode == strategy
    assert _layout(g, hw, _pair(stride), padding, _pair(dilation), 'zeros').mode == 'clip'
    torch.manual_seed(0)
    x = torch.randn(1, cin, *hw, dtype=torch.float64)
    summary = torch.randn(g.summary_shape, dtype=torch.float64)
    args = (x, summary, g, torch.randn(cout, dtype=torch.float64), stride,
            padding, dilation, mode)
    out = summary_conv2d(*args)
    torch.testing.assert_close(out, dense_reference(*args), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, loop_reference(*args), rtol=1e-12, atol=1e-12)


def test_unbatched_channels_last_and_autocast():
    g = resolve_geometry(8, 16, (3, 3))
    torch.manual_seed(0)
    x, summary, bias = torch.randn(2, 8, 7, 6), torch.randn(g.summary_shape), torch.randn(16)
    ref = dense_reference(x, summary, g, bias, 1, 1, 1, 'zeros')
    torch.testing.assert_close(summary_conv2d(x[0], summary, g, bias, padding=1),
                               ref[0], rtol=1e-5, atol=1e-5)
    out = summary_conv2d(x.to(memory_format=torch.channels_last), summary, g,
                         bias, padding=1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fast = summary_conv2d(x, summary, g, bias, padding=1)
        dense = dense_reference(x, summary, g, bias, 1, 1, 1, 'zeros')
    assert fast.dtype == dense.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), ref, rtol=0.05, atol=0.1)


@pytest.mark.parametrize('setting', [(1, 1, 1, 'zeros'), (2, 2, 2, 'zeros'),
                                     ((1, 2), 1, (2, 1), 'reflect'),
                                     (1, 1, 1, 'circular')], ids=str)
@pytest.mark.parametrize('opts', [{}, {'interleave': 4}], ids=str)
def test_gradcheck_float64(setting, opts):
    stride, padding, dilation, mode = setting
    g = resolve_geometry(4, 8, (3, 3), **opts)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    summary = torch.randn(g.summary_shape, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(8, dtype=torch.float64, requires_grad=True)

    def fn(x, summary, bias):
        return summary_conv2d(x, summary, g, bias, stride, padding, dilation, mode)
    assert torch.autograd.gradcheck(fn, (x, summary, bias))
    if not opts:
        assert torch.autograd.gradgradcheck(fn, (x, summary, bias))


#: FSConv layers whose two paths' gradients are compared: (in, out, kernel,
#: stride, padding, dilation, padding_mode, FS options).
LAYERS = [
    (8, 16, 3, 1, 1, 1, 'zeros', {}),
    (8, 24, 3, 2, 1, 1, 'zeros', {'interleave': 4}),
    (12, 20, 5, 1, 2, 2, 'reflect', {'sampling': (2, 5, 2)}),
    (8, 12, (1, 3), 1, (0, 1), 1, 'circular', {}),
    (16, 24, 1, 1, 0, 1, 'zeros', {}),
    (8, 8, 3, 1, 1, 1, 'zeros', {'strides': (1, 3, 4)}),   # not foldable
    (256, 512, 3, 1, 1, 1, 'zeros', {}),  # >= 2^20 filter elements: the fold
]


@pytest.mark.parametrize('reduction', ['mean', 'sum'])
@pytest.mark.parametrize('layer', LAYERS, ids=lambda v: str(v[:3]))
def test_gradients_equal_the_filters_path(layer, reduction):
    cin, cout, kernel, stride, padding, dilation, mode, opts = layer
    torch.manual_seed(0)
    filters = FSConv(cin, cout, kernel, stride, padding, dilation,
                     padding_mode=mode, grad_reduction=reduction,
                     compute='filters', **opts).double()
    summary = copy.deepcopy(filters)
    summary.compute = 'summary'
    size = 5 if cin > 16 else 9
    x = torch.randn(2, cin, size, size + 1, dtype=torch.float64)
    outputs, grads = [], []
    for conv in (filters, summary):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)
         ).sum().backward()
        outputs.append(out)
        grads.append((xi.grad, conv.summary.grad, conv.bias.grad))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-10, atol=1e-10)
    for got, expected in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_mean_is_the_sum_over_multiplicity():
    """The two reductions differ by the multiplicity, on the summary path."""
    torch.manual_seed(0)
    conv = FSConv(8, 16, 3, padding=1, compute='summary').double()
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    grads = {}
    for reduction in ('mean', 'sum'):
        conv.grad_reduction, conv.summary.grad = reduction, None
        conv(x).square().sum().backward()
        grads[reduction] = conv.summary.grad.clone()
    torch.testing.assert_close(grads['mean'], grads['sum'] * conv.inv_multiplicity.view(
        conv.summary.shape))


# ------------------------------------------------------------- FSConv option
def test_compute_option_validation_and_repr():
    with pytest.raises(ValueError, match=r"compute must be one of \('auto', "
                       r"'summary', 'filters'\), got 'fast'"):
        FSConv(8, 16, 3, compute='fast')
    with pytest.raises(ValueError, match=r"compute='summary'.*layout='1d'"):
        FSConv(8, 16, 3, layout='1d', compute='summary')
    with pytest.raises(ValueError, match=r"compute='summary'.*dfs_radius=1"):
        FSConv(8, 16, 3, dfs_radius=1, compute='summary')
    assert FSConv(8, 16, 3).compute == 'auto'
    assert 'compute' not in repr(FSConv(8, 16, 3))
    assert 'compute=summary' in repr(FSConv(8, 16, 3, compute='summary'))
    assert 'compute=filters' in repr(FSConv(8, 16, 3, compute='filters'))


def test_summary_raises_once_dfs_moved_filters():
    conv = FSConv(8, 16, 3, padding=1, compute='summary')
    x = torch.randn(1, 8, 5, 5)
    conv.discretize(torch.zeros(16, 3, dtype=torch.int8))  # still the grid
    torch.testing.assert_close(conv(x), conv.to_conv2d()(x), rtol=1e-5, atol=1e-5)
    offsets = torch.zeros(16, 3, dtype=torch.int8)
    offsets[3, 1] = 1
    conv.discretize(offsets)
    with pytest.raises(RuntimeError, match=r"compute='summary'.*offsets"):
        conv(x)
    conv.compute = 'auto'
    torch.testing.assert_close(conv(x), conv.to_conv2d()(x))


@pytest.fixture
def summary_calls(monkeypatch):
    """How many times FSConv ran the summary path."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[2])
        return summary_conv2d(*args, **kwargs)
    monkeypatch.setattr(fsconv_module, 'summary_conv2d', spy)
    return calls


@pytest.mark.parametrize('args,kwargs,expected', [
    ((256, 256, 3), dict(padding=1), True),
    ((256, 256, 3), dict(padding=1, dilation=2), True),
    ((256, 256, 1), {}, False),                         # 1x1
    ((256, 256, 3), dict(stride=2, padding=1), False),  # stride 2
    ((64, 64, 3), dict(padding=1), False),              # few channels
    ((256, 256, 3), dict(padding=1, layout='1d'), False),
    ((256, 256, 3), dict(padding=1, dfs_radius=1), False),  # searching
], ids=str)
def test_auto_choice(args, kwargs, expected, summary_calls):
    """In training (a gradient flows); eval's choice: test_auto_eval_*."""
    conv = FSConv(*args, **kwargs, compute='auto')
    x = torch.randn(1, args[0], 6, 6)
    out = conv(x)
    assert bool(summary_calls) == expected
    if not conv.searching:
        torch.testing.assert_close(out, conv.to_conv2d()(x), rtol=1e-4, atol=1e-4)


def test_auto_eval_needs_a_mid_sized_response(summary_calls):
    """Without a gradient the summary path needs Z of 1M to 8M elements:
    512 -> 512 at 38x38 (Z 2048 x 1444); not at 6x6."""
    conv = FSConv(512, 512, 3, padding=1, compute='auto')
    with torch.no_grad():
        conv(torch.randn(1, 512, 6, 6))
        assert not summary_calls
        out = conv(torch.randn(1, 512, 38, 38))
    assert len(summary_calls) == 1 and out.shape == (1, 512, 38, 38)


def test_auto_traces_the_filters_path(summary_calls):
    """A trace (mmengine's FLOP counter, TorchScript) cannot record the
    summary path's autograd Function: 'auto' takes the filters there."""
    conv = FSConv(256, 256, 3, padding=1, compute='auto').eval()
    x = torch.randn(1, 256, 6, 6)
    traced = torch.jit.trace(conv, x, check_trace=False)
    assert not summary_calls
    torch.testing.assert_close(traced(x), conv.to_conv2d()(x), rtol=1e-4, atol=1e-4)
    assert len(summary_calls) == 0 and conv(x) is not None and len(summary_calls) == 1


def test_auto_after_dfs_discretize(summary_calls):
    conv = FSConv(256, 256, 3, padding=1, dfs_radius=1, compute='auto')
    x = torch.randn(1, 256, 4, 4)
    conv.discretize(torch.zeros(256, 3, dtype=torch.int8))
    conv(x)
    assert len(summary_calls) == 1   # on the grid: the summary path
    offsets = torch.zeros(256, 3, dtype=torch.int8)
    offsets[0, 2] = 1
    conv.discretize(offsets)
    conv(x)
    assert len(summary_calls) == 1   # moved: the filters


#: benchmarks/bench_summary_conv.py's SSD300 rows on this project's 2-core
#: CPU (docs/performance.md): (C, K, dilation, H, batch, training, summary
#: path / filters path speed, the rule's answer). The rule takes the summary
#: path only where it was faster; it leaves some faster rows to the filters.
MEASURED = [
    (64, 64, 1, 300, 1, False, 0.35, 'filters'),
    (128, 128, 1, 150, 1, False, 0.56, 'filters'),
    (128, 256, 1, 75, 1, False, 1.30, 'summary'),
    (256, 256, 1, 75, 1, False, 1.42, 'summary'),
    (256, 512, 1, 38, 1, False, 1.31, 'summary'),
    (512, 512, 1, 38, 1, False, 1.56, 'summary'),
    (512, 512, 1, 19, 1, False, 0.93, 'filters'),
    (512, 1024, 6, 19, 1, False, 0.68, 'filters'),
    (128, 256, 1, 75, 8, False, 0.69, 'filters'),
    (256, 256, 1, 75, 8, False, 0.96, 'filters'),
    (256, 512, 1, 38, 8, False, 0.96, 'filters'),
    (512, 512, 1, 38, 8, False, 1.23, 'filters'),
    (512, 512, 1, 19, 8, False, 1.66, 'summary'),
    (512, 1024, 6, 19, 8, False, 0.81, 'filters'),
    (128, 128, 1, 150, 1, True, 0.75, 'filters'),
    (128, 256, 1, 75, 1, True, 1.49, 'summary'),
    (256, 256, 1, 75, 1, True, 1.16, 'summary'),
    (512, 512, 1, 38, 1, True, 1.95, 'summary'),
    (512, 512, 1, 19, 1, True, 1.62, 'summary'),
    (512, 1024, 6, 19, 1, True, 1.45, 'summary'),
    (128, 256, 1, 75, 8, True, 0.84, 'filters'),
    (256, 256, 1, 75, 8, True, 1.15, 'summary'),
    (256, 512, 1, 38, 8, True, 1.16, 'summary'),
    (512, 512, 1, 19, 8, True, 1.90, 'summary'),
    (512, 1024, 6, 19, 8, True, 1.01, 'summary'),
]


@pytest.mark.parametrize('cin,cout,dil,size,batch,training,speed,expected',
                         MEASURED, ids=str)
def test_choose_compute_follows_the_measurement(cin, cout, dil, size, batch,
                                                training, speed, expected):
    g = resolve_geometry(cin, cout, (3, 3))
    answer = choose_compute(g, 1, dil, (batch, cin, size, size), 'cpu', training)
    assert answer == expected
    assert answer == 'filters' or speed > 1  # never where it was slower


def test_choose_compute_rule():
    def choice(cin, cout, kernel=(3, 3), stride=1, device='cpu', **opts):
        g = resolve_geometry(cin, cout, kernel, **opts)
        return choose_compute(g, stride, 1, (1, cin, 19, 19), device, True)
    assert choice(MIN_CHANNELS, 256) == 'summary'
    assert choice(MIN_CHANNELS - 1, 256, sampling=(16, 16, 1)) == 'filters'
    assert choice(512, 512, (1, 1)) == 'filters'
    assert choice(512, 512, stride=2) == 'filters'
    assert choice(512, 512, stride=(1, 2)) == 'filters'
    assert choice(512, 512, device='cuda') == 'filters'  # not measured
    assert choice(512, 512, device='meta') == 'filters'
    # x = y = 3 on a 3x3 kernel: no fewer multiply-adds (ratio C 9 / (C 9 + 9)).
    assert choice(512, 512, strides=(3, 3, 64)) == 'filters'
    # 1x3 kernel, x = 1, y = 2: ratio 3 C / (2 C + 3), about 1.5 < 1.6.
    assert MIN_MAC_RATIO > 1.5 and choice(512, 512, (1, 3)) == 'filters'


def test_state_dict_round_trip_between_compute_modes():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 7)
    modes = ('filters', 'summary', 'auto')
    convs = {m: FSConv(8, 16, 3, padding=1, compute=m) for m in modes}
    for conv in convs.values():
        assert set(conv.state_dict()) == {'summary', 'bias'}  # as before
    # A checkpoint of one mode loads strictly into another: bit for bit the
    # output the source's weights give in the target's mode, and close to
    # the source's own output.
    for source, target in itertools.permutations(modes, 2):
        convs[target].load_state_dict(convs[source].state_dict())
        assert convs[target].compute == target
        same_mode = copy.deepcopy(convs[source])
        same_mode.compute = target
        assert torch.equal(convs[target](x), same_mode(x))
        torch.testing.assert_close(convs[target](x), convs[source](x),
                                   rtol=1e-5, atol=1e-5)


def test_wq_summary_equals_wq_filters():
    torch.manual_seed(0)
    trained = FSConv(16, 32, 3, padding=1).double()
    state = trained.state_dict()
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    outs = {}
    for mode in ('filters', 'summary'):
        conv = FSConv(16, 32, 3, padding=1, wq=True, compute=mode).double()
        conv.load_state_dict(state)
        assert torch.equal(conv.summary, fake_quantize(state['summary']))
        outs[mode] = conv(x)
    torch.testing.assert_close(outs['summary'], outs['filters'], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(outs['filters'], trained(x), rtol=1e-12, atol=1e-12)


def test_from_conv2d_takes_the_option():
    dense = torch.nn.Conv2d(8, 16, 3, padding=1)
    fs = FSConv.from_conv2d(dense, compute='summary')
    assert fs.compute == 'summary'
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(fs(x), fs.to_conv2d()(x), rtol=1e-5, atol=1e-5)


def test_convert_to_fs_passes_the_option_through():
    from fsnet_mmdet.conversion.modules import convert_to_fs
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1),
                                torch.nn.Conv2d(16, 16, 3, padding=1))
    convert_to_fs(model, conv=dict(compute='filters'),
                  rules=[dict(pattern='1', compute='summary')])
    assert (model[0].compute, model[1].compute) == ('filters', 'summary')
    with pytest.raises(ValueError, match=r"fs_convert: 0 .*compute must be one of"):
        convert_to_fs(torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3)),
                      conv=dict(compute='fast'))


# ------------------------------------------------------------------ counts
@pytest.mark.parametrize('channels,k3,ratio', [(64, 4, 2.17), (512, 8, 2.24)])
def test_macs_of_paper_layers(channels, k3, ratio):
    """C -> C 3x3 at preset 'paper' (Table 1: K3), stride 1, 38 x 38, padding
    1: K1 = K2 = sqrt(C / K3), x = y = 2, so Hm = 2 K1, Wm = 2 K2."""
    g = resolve_geometry(channels, channels, (3, 3), preset='paper')
    assert g.sampling[2] == k3 and g.strides[:2] == (2, 2)
    k1 = math.isqrt(channels // k3)
    hm = wm = 2 * k1
    pixels = 38 * 38
    dense = channels * 9 * channels * pixels
    stage1 = channels * k3 * hm * wm * pixels
    adds = 9 * channels * pixels
    assert filter_macs(g, (38, 38)) == (dense, 0)
    counts = summary_macs(g, (38, 38), (38, 38), 1, padding=1)
    assert counts == (stage1, adds) == summary_macs(g, (38, 38), (38, 38))
    assert round(dense / counts.total, 2) == ratio


def test_macs_count_the_positions_stage1_runs_on():
    g = resolve_geometry(8, 16, (3, 3))   # K x y = 64 responses
    per = 8 * 64
    # Stride 2, no padding, 10 x 10: output 4 x 4, the last input row read
    # is 3 * 2 + 2 = 8, so stage 1 runs on 9 x 9 positions.
    assert summary_macs(g, (10, 10), (4, 4), 2, padding=0) == (per * 81, 9 * 16 * 16)
    # Zero padding is not materialized: 10 x 10 positions for 10 x 10.
    assert summary_macs(g, (10, 10), (10, 10), 1, padding=1).macs == per * 100
    # C = 3 reflect-pads its input first (3 channels copied instead of 48):
    # stage 1 on the padded 12 x 12.
    g3 = resolve_geometry(3, 12, (3, 3))
    assert summary_macs(g3, (10, 10), (10, 10), padding=1,
                        padding_mode='reflect').macs == 3 * 12 * 4 * 144
    with pytest.raises(ValueError, match='out_hw'):
        summary_macs(g, (10, 10), (9, 9), 1, padding=1)


@pytest.mark.parametrize('compute', ['filters', 'summary', 'auto'])
def test_model_flops_counts_the_convolutions_the_layer_runs(compute, monkeypatch):
    """model_flops of an FSConv model equals the multiply-adds of the
    F.conv2d calls its forward makes, recorded as they run (weight
    elements x output pixels): the dense conv through the filters, the 1x1
    stage 1 from the summary."""
    from fsnet_mmdet.compression.structure import model_flops
    model = nn.Sequential(FSConv(3, 256, 1),
                          FSConv(256, 256, 3, padding=1, compute=compute))
    calls = []
    real = F.conv2d

    def recording(x, weight, *args, **kwargs):
        out = real(x, weight, *args, **kwargs)
        calls.append(weight[0].numel() * out.shape[1] * out.shape[-2] * out.shape[-1])
        return out
    monkeypatch.setattr(F, 'conv2d', recording)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 40, 40))
    ran = sum(calls)
    calls.clear()
    monkeypatch.setattr(F, 'conv2d', real)
    assert model_flops(model, (40, 40)) == ran
    summary_path = compute == 'summary' or (compute == 'auto' and model[1].computes_from_summary(
        torch.zeros(1, 256, 40, 40)))
    dense = 3 * 256 * 1600 + 256 * 256 * 9 * 1600
    assert ran == (3 * 256 * 1600 + 256 * 1024 * 1600 if summary_path else dense)


def test_auto_leaves_the_demo_models_flops_unchanged():
    """docs/performance.md: at demo width 'auto' takes no layer off the
    filters path in eval at 300 x 300, so the comparison table's FS FLOPs
    are what FS runs with 'auto' too."""
    from conftest import ROOT, build_detector, load_config
    from fsnet_mmdet.compression.structure import model_flops
    model = build_detector(load_config(ROOT / 'configs' / 'demo' /
                                       'fsnet_ssd300_demo.py'))
    layers = [m for m in model.modules() if isinstance(m, FSConv)]
    assert {m.compute for m in layers} == {'auto'}  # FSConv's default
    auto = model_flops(model)
    for layer in layers:
        layer.compute = 'filters'
    assert model_flops(model) == auto == 2_061_760_896


# ------------------------------------------------ the exportable form
#: (in, out, kernel, FS options) of the unrolled form's cases.
UNROLLED_GEOMETRIES = [
    (8, 16, 3, {}),                                   # 3x3, K1 x K2 = 2 x 4
    (8, 24, 3, {'interleave': 4}),                    # interleave > 1
    (8, 8, 3, {'strides': (1, 3, 4)}),                # x = 1: rolls by 1, 2
    (12, 20, 5, {'sampling': (2, 5, 2)}),             # 5x5
    (12, 20, 5, {'sampling': (2, 5, 2), 'interleave': 5}),
]
#: (stride, padding, dilation, padding_mode): every combination of stride
#: 1 / 2, padding 0 / 1 / 2, dilation 1 / 2, zeros / reflect / circular.
UNROLLED_SETTINGS = list(itertools.product(
    (1, 2), (0, 1, 2), (1, 2), ('zeros', 'reflect', 'circular')))


@pytest.mark.parametrize('with_bias', [False, True], ids=['no_bias', 'bias'])
@pytest.mark.parametrize('setting', UNROLLED_SETTINGS, ids=str)
@pytest.mark.parametrize('case', range(len(UNROLLED_GEOMETRIES)))
def test_unrolled_equals_summary_conv_and_dense_conv(case, setting, with_bias):
    cin, cout, kernel, opts = UNROLLED_GEOMETRIES[case]
    g = _geometry(cin, cout, kernel, opts)
    stride, padding, dilation, mode = setting
    x, summary, bias = _float64_inputs(case, g, cout, with_bias)
    args = (x, summary, g, bias, stride, padding, dilation, mode)
    out = summary_conv2d_unrolled(*args)
    torch.testing.assert_close(out, summary_conv2d(*args), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, dense_reference(*args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('case', range(len(GEOMETRIES)))
def test_unrolled_on_the_other_geometries_and_settings(case):
    """Every geometry and setting of the first test (1x3, 1x1, C = 3, Cm < C,
    fsnet1 / fsnet2, 'same', replicate, per-axis stride), in float32."""
    cin, cout, kernel, opts = GEOMETRIES[case]
    g = _geometry(cin, cout, kernel, opts)
    torch.manual_seed(case)
    x, summary = torch.randn(2, cin, 9, 10), torch.randn(g.summary_shape)
    bias = torch.randn(cout) if case % 2 else None
    for stride, padding, dilation, mode in SETTINGS:
        args = (x, summary, g, bias, stride, padding, dilation, mode)
        out = summary_conv2d_unrolled(*args)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, summary_conv2d(*args), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, dense_reference(*args), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('case', range(len(GEOMETRIES)))
def test_tiled_weight_is_the_gathered_weight(case):
    g = _geometry(*GEOMETRIES[case])
    summary = torch.randn(g.summary_shape)
    assert torch.equal(summary_weight_tiled(summary, g), summary_weight(summary, g))


def test_unrolled_traces_without_python_ops_and_keeps_the_batch_dynamic():
    """A trace (what the ONNX exporter records) of the unrolled form holds
    aten ops only, none in place (summary_conv2d's custom autograd Function
    does not even trace), and runs another batch size."""
    g = resolve_geometry(8, 24, (3, 3), interleave=4)
    torch.manual_seed(0)
    x, summary, bias = torch.randn(1, 8, 7, 6), torch.randn(g.summary_shape), torch.randn(24)
    args = (summary, g, bias, 2, 1, 1, 'reflect')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TracerWarnings: H, W are constants
        traced = torch.jit.trace(lambda t: summary_conv2d_unrolled(t, *args), x)
    kinds = {n.kind() for n in traced.graph.nodes()}
    assert {'aten::_convolution', 'aten::slice', 'aten::add'} <= kinds, kinds
    assert all(k.startswith(('aten::', 'prim::Constant', 'prim::ListConstruct'))
               for k in kinds), kinds
    assert not any(k.endswith('_') for k in kinds), kinds  # nothing in place
    batch = torch.randn(3, 8, 7, 6)
    torch.testing.assert_close(traced(batch), summary_conv2d(batch, *args),
                               rtol=1e-5, atol=1e-5)


def test_unrolled_unbatched_and_gradcheck():
    g = resolve_geometry(4, 8, (3, 3), interleave=4)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    summary = torch.randn(g.summary_shape, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(8, dtype=torch.float64, requires_grad=True)
    args = (g, bias, (1, 2), 1, (2, 1), 'circular')
    torch.testing.assert_close(summary_conv2d_unrolled(x[0], summary, *args),
                               summary_conv2d(x[0], summary, *args))

    def fn(x, summary, bias):
        return summary_conv2d_unrolled(x, summary, g, bias, *args[2:])
    assert torch.autograd.gradcheck(fn, (x, summary, bias))


# ------------------------------------------------- product-sharing bound
def _distinct_products_loop(index):
    """Slow reference: the distinct (summary element, input channel) pairs
    a layer's filters read, by an explicit loop over every weight element."""
    k, c = index.shape[:2]
    flat = index.reshape(k, c, -1).tolist()
    return len({(j, ch) for row in flat for ch, taps in enumerate(row)
                for j in taps})


@pytest.mark.parametrize('layer', [
    lambda: FSConv(8, 16, 3), lambda: FSConv(8, 16, 3, interleave=4),
    lambda: FSConv(12, 6, (3, 1), self_wrap=True),
    lambda: FSConv(8, 16, 3, layout='1d'), lambda: FSConv(16, 8, 1),
    lambda: FSLinear(24, 10), lambda: FSLinear(7, 40)])
def test_product_sharing_counts_the_distinct_products(layer):
    layer = layer()
    assert product_sharing(layer.index) == pytest.approx(
        layer.index.numel() / _distinct_products_loop(layer.index))


def test_summary_path_reaches_the_product_sharing_bound_and_1d_has_none():
    """3D summaries: stage 1 of the summary path computes exactly the
    distinct products (its multiplications = the dense layer's / the
    bound), for every FS layer of full-width FSNet-1. 1D summaries (FSLinear,
    FSConv layout='1d'): every product feeds one output (bound 1.0), so no
    exact product-sharing scheme computes fewer multiplications than the
    dense layer."""
    from conftest import build_detector, load_config
    model = build_detector(load_config('configs/fsnet_ssd300_voc.py'))
    layers = [m for m in model.modules() if isinstance(m, FSConv)]
    assert len(layers) == 35
    for m in layers:
        hw = (19, 19)
        ratio = (filter_macs(m.geometry, hw).macs /
                 summary_macs(m.geometry, hw, hw).macs)
        assert product_sharing(m.index) == pytest.approx(ratio), m
        assert (ratio > 1) == (m.kernel_size != (1, 1)), m
    for m in (FSConv(256, 256, 3, padding=1, layout='1d'),
              FSConv(64, 128, 3, layout='1d', interleave=4),
              FSLinear(256 * 7 * 7, 1024), FSLinear(1024, 84)):
        assert product_sharing(m.index) == 1.0, m
